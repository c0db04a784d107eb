"""Background jobs: a queue of runs executed by worker threads, one at a time by default (one GPU job).

One JobManager per server process (the app keeps it in ``st.cache_resource``). Cancellation is cooperative: the
run's FitContext checks a flag every step. When a manager starts, runs still marked running/queued by a process
that no longer exists are marked ``interrupted``; ``resume`` queues them again and they continue from their last
stage checkpoint.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError
from .execute import RunRequest, create_run, execute_run
from .store import ACTIVE, RunRecord, RunStore
from .uploads import delete_run


class JobManager:
    """Queue and run runs in background threads.

    A run has at most one live entry in the queue: cancelling a queued run retires its entry (its worker skips
    it), and a resume adds a fresh one only after the store has atomically moved the run from stopped to queued.

    Args:
        runs_dir: the run store's folder (default ``DCE_RUNS_DIR`` or ``./runs``).
        workers: how many runs may execute at once.
        data_roots: the only folders runs may read images from (a shared server's), or None for any; checked
            each time a run loads its data, so also for queued and resumed runs.
    """

    def __init__(self, runs_dir: str | Path | None = None, workers: int = 1,
                 data_roots: Sequence[Path] | None = None) -> None:
        self.store = RunStore(runs_dir)
        self.data_roots = data_roots
        self.interrupted_at_start = self.store.mark_orphans_interrupted()
        self._queue: queue.Queue[tuple[str, threading.Event] | None] = queue.Queue()
        self._cancel: dict[str, threading.Event] = {}  # run id → the cancel flag of its live queue entry
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, name=f"dce-worker-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, request: RunRequest) -> str:
        """Check and queue a new run; returns its id. Raises ConfigError/UserError for a bad request."""
        run_id = create_run(self.store, request)
        self._enqueue(run_id)
        return run_id

    def resume(self, run_id: str) -> str:
        """Queue a stopped run (interrupted, cancelled or failed, or one whose process died) again; it continues
        from its checkpoints. Raises UserError for a run that is queued, running or finished, so of two sessions
        pressing Resume at once, one queues it."""
        self.store.requeue(run_id)
        self._enqueue(run_id)
        return run_id

    def _enqueue(self, run_id: str) -> None:
        flag = threading.Event()
        with self._lock:
            retired = self._cancel.get(run_id)
            if retired is not None:
                retired.set()
            self._cancel[run_id] = flag
        self._queue.put((run_id, flag))

    def cancel(self, run_id: str) -> None:
        """Ask a run to stop: a queued run (here or in another process) is cancelled at once, a running one at its
        next step; one whose process died is recorded interrupted. Raises UserError for a run running in another
        live process."""
        with self._lock:
            flag = self._cancel.get(run_id)
        if flag is None:
            if not (self.store.cancel_queued(run_id) or self.store.interrupt_if_orphaned(run_id)):
                record = self.store.get(run_id)
                raise UserError(f"run {run_id} is {record.status} and not in this server's queue"
                                + (f" (it runs in process {record.owner}; stop it there)"
                                   if record.status == "running" else ""))
            return
        flag.set()
        if self.store.cancel_queued(run_id):
            self._retire(run_id, flag)

    def delete(self, run_id: str, timeout: float = 10, with_upload_from: Path | None = None) -> None:
        """Delete a run and its files (with the upload it was made from, given the uploads folder, when no other
        run uses it: :func:`engine.runs.uploads.delete_run`); one queued or running in this server is cancelled
        first, waiting up to ``timeout`` seconds for it to stop. Raises UserError for a run active in another
        process, or one that has not stopped in time."""
        with self._lock:
            ours = run_id in self._cancel
        if ours:
            self.cancel(run_id)
            if self.wait(run_id, timeout).status in ACTIVE:
                raise UserError(f"run {run_id} is still stopping; delete it again in a moment")
        delete_run(self.store, run_id, with_upload_from=with_upload_from)

    def pending(self) -> list[str]:
        """Runs this manager still has to finish (running first, then queued in order)."""
        with self._lock:
            ids = set(self._cancel)
        # from the list, not run by run: a run cancelled and deleted by another process may still wait here
        records = [r for r in self.store.list() if r.id in ids and r.status in ACTIVE]
        return [r.id for r in sorted(records, key=lambda r: (r.status != "running", r.created))]

    def wait(self, run_id: str, timeout: float | None = None, poll_s: float = 0.1) -> RunRecord:
        """Block until a run leaves queued/running (or ``timeout`` seconds pass); returns its record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.store.get(run_id)
            if record.status not in ACTIVE and run_id not in self._cancel:
                return record
            if deadline is not None and time.monotonic() > deadline:
                return record
            time.sleep(poll_s)

    def shutdown(self, cancel_running: bool = True, timeout: float = 30) -> None:
        """Stop the workers (cancelling what runs when asked) and wait for them."""
        if cancel_running:
            with self._lock:
                for flag in self._cancel.values():
                    flag.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)

    def _retire(self, run_id: str, flag: threading.Event) -> None:
        """Forget a queue entry, unless a resume has replaced it since."""
        with self._lock:
            if self._cancel.get(run_id) is flag:
                del self._cancel[run_id]

    def _work(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is None:
                return
            run_id, flag = entry
            try:
                if not flag.is_set():
                    execute_run(self.store, run_id, flag, data_roots=self.data_roots)
            except Exception:  # noqa: BLE001 — the outcome is in the store, or the run was not ours to start
                pass
            finally:
                self._retire(run_id, flag)

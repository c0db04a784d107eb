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

_STOP = object()


class JobManager:
    """Queue and run runs in background threads.

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
        self._queue: queue.Queue = queue.Queue()
        self._cancel: dict[str, threading.Event] = {}
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
        """Queue a stopped run (interrupted, cancelled or failed) again; it continues from its checkpoints."""
        record = self.store.get(run_id)
        if record.status in ACTIVE or record.status == "finished":
            raise UserError(f"run {run_id} is {record.status}; only interrupted, cancelled or failed runs resume")
        self.store.requeue(run_id)
        self._enqueue(run_id)
        return run_id

    def _enqueue(self, run_id: str) -> None:
        with self._lock:
            self._cancel[run_id] = threading.Event()
        self._queue.put(run_id)

    def cancel(self, run_id: str) -> None:
        """Ask a run to stop: a queued run is cancelled at once, a running one at its next step."""
        with self._lock:
            flag = self._cancel.get(run_id)
        if flag is None:
            raise UserError(f"run {run_id} is not queued or running in this server")
        flag.set()
        if self.store.get(run_id).status == "queued":
            self.store.update(run_id, status="cancelled", finished=time.time(), error="cancelled by the user")

    def pending(self) -> list[str]:
        """Runs this manager still has to finish (running first, then queued in order)."""
        with self._lock:
            ids = list(self._cancel)
        records = [self.store.get(run_id) for run_id in ids]
        return [r.id for r in sorted(records, key=lambda r: (r.status != "running", r.created))
                if r.status in ACTIVE]

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
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)

    def _work(self) -> None:
        while True:
            run_id = self._queue.get()
            if run_id is _STOP:
                return
            with self._lock:
                flag = self._cancel[run_id]
            try:
                if flag.is_set():
                    continue
                execute_run(self.store, run_id, flag, data_roots=self.data_roots)
            except Exception:  # noqa: BLE001 — execute_run has recorded the failure in the store
                pass
            finally:
                with self._lock:
                    self._cancel.pop(run_id, None)

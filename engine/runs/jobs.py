"""Background jobs: a queue of runs executed by worker threads, one per device (one job per GPU at a time).

One JobManager per server process (the app keeps it in ``st.cache_resource``). Its workers are named by device in
``DCE_WORKERS`` (:func:`worker_devices`): by default one per visible GPU and one for the CPU, which takes the runs
that ask for the CPU and the light ones (K-means on pixels), so a small run does not wait behind a long GPU run.
Each worker takes the oldest queued run it can run; each run is executed once, by one worker. Cancellation is
cooperative: the run's FitContext checks a flag every step. When a manager starts, runs still marked
running/queued by a process that no longer exists are marked ``interrupted``; ``resume`` queues them again and
they continue from their last stage checkpoint.

Worker processes (:func:`serve`, ``python -m engine worker --device cuda:1``) serve the runs queued for them
(``python -m engine train --queue``) from the run store, each adopting a run by one conditional UPDATE.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..methods import get_method, pick_device
from .execute import RunRequest, create_run, execute_run
from .store import ACTIVE, RunRecord, RunStore
from .uploads import delete_run


def worker_devices(spec: str | None = None, source: str = "DCE_WORKERS") -> list[str]:
    """The devices of a server's job workers, one worker each, from ``spec`` (default: ``$DCE_WORKERS``; errors
    name ``source``): device names separated by commas (``cuda:0,cuda:1,cpu``; a name may repeat: ``cpu,cpu``
    runs two CPU runs at once). Unset: one worker per visible GPU plus one for the CPU, or one CPU worker where
    there is no GPU."""
    spec = os.environ.get("DCE_WORKERS", "") if spec is None else spec
    if not spec.strip():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())] + ["cpu"]
    devices = [name.strip() for name in spec.split(",") if name.strip()]
    for name in devices:
        if name != "cpu" and not (name.startswith("cuda:") and name[5:].isdigit()):
            raise UserError(f"{source}: {name!r} is not a worker device; name each worker's device: cpu or cuda:N, "
                            "separated by commas (e.g. cuda:0,cuda:1,cpu)")
        if name != "cpu" and int(name[5:]) >= torch.cuda.device_count():
            raise UserError(f"{source}: there is no GPU {name} ({torch.cuda.device_count()} visible)")
    return devices


def runs_on(worker: str, record: RunRecord, gpu_workers: bool) -> bool:
    """Whether the worker of device ``worker`` (``cpu`` or ``cuda:N``) takes ``record``: a run asking for the
    CPU, a GPU or this GPU goes to such a worker; one asking for ``auto`` to a GPU worker, or to a CPU worker when
    there is no GPU worker (``gpu_workers`` False) or the run is light on a CPU (:meth:`Method.light_on_cpu`)."""
    asked = record.options.get("device") or "auto"
    if worker == "cpu":
        if asked != "auto":
            return asked == "cpu"
        method = get_method(record.method)
        return not gpu_workers or method.light_on_cpu(method.Config(**record.config))
    return asked in ("auto", "cuda", worker)


@dataclass(frozen=True)
class _Entry:
    """A run in the queue: its cancel flag and its record as queued (what a worker decides on)."""

    record: RunRecord
    flag: threading.Event


class JobManager:
    """Queue and run runs in background threads.

    A run has at most one live entry in the queue: cancelling a queued run retires its entry (its worker skips
    it), and a resume adds a fresh one only after the store has atomically moved the run from stopped to queued.

    Args:
        runs_dir: the run store's folder (default ``DCE_RUNS_DIR`` or ``./runs``).
        workers: the device of each worker (``cpu``, ``cuda:N``; see :func:`runs_on`), as many runs as workers
            executing at once; None: :func:`worker_devices` (``DCE_WORKERS``).
        data_roots: the only folders runs may read images from (a shared server's), or None for any; checked
            each time a run loads its data, so also for queued and resumed runs.
    """

    def __init__(self, runs_dir: str | Path | None = None, workers: Sequence[str] | None = None,
                 data_roots: Sequence[Path] | None = None) -> None:
        self.workers = worker_devices() if workers is None else list(workers)
        self.store = RunStore(runs_dir)
        self.data_roots = data_roots
        self.interrupted_at_start = self.store.mark_orphans_interrupted()
        self._queue: list[_Entry] = []
        self._closing = False
        self._cancel: dict[str, threading.Event] = {}  # run id → the cancel flag of its live queue entry
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)  # notified when an entry is added, and on shutdown
        self._threads = [threading.Thread(target=self._work, args=(device,), name=f"dce-worker-{i}-{device}",
                                          daemon=True) for i, device in enumerate(self.workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, request: RunRequest) -> str:
        """Check and queue a new run; returns its id. Raises ConfigError/UserError for a bad request, and for a
        device none of the workers runs on."""
        pick_device(request.device)  # a GPU asked for where there is none: that, rather than "no worker"
        self._check_served(request.device)
        run_id = create_run(self.store, request, data_roots=self.data_roots)
        self._enqueue(run_id)
        return run_id

    def resume(self, run_id: str) -> str:
        """Queue a stopped run (interrupted, cancelled or failed, or one whose process died) again; it continues
        from its checkpoints. Raises UserError for a run that is queued, running or finished, so of two sessions
        pressing Resume at once, one queues it."""
        self._check_served(self.store.get(run_id).options.get("device") or "auto")
        self.store.requeue(run_id)
        self._enqueue(run_id)
        return run_id

    def resume_interrupted(self) -> list[str]:
        """Queue again every run a stopped process left interrupted (a server restart, a crash), oldest first;
        returns their ids. A run another session resumes meanwhile is left to it."""
        resumed = []
        for record in sorted(self.store.list(), key=lambda r: r.created):
            if record.status == "interrupted":
                try:
                    resumed.append(self.resume(record.id))
                except UserError:
                    continue
        return resumed

    def _check_served(self, device: str) -> None:
        """Refuse a run asking for a device no worker of this manager runs on: it would wait for ever."""
        served = (device == "auto" or (device == "cpu" and "cpu" in self.workers)
                  or (device.startswith("cuda") and any(w.startswith("cuda") for w in self.workers)
                      and (device == "cuda" or device in self.workers)))
        if not served:
            raise UserError(f"this server has no worker for device {device!r} (its workers: "
                            f"{', '.join(self.workers) or 'none'}; set DCE_WORKERS); choose another device")

    def _enqueue(self, run_id: str) -> None:
        entry = _Entry(self.store.get(run_id), threading.Event())
        with self._queued:
            retired = self._cancel.get(run_id)
            if retired is not None:
                retired.set()
            self._cancel[run_id] = entry.flag
            self._queue.append(entry)
            self._queued.notify_all()

    def cancel(self, run_id: str) -> None:
        """Ask a run to stop: a queued run (here or in another process) is cancelled at once, a running one (here,
        in a worker process or in another server) at its next step; one whose process died is recorded
        interrupted. Raises UserError for a run that is not queued or running."""
        with self._lock:
            flag = self._cancel.get(run_id)
        if flag is None:
            stop_run(self.store, run_id)
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
        """Runs this manager still has to finish: running first, then queued in the order they will start (a
        resumed run behind the runs queued before its resume)."""
        with self._lock:
            ids = set(self._cancel)
            turn = {entry.record.id: place for place, entry in enumerate(self._queue)}
        # from the list, not run by run: a run cancelled and deleted by another process may still wait here
        records = [r for r in self.store.list() if r.id in ids and r.status in ACTIVE]
        return [r.id for r in sorted(records, key=lambda r: (r.status != "running", turn.get(r.id, -1), r.created))]

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
        """Stop the workers (cancelling what runs and is queued when asked; else they finish the queue first) and
        wait for them."""
        with self._queued:
            if cancel_running:
                for flag in self._cancel.values():
                    flag.set()
            self._closing = True
            self._queued.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def _retire(self, run_id: str, flag: threading.Event) -> None:
        """Forget a queue entry, unless a resume has replaced it since."""
        with self._lock:
            if self._cancel.get(run_id) is flag:
                del self._cancel[run_id]

    def _next_for(self, device: str) -> _Entry | None:
        """Take the oldest entry the worker of ``device`` runs (or that was cancelled: any worker drops it)."""
        gpu_workers = any(worker.startswith("cuda") for worker in self.workers)
        for i, entry in enumerate(self._queue):
            if entry.flag.is_set() or runs_on(device, entry.record, gpu_workers):
                return self._queue.pop(i)
        return None

    def _work(self, device: str) -> None:
        while True:
            with self._queued:
                entry = self._next_for(device)
                while entry is None:
                    if self._closing:
                        return
                    self._queued.wait()
                    entry = self._next_for(device)
            run_id = entry.record.id
            try:
                if not entry.flag.is_set():
                    execute_run(self.store, run_id, entry.flag, data_roots=self.data_roots,
                                device=torch.device(device))
            except Exception:  # noqa: BLE001 — the outcome is in the store, or the run was not ours to start
                pass
            finally:
                self._retire(run_id, entry.flag)


def stop_run(store: RunStore, run_id: str) -> str:
    """Stop a run of any process through the store: one waiting in a queue is cancelled at once (``cancelled``),
    one whose process died is recorded ``interrupted``, and the process running a live one is asked to cancel it
    at its next step (``asked``). Raises UserError for a run that is not queued or running."""
    if store.cancel_queued(run_id):
        return "cancelled"
    if store.interrupt_if_orphaned(run_id):
        return "interrupted"
    if store.ask_to_stop(run_id):
        return "asked"
    raise UserError(f"run {run_id} is {store.get(run_id).status}; only a queued or running run can be cancelled")


def serve(store: RunStore, device: str, stop: threading.Event, data_roots: Sequence[Path] | None = None,
          poll_s: float = 1.0, on_start=None, on_end=None, until_idle: bool = False) -> None:
    """A worker process's loop (``python -m engine worker``): until ``stop`` is set, adopt the oldest run queued
    for workers that the worker of ``device`` runs (:func:`runs_on`, taking other workers to serve the GPUs when
    one is visible) and execute it on ``device``; look again every ``poll_s`` seconds while there is none, or with
    ``until_idle`` return then. Setting ``stop`` also cancels the run in progress. ``on_start(run_id)`` and
    ``on_end(run_id)`` are told each run it starts and ends (its outcome is in the store)."""
    gpu_workers = torch.cuda.is_available()
    while not stop.is_set():
        record = next((r for r in store.queued_for_workers()
                       if runs_on(device, r, gpu_workers) and store.adopt(r.id)), None)
        if record is None:
            if until_idle:
                return
            stop.wait(poll_s)
            continue
        if on_start is not None:
            on_start(record.id)
        try:
            with _cancel_flag_following(stop) as cancel:
                execute_run(store, record.id, cancel, data_roots=data_roots, device=torch.device(device))
        except Exception:  # noqa: BLE001 — the outcome is recorded in the store
            pass
        if on_end is not None:
            on_end(record.id)


@contextmanager
def _cancel_flag_following(stop: threading.Event, poll_s: float = 0.2) -> Iterator[threading.Event]:
    """A run's own cancel flag, set (within ``poll_s``) when ``stop`` is: stopping the worker cancels the run in
    progress, while a cancel asked for the run (:meth:`RunStore.ask_to_stop`) sets only this flag, not ``stop``."""
    cancel, done = threading.Event(), threading.Event()

    def follow() -> None:
        while not done.wait(poll_s):
            if stop.is_set():
                cancel.set()
                return

    follower = threading.Thread(target=follow, name="dce-cancel-follower", daemon=True)
    follower.start()
    try:
        yield cancel
    finally:
        done.set()
        follower.join()

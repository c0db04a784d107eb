"""Running one run end to end: load its data, fit its method, store results and metrics, record the outcome.

The CLI calls ``execute_run`` in the foreground; the JobManager calls it from its worker thread. Either way the
run store ends with one of ``finished``, ``failed`` or ``cancelled`` and a message a user can act on.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..clustering.metrics import clustering_scores, mean_neighbor_purity
from ..atomic import disk_full_message, is_disk_full
from ..data import DATASETS, load_dataset
from ..data.decode import check_image_size
from ..data.imageset import ImageSet
from ..data.folder import count_folder_files
from ..data.registry import check_dataset_spec, folder_of
from ..errors import ConfigError, DiskFullError, RunCancelled, TrainingError, UserError
from ..wording import count
from ..methods.context import EventSink, checkpoint_folder, device_name
from ..methods import Event, FitContext, get_method, pick_device
from ..methods.base import Method, check_batch_sizes
from ..methods.distributed import DataParallel
from ..methods.estimate import FitEstimate, estimate_fit, format_seconds
from .progress import RunProgress
from .reuse import check_reusable_pretext
from .store import RunRecord, RunStore


@dataclass
class RunRequest:
    """What a user asks for: a method with a preset and overrides, a dataset, and where to run it."""

    method: str
    dataset: str = "digits"
    preset: str = "fast"
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    data_root: str | None = None
    download: bool = False
    image_size: int | None = None  # None: the dataset's own size, 64 px for a folder (see load_dataset)
    subset: int | None = None  # a class-balanced, seeded subset of this many images (see load_dataset); None: all
    estimate: dict[str, Any] | None = None  # FitEstimate.to_json() of this request; None: the run estimates itself
    budget: dict[str, Any] | None = None  # how --budget-minutes scaled the epochs (engine.runs.budget)

    def build_method(self) -> Method:
        """The configured method; raises ConfigError for an unknown method, preset or setting, and for K or a
        batch size larger than the dataset when the dataset's size is known without loading it, and an image
        size out of range."""
        check_image_size(self.image_size)
        if self.subset is not None and self.subset < 1:
            raise ConfigError(f"a subset needs at least 1 image, not {self.subset}")
        method = get_method(self.method).from_preset(self.preset, **self.overrides)
        n_images = _known_size(self.dataset)
        if n_images is not None and self.subset is not None:
            n_images = min(n_images, self.subset)
        method.config.validate(n_images)
        if n_images is not None:
            check_batch_sizes(method.config, n_images, method.explicit_settings)
        return method


def _known_size(spec: str) -> int | None:
    """The number of images a named dataset spec without a split holds; None for folders and single splits."""
    info = DATASETS.get(spec.strip().lower())
    return info.n_images if info is not None else None


def create_run(store: RunStore, request: RunRequest, for_workers: bool = False,
               data_roots: Sequence[Path] | None = None) -> str:
    """Check the request and record it as a queued run (of this process, or ``for_workers``: for worker processes,
    :func:`engine.runs.jobs.serve`); returns the run id. An unknown dataset, a missing folder (or one outside
    ``data_roots``, when given), a folder with no file or with fewer files than K is refused here (``UserError``)
    rather than failing when the run's turn comes."""
    method = request.build_method()
    check_dataset_spec(request.dataset, data_roots, request.data_root, request.download)
    _check_folder_size(request, method, data_roots)
    pick_device(request.device)
    check_reusable_pretext(store, method, request.dataset, request.image_size)
    # The names of the settings the user set travel with the run: checks against the data (a batch size
    # larger than the dataset) treat them differently from the preset's values.
    options = {"device": request.device, "data_root": request.data_root, "download": request.download,
               "explicit": sorted(method.explicit_settings), "image_size": request.image_size,
               "subset": request.subset,
               "estimate": request.estimate, "budget": request.budget}
    run_id = store.create_run(request.method, request.dataset, method.get_params(), request.preset, options,
                              for_workers)
    if request.budget is not None:
        from .budget import budget_message

        store.add_message(run_id, "budget", budget_message(request.budget))
    return run_id


def skipped_warning(skipped: Sequence[tuple[str, str]], n_kept: int) -> str:
    """One warning line for the files a load skipped, by reason, most common first (a reason's details in
    brackets, such as a byte count, do not split it)."""
    reasons = Counter(reason.split(" (")[0] for _, reason in skipped)
    listed = "; ".join(f"{count} × {reason}" for reason, count in reasons.most_common(3))
    more = f"; {len(reasons) - 3} other reasons" if len(reasons) > 3 else ""
    return (f"warning: {len(skipped)} of {len(skipped) + n_kept} files were skipped ({listed}{more}); each is "
            f"listed in the run's messages")


def _check_folder_size(request: RunRequest, method: Method, data_roots: Sequence[Path] | None) -> None:
    path = folder_of(request.dataset)
    if path is None:
        return
    n_files = count_folder_files(path, data_roots)
    if n_files is None:
        return
    if method.config.n_clusters > n_files:
        raise ConfigError(f"K={method.config.n_clusters} clusters asked for but {Path(path).name} holds only "
                          f"{count(n_files, 'file')}; " + ("lower K or add images" if n_files >= 2 else
                                                            "clustering needs at least 2 images: add images"))
    check_batch_sizes(method.config, n_files, method.explicit_settings)  # what the fit would refuse, refused now


class _Recorder:
    """Turns a fit's events into run-store rows: losses always, progress and the whole run's ETA (each stage
    weighted by its cost, :class:`RunProgress`) at most every 0.5 s; at those moments it also sets ``cancel``
    when another process asked the run to stop."""

    def __init__(self, store: RunStore, run_id: str, stage_names: list[str], estimate: FitEstimate | None,
                 cancel: threading.Event) -> None:
        self.store, self.run_id, self.stage_names, self.cancel = store, run_id, stage_names, cancel
        self.progress = RunProgress(estimate)
        self.last_write = 0.0

    def __call__(self, event: Event) -> None:
        index = self.stage_names.index(event.stage) if event.stage in self.stage_names else 0
        if event.kind == "stage":
            # a stage resumed from its checkpoint at ``event.step`` (0: from the start) records its later values
            # again: those the stopped attempt recorded after that point go, so each step is drawn once
            if self.store.drop_metrics_after(self.run_id, event.stage, event.step) and not event.step:
                self.store.add_message(self.run_id, event.stage, f"{event.stage} starts over: it stopped before its "
                                       "first checkpoint (one is written at most once a minute and when a stage ends)")
            progress, eta = self.progress.start(event.stage, event.total, event.time, event.step)
            self.store.update(self.run_id, stage=event.stage, stage_index=index, progress=progress, eta_s=eta)
        elif event.kind == "stage_done":
            self.progress.done(event.stage, event.time)
        elif event.kind == "info":
            self.store.add_message(self.run_id, event.stage, event.message)
        elif event.kind == "step":
            if event.losses:
                self.store.add_metrics(self.run_id, event.stage, event.step, event.losses)
            progress, eta = self.progress.at(event.step, event.total, event.time)
            if event.time - self.last_write >= 0.5 or event.step == event.total:
                self.last_write = event.time
                self.store.update(self.run_id, progress=progress, eta_s=eta)
                if self.store.stop_is_asked(self.run_id):  # a cancel from another process (RunStore.ask_to_stop)
                    self.cancel.set()


def _summary(method: Method, images, seconds: float, device: torch.device, processes: int, estimate: FitEstimate,
             budget: dict[str, Any] | None) -> dict[str, Any]:
    labels = method.labels_
    summary: dict[str, Any] = {
        "n_images": len(images), "n_skipped": len(images.skipped), "n_clusters": method.config.n_clusters,
        "image_size": images.image_shape[0], "estimated_seconds": round(estimate.seconds, 2), "budget": budget,
        "seconds": round(seconds, 2), "device": device_name(device), "processes": processes,
        "cluster_sizes": np.bincount(labels, minlength=method.config.n_clusters).tolist(),
        "files_sha256": images.files_digest(),
    }
    summary.update(clustering_scores(images.labels, labels))
    summary["neighbor_purity"] = (mean_neighbor_purity(method.neighbors_, images.labels)
                                  if method.neighbors_ is not None and images.labels is not None else None)
    return summary


def _save_results(store: RunStore, run_id: str, method: Method, images) -> None:
    store.save_array(run_id, "assign", method.labels_.astype(np.int32))
    store.save_array(run_id, "probs", method.probs_.astype(np.float32))
    if method.features_ is not None:
        store.save_array(run_id, "features", method.features_.astype(np.float16))
    if method.neighbors_ is not None:
        store.save_array(run_id, "neighbors", method.neighbors_.astype(np.int32))
    if images.labels is not None:
        store.save_array(run_id, "labels", images.labels.astype(np.int64))


def _method_and_images(record: RunRecord, data_roots: Sequence[Path] | None):
    """The run's configured method and its loaded dataset."""
    method_cls = get_method(record.method)
    explicit = {name: record.config[name] for name in record.options.get("explicit", ()) if name in record.config}
    method = method_cls(method_cls.Config(**record.config), **explicit)
    images = load_dataset(record.dataset, data_root=record.options.get("data_root"),
                          download=bool(record.options.get("download")), data_roots=data_roots,
                          image_size=record.options.get("image_size"), subset=record.options.get("subset"))
    return method, images


def _run_estimate(store: RunStore, run_id: str, method: Method, images, device: torch.device,
                  cancel: threading.Event | None, observer: EventSink | None) -> FitEstimate:
    """The estimate the run was created with, else one made now (a few timed steps of each stage, before any
    stage starts): what the whole run's ETA and the weights of its progress bar come from."""
    stored = store.get(run_id).options.get("estimate")
    if stored is not None:
        return FitEstimate.from_json(stored)
    store.update(run_id, stage="estimate", progress=0.0, eta_s=None)
    estimate = estimate_fit(method, images, device, runs_root=store.root, cancel=cancel)
    message = Event("info", "estimate", message=estimate_message(estimate))
    store.add_message(run_id, message.stage, message.message)
    if observer is not None:
        observer(message)
    return estimate


def _record_skipped(store: RunStore, run_id: str, images: ImageSet, subset: int | None) -> None:
    """A data message per file the load skipped, then the summary warning, and one when a subset asked for is
    the whole set; a resumed run loads the same files again and records only what its earlier attempts did not."""
    lines = [f"skipped {path}: {reason}" for path, reason in images.skipped]
    if images.skipped:
        lines.append(skipped_warning(images.skipped, len(images)))
    if subset is not None and subset > len(images):
        lines.append(f"a subset of {subset} images was asked for, but the dataset holds {len(images)}: all are used")
    recorded = {m["message"] for m in store.messages(run_id) if m["stage"] == "data"}
    for line in lines:
        if line not in recorded:
            store.add_message(run_id, "data", line)


def estimate_message(estimate: FitEstimate) -> str:
    """One line for the run's messages: the whole run, then each stage."""
    stages = ", ".join(f"{name} {format_seconds(stage.seconds)}" for name, stage in estimate.stages.items())
    unmeasured = f"; not measured: {', '.join(estimate.unmeasured)}" if estimate.unmeasured else ""
    return (f"estimated {format_seconds(estimate.seconds)} on {estimate.device} ({stages}{unmeasured}), from a few "
            f"timed steps of each stage in {format_seconds(estimate.wall_seconds)}")


def execute_run(store: RunStore, run_id: str, cancel: threading.Event | None = None,
                observer: EventSink | None = None, data_roots: Sequence[Path] | None = None, *,
                device: torch.device | None = None, parallel: DataParallel | None = None) -> dict[str, Any]:
    """Run a queued (or resumed) run to its end; returns its summary. ``observer`` also receives every event.

    ``device`` overrides the run's own (``auto``, ``cpu``, ``cuda``…): a job worker's. ``parallel``: this is rank
    0 of a multi-process run (:mod:`engine.methods.distributed`), whose other processes call
    :func:`execute_replica` at the same time.

    Only a run this process queued starts (``RunStore.claim``); one cancelled, deleted or taken over by another
    process since raises ``UserError`` and is left as it is.

    ``data_roots`` confines the files the run reads (see :func:`engine.data.load_dataset`): a shared server
    checks them here, when the data is loaded, not only when the run was asked for.

    Records the outcome in the store, then re-raises user errors (``UserError``), training failures
    (``TrainingError``) and cancellation (``RunCancelled``) so a caller can report them; a full disk, wherever
    the write happened (results, checkpoints), becomes a ``DiskFullError`` naming the folder; other exceptions
    are recorded as internal errors with their traceback in ``<run>/error.log`` and re-raised.
    """
    record = store.get(run_id)
    if not store.claim(run_id):
        raise UserError(f"run {run_id} is {store.get(run_id).status} and not queued by this process: it was "
                        "cancelled, deleted or resumed elsewhere, so it does not start here")
    started = time.time()
    earlier = store.get(run_id).earlier_s or 0.0  # the attempts before this one (a resumed run)
    cancel = cancel or threading.Event()
    try:
        device = device or pick_device(record.options.get("device", "auto"))
        store.update(run_id, device=device_name(device))
        method, images = _method_and_images(record, data_roots)
        _record_skipped(store, run_id, images, record.options.get("subset"))
        estimate = _run_estimate(store, run_id, method, images, device, cancel, observer)
        recorder = _Recorder(store, run_id, [s.name for s in method.stages], estimate, cancel)

        def on_event(event: Event) -> None:
            recorder(event)
            if observer is not None:
                observer(event)

        context = FitContext(device, on_event, cancel, checkpoint_dir=checkpoint_folder(store.run_dir(run_id)),
                             runs_root=store.root, parallel=parallel)
        method.fit(images, context)
        _save_results(store, run_id, method, images)
        summary = _summary(method, images, time.time() - started + earlier, device,
                           1 if parallel is None else parallel.world_size, estimate, record.options.get("budget"))
        store.finish(run_id, "finished", progress=1.0, eta_s=0.0, summary=summary)
        return summary
    except RunCancelled:
        store.finish(run_id, "cancelled", "cancelled by the user")
        raise
    except torch.cuda.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        message = ("out of GPU memory: use a smaller batch size (the *_batch_size settings) or a smaller "
                   "image size, or run on the CPU")
        store.finish(run_id, "failed", message)
        raise TrainingError(message) from exc
    except (UserError, TrainingError) as exc:
        store.finish(run_id, "failed", str(exc))
        raise
    except Exception as exc:
        if is_disk_full(exc, store.run_dir(run_id)):
            filename = getattr(exc, "filename", None)
            message = disk_full_message(Path(filename).parent if filename else store.run_dir(run_id))
            store.finish(run_id, "failed", message)
            raise DiskFullError(message) from exc
        try:
            (store.run_dir(run_id) / "error.log").write_text(traceback.format_exc())
        except OSError:
            pass  # the failure is still recorded below; only the traceback file is missing
        store.finish(run_id, "failed", f"internal error ({type(exc).__name__}: {exc}); details in "
                     f"{run_id}/error.log")
        raise


def execute_replica(store: RunStore, run_id: str, parallel: DataParallel, cancel: threading.Event | None = None,
                    data_roots: Sequence[Path] | None = None) -> None:
    """What a process other than rank 0 of a multi-process run does while rank 0 runs :func:`execute_run`: the
    same fit, on its device, with its share of every batch, writing nothing (rank 0 records the run, its
    checkpoints and results). Errors are raised, not recorded: rank 0 meets the same ones and records them."""
    method, images = _method_and_images(store.get(run_id), data_roots)
    method.fit(images, FitContext(parallel.device, None, cancel,
                                  checkpoint_dir=checkpoint_folder(store.run_dir(run_id)),
                                  runs_root=store.root, parallel=parallel))

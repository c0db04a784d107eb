"""What a running method talks to: its device, an event sink, the cancel flag and its checkpoints.

A method never knows whether a CLI, a background job or a test drives it; it reports through a ``FitContext``.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager

import torch

from ..atomic import atomic_path
from ..errors import LossDiverged, RunCancelled, UserError
from .speedups import Speedups

if TYPE_CHECKING:
    import numpy as np

    from .distributed import DataParallel


@dataclass
class Event:
    """One thing that happened during a fit.

    kind: ``stage`` (a stage started; ``total`` = its steps, ``step`` = the step it resumes from, else 0), ``step``
    (losses at ``step``), ``info`` (a message), ``stage_done``.
    """

    kind: str
    stage: str
    step: int = 0
    total: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    message: str = ""
    time: float = field(default_factory=time.time)


EventSink = Callable[[Event], None]


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` → the GPU when one is visible, else the CPU; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """What a device is, for people: the GPU's model name (e.g. "NVIDIA H200") or ``cpu``."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


class FitContext:
    """Device, events, cancellation and stage checkpoints for one fit.

    Args:
        device: where tensors live during training: a ``torch.device``, or a name :func:`pick_device` checks
            (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        on_event: receives every :class:`Event` (the job runner writes them to the run store).
        cancel: set by another thread to stop the fit at the next step (cooperative cancel).
        checkpoint_dir: where stage checkpoints go; None keeps nothing (tests, one-off fits).
        runs_root: the folder holding other runs, to reuse their stored stages (e.g. a finished pretext).
        checkpoint_every_s: at most one mid-stage checkpoint per this many seconds.
        speedups: how training steps use the device; None → :meth:`Speedups.for_device` (all off on the CPU).
        parallel: this process's place in a multi-process fit (:mod:`.distributed`), or None. Only rank 0 writes
            checkpoints, and a cancel takes effect where the processes agree on it (``train_epochs``' epoch ends).
        step_limit: an estimate's (:mod:`.estimate`): each stage runs at most this many steps. ``train_epochs``
            ends a stage there; a stage with its own loop is stopped by :class:`StepLimitReached` from
            :meth:`step`. Such a fit keeps no checkpoints.

    Attributes:
        labels: the true labels of the images being fitted (``Method.fit`` sets them; None when the dataset has
            none): a ``train_epochs`` stage that assigns clusters then records its clustering accuracy each epoch.
    """

    def __init__(self, device: torch.device | str = "cpu", on_event: EventSink | None = None,
                 cancel: threading.Event | None = None, checkpoint_dir: Path | None = None,
                 runs_root: Path | None = None, checkpoint_every_s: float = 60.0,
                 speedups: Speedups | None = None, parallel: "DataParallel | None" = None,
                 step_limit: int | None = None) -> None:
        if step_limit is not None and checkpoint_dir is not None:
            raise ValueError("a fit cut to a few steps per stage must not store checkpoints: they would be taken "
                             "for finished stages")
        self.device = pick_device(device) if isinstance(device, str) else torch.device(device)
        self.step_limit = step_limit
        self.speedups = speedups or Speedups.for_device(self.device)
        if parallel is not None:
            self.speedups = dataclasses.replace(self.speedups, parallel=parallel)
        self.parallel = parallel
        self._on_event = on_event
        self._cancel = cancel or threading.Event()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.runs_root = Path(runs_root) if runs_root else None
        self.checkpoint_every_s = checkpoint_every_s
        self._last_checkpoint = time.monotonic()
        self.messages: list[str] = []
        self.labels: np.ndarray | None = None

    def autocast(self, gradients_scaled: bool = False) -> ContextManager:
        """The context a training step's forward pass and loss run in (bfloat16 autocast on a GPU; float16 only in a
        loop that scales its gradients, :meth:`Speedups.autocast`)."""
        return self.speedups.autocast(self.device, gradients_scaled)

    def emit(self, event: Event) -> None:
        if self._on_event is not None:
            self._on_event(event)

    def start_stage(self, stage: str, total_steps: int, first_step: int = 0) -> None:
        """A stage of ``total_steps`` starts, or resumes from its checkpoint at ``first_step``."""
        self.check_cancelled()
        self.emit(Event("stage", stage, first_step, total_steps))

    def end_stage(self, stage: str) -> None:
        self.emit(Event("stage_done", stage))

    def info(self, stage: str, message: str) -> None:
        self.messages.append(message)
        self.emit(Event("info", stage, message=message))

    def gathered(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` of every process of a multi-process fit, concatenated in rank order (MoCo enqueues the keys
        of the whole batch); ``tensor`` itself in a one-process fit."""
        return tensor if self.parallel is None else self.parallel.gather(tensor)

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def writes(self) -> bool:
        """Whether this process writes checkpoints: always, except in the processes other than rank 0 of a
        multi-process fit."""
        return self.parallel is None or self.parallel.is_writer

    def check_cancelled(self) -> None:
        """Raise RunCancelled when a cancel was asked for. In a multi-process fit a process stopping alone would
        leave the others waiting for it: ``train_epochs`` stops all of them together at an epoch end instead."""
        if self.parallel is None and self._cancel.is_set():
            raise RunCancelled("cancelled by the user")

    def step(self, stage: str, step: int, total: int, losses: dict[str, Any] | None = None) -> None:
        """Report progress; with ``losses`` (tensors or floats) also record them and stop on NaN/Inf.

        Call it every step for progress and cancel; pass losses only every few steps: reading a GPU tensor
        waits for the GPU.
        """
        self.check_cancelled()
        if self.step_limit is not None and step > self.step_limit:
            raise StepLimitReached(stage)
        values: dict[str, float] = {}
        for name, value in (losses or {}).items():
            value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            if not math.isfinite(value):
                raise LossDiverged(f"the {name} loss became {value} in stage '{stage}' at step {step}; "
                                   "try a smaller learning rate")
            values[name] = value
        self.emit(Event("step", stage, step, total, values))

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def _path(self, stage: str, run_dir: Path | None = None) -> Path | None:
        folder = checkpoint_folder(run_dir) if run_dir else self.checkpoint_dir
        return None if folder is None else folder / f"{stage}.pt"

    def save_stage(self, stage: str, state: dict[str, Any], *, done: bool, force: bool = False) -> None:
        """Store a stage's state (atomically). Mid-stage saves are throttled to ``checkpoint_every_s``."""
        path = self._path(stage)
        if path is None or not self.writes:
            return
        now = time.monotonic()
        if not (done or force or now - self._last_checkpoint >= self.checkpoint_every_s):
            return
        self._last_checkpoint = now
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save({"done": done, "state": state}, tmp)

    def load_stage(self, stage: str, *, from_run: str | None = None) -> tuple[dict[str, Any], bool] | None:
        """The stored (state, done) of a stage of this run, or of run ``from_run``; None when there is none.

        An unreadable checkpoint of this run (cut short by a crash or a copy, say) is reported in an ``info``
        event naming it, moved aside to ``<stage>.pt.unreadable`` and treated as absent, so its stage is trained
        again from the stages before it; another run's is a UserError naming the file.
        """
        if from_run is not None:
            if self.runs_root is None:
                raise UserError("cannot reuse another run's stage: no runs folder is known to this fit")
            path = self._path(stage, self.runs_root / from_run)
            if path is None or not path.exists():
                raise UserError(f"run {from_run} has no stored '{stage}' stage to reuse; pick a run whose "
                                f"{stage} finished")
        else:
            path = self._path(stage)
            if path is None or not path.exists():
                return None
        try:
            return self._read_checkpoint(path)
        except UnreadableCheckpoint as exc:
            if from_run is not None:
                raise UserError(f"run {from_run}'s stored '{stage}' stage, {path}, is unreadable ({exc}); pick "
                                f"another run or train a new {stage}") from exc
            if not self.writes:
                return None  # rank 0 moves it aside and says so
            aside = path.with_name(f"{path.name}.unreadable")
            try:
                path.replace(aside)
            except OSError as move_error:
                raise UserError(f"the checkpoint {path} is unreadable ({exc}) and cannot be moved aside "
                                f"({move_error.strerror}); delete it, then resume") from move_error
            self.info(stage, f"the checkpoint {path} is unreadable ({exc}); moved it to {aside.name} and "
                             f"training the {stage} stage again")
            return None

    def _read_checkpoint(self, path: Path) -> tuple[dict[str, Any], bool]:
        with open(path, "rb") as handle:  # a file that cannot be opened says nothing about its content: raised
            try:
                stored = torch.load(handle, map_location=self.device, weights_only=True)
            except torch.cuda.OutOfMemoryError:
                raise  # the device is full: nothing says the content is bad
            except Exception as exc:  # noqa: BLE001 — a damaged file fails in torch's reader or unpickler many
                # ways, an OSError among them (a small zip cut short: "Invalid argument")
                raise UnreadableCheckpoint(_first_line(exc)) from exc
        if not isinstance(stored, dict) or not isinstance(stored.get("state"), dict) or "done" not in stored:
            raise UnreadableCheckpoint("not a stage checkpoint")
        return stored["state"], bool(stored["done"])


def checkpoint_folder(run_dir: Path) -> Path:
    """Where a run folder keeps its stage checkpoints, one ``STAGE.pt`` per stage."""
    return run_dir / "checkpoints"


class StepLimitReached(Exception):
    """A stage ran past the context's ``step_limit`` in a loop of its own: the estimate has timed enough of it, and
    the fit ends here (``train_epochs`` ends its stages at the limit instead, and the fit goes on)."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"stage {stage!r} reached the step limit")
        self.stage = stage


class UnreadableCheckpoint(Exception):
    """A stage checkpoint file that torch cannot load, or that holds no stage state; the message says why."""


def _first_line(error: BaseException) -> str:
    """The error's type and first sentence: torch's loading errors run on for several."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0].split('. ')[0]}" if text else type(error).__name__

"""How long a fit will take, from a few timed steps of every stage (``train --estimate``, the Train page, the ETA).

The method is fitted under a :class:`FitContext` with a ``step_limit`` of :data:`ESTIMATE_STEPS`: ``train_epochs``
ends each stage after that many steps (its start event still says how many steps the full stage has), and
feature extraction embeds that many small batches. A stage's first step pays for warm-up (allocations, cuDNN's
search, a compile) and is not part of the rate: a stage's seconds are its start up to the end of its first step,
plus the mean time of the later steps for each other step. A stage that finishes within the limit (neighbour
mining, JULE's first clusters) is timed whole.

A stage that runs a loop of its own instead of ``train_epochs`` (K-means' restarts, and for now the loops not yet
moved onto it) is stopped by :class:`StepLimitReached` when it reports a step past the limit, and is timed the
same way; the fit ends there. When stages remain after it, the fit runs again with that stage's length settings
at 0 (:func:`_length_settings_of`) to reach them; a stage still out of reach is listed in ``unmeasured``.

Per-epoch work outside the steps (a per-epoch K-means, a target-distribution refresh) is not in the few timed
steps, nor is the final embedding after the last stage.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.imageset import ImageSet
from ..errors import TrainingError, UserError
from .base import Method
from .context import Event, FitContext, StepLimitReached, device_name

ESTIMATE_STEPS = 4  # steps run per stage: the first warms up, the other three are timed


@dataclass(frozen=True)
class StageEstimate:
    """One stage's cost: ``seconds`` for its ``steps`` in the full run, from ``timed_steps`` timed steps (0: it
    ran whole in the estimate and ``seconds`` is its wall time)."""

    seconds: float
    steps: int
    timed_steps: int


@dataclass
class FitEstimate:
    """Every stage's estimate in the order the stages ran, the device they ran on, what the estimate itself took,
    and the method's stages it could not reach."""

    stages: dict[str, StageEstimate]
    device: str
    wall_seconds: float
    unmeasured: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages.values())

    def to_json(self) -> dict[str, Any]:
        """``{"estimated_seconds": …, "per_stage": {stage: seconds}, …}``: what ``train --estimate --json``
        prints and a run stores; :meth:`from_json` reads it back."""
        return {"estimated_seconds": round(self.seconds, 3),
                "per_stage": {name: round(stage.seconds, 3) for name, stage in self.stages.items()},
                "steps": {name: stage.steps for name, stage in self.stages.items()},
                "timed_steps": {name: stage.timed_steps for name, stage in self.stages.items()},
                "unmeasured": list(self.unmeasured), "device": self.device,
                "estimate_seconds": round(self.wall_seconds, 3)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FitEstimate":
        stages = {name: StageEstimate(float(seconds), int(data["steps"][name]), int(data["timed_steps"][name]))
                  for name, seconds in data["per_stage"].items()}
        return cls(stages, data["device"], float(data["estimate_seconds"]), list(data.get("unmeasured", [])))


@dataclass
class _Segment:
    """One start-to-end of a stage: a stage that trains in several calls of ``train_epochs`` (a network layer by
    layer, say) has several, and its estimate is their sum."""

    stage: str
    began: float
    total: int
    ended: float | None = None
    marks: list[tuple[int, float]] = field(default_factory=list)  # (step, when it ended)

    def estimate(self) -> StageEstimate | None:
        if self.ended is not None and (not self.marks or self.marks[-1][0] >= self.total):
            return StageEstimate(self.ended - self.began, self.total, 0)
        if len(self.marks) >= 2:  # the rate from the end of the first step (its warm-up) to the end of the last
            (first_step, first_time), (last_step, last_time) = self.marks[0], self.marks[-1]
            per_step = (last_time - first_time) / max(last_step - first_step, 1)
            seconds = first_time - self.began + per_step * (self.total - first_step)  # the run warms up once too
            return StageEstimate(seconds, self.total, last_step - first_step)
        if self.marks:  # stopped after one step: its warm-up is all there is to go by
            step, when = self.marks[0]
            return StageEstimate((when - self.began) / max(step, 1) * self.total, self.total, 1)
        return None


class _StageClock:
    """An event sink noting when each stage started and finished and when each of its steps ended; on a GPU it
    waits for the device at every event, so a step's time is its work, not the time to queue it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.segments: list[_Segment] = []

    def __call__(self, event: Event) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        current = self.segments[-1] if self.segments and self.segments[-1].stage == event.stage else None
        if event.kind == "stage":
            self.segments.append(_Segment(event.stage, now, event.total))
        elif event.kind == "stage_done" and current is not None:
            current.ended = now
        elif event.kind == "step" and current is not None:
            if not current.marks or current.marks[-1][0] != event.step:  # an epoch's losses repeat its last step
                current.marks.append((event.step, now))

    def estimates(self) -> dict[str, StageEstimate]:
        found: dict[str, StageEstimate] = {}
        for segment in self.segments:
            estimate = segment.estimate()
            if estimate is None:
                continue
            before = found.get(segment.stage, StageEstimate(0.0, 0, 0))
            found[segment.stage] = StageEstimate(before.seconds + estimate.seconds, before.steps + estimate.steps,
                                                 before.timed_steps + estimate.timed_steps)
        return found


def estimate_fit(method: Method, images: ImageSet, device: torch.device | str = "cpu", *,
                 runs_root=None, cancel=None, steps: int = ESTIMATE_STEPS) -> FitEstimate:
    """Time ``steps`` steps of every stage of ``method`` fitted on ``images`` and scale each to the stage's steps
    in the full run (see the module's notes). ``method`` itself is not fitted; nothing is stored."""
    device = torch.device(device)
    started = time.perf_counter()
    cls = type(method)
    explicit = {name: getattr(method.config, name) for name in method.explicit_settings}
    config = method.config
    names = [stage.name for stage in cls.stages]
    measured: dict[str, StageEstimate] = {}
    skipped: dict[str, int] = {}  # length settings set to 0 to get past a stage that stopped the fit
    while True:
        clock = _StageClock(device)
        fit = cls(config, **{**explicit, **skipped})
        stopped, finished = None, False
        try:
            fit.fit(images, FitContext(device, clock, cancel, runs_root=runs_root, step_limit=steps))
            finished = True
        except StepLimitReached as stop:
            stopped = stop.stage
        except TrainingError:
            pass  # a few untrained steps may diverge or collapse: that says nothing about time
        for stage, estimate in clock.estimates().items():
            measured.setdefault(stage, estimate)
        reached = max((names.index(s.stage) for s in clock.segments if s.stage in names), default=-1)
        unreached = [] if finished else [name for name in names[reached + 1:] if name not in measured]
        settings = _length_settings_of(stopped, cls, config) if stopped in names else []
        if not unreached or not settings or any(name in skipped for name in settings):
            break
        skipped.update(dict.fromkeys(settings, 0))
        try:
            dataclasses.replace(config, **skipped).validate(len(images))
        except UserError:
            break
    return FitEstimate(measured, device_name(device), time.perf_counter() - started, unreached)


# How long a stage trains, besides its ``*epochs`` settings: SPICE's semi-supervised stage counts steps.
LENGTH_IN_STEPS = ("semi_steps",)


def length_settings(config: dict[str, Any]) -> dict[str, int]:
    """The settings of a method's config (as a dict) that say how long its stages train: ``*epochs``, warm-ups
    included, and :data:`LENGTH_IN_STEPS`."""
    return {name: value for name, value in config.items()
            if (name.endswith("epochs") or name in LENGTH_IN_STEPS)
            and isinstance(value, int) and not isinstance(value, bool)}


def _length_settings_of(stage: str, cls: type[Method], config) -> list[str]:
    """The settings setting ``stage``'s length: ``<stage>_epochs``, else those not named after another stage
    (DEC's ``layerwise_epochs`` and ``finetune_epochs`` make its ``pretrain``); warm-ups stay."""
    lengths = [name for name in length_settings(dataclasses.asdict(config)) if not name.startswith("warmup")]
    if f"{stage}_epochs" in lengths:
        return [f"{stage}_epochs"]
    others = [other.name for other in cls.stages if other.name != stage]
    return [name for name in lengths if not any(name.startswith(f"{other}_") for other in others)]


def format_seconds(seconds: float | None) -> str:
    """A duration as people read it: "42 s", "3 min 05 s", "2 h 07 min", "27 d 3 h" (never "39000 min")."""
    if seconds is None:
        return "—"
    days, rest = divmod(int(round(seconds)), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"



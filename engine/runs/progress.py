"""A run's progress and ETA over all its stages, each weighted by its cost in seconds rather than counted as an
equal share: the estimate's cost (``engine.methods.estimate``) before a stage runs, its measured steps while it
runs, its wall time once it has finished."""
from __future__ import annotations

from dataclasses import dataclass

from ..methods.estimate import FitEstimate, StageEstimate


@dataclass
class _Running:
    stage: str
    began: float
    first_step: int | None = None  # the step and time of the first step event: the timing starts after it,
    first_time: float = 0.0  # as the estimate's does, so a warm-up (or a resumed stage's head start) is not a rate


class RunProgress:
    """Follows one execution of a run: call :meth:`start` and :meth:`done` at a stage's start and end events and
    :meth:`at` at its steps, with the time (``time.time()``) of each.

    The current stage's seconds per step pool the estimate's timed steps with the steps timed now (each counts
    as one observation), so the ETA starts from the estimate and moves towards the measured rate as steps come in
    rather than jumping. A stage the estimate did not see counts from its own steps only; stages listed before
    the current one that never started here (finished before a resume, or reused) count as done.
    """

    def __init__(self, estimate: FitEstimate | None) -> None:
        self.estimate: dict[str, StageEstimate] = dict(estimate.stages) if estimate is not None else {}
        self.order = list(self.estimate)
        self.measured: dict[str, float] = {}
        self.running: _Running | None = None

    def start(self, stage: str, total: int, now: float, first_step: int = 0) -> tuple[float, float | None]:
        """A stage of ``total`` steps started, or resumed at ``first_step`` (its steps before that count as done
        at the estimate's rate): (progress, ETA) as :meth:`at`."""
        if stage not in self.order:
            after = self.order.index(self.running.stage) + 1 if self.running else 0
            self.order.insert(after, stage)
        self.running = _Running(stage, now)
        started = self.at(first_step, total, now)
        self.running.first_step = None  # the timing starts after the first step run now, as in a fresh stage
        return started

    def done(self, stage: str, now: float) -> None:
        if self.running is not None and self.running.stage == stage:
            self.measured[stage] = now - self.running.began

    def at(self, step: int, total: int, now: float) -> tuple[float, float | None]:
        """(progress in [0, 1], seconds left in the run or None when nothing says yet) at ``step`` of ``total``
        steps of the running stage."""
        running = self.running
        assert running is not None, "start a stage first"
        if running.first_step is None and step > 0:
            running.first_step, running.first_time = step, now
        per_step = self._seconds_per_step(running, step, total, now)
        index = self.order.index(running.stage)
        done = sum(self.measured.get(s, self._estimated(s)) for s in self.order[:index])
        later = sum(self._estimated(s) for s in self.order[index + 1:])
        if per_step is None:
            elapsed = now - running.began
            return (done + elapsed) / (done + elapsed + later) if done + elapsed + later > 0 else 0.0, None
        current_done, current_left = step * per_step, max(total - step, 0) * per_step
        whole = done + current_done + current_left + later
        progress = (done + current_done) / whole if whole > 0 else 0.0
        return min(max(progress, 0.0), 1.0), current_left + later

    def _estimated(self, stage: str) -> float:
        return self.estimate[stage].seconds if stage in self.estimate else 0.0

    def _seconds_per_step(self, running: _Running, step: int, total: int, now: float) -> float | None:
        """The estimate's seconds spread over the stage's ``total`` steps (feature extraction, say, counts its
        batches differently in an estimate), pooled with the steps timed so far."""
        estimated = self.estimate.get(running.stage)
        if estimated is None or not total:
            prior_steps, prior = 0, 0.0
        else:  # a stage timed whole in the estimate is as good as watching every step
            prior_steps = min(estimated.timed_steps or total, total)
            prior = estimated.seconds / total * prior_steps
        timed = step - running.first_step if running.first_step is not None else 0
        if prior_steps + timed == 0:
            return None
        return (prior + (now - running.first_time if timed else 0.0)) / (prior_steps + timed)

"""Time before training: a request's estimate (``train --estimate``, the Train page) and fitting a run into a time
budget (``train --budget-minutes``) by scaling every stage's epochs."""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data import load_dataset
from ..errors import ConfigError
from ..methods import pick_device
from ..methods.estimate import FitEstimate, StageEstimate, estimate_fit, format_seconds, length_settings
from .execute import RunRequest


def estimate_request(request: RunRequest, *, runs_root: Path | None = None,
                     data_roots: Sequence[Path] | None = None,
                     cancel: threading.Event | None = None) -> FitEstimate:
    """How long ``request`` would take on its device: its data loaded as the run would load it, then a few timed
    steps of every stage (:func:`~engine.methods.estimate.estimate_fit`). Nothing is trained or stored;
    ``runs_root`` is where another run's stages it reuses (``pretext_from``) are read from."""
    method = request.build_method()
    device = pick_device(request.device)
    images = load_dataset(request.dataset, data_root=request.data_root, download=request.download,
                          data_roots=data_roots, image_size=request.image_size, subset=request.subset)
    return estimate_fit(method, images, device, runs_root=runs_root, cancel=cancel)


def fit_to_budget(request: RunRequest, minutes: float, estimate: FitEstimate) -> RunRequest:
    """``request`` with every stage's length scaled by one factor so that ``estimate`` fits into ``minutes``;
    the returned request carries the scaled estimate and a ``budget`` record (minutes, factor, the estimate
    before and after, each setting changed) that the run keeps.

    The factor applies to the stages timed by their steps; stages timed whole (neighbour mining) do not shrink
    with epochs, so they are taken off the budget first. A run that already fits is left as it is (factor 1), and
    one whose unshrinkable stages alone exceed the budget gets the shortest schedule: 1 epoch a stage, no
    warm-up. Raises ConfigError for a budget that is not positive."""
    if not minutes > 0:
        raise ConfigError(f"--budget-minutes must be positive, got {minutes}")
    config = request.build_method().get_params()
    budget = minutes * 60
    fixed = sum(stage.seconds for stage in estimate.stages.values() if not stage.timed_steps)
    scalable = estimate.seconds - fixed
    factor = 1.0 if estimate.seconds <= budget or scalable <= 0 else max(budget - fixed, 0.0) / scalable
    scaled = {name: _scaled(name, value, factor) for name, value in length_settings(config).items() if value > 0}
    changed = {name: [config[name], value] for name, value in scaled.items() if value != config[name]}
    overrides = {**request.overrides, **{name: new for name, (_, new) in changed.items()}}
    stages = {name: _scaled_stage(name, stage, config, changed, factor) for name, stage in estimate.stages.items()}
    after = dataclasses.replace(estimate, stages=stages)
    record = {"minutes": minutes, "factor": round(factor, 4), "estimated_seconds": round(estimate.seconds, 1),
              "budgeted_seconds": round(after.seconds, 1), "scaled": changed}
    scaled_request = dataclasses.replace(request, overrides=overrides, estimate=after.to_json(), budget=record)
    scaled_request.build_method()  # the scaled settings must still be valid together (warm-up < epochs, …)
    return scaled_request


def _scaled(name: str, value: int, factor: float) -> int:
    if factor >= 1:
        return value
    if name.startswith("warmup"):  # part of a stage, may vanish: it must stay shorter than the stage
        return int(value * factor)
    return max(1, round(value * factor))


def _scaled_stage(stage: str, estimate: StageEstimate, config: dict[str, Any], changed: dict[str, list[int]],
                  factor: float) -> StageEstimate:
    """A stage's estimate after scaling: by the ratio of its own ``<stage>_epochs`` (or a one-stage method's
    ``epochs``) where that setting exists, else by ``factor``; stages timed whole are unchanged."""
    if not estimate.timed_steps:
        return estimate
    if not changed:
        return estimate
    setting = next((name for name in (f"{stage}_epochs", "epochs") if name in config), None)
    ratio = changed[setting][1] / changed[setting][0] if setting in changed else 1.0 if setting else factor
    return StageEstimate(estimate.seconds * ratio, max(1, round(estimate.steps * ratio)), estimate.timed_steps)


def budget_message(budget: dict[str, Any]) -> str:
    """The line a budgeted run records in its messages (and the CLI prints)."""
    limit = format_seconds(budget["minutes"] * 60)
    if budget["factor"] >= 1:
        return f"budget {limit}: the estimate, {format_seconds(budget['estimated_seconds'])}, fits; no epochs changed"
    if not budget["scaled"]:
        return (f"budget {limit}: the estimate is {format_seconds(budget['estimated_seconds'])}, but this method has "
                "no epochs to scale")
    settings = ", ".join(f"{name} {old}→{new}" for name, (old, new) in budget["scaled"].items())
    # over by more than the rounding of whole epochs, which an estimate is not precise enough to tell apart
    over = "" if budget["budgeted_seconds"] <= 1.05 * budget["minutes"] * 60 else (
        "; still over budget: the shortest schedule or the stages that do not shrink with epochs")
    return (f"budget {limit}: every stage's epochs scaled by {budget['factor']:.3g} ({settings}); estimate "
            f"{format_seconds(budget['estimated_seconds'])} → {format_seconds(budget['budgeted_seconds'])}{over}")

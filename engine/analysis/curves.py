"""The recorded values of a run, grouped into chart panels: one panel per stage and kind of value, so a loss and a
share never share an axis, each axis says what it counts, and a stage recorded once is a number, not a chart.

Examples:
    >>> rows = [{"stage": "cluster", "step": s, "name": "inertia", "value": v} for s, v in ((1, 5.0), (2, 4.0))]
    >>> panel, = stage_panels(rows, "kmeans")
    >>> panel.x_title, panel.y_title, panel.single
    ('restart', 'inertia', False)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..methods.training import TRAIN_ACC

# values that are a share of images or neighbours (0–1) rather than a loss
SHARE_NAMES = frozenset({"neighbor_purity", "label_change"})
COUNT_NAMES = frozenset({"n_clusters"})
ACCURACY_TITLE = "ACC (train images)"  # the clustering accuracy after each epoch, when the images have labels
KIND_TITLES = {"share": "share of images", "count": "clusters", "accuracy": ACCURACY_TITLE}
LINE_NAMES = {TRAIN_ACC: ACCURACY_TITLE}  # a recorded name shown under another name in the legend
UNIT_RANGE_KINDS = frozenset({"share", "accuracy"})  # kinds whose axis runs from 0 to 1


@dataclass
class Panel:
    """One chart: a stage's values of one kind, each a named line of (steps, values)."""

    stage: str
    kind: str
    x_title: str
    y_title: str
    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)

    @property
    def single(self) -> bool:
        """Every line has one point: show the numbers instead of a chart."""
        return all(len(steps) == 1 for steps, _ in self.series.values())

    @property
    def title(self) -> str:
        return self.stage if self.kind == "loss" else f"{self.stage} · {self.y_title}"


def value_kind(name: str) -> str:
    """"accuracy" for the clustering accuracy after each epoch, "share" for shares of images (0–1), "count" for
    counts of clusters, "loss" for everything else."""
    if name == TRAIN_ACC:
        return "accuracy"
    if name in SHARE_NAMES or name.endswith("_share"):
        return "share"
    return "count" if name in COUNT_NAMES else "loss"


def _step_units(method_name: str) -> dict[str, str]:
    from ..errors import ConfigError
    from ..methods import get_method

    try:
        return {stage.name: stage.step_unit for stage in get_method(method_name).stages}
    except ConfigError:  # a run of a method this server no longer has: its charts still draw, counting "step"
        return {}


def stage_panels(rows: list[dict], method_name: str) -> list[Panel]:
    """Panels for a run's recorded rows (dicts with stage, step, name, value), in recording order of stage and
    kind. A loss panel with one line is titled by that line's name (K-means' y-axis says "inertia"); the
    accuracy after each epoch gets a panel of its own, never a loss's axis."""
    units = _step_units(method_name)
    panels: dict[tuple[str, str], Panel] = {}
    for row in rows:
        kind = value_kind(row["name"])
        key = (row["stage"], kind)
        if key not in panels:
            panels[key] = Panel(row["stage"], kind, units.get(row["stage"], "step"), KIND_TITLES.get(kind, "loss"))
        steps, values = panels[key].series.setdefault(LINE_NAMES.get(row["name"], row["name"]), ([], []))
        steps.append(row["step"])
        values.append(row["value"])
    for panel in panels.values():
        if panel.kind == "loss" and len(panel.series) == 1:
            panel.y_title = next(iter(panel.series))
    return list(panels.values())

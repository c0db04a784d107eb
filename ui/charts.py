"""The app's small charts as ECharts options for ``st.echarts_chart``: lines over training steps, bars, and the
clickable confusion matrix. One charting library for every page: Streamlit loads a chart library's script the first
time a tab shows one of its charts, and plotly's (4.7 MB) took a new tab about a second on this machine, where
ECharts' (1.2 MB) takes a fraction (benchmarks/pages-cpu-echarts)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

CHART_HEIGHT_PX = 320
BLUES = ("#f7fbff", "#c6dbef", "#6baed6", "#2171b5", "#08306b")


def _number(value: float) -> float | None:
    """A JSON number: ECharts takes no NaN or infinity (a gap in the line instead)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _axis(name: str, kind: str = "value", gap: int = 30, **extra) -> dict[str, Any]:
    return {"type": kind, "name": name, "nameLocation": "middle", "nameGap": gap, **extra}


def line_chart(title: str, series: Mapping[str, tuple[Sequence[float], Sequence[float]]], x_title: str,
               y_title: str, y_range: tuple[float, float] | None = None) -> dict[str, Any]:
    """Named lines (name → (x values, y values)), titled axes, the legend under the plot even for one line."""
    y_axis = _axis(y_title, gap=48, scale=y_range is None)
    if y_range is not None:
        y_axis.update(min=y_range[0], max=y_range[1])
    return {
        "animation": False, "title": {"text": title, "textStyle": {"fontSize": 14}},
        "grid": {"left": 64, "right": 16, "top": 44, "bottom": 72},
        "tooltip": {"trigger": "axis"}, "legend": {"type": "scroll", "bottom": 0},
        "xAxis": _axis(x_title, scale=True), "yAxis": y_axis,
        "series": [{"type": "line", "name": name, "showSymbol": len(xs) <= 60, "symbolSize": 5,
                    "data": [[_number(x), _number(y)] for x, y in zip(xs, ys)]}
                   for name, (xs, ys) in series.items()],
    }


def bar_chart(title: str, categories: Sequence[str], values: Sequence[float], x_title: str,
              y_title: str) -> dict[str, Any]:
    """One bar per category."""
    return {
        "animation": False, "title": {"text": title, "textStyle": {"fontSize": 14}},
        "grid": {"left": 64, "right": 16, "top": 44, "bottom": 48},
        "tooltip": {"trigger": "axis"},
        "xAxis": _axis(x_title, kind="category", data=list(categories)), "yAxis": _axis(y_title, gap=48),
        "series": [{"type": "bar", "name": y_title, "data": [_number(v) for v in values]}],
    }


def confusion_chart(title: str, matrix: np.ndarray, row_names: Sequence[str], column_names: Sequence[str],
                    x_title: str, y_title: str, chosen: int | None = None) -> dict[str, Any]:
    """A heatmap of ``matrix`` (rows top to bottom) with each cell's count written in it; a click selects one
    cell (its data index is ``row * n_columns + column``) and ``chosen`` is outlined."""
    n_rows, n_columns = matrix.shape
    data = [{"name": f"{row_names[row]} · {column_names[column]}", "value": [column, row, int(matrix[row, column])]}
            for row in range(n_rows) for column in range(n_columns)]
    if chosen is not None:
        data[chosen]["itemStyle"] = {"borderColor": "crimson", "borderWidth": 3}
    return {
        "animation": False, "title": {"text": title, "textStyle": {"fontSize": 14}},
        "grid": {"left": 96, "right": 72, "top": 44, "bottom": 56},
        "tooltip": {"trigger": "item", "formatter": "{b}: {@[2]} images<br>click to list them"},
        "xAxis": _axis(x_title, kind="category", data=list(column_names), splitArea={"show": True}),
        "yAxis": _axis(y_title, kind="category", gap=80, data=list(row_names), inverse=True,
                       splitArea={"show": True}),
        "visualMap": {"min": 0, "max": max(int(matrix.max()), 1), "calculable": False, "orient": "vertical",
                      "right": 0, "top": "middle", "text": ["images", ""], "inRange": {"color": list(BLUES)}},
        "series": [{"type": "heatmap", "name": title, "data": data, "label": {"show": True},
                    "selectedMode": "single",
                    "select": {"itemStyle": {"borderColor": "crimson", "borderWidth": 3}},
                    "emphasis": {"itemStyle": {"borderColor": "#333", "borderWidth": 1}}}],
    }


def clicked_items(event: Mapping | None) -> list[int]:
    """The data indices an ``st.echarts_chart`` selection holds (every series), sorted and once each."""
    if not event:
        return []
    return sorted({int(i) for group in event["selection"]["selected"] for i in group.get("data_indices", [])})

"""What the Map page does with its points: the chart's spec, which thumbnails a hover sends, finding an image by
index or file name, the images a box/lasso selection picked, the map's extent and the window that centres one
point.

The page draws a subset of the run's images (``points``, indices into the run; every image unless filters narrow
it), so each function takes the shown indices and never assumes they are ``0…N-1``.

Examples:
    >>> names = ["cat_01.png", "dog_02.png", "cat_10.png"]
    >>> find_images("CAT", names).tolist()            # file names, case-insensitive, in index order
    [0, 2]
    >>> find_images("#1", names).tolist()             # an index
    [1]
    >>> find_images("1", names).tolist()              # index 1 first, then the names holding a "1"
    [1, 0, 2]
    >>> coords = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    >>> images_in_areas(coords, np.arange(3), [{"brush_type": "rect", "coord_range": [[0.5, 2.5], [-1, 0.5]]}])
    [2]
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

HOVER_PREFETCH = 32  # thumbnails sent beside the hovered one: its nearest points on the map
VIEW_SHARE = 0.2  # the share of the map's width and height a centred view shows
# the plot area's margins inside the Map's chart, in pixels (the brush tools above, the legend on the right): with
# them and the axis ranges a point's place on screen is known, which the browser tests and the page-time bench use
MAP_GRID_PX = {"left": 16, "right": 130, "top": 44, "bottom": 16}
POINT_PX = 5  # a map point's diameter


def hover_batch(coords: np.ndarray, points: np.ndarray, index: int, k: int = HOVER_PREFETCH) -> np.ndarray:
    """``index`` followed by the ``k`` shown points nearest it on the map (ties by index), the thumbnails one
    hover sends: the pointer usually moves on to a neighbour, whose picture is then already in the browser."""
    points = np.asarray(points)
    others = points[points != index]
    if not len(others) or k < 1:
        return np.array([index])
    distance = ((coords[others] - coords[index]) ** 2).sum(axis=1)
    k = min(k, len(others))
    nearest = np.argpartition(distance, k - 1)[:k] if k < len(others) else np.arange(len(others))
    nearest = nearest[np.lexsort((others[nearest], distance[nearest]))]
    return np.concatenate([[index], others[nearest]])


def find_images(query: str, names: Sequence[str], limit: int | None = None) -> np.ndarray:
    """Indices of the images ``query`` names: a number is that image's index (``"#12"`` only the index, ``"12"``
    image 12 first), and any text finds, in index order, every image whose file name contains it
    (case-insensitive). ``names`` are as the pages show them: file names, or ``#index`` for an image without a
    file, which only its index finds. An empty query finds nothing; ``limit`` keeps the first matches."""
    text = query.strip()
    exact: list[int] = []
    number = text[1:] if text.startswith("#") else text
    if number.isdigit():
        exact = [int(number)] if int(number) < len(names) else []
        if text.startswith("#"):
            return np.array(exact, dtype=np.int64)
    if not text:
        return np.array([], dtype=np.int64)
    lowered = text.lower()
    found = exact + [i for i, name in enumerate(names)
                     if lowered in name.lower() and i not in exact and name != f"#{i}"]
    return np.array(found[:limit], dtype=np.int64)


def images_in_areas(coords: np.ndarray, points: np.ndarray, areas: Iterable[Mapping]) -> list[int]:
    """The shown images (``points``) inside any of the brushed ``areas`` of an ECharts chart
    (``st.echarts_chart(on_select=…)``'s ``selection.areas``), sorted. A ``rect`` area's ``coord_range`` is
    ``[[x0, x1], [y0, y1]]``, a ``polygon``'s (the lasso) its corners ``[[x, y], …]``, both in map coordinates.
    The Map computes its selection here rather than from ECharts' selected items: its scatter draws in ECharts'
    ``large`` mode, which reports the brushed areas but no items."""
    points = np.asarray(points, dtype=np.int64)
    inside = np.zeros(len(points), dtype=bool)
    xy = coords[points]
    for area in areas:
        corners = area.get("coord_range")
        if not corners:
            continue
        if area.get("brush_type") == "rect":
            (x0, x1), (y0, y1) = corners
            inside |= ((xy[:, 0] >= min(x0, x1)) & (xy[:, 0] <= max(x0, x1))
                       & (xy[:, 1] >= min(y0, y1)) & (xy[:, 1] <= max(y0, y1)))
        elif area.get("brush_type") == "polygon" and len(corners) >= 3:
            inside |= _inside_polygon(xy, np.asarray(corners, dtype=np.float64))
    return sorted(points[inside].tolist())


def _inside_polygon(xy: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Even-odd rule: a point is inside when a ray to its right crosses the polygon's edges an odd number of times."""
    x, y = xy[:, 0], xy[:, 1]
    inside = np.zeros(len(xy), dtype=bool)
    for (x0, y0), (x1, y1) in zip(corners, np.roll(corners, -1, axis=0)):  # one edge at a time: no N×edges array
        spans = (y0 > y) != (y1 > y)
        crossing_x = x0 + (y[spans] - y0) * (x1 - x0) / (y1 - y0)  # y1 != y0 wherever the edge spans y
        inside[spans] ^= x[spans] < crossing_x
    return inside


def map_extent(coords: np.ndarray, margin: float = 0.03) -> tuple[list[float], list[float]]:
    """x and y axis ranges that show every point of the map with ``margin`` of its extent around it."""
    low, high = coords.min(axis=0), coords.max(axis=0)
    pad = np.maximum(high - low, 1e-6) * margin
    return [float(low[0] - pad[0]), float(high[0] + pad[0])], [float(low[1] - pad[1]), float(high[1] + pad[1])]


def scatter_spec(coords: np.ndarray, groups: Sequence[tuple[str, np.ndarray, str | None]],
                 extent: tuple[list[float], list[float]], ring: tuple[str, int] | None = None,
                 window: tuple[list[float], list[float]] | None = None) -> dict[str, Any]:
    """The ECharts option (``st.echarts_chart``'s spec) of the Map's scatter: a series per ``(name, image indices,
    colour or None for the theme's)`` group (empty ones left out), each point ``[x, y, image index]``; the
    axes span ``extent`` inside :data:`MAP_GRID_PX`; box and lasso brushes, wheel zoom and drag pan; ``ring``
    (name, image) circles one image; ``window`` (x and y ranges) is the view it opens on, zoomed in, which the
    wheel can zoom out of (axis limits could not be left).

    Every series draws in ECharts' batched ``large`` mode, in one pass: at 60k points a hover or a zoom then takes
    a few hundredths of a second, where drawing point by point took tenths. Large mode reports no selected items,
    so the page selects by the brushed areas (:func:`images_in_areas`). The tooltip shows the image's index, marked
    (``data-dce-index``) for the hover preview (``assets/map_hover.js``), which shows the image and its caption:
    captions in the spec would double its size (18 MB at 200k points, resent on every rerun)."""
    series = []
    for name, members, colour in groups:
        if not len(members):
            continue
        xy = np.round(coords[members].astype(np.float64), 4).tolist()  # float64: float32 prints 16 digits
        data = [[x, y, i] for (x, y), i in zip(xy, np.asarray(members).tolist())]
        series.append({"type": "scatter", "name": name, "data": data, "symbolSize": POINT_PX, "large": True,
                       "largeThreshold": 0, "progressive": 0, **({"itemStyle": {"color": colour}} if colour else {})})
    if ring is not None:
        name, index = ring
        series.append({"type": "scatter", "name": name, "silent": True, "z": 10, "symbolSize": 22,
                       "data": [[float(coords[index, 0]), float(coords[index, 1])]], "tooltip": {"show": False},
                       "itemStyle": {"color": "rgba(0,0,0,0)", "borderColor": "red", "borderWidth": 3}})
    (x0, x1), (y0, y1) = extent
    axis = {"type": "value", "axisLabel": {"show": False}, "axisTick": {"show": False}, "axisLine": {"show": False}}
    return {
        "animation": False, "grid": MAP_GRID_PX, "series": series,
        "xAxis": {**axis, "min": x0, "max": x1}, "yAxis": {**axis, "min": y0, "max": y1},
        # one entry a line on the right (a scrolling list when they do not fit): under the plot, ten clusters'
        # names took two lines or a pager at 1024 px
        "legend": {"type": "scroll", "orient": "vertical", "right": 4, "top": MAP_GRID_PX["top"],
                   "bottom": MAP_GRID_PX["bottom"], "textStyle": {"width": 84, "overflow": "truncate"}},
        # below the point: the hover preview (image and caption) shows above it
        "tooltip": {"trigger": "item", "transitionDuration": 0, "position": "bottom",
                    "formatter": '<span data-dce-index="{@[2]}">#{@[2]}</span>'},
        "toolbox": {"right": 8, "top": 4, "feature": {"brush": {
            "type": ["rect", "polygon", "clear"],
            "title": {"rect": "Box select", "polygon": "Lasso", "clear": "Clear the selection"}}}},
        "brush": {"xAxisIndex": "all", "yAxisIndex": "all"},
        "dataZoom": [{"type": "inside", "xAxisIndex": 0, "filterMode": "none",
                      **({"startValue": window[0][0], "endValue": window[0][1]} if window else {})},
                     {"type": "inside", "yAxisIndex": 0, "filterMode": "none",
                      **({"startValue": window[1][0], "endValue": window[1][1]} if window else {})}],
    }


def point_on_chart(coords: np.ndarray, index: int, extent: tuple[list[float], list[float]], width: float,
                   height: float) -> tuple[float, float]:
    """Where image ``index`` is drawn on a Map chart of ``width`` × ``height`` pixels whose axes span ``extent``,
    in pixels from the chart's top left corner."""
    (x0, x1), (y0, y1) = extent
    grid = MAP_GRID_PX
    x = grid["left"] + (coords[index, 0] - x0) / (x1 - x0) * (width - grid["left"] - grid["right"])
    y = grid["top"] + (y1 - coords[index, 1]) / (y1 - y0) * (height - grid["top"] - grid["bottom"])
    return float(x), float(y)


def view_window(coords: np.ndarray, index: int, share: float = VIEW_SHARE) -> tuple[list[float], list[float]]:
    """x and y axis ranges that centre image ``index`` and show ``share`` of the whole map's extent."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    span = np.maximum(coords.max(axis=0) - coords.min(axis=0), 1e-6) * share / 2
    centre = coords[index]
    return ([float(centre[0] - span[0]), float(centre[0] + span[0])],
            [float(centre[1] - span[1]), float(centre[1] + span[1])])


def hover_captions(names: Sequence[str], assign: np.ndarray, labels: np.ndarray | None = None,
                   class_names: Sequence[str] = ()) -> list[str]:
    """The hover text of every image, spelled out as the galleries do: ``#122 · cluster 8 · label 8``."""
    def label_name(label: int) -> str:
        return class_names[label] if 0 <= label < len(class_names) else str(label)

    if labels is None:
        return [f"{name} · cluster {cluster}" for name, cluster in zip(names, assign.tolist())]
    label_names = {int(label): label_name(int(label)) for label in np.unique(labels)}
    return [f"{name} · cluster {cluster} · label {label_names[label]}"
            for name, cluster, label in zip(names, assign.tolist(), labels.tolist())]

"""What the Map page does with its points, apart from drawing them: which thumbnails a hover sends, finding an
image by index or file name, the rows a box/lasso selection picked, and the window that centres one point.

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
    >>> selected_rows([{"customdata": 7}, {"customdata": [3]}, {"x": 0.5}, {"customdata": 7}])
    [3, 7]
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

HOVER_PREFETCH = 32  # thumbnails sent beside the hovered one: its nearest points on the map
VIEW_SHARE = 0.2  # the share of the map's width and height a centred view shows


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


def selected_rows(points: Iterable[Mapping]) -> list[int]:
    """The image indices of a plotly selection (``st.plotly_chart(on_select=…)``'s ``selection.points``), sorted and
    once each. Each trace carries its images' indices as ``customdata`` (a number, or a list whose first entry is
    it); points without it (a highlight ring) are not images and are left out."""
    rows = set()
    for point in points:
        value = point.get("customdata")
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value is not None:
            rows.add(int(value))
    return sorted(rows)


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

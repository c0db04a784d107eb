"""How a dataset's files are laid out: class folders (labels are the sorted folder names), a flat folder (no
labels), or ``train/`` and ``test/`` folders of class folders (one class list over both sides). Orders the files
and gives each its label.

Sub-folders are class folders only when no image lies beside them: a folder holding images *and* sub-folders is
read whole, sub-folders included, without labels, rather than dropping its loose images (other loose files, a
README say, are not images and do not count)."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from PIL import Image

from engine.data.listing import Entry
from engine.errors import DatasetError

SPLITS = ("train", "test")
_NOT_IN_CLASS = "not inside a class folder"


def unwrap_single_folder(entries: list[Entry]) -> list[Entry]:
    """Archives usually wrap everything in one folder named after the archive; the layout starts below it."""
    while entries and all(len(e.parts) > 1 for e in entries) and len({e.parts[0] for e in entries}) == 1:
        entries = [Entry(e.parts[1:], e.name, e.source) for e in entries]
    return entries


def arrange(entries: list[Entry], split: str | None, root: Path
            ) -> tuple[list[tuple[Entry, int]], list[str] | None, list[tuple[str, str]]]:
    """Order the files and give each its label (-1 when unlabelled); files outside every class folder of a
    labelled layout are returned as skipped."""
    top = {e.parts[0] for e in entries if len(e.parts) > 1}
    if top and top <= set(SPLITS):
        if split is not None and split not in top:
            raise DatasetError(f"{root} has no {split}/ folder (it has {', '.join(sorted(t + '/' for t in top))}); "
                               f"ask for another split or none")
        chosen = [s for s in SPLITS if s in top and split in (None, s)]
        by_split = {s: [Entry(e.parts[1:], e.name, e.source) for e in entries if len(e.parts) > 1 and e.parts[0] == s]
                    for s in top}
        stray = [(e.name, "not inside train/ or test/") for e in entries if len(e.parts) == 1]
        classes = sorted({e.parts[0] for side in by_split.values() for e in side if len(e.parts) > 1})
        items: list[tuple[Entry, int]] = []
        for s in chosen:
            side_items, side_stray = _label(by_split[s], classes or None)
            items += side_items
            stray += side_stray
        return items, classes or None, stray
    if split is not None:
        raise DatasetError(f"{root} is not split into train/ and test/ folders, so split={split!r} cannot be "
                           f"honoured; load it without a split")
    loose_images = any(len(e.parts) == 1 and looks_like_image(e.name) for e in entries)
    classes = [] if loose_images else sorted(top)
    items, stray = _label(entries, classes or None)
    return items, classes or None, stray


def looks_like_image(name: str) -> bool:
    """Whether a file's extension is one Pillow reads (``.jpg``, ``.png``, ``.webp``, …)."""
    return PurePosixPath(name).suffix.lower() in Image.registered_extensions()  # it loads Pillow's plugins


def _label(entries: list[Entry], classes: list[str] | None
           ) -> tuple[list[tuple[Entry, int]], list[tuple[str, str]]]:
    if classes is None:
        return [(e, -1) for e in sorted(entries, key=lambda e: e.parts)], []
    index = {name: i for i, name in enumerate(classes)}
    inside = sorted((e for e in entries if len(e.parts) > 1), key=lambda e: (index[e.parts[0]], e.parts))
    return [(e, index[e.parts[0]]) for e in inside], [(e.name, _NOT_IN_CLASS) for e in entries if len(e.parts) == 1]

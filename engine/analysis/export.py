"""Export a finished run for people without the app: a PNG contact sheet per cluster, one self-contained HTML
gallery, a CSV of every image's assignment and tags (with labels also a corrected-labels CSV), and a zip of them
all; optionally only the images a filter keeps.

Everything is written to a temporary file first and renamed into place (:mod:`engine.atomic`), so a reader never
sees half a file and a full disk leaves the files of an earlier export as they were.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import re
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from ..atomic import atomic_path, write_atomic
from ..data.roots import default_upload_dir
from ..errors import ConfigError, UserError
from ..runs.uploads import dataset_label
from .clusters import ClusterSummary, cluster_summaries, off_majority
from .filters import ImageFilter
from .results import RunResults
from .tags import corrected_labels
from .thumbnails import contact_sheet, png_bytes, thumbnail, titled
from ..wording import count

FORMATS = ("png", "html", "csv", "zip")
SHEET_COLUMNS = 10
GALLERY_CELL = 64  # pixels per thumbnail in the HTML gallery, whose captions wrap
SHEET_CELL = 96  # per cell on a PNG sheet: its one-line caption holds a name of about 15 characters (cat_0025.jpg)
SCORE_LABELS = {"acc": "ACC", "nmi": "NMI", "ari": "ARI", "neighbor_purity": "neighbour purity"}
OFF_MAJORITY_RGB = (220, 30, 30)


def safe_filename(name: str, fallback: str = "run") -> str:
    """``name`` reduced to letters, digits, ``.``, ``_`` and ``-`` (no separators, no leading dot)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return cleaned[:120] or fallback


def check_formats(formats: Iterable[str] | str) -> list[str]:
    """The requested formats, lower-cased and de-duplicated in order (a string may list them with commas).

    Raises:
        UserError: a format is not one of :data:`FORMATS`, or none is given.
    """
    if isinstance(formats, str):
        formats = formats.split(",")
    chosen: list[str] = []
    for fmt in formats:
        name = fmt.strip().lower()
        if name not in FORMATS:
            raise UserError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise UserError(f"no export format given; choose from {', '.join(FORMATS)}")
    return chosen


@dataclass
class _Export:
    """What every format draws on: the run, its clusters (in the export's order, only the kept images), its images,
    their tags and which of them the filter keeps."""

    results: RunResults
    summaries: list[ClusterSummary]
    pixels: np.ndarray
    paths: list[str]
    class_names: list[str]
    max_per_cluster: int
    tags: dict[int, list[str]]
    kept: np.ndarray
    filter_note: str
    order: str  # "most confident" or "least confident": which members come first

    @property
    def labels(self) -> np.ndarray | None:
        return self.results.labels

    def class_name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def label_name(self, index: int) -> str:
        return self.class_name(int(self.labels[index]))

    def caption(self, index: int) -> str:
        """A sheet cell's caption: the image's name (its file name, else ``#index``), then its label on a line of
        its own when the set is labelled."""
        name = self.results.image_name(int(index))
        return name if self.labels is None else f"{name}\n{self.label_name(index)}"

    def shown(self, summary: ClusterSummary) -> np.ndarray:
        return summary.members[:self.max_per_cluster]

    def sheet_title(self, summary: ClusterSummary) -> str:
        """A PNG sheet's title: run, cluster, how many images it shows of how many, and its majority label."""
        shown = len(self.shown(summary))
        title = f"Run {self.results.run_id} · cluster {summary.cluster} · " + (
            f"{count(summary.size, 'image')}" if shown == summary.size
            else f"{shown} {self.order} of {summary.size} images")
        if self.filter_note:
            title += f" ({self.filter_note})"
        if summary.purity is not None:
            title += f" · mostly {self.class_name(summary.majority_label)} (purity {summary.purity:.2f})"
        return title

    def off_majority(self, summary: ClusterSummary) -> list[bool] | None:
        """Per shown member: does its label differ from the cluster's majority (None without labels)."""
        return off_majority(summary, self.shown(summary), self.labels)


def export_run(results: RunResults, out_dir: str | Path, formats: Iterable[str] = FORMATS,
               max_per_cluster: int = 100, image_filter: ImageFilter | None = None,
               least_confident_first: bool = False) -> dict[str, list[Path]]:
    """Write a finished run's clusters to ``out_dir`` in the chosen formats; returns format → written files.

    * ``png``: ``cluster_<k>.png`` per cluster, its ``max_per_cluster`` most confident members (least confident
      with ``least_confident_first``: where a cluster's mistakes gather) captioned with their name (and label
      name); with labels, members outside the cluster's majority class are outlined.
    * ``html``: ``gallery.html``, one page with the same images inlined (opens offline): the run's scores, then
      one section per cluster, empty ones included.
    * ``csv``: ``assignments.csv``, one row per image: index, path, cluster, confidence, and label, label_name
      when the run has labels, then its tags (``; ``-separated); with labels also ``corrected_labels.csv``:
      index, path, cluster, label, label_name, the corrected label and its name (a ``label: NAME`` tag's class,
      else the label) and whether it was corrected. A path or name a spreadsheet would run as a formula starts
      with a quote.
    * ``zip``: ``<run id>.zip`` of the files above (written too when not asked for separately).

    ``image_filter``: only the images it keeps (with the run's tags as they are now) go into every file; the
    gallery names the filter, and a cluster none of whose images it keeps gets no sheet.

    Raises:
        UserError: an unknown format, the run's dataset can no longer be loaded, or ``out_dir`` is not
            writable (``DiskFullError`` when its disk is full).

    Examples:
        >>> results = load_results(RunStore(), "20240501-101500-scan-1a2b")    # doctest: +SKIP
        >>> export_run(results, Path("export"), ["csv"])                       # doctest: +SKIP
        {'csv': [PosixPath('export/assignments.csv')]}
    """
    chosen = check_formats(formats)
    if max_per_cluster < 1:
        raise ConfigError(f"max_per_cluster must be at least 1, got {max_per_cluster}")
    out_dir = Path(out_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the export folder {out_dir}: {exc.strerror}") from exc

    images = results.images
    pixels = np.asarray(images.images)
    paths = list(images.paths) if len(images.paths) == len(pixels) else [""] * len(pixels)
    tags = results.store.image_tags(results.run_id)
    image_filter = image_filter or ImageFilter()
    kept = image_filter.mask(results, tags)
    order = slice(None, None, -1 if least_confident_first else 1)
    summaries = [replace(summary, members=summary.members[kept[summary.members]][order],
                         confidence=summary.confidence[kept[summary.members]][order])
                 for summary in cluster_summaries(results.assign, results.confidence, results.n_clusters,
                                                  results.labels)]
    export = _Export(results, summaries, pixels, paths, list(images.class_names), max_per_cluster, tags, kept,
                     image_filter.describe(results.class_name),
                     "least confident" if least_confident_first else "most confident")

    makers = {"png": _sheets, "html": _gallery, "csv": _assignments}
    needed = set(makers) if "zip" in chosen else set(chosen)
    written: dict[str, list[Path]] = {}
    for fmt, make in makers.items():
        if fmt in needed:
            written[fmt] = [write_atomic(out_dir / name, data) for name, data in make(export)]
    if "zip" in chosen:
        members = [path for fmt in makers for path in written[fmt]]
        written["zip"] = [_write_zip(out_dir / f"{safe_filename(results.run_id)}.zip", members)]
    return written


# ------------------------------------------------------------------------------------------------------ formats

def _sheets(export: _Export) -> list[tuple[str, bytes]]:
    files = []
    for summary in export.summaries:
        if export.filter_note and not summary.size:
            continue  # the filter kept none of it: no blank sheet (a cluster that is empty itself still gets one)
        shown = export.shown(summary)
        sheet = contact_sheet(export.pixels[shown], SHEET_COLUMNS, SHEET_CELL, [export.caption(i) for i in shown],
                              export.off_majority(summary), OFF_MAJORITY_RGB)
        files.append((f"cluster_{summary.cluster}.png", png_bytes(titled(sheet, export.sheet_title(summary)))))
    return files


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula


def spreadsheet_safe(text: str) -> str:
    """``text`` with a leading single quote when a spreadsheet would run it as a formula (OWASP's advice
    against CSV injection): file and class names come from the data, e.g. ``=cmd|' /C calc'!A0.png``."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _assignments(export: _Export) -> list[tuple[str, bytes]]:
    results = export.results
    labelled = export.labels is not None
    text = io.StringIO()
    # RFC 4180's CRLF line ends; with them the writer also quotes a cell holding a lone CR, which would
    # otherwise end its row early in a reader
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(["index", "path", "cluster", "confidence"] + (["label", "label_name"] if labelled else [])
                    + ["tags"])
    confidence = results.confidence
    for i in np.flatnonzero(export.kept).tolist():
        row = [i, spreadsheet_safe(export.paths[i]), int(results.assign[i]), f"{float(confidence[i]):.6f}"]
        if labelled:
            row += [int(export.labels[i]), spreadsheet_safe(export.label_name(i))]
        writer.writerow(row + [spreadsheet_safe("; ".join(export.tags.get(i, [])))])
    files = [("assignments.csv", text.getvalue().encode("utf-8"))]
    return files + (_corrected_labels(export) if labelled else [])


def _corrected_labels(export: _Export) -> list[tuple[str, bytes]]:
    """The labels with the corrections a person tagged (``label: NAME``): a label file to train or score on."""
    results = export.results
    corrected = corrected_labels(results, export.tags)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(["index", "path", "cluster", "label", "label_name", "corrected_label", "corrected_label_name",
                     "corrected"])
    for i in np.flatnonzero(export.kept).tolist():
        label = int(export.labels[i])
        final = label if corrected[i] < 0 else int(corrected[i])
        writer.writerow([i, spreadsheet_safe(export.paths[i]), int(results.assign[i]), label,
                         spreadsheet_safe(export.label_name(i)), final, spreadsheet_safe(export.class_name(final)),
                         int(final != label)])
    return [("corrected_labels.csv", text.getvalue().encode("utf-8"))]


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; background: #fafafa; }
header h1 { font-size: 1.4rem; margin: 0 0 .3rem; }
dl { display: grid; grid-template-columns: max-content auto; gap: .1rem 1rem; margin: .5rem 0; }
dt { color: #666; } dd { margin: 0; }
nav a { display: inline-block; margin: 0 .6rem .3rem 0; color: #2255aa; }
section.cluster { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .6rem 1rem;
                  margin: 1rem 0; }
section.cluster h2 { font-size: 1.1rem; margin: 0 0 .2rem; }
.facts, .more, .legend { color: #555; margin: .2rem 0 .5rem; }
.grid { display: flex; flex-wrap: wrap; gap: 4px; align-items: flex-start; }
.grid figure { margin: 0; width: 70px; }
.grid img { width: 64px; height: 64px; object-fit: contain; image-rendering: pixelated;
            border: 3px solid transparent; background: #fff; }
.grid img.off { border-color: rgb(220, 30, 30); }
.grid figcaption { font-size: 10px; line-height: 1.2; color: #444; text-align: center; overflow-wrap: anywhere; }
"""


def _gallery(export: _Export) -> list[tuple[str, bytes]]:
    results, record = export.results, export.results.record
    esc = html.escape
    facts = [("run", record.id), ("method", record.method), ("dataset", dataset_label(record.dataset, default_upload_dir(results.store.root))),
             ("preset", record.preset), ("clusters", results.n_clusters), ("images", len(results.assign)),
             ("device", record.summary.get("device", record.device))]
    facts += [(label, f"{record.summary[key]:.4f}") for key, label in SCORE_LABELS.items()
              if record.summary.get(key) is not None]
    if export.filter_note:
        facts.append(("filter", f"{export.filter_note}: {int(export.kept.sum())} of {len(export.kept)} images"))
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{esc(record.id)} — clusters</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
             "<header>", f"<h1>Run {esc(record.id)}</h1>", "<dl>"]
    parts += [f"<dt>{esc(name)}</dt><dd>{esc(str(value))}</dd>" for name, value in facts if value is not None]
    parts.append("</dl>")
    if export.labels is not None:
        parts.append('<p class="legend">Outlined in red: images whose label is not their cluster\'s majority '
                     f"label. Images are ordered {export.order} first.</p>")
    parts.append("<nav>" + "".join(f'<a href="#cluster-{s.cluster}">{s.cluster} ({s.size})</a>'
                                   for s in export.summaries) + "</nav>")
    parts.append("</header>")
    for summary in export.summaries:
        parts += _cluster_section(export, summary)
    parts += ["</body>", "</html>", ""]
    return [("gallery.html", "\n".join(parts).encode("utf-8"))]


def _cluster_section(export: _Export, summary: ClusterSummary) -> list[str]:
    esc = html.escape
    if summary.size:
        facts = count(summary.size, "image") + (" passing the filter" if export.filter_note else "")
    else:
        facts = ("no image of this cluster passes the filter" if export.filter_note
                 else "empty: no image was assigned to this cluster")
    if summary.purity is not None:
        facts += (f" · purity {summary.purity:.3f} · majority label "
                  f"{esc(export.class_name(summary.majority_label))}")
    lines = [f'<section class="cluster" id="cluster-{summary.cluster}">', f"<h2>Cluster {summary.cluster}</h2>",
             f'<p class="facts">{facts}</p>', '<div class="grid">']
    shown = export.shown(summary)
    off = export.off_majority(summary) or [False] * len(shown)
    for index, confidence, is_off in zip(shown, summary.confidence, off):
        title = f"image {index} · confidence {confidence:.3f}"
        if export.labels is not None:
            title += f" · label {export.label_name(index)}"
        if export.paths[index]:
            title += f" · {export.paths[index]}"
        if export.tags.get(index):
            title += f" · tags: {'; '.join(export.tags[index])}"
        data = base64.b64encode(png_bytes(thumbnail(export.pixels[index], GALLERY_CELL))).decode("ascii")
        css_class = ' class="off"' if is_off else ""
        caption = "<br>".join(esc(line) for line in export.caption(index).split("\n"))
        lines.append(f'<figure><img{css_class} src="data:image/png;base64,{data}" alt="image {index}" '
                     f'title="{esc(title)}"><figcaption>{caption}</figcaption></figure>')
    lines.append("</div>")
    if len(shown) < summary.size:
        lines.append(f'<p class="more">Showing the {len(shown)} {export.order} of {summary.size}.</p>')
    lines.append("</section>")
    return lines


# ------------------------------------------------------------------------------------------------------ writing

def _write_zip(path: Path, members: list[Path]) -> Path:
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for member in members:
                archive.write(member, arcname=member.name)
    return path

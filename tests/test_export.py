"""Export of a finished run: PNG sheets per cluster, a self-contained HTML gallery, a CSV of assignments, a zip of
them all, and the ``export`` command; plus the contact-sheet drawing they share."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import HANG_GUARD_S, run_cli
from engine.analysis.clusters import cluster_summaries, off_majority
from engine.analysis.export import FORMATS, OFF_MAJORITY_RGB, SHEET_CELL, export_run, safe_filename
from engine.analysis.filters import correct
from engine.analysis.results import load_results
from engine.analysis import thumbnails
from engine.analysis.thumbnails import BORDER, contact_sheet, png_bytes, titled, to_rgb_uint8, upscale
from engine.cli import main
from engine.errors import UserError
from engine.runs import JobManager, RunRequest, RunStore

SCRIPT_CLASS = "<script>"
COLOURS = ((220, 40, 40), (40, 200, 40), (40, 40, 220))


def write_pngs(folder: Path, count: int, colours, seed: int) -> None:
    """``count`` 12×12 PNGs, each a noisy square of one of ``colours`` (in turn), so K-means can split them."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = np.clip(np.array(colours[i % len(colours)]) + rng.integers(-20, 20, (12, 12, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"img_{i:02d}.png")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three finished K-means runs in one store: labelled digits, an unlabelled flat folder of 30 images (K=3) and
    a labelled folder whose first class is named ``<script>`` (K=2)."""
    root = tmp_path_factory.mktemp("export")
    write_pngs(root / "flat", 30, COLOURS, seed=0)
    write_pngs(root / "labelled" / SCRIPT_CLASS, 8, COLOURS[:1], seed=1)
    write_pngs(root / "labelled" / "plain", 8, COLOURS[1:2], seed=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DCE_CACHE_DIR", str(root / "cache"))
        manager = JobManager(root / "runs")
        ids = {
            "digits": manager.submit(RunRequest("kmeans", "digits", device="cpu")),
            "flat": manager.submit(RunRequest("kmeans", f"folder:{root / 'flat'}", overrides={"n_clusters": 3},
                                              device="cpu")),
            "labelled": manager.submit(RunRequest("kmeans", f"folder:{root / 'labelled'}",
                                                  overrides={"n_clusters": 2}, device="cpu")),
        }
        for run_id in ids.values():
            record = manager.wait(run_id, timeout=HANG_GUARD_S)
            assert record.status == "finished", record.error
        manager.shutdown()
        yield {name: load_results(manager.store, run_id) for name, run_id in ids.items()}


def sections(page: str) -> list[str]:
    return re.findall(r'<section class="cluster" id="cluster-(\d+)">', page)


def read_csv(path: Path) -> list[list[str]]:
    """The rows as a spreadsheet reads them: a carriage return inside a quoted cell stays in the cell."""
    return list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))


# ------------------------------------------------------------------------------------------------------- PNG

def test_png_export_writes_one_readable_sheet_per_cluster(runs, tmp_path):
    results = runs["digits"]
    written = export_run(results, tmp_path, ["png"])
    assert list(written) == ["png"]
    assert sorted(p.name for p in written["png"]) == sorted(f"cluster_{k}.png" for k in range(10))
    sizes = np.bincount(results.assign, minlength=10)
    title_band = titled(np.zeros((1, 1, 3), np.uint8), "a title").shape[0] - 1
    for k in range(10):
        with Image.open(tmp_path / f"cluster_{k}.png") as sheet:
            sheet.load()
            shown = min(int(sizes[k]), 100)
            assert sheet.width == min(shown, 10) * SHEET_CELL  # 10 columns of cells
            assert (sheet.height - title_band) % -(-shown // 10) == 0  # a title, then whole rows of cell + caption


def test_max_per_cluster_caps_the_sheets_and_the_gallery(runs, tmp_path):
    written = export_run(runs["digits"], tmp_path, ["png", "html"], max_per_cluster=5)
    with Image.open(written["png"][0]) as sheet:
        assert sheet.width == 5 * SHEET_CELL
    page = written["html"][0].read_text(encoding="utf-8")
    assert len(re.findall(r"<img\b", page)) == 10 * 5
    assert "Showing the 5 most confident of" in page


def test_least_confident_first_shows_each_clusters_least_confident_images_where_its_mistakes_gather(runs, tmp_path):
    results = runs["digits"]
    written = export_run(results, tmp_path, ["html"], max_per_cluster=5, least_confident_first=True)
    page = written["html"][0].read_text(encoding="utf-8")
    shown = [int(i) for i in re.findall(r'alt="image (\d+)"', page)]
    for k in range(10):
        members = np.flatnonzero(results.assign == k)
        least = members[np.argsort(results.confidence[members], kind="stable")][:5]
        in_cluster = [i for i in shown if results.assign[i] == k]
        assert sorted(results.confidence[in_cluster]) == sorted(results.confidence[least])
        assert list(results.confidence[in_cluster]) == sorted(results.confidence[in_cluster])  # least first
    assert "Showing the 5 least confident of" in page and "ordered least confident first" in page


# ------------------------------------------------------------------------------------------------------ HTML

def test_html_gallery_has_one_section_per_cluster_and_only_inline_images(runs, tmp_path):
    results = runs["digits"]
    (path,) = export_run(results, tmp_path, ["html"])["html"]
    page = path.read_text(encoding="utf-8")
    assert path.name == "gallery.html"
    assert sections(page) == [str(k) for k in range(10)]
    assert "http://" not in page and "https://" not in page and 'src="/' not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert len(sources) == sum(min(int(n), 100) for n in np.bincount(results.assign, minlength=10))
    # each image is captioned on the page, as on the sheets, not only in a tooltip
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert len(captions) == len(sources) and all(re.fullmatch(r"#\d+<br>\d", c) for c in captions), captions[:3]
    assert results.run_id in page and "kmeans" in page and f"{results.record.summary['acc']:.4f}" in page
    assert re.search(r'title="image \d+ · confidence [01]\.\d{3} · label \d"', page)


def test_html_and_png_show_every_cluster_even_an_empty_one(runs, tmp_path):
    results = runs["digits"]
    assign = results.assign.copy()
    assign[assign == 9] = 0
    emptied = dataclasses.replace(results, assign=assign)
    written = export_run(emptied, tmp_path, ["html", "png"])
    page = written["html"][0].read_text(encoding="utf-8")
    assert sections(page) == [str(k) for k in range(10)]
    assert "empty" in page.split('id="cluster-9"')[1]
    assert len(written["png"]) == 10
    with Image.open(tmp_path / "cluster_9.png") as blank:
        assert blank.width == SHEET_CELL


def test_html_escapes_class_names_and_run_fields_from_the_data(runs, tmp_path):
    results = runs["labelled"]
    assert SCRIPT_CLASS in results.class_names
    page = export_run(results, tmp_path, ["html"])["html"][0].read_text(encoding="utf-8")
    assert "<script" not in page
    assert "&lt;script&gt;" in page
    assert sections(page) == ["0", "1"]


def test_unlabelled_gallery_has_no_purity_or_label(runs, tmp_path):
    page = export_run(runs["flat"], tmp_path, ["html"])["html"][0].read_text(encoding="utf-8")
    assert sections(page) == ["0", "1", "2"]
    assert "purity" not in page and "label" not in page.split("</header>")[1]


# ------------------------------------------------------------------------------------------------------- CSV

def test_csv_of_a_labelled_run_has_one_row_per_image_with_labels(runs, tmp_path):
    results = runs["digits"]
    rows = read_csv(export_run(results, tmp_path, ["csv"])["csv"][0])
    assert rows[0] == ["index", "path", "cluster", "confidence", "label", "label_name", "tags"]
    assert len(rows) == 1797 + 1
    body = rows[1:]
    assert [int(r[0]) for r in body] == list(range(1797))
    assert all(r[1] == "" for r in body)  # digits is not file-backed
    assert np.array_equal([int(r[2]) for r in body], results.assign)
    assert np.allclose([float(r[3]) for r in body], results.confidence, atol=1e-6)
    assert [r[5] for r in body] == [str(label) for label in results.labels]


def test_csv_of_an_unlabelled_run_has_no_label_columns(runs, tmp_path):
    results = runs["flat"]
    rows = read_csv(export_run(results, tmp_path, ["csv"])["csv"][0])
    assert rows[0] == ["index", "path", "cluster", "confidence", "tags"]
    assert len(rows) == 30 + 1 and all(len(r) == 5 for r in rows)
    assert sorted(r[1] for r in rows[1:]) == [f"img_{i:02d}.png" for i in range(30)]


def test_csv_carries_each_images_tags_and_the_corrected_labels_they_set(runs, tmp_path):
    from engine.analysis.tags import label_tag, tag_images

    results = runs["digits"]
    tag_images(results, [4], "mislabelled")
    tag_images(results, [4], label_tag("7"))
    tag_images(results, [9], "=2+3 looks odd")
    try:
        written = export_run(results, tmp_path, ["csv"])
    finally:
        for tag in ("mislabelled", "label: 7", "=2+3 looks odd"):
            results.store.remove_tag(results.run_id, [4, 9], tag)
    assert [p.name for p in written["csv"]] == ["assignments.csv", "corrected_labels.csv"]
    rows = read_csv(tmp_path / "assignments.csv")
    tags = {int(r[0]): r[6] for r in rows[1:] if r[6]}
    assert tags == {4: "mislabelled; label: 7", 9: "'=2+3 looks odd"}  # a formula-like cell is quoted
    corrected = read_csv(tmp_path / "corrected_labels.csv")
    assert corrected[0] == ["index", "path", "cluster", "label", "label_name", "corrected_label",
                            "corrected_label_name", "corrected"]
    assert len(corrected) == 1797 + 1
    assert corrected[5] == ["4", "", str(results.assign[4]), "4", "4", "7", "7", "1"]
    unchanged = [r for r in corrected[1:] if r[0] != "4"]
    assert all(r[5] == r[3] and r[7] == "0" for r in unchanged)


def test_an_unlabelled_run_has_no_corrected_labels_file(runs, tmp_path):
    assert [p.name for p in export_run(runs["flat"], tmp_path, ["csv"])["csv"]] == ["assignments.csv"]


def test_a_filtered_export_holds_only_the_images_the_filter_keeps(runs, tmp_path):
    from engine.analysis.filters import ImageFilter

    results = runs["digits"]
    results.store.add_tag(results.run_id, [1, 2, 3, 500], "duplicate")
    try:
        only = ImageFilter(clusters=(int(results.assign[500]),), tags=("duplicate",))
        written = export_run(results, tmp_path, ["csv", "html", "png"], image_filter=only)
    finally:
        results.store.remove_tag(results.run_id, [1, 2, 3, 500], "duplicate")
    kept = [i for i in (1, 2, 3, 500) if results.assign[i] == results.assign[500]]
    assert [int(r[0]) for r in read_csv(tmp_path / "assignments.csv")[1:]] == kept
    assert [int(r[0]) for r in read_csv(tmp_path / "corrected_labels.csv")[1:]] == kept
    page = written["html"][0].read_text(encoding="utf-8")
    assert len(re.findall(r"<img\b", page)) == len(kept)
    assert f"tag duplicate: {len(kept)} of 1797 images" in page
    assert sections(page) == [str(k) for k in range(10)]  # every cluster still has its section
    assert "passes the filter" in page
    assert sorted(p.name for p in written["png"]) == [f"cluster_{results.assign[500]}.png"]


FORMULA_CLASSES = ("=cls()", "+cmd|' -C calc'!A0", "-2+3", "@SUM(A1)", "\tTab", "\rReturn")


def test_csv_cells_a_spreadsheet_would_run_as_formulas_start_with_a_quote(tmp_path):
    """OWASP's CSV-injection advice: a text cell starting with = + - @, tab or CR gets a leading single quote.

    Class folders named like formulas make both the path and the label name of their images such cells."""
    for i, name in enumerate(FORMULA_CLASSES + ("plain",)):
        write_pngs(tmp_path / "formulas" / name, 2, COLOURS[i % 3:i % 3 + 1], seed=i)
    manager = JobManager(tmp_path / "runs")
    try:
        run_id = manager.submit(RunRequest("kmeans", f"folder:{tmp_path / 'formulas'}", device="cpu",
                                           overrides={"n_clusters": 2}))
        assert manager.wait(run_id, timeout=HANG_GUARD_S).status == "finished"
    finally:
        manager.shutdown()
    rows = read_csv(export_run(load_results(manager.store, run_id), tmp_path / "out", ["csv"])["csv"][0])
    label_of_path = {row[1]: row[5] for row in rows[1:]}
    assert len(label_of_path) == 14
    for name in FORMULA_CLASSES:
        assert label_of_path[f"'{name}/img_00.png"] == label_of_path[f"'{name}/img_01.png"] == f"'{name}"
    assert label_of_path["plain/img_00.png"] == "plain"
    assert not [cell for row in rows for cell in row if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]


# ------------------------------------------------------------------------------------------------------- zip

def test_zip_holds_the_other_files_byte_for_byte(runs, tmp_path):
    results = runs["flat"]
    written = export_run(results, tmp_path)
    assert list(written) == list(FORMATS)
    (archive,) = written["zip"]
    assert archive.name == f"{results.run_id}.zip"
    others = [p for fmt in ("png", "html", "csv") for p in written[fmt]]
    assert len(others) == 3 + 1 + 1
    with zipfile.ZipFile(archive) as zipped:
        assert sorted(zipped.namelist()) == sorted(p.name for p in others)
        for path in others:
            assert zipped.read(path.name) == path.read_bytes()


def test_zip_alone_writes_the_files_it_holds_first(runs, tmp_path):
    written = export_run(runs["flat"], tmp_path, ["zip"])
    assert set(written) == {"png", "html", "csv", "zip"}
    with zipfile.ZipFile(written["zip"][0]) as zipped:
        assert len(zipped.namelist()) == 5
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_odd_run_ids_become_safe_file_names(runs, tmp_path):
    results = runs["flat"]
    odd = dataclasses.replace(results, record=dataclasses.replace(results.record, id="../up/and <away>"))
    (archive,) = export_run(odd, tmp_path / "out", ["zip"])["zip"]
    assert archive.parent == tmp_path / "out"
    assert re.fullmatch(r"[A-Za-z0-9._-]+\.zip", archive.name) and not archive.name.startswith(".")
    assert safe_filename("..") == "run" and "/" not in safe_filename("a/b\\c")


def test_unknown_format_is_a_user_error_naming_the_valid_ones(runs, tmp_path):
    with pytest.raises(UserError, match="png, html, csv, zip"):
        export_run(runs["flat"], tmp_path, ["png", "pdf"])
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------------- CLI

def test_cli_export_writes_the_files_it_prints(runs, tmp_path):
    results = runs["digits"]
    out = tmp_path / "export"
    result = run_cli("export", results.run_id, "--out", str(out), "--format", "csv,html",
                     "--runs-dir", str(results.store.root))
    assert result.returncode == 0, result.stderr
    printed = [Path(line) for line in result.stdout.splitlines()]
    assert sorted(p.name for p in printed) == ["assignments.csv", "corrected_labels.csv", "gallery.html"]
    assert all(p.is_file() and p.parent == out for p in printed)


def test_cli_export_of_an_unknown_run_exits_2_with_one_error_line(tmp_path):
    result = run_cli("export", "no-such-run", "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "r"))
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_export_filters_orders_and_caps_as_asked(runs, tmp_path):
    results = runs["digits"]
    out = tmp_path / "export"
    result = run_cli("export", results.run_id, "--out", str(out), "--format", "csv,html", "--correctness",
                     "incorrect", "--confidence", "0-0.9", "--per-cluster", "3", "--least-confident-first",
                     "--runs-dir", str(results.store.root))
    assert result.returncode == 0, result.stderr
    wrong = ~correct(results.labels, results.assign) & (results.confidence <= 0.9)
    assert [int(r[0]) for r in read_csv(out / "assignments.csv")[1:]] == list(np.flatnonzero(wrong))
    page = (out / "gallery.html").read_text(encoding="utf-8")
    assert 0 < len(re.findall(r"<img\b", page)) <= 3 * 10 and "least confident" in page


@pytest.mark.parametrize("option, says", [
    (["--cluster", "42"], "there is no cluster 42"),
    (["--confidence", "0.9-0.2"], "LOW ≤ HIGH"),
    (["--confidence", "low"], "LOW-HIGH"),
    (["--per-cluster", "0"], "--per-cluster must be at least 1"),
])
def test_cli_export_refuses_a_cluster_the_run_lacks_and_bad_ranges(option, says, runs, tmp_path, capsys):
    results = runs["digits"]
    code = main(["export", results.run_id, "--out", str(tmp_path / "out"), *option,
                 "--runs-dir", str(results.store.root)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_export_of_an_unlabelled_run_refuses_correctness_and_warns_of_a_filter_keeping_nothing(
        runs, tmp_path, capsys):
    results = runs["flat"]
    code = main(["export", results.run_id, "--out", str(tmp_path / "a"), "--correctness", "incorrect",
                 "--runs-dir", str(results.store.root)])
    assert code == 2 and "needs labels" in capsys.readouterr().err
    code = main(["export", results.run_id, "--out", str(tmp_path / "b"), "--tag", "nobody-used-it",
                 "--runs-dir", str(results.store.root)])
    assert code == 0 and "keeps none of the run's 30 images" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["queued run", "unknown format"])
def test_cli_export_refuses_unfinished_runs_and_unknown_formats(case, runs, tmp_path, capsys):
    store = RunStore(tmp_path / "runs")
    if case == "queued run":
        run_id, runs_dir, fmt = store.create_run("kmeans", "digits", {"n_clusters": 10}), store.root, "csv"
    else:
        run_id, runs_dir, fmt = runs["flat"].run_id, runs["flat"].store.root, "csv,pdf"
    code = main(["export", run_id, "--out", str(tmp_path / "out"), "--format", fmt, "--runs-dir", str(runs_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------ thumbnails

@pytest.mark.parametrize("n, n_cols, cell, shape", [
    (23, 10, 32, (96, 320, 3)),   # 3 rows, 10 columns
    (3, 10, 64, (64, 192, 3)),    # fewer images than columns: one short row
    (20, 5, 16, (64, 80, 3)),     # exactly 4 full rows
    (0, 10, 64, (64, 64, 3)),     # nothing: one blank cell
])
def test_contact_sheet_is_rows_by_columns_of_cells(n, n_cols, cell, shape):
    images = np.zeros((n, 8, 8, 1), dtype=np.uint8)
    assert contact_sheet(images, n_cols=n_cols, cell=cell).shape == shape


def test_captions_add_one_text_band_under_every_row():
    images = np.zeros((12, 8, 8, 3), dtype=np.uint8)
    plain = contact_sheet(images, n_cols=5, cell=40)
    captioned = contact_sheet(images, n_cols=5, cell=40, captions=[f"{i}: cat" for i in range(12)])
    band = (captioned.shape[0] - plain.shape[0]) // 3
    assert band > 0 and captioned.shape == (plain.shape[0] + 3 * band, 200, 3)
    below_first_cell = captioned[40:40 + band, :40]
    assert (below_first_cell < 255).any()  # text was drawn


def test_outlined_cells_get_a_coloured_frame_and_the_others_none():
    images = np.full((4, 8, 8, 1), 128, dtype=np.uint8)
    sheet = contact_sheet(images, n_cols=2, cell=32, outline=[True, False, False, True], outline_rgb=(220, 30, 30))
    for row, col, outlined in [(0, 0, True), (0, 1, False), (1, 0, False), (1, 1, True)]:
        cell = sheet[row * 32:(row + 1) * 32, col * 32:(col + 1) * 32]
        frame = np.concatenate([cell[:BORDER].reshape(-1, 3), cell[-BORDER:].reshape(-1, 3),
                                cell[:, :BORDER].reshape(-1, 3), cell[:, -BORDER:].reshape(-1, 3)])
        expected = (220, 30, 30) if outlined else (255, 255, 255)
        assert (frame == expected).all()
        assert (cell[16, 16] == 128).all()  # the image itself is untouched


def test_contact_sheet_rejects_mismatched_captions():
    with pytest.raises(ValueError, match="captions"):
        contact_sheet(np.zeros((3, 8, 8, 1), dtype=np.uint8), captions=["a", "b"])


def test_upscale_repeats_pixels_by_a_whole_factor():
    digit = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    big = upscale(digit, min_side=64)
    assert big.shape == (64, 64, 1)
    assert np.array_equal(big[::8, ::8], digit) and np.array_equal(big[7::8, 7::8], digit)
    photo = np.zeros((100, 120, 3), dtype=np.uint8)
    assert upscale(photo, min_side=64) is photo


def test_gray_images_become_three_equal_channels_and_png_round_trips():
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    rgb = to_rgb_uint8(gray)
    assert rgb.shape == (8, 8, 3) and (rgb == gray).all()
    with Image.open(io.BytesIO(png_bytes(rgb))) as decoded:
        assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), rgb)


def test_a_caption_is_drawn_in_the_first_font_that_has_all_its_characters(monkeypatch):
    """File names are written in any script: Pillow's own font draws "ñ" or "日" as a box, so a caption takes the
    first installed font that has each of its characters (a font for Chinese and Japanese after one for Latin)."""
    from PIL import ImageFont

    builtin = ImageFont.load_default(thumbnails.CAPTION_SIZE)
    assert thumbnails.has_glyph(builtin, "a") and not thumbnails.has_glyph(builtin, "ñ")
    latin = next((font for font in thumbnails._caption_fonts() if thumbnails.has_glyph(font, "ñ")), None)
    if latin is None:
        pytest.skip("no font here draws ñ (DejaVu Sans or another of CAPTION_FONTS)")
    monkeypatch.setattr(thumbnails, "_caption_fonts", lambda: (builtin, latin))
    assert thumbnails.caption_font("B/0163.png") is builtin  # the first font, where it has every character
    assert thumbnails.caption_font("año.png") is latin

    def sheet_in(*fonts):
        monkeypatch.setattr(thumbnails, "_caption_fonts", lambda: fonts)
        return contact_sheet(np.zeros((1, 8, 8, 1), np.uint8), n_cols=1, cell=64, captions=["año.png"])
    # the sheet draws the caption in the font that has "ñ", whichever comes first
    assert np.array_equal(sheet_in(builtin, latin), sheet_in(latin, builtin))


def test_a_title_band_reads_above_the_sheet_and_leaves_it_unchanged():
    sheet = contact_sheet(np.zeros((3, 8, 8, 1), np.uint8), n_cols=3, cell=64)
    with_title = titled(sheet, "Run 20260101-000000-kmeans-abcd · cluster 0 · 3 images")
    band = with_title.shape[0] - sheet.shape[0]
    assert with_title.shape[1] == sheet.shape[1] and 10 < band < 30
    assert np.array_equal(with_title[band:], sheet) and (with_title[:band] < 128).any()  # dark text on white


def test_png_sheets_caption_each_image_with_its_file_name_and_label(runs, tmp_path):
    """A folder's sheets name the files (a user finds a doubtful image by its name), the label on a line of its
    own under it; a dataset without files names its images by index."""
    for name in ("labelled", "flat", "digits"):
        results = runs[name]
        written = export_run(results, tmp_path / name, ["png"], max_per_cluster=12)
        summary = cluster_summaries(results.assign, results.confidence, results.n_clusters, results.labels)[0]
        shown = summary.members[:12]
        names = [results.image_name(int(i)) for i in shown]
        if name == "digits":
            assert names[0] == f"#{shown[0]}"
        else:  # the file name, under the folders that tell it from files of the same name elsewhere
            path = Path(results.images.paths[shown[0]])
            assert names[0].endswith(path.name) and path.as_posix().endswith(names[0])
        captions = names if results.labels is None else [
            f"{n}\n{results.class_name(int(results.labels[i]))}" for n, i in zip(names, shown)]
        outline = None if results.labels is None else off_majority(summary, shown, results.labels)
        expected = contact_sheet(np.asarray(results.images.images)[shown], 10, SHEET_CELL, captions, outline,
                                 OFF_MAJORITY_RGB)
        # under a title that says what the sheet shows, should it be saved or shared on its own
        shows = (f"{len(shown)} most confident of {summary.size} images" if len(shown) < summary.size
                 else f"{summary.size} images")
        title = f"Run {results.run_id} · cluster 0 · {shows}" + (
            "" if results.labels is None else
            f" · mostly {results.class_name(summary.majority_label)} (purity {summary.purity:.2f})")
        sheet = next(p for p in written["png"] if p.name == "cluster_0.png")
        with Image.open(sheet) as picture:
            assert np.array_equal(np.asarray(picture.convert("RGB")), titled(expected, title)), name


def test_a_sheet_caption_too_long_for_its_cell_keeps_a_file_names_end_and_other_texts_start():
    from engine.analysis.thumbnails import _fit_text, caption_font

    width = 62  # a 64-pixel cell
    for text, kept in (("airplane/0022.jpg", "0022.jpg"), ("automobile and more", "auto")):
        fitted = _fit_text(text, width)
        assert caption_font(fitted).getlength(fitted) <= width and fitted != text
        assert fitted.endswith(kept) if kept == "0022.jpg" else fitted.startswith(kept), fitted


def test_a_sheet_cell_holds_a_usual_file_name_whole_so_two_files_never_read_alike():
    from engine.analysis.thumbnails import _fit_text

    for name in ("frog_0025.jpg", "cat_0025.jpg", "IMG_20240101.jpg"):
        assert _fit_text(name, SHEET_CELL - 2) == name  # at 64 px both read "…_0025.jpg"


@pytest.mark.parametrize("change, says", [("rename", "changed since run"), ("add", "now has 7 images")])
def test_export_refuses_a_run_whose_folder_changed_rather_than_put_its_clusters_on_other_files(
        change, says, tmp_path):
    folder = tmp_path / "photos"
    write_pngs(folder, 6, COLOURS[:2], seed=3)
    runs = str(tmp_path / "runs")
    trained = run_cli("train", "--method", "kmeans", "--dataset", f"folder:{folder}", "--clusters", "2",
                      "--device", "cpu", "--json", "--runs-dir", runs)
    assert trained.returncode == 0, trained.stderr
    run_id = json.loads(trained.stdout.splitlines()[-1])["run_id"]
    if change == "rename":  # the same number of files, one of them another
        (folder / "img_00.png").rename(folder / "aaa_new.png")
    else:
        write_pngs(tmp_path / "more", 1, COLOURS[:1], seed=4)
        (tmp_path / "more" / "img_00.png").rename(folder / "zzz_new.png")
    result = run_cli("export", run_id, "--out", str(tmp_path / "out"), "--runs-dir", runs)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert not (tmp_path / "out" / "assignments.csv").exists()


def test_cli_audit_of_a_folder_run_names_files_and_refuses_the_label_score_without_labels(runs, capsys):
    results = runs["flat"]
    root = str(results.store.root)
    assert main(["tag", results.run_id, "look", "img_03.png", "--runs-dir", root]) == 0
    assert main(["tags", results.run_id, "--runs-dir", root]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split() == ["3", "img_03.png", "look"]
    results.store.remove_tag(results.run_id, [3], "look")
    assert main(["suspects", results.run_id, "--by", "label", "--runs-dir", root]) == 2
    assert "have no labels" in capsys.readouterr().err

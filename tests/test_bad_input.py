"""Bad input is refused or skipped with a reason, never a crash: unreadable and odd images in a folder, archives
over the size and file-count limits or with escaping members, and parameters no run can use."""
from __future__ import annotations

import io
import json
import os
import stat
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import HANG_GUARD_S, ONE_THREAD, REPO, run_cli
from engine.cli import main
from engine.data import load_folder
from engine.data.archive import DEFAULT_MAX_ARCHIVE_BYTES, DEFAULT_MAX_ARCHIVE_FILES, archive_limits
from engine.data.listing import OUTSIDE_ROOTS
from engine.errors import ConfigError, DatasetError
from engine.methods import FitContext, create_method
from engine.methods.base import check_batch_sizes
from engine.runs import JobManager, RunRequest, RunStore, execute_run

HUGE_SIDE = 10_000  # 10⁸ pixels: over Pillow's MAX_IMAGE_PIXELS (about 8.9·10⁷)


def solid_png(width: int, height: int, rgb: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    """A solid-colour 8-bit RGB PNG written row by row: a 10,000×10,000 one is about 300 kB and never exists
    as pixels in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * width  # filter byte 0, then the pixels
    packer = zlib.compressobj(6)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    return solid_png(HUGE_SIDE, HUGE_SIDE)


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)
READABLE = {
    "red.JPG": lambda: encoded(Image.new("RGB", (32, 32), RED), "JPEG", quality=95),
    "red.jpeg": lambda: encoded(Image.new("RGB", (32, 32), RED), "JPEG", quality=95),
    "cmyk.jpg": lambda: encoded(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95),
    "blue.tif": lambda: encoded(Image.new("RGB", (32, 32), BLUE), "TIFF"),
    "blue.webp": lambda: encoded(Image.new("RGB", (32, 32), BLUE), "WEBP", lossless=True),
    "blue.bmp": lambda: encoded(Image.new("RGB", (32, 32), BLUE), "BMP"),
    "clear.png": lambda: encoded(Image.new("RGBA", (32, 32), (0, 0, 0, 0)), "PNG"),
    "depth16.png": lambda: encoded(Image.fromarray(np.full((32, 32), 65535, np.uint16)), "PNG"),
    "animated.gif": lambda: encoded(Image.new("RGB", (32, 32), GREEN), "GIF", save_all=True,
                                    append_images=[Image.new("RGB", (32, 32), BLUE)], duration=100),
}


def truncated_jpeg() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    data = encoded(Image.fromarray(noise), "JPEG", quality=95)
    return data[: len(data) // 2]


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory, huge_png) -> Path:
    """Nine readable images in every odd format and extension, and five files that cannot be clustered."""
    root = tmp_path_factory.mktemp("bad-images") / "photos"
    root.mkdir()
    for name, make in READABLE.items():
        (root / name).write_bytes(make())
    (root / "truncated.jpg").write_bytes(truncated_jpeg())
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("shopping list")
    (root / "fake.png").write_text("a text file in disguise")
    (root / "huge.png").write_bytes(huge_png)
    return root


def test_huge_png_is_small_on_disk_but_declares_ten_thousand_squared_pixels(huge_png, tmp_path):
    assert len(huge_png) < 1_000_000
    (tmp_path / "huge.png").write_bytes(huge_png)
    with pytest.warns(Image.DecompressionBombWarning), Image.open(tmp_path / "huge.png") as image:
        assert image.size == (HUGE_SIDE, HUGE_SIDE)  # the header only: no pixel is decoded here


# ---------------------------------------------------------------------------------------------- bad images

def test_folder_of_bad_and_odd_images_keeps_every_readable_one_and_lists_each_skip(bad_folder):
    photos = load_folder(bad_folder)
    assert sorted(photos.paths) == sorted(READABLE)
    assert photos.image_shape == (32, 32, 3) and photos.labels is None
    skipped = dict(photos.skipped)
    assert set(skipped) == {"truncated.jpg", "empty.jpg", "notes.txt", "fake.png", "huge.png"}
    assert "truncated" in skipped["truncated.jpg"]
    assert "0 bytes" in skipped["empty.jpg"]
    assert skipped["notes.txt"] == skipped["fake.png"] == "not an image Pillow can read"
    assert "decompression bomb" in skipped["huge.png"]


def test_a_resumed_run_records_each_skipped_file_once(bad_folder, tmp_path):
    """Every attempt loads the folder again; the run's messages keep one line per skipped file, not one per try."""
    store = RunStore(tmp_path / "runs")
    run_id = store.create_run("kmeans", f"folder:{bad_folder}", {"n_clusters": 50}, options={"device": "cpu"})
    for attempt in range(2):
        with pytest.raises(ConfigError):  # 50 clusters of 9 images: fails once the data is loaded
            execute_run(store, run_id)
        if attempt == 0:
            store.requeue(run_id)
    data = [m["message"] for m in store.messages(run_id) if m["stage"] == "data"]
    assert len(data) == 6 and len(set(data)) == 6, data


def test_odd_modes_and_formats_decode_to_the_right_colours(bad_folder):
    photos = load_folder(bad_folder)
    pixel = {path: photos.images[i, 16, 16].tolist() for i, path in enumerate(photos.paths)}
    assert pixel["animated.gif"] == list(GREEN)  # the first frame, not the second (blue)
    assert pixel["clear.png"] == [255, 255, 255]  # transparency composited over white
    assert pixel["depth16.png"] == [255, 255, 255]  # 16-bit white scaled to 8 bits, not wrapped or clipped
    assert pixel["blue.webp"] == pixel["blue.bmp"] == pixel["blue.tif"] == list(BLUE)
    red, cmyk = np.array(pixel["red.JPG"]), np.array(pixel["cmyk.jpg"])
    assert np.abs(red - np.array(RED)).max() < 10 and pixel["red.jpeg"] == pixel["red.JPG"]
    assert cmyk[0] > 200 and cmyk[1:].max() < 60  # CMYK (0, 255, 255, 0) is red


def test_a_huge_image_is_refused_before_its_pixels_are_decoded(tmp_path, huge_png):
    """Decoded, the 10,000×10,000 RGB image would take 300 MB; the load's peak memory grows by far less."""
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "huge.png").write_bytes(huge_png)
    (folder / "small.png").write_bytes(encoded(Image.new("RGB", (8, 8), RED), "PNG"))
    script = ("import resource, sys, json\n"
              "from engine.data import load_folder\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "loaded = load_folder(sys.argv[1])\n"
              "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "print(json.dumps({'paths': loaded.paths, 'skipped': loaded.skipped, 'grew_kib': after - before}))\n")
    result = subprocess.run([sys.executable, "-c", script, str(folder)], cwd=REPO, capture_output=True, text=True,
                            timeout=HANG_GUARD_S, env={**os.environ, **ONE_THREAD})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["paths"] == ["small.png"] and report["skipped"][0][0] == "huge.png"
    assert report["grew_kib"] < 100 * 1024, report


def test_cli_clusters_the_readable_images_and_reports_the_skipped_ones(bad_folder, tmp_path):
    runs = tmp_path / "runs"
    result = run_cli("train", "--method", "kmeans", "--dataset", f"folder:{bad_folder}", "--clusters", "2",
                     "--device", "cpu", "--json", "--runs-dir", str(runs), env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "finished"
    assert summary["n_images"] == len(READABLE) and summary["n_skipped"] == 5
    messages = [m["message"] for m in RunStore(runs).messages(summary["run_id"]) if m["stage"] == "data"]
    *each, warning = messages
    assert len(each) == 5 and all(m.startswith("skipped ") for m in each)
    assert any(m.startswith("skipped huge.png: too many pixels") for m in each)
    assert any(m.startswith("skipped empty.jpg: empty file (0 bytes)") for m in each)
    # one line the Train page shows as a warning: how many, of how many, and why
    assert warning.startswith("warning: 5 of 14 files were skipped (2 × not an image Pillow can read; ")


def test_all_bad_folder_is_a_dataset_error_naming_the_first_reasons(tmp_path, huge_png):
    folder = tmp_path / "all-bad"
    folder.mkdir()
    (folder / "a_empty.jpg").write_bytes(b"")
    (folder / "b_huge.png").write_bytes(huge_png)
    (folder / "c_notes.txt").write_text("no pixels here")
    (folder / "d_truncated.jpg").write_bytes(truncated_jpeg())
    with pytest.raises(DatasetError, match=r"no readable image .*4 file\(s\) skipped \(a_empty\.jpg: empty file"):
        load_folder(folder)


def test_empty_folder_and_all_bad_folder_exit_2_from_the_cli(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_text("not a png")
    (tmp_path / "bad" / "y.jpg").write_bytes(b"")
    for folder, message in (("empty", "holds no files"), ("bad", "no readable image")):
        result = run_cli("train", "--method", "kmeans", "--dataset", f"folder:{tmp_path / folder}",
                         "--clusters", "2", "--device", "cpu", "--runs-dir", str(tmp_path / "runs"), env=ONE_THREAD)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("error:") and message in lines[0]


# ------------------------------------------------------------------------------------------------- archives

def png(colour=RED) -> bytes:
    return encoded(Image.new("RGB", (8, 8), colour), "PNG")


def test_archive_limits_default_to_200k_files_and_4_gib_and_follow_the_environment(monkeypatch):
    monkeypatch.delenv("DCE_MAX_ARCHIVE_FILES", raising=False)
    monkeypatch.delenv("DCE_MAX_ARCHIVE_BYTES", raising=False)
    assert archive_limits() == (DEFAULT_MAX_ARCHIVE_FILES, DEFAULT_MAX_ARCHIVE_BYTES) == (200_000, 4 << 30)
    monkeypatch.setenv("DCE_MAX_ARCHIVE_FILES", "10")
    monkeypatch.setenv("DCE_MAX_ARCHIVE_BYTES", "1_000_000")
    assert archive_limits() == (10, 1_000_000)
    monkeypatch.setenv("DCE_MAX_ARCHIVE_BYTES", "-5")
    with pytest.raises(ConfigError, match="DCE_MAX_ARCHIVE_BYTES='-5' is not a positive whole number"):
        archive_limits()


def declare_sizes(archive: Path, declared: int) -> None:
    """Overwrite the uncompressed size every central-directory entry of a zip declares (offset 24)."""
    data = bytearray(archive.read_bytes())
    start = data.find(b"PK\x01\x02")
    while start != -1:
        data[start + 24:start + 28] = struct.pack("<I", declared)
        start = data.find(b"PK\x01\x02", start + 4)
    archive.write_bytes(bytes(data))


def test_zip_whose_members_declare_gigabytes_is_refused_before_any_member_is_read(tmp_path, monkeypatch):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"pets/{i}.png", png())
    declare_sizes(archive, 0xFFFF_FFF0)  # 3 × 4 GiB declared, a few hundred bytes stored
    opened = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a) or 1 / 0)
    with pytest.raises(DatasetError, match=r"unpacks to more than 4 GiB, the limit \(DCE_MAX_ARCHIVE_BYTES"):
        load_folder(archive)
    assert opened == []


def test_zip_of_zeros_over_a_lowered_byte_limit_is_refused(tmp_path, monkeypatch):
    archive = tmp_path / "zeros.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", png())
        zf.writestr("zeros.bin", bytes(5_000_000))  # 5 MB of zeros compress to a few kB
    assert archive.stat().st_size < 50_000
    monkeypatch.setenv("DCE_MAX_ARCHIVE_BYTES", "1000000")
    with pytest.raises(DatasetError, match="unpacks to more than 1,000,000 bytes"):
        load_folder(archive)


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_archive_with_too_many_members_is_refused(tmp_path, monkeypatch, suffix):
    archive = tmp_path / f"many{suffix}"
    data = png()
    if suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for i in range(30):
                zf.writestr(f"{i}.png", data)
    else:
        with tarfile.open(archive, "w:gz") as tf:
            for i in range(30):
                info = tarfile.TarInfo(f"{i}.png")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    monkeypatch.setenv("DCE_MAX_ARCHIVE_FILES", "20")
    with pytest.raises(DatasetError, match=r"holds more than 20 files, the limit \(DCE_MAX_ARCHIVE_FILES\)"):
        load_folder(archive)
    monkeypatch.setenv("DCE_MAX_ARCHIVE_FILES", "30")
    assert len(load_folder(archive)) == 30


def test_tar_gz_of_zeros_over_the_byte_limit_is_refused_as_its_headers_stream_by(tmp_path, monkeypatch):
    archive = tmp_path / "zeros.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("zeros.png")
        info.size = 5_000_000
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    monkeypatch.setenv("DCE_MAX_ARCHIVE_BYTES", "1000000")
    with pytest.raises(DatasetError, match="unpacks to more than 1,000,000 bytes"):
        load_folder(archive)


def test_tar_links_and_escaping_members_are_skipped_and_nothing_is_written(tmp_path):
    (tmp_path / "in").mkdir()
    archive = tmp_path / "in" / "sneaky.tar"
    with tarfile.open(archive, "w") as tf:
        for name, data in (("ok/a.png", png(RED)), ("ok/b.png", png(BLUE)), ("/etc/cron.d/x.png", png()),
                           ("ok/../../escape.png", png())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, kind, target in (("ok/passwd.png", tarfile.SYMTYPE, "/etc/passwd"),
                                   ("ok/hard.png", tarfile.LNKTYPE, "ok/a.png")):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = kind, target
            tf.addfile(link)
    loaded = load_folder(archive)
    assert loaded.paths == ["ok/a.png", "ok/b.png"]
    assert dict(loaded.skipped) == {
        "/etc/cron.d/x.png": "unsafe path in archive (absolute or with '..')",
        "ok/../../escape.png": "unsafe path in archive (absolute or with '..')",
        "ok/passwd.png": "link in archive", "ok/hard.png": "link in archive"}
    assert list((tmp_path / "in").iterdir()) == [archive]  # read in memory: nothing extracted
    assert not (tmp_path / "escape.png").exists() and not list(tmp_path.rglob("passwd*"))


def test_zip_symlink_and_absolute_members_are_skipped(tmp_path):
    archive = tmp_path / "sneaky.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.png", png(RED))
        zf.writestr("b.png", png(BLUE))
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("/abs/c.png", png())
    loaded = load_folder(archive)
    assert loaded.paths == ["a.png", "b.png"]
    assert dict(loaded.skipped) == {"link.png": "link in archive",
                                    "/abs/c.png": "unsafe path in archive (absolute or with '..')"}


# ----------------------------------------------------------------------------------------------- parameters

@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    """Twelve 8×8 images of two colours."""
    folder = tmp_path_factory.mktemp("small") / "twelve"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (8, 8), RED if i % 2 else BLUE).save(folder / f"{i:02d}.png")
    return folder


@pytest.mark.parametrize("method, overrides, message", [
    ("kmeans", {"n_clusters": 1}, "at least 2"),
    ("kmeans", {"n_clusters": 5000}, "only 1797 images"),
    ("scan", {"pretext_epochs": 0, "cluster_epochs": 0, "selflabel_epochs": 0}, "0 epochs"),
    ("scan", {"pretext_lr": -0.1}, "pretext_lr must be positive"),
    ("scan", {"pretext_batch_size": 5000}, "pretext_batch_size=5000 is larger than the dataset (1797 images)"),
    ("scan", {"pretext_epochs": -1}, "must be ≥ 0"),
    ("kmeans", {"n_init": 2.5}, "n_init must be an integer, got 2.5"),
    ("kmeans", {"n_clusters": True}, "n_clusters must be an integer, got True"),
    ("kmeans", {"max_iter": 0}, "max_iter must be ≥ 1"),
    ("kmeans", {"seed": -1}, "seed must be ≥ 0"),
    ("kmeans", {"features_from": 123}, "features_from must be text or null, got 123"),
    ("scan", {"temperature": float("inf")}, "temperature must be a finite number, got inf"),
    ("scan", {"backbone": None}, "backbone must be text, got None"),
    ("spice", {"center_ratio": 1.5}, "center_ratio must be in [0, 1], got 1.5"),
])
def test_bad_parameters_are_refused_at_submit_and_nothing_is_queued(tmp_path, method, overrides, message):
    manager = JobManager(tmp_path / "runs")
    try:
        with pytest.raises(ConfigError) as raised:
            manager.submit(RunRequest(method, "digits", overrides=overrides, device="cpu"))
        assert message in str(raised.value)
        with pytest.raises(ConfigError, match="no preset 'huge'"):
            manager.submit(RunRequest(method, "digits", preset="huge", device="cpu"))
        assert manager.store.list() == []
    finally:
        manager.shutdown()


def test_one_stage_at_zero_epochs_is_allowed_it_skips_that_stage():
    create_method("scan", "fast", selflabel_epochs=0).config.validate(1797)


def test_an_explicit_batch_larger_than_a_folder_is_refused_before_training(small_folder):
    images = load_folder(small_folder)
    events = []
    method = create_method("scan", "fast", n_clusters=2, pretext_batch_size=64)
    with pytest.raises(ConfigError, match=r"pretext_batch_size=64 is larger than the dataset \(12 images\)"):
        method.fit(images, FitContext("cpu", events.append))
    assert events == []  # refused before the first stage started


def test_a_presets_batch_size_larger_than_the_folder_is_not_refused(small_folder):
    """Presets' batch sizes are upper bounds the methods reduce to the dataset's size."""
    preset = create_method("scan", "fast", n_clusters=2)
    assert preset.config.pretext_batch_size > 12 and preset.explicit_settings == {"n_clusters"}
    check_batch_sizes(preset.config, 12, preset.explicit_settings)
    with pytest.raises(ConfigError):
        check_batch_sizes(preset.config, 12, frozenset({"pretext_batch_size"}))


def test_explicit_settings_travel_with_the_run_so_a_folder_run_fails_before_training(small_folder, tmp_path):
    """A tar archive is not listed at submit (that means reading it through): its run carries the settings the
    user set, and its fit refuses the batch before any training."""
    import tarfile

    archive = tmp_path / "twelve.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(small_folder, arcname="twelve")
    manager = JobManager(tmp_path / "runs")
    try:
        run_id = manager.submit(RunRequest("scan", f"folder:{archive}", device="cpu",
                                           overrides={"n_clusters": 2, "cluster_batch_size": 100}))
        record = manager.wait(run_id, timeout=HANG_GUARD_S)
    finally:
        manager.shutdown()
    assert record.options["explicit"] == ["cluster_batch_size", "n_clusters"]
    assert record.status == "failed" and "cluster_batch_size=100 is larger than the dataset (12 images)" in record.error
    assert manager.store.metrics(run_id) == []


def test_a_folder_with_no_file_or_fewer_files_than_k_is_refused_at_submit_and_nothing_is_queued(small_folder,
                                                                                                 tmp_path):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    manager = JobManager(tmp_path / "runs")
    try:
        with pytest.raises(DatasetError, match="holds no files"):
            manager.submit(RunRequest("kmeans", f"folder:{tmp_path / 'empty'}", device="cpu"))
        with pytest.raises(ConfigError, match=r"K=13 clusters asked for but twelve holds only 12 files"):
            manager.submit(RunRequest("kmeans", f"folder:{small_folder}", overrides={"n_clusters": 13},
                                      device="cpu"))
        (tmp_path / "one").mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / "one" / "only.png")
        with pytest.raises(ConfigError, match=r"holds only 1 file; clustering needs at least 2 images: add images"):
            manager.submit(RunRequest("kmeans", f"folder:{tmp_path / 'one'}", overrides={"n_clusters": 2},
                                      device="cpu"))
        # a batch the user set larger than the folder, as the fit would refuse it once its turn came
        with pytest.raises(ConfigError, match=r"cluster_batch_size=100 is larger than the dataset \(12 images\)"):
            manager.submit(RunRequest("scan", f"folder:{small_folder}", device="cpu",
                                      overrides={"n_clusters": 2, "cluster_batch_size": 100}))
        # a zip's directory is read too: an upload with K above its files is refused before it queues
        with zipfile.ZipFile(tmp_path / "twelve.zip", "w") as zf:
            for path in sorted(Path(small_folder).rglob("*.png")):
                zf.write(path, f"twelve/{path.relative_to(small_folder)}")
        with pytest.raises(ConfigError, match=r"K=13 clusters asked for but twelve.zip holds only 12 files"):
            manager.submit(RunRequest("kmeans", f"folder:{tmp_path / 'twelve.zip'}", device="cpu",
                                      overrides={"n_clusters": 13}))
        assert manager.store.list() == []
    finally:
        manager.shutdown()


def test_a_folder_outside_the_data_roots_is_refused_at_submit_without_being_looked_into(tmp_path):
    (tmp_path / "private").mkdir()  # empty: refusing it for that would tell that it exists
    manager = JobManager(tmp_path / "runs", data_roots=[tmp_path / "allowed"])
    try:
        with pytest.raises(DatasetError, match=OUTSIDE_ROOTS) as refusal:
            manager.submit(RunRequest("kmeans", f"folder:{tmp_path / 'private'}", device="cpu"))
    finally:
        manager.shutdown()
    assert "no files" not in str(refusal.value) and manager.store.list() == []


@pytest.mark.parametrize("args, message, recorded", [  # K < 2, negative lr, unknown preset: tests/test_cli.py
    (("--method", "kmeans", "--dataset", "SMALL", "--clusters", "13"), "holds only 12 files", False),
    (("--method", "scan", "--epochs", "0"), "0 epochs", False),
    (("--method", "scan", "--set", "pretext_batch_size=4096"), "larger than the dataset (1797 images)", False),
    (("--method", "scan", "--dataset", "SMALL", "--clusters", "2", "--set", "pretext_batch_size=13"),
     "pretext_batch_size=13 is larger than the dataset (12 images)", False),
])
def test_cli_refuses_bad_parameters_with_exit_2_and_one_error_line(small_folder, tmp_path, args, message, recorded):
    runs = tmp_path / "runs"
    args = tuple(f"folder:{small_folder}" if a == "SMALL" else a for a in args)
    result = run_cli("train", *args, "--device", "cpu", "--runs-dir", str(runs), env=ONE_THREAD)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    stored = RunStore(runs).list()
    if recorded:  # known only once the folder is loaded: the run is failed before any training step
        assert [r.status for r in stored] == ["failed"] and RunStore(runs).metrics(stored[0].id) == []
    else:  # refused before a run was recorded
        assert stored == []


@pytest.mark.parametrize("setting, message", [
    ("n_clusters=[1,2]", "n_clusters must be an integer, got [1, 2]"),
    ('n_clusters={"a":1}', "n_clusters must be an integer, got {'a': 1}"),
    ("n_clusters=null", "n_clusters must be an integer, got None"),
    ("n_init=NaN", "n_init must be an integer, got nan"),
    ("max_iter=-Infinity", "max_iter must be an integer, got -inf"),
    ("seed=1e30", "seed must be an integer, got 1e+30"),
    ("seed=100000000000000000000000000000", "seed must be an integer of at most 2^63 − 1 in size"),
    ("features_from=123", "features_from must be text or null, got 123"),
    ('pretext_lr="0.1"', "pretext_lr must be a number, got '0.1'"),
    ("image_size=[32]", "image_size must be an integer or null, got [32]"),
])
def test_set_values_of_the_wrong_type_or_out_of_range_exit_2_before_a_run_exists(tmp_path, capsys, setting,
                                                                                  message):
    method = "scan" if setting.startswith(("pretext_lr", "image_size")) else "kmeans"
    runs = tmp_path / "runs"
    code = main(["train", "--method", method, "--set", setting, "--device", "cpu", "--runs-dir", str(runs)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), err
    assert RunStore(runs).list() == []


def test_optional_settings_take_null_and_float_settings_take_integers():
    create_method("kmeans", "fast", features_from=None).config.validate(1797)
    create_method("scan", "fast", image_size=None, pretext_lr=1, temperature=1).config.validate(1797)

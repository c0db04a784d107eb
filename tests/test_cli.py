"""The command line: listing, JSON output, exit codes, and SCAN beating K-means on digits."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli

JSON_KEYS = {"run_id", "method", "dataset", "status", "n_images", "n_skipped", "image_size", "acc", "nmi", "ari",
             "seconds", "device"}


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_list_json_names_methods_with_stages_and_datasets():
    result = run_cli("list", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    methods = {m["name"]: m for m in listing["methods"]}
    assert set(methods) == {"kmeans", "scan", "dec", "jule", "pica", "cc", "spice", "socnet", "digpro", "smc",
                            "temi"}
    for method in methods.values():
        assert method["stages"] and all(stage["losses"] for stage in method["stages"]), method["name"]
        assert {"paper", "fast"} <= set(method["presets"]), method["name"]
        assert method["summary"].endswith("."), method["summary"]  # a whole sentence, not a docstring's first line
    assert [s["name"] for s in methods["scan"]["stages"]] == ["pretext", "mine", "cluster", "selflabel"]
    assert methods["scan"]["presets"]["paper"]["pretext_epochs"] == 500
    assert {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100-20", "stl10"} <= \
        {d["name"] for d in listing["datasets"]}


def test_kmeans_on_digits_prints_a_json_summary(tmp_path):
    result = run_cli("train", "--method", "kmeans", "--dataset", "digits", "--device", "cpu", "--json",
                     "--runs-dir", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    assert JSON_KEYS <= set(summary)
    assert summary["status"] == "finished" and summary["n_images"] == 1797 and summary["n_skipped"] == 0
    assert 0.7 < summary["acc"] < 0.85  # K-means on digits pixels is about 0.79
    assert 0.8 < summary["neighbor_purity"] < 1  # of the 20 nearest in its features: it mines none
    assert summary["device"] == "cpu"
    assert (tmp_path / "r" / summary["run_id"] / "assign.npy").exists()


@pytest.mark.parametrize("args, message", [
    (("--method", "kmeans", "--dataset", "no-such-set"), "unknown dataset"),
    (("--method", "no-such-method",), "unknown method"),
    (("--method", "kmeans", "--clusters", "1"), "at least 2"),
    (("--method", "kmeans", "--clusters", "5000"), "only 1797 images"),
    (("--method", "kmeans", "--dataset", "folder:/no/such/folder"), "does not exist"),
    (("--method", "kmeans", "--preset", "huge"), "no preset"),
    (("--method", "scan", "--set", "pretext_lr=-1"), "must be positive"),
    (("--method", "kmeans", "--dataset", "mnist"), "--data-root"),
    (("--method", "kmeans", "--image-size", "0"), "image size must be a whole number of pixels from 1 to 1024"),
    (("--method", "kmeans", "--image-size", "100000"), "image size must be"),
    (("--method", "kmeans", "--clusters", "abc"), "argument --clusters: invalid int value: 'abc' (see `python -m "
                                                  "engine train --help`)"),
    (("--method", "kmeans", "--epochs", "-1"), "--epochs must be at least 0, got -1"),
])
@pytest.mark.parametrize("queue", [(), ("--queue",)], ids=["foreground", "queued"])
def test_user_errors_exit_2_with_one_error_line_and_store_no_run(tmp_path, args, message, queue):
    result = run_cli("train", *args, *queue, "--device", "cpu", "--runs-dir", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert json.loads(run_cli("runs", "--json", "--runs-dir", str(tmp_path / "r")).stdout) == []


def test_scan_fast_beats_kmeans_on_digits_by_005(tmp_path):
    runs = str(tmp_path / "r")
    kmeans = run_cli("train", "--method", "kmeans", "--dataset", "digits", "--device", "cpu", "--json",
                     "--runs-dir", runs)
    scan = run_cli("train", "--method", "scan", "--dataset", "digits", "--preset", "fast", "--device", "cpu",
                   "--json", "--runs-dir", runs)
    assert scan.returncode == 0, scan.stderr[-2000:]
    kmeans_acc, scan_summary = last_json(kmeans.stdout)["acc"], last_json(scan.stdout)
    assert scan_summary["acc"] >= kmeans_acc + 0.05, (scan_summary, kmeans_acc)
    assert scan_summary["neighbor_purity"] > 0.85


def test_image_size_decodes_a_folder_at_that_size_and_the_run_records_it(tmp_path):
    from PIL import Image

    for i in range(12):
        folder = tmp_path / "photos" / ("red" if i % 2 else "blue")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (120, 90), (200, 20 * i, 30) if i % 2 else (20, 20 * i, 200)).save(folder / f"{i}.jpg")
    common = ("train", "--method", "kmeans", "--dataset", f"folder:{tmp_path / 'photos'}", "--clusters", "2",
              "--device", "cpu", "--json", "--runs-dir", str(tmp_path / "r"))
    sized = run_cli(*common, "--image-size", "24")
    assert sized.returncode == 0, sized.stderr
    summary = last_json(sized.stdout)
    assert summary["status"] == "finished" and summary["image_size"] == 24 and summary["n_images"] == 12
    record = json.loads(run_cli("runs", "--json", "--runs-dir", str(tmp_path / "r")).stdout)[0]
    assert record["image_size"] == 24
    default = last_json(run_cli(*common).stdout)
    assert default["image_size"] == 64  # a folder's default, below the photos' 90 px


def test_a_run_prints_the_files_it_skipped_and_runs_shows_them_with_its_other_messages(tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (16, 16), (40 * i, 10, 200 - 30 * i)).save(folder / f"{i}.png")
    (folder / "notes.jpg").write_text("not an image")
    runs = str(tmp_path / "r")
    result = run_cli("train", "--method", "kmeans", "--dataset", f"folder:{folder}", "--clusters", "2",
                     "--device", "cpu", "--json", "--runs-dir", runs)
    assert result.returncode == 0, result.stderr
    assert "[data] skipped notes.jpg: not an image" in result.stderr
    run_id = last_json(result.stdout)["run_id"]
    shown = run_cli("runs", run_id, "--runs-dir", runs)
    assert shown.returncode == 0 and f"run_id: {run_id}" in shown.stdout
    assert "[data] skipped notes.jpg: not an image" in shown.stdout.split("messages:")[1]
    details = json.loads(run_cli("runs", run_id, "--json", "--runs-dir", runs).stdout)
    assert details["config"]["n_clusters"] == 2 and any("notes.jpg" in m["message"] for m in details["messages"])


def test_runs_lists_runs_in_aligned_columns_under_a_header_and_a_closed_pipe_is_no_error(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    runs = str(tmp_path / "r")
    for clusters in ("2", "12"):
        assert run_cli("train", "--method", "kmeans", "--dataset", "digits", "--clusters", clusters,
                       "--device", "cpu", "--runs-dir", runs).returncode == 0
    lines = run_cli("runs", "--runs-dir", runs).stdout.splitlines()
    assert lines[0].split() == ["RUN", "STATUS", "K", "ACC", "TIME", "DATASET"] and len(lines) == 3
    assert len({line.index("digits") for line in lines[1:]}) == 1  # K 2 and 12: the columns still line up
    piped = subprocess.run(f"{sys.executable} -m engine runs --runs-dir {runs} | head -1", shell=True, cwd=REPO,
                           capture_output=True, text=True)
    assert piped.stdout.startswith("RUN") and piped.stderr == ""


def test_runs_of_a_folder_that_does_not_exist_lists_none_and_creates_nothing(tmp_path):
    missing = tmp_path / "typo"
    listed = run_cli("runs", "--json", "--runs-dir", str(missing))
    assert listed.returncode == 0 and json.loads(listed.stdout) == [] and "does not exist" in listed.stderr
    assert not missing.exists()


@pytest.mark.parametrize("args, message", [(("--method", "nosuch"), "unknown method"),
                                           (("--method", "kmeans", "--dataset", "nosuch"), "unknown dataset")])
def test_an_estimate_of_a_bad_request_is_one_error_line_before_any_timing(tmp_path, args, message):
    result = run_cli("train", *args, "--estimate", "--runs-dir", str(tmp_path / "r"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr

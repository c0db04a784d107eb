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
])
def test_user_errors_exit_2_with_one_error_line(tmp_path, args, message):
    result = run_cli("train", *args, "--device", "cpu", "--runs-dir", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr


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

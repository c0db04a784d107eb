"""The benchmark harness: it measures what it says and writes results.json and RESULTS.md."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import HANG_GUARD_S, REPO, run_cli
from engine.bench import (kmeans_rows, knn_rows, map_rerender, method_step_times, micro, seed_summary, train_rows,
                          write_results)


def test_micro_times_augmentation_and_a_full_step_with_ratios():
    rows = micro(torch.device("cpu"), batch_size=16, image_size=16, repeats=2, warmup=1, backbone="convnet")
    augmentation, step, one_forward = rows
    assert augmentation["seconds"] > 0 and step["seconds"] > augmentation["seconds"]
    assert augmentation["ratio_to_augmentation"] == 1.0 and step["ratio_to_augmentation"] > 1.0
    assert step["views_per_s"] == 32 / step["seconds"] and step["device"] == "cpu"
    # the last row times both views in one forward pass of twice the batch, as SCAN's SimCLR code runs them
    assert one_forward["piece"] == "simclr step convnet (two views, one forward)"
    assert one_forward["ratio_to_float32_step"] == one_forward["seconds"] / step["seconds"]


def test_micro_compiles_the_step_on_the_cpu_too_and_names_the_backend():
    """``bench --micro --compile`` on a CPU used to time float32 only, silently; now it compiles there too."""
    rows = micro(torch.device("cpu"), batch_size=8, image_size=16, repeats=1, warmup=0, backbone="convnet",
                 compile=True, compile_backend="aot_eager")
    assert [row["speedups"] for row in rows] == ["float32", "float32", "float32+compile[aot_eager]",
                                                 "float32+compile[aot_eager]"]
    assert rows[2]["seconds"] > 0 and rows[2]["ratio_to_float32_step"] == rows[2]["seconds"] / rows[1]["seconds"]


def test_a_compile_mode_reaches_torch_compile_and_names_the_rows(monkeypatch):
    """``--compile-mode reduce-overhead`` (CUDA graphs) is what ``torch.compile`` is given, and the rows say so."""
    modes = []

    def recording_compile(module, backend, mode):
        modes.append((backend, mode))
        return module
    monkeypatch.setattr(torch, "compile", recording_compile)
    rows = micro(torch.device("cpu"), batch_size=8, image_size=16, repeats=1, warmup=0, backbone="convnet",
                 compile=True, compile_mode="reduce-overhead")
    assert modes == [("inductor", "reduce-overhead")] * 2  # the step, and the step with one forward
    assert rows[-1]["speedups"] == "float32+compile[inductor,reduce-overhead]"


def test_bench_refuses_a_compile_mode_without_inductor(tmp_path):
    result = run_cli("bench", "--micro", "--compile-mode", "reduce-overhead", "--device", "cpu",
                     "--out", str(tmp_path))
    assert result.returncode != 0 and "--compile-mode" in result.stderr
    assert not (tmp_path / "results.json").exists()


def test_method_step_times_time_every_stage_of_scan_in_a_real_fit(digits):
    rows = method_step_times("scan", digits, torch.device("cpu"))
    assert [row["stage"] for row in rows] == ["pretext", "mine", "cluster", "selflabel"]
    by_stage = {row["stage"]: row for row in rows}
    # one epoch of 1,797 digits at the fast batches: 7 pretext steps, 14 cluster steps, 2 timed after warm-up...
    assert by_stage["pretext"]["steps_timed"] >= 3 and by_stage["pretext"]["seconds_per_step"] > 0
    assert by_stage["cluster"]["steps_timed"] >= 3 and by_stage["cluster"]["seconds_per_step"] > 0
    # ...and mining has no steps, only its wall time
    assert by_stage["mine"]["seconds_per_step"] is None and by_stage["mine"]["stage_seconds"] > 0
    assert by_stage["pretext"]["batch_setting"] == "pretext_batch_size=256" and rows[0]["device"] == "cpu"


def test_bench_micro_cli_times_the_simclr_step_and_each_method_stage(tmp_path):
    result = run_cli("bench", "--micro", "--methods", "kmeans,jule", "--device", "cpu", "--preset", "fast",
                     "--batch-size", "8", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [row.get("piece") for row in rows[:3]] == ["simclr augmentation (one view)",
                                                       "simclr step resnet18 (two views)",
                                                       "simclr step resnet18 (two views, one forward)"]
    assert [(row["method"], row["stage"]) for row in rows[3:]] == [("kmeans", "cluster"), ("jule", "init"),
                                                                    ("jule", "unroll")]
    assert (tmp_path / "RESULTS.md").read_text().count("| method | stage |") == 1


def test_bench_refuses_an_unknown_method_before_timing_anything(tmp_path):
    result = run_cli("bench", "--micro", "--methods", "kmeans,nosuch", "--device", "cpu", "--out", str(tmp_path))
    assert result.returncode == 2 and "nosuch" in result.stderr and not (tmp_path / "results.json").exists()


def test_a_training_row_reports_the_run_end_to_end(tmp_path):
    (row,) = train_rows(["kmeans"], "digits", "fast", "cpu", budget_minutes=None, data_root=None,
                        runs_dir=tmp_path / "runs")
    assert row["complete"] and row["status"] == "finished"
    assert 0.7 < row["acc"] < 0.85 and row["seconds"] > 0 and row["device"] == "cpu"


def test_each_seed_is_its_own_run_measured_against_kmeans_of_that_seed(tmp_path):
    rows = train_rows(["kmeans", "jule"], "digits", "fast", "cpu", budget_minutes=None, data_root=None,
                      runs_dir=tmp_path / "runs", seeds=(0, 1), subset=300)
    assert [(row["method"], row["seed"]) for row in rows] == [("kmeans", 0), ("kmeans", 1), ("jule", 0), ("jule", 1)]
    assert len({row["run_id"] for row in rows}) == 4 and all(row["complete"] for row in rows)
    kmeans = {row["seed"]: row["acc"] for row in rows if row["method"] == "kmeans"}
    for row in rows:
        assert row["acc_over_kmeans"] == pytest.approx(row["acc"] - kmeans[row["seed"]])


def test_the_seed_summary_judges_the_rule_on_the_mean_margin_not_one_lucky_seed():
    rows = [{"method": "kmeans", "dataset": "d", "subset": None, "seed": s, "acc": 0.60, "acc_over_kmeans": 0.0}
            for s in (0, 1, 2)]
    rows += [{"method": "scan", "dataset": "d", "subset": None, "seed": s, "acc": acc, "acc_over_kmeans": acc - 0.6}
             for s, acc in enumerate((0.70, 0.58, 0.60))]
    rows += [{"method": "dec", "dataset": "d", "subset": None, "seed": s, "acc": acc, "acc_over_kmeans": acc - 0.6}
             for s, acc in enumerate((0.64, 0.63, 0.65))]
    summary = {row["method"]: row for row in seed_summary(rows)}
    assert summary["scan"]["seeds"] == 3 and summary["scan"]["acc_min"] == 0.58 and summary["scan"]["acc_max"] == 0.70
    assert summary["scan"]["margin_mean"] == pytest.approx(0.08 / 3)
    assert summary["scan"]["margin_min"] == pytest.approx(-0.02)
    assert summary["scan"]["meets_rule"] is False  # one seed at +0.10 does not carry two at or under K-means
    assert summary["dec"]["meets_rule"] is True and summary["kmeans"]["meets_rule"] is None


def test_bench_refuses_seeds_that_are_not_a_list_of_distinct_numbers(tmp_path):
    for bad in ("a,b", "1,1", "-1", ""):
        result = run_cli("bench", "--methods", "kmeans", "--seeds", bad, "--device", "cpu", "--out", str(tmp_path))
        assert result.returncode == 2 and "--seeds" in result.stderr
    assert not (tmp_path / "results.json").exists()


def test_a_run_over_budget_is_recorded_incomplete_not_extrapolated(tmp_path):
    (row,) = train_rows(["scan"], "digits", "paper", "cpu", budget_minutes=0.05, data_root=None,
                        runs_dir=tmp_path / "runs")
    assert not row["complete"] and row["status"] == "cancelled" and row["acc"] is None


def test_a_stopped_benchmark_run_is_resumed_by_the_next_bench_and_its_sessions_add_up(tmp_path):
    (first,) = train_rows(["jule"], "digits", "fast", "cpu", budget_minutes=0.02, data_root=None,
                          runs_dir=tmp_path / "runs")
    assert first["status"] == "cancelled" and first["sessions"] == 1
    (second,) = train_rows(["jule"], "digits", "fast", "cpu", budget_minutes=None, data_root=None,
                           runs_dir=tmp_path / "runs")
    assert second["run_id"] == first["run_id"] and second["complete"] and second["sessions"] == 2
    assert second["seconds"] > first["seconds"] and second["acc"] > 0.8


def test_map_rerender_reads_the_cached_map(tmp_path):
    row = map_rerender(300, dim=16, workdir=tmp_path)
    assert row["seconds"] > 0 and row["first_compute_seconds"] > 0
    assert len(list(tmp_path.glob("*/map_pacmap.npy"))) == 1


def test_results_are_written_as_json_and_markdown(tmp_path):
    json_path, md_path = write_results([{"method": "kmeans", "acc": 0.5, "device": "cpu"}], tmp_path)
    assert json.loads(json_path.read_text()) == [{"method": "kmeans", "acc": 0.5, "device": "cpu"}]
    assert "| method |" in md_path.read_text() and "| kmeans |" in md_path.read_text()


def test_collect_gathers_every_benchmark_folder_into_one_table_tagged_by_folder(tmp_path):
    write_results([{"method": "scan", "acc": 0.88, "device": "H100"}], tmp_path / "cifar10-h100")
    write_results([{"piece": "simclr step", "views_per_s": 1e5, "device": "H100"}], tmp_path / "micro-h100")
    result = run_cli("bench", "--collect", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "results.json").read_text())
    assert rows == [{"run": "cifar10-h100", "method": "scan", "acc": 0.88, "device": "H100"},
                    {"run": "micro-h100", "piece": "simclr step", "views_per_s": 1e5, "device": "H100"}]
    assert "| run | method |" in (tmp_path / "RESULTS.md").read_text()


def test_collect_with_no_benchmark_folders_says_what_to_run(tmp_path):
    result = run_cli("bench", "--collect", "--out", str(tmp_path))
    assert result.returncode == 2 and "no */results.json" in result.stderr


def test_kmeans_benchmark_times_ours_and_scikit_learn_on_the_same_pixels(digits):
    ours, reference = kmeans_rows(digits, 600, n_init=2)
    assert (ours["piece"], reference["piece"]) == ("kmeans engine fit_kmeans", "kmeans scikit-learn KMeans")
    assert ours["n_images"] == reference["n_images"] == 600 and ours["dim"] == 64
    assert ours["seconds"] > 0 and reference["ratio_to_sklearn"] == 1.0
    assert ours["ratio_to_sklearn"] == ours["seconds"] / reference["seconds"]
    assert abs(ours["acc"] - reference["acc"]) < 0.1  # two K-means of the same pixels: about the same ACC


def test_knn_benchmark_reports_both_searches_and_the_approximate_recall():
    exact, approximate = knn_rows(2000, dim=32)
    assert exact["recall_at_k"] == 1.0 and approximate["recall_at_k"] >= 0.95
    assert exact["ratio_to_exact"] == 1.0 and approximate["n_points"] == 2000 and approximate["k"] == 20


def test_bench_decode_writes_the_peak_memory_of_a_folder_load_as_a_ratio_to_the_decoded_array(tmp_path):
    result = run_cli("bench", "--decode", "30", "--image-size", "16", "--out", str(tmp_path / "decode"))
    assert result.returncode == 0, result.stderr
    (row,) = json.loads((tmp_path / "decode" / "results.json").read_text())
    assert row["images"] == 30 and row["shape"] == [16, 16, 3] and row["source_side"] == 512
    assert row["decoded_mb"] == 30 * 16 * 16 * 3 / 1e6 and row["bound"] == 1.5
    assert row["ratio"] == pytest.approx(row["peak_rss_growth_mb"] / row["decoded_mb"]) and row["cached_same"]
    assert "decode 30 JPEGs of 512 px at 16 px" in (tmp_path / "decode" / "RESULTS.md").read_text()


def test_bench_smoke_checks_a_compiled_epoch_of_every_stage_without_ui_or_index_packages(tmp_path):
    """``bench --smoke`` on the CPU (aot_eager; the meta stand-in for the host-sync count): one row per stage with
    the graphs compiled, seconds per step and host syncs inside steps, written to --out/smoke-cpu/, without
    importing streamlit, faiss, umap or pacmap. Here two methods; CI runs every one."""
    script = ("import sys; from engine.cli import main; code = main(sys.argv[1:]); "
              "heavy = [m for m in ('streamlit', 'faiss', 'umap', 'pacmap') if m in sys.modules]; "
              "assert not heavy, heavy; sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script, "bench", "--smoke", "--methods", "jule,socnet",
                             "--device", "cpu", "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                            timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "smoke-cpu" / "results.json").read_text())
    by_stage = {(row["method"], row["stage"]): row for row in rows}
    assert list(by_stage) == [("jule", "init"), ("jule", "unroll"), ("socnet", "train")]
    for key in [("jule", "unroll"), ("socnet", "train")]:
        row = by_stage[key]
        assert row["graphs"] > 0 and row["seconds_per_step"] > 0 and row["steps_checked_for_syncs"] > 0, row
        assert row["reads_in_steps"] == row["device_to_host_in_steps"] == row["host_to_device_in_steps"] == 0
        assert row["speedups"] == "float32+compile[aot_eager]" and row["sync_device"] == "stand-in (meta)"
    assert (tmp_path / "smoke-cpu" / "RESULTS.md").exists()


def test_pretrained_end_to_end_times_load_extraction_and_each_fit_from_one_extraction(tmp_path):
    """bench --pretrained N: one extraction into a fresh cache, then each method on the cached features."""
    result = run_cli("bench", "--pretrained", "40", "--dataset", "digits", "--backbone", "resnet18-imagenet",
                     "--methods", "kmeans,kmeans", "--device", "cpu", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = json.loads((tmp_path / "results.json").read_text())
    assert first["n_images"] == 40 and first["extract_s"] > 0 and first["extract_s"] == second["extract_s"]
    for row in (first, second):
        assert row["end_to_end_s"] >= row["load_s"] + row["extract_s"]
        assert 0 <= row["acc_random_weights"] <= 1


def test_a_generated_run_keeps_its_labels_but_the_chosen_share_and_has_what_the_pages_need(tmp_path):
    from engine.analysis.results import load_results
    from engine.bench_pages import generated_run
    from engine.runs import RunStore

    run_id = generated_run(tmp_path, "digits", noise=0.3)
    store = RunStore(tmp_path)
    results = load_results(store, run_id)
    # 70 % keep their label and a tenth of the others draw it again: 0.73, within 3 binomial sd of 1,797 images
    assert abs((results.assign == results.labels).mean() - 0.73) < 0.032
    assert results.features.shape == (1797, 64) and np.allclose(results.probs.sum(axis=1), 1, atol=1e-5)
    assert (store.run_dir(run_id) / "map_pacmap.npy").exists() and store.load_array(run_id, "knn") is not None
    assert store.get(run_id).summary["neighbor_purity"] is not None


def test_page_times_time_pages_and_the_map_hover_preview_in_chromium(tmp_path):
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    from engine.bench_pages import digits_run, serve_and_time

    if not Path("/usr/bin/chromium").exists():
        pytest.skip("no Chromium: install Debian's chromium package (.ci/run does)")
    digits_run(tmp_path / "digits")
    rows = {row["piece"]: row for row in serve_and_time(tmp_path / "digits", "digits", 1797, 2.0, repeats=1,
                                                        pages=("home", "map"))}
    assert set(rows) == {"page home", "page map", "map hover preview, first hover (asks the server)",
                         "map hover preview, next hover (a prefetched neighbour)", "map zoom: a wheel step's redraw"}
    assert all(row["seconds"] > 0 for row in rows.values())
    assert rows["page map"]["server_cpu_s"] > 0 and rows["page map"]["new_context_browser_cpu_s"] > 0
    assert rows["page home"]["ratio_to_home"] == 1 and rows["page map"]["n_points"] == 1797


def test_bench_smoke_with_jobs_checks_the_methods_in_processes_side_by_side_and_keeps_their_order(tmp_path):
    result = run_cli("bench", "--smoke", "--methods", "kmeans,dec", "--jobs", "2", "--device", "cpu",
                     "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "smoke-cpu" / "results.json").read_text())
    assert [(row["method"], row["stage"]) for row in rows] == [
        ("kmeans", "cluster"), ("dec", "layerwise"), ("dec", "finetune"), ("dec", "cluster")]
    assert all(row["fit_outcome"] == "finished" and row["reads_in_steps"] == 0 for row in rows)

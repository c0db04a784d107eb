"""The benchmark harness: it measures what it says and writes results.json and RESULTS.md."""
from __future__ import annotations

import json

import torch

from conftest import run_cli
from engine.bench import map_rerender, micro, train_rows, write_results


def test_micro_times_augmentation_and_a_full_step_with_ratios():
    rows = micro(torch.device("cpu"), batch_size=16, image_size=16, repeats=2, warmup=1, backbone="convnet")
    augmentation, step = rows
    assert augmentation["seconds"] > 0 and step["seconds"] > augmentation["seconds"]
    assert augmentation["ratio_to_augmentation"] == 1.0 and step["ratio_to_augmentation"] > 1.0
    assert step["views_per_s"] == 32 / step["seconds"] and step["device"] == "cpu"


def test_a_training_row_reports_the_run_end_to_end(tmp_path):
    (row,) = train_rows(["kmeans"], "digits", "fast", "cpu", budget_minutes=5, data_root=None,
                        runs_dir=tmp_path / "runs")
    assert row["complete"] and row["status"] == "finished"
    assert 0.7 < row["acc"] < 0.85 and row["seconds"] > 0 and row["device"] == "cpu"


def test_a_run_over_budget_is_recorded_incomplete_not_extrapolated(tmp_path):
    (row,) = train_rows(["scan"], "digits", "paper", "cpu", budget_minutes=0.05, data_root=None,
                        runs_dir=tmp_path / "runs")
    assert not row["complete"] and row["status"] == "cancelled" and row["acc"] is None


def test_map_rerender_reads_the_cached_map(tmp_path):
    row = map_rerender(300, dim=16, workdir=tmp_path)
    assert row["seconds"] > 0 and row["first_compute_seconds"] > 0
    assert len(list(tmp_path.glob("*/map_pacmap.npy"))) == 1


def test_results_are_written_as_json_and_markdown(tmp_path):
    json_path, md_path = write_results([{"method": "kmeans", "acc": 0.5, "device": "cpu"}], tmp_path)
    assert json.loads(json_path.read_text()) == [{"method": "kmeans", "acc": 0.5, "device": "cpu"}]
    assert "| method |" in md_path.read_text() and "| kmeans |" in md_path.read_text()

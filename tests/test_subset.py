"""Class-balanced, seeded subsets: ``load_dataset(subset=N)``, ``train --subset`` and ``bench --subset``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_cli
from engine.bench import train_rows
from engine.data import ImageSet, load_dataset
from engine.data.subset import balanced_subset
from engine.errors import ConfigError
from engine.runs import RunRequest, RunStore, create_run, execute_run


def test_a_subset_takes_every_class_equally_the_same_images_each_time_in_their_order(digits):
    subset = balanced_subset(digits, 105)
    assert np.bincount(subset.labels).tolist() == [11] * 5 + [10] * 5
    again, other = balanced_subset(digits, 105), balanced_subset(digits, 105, seed=1)
    assert torch.equal(subset.images, again.images) and not torch.equal(subset.images, other.images)
    rows = {digits.images[i].numpy().tobytes(): i for i in range(len(digits))}
    picked = [rows[image.numpy().tobytes()] for image in subset.images]
    assert picked == sorted(picked) and subset.source == "digits@105"


def test_a_class_too_small_for_its_share_leaves_its_place_to_the_others():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 10)
    toy = ImageSet(torch.arange(22, dtype=torch.uint8).view(22, 1, 1, 1), labels, ["a", "b", "c"], "toy")
    assert np.bincount(balanced_subset(toy, 12).labels).tolist() == [5, 2, 5]


def test_a_subset_as_large_as_the_set_is_the_set_and_an_empty_one_is_refused(digits):
    assert balanced_subset(digits, 5000) is digits
    with pytest.raises(ConfigError, match="at least 1"):
        balanced_subset(digits, 0)


def test_load_dataset_and_train_take_a_subset(tmp_path):
    assert len(load_dataset("digits", subset=50)) == 50
    result = run_cli("train", "--method", "kmeans", "--dataset", "digits", "--subset", "200", "--json",
                     "--runs-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["n_images"] == 200 and report["subset"] == 200


def test_bench_rows_on_a_subset_give_each_methods_acc_over_the_kmeans_row(tmp_path):
    rows = train_rows(["kmeans", "jule"], "digits", "fast", "cpu", budget_minutes=None, data_root=None,
                      runs_dir=tmp_path / "runs", subset=300)
    kmeans, jule = rows
    assert kmeans["subset"] == jule["subset"] == 300 and kmeans["acc_over_kmeans"] == 0.0
    assert jule["acc_over_kmeans"] == pytest.approx(jule["acc"] - kmeans["acc"])


def test_bench_can_scale_a_runs_epochs_to_its_budget_instead_of_stopping_it(tmp_path):
    (row,) = train_rows(["socnet"], "digits", "fast", "cpu", budget_minutes=0.01, data_root=None,
                        runs_dir=tmp_path / "runs", subset=200, scale_to_budget=True)
    assert row["budget_factor"] < 1 and row["epochs"]["epochs"] < 25


def test_a_subset_larger_than_the_dataset_trains_on_all_of_it_and_says_so(tmp_path):
    store = RunStore(tmp_path / "runs")
    run_id = create_run(store, RunRequest("kmeans", "digits", overrides={"n_init": 1}, device="cpu", subset=5000))
    execute_run(store, run_id)
    assert store.get(run_id).summary["n_images"] == 1797
    assert ("a subset of 5000 images was asked for, but the dataset holds 1797: all are used"
            in [m["message"] for m in store.messages(run_id)])

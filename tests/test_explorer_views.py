"""The engine functions behind the explorer pages' views (issue 13): side-by-side rows, disagreements, gallery
pages, loss-chart panels, image names and captions. Pure arrays, no Streamlit."""
from __future__ import annotations

import numpy as np
import pytest

from engine.analysis.clusters import (aligned_rows, cell_members, cluster_summaries, confusion_cells, disagreements,
                                      gallery_members, off_majority)
from engine.analysis.curves import stage_panels
from engine.methods.training import TRAIN_ACC
from engine.analysis.thumbnails import contact_sheet

# run B is run A with its cluster ids permuted (0→2, 1→0, 2→1) and two images moved
ASSIGN_A = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
ASSIGN_B = np.array([2, 2, 0, 0, 0, 0, 1, 1, 1, 3])


def test_aligned_rows_pair_each_cluster_with_its_match_and_list_unmatched_ones_last():
    assert aligned_rows(ASSIGN_A, ASSIGN_B, 3, 4) == [(0, 2), (1, 0), (2, 1), (None, 3)]
    assert aligned_rows(ASSIGN_B, ASSIGN_A, 4, 3) == [(0, 1), (1, 2), (2, 0), (3, None)]


def test_disagreements_are_the_images_outside_their_clusters_match():
    assert disagreements(ASSIGN_A, ASSIGN_B).tolist() == [2, 9]
    assert disagreements(ASSIGN_A, ASSIGN_A).tolist() == []


def test_confusion_cells_list_the_cells_off_the_match_first_and_their_members_most_confident_first():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    assign = np.array([1, 1, 1, 0, 0, 0, 1, 0])  # cluster 1 ↔ label 0, cluster 0 ↔ label 1
    confidence = np.array([0.9, 0.8, 0.7, 0.9, 0.8, 0.7, 0.95, 0.6])
    assert confusion_cells(labels, assign) == [(0, 0, 1), (1, 1, 1), (0, 1, 3), (1, 0, 3)]
    assert cell_members(assign, labels, confidence, 1, 0).tolist() == [0, 1, 2]
    assert cell_members(assign, labels, confidence, 1, 1).tolist() == [6]
    assert cell_members(assign, labels, confidence, 0, 0).tolist() == [7]
    assert len(cell_members(assign, labels, confidence, 2, 0)) == 0


def test_gallery_members_page_through_a_cluster_most_or_least_confident_first():
    confidence = np.linspace(0.1, 1.0, 10)
    summary = cluster_summaries(np.zeros(10, dtype=int), confidence, 1)[0]
    assert gallery_members(summary, "most", page=1, per_page=4).tolist() == [9, 8, 7, 6]
    assert gallery_members(summary, "most", page=3, per_page=4).tolist() == [1, 0]
    assert gallery_members(summary, "least", page=1, per_page=4).tolist() == [0, 1, 2, 3]
    assert gallery_members(summary, "most", page=4, per_page=4).tolist() == []
    with pytest.raises(ValueError):
        gallery_members(summary, "sideways", page=1, per_page=4)


def test_off_majority_outlines_members_with_another_label_than_their_cluster():
    labels = np.array([3, 3, 5, 3])
    summary = cluster_summaries(np.zeros(4, dtype=int), np.array([0.9, 0.8, 0.7, 0.6]), 1, labels)[0]
    assert off_majority(summary, summary.members, labels) == [False, False, True, False]
    assert off_majority(summary, summary.members, None) is None


def rows(stage: str, name: str, values: list[float]) -> list[dict]:
    return [{"stage": stage, "step": step, "name": name, "value": value} for step, value in enumerate(values, 1)]


def test_kmeans_chart_counts_restarts_and_names_its_one_line():
    (panel,) = stage_panels(rows("cluster", "inertia", [5.0, 4.0, 4.5]), "kmeans")
    assert (panel.x_title, panel.y_title, list(panel.series)) == ("restart", "inertia", ["inertia"])
    assert not panel.single


def test_a_stage_recorded_once_is_a_number_not_a_chart():
    (panel,) = stage_panels(rows("mine", "neighbor_purity", [0.93]), "scan")
    assert panel.single and panel.series["neighbor_purity"] == ([1], [0.93])


def test_losses_and_shares_get_separate_charts():
    recorded = rows("selflabel", "cross_entropy", [2.0, 1.5]) + rows("selflabel", "confident_share", [0.2, 0.4])
    losses, shares = stage_panels(recorded, "scan")
    assert (list(losses.series), losses.y_title) == (["cross_entropy"], "cross_entropy")
    assert (list(shares.series), shares.y_title) == (["confident_share"], "share of images")
    assert losses.x_title == shares.x_title == "training step"


def test_the_accuracy_after_each_epoch_gets_its_own_zero_to_one_chart_named_for_what_it_measures():
    recorded = rows("train", "total", [3.0, 2.5]) + rows("train", TRAIN_ACC, [0.4, 0.3])
    losses, accuracy = stage_panels(recorded, "cc")
    assert list(losses.series) == ["total"]
    assert (accuracy.kind, list(accuracy.series), accuracy.y_title) == ("accuracy", ["ACC (train images)"],
                                                                      "ACC (train images)")
    assert accuracy.series["ACC (train images)"] == ([1, 2], [0.4, 0.3]) and accuracy.x_title == "training step"


def test_multi_line_captions_make_taller_cells():
    images = np.zeros((2, 8, 8, 1), dtype=np.uint8)
    one = contact_sheet(images, n_cols=2, cell=64, captions=["#1", "#2"])
    three = contact_sheet(images, n_cols=2, cell=64, captions=["#1\ncluster 8\nlabel 8", "#2\ncluster 0\nlabel 0"])
    assert three.shape[0] > one.shape[0] > 64
    assert three.shape[1] == one.shape[1] == 128


def results_of(assign: list[int], labels: list[int] | None, paths: list[str]):
    """A RunResults over a tiny in-memory dataset (nothing stored)."""
    import torch

    from engine.analysis.results import RunResults
    from engine.data import ImageSet

    assign = np.array(assign)
    results = RunResults(record=None, store=None, assign=assign, probs=np.eye(3)[assign], features=None,
                         neighbors=None, labels=None if labels is None else np.array(labels))
    results.__dict__["images"] = ImageSet(torch.zeros((len(assign), 4, 4, 1), dtype=torch.uint8),
                                          results.labels, ["zero", "one", "two"] if labels else [], "test", paths)
    return results


def test_image_captions_spell_out_name_cluster_and_label():
    labelled = results_of([2, 0], [1, 1], [])
    assert labelled.image_caption(0) == "#0 · cluster 2 · label one"
    assert labelled.image_caption(1, separator="\n") == "#1\ncluster 0\nlabel one"
    uploaded = results_of([2, 0], None, ["/uploads/abc/cats/tom.png", "/uploads/abc/cats/felix.jpg"])
    assert uploaded.image_caption(1) == "felix.jpg · cluster 0"


def test_files_of_one_name_in_different_folders_are_named_by_their_folders_too():
    """A labelled folder often has a ``0163.png`` in every class folder: a name must find one file."""
    results = results_of([0, 1, 2], None, ["A/0163.png", "B/0163.png", "A/0164.png"])
    assert results.image_names == ["A/0163.png", "B/0163.png", "0164.png"]
    assert results.image_caption(1) == "B/0163.png · cluster 1"

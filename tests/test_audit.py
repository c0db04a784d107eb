"""Auditing a run: tags in the run store (lasting, shared by sessions and processes), corrected labels, the filter
every explorer page shares, the ranked suspected mistakes, and their CLI commands."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import HANG_GUARD_S, ONE_THREAD, REPO
from engine.analysis.filters import ANY_TAG, NO_TAG, ImageFilter, correct
from engine.clustering.metrics import match_clusters
from engine.clustering.neighbors import mine_neighbors
from engine.analysis.results import load_results
from engine.analysis.suspects import COMBINED, local_outlier_factor, run_suspects, suspect_scores
from engine.analysis.tags import NOT_CORRECTED, corrected_labels, label_tag, tag_images, tag_names, untag_images
from engine.cli import main
from engine.errors import UserError
from engine.runs import JobManager, RunRequest, RunStore
from engine.runs.store import TAG_MAX_CHARS


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished K-means run on digits in its own store; yields its RunResults."""
    folder = tmp_path_factory.mktemp("audit-runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DCE_CACHE_DIR", str(folder / "cache"))
        manager = JobManager(folder / "runs")
        run_id = manager.submit(RunRequest("kmeans", "digits", device="cpu"))
        assert manager.wait(run_id, timeout=HANG_GUARD_S).status == "finished"
        manager.shutdown()
        yield load_results(manager.store, run_id)


@pytest.fixture
def results(finished):
    """The finished run with no tags on it."""
    store = finished.store
    for image, tags in store.image_tags(finished.run_id).items():
        for tag in tags:
            store.remove_tag(finished.run_id, [image], tag)
    return finished


# -- tags in the run store ----------------------------------------------------------------------------------------


def test_tags_last_beyond_the_store_object_that_wrote_them_and_a_repeat_adds_nothing(results):
    assert tag_images(results, [3, 5], "mislabelled") == 2
    assert tag_images(results, [5, 7], "mislabelled") == 1
    assert tag_images(results, [5], "  dup   of 12 ") == 1  # whitespace collapsed
    reopened = RunStore(results.store.root)  # a restarted server reads the same file
    assert reopened.image_tags(results.run_id) == {3: ["mislabelled"], 5: ["mislabelled", "dup of 12"],
                                                   7: ["mislabelled"]}
    assert untag_images(results, [5, 9], "mislabelled") == 1
    assert reopened.image_tags(results.run_id)[5] == ["dup of 12"]
    assert tag_names(reopened.image_tags(results.run_id)) == ["mislabelled", "dup of 12"]


def test_sessions_tagging_at_the_same_moment_keep_every_tag(results):
    """Eight sessions (each its own store connection) tag overlapping images at once: every tag lands once."""
    start = threading.Barrier(8)
    errors = []

    def session(number: int) -> None:
        store = RunStore(results.store.root)
        start.wait()
        try:
            for image in range(number * 10, number * 10 + 20):  # each overlaps the next session's range
                store.add_tag(results.run_id, [image], "duplicate")
                store.add_tag(results.run_id, [image], f"seen by {number}")
        except Exception as exc:  # noqa: BLE001 — reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD_S)
    assert errors == []
    tags = results.store.image_tags(results.run_id)
    assert sorted(tags) == list(range(90))
    assert all(tags[image].count("duplicate") == 1 for image in tags)
    assert all(f"seen by {min(image // 10, 7)}" in tags[image] for image in tags)


def test_two_cli_processes_tagging_at_once_both_land(results):
    commands = [[sys.executable, "-m", "engine", "tag", results.run_id, tag, *map(str, images),
                 "--runs-dir", str(results.store.root)]
                for tag, images in (("mislabelled", range(0, 40)), ("duplicate", range(20, 60)))]
    processes = [subprocess.Popen(command, cwd=REPO, env={**os.environ, **ONE_THREAD},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for command in commands]
    outputs = [process.communicate(timeout=HANG_GUARD_S) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    tags = results.store.image_tags(results.run_id)
    assert sum("mislabelled" in tags.get(i, []) for i in range(60)) == 40
    assert sum("duplicate" in tags.get(i, []) for i in range(60)) == 40


@pytest.mark.parametrize("tag, message", [("   ", "needs some text"), ("x" * (TAG_MAX_CHARS + 1), "at most"),
                                          ("a\x00b", "control characters")])
def test_a_bad_tag_is_refused_and_nothing_is_stored(results, tag, message):
    with pytest.raises(UserError, match=message):
        tag_images(results, [1], tag)
    assert results.store.image_tags(results.run_id) == {}


@pytest.mark.parametrize("images", [[1797], [-1], []])
def test_an_image_outside_the_run_is_refused(results, images):
    with pytest.raises(UserError):
        tag_images(results, images, "duplicate")
    assert results.store.image_tags(results.run_id) == {}


def test_deleting_a_run_deletes_its_tags(tmp_path):
    store = RunStore(tmp_path / "runs")
    run_id = store.create_run("kmeans", "digits", {"n_clusters": 10})
    store.update(run_id, status="finished")
    store.add_tag(run_id, [1, 2], "duplicate")
    store.delete(run_id)
    assert store.image_tags(run_id) == {}
    with pytest.raises(UserError, match="no run"):
        store.add_tag(run_id, [1], "duplicate")


def test_a_label_tag_sets_one_corrected_label_per_image(results):
    tag_images(results, [3, 4], "label:7")  # spelled without the space: the same tag
    tag_images(results, [4], label_tag("1"))  # replaces image 4's earlier correction
    tags = results.store.image_tags(results.run_id)
    assert tags == {3: ["label: 7"], 4: ["label: 1"]}
    corrected = corrected_labels(results, tags)
    assert (corrected[3], corrected[4]) == (7, 1)
    assert (np.delete(corrected, [3, 4]) == NOT_CORRECTED).all()


def test_a_label_tag_must_name_a_class_and_needs_a_labelled_set(results):
    with pytest.raises(UserError, match="no class of this dataset"):
        tag_images(results, [3], "label: seven")
    unlabelled = dataclasses.replace(results, labels=None)
    with pytest.raises(UserError, match="no labels to correct"):
        tag_images(unlabelled, [3], label_tag("7"))
    assert results.store.image_tags(results.run_id) == {}


# -- the shared filter -------------------------------------------------------------------------------------------


def test_an_empty_filter_keeps_every_image(results):
    assert not ImageFilter().active
    assert ImageFilter().mask(results, {}).all()


def test_each_part_of_the_filter_keeps_what_it_names_and_the_parts_combine_with_and(results):
    assign, confidence, labels = results.assign, results.confidence, results.labels
    assert np.array_equal(ImageFilter(clusters=(1, 3)).mask(results, {}), np.isin(assign, [1, 3]))
    assert np.array_equal(ImageFilter(labels=(4,)).mask(results, {}), labels == 4)
    keep = ImageFilter(confidence=(0.2, 0.6)).mask(results, {})
    assert np.array_equal(keep, (confidence >= 0.2) & (confidence <= 0.6)) and 0 < keep.sum() < len(keep)
    mapping = match_clusters(labels, assign)
    wrong = np.array([mapping[c] for c in assign]) != labels
    assert np.array_equal(ImageFilter(correctness="incorrect").mask(results, {}), wrong)
    assert np.array_equal(ImageFilter(correctness="correct").mask(results, {}), ~wrong)
    assert np.array_equal(correct(labels, assign), ~wrong)
    both = ImageFilter(clusters=(1,), correctness="incorrect").mask(results, {})
    assert np.array_equal(both, (assign == 1) & wrong)


def test_the_tag_part_keeps_images_with_any_chosen_tag_any_tag_or_none(results):
    tags = {2: ["duplicate"], 5: ["mislabelled", "label: 3"], 9: ["blurry"]}
    assert np.flatnonzero(ImageFilter(tags=("duplicate", "blurry")).mask(results, tags)).tolist() == [2, 9]
    assert np.flatnonzero(ImageFilter(tags=(ANY_TAG,)).mask(results, tags)).tolist() == [2, 5, 9]
    untagged = ImageFilter(tags=(NO_TAG,)).mask(results, tags)
    assert untagged.sum() == 1797 - 3 and not untagged[[2, 5, 9]].any()
    assert ImageFilter(tags=(NO_TAG, "blurry")).mask(results, tags).sum() == 1797 - 2


def test_label_parts_keep_every_image_of_an_unlabelled_run(results):
    unlabelled = dataclasses.replace(results, labels=None)
    assert ImageFilter(labels=(4,), correctness="incorrect").mask(unlabelled, {}).all()


def test_the_filter_says_what_it_keeps_and_refuses_nonsense():
    text = ImageFilter(clusters=(1, 3), confidence=(0.0, 0.5), correctness="incorrect", tags=("duplicate",))
    assert text.describe() == "cluster 1 or 3 · confidence 0.00–0.50 · incorrect · tag duplicate"
    with pytest.raises(ValueError, match="correctness"):
        ImageFilter(correctness="maybe")
    with pytest.raises(ValueError, match="confidence range"):
        ImageFilter(confidence=(0.8, 0.2))


# -- suspected mistakes ----------------------------------------------------------------------------------------


def planted(seed: int = 0):
    """Four tight blobs of 100 points in 16-D and three kinds of planted mistakes, four of each: points that fit
    no blob (directions orthogonal to every blob's centre), points put in the wrong cluster, and points given a
    wrong label. Returns (features, assign, probs, labels, outliers, misassigned, mislabelled)."""
    rng = np.random.default_rng(seed)
    k, per, dim = 4, 100, 16
    centres = rng.normal(size=(k, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(k), per)
    basis, _ = np.linalg.qr(centres.T)
    far = rng.normal(size=(4, dim))
    far -= far @ basis @ basis.T
    features = np.vstack([centres[truth] + 0.15 * rng.normal(size=(k * per, dim)), far])
    outliers = np.arange(k * per, k * per + 4)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    logits = 5 * unit @ centres.T
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    assign = probs.argmax(axis=1)
    labels = np.concatenate([truth, assign[outliers]])
    misassigned = np.array([5, 105, 205, 305])
    assign[misassigned] = (assign[misassigned] + 1) % k
    mislabelled = np.array([10, 110, 210, 310])
    labels[mislabelled] = (labels[mislabelled] + 2) % k
    return features, assign, probs, labels, outliers, misassigned, mislabelled


def test_planted_mistakes_rank_first_in_a_labelled_run():
    features, assign, probs, labels, outliers, misassigned, mislabelled = planted()
    suspects = suspect_scores(assign, probs, mine_neighbors(features, 20), features, labels)
    assert set(suspects.ranking(COMBINED)[:12]) == {*outliers, *misassigned, *mislabelled}
    assert set(suspects.ranking("neighbours")[:4]) == set(misassigned)
    assert set(suspects.ranking("outlier")[:4]) == set(outliers)
    assert set(suspects.ranking("centre")[:4]) == set(outliers)
    assert set(suspects.ranking("label")[:4]) == set(mislabelled)
    assert "cluster disagrees with its neighbours" in suspects.reasons(int(misassigned[0]))
    assert suspects.reasons(int(suspects.ranking()[-1])) == []


def test_planted_mistakes_rank_first_without_labels():
    features, assign, probs, _, outliers, misassigned, _ = planted(seed=1)
    suspects = suspect_scores(assign, probs, mine_neighbors(features, 20), features)
    assert "label" not in suspects.scores
    assert set(suspects.ranking()[:8]) == {*outliers, *misassigned}


def test_lof_on_the_neighbour_graph_equals_scikit_learns_on_all_pairs():
    from sklearn.neighbors import LocalOutlierFactor

    features = np.random.default_rng(2).normal(size=(300, 8)).astype(np.float32)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    ours = local_outlier_factor(unit, mine_neighbors(unit, 15), 15)
    full = -LocalOutlierFactor(n_neighbors=15, metric="cosine", algorithm="brute").fit(unit).negative_outlier_factor_
    assert np.allclose(ours, full, atol=1e-4)


def test_a_finished_run_gets_suspects_with_and_without_labels(results):
    suspects = run_suspects(results)
    assert set(suspects.scores) == {"neighbours", "confidence", "outlier", "centre", "label"}
    ranking = suspects.ranking()
    assert sorted(ranking.tolist()) == list(range(1797))
    assert suspects.combined[ranking[0]] == 1.0
    assert "label" not in run_suspects(dataclasses.replace(results, labels=None)).scores


def test_bad_inputs_to_suspects_are_refused():
    with pytest.raises(ValueError, match="one row per image"):
        suspect_scores(np.zeros(5, int), np.ones((4, 2)) / 2, np.zeros((5, 3), int))
    with pytest.raises(ValueError, match="at least 2 neighbours"):
        suspect_scores(np.zeros(5, int), np.ones((5, 2)) / 2, np.zeros((5, 1), int))


# -- the CLI ---------------------------------------------------------------------------------------------------


def test_cli_suspects_name_each_image_with_its_cluster_label_and_the_runs_confidence_in_it(results, capsys):
    assert main(["suspects", results.run_id, "--top", "3", "--json", "--runs-dir", str(results.store.root)]) == 0
    rows = json.loads(capsys.readouterr().out.splitlines()[-1])
    suspects = run_suspects(results)
    for row in rows:
        i = row["image"]
        assert row["name"] == f"#{i}" and row["cluster"] == results.assign[i]
        assert row["label"] == results.class_name(int(results.labels[i]))
        assert row["confidence"] == round(float(results.confidence[i]), 4)  # the run's, not 1 − it
        assert row["scores"] == {name: round(float(v[i]), 4) for name, v in suspects.scores.items()}
    assert main(["suspects", results.run_id, "--top", "3", "--runs-dir", str(results.store.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["IMAGE", "NAME", "CLUSTER", "LABEL", "CONFIDENCE", "WHY"] and len(lines) == 4
    assert lines[1].split()[:5] == [str(rows[0]["image"]), rows[0]["name"], str(rows[0]["cluster"]),
                                    rows[0]["label"], f"{rows[0]['confidence']:.3f}"]


def test_cli_tag_takes_images_by_name_as_well_as_by_index_and_tags_lists_their_names(results, capsys):
    root = str(results.store.root)
    assert main(["tag", results.run_id, "odd", "#5", "7", "--runs-dir", root]) == 0
    assert main(["tags", results.run_id, "--runs-dir", root]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines[-3:]] == [["IMAGE", "NAME", "TAGS"], ["5", "#5", "odd"],
                                                      ["7", "#7", "odd"]]
    for bad in ("#99999", "nosuch.png"):
        assert main(["tag", results.run_id, "odd", bad, "--runs-dir", root]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and ("no 99999" in err or "named 'nosuch.png'" in err), err


def test_cli_tags_suspects_and_a_tag_filtered_export(results, tmp_path, capsys):
    root = str(results.store.root)

    def cli(*args: str) -> tuple[int, str, str]:
        code = main([*args, "--runs-dir", root])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = cli("tag", results.run_id, "label: 7", "3")
    assert code == 0 and "tagged 1" in out
    code, out, _ = cli("tags", results.run_id, "--json")
    assert json.loads(out.splitlines()[-1]) == {"3": ["label: 7"]}
    code, out, _ = cli("suspects", results.run_id, "--top", "5", "--json")
    assert [row["image"] for row in json.loads(out.splitlines()[-1])] == run_suspects(results).ranking()[:5].tolist()
    code, _, err = cli("export", results.run_id, "--out", str(tmp_path), "--format", "csv", "--tag", "label: 7")
    assert code == 0, err
    lines = (tmp_path / "corrected_labels.csv").read_text().splitlines()
    assert lines[1:] == [f"3,,{results.assign[3]},3,3,7,7,1"]
    code, _, err = cli("tag", results.run_id, "label: seven", "3")
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    code, _, err = cli("suspects", results.run_id, "--by", "vibes")
    assert code == 2 and "choose from combined" in err

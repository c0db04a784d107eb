"""Honest time: a run's estimate from a few timed steps of every stage, fitting a run into a time budget, and the
whole run's progress and ETA weighted by each stage's cost."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from conftest import run_cli
from engine.errors import TrainingError
from engine.methods import FitContext, create_method
from engine.methods.context import StepLimitReached
from engine.methods.estimate import ESTIMATE_STEPS, FitEstimate, StageEstimate, estimate_fit
from engine.runs import RunRequest, RunStore
from engine.runs.budget import fit_to_budget
from engine.runs.progress import RunProgress

TINY_SCAN = {"pretext_epochs": 4, "cluster_epochs": 2, "selflabel_epochs": 1}


def test_a_step_limit_ends_every_train_epochs_stage_there_and_reports_its_full_length(digits, one_torch_thread):
    events = []
    context = FitContext("cpu", events.append, step_limit=2)
    try:
        create_method("scan", "fast", **TINY_SCAN).fit(digits, context)
    except StepLimitReached as stop:  # a stage still running a loop of its own is stopped instead
        assert stop.stage in ("cluster", "selflabel")
    except TrainingError:
        pass  # two steps a stage may leave a collapsed clustering
    pretext = [event for event in events if event.stage == "pretext"]
    assert pretext[0].kind == "stage" and pretext[0].total == 4 * (1797 // 256)  # the full stage's steps
    assert max(event.step for event in pretext if event.kind == "step") == 2
    assert pretext[-1].kind == "stage_done"
    assert not any(event.losses for event in pretext)  # no epoch finished: nothing to record


def test_a_stage_looping_on_its_own_is_stopped_past_the_step_limit():
    context = FitContext("cpu", step_limit=3)
    context.start_stage("cluster", 10)
    for step in (1, 2, 3):
        context.step("cluster", step, 10)
    with pytest.raises(StepLimitReached):
        context.step("cluster", 4, 10)
    with pytest.raises(ValueError, match="checkpoints"):
        FitContext("cpu", checkpoint_dir=".", step_limit=3)


def test_scans_paper_schedule_is_estimated_from_four_steps_of_each_stage(digits, one_torch_thread):
    estimate = estimate_fit(create_method("scan", "paper"), digits, "cpu")
    # paper: 500 pretext epochs of 3 batches of 512, 100 SCAN epochs of 14 batches of 128, 200 self-label
    # epochs of one batch of 1000; mining is one step, run whole
    assert {name: stage.steps for name, stage in estimate.stages.items()} == \
        {"pretext": 1500, "mine": 1, "cluster": 1400, "selflabel": 200}
    assert {name: stage.timed_steps for name, stage in estimate.stages.items()} == \
        {"pretext": ESTIMATE_STEPS - 1, "mine": 0, "cluster": ESTIMATE_STEPS - 1, "selflabel": ESTIMATE_STEPS - 1}
    assert all(stage.seconds > 0 for stage in estimate.stages.values())
    assert estimate.seconds == pytest.approx(sum(stage.seconds for stage in estimate.stages.values()))
    assert estimate.unmeasured == []


def test_cli_estimate_prints_seconds_per_stage_and_trains_nothing(tmp_path):
    runs = tmp_path / "runs"
    result = run_cli("train", "--method", "scan", "--dataset", "digits", "--device", "cpu", "--estimate",
                     "--json", "--runs-dir", str(runs), *[f"--set={k}={v}" for k, v in TINY_SCAN.items()])
    assert result.returncode == 0, result.stderr
    estimate = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(estimate["per_stage"]) == ["pretext", "mine", "cluster", "selflabel"]
    assert all(seconds > 0 for seconds in estimate["per_stage"].values()), estimate
    assert estimate["estimated_seconds"] == pytest.approx(sum(estimate["per_stage"].values()), abs=0.01)
    assert estimate["steps"] == {"pretext": 4 * 7, "mine": 1, "cluster": 2 * 14, "selflabel": 1 * 3}
    assert estimate["device"] == "cpu"
    assert not runs.exists() or RunStore(runs).list() == []


def scan_estimate(pretext: float, mine: float, cluster: float, selflabel: float) -> FitEstimate:
    return FitEstimate({"pretext": StageEstimate(pretext, 210, 3), "mine": StageEstimate(mine, 1, 0),
                        "cluster": StageEstimate(cluster, 420, 3), "selflabel": StageEstimate(selflabel, 30, 3)},
                       "cpu", 10.0)


def test_a_budget_scales_every_stage_by_one_factor_leaving_the_mining_as_it_is():
    request = RunRequest("scan", "digits", "fast", device="cpu")  # 30 pretext, 200 cluster, 10 self-label epochs
    estimate = scan_estimate(pretext=3000, mine=100, cluster=1500, selflabel=500)
    budgeted = fit_to_budget(request, 30, estimate)  # 1800 s: 1700 s for 5000 s of scalable stages
    assert budgeted.budget["factor"] == pytest.approx(1700 / 5000, abs=1e-4)
    assert budgeted.overrides == {"pretext_epochs": 10, "cluster_epochs": 68, "selflabel_epochs": 3}
    assert budgeted.budget["scaled"] == {"pretext_epochs": [30, 10], "cluster_epochs": [200, 68],
                                         "selflabel_epochs": [10, 3]}
    scaled = FitEstimate.from_json(budgeted.estimate)
    assert scaled.stages["mine"].seconds == 100 and scaled.stages["pretext"].seconds == pytest.approx(1000)
    assert scaled.seconds <= 30 * 60
    assert fit_to_budget(request, 120, estimate).budget["scaled"] == {}  # it fits: nothing changes


def test_a_budget_keeps_warmups_shorter_than_their_stage():
    request = RunRequest("digpro", "digits", "fast", device="cpu")  # 40 epochs, 2 of them warm-up
    estimate = FitEstimate({"train": StageEstimate(4000, 280, 3)}, "cpu", 1.0)
    assert fit_to_budget(request, 1, estimate).overrides == {"epochs": 1, "warmup_epochs": 0}


def test_train_with_a_budget_records_that_it_scaled_the_epochs_and_by_what_factor(tmp_path):
    # 0.06 s cannot hold 4 epochs of SimCLR steps on any CPU: every stage goes down to one epoch
    result = run_cli("train", "--method", "scan", "--dataset", "digits", "--device", "cpu", "--json",
                     "--budget-minutes", "0.001", "--runs-dir", str(tmp_path / "runs"),
                     *[f"--set={k}={v}" for k, v in TINY_SCAN.items()])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    budget = summary["budget"]
    assert budget["minutes"] == 0.001 and 0 <= budget["factor"] < 1
    assert budget["scaled"] == {"pretext_epochs": [4, 1], "cluster_epochs": [2, 1]}
    store = RunStore(tmp_path / "runs")
    record = store.get(summary["run_id"])
    assert record.config["pretext_epochs"] == 1 and record.config["cluster_epochs"] == 1
    assert record.summary["budget"] == budget
    budget_lines = [m["message"] for m in store.messages(record.id) if m["stage"] == "budget"]
    assert len(budget_lines) == 1 and "scaled by" in budget_lines[0] and "pretext_epochs 4→1" in budget_lines[0]
    assert "budget" in result.stderr
    # the budgeted estimate came with the run: it was not estimated again
    assert not [m for m in store.messages(record.id) if m["stage"] == "estimate"]


def test_progress_weights_each_stage_by_its_cost_and_the_eta_covers_the_whole_run():
    # issue 13's run: a pretext of 14 of 31 minutes
    estimate = scan_estimate(pretext=14 * 60, mine=60, cluster=10 * 60, selflabel=6 * 60)
    progress = RunProgress(estimate)
    progress.start("pretext", 210, now=0.0)
    assert progress.at(1, 210, now=4.0) == (pytest.approx(4 / (31 * 60), rel=0.01), pytest.approx(31 * 60 - 4,
                                                                                                 rel=0.01))
    progress.done("pretext", now=14 * 60)
    share, eta = progress.start("mine", 1, now=14 * 60)
    assert share == pytest.approx(14 / 31)  # not a quarter
    assert eta == pytest.approx(17 * 60)


def test_the_eta_moves_from_the_estimate_towards_the_measured_rate():
    estimate = scan_estimate(pretext=210, mine=1, cluster=420, selflabel=30)  # 1 s a step everywhere
    progress = RunProgress(estimate)
    progress.start("pretext", 210, now=0.0)
    progress.at(1, 210, now=1.0)  # the first step is a warm-up: not timed
    _, early = progress.at(4, 210, now=7.0)  # 2 s a step for 3 steps, against the estimate's 3 steps at 1 s
    _, late = progress.at(101, 210, now=201.0)  # 2 s a step for 100 steps
    assert early == pytest.approx(206 * 1.5 + 451)
    assert late == pytest.approx(109 * (3 + 200) / 103 + 451)
    share, _ = progress.at(101, 210, now=201.0)
    assert 0 < share < 1


def test_a_stage_done_before_a_resume_counts_as_done():
    progress = RunProgress(scan_estimate(pretext=600, mine=10, cluster=300, selflabel=90))
    share, eta = progress.start("cluster", 420, now=0.0)  # pretext and mine were finished before the resume
    assert share == pytest.approx(610 / 1000)
    assert eta == pytest.approx(390)


def test_a_stage_resumed_midway_starts_its_progress_and_eta_where_its_checkpoint_left_it():
    progress = RunProgress(scan_estimate(pretext=600, mine=10, cluster=300, selflabel=90))
    share, eta = progress.start("pretext", 210, now=0.0, first_step=105)  # half the pretext checkpointed
    assert share == pytest.approx(300 / 1000, rel=0.01)  # not back to 0 %
    assert eta == pytest.approx(700, rel=0.01)
    share, _ = progress.at(106, 210, now=3.0)  # its first step after the resume warms up: no jump either way
    assert share == pytest.approx(300 / 1000, abs=0.01)


def test_a_run_without_an_estimate_times_itself_first(tmp_path, one_torch_thread):
    from engine.runs import create_run, execute_run

    store = RunStore(tmp_path / "runs")
    run_id = create_run(store, RunRequest("kmeans", "digits", device="cpu"))
    summary = execute_run(store, run_id)
    lines = [m["message"] for m in store.messages(run_id) if m["stage"] == "estimate"]
    assert len(lines) == 1 and lines[0].startswith("estimated ") and "cluster" in lines[0]
    assert summary["estimated_seconds"] > 0
    assert [row["name"] for row in store.metrics(run_id)] == ["inertia"] * 10  # the estimate recorded nothing
    assert store.get(run_id).progress == 1.0


def test_the_pretrained_path_times_a_few_small_batches_of_extraction_and_caches_nothing(digits, tmp_path,
                                                                                         one_torch_thread):
    import torchvision

    from engine.data.cache import default_cache_dir
    from engine.methods.feature_source import ESTIMATE_BATCH

    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    images = dataclasses.replace(digits, images=digits.images[:40], labels=digits.labels[:40])
    method = create_method("kmeans", "fast", n_clusters=3, pretext_from="pretrained:resnet18-imagenet",
                           pretrained_weights=str(weights))
    estimate = estimate_fit(method, images, "cpu")
    assert list(estimate.stages) == ["features", "cluster"]
    assert estimate.stages["features"].steps == 40 // ESTIMATE_BATCH
    assert estimate.stages["features"].timed_steps == ESTIMATE_STEPS - 1 and estimate.stages["features"].seconds > 0
    assert not (default_cache_dir() / "features").exists()  # the repeated rows of an estimate are never cached


def test_a_budget_message_calls_an_estimate_within_rounding_of_the_budget_a_fit():
    from engine.runs.budget import budget_message

    budget = {"minutes": 0.5, "factor": 0.6, "scaled": {"epochs": (10, 6)}, "estimated_seconds": 48.0}
    assert "still over budget" not in budget_message({**budget, "budgeted_seconds": 30.4})  # shown as "30 s"
    assert "still over budget" in budget_message({**budget, "budgeted_seconds": 45.0})

"""Faults during training: a NaN loss, running out of GPU memory and a collapsed result each stop the run as
`failed` with a message that says what happened, and the queue goes on with the next run; an unreadable stage
checkpoint is named and its stage trained again on resume."""
from __future__ import annotations

import pytest
import torch

from conftest import HANG_GUARD_S
from engine.errors import UserError
from engine.methods import FitContext
from engine.methods.kmeans import KMeans
from engine.runs import JobManager, RunRequest, RunStore, execute_run
from engine.runs.execute import create_run

ONE_EPOCH_SCAN = {"pretext_epochs": 1, "cluster_epochs": 1, "selflabel_epochs": 1}


def run_two_in_a_row(tmp_path, monkeypatch, broken_fit):
    """Submit a kmeans run whose fit is ``broken_fit``, then a healthy one; returns both records. The fits of
    the runs' estimates (a few steps under a step limit) stay healthy."""
    healthy_fit = KMeans._fit
    calls = []

    def fit_once_broken(self, images, context):
        if context.step_limit is not None:
            return healthy_fit(self, images, context)
        calls.append(1)
        return broken_fit(self, images, context) if len(calls) == 1 else healthy_fit(self, images, context)

    monkeypatch.setattr(KMeans, "_fit", fit_once_broken)
    manager = JobManager(tmp_path / "runs")
    try:
        first = manager.submit(RunRequest("kmeans", "digits", device="cpu"))
        second = manager.submit(RunRequest("kmeans", "digits", device="cpu"))
        return manager.wait(first, timeout=HANG_GUARD_S), manager.wait(second, timeout=HANG_GUARD_S)
    finally:
        manager.shutdown()


def test_a_nan_loss_fails_the_run_naming_the_stage_and_step(tmp_path, monkeypatch):
    def nan_at_step_3(self, images, context):
        context.start_stage("cluster", 5)
        for step in range(1, 6):
            context.step("cluster", step, 5, {"inertia": float("nan") if step == 3 else 1.0})

    failed, next_run = run_two_in_a_row(tmp_path, monkeypatch, nan_at_step_3)
    assert failed.status == "failed"
    assert "cluster" in failed.error and "step 3" in failed.error and "nan" in failed.error
    assert next_run.status == "finished"


def test_out_of_gpu_memory_fails_the_run_with_advice_and_frees_the_cache(tmp_path, monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))

    def out_of_memory(self, images, context):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    failed, next_run = run_two_in_a_row(tmp_path, monkeypatch, out_of_memory)
    assert failed.status == "failed"
    assert "out of GPU memory" in failed.error and "smaller batch size" in failed.error
    assert emptied, "the CUDA cache was not released"
    assert next_run.status == "finished"


def test_a_collapsed_result_fails_the_run_naming_the_collapse(tmp_path, monkeypatch):
    healthy_fit = KMeans._fit

    def everything_in_one_cluster(self, images, context):
        healthy_fit(self, images, context)
        self.labels_[:] = 0

    # K-means, quick, stands in for a trained method here: its own big clusters are kept, not failed
    monkeypatch.setattr(KMeans, "can_collapse", True)
    failed, next_run = run_two_in_a_row(tmp_path, monkeypatch, everything_in_one_cluster)
    assert failed.status == "failed"
    assert "collapse" in failed.error.lower()
    assert next_run.status == "finished"


def truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_stage_checkpoint_is_named_and_its_stage_redone_on_resume(tmp_path, one_torch_thread):
    """A SCAN run stopped in its last stage, whose finished ``cluster`` checkpoint was then cut short."""
    store = RunStore(tmp_path / "runs")
    run_id = create_run(store, RunRequest("scan", "digits", overrides=ONE_EPOCH_SCAN, device="cpu"))
    execute_run(store, run_id)
    checkpoints = store.run_dir(run_id) / "checkpoints"
    (checkpoints / "selflabel.pt").unlink()  # as if stopped before the self-labelling stage finished
    truncate(checkpoints / "cluster.pt")
    rows_before = store.metrics(run_id)
    store.update(run_id, status="interrupted")
    store.requeue(run_id)

    execute_run(store, run_id)

    record = store.get(run_id)
    assert record.status == "finished", record.error
    named = [m["message"] for m in store.messages(run_id) if str(checkpoints / "cluster.pt") in m["message"]]
    assert len(named) == 1 and "unreadable" in named[0], store.messages(run_id)
    assert (checkpoints / "cluster.pt.unreadable").is_file()
    assert torch.load(checkpoints / "cluster.pt", weights_only=True)["done"]  # trained again and stored
    last_before = max(row["time"] for row in rows_before)
    redone = {row["stage"] for row in store.metrics(run_id) if row["time"] > last_before}
    assert redone == {"cluster", "selflabel"}  # the pretext and the mined neighbours were read back
    steps = [(row["stage"], row["step"], row["name"]) for row in store.metrics(run_id)]
    assert len(steps) == len(set(steps))  # a redone stage's values replace the first attempt's


def test_an_unreadable_checkpoint_of_another_run_is_a_user_error_naming_it(tmp_path):
    stored = tmp_path / "runs" / "earlier" / "checkpoints" / "pretext.pt"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    context = FitContext("cpu", checkpoint_dir=tmp_path / "runs" / "now" / "checkpoints", runs_root=tmp_path / "runs")
    with pytest.raises(UserError, match=f"{stored}.*unreadable"):
        context.load_stage("pretext", from_run="earlier")
    assert stored.is_file()  # another run's file is left as it is


def test_a_diverged_loss_names_the_methods_learning_rates(monkeypatch):
    from engine.data import load_dataset
    from engine.errors import LossDiverged
    from engine.methods import create_method
    from engine.methods.dec import Dec

    def diverge(self, images, context):
        context.start_stage("layerwise", 5)
        context.step("layerwise", 1, 5, {"layer_reconstruction": float("inf")})

    monkeypatch.setattr(Dec, "_fit", diverge)
    with pytest.raises(LossDiverged, match=r"became inf in stage 'layerwise' at step 1; try a smaller learning rate "
                                           r"\(this run's: pretrain_lr=0\.1, cluster_lr=0\.01; --set NAME=VALUE"):
        create_method("dec", "paper").fit(load_dataset("digits"), FitContext())

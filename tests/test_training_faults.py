"""Faults during training: a NaN loss, running out of GPU memory and a collapsed result each stop the run as
`failed` with a message that says what happened, and the queue goes on with the next run."""
from __future__ import annotations

import torch

from conftest import HANG_GUARD_S
from engine.methods.kmeans import KMeans
from engine.runs import JobManager, RunRequest


def run_two_in_a_row(tmp_path, monkeypatch, broken_fit):
    """Submit a kmeans run whose fit is ``broken_fit``, then a healthy one; returns both records."""
    healthy_fit = KMeans._fit
    calls = []

    def fit_once_broken(self, images, context):
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

    failed, next_run = run_two_in_a_row(tmp_path, monkeypatch, everything_in_one_cluster)
    assert failed.status == "failed"
    assert "collapse" in failed.error.lower()
    assert next_run.status == "finished"

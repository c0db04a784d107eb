"""A worker per device: a server's JobManager runs one worker thread per device named in ``DCE_WORKERS``, worker
processes (``python -m engine worker``) serve the runs queued for them, and either way each run is executed once
and a small run does not wait behind a long one (issue 13, bug 14: a 48-image kmeans waited 12 minutes behind a
scan run)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
import torch

from conftest import HANG_GUARD_S, ONE_THREAD, REPO, run_cli, wait_for
from engine.errors import UserError
from engine.methods.kmeans import KMeans
from engine.runs import JobManager, RunRequest, RunStore, create_run
from engine.runs.jobs import runs_on, worker_devices

QUICK_KMEANS = {"n_init": 1}


def starts(store: RunStore, run_id: str) -> list[str]:
    return [m["message"] for m in store.messages(run_id) if m["message"].startswith("started by")]


def test_dce_workers_names_one_worker_per_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert worker_devices("cuda:0, cuda:1,cpu") == ["cuda:0", "cuda:1", "cpu"]
    assert worker_devices("cpu,cpu") == ["cpu", "cpu"]
    assert worker_devices("") == ["cuda:0", "cuda:1", "cpu"]  # unset: each GPU, and the CPU for light runs
    monkeypatch.setenv("DCE_WORKERS", "cuda:1")
    assert worker_devices() == ["cuda:1"]
    with pytest.raises(UserError, match="no GPU cuda:2"):
        worker_devices("cuda:2")
    with pytest.raises(UserError, match="cpu or cuda:N"):
        worker_devices("gpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert worker_devices("") == ["cpu"]


def test_a_cpu_worker_beside_gpu_workers_takes_light_and_cpu_runs_only(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # runs may ask for a GPU
    store = RunStore(tmp_path / "runs")

    def record(method, device="auto", **overrides):
        return store.get(create_run(store, RunRequest(method, overrides=overrides, device=device)))

    kmeans, scan = record("kmeans"), record("scan")
    assert runs_on("cpu", kmeans, gpu_workers=True) and not runs_on("cpu", scan, gpu_workers=True)
    assert runs_on("cpu", scan, gpu_workers=False)  # no GPU worker: the CPU worker takes everything
    assert runs_on("cpu", record("scan", device="cpu"), gpu_workers=True)
    assert runs_on("cuda:0", scan, gpu_workers=True) and runs_on("cuda:0", kmeans, gpu_workers=True)
    assert not runs_on("cuda:0", record("scan", device="cpu"), gpu_workers=True)
    on_gpu_1 = record("scan", device="cuda:1")
    assert runs_on("cuda:1", on_gpu_1, True) and not runs_on("cuda:0", on_gpu_1, True)
    assert not runs_on("cpu", on_gpu_1, True)
    assert not KMeans.light_on_cpu(KMeans.Config(pretext_from="pretrained:resnet18"))


def test_a_run_asking_for_a_device_no_worker_runs_on_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the device exists; no worker serves it
    manager = JobManager(tmp_path / "runs", workers=["cpu"])
    try:
        with pytest.raises(UserError, match="no worker for device 'cuda:1'"):
            manager.submit(RunRequest("kmeans", device="cuda:1"))
        assert manager.store.list() == []
    finally:
        manager.shutdown()


@pytest.fixture
def gated_kmeans(monkeypatch):
    """K-means whose run of seed 1 holds its worker until the returned event is set: a long run, made long by the
    test rather than by the machine's speed."""
    gate = threading.Event()
    fit = KMeans._fit

    def held_fit(self, images, context):
        if self.config.seed == 1:
            assert gate.wait(HANG_GUARD_S)
        return fit(self, images, context)

    monkeypatch.setattr(KMeans, "_fit", held_fit)
    yield gate
    gate.set()


def test_a_small_run_does_not_wait_behind_a_long_one_with_two_cpu_workers(tmp_path, gated_kmeans):
    manager = JobManager(tmp_path / "runs", workers=["cpu", "cpu"])
    try:
        long = manager.submit(RunRequest("kmeans", overrides={**QUICK_KMEANS, "seed": 1}, device="cpu"))
        wait_for(lambda: manager.store.get(long).status == "running")
        small = manager.submit(RunRequest("kmeans", overrides=QUICK_KMEANS, device="cpu"))
        assert manager.wait(small, timeout=HANG_GUARD_S).status == "finished"
        assert manager.store.get(long).status == "running"
        gated_kmeans.set()
        assert manager.wait(long, timeout=HANG_GUARD_S).status == "finished"
        assert len(starts(manager.store, long)) == len(starts(manager.store, small)) == 1
    finally:
        manager.shutdown()


def test_one_worker_runs_the_small_run_after_the_long_one(tmp_path, gated_kmeans):
    manager = JobManager(tmp_path / "runs", workers=["cpu"])
    try:
        long = manager.submit(RunRequest("kmeans", overrides={**QUICK_KMEANS, "seed": 1}, device="cpu"))
        small = manager.submit(RunRequest("kmeans", overrides=QUICK_KMEANS, device="cpu"))
        wait_for(lambda: manager.store.get(long).status == "running")
        assert manager.store.get(small).status == "queued"
        gated_kmeans.set()
        assert manager.wait(small, timeout=HANG_GUARD_S).status == "finished"
        assert manager.store.get(long).finished <= manager.store.get(small).started
    finally:
        manager.shutdown()


def test_every_run_is_executed_once_by_one_of_two_workers(tmp_path):
    manager = JobManager(tmp_path / "runs", workers=["cpu", "cpu"])
    try:
        ids = [manager.submit(RunRequest("kmeans", overrides={**QUICK_KMEANS, "seed": seed}, device="cpu"))
               for seed in range(6)]
        assert all(manager.wait(run_id, timeout=HANG_GUARD_S).status == "finished" for run_id in ids)
        assert all(len(starts(manager.store, run_id)) == 1 for run_id in ids)
    finally:
        manager.shutdown()


def test_of_workers_adopting_one_run_at_the_same_moment_one_wins(tmp_path):
    store = RunStore(tmp_path / "runs")
    ids = [create_run(store, RunRequest("kmeans", device="cpu"), for_workers=True) for _ in range(10)]
    assert [r.id for r in store.queued_for_workers()] == ids
    barrier = threading.Barrier(4)
    won: list[str] = []

    def adopt_all() -> None:
        barrier.wait()
        won.extend(run_id for run_id in ids if store.adopt(run_id))

    threads = [threading.Thread(target=adopt_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD_S)
    assert sorted(won) == sorted(ids) and store.queued_for_workers() == []


def test_two_worker_processes_run_each_queued_run_once_and_stop_on_sigterm(tmp_path):
    runs = tmp_path / "runs"
    workers = [subprocess.Popen([sys.executable, "-m", "engine", "worker", "--device", "cpu", "--runs-dir", str(runs)],
                                cwd=REPO, stderr=subprocess.PIPE, text=True, env={**os.environ, **ONE_THREAD})
               for _ in range(2)]
    try:
        for worker in workers:  # both serve (and handle SIGTERM) before anything is queued: they race for each run
            assert any(line.startswith("worker on cpu serving") for line in iter(worker.stderr.readline, ""))
        queued = run_cli("train", "--method", "kmeans", "--device", "cpu", "--set", "n_init=1", "--queue",
                         "--runs-dir", str(runs))
        assert queued.returncode == 0, queued.stderr
        store = RunStore(runs)
        ids = [queued.stdout.strip()] + [
            create_run(store, RunRequest("kmeans", overrides={**QUICK_KMEANS, "seed": seed}, device="cpu"),
                       for_workers=True) for seed in range(1, 5)]
        wait_for(lambda: all(store.get(run_id).status == "finished" for run_id in ids))
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(HANG_GUARD_S) for worker in workers]
    assert codes == [128 + signal.SIGTERM] * 2
    for run_id in ids:
        adopted = [m["message"] for m in store.messages(run_id) if m["message"].startswith("adopted by the worker")]
        assert len(adopted) == 1 and len(starts(store, run_id)) == 1
        assert adopted[0].partition("process ")[2] == starts(store, run_id)[0].partition("process ")[2]  # the same


def test_a_run_in_a_worker_process_is_cancelled_from_another_process_and_the_worker_serves_on(tmp_path):
    runs = tmp_path / "runs"
    worker = subprocess.Popen([sys.executable, "-m", "engine", "worker", "--device", "cpu", "--runs-dir", str(runs)],
                              cwd=REPO, stderr=subprocess.PIPE, text=True, env={**os.environ, **ONE_THREAD})
    try:
        assert any(line.startswith("worker on cpu serving") for line in iter(worker.stderr.readline, ""))
        store = RunStore(runs)
        long = create_run(store, RunRequest("scan", overrides={"pretext_epochs": 500}, device="cpu"),
                          for_workers=True)
        wait_for(lambda: store.metrics(long))  # it trains, in the worker
        cancelled = run_cli("cancel", long, "--runs-dir", str(runs))
        assert cancelled.returncode == 0 and "asked to stop" in cancelled.stdout, cancelled.stderr
        assert wait_for(lambda: store.get(long).status != "running") and store.get(long).status == "cancelled"
        assert store.get(long).stage == "pretext"
        with pytest.raises(UserError, match="only a queued or running run can be cancelled"):
            JobManager(runs, workers=[]).cancel(long)
        small = create_run(store, RunRequest("kmeans", overrides=QUICK_KMEANS, device="cpu"), for_workers=True)
        wait_for(lambda: store.get(small).status == "finished")  # the worker goes on serving
        store.requeue(long, for_workers=True)  # resumed, the stop asked before does not stop it again
        wait_for(lambda: store.get(long).status == "running" and store.get(long).stage == "pretext"
                 and not store.stop_is_asked(long))
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(HANG_GUARD_S) == 128 + signal.SIGTERM
    assert store.get(long).status == "cancelled"  # SIGTERM cancels the resumed run in progress


def test_a_worker_with_until_idle_runs_the_queue_says_how_each_run_ended_and_exits(tmp_path):
    runs = tmp_path / "runs"
    store = RunStore(runs)
    ids = [create_run(store, RunRequest("kmeans", overrides={**QUICK_KMEANS, "seed": seed}, device="cpu"),
                      for_workers=True) for seed in range(2)]
    worker = run_cli("worker", "--device", "cpu", "--until-idle", "--runs-dir", str(runs))
    assert worker.returncode == 0, worker.stderr
    for run_id in ids:
        assert store.get(run_id).status == "finished"
        assert f"run {run_id}: started" in worker.stderr
        assert f"run {run_id}: finished · ACC {store.get(run_id).summary['acc']:.3f}" in worker.stderr

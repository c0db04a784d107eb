"""Background runs: queueing, live progress, cancel, and a run orphaned by a killed process resuming."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from conftest import HANG_GUARD_S, REPO, wait_for
from engine.errors import UserError
from engine.runs import JobManager, RunRequest, RunStore
from engine.runs.owner import Owner

TINY_SCAN = {"pretext_epochs": 3, "cluster_epochs": 2, "selflabel_epochs": 1}


@pytest.fixture
def manager(tmp_path):
    jobs = JobManager(tmp_path / "runs")
    yield jobs
    jobs.shutdown()


@pytest.fixture
def unreadable(tmp_path) -> str:
    """A folder spec whose 3 files are not images: it passes every check made before a run is queued (it exists,
    holds files, enough for K=2) and fails when the run loads it."""
    folder = tmp_path / "unreadable"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_text("not an image")
    return f"folder:{folder}"


def failing_run(manager: JobManager, unreadable: str) -> str:
    """The id of a run that failed (its folder holds no readable image)."""
    run_id = manager.submit(RunRequest("kmeans", unreadable, overrides={"n_clusters": 2}, device="cpu"))
    assert manager.wait(run_id, timeout=HANG_GUARD_S).status == "failed"
    return run_id


def test_a_queued_kmeans_run_finishes_with_scores_arrays_and_metrics(manager):
    run_id = manager.submit(RunRequest("kmeans", "digits", device="cpu"))
    record = manager.wait(run_id, timeout=HANG_GUARD_S)
    assert record.status == "finished", record.error
    assert record.summary["n_images"] == 1797 and 0.7 < record.summary["acc"] < 0.85
    assert len(manager.store.load_array(run_id, "assign")) == 1797
    assert manager.store.load_array(run_id, "probs").shape == (1797, 10)
    assert [row["name"] for row in manager.store.metrics(run_id)] == ["inertia"] * 10


def test_runs_execute_one_at_a_time_in_submission_order_and_a_resumed_run_waits_its_turn(manager):
    first = manager.submit(RunRequest("scan", "digits", overrides=TINY_SCAN, device="cpu"))
    second = manager.submit(RunRequest("kmeans", "digits", device="cpu"))
    wait_for(lambda: manager.store.get(first).status == "running")
    assert manager.store.get(second).status == "queued"
    assert manager.pending() == [first, second]
    manager.cancel(second)
    third = manager.submit(RunRequest("kmeans", "digits", device="cpu"))
    manager.resume(second)
    assert manager.pending() == [first, third, second]  # a resumed run waits behind those queued before it
    assert manager.wait(second, timeout=HANG_GUARD_S).status == "finished"
    assert manager.store.get(third).finished <= manager.store.get(second).started
    assert manager.store.get(first).finished <= manager.store.get(second).started


def test_cancel_stops_a_running_run_and_keeps_its_partial_metrics(manager):
    run_id = manager.submit(RunRequest("scan", "digits", overrides={"pretext_epochs": 200}, device="cpu"))
    wait_for(lambda: manager.store.metrics(run_id))  # at least one epoch recorded
    manager.cancel(run_id)
    record = manager.wait(run_id, timeout=HANG_GUARD_S)
    assert record.status == "cancelled"
    assert record.stage == "pretext"
    assert manager.store.metrics(run_id)


def test_cancel_of_a_queued_run_is_immediate(manager):
    blocker = manager.submit(RunRequest("scan", "digits", overrides={"pretext_epochs": 200}, device="cpu"))
    queued = manager.submit(RunRequest("kmeans", "digits", device="cpu"))
    manager.cancel(queued)
    assert manager.store.get(queued).status == "cancelled"
    manager.cancel(blocker)
    assert manager.wait(blocker, timeout=HANG_GUARD_S).status == "cancelled"
    assert manager.store.get(queued).started is None


def test_resuming_a_run_cancelled_while_queued_runs_it_once_and_the_queue_goes_on(manager):
    blocker = manager.submit(RunRequest("scan", "digits", overrides={"pretext_epochs": 200}, device="cpu"))
    queued = manager.submit(RunRequest("kmeans", "digits", device="cpu"))
    manager.cancel(queued)
    manager.resume(queued)  # its cancelled entry must not run, nor kill the worker
    manager.cancel(blocker)
    assert manager.wait(queued, timeout=HANG_GUARD_S).status == "finished"
    assert [row["name"] for row in manager.store.metrics(queued)] == ["inertia"] * 10  # executed once
    later = manager.submit(RunRequest("kmeans", "digits", device="cpu"))
    assert manager.wait(later, timeout=HANG_GUARD_S).status == "finished"


def test_resume_pressed_many_times_at_once_queues_the_run_once(manager, unreadable):
    run_id = failing_run(manager, unreadable)
    blocker = manager.submit(RunRequest("kmeans", "digits", overrides={"n_init": 5000}, device="cpu"))
    start, outcomes = threading.Barrier(8), []

    def press_resume() -> None:
        start.wait()
        try:
            outcomes.append(manager.resume(run_id))
        except UserError as exc:
            outcomes.append(exc)

    presses = [threading.Thread(target=press_resume) for _ in range(8)]
    for press in presses:
        press.start()
    for press in presses:
        press.join()
    assert outcomes.count(run_id) == 1, outcomes
    assert all("only interrupted, cancelled or failed runs resume" in str(o) for o in outcomes if o != run_id)
    manager.cancel(blocker)
    assert manager.wait(run_id, timeout=HANG_GUARD_S).status == "failed"
    assert [m["message"].split()[0] for m in manager.store.messages(run_id) if m["stage"] == "run"] == \
        ["started", "failed"] * 2  # run once when submitted, once when resumed
    later = manager.submit(RunRequest("kmeans", "digits", device="cpu"))
    assert manager.wait(later, timeout=HANG_GUARD_S).status == "finished"


def test_a_run_is_requeued_by_one_of_two_stores_sharing_its_folder(manager, unreadable):
    run_id = failing_run(manager, unreadable)
    first, second = RunStore(manager.store.root), RunStore(manager.store.root)
    first.requeue(run_id)
    with pytest.raises(UserError, match="is queued; only interrupted, cancelled or failed runs resume"):
        second.requeue(run_id)


def test_deleting_a_running_run_cancels_it_then_removes_it(manager):
    run_id = manager.submit(RunRequest("scan", "digits", overrides={"pretext_epochs": 200}, device="cpu"))
    wait_for(lambda: manager.store.metrics(run_id))
    manager.delete(run_id)
    assert all(r.id != run_id for r in manager.store.list())
    assert not manager.store.run_dir(run_id).exists()
    later = manager.submit(RunRequest("kmeans", "digits", device="cpu"))
    assert manager.wait(later, timeout=HANG_GUARD_S).status == "finished"


def test_deleting_a_queued_run_removes_it_without_waiting_for_the_queue(manager):
    blocker = manager.submit(RunRequest("scan", "digits", overrides={"pretext_epochs": 200}, device="cpu"))
    queued = manager.submit(RunRequest("kmeans", "digits", device="cpu"))
    wait_for(lambda: manager.store.get(blocker).status == "running")
    # given as long as the blocker could take: a delete that waited for the queue would return only after it
    manager.delete(queued, timeout=HANG_GUARD_S)
    assert manager.store.get(blocker).status == "running"
    assert [r.id for r in manager.store.list()] == [blocker]
    manager.cancel(blocker)


def test_cancelling_a_run_whose_process_died_records_it_interrupted(manager):
    run_id = manager.store.create_run("kmeans", "digits", {"n_clusters": 10})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    manager.store.update(run_id, status="running", owner=str(Owner(socket.gethostname(), int(dead.stdout), None)))
    manager.cancel(run_id)
    assert manager.store.get(run_id).status == "interrupted"


def test_runs_left_by_a_dead_server_say_whether_they_had_started(manager):
    """After a restart a queued run that never started is not told to 'continue from its last checkpoint'."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = str(Owner(socket.gethostname(), int(dead.stdout), None))
    running, queued = (manager.store.create_run("kmeans", "digits", {"n_clusters": 10}) for _ in range(2))
    manager.store.update(running, status="running", owner=owner)
    manager.store.update(queued, status="queued", owner=owner)
    assert sorted(manager.store.mark_orphans_interrupted()) == sorted([running, queued])
    assert "continue from its last checkpoint" in manager.store.get(running).error
    assert "stopped (a restart or a crash) before its turn came; resume it to start it" in \
        manager.store.get(queued).error
    assert str(dead.stdout.strip()) not in manager.store.get(running).error  # a process id tells a user nothing
    assert any(dead.stdout.strip() in m["message"] for m in manager.store.messages(running))  # the log keeps it


def test_resume_interrupted_queues_every_interrupted_run_again_oldest_first_and_nothing_else(manager):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = str(Owner(socket.gethostname(), int(dead.stdout), None))
    first, second, cancelled = (manager.store.create_run("kmeans", "digits", {"n_clusters": 10}) for _ in range(3))
    for run_id in (first, second):
        manager.store.update(run_id, status="running", owner=owner)
    manager.store.update(cancelled, status="cancelled")
    manager.store.mark_orphans_interrupted()
    assert manager.resume_interrupted() == [first, second]
    assert all(manager.wait(run_id, timeout=HANG_GUARD_S).status == "finished" for run_id in (first, second))
    assert manager.store.get(cancelled).status == "cancelled"  # stopped on purpose: left as it is
    assert manager.resume_interrupted() == []


def test_a_bad_request_is_rejected_before_it_is_queued(manager):
    with pytest.raises(UserError, match="at least 2"):
        manager.submit(RunRequest("kmeans", "digits", overrides={"n_clusters": 1}))
    with pytest.raises(UserError, match="unknown method"):
        manager.submit(RunRequest("nope", "digits"))
    assert manager.store.list() == []


def test_a_failing_run_is_recorded_failed_with_its_message(manager, unreadable):
    record = manager.store.get(failing_run(manager, unreadable))
    assert record.status == "failed" and "no readable image" in record.error


@pytest.mark.parametrize("dataset, says", [("nosuch", "unknown dataset"), ("folder:/definitely/not/here",
                                                                             "does not exist")])
def test_an_unknown_dataset_or_a_missing_folder_is_refused_before_anything_is_queued(manager, dataset, says):
    with pytest.raises(UserError, match=says):
        manager.submit(RunRequest("kmeans", dataset, device="cpu"))
    assert manager.store.list() == []


def test_a_run_killed_with_its_process_is_interrupted_then_resumes_from_its_checkpoints(tmp_path):
    runs = tmp_path / "runs"
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "train", "--method", "scan", "--dataset", "digits", "--device", "cpu",
         "--runs-dir", str(runs), "--set", "pretext_epochs=4", "--set", "cluster_epochs=30"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        store = RunStore(runs)
        # killed once the cluster stage has recorded an epoch and before its first checkpoint (a minute in)
        run = wait_for(lambda: next((r for r in store.list()
                                     if any(m["stage"] == "cluster" for m in store.metrics(r.id))), None))
        process.send_signal(signal.SIGKILL)
        process.wait(HANG_GUARD_S)
    finally:
        process.kill()
    assert store.get(run.id).status == "running"  # nobody has looked yet

    manager = JobManager(runs)
    try:
        assert manager.interrupted_at_start == [run.id]
        assert store.get(run.id).status == "interrupted"
        pretext_rows = [r for r in store.metrics(run.id) if r["stage"] == "pretext"]
        manager.resume(run.id)
        record = manager.wait(run.id, timeout=HANG_GUARD_S)
    finally:
        manager.shutdown()
    assert record.status == "finished", record.error
    assert [r for r in store.metrics(run.id) if r["stage"] == "pretext"] == pretext_rows  # pretext not redone
    assert any("resumed pretext" in m["message"] for m in store.messages(run.id))
    # the cluster stage had no checkpoint yet: it starts over, says so, and its curve holds each step once
    assert any(m["message"].startswith("cluster starts over") for m in store.messages(run.id))
    cluster_steps = [(r["step"], r["name"]) for r in store.metrics(run.id) if r["stage"] == "cluster"]
    assert len(cluster_steps) == len(set(cluster_steps))
    assert record.earlier_s > 0 and record.summary["seconds"] > record.finished - record.started  # both attempts
    assert np.load(runs / run.id / "neighbors.npy").shape == (1797, 20)


@pytest.fixture(scope="module")
def finished_scan(tmp_path_factory):
    """A runs folder holding one finished tiny SCAN run on digits; yields (manager, run id)."""
    jobs = JobManager(tmp_path_factory.mktemp("pretext-runs"))
    run_id = jobs.submit(RunRequest("scan", "digits", overrides=TINY_SCAN, device="cpu"))
    assert jobs.wait(run_id, timeout=HANG_GUARD_S).status == "finished"
    yield jobs, run_id
    jobs.shutdown()


def test_a_finished_pretext_is_reused_by_a_later_run(finished_scan):
    manager, first = finished_scan
    second = manager.submit(RunRequest("scan", "digits", overrides={**TINY_SCAN, "pretext_from": first},
                                       device="cpu"))
    record = manager.wait(second, timeout=HANG_GUARD_S)
    assert record.status == "finished", record.error
    assert not [r for r in manager.store.metrics(second) if r["stage"] == "pretext"]
    assert any(f"reused from run {first}" in m["message"] for m in manager.store.messages(second))


def test_reusing_a_pretext_of_another_dataset_is_refused_before_anything_is_queued(finished_scan, tmp_path):
    manager, first = finished_scan
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    runs_before = len(manager.store.list())
    with pytest.raises(UserError, match=f"run {first}'s pretext cannot be reused here: .*dataset digits "
                                        rf"\(this run: folder:{folder}\)"):
        manager.submit(RunRequest("scan", f"folder:{folder}", overrides={
            **TINY_SCAN, "pretext_from": first, "n_clusters": 2, "n_neighbors": 5}, device="cpu"))
    assert len(manager.store.list()) == runs_before


@pytest.mark.parametrize(("method", "pretext_from", "refusal"), [
    ("scan", "20990101-000000-scan-0000", "no run '20990101-000000-scan-0000'"),
    ("smc", "FIRST", "is a scan run, whose pretext smc cannot reuse"),
])
def test_a_pretext_run_that_cannot_lend_its_pretext_is_refused_at_submit(finished_scan, method, pretext_from,
                                                                          refusal):
    manager, first = finished_scan
    runs_before = len(manager.store.list())
    with pytest.raises(UserError, match=refusal):
        manager.submit(RunRequest(method, "digits", overrides={"pretext_from": pretext_from.replace("FIRST", first)},
                                  device="cpu"))
    assert len(manager.store.list()) == runs_before


def test_temi_reuses_scans_pretext_and_a_size_the_submit_cannot_judge_fails_the_run_naming_it(finished_scan):
    manager, first = finished_scan  # its image size was the dataset's own (8 px): only the fit knows that
    run_id = manager.submit(RunRequest("temi", "digits", overrides={"pretext_from": first, "cluster_epochs": 1},
                                       device="cpu", image_size=16))
    record = manager.wait(run_id, timeout=HANG_GUARD_S)
    assert record.status == "failed"
    assert f"run {first}'s pretext was trained with size 8 (this run: 16)" in record.error


def test_a_stage_resumed_from_its_checkpoint_forgets_only_the_values_recorded_after_it(tmp_path):
    from engine.methods import Event
    from engine.runs.execute import _Recorder

    store = RunStore(tmp_path / "runs")
    run_id = store.create_run("scan", "digits", {"n_clusters": 10})
    for step in (10, 20, 30):  # 30: after the checkpoint at 20, by the attempt that was killed
        store.add_metrics(run_id, "pretext", step, {"loss": float(step)})
    store.add_metrics(run_id, "mine", 1, {"neighbor_purity": 0.9})
    _Recorder(store, run_id, ["pretext", "mine"], None, threading.Event())(Event("stage", "pretext", 20, 40))
    assert [(r["stage"], r["step"]) for r in store.metrics(run_id)] == [("pretext", 10), ("pretext", 20),
                                                                        ("mine", 1)]
    assert not any("starts over" in m["message"] for m in store.messages(run_id))


def test_a_runs_time_counts_every_attempt(tmp_path):
    store = RunStore(tmp_path / "runs")
    run_id = store.create_run("kmeans", "digits", {"n_clusters": 10})
    assert store.claim(run_id)
    time.sleep(0.2)
    store.finish(run_id, "cancelled", "cancelled by the user")
    first = store.get(run_id).seconds
    store.requeue(run_id)
    assert store.get(run_id).earlier_s == pytest.approx(first)
    assert store.claim(run_id)
    time.sleep(0.1)
    store.finish(run_id, "finished")
    assert store.get(run_id).seconds >= first + 0.1

"""Several people on one server: browser sessions share the server's one JobManager and run list, and a queue of
many runs is worked off in order, each run recorded once."""
from __future__ import annotations

import os
import time

import pytest

from conftest import HANG_GUARD_S, open_page
from engine.runs import JobManager, RunRequest, RunStore

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


def session() -> AppTest:
    at = open_page("pages/train.py")
    next(box for box in at.selectbox if box.label == "Method").select("kmeans")
    return at.run()


def test_two_sessions_share_one_queue_and_each_sees_both_runs_once(tmp_path):
    alice, bob = session(), session()
    for at in (alice, bob):
        next(button for button in at.button if button.label == "Start").click()
        at.run()
        assert not at.exception and not at.error
    mine = {"alice": alice.session_state["run_id"], "bob": bob.session_state["run_id"]}
    assert mine["alice"] != mine["bob"]

    store = RunStore(os.environ["DCE_RUNS_DIR"])
    deadline = time.monotonic() + HANG_GUARD_S
    while any(store.get(run_id).status in ("queued", "running") for run_id in mine.values()):
        assert time.monotonic() < deadline, "the runs did not finish in time"
        time.sleep(0.2)
    assert [store.get(run_id).status for run_id in mine.values()] == ["finished", "finished"]
    assert store.get(mine["alice"]).finished <= store.get(mine["bob"]).started  # one queue, in order

    for name, at in (("alice", alice), ("bob", bob)):
        at.run()
        assert not at.exception
        listed = next(box for box in at.selectbox if box.label == "Run").options
        assert len(listed) == 2
        for run_id in mine.values():
            assert sum(label.startswith(run_id) for label in listed) == 1, listed
        assert at.session_state["run_id"] == mine[name]  # each session keeps its own selection


def test_twenty_queued_runs_all_finish_once_each_in_submission_order(tmp_path):
    manager = JobManager(tmp_path / "runs")
    try:
        ids = [manager.submit(RunRequest("kmeans", "digits", overrides={"n_init": 1, "seed": seed}, device="cpu"))
               for seed in range(20)]
        assert len(set(ids)) == 20
        records = [manager.wait(run_id, timeout=HANG_GUARD_S) for run_id in ids]
        assert manager.pending() == []
    finally:
        manager.shutdown()
    assert [r.status for r in records] == ["finished"] * 20, [r.error for r in records]
    assert sorted(r.id for r in manager.store.list()) == sorted(ids)  # each recorded once, nothing else
    for record in records:
        assert [row["name"] for row in manager.store.metrics(record.id)] == ["inertia"]  # one restart, once
        assert record.config["seed"] == ids.index(record.id)
    assert [r.id for r in sorted(records, key=lambda r: r.started)] == ids
    for earlier, later in zip(records, records[1:]):
        assert earlier.finished <= later.started  # one worker: a run starts when the previous one is done

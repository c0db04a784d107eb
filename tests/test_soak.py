"""Soak: two servers' JobManagers (two processes) and CLI runs share one runs folder while a seeded random user
submits, cancels, resumes and deletes runs, and one server is SIGKILLed midway. Afterwards every run is in one
stopped state, none is lost or duplicated, none ran twice at once, every worker still works and the database is
intact."""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import sqlite3
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from conftest import HANG_GUARD_S, REPO, run_cli
from engine.errors import UserError
from engine.runs import JobManager, RunRequest, RunStore

ACTIONS = 40
SEED = 12
STOPPED = {"finished", "failed", "cancelled", "interrupted"}
EXECUTION_ENDS = ("finished in", "failed in", "cancelled in", "interrupted:")
SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads or locks


def serve_manager(runs_dir: str, commands: Connection) -> None:
    """A server's JobManager in its own process, doing what the test sends: (verb, argument) → (outcome, value)."""
    import torch

    torch.set_num_threads(1)
    manager = JobManager(runs_dir)
    verbs = {
        "submit": lambda overrides: manager.submit(RunRequest("kmeans", "digits", overrides=overrides,
                                                              device="cpu")),
        "cancel": manager.cancel, "resume": manager.resume, "delete": manager.delete,
        "pending": lambda _: manager.pending(),
    }
    commands.send(("ok", manager.interrupted_at_start))
    while True:
        verb, argument = commands.recv()
        try:
            commands.send(("ok", verbs[verb](argument)))
        except UserError as exc:
            commands.send(("refused", str(exc)))


class ManagerProcess:
    """The test's handle on one :func:`serve_manager` process."""

    def __init__(self, runs_dir: Path) -> None:
        self.connection, child_end = SPAWN.Pipe()
        self.process = SPAWN.Process(target=serve_manager, args=(str(runs_dir), child_end), daemon=True)
        self.process.start()
        self.interrupted_at_start = self._reply()[1]

    def call(self, verb: str, argument: Any = None) -> tuple[str, Any]:
        """("ok", value) or ("refused", the UserError's message)."""
        self.connection.send((verb, argument))
        return self._reply()

    def _reply(self) -> tuple[str, Any]:
        assert self.connection.poll(HANG_GUARD_S), "the manager process did not answer"
        return self.connection.recv()

    def kill(self) -> None:
        self.process.kill()
        self.process.join()


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def overlapping_executions(store: RunStore, run_id: str) -> int:
    """How often the run was started while an earlier start of it had not ended, from its ``run`` log."""
    overlaps, running = 0, False
    for message in (m["message"] for m in store.messages(run_id) if m["stage"] == "run"):
        if message.startswith("started by"):
            overlaps += running
            running = True
        elif message.startswith(EXECUTION_ENDS):
            running = False
    return overlaps


def test_two_servers_and_the_cli_sharing_a_folder_through_random_actions_and_a_kill(tmp_path):
    runs = tmp_path / "runs"
    store = RunStore(runs)
    rng = random.Random(SEED)
    servers = [ManagerProcess(runs), ManagerProcess(runs)]
    seen: set[str] = set()
    deleted: set[str] = set()
    clis: list[subprocess.Popen] = []
    try:
        for step in range(ACTIONS):
            if step == ACTIONS // 2:
                servers[1].kill()
                servers[1] = ManagerProcess(runs)
            seen.update(r.id for r in store.list())
            server, ids = rng.choice(servers), sorted(seen - deleted)
            action = rng.choice(["submit", "submit", "submit", "cancel", "cancel", "resume", "resume", "delete",
                                 "cli train", "cli resume"])
            n_init = rng.choice([5, 30, 200])  # restarts: from a blink to a few seconds, each one cancellable
            if action == "submit":
                outcome, run_id = server.call("submit", {"seed": step, "n_init": n_init})
                assert outcome == "ok", run_id
                seen.add(run_id)
            elif action == "cli train":
                clis.append(cli("train", "--method", "kmeans", "--dataset", "digits", "--device", "cpu",
                                "--set", f"n_init={n_init}", "--seed", str(step), "--runs-dir", str(runs),
                                "--json"))
            elif ids and action == "cli resume":
                clis.append(cli("resume", rng.choice(ids), "--runs-dir", str(runs)))
            elif ids:  # cancel, resume or delete: refusals (a finished run does not resume, …) are expected
                run_id = rng.choice(ids)
                if server.call(action, run_id)[0] == "ok" and action == "delete":
                    deleted.add(run_id)
            time.sleep(rng.uniform(0, 0.3))

        for process in clis:
            stdout, stderr = process.communicate(timeout=HANG_GUARD_S)
            assert process.returncode in (0, 1, 2), stderr
            assert len([line for line in stderr.splitlines() if line.startswith("error:")]) <= 1, stderr
            assert "Traceback" not in stderr, stderr
            if stdout.strip().startswith("{"):
                seen.add(json.loads(stdout.splitlines()[-1])["run_id"])
        deadline = time.monotonic() + HANG_GUARD_S
        while any(server.call("pending")[1] for server in servers):
            assert time.monotonic() < deadline, "a server's queue never drained"
            time.sleep(0.5)

        listed = run_cli("runs", "--json", "--runs-dir", str(runs))
        assert listed.returncode == 0, listed.stderr
        final = {run["run_id"]: run["status"] for run in json.loads(listed.stdout)}
        assert set(final) == seen - deleted  # none lost, none extra
        assert len(final) == len(json.loads(listed.stdout))  # none listed twice
        assert set(final.values()) <= STOPPED, final
        assert {run_id: overlapping_executions(store, run_id) for run_id in final} == dict.fromkeys(final, 0)

        for server in servers:  # every worker survived the soak
            outcome, run_id = server.call("submit", {"n_init": 5})
            assert outcome == "ok", run_id
            deadline = time.monotonic() + HANG_GUARD_S
            while store.get(run_id).status not in STOPPED:
                assert time.monotonic() < deadline, "a worker no longer runs what it is given"
                time.sleep(0.2)
            assert store.get(run_id).status == "finished", store.get(run_id).error
    finally:
        for process in clis:
            process.kill()
        for server in servers:
            server.kill()
    with sqlite3.connect(store.db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

"""The run store: one SQLite file (runs, metrics) plus one folder per run for its arrays and checkpoints.

SQLite runs in WAL mode and every write is one short transaction, so the job thread, the UI's polling and a CLI
in another process can share a store. Arrays are written to a temporary file and renamed into place
(:mod:`engine.atomic`), so a half-written file is never taken for a finished one.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..atomic import atomic_path
from ..errors import UserError

STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, method TEXT NOT NULL, dataset TEXT NOT NULL, preset TEXT, config TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL,
    error TEXT, device TEXT, stage TEXT, stage_index INTEGER DEFAULT 0, progress REAL DEFAULT 0, eta_s REAL,
    summary TEXT, owner TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, stage TEXT NOT NULL, step INTEGER NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id);
CREATE TABLE IF NOT EXISTS messages (
    run_id TEXT NOT NULL, stage TEXT, message TEXT NOT NULL, time REAL NOT NULL
);
"""


def default_runs_dir() -> Path:
    return Path(os.environ.get("DCE_RUNS_DIR", "runs"))


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
    """Whether the process that claimed a run still exists (only decidable on this host)."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's run: not ours to judge
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunRecord:
    """One row of ``runs`` with its JSON columns decoded."""

    id: str
    method: str
    dataset: str
    preset: str | None
    config: dict[str, Any]
    options: dict[str, Any]
    status: str
    created: float
    started: float | None
    finished: float | None
    error: str | None
    device: str | None
    stage: str | None
    stage_index: int
    progress: float
    eta_s: float | None
    summary: dict[str, Any]
    owner: str | None

    @property
    def seconds(self) -> float | None:
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started


class RunStore:
    """Runs and their metrics under ``root`` (``root/runs.sqlite`` and ``root/<run_id>/``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_runs_dir()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the runs folder {self.root}: {exc.strerror}") from exc
        self.db_path = self.root / "runs.sqlite"
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.row_factory = sqlite3.Row
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    # -- runs --------------------------------------------------------------------------------------------------
    def create_run(self, method: str, dataset: str, config: dict[str, Any], preset: str | None = None,
                   options: dict[str, Any] | None = None) -> str:
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{method}-{secrets.token_hex(2)}"
        with self._connect() as db:
            db.execute("INSERT INTO runs (id, method, dataset, preset, config, options, status, created, owner) "
                       "VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                       (run_id, method, dataset, preset, json.dumps(config), json.dumps(options or {}),
                        time.time(), _owner()))
        self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        return run_id

    def update(self, run_id: str, **fields: Any) -> None:
        """Set columns of one run (JSON-encoding ``summary``)."""
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown status {fields['status']!r}")
        if "summary" in fields:
            fields["summary"] = json.dumps(fields["summary"])
        columns = ", ".join(f"{name} = ?" for name in fields)
        with self._connect() as db:
            db.execute(f"UPDATE runs SET {columns} WHERE id = ?", (*fields.values(), run_id))

    def claim(self, run_id: str, device: str) -> None:
        """Mark a run as running in this process (so a restart can tell it was orphaned)."""
        self.update(run_id, status="running", started=time.time(), finished=None, error=None, device=device,
                    owner=_owner())

    def requeue(self, run_id: str) -> None:
        """Queue a stopped run again under this process (resume)."""
        self.update(run_id, status="queued", error=None, finished=None, owner=_owner())

    def get(self, run_id: str) -> RunRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UserError(f"no run {run_id!r} in {self.root}")
        return self._record(row)

    def list(self, status: str | None = None) -> list[RunRecord]:
        """All runs, newest first (optionally only those with ``status``)."""
        query, args = "SELECT * FROM runs", ()
        if status is not None:
            query, args = query + " WHERE status = ?", (status,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created DESC, id DESC", args).fetchall()
        return [self._record(row) for row in rows]

    @staticmethod
    def _record(row: sqlite3.Row) -> RunRecord:
        values = dict(row)
        values["config"] = json.loads(values["config"])
        values["options"] = json.loads(values["options"] or "{}")
        values["summary"] = json.loads(values["summary"]) if values["summary"] else {}
        return RunRecord(**values)

    def mark_orphans_interrupted(self) -> list[str]:
        """Runs left ``running``/``queued`` by a process that no longer exists become ``interrupted``."""
        orphans = [run.id for run in self.list() if run.status in ACTIVE and not _owner_alive(run.owner)]
        for run_id in orphans:
            self.update(run_id, status="interrupted", finished=time.time(),
                        error="the process running it stopped (server restart?); resume it to continue from "
                              "its last checkpoint")
        return orphans

    def delete(self, run_id: str) -> None:
        """Remove a run that is not queued or running: its rows and its folder."""
        record = self.get(run_id)
        if record.status in ACTIVE:
            raise UserError(f"run {run_id} is {record.status}; cancel it before deleting it")
        with self._connect() as db:
            for table, column in (("metrics", "run_id"), ("messages", "run_id"), ("runs", "id")):
                db.execute(f"DELETE FROM {table} WHERE {column} = ?", (run_id,))
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    # -- metrics and messages -----------------------------------------------------------------------------------
    def add_metrics(self, run_id: str, stage: str, step: int, values: dict[str, float]) -> None:
        now = time.time()
        with self._connect() as db:
            db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
                           [(run_id, stage, step, name, value, now) for name, value in values.items()])

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        """Every recorded value of a run: dicts with stage, step, name, value, time, in recording order."""
        with self._connect() as db:
            rows = db.execute("SELECT stage, step, name, value, time FROM metrics WHERE run_id = ? ORDER BY rowid",
                              (run_id,)).fetchall()
        return [dict(row) for row in rows]

    def add_message(self, run_id: str, stage: str | None, message: str) -> None:
        with self._connect() as db:
            db.execute("INSERT INTO messages VALUES (?, ?, ?, ?)", (run_id, stage, message, time.time()))

    def messages(self, run_id: str) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT stage, message, time FROM messages WHERE run_id = ? ORDER BY rowid",
                              (run_id,)).fetchall()
        return [dict(row) for row in rows]

    # -- files --------------------------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def save_array(self, run_id: str, name: str, array: np.ndarray) -> Path:
        """Write ``<run>/<name>.npy`` atomically; a full disk raises DiskFullError and keeps the earlier file."""
        path = self.run_dir(run_id) / f"{name}.npy"
        with atomic_path(path) as tmp:
            np.save(tmp, array)
        return path

    def load_array(self, run_id: str, name: str) -> np.ndarray | None:
        path = self.run_dir(run_id) / f"{name}.npy"
        return np.load(path) if path.exists() else None

"""The run store: one SQLite file (runs, metrics) plus one folder per run for its arrays and checkpoints.

SQLite runs in WAL mode and every write is one short transaction, so the job thread, the UI's polling and a CLI
in another process can share a store. Arrays are written to a temporary file and renamed into place
(:mod:`engine.atomic`), so a half-written file is never taken for a finished one.

A run's status changes by conditional UPDATEs: queued → running only in the process that queued it (its
``owner``: host, pid and start time), stopped → queued once however many processes resume it at the same moment,
queued/running → interrupted only while its owner is the process that died. A run queued for worker processes
(``python -m engine worker``) has no owner until one worker adopts it, by one conditional UPDATE that only one of
several racing workers wins. So two processes never run one run at once. Each start and end of an execution is
logged in the run's messages (stage ``run``) in the same transaction.

Tags a person puts on a run's images ("mislabelled", "duplicate", free text) are rows of ``tags``, one per
(run, image, tag): adding one twice keeps one row, so sessions tagging the same images at the same moment agree,
and they last as long as the run.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..atomic import atomic_path
from ..errors import UserError
from ..npy import load_npy
from .owner import Owner

STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")
RESUMABLE = ("interrupted", "cancelled", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, method TEXT NOT NULL, dataset TEXT NOT NULL, preset TEXT, config TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL,
    error TEXT, device TEXT, stage TEXT, stage_index INTEGER DEFAULT 0, progress REAL DEFAULT 0, eta_s REAL,
    summary TEXT, owner TEXT, stop_asked REAL, earlier_s REAL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, stage TEXT NOT NULL, step INTEGER NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id);
CREATE TABLE IF NOT EXISTS messages (
    run_id TEXT NOT NULL, stage TEXT, message TEXT NOT NULL, time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    run_id TEXT NOT NULL, image INTEGER NOT NULL, tag TEXT NOT NULL, time REAL NOT NULL,
    PRIMARY KEY (run_id, image, tag)
);
"""
TAG_MAX_CHARS = 80


def default_runs_dir() -> Path:
    return Path(os.environ.get("DCE_RUNS_DIR", "runs"))


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
    stop_asked: float | None = None  # when someone asked the process running it to stop (:meth:`RunStore.ask_to_stop`)
    earlier_s: float | None = 0.0  # the seconds of its attempts before the last one (a run stopped and resumed)

    @property
    def seconds(self) -> float | None:
        """Its time running, over every attempt."""
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started + (self.earlier_s or 0.0)


class RunStore:
    """Runs and their metrics under ``root`` (``root/runs.sqlite`` and ``root/<run_id>/``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_runs_dir()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the runs folder {self.root}: {exc.strerror}") from exc
        self.db_path = self.root / "runs.sqlite"
        self._use_wal()
        with self._connect() as db:
            db.executescript(_SCHEMA)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(runs)")}
            for column, kind in (("stop_asked", "REAL"), ("earlier_s", "REAL DEFAULT 0")):
                if column not in columns:  # a store made before the column existed
                    db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")

    def _use_wal(self) -> None:
        """Put the database in WAL mode, which the file keeps. Switching needs a moment alone with the file, and
        SQLite answers "locked" at once rather than waiting while another process writes (seen with two training
        processes opening one store), so it is retried; a store left in the default mode still works."""
        for attempt in range(50):
            db = sqlite3.connect(self.db_path, timeout=30)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(0.05 * (attempt + 1))
            finally:
                db.close()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            db.row_factory = sqlite3.Row
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    # -- runs --------------------------------------------------------------------------------------------------
    def create_run(self, method: str, dataset: str, config: dict[str, Any], preset: str | None = None,
                   options: dict[str, Any] | None = None, for_workers: bool = False) -> str:
        """Record a queued run, owned by this process, or by none when it is queued ``for_workers``."""
        while True:  # ids made in the same second share all but 4 hex digits: draw again on a clash
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{method}-{secrets.token_hex(2)}"
            try:
                with self._connect() as db:
                    db.execute("INSERT INTO runs (id, method, dataset, preset, config, options, status, created, "
                               "owner) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                               (run_id, method, dataset, preset, json.dumps(config), json.dumps(options or {}),
                                time.time(), None if for_workers else str(Owner.current())))
                break
            except sqlite3.IntegrityError:
                continue
        self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        return run_id

    def update(self, run_id: str, **fields: Any) -> None:
        """Set columns of one run (JSON-encoding ``summary``)."""
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown status {fields['status']!r}")
        with self._connect() as db:
            self._set(db, run_id, fields)

    @staticmethod
    def _set(db: sqlite3.Connection, run_id: str, fields: dict[str, Any]) -> None:
        if "summary" in fields:
            fields["summary"] = json.dumps(fields["summary"])
        columns = ", ".join(f"{name} = ?" for name in fields)
        db.execute(f"UPDATE runs SET {columns} WHERE id = ?", (*fields.values(), run_id))

    def claim(self, run_id: str) -> bool:
        """Mark a run this process queued as running here; False (and nothing changed) when it is not queued by
        this process any more: cancelled, deleted, or resumed by another process since."""
        me = str(Owner.current())
        with self._connect() as db:
            claimed = db.execute("UPDATE runs SET status = 'running', started = ?, finished = NULL, error = NULL, "
                                 "stop_asked = NULL "
                                 "WHERE id = ? AND status = 'queued' AND owner = ?",
                                 (time.time(), run_id, me)).rowcount == 1
            if claimed:
                self._log(db, run_id, f"started by {Owner.current().described()}")
        return claimed

    def finish(self, run_id: str, status: str, error: str | None = None, **fields: Any) -> None:
        """Record how a run this process ran ended: ``finished``, ``failed``, ``cancelled`` or ``interrupted``."""
        if status not in STATUSES or status in ACTIVE:
            raise ValueError(f"{status!r} is not how a run ends")
        with self._connect() as db:
            self._set(db, run_id, {"status": status, "finished": time.time(), "error": error, **fields})
            self._log(db, run_id, f"{status} in {Owner.current().described()}")

    def requeue(self, run_id: str, for_workers: bool = False) -> None:
        """Queue a stopped run again under this process (resume), or for worker processes; a run whose process
        died counts as stopped.

        Raises:
            UserError: the run is queued, running or finished; of several processes resuming one run at once,
                all but one get this.
        """
        self.interrupt_if_orphaned(run_id)
        with self._connect() as db:
            requeued = db.execute(  # the attempt that stopped adds its time to ``earlier_s``
                f"UPDATE runs SET status = 'queued', earlier_s = COALESCE(earlier_s, 0) + "
                f"COALESCE(finished - started, 0), started = NULL, error = NULL, finished = NULL, owner = ? "
                f"WHERE id = ? AND status IN {RESUMABLE}",
                (None if for_workers else str(Owner.current()), run_id)).rowcount == 1
        if not requeued:
            raise UserError(f"run {run_id} is {self.get(run_id).status}; only interrupted, cancelled or failed "
                            "runs resume")

    def queued_for_workers(self) -> list[RunRecord]:
        """The runs queued for worker processes that no worker has adopted yet, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM runs WHERE status = 'queued' AND owner IS NULL "
                              "ORDER BY created, id").fetchall()
        return [self._record(row) for row in rows]

    def adopt(self, run_id: str) -> bool:
        """Make a run queued for worker processes this process's, to :meth:`claim` and execute; False (nothing
        changed) when another worker adopted it first or it was cancelled."""
        me = str(Owner.current())
        with self._connect() as db:
            adopted = db.execute("UPDATE runs SET owner = ? WHERE id = ? AND status = 'queued' AND owner IS NULL",
                                 (me, run_id)).rowcount == 1
            if adopted:
                self._log(db, run_id, f"adopted by the worker {Owner.current().described()}")
        return adopted

    def cancel_queued(self, run_id: str) -> bool:
        """Cancel a run that waits in a queue (of any process); False when it is not queued (any more)."""
        with self._connect() as db:
            cancelled = db.execute("UPDATE runs SET status = 'cancelled', finished = ?, error = ? "
                                   "WHERE id = ? AND status = 'queued'",
                                   (time.time(), "cancelled by the user", run_id)).rowcount == 1
            if cancelled:
                self._log(db, run_id, "cancelled while queued")
        return cancelled

    def ask_to_stop(self, run_id: str) -> bool:
        """Ask whichever process runs a run (a worker process, another server) to cancel it at its next step:
        :meth:`stop_is_asked` is what that process polls. False when the run is not running."""
        with self._connect() as db:
            asked = db.execute("UPDATE runs SET stop_asked = ? WHERE id = ? AND status = 'running'",
                               (time.time(), run_id)).rowcount == 1
            if asked:
                self._log(db, run_id, f"asked to stop by {Owner.current().described()}")
        return asked

    def stop_is_asked(self, run_id: str) -> bool:
        """Whether :meth:`ask_to_stop` was called since the run last started."""
        with self._connect() as db:
            row = db.execute("SELECT stop_asked FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row is not None and row["stop_asked"] is not None

    def interrupt(self, run_id: str, owner: Owner, reason: str, stopped_at: float | None = None) -> bool:
        """Mark a run still queued or running under ``owner`` interrupted, as stopped at ``stopped_at`` (default:
        now); False when it is not (any more)."""
        with self._connect() as db:
            interrupted = db.execute(
                f"UPDATE runs SET status = 'interrupted', finished = ?, error = ? "
                f"WHERE id = ? AND status IN {ACTIVE} AND owner = ?",
                (stopped_at or time.time(), reason, run_id, str(owner))).rowcount == 1
            if interrupted:
                self._log(db, run_id, f"interrupted: {reason} ({owner.described()})")
        return interrupted

    def interrupt_if_orphaned(self, run_id: str) -> bool:
        """Mark a queued or running run interrupted when the process that owns it no longer exists."""
        record = self.get(run_id)
        if record.status not in ACTIVE or not record.owner:
            return False
        owner = Owner.parse(record.owner)
        reason = ("the app or worker that queued it stopped (a restart or a crash) before its turn came; resume it "
                  "to start it" if record.status == "queued" else
                  "the app or worker running it stopped (a restart or a crash); resume it to continue from its last "
                  "checkpoint")
        return not owner.alive() and self.interrupt(run_id, owner, reason, self._last_sign_of_life(record))

    def _last_sign_of_life(self, record: RunRecord) -> float | None:
        """When a run whose process died last recorded anything (a loss, a message) in its last attempt: its time
        ran until about then, not until someone noticed."""
        if record.started is None:
            return None
        with self._connect() as db:
            row = db.execute("SELECT MAX(t) FROM (SELECT MAX(time) AS t FROM metrics WHERE run_id = ? UNION ALL "
                             "SELECT MAX(time) FROM messages WHERE run_id = ?)", (record.id, record.id)).fetchone()
        return max(row[0], record.started) if row[0] is not None else record.started

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
        return [run.id for run in self.list() if run.status in ACTIVE and self.interrupt_if_orphaned(run.id)]

    def delete(self, run_id: str) -> None:
        """Remove a run that is not queued or running (one whose process died counts as stopped): its rows and
        its folder."""
        self.interrupt_if_orphaned(run_id)
        with self._connect() as db:
            deleted = db.execute(f"DELETE FROM runs WHERE id = ? AND status NOT IN {ACTIVE}", (run_id,)).rowcount
            if deleted:
                db.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
                db.execute("DELETE FROM messages WHERE run_id = ?", (run_id,))
                db.execute("DELETE FROM tags WHERE run_id = ?", (run_id,))
        if not deleted:
            record = self.get(run_id)
            where = f" (in {Owner.parse(record.owner).described()})" if record.owner else ""
            raise UserError(f"run {run_id} is {record.status}{where}; cancel it before deleting it")
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    # -- metrics and messages -----------------------------------------------------------------------------------
    def add_metrics(self, run_id: str, stage: str, step: int, values: dict[str, float]) -> None:
        now = time.time()
        with self._connect() as db:
            db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
                           [(run_id, stage, step, name, value, now) for name, value in values.items()])

    def drop_metrics_after(self, run_id: str, stage: str, step: int) -> int:
        """Forget a stage's values recorded after ``step``: a resumed stage records them again from its checkpoint
        (at ``step``); returns how many rows went."""
        with self._connect() as db:
            return db.execute("DELETE FROM metrics WHERE run_id = ? AND stage = ? AND step > ?",
                              (run_id, stage, step)).rowcount

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        """Every recorded value of a run: dicts with stage, step, name, value, time, in recording order."""
        with self._connect() as db:
            rows = db.execute("SELECT stage, step, name, value, time FROM metrics WHERE run_id = ? ORDER BY rowid",
                              (run_id,)).fetchall()
        return [dict(row) for row in rows]

    @staticmethod
    def _log(db: sqlite3.Connection, run_id: str, message: str) -> None:
        """A ``run``-stage message in the caller's transaction: the run's start/end log."""
        db.execute("INSERT INTO messages VALUES (?, 'run', ?, ?)", (run_id, message, time.time()))

    def add_message(self, run_id: str, stage: str | None, message: str) -> None:
        with self._connect() as db:
            db.execute("INSERT INTO messages VALUES (?, ?, ?, ?)", (run_id, stage, message, time.time()))

    def messages(self, run_id: str) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT stage, message, time FROM messages WHERE run_id = ? ORDER BY rowid",
                              (run_id,)).fetchall()
        return [dict(row) for row in rows]

    # -- tags ---------------------------------------------------------------------------------------------------
    def add_tag(self, run_id: str, images: Sequence[int], tag: str, replace_prefix: str | None = None) -> int:
        """Tag ``images`` (indices into the run's images) with ``tag``; returns how many were not tagged so yet.

        ``replace_prefix``: first drop these images' tags that start with it (in the same transaction), so an
        image keeps one tag of that kind (a corrected label).

        Raises:
            UserError: no such run, an empty or over-long tag, or a negative image index.
        """
        tag, rows = check_tag(tag), _image_rows(images)
        now = time.time()
        with self._connect() as db:
            if db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise UserError(f"no run {run_id!r} in {self.root}")
            if replace_prefix:
                db.executemany("DELETE FROM tags WHERE run_id = ? AND image = ? AND substr(tag, 1, ?) = ? "
                               "AND tag != ?",
                               [(run_id, image, len(replace_prefix), replace_prefix, tag) for image in rows])
            return db.executemany("INSERT OR IGNORE INTO tags VALUES (?, ?, ?, ?)",
                                  [(run_id, image, tag, now) for image in rows]).rowcount

    def remove_tag(self, run_id: str, images: Sequence[int], tag: str) -> int:
        """Take ``tag`` off ``images``; returns how many carried it."""
        tag, rows = check_tag(tag), _image_rows(images)
        with self._connect() as db:
            return db.executemany("DELETE FROM tags WHERE run_id = ? AND image = ? AND tag = ?",
                                  [(run_id, image, tag) for image in rows]).rowcount

    def image_tags(self, run_id: str) -> dict[int, list[str]]:
        """Image index → its tags, in the order they were added; untagged images are absent."""
        with self._connect() as db:
            rows = db.execute("SELECT image, tag FROM tags WHERE run_id = ? ORDER BY time, rowid",
                              (run_id,)).fetchall()
        tags: dict[int, list[str]] = {}
        for image, tag in rows:
            tags.setdefault(int(image), []).append(tag)
        return tags

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
        return load_npy(path) if path.exists() else None


def check_tag(tag: str) -> str:
    """``tag`` with its whitespace collapsed; a UserError when that leaves nothing, more than
    ``TAG_MAX_CHARS`` characters, or a control character."""
    cleaned = " ".join(str(tag).split())
    if not cleaned:
        raise UserError("a tag needs some text, e.g. mislabelled or duplicate")
    if len(cleaned) > TAG_MAX_CHARS:
        raise UserError(f"a tag has at most {TAG_MAX_CHARS} characters; {cleaned[:20]!r}… has {len(cleaned)}")
    if any(not ch.isprintable() for ch in cleaned):
        raise UserError(f"a tag cannot hold control characters: {cleaned!r}")
    return cleaned


def _image_rows(images: Sequence[int]) -> list[int]:
    rows = sorted({int(image) for image in images})
    if rows and rows[0] < 0:
        raise UserError(f"image indices start at 0, got {rows[0]}")
    return rows

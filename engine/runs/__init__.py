"""Runs: the store (SQLite + folders), executing one run, and the background JobManager."""
from .execute import RunRequest, create_run, execute_run
from .jobs import JobManager
from .store import STATUSES, RunRecord, RunStore, default_runs_dir

__all__ = ["RunRequest", "create_run", "execute_run", "JobManager", "STATUSES", "RunRecord", "RunStore",
           "default_runs_dir"]

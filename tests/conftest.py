"""Shared fixtures: every test gets its own runs folder and dataset cache, so nothing touches ~ or ./runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("DCE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DCE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m engine ARGS`` in a fresh process from the repository root."""
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})

"""A full disk: every write (run arrays, exports, checkpoints) fails with a message that says the disk is full and
names the folder, keeps the earlier file, leaves no temporary file, and a run it stops is recorded as failed."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import HANG_GUARD_S
from engine.analysis.export import export_run
from engine.analysis.results import load_results
from engine.atomic import atomic_path, is_disk_full, write_atomic
from engine.cli import main
from engine.errors import DiskFullError, UserError
from engine.runs import JobManager, RunRequest, RunStore, execute_run
from engine.runs.execute import create_run


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


def disk_full(filename: str | Path, code: int = errno.ENOSPC) -> OSError:
    return OSError(code, os.strerror(code), str(filename))


def replace_failing_for(monkeypatch, name: str) -> None:
    """``os.replace`` raises ENOSPC when it would put a file called ``name`` in place; other renames work."""
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == name:
            raise disk_full(dst)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def hidden_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*")]


# -------------------------------------------------------------------------------------------- the one helper

def test_atomic_write_replaces_the_whole_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "gallery.html"
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second" and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_midway_keeps_the_earlier_file_and_removes_the_partial_one(tmp_path, code):
    target = tmp_path / "out" / "assign.npy"
    target.parent.mkdir()
    target.write_bytes(b"earlier")
    with pytest.raises(DiskFullError) as raised:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the new")
            raise disk_full(tmp, code)
    message = str(raised.value)
    assert "disk holding" in message and "is full" in message and str(target.parent) in message
    assert isinstance(raised.value, UserError)
    assert target.read_bytes() == b"earlier" and list(target.parent.iterdir()) == [target]


def test_other_write_failures_are_user_errors_too_but_not_disk_full(tmp_path):
    target = tmp_path / "sheet.png"
    with pytest.raises(UserError, match="cannot write .*sheet.png: Permission denied") as raised:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"x")
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(tmp))
    assert not isinstance(raised.value, DiskFullError) and list(tmp_path.iterdir()) == []


def test_a_bug_while_writing_is_not_disguised_but_still_cleans_up(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with atomic_path(tmp_path / "x.csv") as tmp:
            tmp.write_bytes(b"x")
            1 / 0
    assert list(tmp_path.iterdir()) == []


def test_disk_full_is_recognised_through_a_chain_of_exceptions():
    try:
        try:
            raise disk_full("/x")
        except OSError as low:
            raise RuntimeError("writer failed") from low
    except RuntimeError as high:
        assert is_disk_full(high)
    assert not is_disk_full(OSError(errno.EACCES, "denied")) and not is_disk_full(ValueError())


# --------------------------------------------------------------------------------------- run store and runs

def test_save_array_on_a_full_disk_keeps_the_earlier_array(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    run_id = store.create_run("kmeans", "digits", {"n_clusters": 10})
    store.save_array(run_id, "assign", np.arange(5))
    real_save = np.save

    def save_half_then_fill_the_disk(file, array, *args, **kwargs):
        Path(file).write_bytes(b"\x93NUMPY partial")
        raise disk_full(file)

    monkeypatch.setattr(np, "save", save_half_then_fill_the_disk)
    with pytest.raises(DiskFullError, match=str(store.run_dir(run_id))):
        store.save_array(run_id, "assign", np.arange(10))
    monkeypatch.setattr(np, "save", real_save)
    assert store.load_array(run_id, "assign").tolist() == [0, 1, 2, 3, 4]
    assert hidden_files(store.run_dir(run_id)) == []


def test_a_run_that_fills_the_disk_is_recorded_failed_with_the_message(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    run_id = create_run(store, RunRequest("kmeans", "digits", overrides={"n_init": 1}, device="cpu"))
    replace_failing_for(monkeypatch, "probs.npy")
    with pytest.raises(DiskFullError):
        execute_run(store, run_id)
    record = store.get(run_id)
    assert record.status == "failed"
    assert "is full" in record.error and str(store.run_dir(run_id)) in record.error
    assert (store.run_dir(run_id) / "assign.npy").is_file()  # written before the disk filled up
    assert not (store.run_dir(run_id) / "probs.npy").exists() and hidden_files(store.run_dir(run_id)) == []


def test_the_cli_reports_a_full_disk_as_one_error_line_with_exit_2(tmp_path, monkeypatch, capsys):
    replace_failing_for(monkeypatch, "assign.npy")
    code = main(["train", "--method", "kmeans", "--set", "n_init=1", "--device", "cpu",
                 "--runs-dir", str(tmp_path / "runs")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2  # a user error, not a crash
    assert len(errors) == 1 and errors[0].startswith("error: the disk holding") and "is full" in errors[0]


TORCH_WRITE_FAILURE = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"  # torch on ENOSPC


def no_space_left(monkeypatch) -> None:
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: type(usage)(usage.total, usage.total, 0))


def test_a_full_disk_reported_without_an_errno_is_recognised_by_the_free_space(tmp_path, monkeypatch):
    """torch.save raises a RuntimeError, numpy's tofile an OSError without errno, when the disk fills up."""
    torch_failure, numpy_failure = RuntimeError(TORCH_WRITE_FAILURE), OSError("800 requested and 0 written")
    assert not is_disk_full(torch_failure, tmp_path) and not is_disk_full(numpy_failure, tmp_path)
    no_space_left(monkeypatch)
    assert is_disk_full(torch_failure, tmp_path) and is_disk_full(numpy_failure, tmp_path)
    assert not is_disk_full(torch_failure) and not is_disk_full(ValueError("a bug"), tmp_path)


@pytest.mark.parametrize("how", ["ENOSPC", "torch's RuntimeError"])
def test_a_checkpoint_on_a_full_disk_fails_the_run_with_the_message(tmp_path, monkeypatch, how):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")

    def save_to_a_full_disk(obj, file, *args, **kwargs):
        if how == "ENOSPC":
            raise disk_full(file)
        no_space_left(monkeypatch)
        raise RuntimeError(TORCH_WRITE_FAILURE)

    monkeypatch.setattr(torch, "save", save_to_a_full_disk)
    store = RunStore(tmp_path / "runs")
    run_id = create_run(store, RunRequest("scan", f"folder:{folder}", device="cpu", overrides={
        "n_clusters": 2, "n_neighbors": 5, "pretext_epochs": 1, "cluster_epochs": 1, "selflabel_epochs": 1}))
    with pytest.raises(DiskFullError):
        execute_run(store, run_id)
    record = store.get(run_id)
    assert record.status == "failed" and "is full" in record.error
    assert str(store.run_dir(run_id)) in record.error
    assert not (store.run_dir(run_id) / "error.log").exists()  # not reported as an internal error


# -------------------------------------------------------------------------------------------------- export

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("disk-full-runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DCE_CACHE_DIR", str(runs / "cache"))
        manager = JobManager(runs)
        run_id = manager.submit(RunRequest("kmeans", "digits", overrides={"n_init": 1}, device="cpu"))
        assert manager.wait(run_id, timeout=HANG_GUARD_S).status == "finished"
        manager.shutdown()
        yield load_results(manager.store, run_id)


@pytest.mark.parametrize("failing", ["cluster_3.png", "gallery.html", "assignments.csv", "ZIP"])
def test_export_to_a_full_disk_says_so_and_keeps_the_earlier_export(finished_run, tmp_path, monkeypatch, failing):
    out = tmp_path / "export"
    written = export_run(finished_run, out)
    earlier = {path: path.read_bytes() for paths in written.values() for path in paths}
    replace_failing_for(monkeypatch, f"{finished_run.run_id}.zip" if failing == "ZIP" else failing)
    with pytest.raises(DiskFullError) as raised:
        export_run(finished_run, out)
    assert "is full" in str(raised.value) and str(out) in str(raised.value)
    assert {path: path.read_bytes() for path in earlier} == earlier
    assert sorted(out.iterdir()) == sorted(earlier) and hidden_files(out) == []


def test_an_error_with_another_errno_is_not_a_full_disk_even_where_no_space_is_free(tmp_path, monkeypatch):
    """procfs and other virtual file systems report 0 bytes free: only the error's own errno may say full."""
    no_space_left(monkeypatch)
    missing = OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(tmp_path / "x"))
    assert not is_disk_full(missing, tmp_path)
    try:
        raise RuntimeError("writer failed") from missing
    except RuntimeError as wrapped:
        assert not is_disk_full(wrapped, tmp_path)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's procfs")
def test_export_into_procfs_names_the_folder_and_the_os_reason_not_a_full_disk(finished_run, capsys):
    with pytest.raises(OSError) as refused:
        (Path("/proc/self") / ".probe").write_bytes(b"")
    reason = refused.value.strerror
    code = main(["export", finished_run.run_id, "--out", "/proc/self", "--format", "csv",
                 "--runs-dir", str(finished_run.store.root)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: cannot write /proc/self/") and lines[0].endswith(reason), lines
    assert "full" not in lines[0]
    with pytest.raises(UserError) as raised:
        export_run(finished_run, "/proc/self", ["csv"])
    assert not isinstance(raised.value, DiskFullError)

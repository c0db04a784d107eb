"""The engine reads its .npy/.npz files without Python's AST parser, which is not safe across threads before
CPython 3.13 (a job worker's np.load beside Streamlit compiling a page failed with "AST constructor recursion
depth mismatch")."""
from __future__ import annotations

import ast

import numpy as np
import pytest
from PIL import Image

from conftest import HANG_GUARD_S
from engine.analysis.results import load_results
from engine.npy import load_npy, load_npz
from engine.runs import JobManager, RunRequest

ARRAYS = {
    "float32 matrix": np.arange(12, dtype=np.float32).reshape(3, 4),
    "uint8 images": np.arange(2 * 5 * 5 * 3, dtype=np.uint8).reshape(2, 5, 5, 3),
    "float16 features": np.linspace(-1, 1, 10, dtype=np.float16).reshape(5, 2),
    "fortran order": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
    "strings": np.array(["cat", "dög", ""], dtype=str),
    "bool scalar": np.array(True),
    "empty": np.empty((0, 7), np.float64),
}


@pytest.fixture(autouse=True)
def no_python_parsing(monkeypatch):
    """Fails the test when anything it runs (any thread) parses Python with ``ast``."""
    parsed = []
    parse = ast.parse
    def record(*args, **kwargs):
        parsed.append(args[0] if args else kwargs.get("source"))
        return parse(*args, **kwargs)
    monkeypatch.setattr(ast, "parse", record)
    yield
    monkeypatch.setattr(ast, "parse", parse)
    assert not parsed, f"ast.parse was called on {parsed[:3]}"


@pytest.mark.parametrize("name", ARRAYS)
def test_an_array_saved_by_numpy_reads_back_equal_without_parsing_python(tmp_path, name):
    np.save(tmp_path / "a.npy", ARRAYS[name])
    loaded = load_npy(tmp_path / "a.npy")
    assert loaded.dtype == ARRAYS[name].dtype and loaded.shape == ARRAYS[name].shape
    np.testing.assert_array_equal(loaded, ARRAYS[name])


def test_a_memory_mapped_copy_on_write_array_reads_back_equal_and_leaves_the_file_as_it_was(tmp_path):
    np.save(tmp_path / "a.npy", ARRAYS["uint8 images"])
    mapped = load_npy(tmp_path / "a.npy", mmap_mode="c")
    np.testing.assert_array_equal(mapped, ARRAYS["uint8 images"])
    mapped[0] = 0
    np.testing.assert_array_equal(load_npy(tmp_path / "a.npy"), ARRAYS["uint8 images"])


def test_every_array_of_an_npz_reads_back_by_name(tmp_path):
    np.savez(tmp_path / "a.npz", **{name.replace(" ", "_"): array for name, array in ARRAYS.items()})
    loaded = load_npz(tmp_path / "a.npz")
    assert set(loaded) == {name.replace(" ", "_") for name in ARRAYS}
    for name, array in ARRAYS.items():
        np.testing.assert_array_equal(loaded[name.replace(" ", "_")], array)


def test_a_cut_short_file_and_an_array_of_python_objects_are_refused(tmp_path):
    np.save(tmp_path / "a.npy", ARRAYS["float32 matrix"])
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(data[:-8])
    with pytest.raises(ValueError, match="cut short"):
        load_npy(tmp_path / "short.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="objects"):
        load_npy(tmp_path / "objects.npy")


def test_a_job_worker_trains_twice_on_a_cached_folder_and_reads_its_results_without_parsing_python(
        tmp_path, monkeypatch):
    monkeypatch.setenv("DCE_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "pets"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (8, 8), (220, 20, 20) if i % 2 else (20, 20, 220)).save(folder / f"{i}.png")
    manager = JobManager(tmp_path / "runs")
    try:
        run_ids = [manager.submit(RunRequest("kmeans", f"folder:{folder}", overrides={"n_clusters": 2},
                                             device="cpu")) for _ in range(2)]  # the second reads the cache
        records = [manager.wait(run_id, timeout=HANG_GUARD_S) for run_id in run_ids]
    finally:
        manager.shutdown()
    assert [record.status for record in records] == ["finished", "finished"], [r.error for r in records]
    assert sorted(np.bincount(load_results(manager.store, run_ids[1]).assign)) == [3, 3]

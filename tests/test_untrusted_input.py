"""Input from people who do not run the server: folder paths confined to ``$DCE_DATA_ROOTS``, uploaded archives
stored under a safe name, and no code path that hands a run's settings to a shell, eval or pickle."""
from __future__ import annotations

import gzip
import io
import os
import re
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import HANG_GUARD_S, REPO, open_page
from engine.analysis.results import load_results
from engine.data import DATASETS, load_folder
from engine.data.roots import (DEFAULT_MAX_UPLOADS_BYTES, check_folder_to_load, check_inside_data_roots,
                               configured_data_roots, default_upload_dir, save_upload, uploads_cap)
from engine.errors import ConfigError, DatasetError, UserError
from engine.runs import JobManager, RunRequest, RunStore, create_run, execute_run
from engine.analysis.overview import overview_rows, run_title
from engine.runs.uploads import dataset_label, delete_run, upload_only_used_by

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from ui.common import runs_table_key  # noqa: E402

OUTSIDE = "outside the folders this server may read"


def write_images(folder: Path, count: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (8, 8), (220, 20, 20) if i % 2 else (20, 20, 220)).save(folder / f"{i}.png")
    return folder


# ---------------------------------------------------------------------------------------------- data roots

def test_without_data_roots_any_path_is_accepted_as_before(tmp_path, monkeypatch):
    monkeypatch.delenv("DCE_DATA_ROOTS", raising=False)
    assert configured_data_roots() is None
    assert check_inside_data_roots(tmp_path / "a" / ".." / "b") == (tmp_path / "b").resolve()
    monkeypatch.setenv("DCE_DATA_ROOTS", "")
    assert configured_data_roots() is None


def test_paths_are_confined_to_the_data_roots_after_resolving_dots_and_symlinks(tmp_path, monkeypatch):
    roots = [tmp_path / "shared", tmp_path / "scratch"]
    for root in roots:
        root.mkdir()
    (tmp_path / "secret").mkdir()
    (roots[0] / "escape").symlink_to(tmp_path / "secret")
    monkeypatch.setenv("DCE_DATA_ROOTS", os.pathsep.join(map(str, roots)))

    assert configured_data_roots() == [r.resolve() for r in roots]
    assert check_inside_data_roots(roots[0] / "pets") == (roots[0] / "pets").resolve()
    assert check_inside_data_roots(roots[1] / "x.zip") == (roots[1] / "x.zip").resolve()
    for sneaky in (tmp_path / "secret", roots[0] / ".." / "secret", roots[0] / "escape", Path("/etc"),
                   roots[0] / "escape" / "deeper"):
        with pytest.raises(DatasetError, match=OUTSIDE):
            check_inside_data_roots(sneaky)
    with pytest.raises(DatasetError, match="DCE_DATA_ROOTS"):
        check_inside_data_roots(tmp_path / "shared-but-not-really")  # a name prefix is not containment
    assert check_inside_data_roots(tmp_path / "secret", also_allowed=(tmp_path / "secret",))


def test_a_path_with_a_nul_byte_is_a_dataset_error_with_or_without_data_roots(tmp_path, monkeypatch):
    for roots in ("", str(tmp_path)):
        monkeypatch.setenv("DCE_DATA_ROOTS", roots)
        with pytest.raises(DatasetError, match="NUL"):
            check_inside_data_roots(f"{tmp_path}/pets\0/../x")


# ------------------------------------------------------------------------------------------------- uploads

def zip_of_size(size: int) -> bytes:
    """A zip naming one image, padded with a comment to exactly ``size`` bytes."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pets/a.png", b"")
    base = len(archive.getvalue())
    with zipfile.ZipFile(archive, "a") as zf:
        zf.comment = b"x" * (size - base)
    assert len(archive.getvalue()) == size
    return archive.getvalue()


def tar_gz_of(text: bytes) -> bytes:
    """A .tar.gz naming one image whose bytes are ``text``."""
    import tarfile

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tf:
        info = tarfile.TarInfo("pets/a.png")
        info.size = len(text)
        tf.addfile(info, io.BytesIO(text))
    return archive.getvalue()


def test_an_upload_is_stored_under_a_fresh_folder_with_a_sanitised_name(tmp_path):
    uploads = tmp_path / "uploads"
    data, other = tar_gz_of(b"data"), tar_gz_of(b"other")
    first = save_upload("../../etc/My Pets (2024)!.TAR.GZ", io.BytesIO(data), uploads)
    second = save_upload("..\\..\\My Pets (2024)!.tar.gz", io.BytesIO(other), uploads)
    assert first.name == second.name == "My_Pets_2024.tar.gz"
    for stored in (first, second):
        assert stored.parent.parent == uploads and stored.is_file()
    assert first.parent != second.parent and first.read_bytes() == data
    assert save_upload(".zip", io.BytesIO(zip_of_size(200)), uploads).name == "upload.zip"
    assert [p for p in uploads.rglob(".*")] == []


def test_an_upload_that_is_not_an_archive_is_refused_and_leaves_nothing(tmp_path):
    with pytest.raises(DatasetError, match="not an archive"):
        save_upload("photo.png", io.BytesIO(b"x"), tmp_path / "uploads")
    assert not (tmp_path / "uploads").exists()


def test_an_upload_that_would_take_the_uploads_folder_over_its_cap_is_refused_and_leaves_nothing(tmp_path,
                                                                                                   monkeypatch):
    uploads = tmp_path / "uploads"
    monkeypatch.setenv("DCE_MAX_UPLOADS_BYTES", "3000")
    first = save_upload("a.zip", io.BytesIO(zip_of_size(2000)), uploads)
    with pytest.raises(UserError, match=r"over 3,000 bytes, the limit for uploads \(DCE_MAX_UPLOADS_BYTES\)"):
        save_upload("b.zip", io.BytesIO(zip_of_size(1001)), uploads)
    assert [p for p in uploads.rglob("*") if p.is_file()] == [first]
    assert save_upload("c.zip", io.BytesIO(zip_of_size(1000)), uploads).stat().st_size == 1000  # at the cap


def test_the_uploads_cap_defaults_to_10_gib_and_a_bad_setting_is_a_config_error(monkeypatch):
    monkeypatch.delenv("DCE_MAX_UPLOADS_BYTES", raising=False)
    assert uploads_cap() == DEFAULT_MAX_UPLOADS_BYTES == 10 << 30
    monkeypatch.setenv("DCE_MAX_UPLOADS_BYTES", "0")
    with pytest.raises(ConfigError, match="DCE_MAX_UPLOADS_BYTES='0' is not a positive whole number"):
        uploads_cap()


def test_uploads_go_to_dce_upload_dir_or_into_the_runs_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("DCE_UPLOAD_DIR", raising=False)
    assert default_upload_dir(tmp_path / "runs") == tmp_path / "runs" / "uploads"
    monkeypatch.setenv("DCE_UPLOAD_DIR", str(tmp_path / "elsewhere"))
    assert default_upload_dir(tmp_path / "runs") == tmp_path / "elsewhere"


# ---------------------------------------------------------------------------------------- the Train page

def train_page() -> AppTest:
    at = open_page("pages/train.py")
    next(box for box in at.selectbox if box.label == "Method").select("kmeans")
    next(box for box in at.number_input if box.label == "Clusters K").set_value(2)
    return at.run()


def start(at: AppTest) -> AppTest:
    next(button for button in at.button if button.label == "Start").click()
    return at.run()


def type_folder(at: AppTest, path: Path | str) -> AppTest:
    next(box for box in at.selectbox if box.label == "Dataset").select("folder:…")
    at.run()
    next(box for box in at.text_input if box.label == "Image folder or archive").input(str(path))
    return at.run()


def test_the_train_page_offers_folders_only_through_the_folder_field_and_the_upload():
    options = next(box for box in train_page().selectbox if box.label == "Dataset").options
    named = [name for name, info in DATASETS.items() if info.source != "local"]
    assert options == [*named, "folder:…", "upload an archive…"]


def test_the_train_page_refuses_a_folder_outside_the_data_roots_and_submits_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DCE_DATA_ROOTS", str(tmp_path / "allowed"))
    write_images(tmp_path / "allowed" / "pets")
    outside = write_images(tmp_path / "private")
    for typed in (outside, tmp_path / "allowed" / ".." / "private"):
        at = start(type_folder(train_page(), typed))
        assert not at.exception
        assert any(OUTSIDE in error.value for error in at.error), [e.value for e in at.error]
    assert RunStore(os.environ["DCE_RUNS_DIR"]).list() == []


@pytest.mark.parametrize("roots", ["", "allowed"])
def test_the_train_page_refuses_a_folder_with_a_nul_byte_with_a_message(tmp_path, monkeypatch, roots):
    monkeypatch.setenv("DCE_DATA_ROOTS", roots and str(tmp_path / roots))
    at = start(type_folder(train_page(), f"{tmp_path}/allowed/pets\0"))
    assert not at.exception
    assert any("NUL" in error.value for error in at.error), [e.value for e in at.error]
    assert RunStore(os.environ["DCE_RUNS_DIR"]).list() == []


def test_the_train_page_refuses_a_torchvision_data_root_outside_the_data_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("DCE_DATA_ROOTS", str(tmp_path / "allowed"))
    at = train_page()
    next(box for box in at.selectbox if box.label == "Dataset").select("mnist").run()
    next(box for box in at.text_input if box.label.startswith("Data root")).input(str(tmp_path / "elsewhere"))
    at = start(at.run())
    assert any(OUTSIDE in error.value for error in at.error)
    assert RunStore(os.environ["DCE_RUNS_DIR"]).list() == []


def test_the_train_page_submits_a_folder_inside_the_data_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("DCE_DATA_ROOTS", str(tmp_path / "allowed"))
    pets = write_images(tmp_path / "allowed" / "pets")
    at = start(type_folder(train_page(), pets))
    assert not at.exception and not at.error
    assert [run.dataset for run in RunStore(os.environ["DCE_RUNS_DIR"]).list()] == [f"folder:{pets}"]


def wait_until_done(store: RunStore, run_id: str, timeout: float = HANG_GUARD_S):
    deadline = time.monotonic() + timeout
    while store.get(run_id).status in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    return store.get(run_id)


def test_a_run_started_on_the_train_page_skips_a_linked_file_pointing_outside_the_data_roots(tmp_path,
                                                                                              monkeypatch):
    monkeypatch.setenv("DCE_DATA_ROOTS", str(tmp_path / "allowed"))
    pets = write_images(tmp_path / "allowed" / "pets")
    (pets / "secret.png").symlink_to(write_images(tmp_path / "private", count=1) / "0.png")
    at = start(type_folder(train_page(), pets))
    assert not at.exception and not at.error
    store = RunStore(os.environ["DCE_RUNS_DIR"])
    record = wait_until_done(store, store.list()[0].id)
    assert record.status == "finished", record.error
    assert (record.summary["n_images"], record.summary["n_skipped"]) == (6, 1)
    assert [m["message"] for m in store.messages(record.id) if "secret.png" in m["message"]] == [
        f"skipped secret.png: a link to a file {OUTSIDE}"]


def test_resuming_a_run_whose_folder_is_outside_the_data_roots_fails_with_the_reason(tmp_path, monkeypatch):
    store = RunStore(os.environ["DCE_RUNS_DIR"])
    outside = write_images(tmp_path / "private")
    run_id = create_run(store, RunRequest("kmeans", f"folder:{outside}", overrides={"n_clusters": 2}, device="cpu"))
    store.update(run_id, status="interrupted")  # queued before the roots were set, or from the command line
    monkeypatch.setenv("DCE_DATA_ROOTS", str(tmp_path / "allowed"))
    at = train_page()
    next(button for button in at.button if button.label == "Resume run").click()
    at.run()
    record = wait_until_done(store, run_id)
    assert record.status == "failed" and OUTSIDE in record.error
    labels = [button.label for button in at.run().button]
    assert "Retry run" in labels and "Resume run" not in labels  # it would fail again as it is: not a "resume"


def test_the_loader_confined_to_data_roots_skips_links_out_and_keeps_links_within(tmp_path):
    pets = write_images(tmp_path / "allowed" / "pets")
    (pets / "secret.png").symlink_to(write_images(tmp_path / "private", count=1) / "0.png")
    (pets / "again.png").symlink_to(pets / "1.png")
    confined = load_folder(pets, data_roots=[tmp_path / "allowed"])
    assert "again.png" in confined.paths and "secret.png" not in confined.paths
    assert confined.skipped == [("secret.png", f"a link to a file {OUTSIDE}")]
    assert "secret.png" in load_folder(pets).paths  # unconfined, as the command line reads it
    assert "secret.png" not in load_folder(pets, data_roots=[tmp_path / "allowed"]).paths  # and not from the cache
    with pytest.raises(DatasetError, match=OUTSIDE):
        load_folder(tmp_path / "private", data_roots=[tmp_path / "allowed"])


def test_a_run_queued_elsewhere_for_a_folder_outside_the_data_roots_fails_when_it_loads(tmp_path):
    outside = write_images(tmp_path / "private")
    store = RunStore(tmp_path / "runs")
    run_id = create_run(store, RunRequest("kmeans", f"folder:{outside}", overrides={"n_clusters": 2}, device="cpu"))
    with pytest.raises(DatasetError, match=OUTSIDE):
        execute_run(store, run_id, data_roots=[tmp_path / "allowed"])
    record = store.get(run_id)
    assert record.status == "failed" and OUTSIDE in record.error


def test_a_finished_runs_images_are_read_again_only_inside_the_data_roots(tmp_path):
    pets = write_images(tmp_path / "pets")
    manager = JobManager(tmp_path / "runs-anywhere")
    try:
        run_id = manager.submit(RunRequest("kmeans", f"folder:{pets}", overrides={"n_clusters": 2}, device="cpu"))
        assert manager.wait(run_id, timeout=HANG_GUARD_S).status == "finished"
    finally:
        manager.shutdown()
    assert len(load_results(manager.store, run_id).images) == 6
    with pytest.raises(DatasetError, match=OUTSIDE):
        load_results(manager.store, run_id, data_roots=[tmp_path / "allowed"]).images


def test_an_archive_uploaded_on_the_train_page_is_stored_once_and_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("DCE_DATA_ROOTS", str(tmp_path / "allowed"))  # uploads are allowed besides the roots
    images = write_images(tmp_path / "pets")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(images.iterdir()):
            zf.write(path, f"pets/{path.name}")
    at = train_page()
    next(box for box in at.selectbox if box.label == "Dataset").select("upload an archive…")
    at.run()
    uploader = at.get("file_uploader")[0]
    assert set(uploader.allowed_type) >= {".zip", ".tar", ".gz", ".tgz"}
    uploader.set_value(("../../pets.zip", archive.getvalue(), "application/zip"))
    at = start(at.run())
    at.run()  # a rerun must not store the same upload again
    assert not at.exception and not at.error

    uploads = Path(os.environ["DCE_RUNS_DIR"]) / "uploads"
    (stored,) = uploads.glob("*/*")
    assert stored.name == "pets.zip" and stored.read_bytes() == archive.getvalue()
    store = RunStore(os.environ["DCE_RUNS_DIR"])
    (run,) = store.list()
    assert run.dataset == f"folder:{stored}"
    deadline = time.monotonic() + HANG_GUARD_S
    while store.get(run.id).status in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    record = store.get(run.id)
    assert record.status == "finished", record.error
    assert record.summary["n_images"] == 6


@pytest.mark.parametrize("name, content, reason", [
    ("notes.zip", b"not a zip at all" * 10, "cannot be read as an archive"),
    ("cut.tar.gz", gzip.compress(b"pets/a.png" * 500, mtime=0)[:40], "cannot be read as an archive"),
    ("texts.zip", "zip of a README", "holds no image"),
], ids=["not-a-zip", "cut-tar-gz", "no-image"])
def test_an_upload_that_is_no_archive_of_images_is_refused_at_once_and_not_kept(tmp_path, name, content, reason):
    """Refused when uploaded, not queued to fail when its turn comes; the message names the file, not where the
    server keeps it."""
    if content == "zip of a README":
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("pets/README.txt", "no images here")
        content = archive.getvalue()
    uploads = tmp_path / "uploads"
    with pytest.raises(DatasetError, match=reason) as error:
        save_upload(name, io.BytesIO(content), uploads)
    assert name in str(error.value) and str(uploads) not in str(error.value)
    assert not [path for path in uploads.rglob("*") if path.is_file()]


def test_an_uploaded_archive_stays_the_forms_after_another_page_is_viewed(tmp_path):
    """Streamlit empties a file uploader when its page is left; the archive stored from it stays the form's."""
    at = train_page()
    next(box for box in at.selectbox if box.label == "Dataset").select("upload an archive…")
    at.run()
    at.get("file_uploader")[0].set_value(("pets.zip", pets_zip(tmp_path).getvalue(), "application/zip"))
    at.run()
    at.switch_page("pages/compare.py").run()
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert any(caption.value.startswith("Using pets.zip, uploaded earlier") for caption in at.caption)
    assert not [button for button in at.button if button.label.startswith("K = ")]  # a flat folder: no classes
    at = start(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    (run,) = RunStore(os.environ["DCE_RUNS_DIR"]).list()
    assert run.dataset.startswith("folder:") and run.dataset.endswith("pets.zip")


def test_an_uploaded_zip_of_class_folders_offers_one_cluster_per_class_folder(tmp_path):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("cats", "dogs", "owls"):
            for path in sorted(write_images(tmp_path / name, 2).iterdir()):
                zf.write(path, f"pets/{name}/{path.name}")
    at = train_page()
    next(box for box in at.selectbox if box.label == "Dataset").select("upload an archive…")
    at.run()
    at.get("file_uploader")[0].set_value(("pets.zip", archive.getvalue(), "application/zip"))
    at.run()
    offer = next(button for button in at.button if button.label.startswith("K = "))
    assert offer.label == "K = 3 (class folders)" and "cats, dogs, owls" in offer.help


def test_an_upload_over_the_cap_on_the_train_page_is_refused_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("DCE_MAX_UPLOADS_BYTES", "100")
    at = train_page()
    next(box for box in at.selectbox if box.label == "Dataset").select("upload an archive…")
    at.run()
    at.get("file_uploader")[0].set_value(("pets.zip", bytes(101), "application/zip"))
    at.run()
    assert not at.exception
    assert any("DCE_MAX_UPLOADS_BYTES" in error.value for error in at.error), [e.value for e in at.error]
    assert not [p for p in (Path(os.environ["DCE_RUNS_DIR"]) / "uploads").rglob("*") if p.is_file()]


def pets_zip(tmp_path: Path) -> io.BytesIO:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(write_images(tmp_path / "pets-source").iterdir()):
            zf.write(path, f"pets/{path.name}")
    archive.seek(0)
    return archive


@pytest.fixture
def upload_runs(tmp_path):
    """Two finished runs made from one upload and one from another: (store, upload dir, [shared, shared, own])."""
    uploads = default_upload_dir(Path(os.environ["DCE_RUNS_DIR"]))
    shared, own = (save_upload("pets.zip", pets_zip(tmp_path), uploads) for _ in range(2))
    manager = JobManager(os.environ["DCE_RUNS_DIR"])
    try:
        ids = [manager.submit(RunRequest("kmeans", f"folder:{archive}", overrides={"n_clusters": 2, "seed": seed},
                                         device="cpu")) for seed, archive in enumerate((shared, shared, own))]
        assert all(manager.wait(run_id, timeout=HANG_GUARD_S).status == "finished" for run_id in ids)
    finally:
        manager.shutdown()
    return manager.store, uploads, ids


def test_an_upload_is_shown_by_its_archive_name_not_its_server_path(upload_runs):
    store, uploads, (first, _, _) = upload_runs
    record = store.get(first)
    assert dataset_label(record.dataset, uploads) == "upload: pets.zip"
    assert dataset_label("digits", uploads) == "digits" and dataset_label("folder:/srv/pets", uploads) == \
        "folder:/srv/pets"
    assert run_title(record, uploads).startswith(f"{first} · kmeans on upload: pets.zip")
    assert {row["dataset"] for row in overview_rows(store)} == {"upload: pets.zip"}

    at = open_page("pages/train.py")
    said = [*next(box for box in at.selectbox if box.label == "Run").options, *(md.value for md in at.markdown)]
    assert any("upload: pets.zip" in text for text in said)
    at.switch_page("pages/compare.py").run()
    assert set(at.dataframe[0].value["dataset"]) == {"upload: pets.zip"}
    at.switch_page("pages/export.py").run()
    next(button for button in at.button if button.label == "Export").click().run()
    assert not at.exception
    said += [*next(box for box in at.selectbox if box.label == "Run").options, *(s.value for s in at.success)]
    exported = store.run_dir(store.list("finished")[0].id) / "exports" / "gallery.html"
    said.append(exported.read_text())
    assert "upload: pets.zip" in said[-1]
    assert not [text for text in said if str(uploads.resolve()) in text or str(store.root) in text]


def test_an_upload_goes_with_the_last_run_made_from_it_and_not_before(upload_runs):
    store, uploads, (first, second, own) = upload_runs
    shared_folder, own_folder = (Path(store.get(run_id).dataset.removeprefix("folder:")).parent
                                 for run_id in (first, own))
    assert upload_only_used_by(store, first, uploads) is None  # the second run uses it too
    assert upload_only_used_by(store, own, uploads) == own_folder
    assert delete_run(store, first, with_upload_from=uploads) is None
    assert shared_folder.is_dir()
    assert delete_run(store, second, with_upload_from=uploads) == shared_folder
    assert not shared_folder.exists() and own_folder.is_dir()
    assert delete_run(store, own) is None and own_folder.is_dir()  # only when asked
    assert [run.id for run in store.list()] == []


def test_the_compare_page_offers_to_delete_the_upload_with_the_last_run_made_from_it(upload_runs):
    store, uploads, (first, second, own) = upload_runs
    own_folder = Path(store.get(own).dataset.removeprefix("folder:")).parent
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=HANG_GUARD_S).run()
    at.switch_page("pages/compare.py").run()
    listed = list(at.dataframe[0].value["run"])
    row = listed.index(own)
    at.session_state[runs_table_key(listed)] = {"selection": {"rows": [row], "columns": []}}
    at.run()
    offer = next(box for box in at.checkbox if box.label.startswith("Also delete the uploaded archive"))
    assert offer.value and "pets.zip" in offer.label
    next(box for box in at.checkbox if box.label.startswith("Yes, delete this run")).check()
    at.run()
    next(button for button in at.button if button.label == "Delete run").click()
    at.run()
    assert not at.exception and not own_folder.exists()
    assert sorted(run.id for run in store.list()) == sorted([first, second])
    # the deletion is confirmed, and no other run is selected in its place (the row it was in now holds another)
    assert [element.value for element in at.success] == [f"Deleted {own}."]
    assert not any(element.label.startswith("Delete ") for element in at.expander)


def test_an_upload_deleted_with_its_run_is_stored_again_if_the_train_page_still_holds_it(tmp_path):
    at = train_page()
    next(box for box in at.selectbox if box.label == "Dataset").select("upload an archive…")
    at.run()
    at.get("file_uploader")[0].set_value(("pets.zip", pets_zip(tmp_path).getvalue(), "application/zip"))
    at = start(at.run())
    store = RunStore(os.environ["DCE_RUNS_DIR"])
    first = wait_until_done(store, store.list()[0].id)
    uploads = default_upload_dir(store.root)
    assert delete_run(store, first.id, with_upload_from=uploads) is not None
    at = start(at.run())
    second = wait_until_done(store, store.list()[0].id)
    assert second.status == "finished", second.error
    assert second.summary["n_images"] == 6 and Path(second.dataset.removeprefix("folder:")).is_file()


def test_start_without_an_uploaded_archive_says_to_upload_one(tmp_path):
    at = train_page()
    next(box for box in at.selectbox if box.label == "Dataset").select("upload an archive…")
    at = start(at.run())
    assert any("choose an archive to upload first" in error.value for error in at.error)
    assert RunStore(os.environ["DCE_RUNS_DIR"]).list() == []


# ------------------------------------------------------------------------------------- nothing is executed

SOURCES = sorted([*REPO.glob("engine/**/*.py"), *REPO.glob("pages/*.py"), *REPO.glob("ui/*.py"),
                  REPO / "app.py"])
FORBIDDEN = {
    "eval(": re.compile(r"(?<![\w.])eval\("),  # a method call such as model.eval() is fine
    "exec(": re.compile(r"(?<![\w.])exec\("),
    "os.system": re.compile(r"\bos\.(system|popen)\("),
    "shell=True": re.compile(r"shell\s*=\s*True"),
    "pickle.load": re.compile(r"\b(c?pickle|dill|joblib)\.loads?\("),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
}


def call_arguments(text: str, start: int) -> str:
    """The text between the parenthesis opening at ``start`` and its match."""
    depth = 0
    for end in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        if depth == 0:
            return text[start + 1:end]
    return text[start + 1:]


def test_the_sources_never_eval_exec_shell_out_or_unpickle():
    assert len(SOURCES) > 20
    found = [f"{path.relative_to(REPO)}:{text.count(chr(10), 0, match.start()) + 1}: {name}"
             for path in SOURCES for text in [path.read_text(encoding="utf-8")]
             for name, pattern in FORBIDDEN.items() for match in pattern.finditer(text)]
    assert found == []


def test_every_torch_load_is_weights_only():
    calls = [(path, call_arguments(text, match.end() - 1)) for path in SOURCES
             for text in [path.read_text(encoding="utf-8")] for match in re.finditer(r"\btorch\.load\(", text)]
    assert calls, "checkpoints are loaded somewhere; the scan must find that call"
    unsafe = [str(path.relative_to(REPO)) for path, arguments in calls
              if not re.search(r"\bweights_only\s*=\s*True\b", arguments)]
    assert unsafe == []


def test_a_folder_to_load_is_checked_before_a_run_is_queued(tmp_path, monkeypatch):
    monkeypatch.delenv("DCE_DATA_ROOTS", raising=False)
    pets = write_images(tmp_path / "pets")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "pets.zip").write_bytes(b"")  # its contents are checked when it loads
    assert check_folder_to_load(f"  {pets}  ") == pets.resolve()
    assert check_folder_to_load(tmp_path / "pets.zip") == (tmp_path / "pets.zip").resolve()
    for bad, reason in ((tmp_path / "nope", "does not exist"), (tmp_path / "notes.txt", "is a file"),
                        ("  ", "type the path")):
        with pytest.raises(DatasetError, match=reason):
            check_folder_to_load(bad)
    monkeypatch.setenv("DCE_DATA_ROOTS", str(tmp_path / "allowed"))
    with pytest.raises(DatasetError, match=OUTSIDE):  # confinement first: whether it exists is not said
        check_folder_to_load(tmp_path / "nope")

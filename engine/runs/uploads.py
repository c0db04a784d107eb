"""Archives uploaded on the Train page and the runs made from them: an upload can go with the last run that uses it,
so the uploads folder (capped by ``$DCE_MAX_UPLOADS_BYTES``, see :mod:`engine.data.roots`) does not only grow."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..data.registry import folder_of
from .store import RunRecord, RunStore


def upload_of(record: RunRecord, upload_dir: Path) -> Path | None:
    """The folder under ``upload_dir`` holding the archive ``record`` was made from; None for any other data."""
    path = folder_of(record.dataset)
    if path is None:
        return None
    uploads = Path(upload_dir).resolve()
    try:
        inside = Path(path).resolve().relative_to(uploads)
    except ValueError:  # elsewhere, or a path no file can have
        return None
    # save_upload stores each archive as <upload_dir>/<fresh folder>/<name>.
    return uploads / inside.parts[0] if len(inside.parts) == 2 else None


def dataset_label(spec: str, upload_dir: Path) -> str:
    """How a run's dataset is shown: ``upload: shapes.zip`` for an archive uploaded on the Train page (its server
    path means nothing to the person who uploaded it), the spec itself for anything else."""
    path = folder_of(spec)
    if path is None:
        return spec
    uploads = Path(upload_dir).resolve()
    try:
        inside = Path(path).resolve().relative_to(uploads)
    except ValueError:
        return spec
    return f"upload: {inside.name}" if len(inside.parts) == 2 else spec


def upload_only_used_by(store: RunStore, run_id: str, upload_dir: Path) -> Path | None:
    """The upload folder run ``run_id`` was made from, when no other run in ``store`` uses it; else None."""
    folder = upload_of(store.get(run_id), upload_dir)
    if folder is None or not folder.is_dir():
        return None
    if any(upload_of(other, upload_dir) == folder for other in store.list() if other.id != run_id):
        return None
    return folder


def delete_run(store: RunStore, run_id: str, *, with_upload_from: Path | None = None) -> Path | None:
    """Delete a run (see :meth:`RunStore.delete`) and, given the uploads folder, the upload it was made from when no
    other run uses it; returns the upload folder removed, or None.

    Raises:
        UserError: the run does not exist or is queued or running; nothing is deleted.
    """
    folder = None if with_upload_from is None else upload_only_used_by(store, run_id, with_upload_from)
    store.delete(run_id)
    # Asked again: a run may have been started from the same upload in another session meanwhile.
    if folder is None or any(upload_of(other, with_upload_from) == folder for other in store.list()):
        return None
    shutil.rmtree(folder, ignore_errors=True)
    return folder

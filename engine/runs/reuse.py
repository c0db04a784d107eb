"""Checks, before a run is queued, that the finished run it names in ``pretext_from=RUN_ID`` can lend it a pretext.

The fit itself compares the stored pretext's identity (data, image geometry, backbone) with what it needs and loads
every parameter strictly (:func:`engine.methods.simclr.load_reused_pretext`); this catches, without loading any
data, what is already plain from the two requests, so a mistyped or mismatched run id is refused with exit 2 and
nothing queued instead of becoming a failed run.
"""
from __future__ import annotations

from pathlib import Path

from ..data.registry import folder_of
from ..errors import UserError
from ..methods import get_method
from ..methods.base import Method, Stage
from ..methods.context import checkpoint_folder
from ..methods.feature_source import pretrained_name
from .store import RunStore


PRETEXT = "pretext"  # the stage name of every method's pretext


def _pretext_stage(method_name: str) -> Stage | None:
    return next((stage for stage in get_method(method_name).stages if stage.name == PRETEXT), None)


def _same_data(spec: str, other: str) -> bool:
    """Whether two dataset specs name the same images (a folder however its path is written)."""
    mine, theirs = folder_of(spec), folder_of(other)
    if mine is not None and theirs is not None:
        return Path(mine).expanduser().resolve() == Path(theirs).expanduser().resolve()
    return spec == other


def check_reusable_pretext(store: RunStore, method: Method, dataset: str, image_size: int | None) -> None:
    """Raise a UserError naming what differs when ``method``'s ``pretext_from`` names a run whose pretext this run
    cannot reuse: an unknown run, one without a finished pretext stage, a different pretext (scan's and temi's
    SimCLR are one; smc's and spice's are their own), other data, or an image size or backbone set differently
    on both runs. A setting left to its default on either side is left to the fit's own check."""
    from_run = getattr(method.config, "pretext_from", None)
    if not from_run or pretrained_name(from_run) is not None:
        return
    record = store.get(from_run)  # a UserError naming the store for an unknown id
    if _pretext_stage(record.method) != _pretext_stage(method.name):
        raise UserError(f"run {from_run} is a {record.method} run, whose pretext {method.name} cannot reuse; pick a "
                        f"run whose method trains the same pretext, or train a new one")
    if not (checkpoint_folder(store.run_dir(from_run)) / f"{PRETEXT}.pt").is_file():
        raise UserError(f"run {from_run} has no stored pretext stage to reuse (status: {record.status}); pick a run "
                        "whose pretext finished, or train a new one")
    differences = []
    if not _same_data(record.dataset, dataset):
        differences.append(f"dataset {record.dataset} (this run: {dataset})")
    stored_size = record.options.get("image_size")
    if stored_size is not None and image_size is not None and stored_size != image_size:
        differences.append(f"image size {stored_size} px (this run: {image_size} px)")
    stored_backbone, backbone = record.config.get("backbone"), getattr(method.config, "backbone", None)
    if "auto" not in (stored_backbone, backbone) and None not in (stored_backbone, backbone) \
            and stored_backbone != backbone:
        differences.append(f"backbone {stored_backbone} (this run: {backbone})")
    if differences:
        raise UserError(f"run {from_run}'s pretext cannot be reused here: it was trained with "
                        f"{'; '.join(differences)}. Pick a run of the same data, or train a new pretext")

"""Train: choose a dataset and a method, start a run, watch its losses live, read its scores."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import streamlit as st

from engine.data import DATASETS
from engine.data.decode import DEFAULT_FOLDER_IMAGE_SIZE, MAX_IMAGE_SIZE
from engine.data.registry import FOLDER_PREFIX, folder_of
from engine.data.roots import check_folder_to_load, check_inside_data_roots, default_upload_dir, save_upload
from engine.errors import DatasetError, UserError
from engine.methods import get_method, list_methods
from engine.methods.feature_source import PRETRAINED_PREFIX
from engine.methods.settings import setting_choices, setting_help, setting_range
from engine.nn.pretrained import PRETRAINED_BACKBONES
from engine.runs import RunRequest
from engine.runs.budget import estimate_request
from engine.runs.store import ACTIVE
from engine.wording import count
from engine.analysis.overview import estimate_advice, quick_start_hint
from ui.common import (PAGE_RUN, URL_RUN, folder_class_hint, form_key, how_it_works, job_manager, remember_form,
                       run_label, show_run, train_form_defaults)

manager = job_manager()
upload_dir = default_upload_dir(manager.store.root)
st.title("Train")
FOLDER, UPLOAD = "folder:…", "upload an archive…"
DOUBLE_START_S = 5.0  # a second Start with the same choices this soon is a double click, not a second run

methods = list_methods()
# The user's own images come through the folder field or an upload; "folder:PATH" is the CLI's spelling.
dataset_names = [name for name, info in DATASETS.items() if info.source != "local"]
# The form's choices live in the session, so viewing another run or page never resets the form.
state = st.session_state
form = train_form_defaults(methods)
for key, default in form.items():
    state.setdefault(key, default)
left, middle, right = st.columns(3)
dataset = left.selectbox("Dataset", dataset_names + [FOLDER, UPLOAD], key=form_key("train-dataset"),
                         help="built-in, torchvision (needs the files or a download), a folder on the server or "
                              "an archive you upload")
folder = data_root = ""
if dataset == FOLDER:
    folder = left.text_input("Image folder or archive", key=form_key("train-folder"),
                             help="class sub-folders (labels known), or a flat folder (no labels; images beside "
                                  "sub-folders make the whole folder one unlabelled set); .zip/.tar.gz work too")
if DATASETS.get(dataset) is not None and DATASETS[dataset].source == "torchvision":
    data_root = left.text_input("Data root (optional)", key=form_key("train-data-root"),
                                help="where this dataset's torchvision files (or an image-folder copy) are")
uploaded_spec = None
if dataset == UPLOAD:
    uploaded = left.file_uploader(
        "Archive of your image folder", type=["zip", "tar", "gz", "tgz", "bz2", "tbz2", "xz", "txz"],
        help=f"a .zip/.tar/.tar.gz of class sub-folders or of a flat folder, at most "
             f"{st.get_option('server.maxUploadSize')} MB")
    saved = state.setdefault("uploads", {})  # file id → stored path: each upload is stored once
    # ... unless it was deleted since, with the last run made from it (Compare page)
    if uploaded is not None and not Path(saved.get(uploaded.file_id, "")).is_file():
        saved.pop(uploaded.file_id, None)
        try:
            uploaded.seek(0)
            saved[uploaded.file_id] = str(save_upload(uploaded.name, uploaded, upload_dir))
        except UserError as exc:
            st.error(str(exc))
    if uploaded is not None and uploaded.file_id in saved:
        state["train-upload"] = (uploaded.name, saved[uploaded.file_id])
    # Streamlit empties the uploader when another page is shown: the archive stored last is kept for the form
    name, stored = state.get("train-upload", (None, ""))
    if stored and Path(stored).is_file():
        uploaded_spec = f"{FOLDER_PREFIX}{stored}"
        if uploaded is None:
            left.caption(f"Using {name}, uploaded earlier; upload another archive to replace it.")
image_size = left.number_input(
    "Image size (px)", min_value=1, max_value=MAX_IMAGE_SIZE, step=1, placeholder="auto",
    key=form_key("train-image-size"),
    help=f"every image is decoded once at this square size (shorter side, then the centre) and cached; auto: "
         f"a built-in dataset's own size, {DEFAULT_FOLDER_IMAGE_SIZE} px for your images (their own if smaller)")
method_name = middle.selectbox("Method", methods, key=form_key("train-method"))
preset = middle.radio("Preset", ["fast", "paper"], horizontal=True, key=form_key("train-preset"),
                      help="fast: short schedules (seconds to about 3 minutes per method on digits on a CPU, hours "
                           "for 10k+ images without a GPU); paper: the paper's schedule (GPU)")
# no bounds on the widget: a typed value outside them would be kept from the run while the old one is used;
# Start and Estimate check K and say what is wrong
n_clusters = right.number_input("Clusters K", step=1, key=form_key("train-k"),
                                help="how many clusters to find: at least 2, at most the number of images")
spec = {FOLDER: f"{FOLDER_PREFIX}{folder.strip()}", UPLOAD: uploaded_spec}.get(dataset, dataset)
hinted = folder_of(spec) if spec else None  # a typed folder or an upload's archive; None for a named dataset
class_folders = folder_class_hint(hinted, manager.store.root) if hinted else None
if class_folders is not None and len(class_folders) != n_clusters:
    right.button(f"K = {len(class_folders)} (class folders)", on_click=state.__setitem__,
                 args=(form_key("train-k"), len(class_folders)),
                 help=f"one cluster per class folder: this folder's images are in {len(class_folders)} class folders, "
                      f"{', '.join(class_folders[:5])}{', …' if len(class_folders) > 5 else ''}")
seed = right.number_input("Seed", min_value=0, key=form_key("train-seed"))
remember_form(form)


def _range_text(low: float | None, high: float | None) -> str:
    """``between 1 and 10``, ``at least 1`` or ``at most 10``."""
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}"
    return f"at least {low:g}" if low is not None else f"at most {high:g}"


method = get_method(method_name)
defaults = method.describe()["presets"][preset]
overrides: dict = {"n_clusters": int(n_clusters), "seed": int(seed)}
with st.expander("Settings (the preset's values; change any)"):
    columns = st.columns(3)
    drawn = 0  # widgets so far: the settings without one leave no gap in the grid
    for key in method.key_settings:
        value = defaults.get(key)
        choices = setting_choices(method.Config, key)
        column = columns[drawn % 3]
        if choices is not None and value in choices:
            widget = column.selectbox(key, choices, index=choices.index(value), key=f"setting-{method_name}-{key}",
                                      help=setting_help(method.Config, key))
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # names without choices, switches and layer-size tuples stay at the preset's value
        else:  # no bounds on the widget (as for K): a typed value outside them would be dropped for the old one
            # without a word; the declared range is said here and Start and Estimate refuse a value outside it
            kind = int if isinstance(value, int) else float  # Streamlit wants one numeric type for value and step
            low, high = setting_range(method.Config, key, integer=kind is int)
            widget = column.number_input(key, value=value, help=setting_help(method.Config, key),
                                         key=f"setting-{method_name}-{key}",
                                         format="%g" if isinstance(value, float) else "%d")
            if (low is not None and widget < low) or (high is not None and widget > high):
                column.error(f"{key} must be {_range_text(low, high)}")
        drawn += 1
        if widget != value:
            overrides[key] = widget
# where a method can start from something else than a new pretext: both choices on one row, so a method with them
# (scan) leaves the live view below in the first screenful at 1024 px, as one without them (kmeans) does
start_columns = iter(st.columns(2))  # filled from the left
has_pretext = any(stage.name == "pretext" for stage in method.stages)
if "pretext_from" in defaults and has_pretext:
    reusable = [r for r in manager.store.list("finished")
                if r.method == method_name and r.dataset == spec
                and not r.config.get("pretext_from") and not r.config.get("features_from")]  # trained their own
    choice = next(start_columns).selectbox(
        "Reuse pretext from run", [None] + [r.id for r in reusable],
        format_func=lambda run_id: "no — train a new pretext" if run_id is None else run_id,
        help="skip the self-supervised stage by reusing a finished run's backbone")
    if choice:
        overrides["pretext_from"] = choice
if "pretrained_weights" in defaults:  # methods that can start from a frozen pretrained backbone's features
    features_column = next(start_columns)
    no_backbone = "none — the pretext's features" if has_pretext else "none — use the pixels"
    backbone = features_column.selectbox("Frozen pretrained features", [None] + list(PRETRAINED_BACKBONES),
                                         format_func=lambda name: name or no_backbone,
                                         help="embed the images once with a frozen pretrained backbone (cached) "
                                              "and cluster those features")
    if backbone:
        overrides["pretext_from"] = f"{PRETRAINED_PREFIX}{backbone}"
        weights = features_column.text_input("Backbone weights file (a state dict on the server)", "")
        if weights.strip():
            overrides["pretrained_weights"] = weights.strip()
        elif features_column.checkbox("Download the published weights (needs internet access)"):
            overrides["download_weights"] = True

request = RunRequest(method_name, spec or "", preset, overrides, data_root=data_root.strip() or None,
                     image_size=None if image_size is None else int(image_size))
request_key = json.dumps(dataclasses.asdict(request), sort_keys=True, default=str)


def checked_request() -> RunRequest:
    """The form's request, its paths checked now rather than when the run's turn comes: a typed folder must exist
    and, on a shared server ($DCE_DATA_ROOTS set), stay inside the data roots."""
    if spec is None:
        raise DatasetError("choose an archive to upload first")
    folder_path = folder_of(spec)
    if folder_path is not None:
        check_folder_to_load(folder_path, also_allowed=(upload_dir,))
    if data_root.strip():
        check_inside_data_roots(data_root.strip())
    return request


start_column, estimate_column = st.columns([1, 4])
if estimate_column.button("Estimate time", help="time a few steps of every stage of this run (seconds; up to a "
                                                "minute for long schedules) and say how long the whole run takes"):
    try:
        with st.spinner("Timing a few steps of every stage…"):
            estimate = estimate_request(checked_request(), runs_root=manager.store.root,
                                        data_roots=manager.data_roots)
        state["train-estimate"] = (request_key, estimate.to_json())
    except UserError as exc:
        st.error(str(exc))
estimated = state.get("train-estimate")
estimated = estimated[1] if estimated and estimated[0] == request_key else None  # for this form's choices only
if estimated is not None:
    line, warning = estimate_advice(estimated, method_name)
    st.info(line)
    if warning:
        st.warning(warning)
if start_column.button("Start", type="primary"):
    last_key, last_time = state.get("train-started", (None, 0.0))
    if last_key == request_key and time.monotonic() - last_time < DOUBLE_START_S:
        st.info(f"{state[PAGE_RUN]} was started with these choices a moment ago; it is not queued twice")
    else:
        try:
            # the estimate made for these choices gives the run its ETA at once instead of being made again
            st.session_state[PAGE_RUN] = manager.submit(dataclasses.replace(checked_request(), estimate=estimated))
            state["train-started"] = (request_key, time.monotonic())
        except UserError as exc:
            st.error(str(exc))


def copy_choices(record) -> None:
    """The Train form takes a run's dataset, method, preset, K, seed, image size and the settings it shows (a
    button's callback: the form is drawn after it, with these values)."""
    folder = folder_of(record.dataset)
    if folder is None and record.dataset not in dataset_names:
        return
    choices = {"train-dataset": FOLDER if folder is not None else record.dataset, "train-folder": folder or "",
               "train-data-root": record.options.get("data_root") or "", "train-method": record.method,
               "train-preset": record.preset if record.preset in ("fast", "paper") else "fast",
               "train-k": int(record.config.get("n_clusters", 10)), "train-seed": int(record.config.get("seed", 0)),
               "train-image-size": record.options.get("image_size")}
    for key, value in choices.items():
        state[key] = state[f"widget-{key}"] = value
    for key in get_method(record.method).key_settings:
        if key in record.config:
            state[f"setting-{record.method}-{key}"] = record.config[key]
    state["train-copied"] = record.id


runs = manager.store.list()
if not runs:
    with st.expander(f"How {method_name} works"):
        how_it_works(method_name)
    st.info(f"No runs yet: pick a dataset and a method and press Start. The bundled digits need no download; for "
            f"a first look in seconds pick kmeans: {quick_start_hint(manager.store)}.")
else:
    interrupted = [run.id for run in runs if run.status == "interrupted"]
    if interrupted:
        note_column, resume_column = st.columns([4, 1], vertical_alignment="center")
        named = ", ".join(interrupted[:5]) + (f" and {len(interrupted) - 5} more" if len(interrupted) > 5 else "")
        note_column.warning(f"{count(len(interrupted), 'run')} stopped when the app or its worker stopped (a restart "
                            f"or a crash): {named}. Each continues from its last checkpoint.")
        if resume_column.button(f"Resume {'all ' if len(interrupted) > 1 else ''}{len(interrupted)}",
                                key="resume-interrupted"):
            resumed = manager.resume_interrupted()
            if resumed:
                st.session_state[PAGE_RUN] = resumed[0]
            st.rerun()
    ids = [run.id for run in runs]
    labels = {run.id: run_label(run) for run in runs}
    # the page-wide run, or in a new session the one the address names; the choice goes back into the address,
    # so a link to a running run opens its live view
    current = st.session_state.get(PAGE_RUN) or st.query_params.get(URL_RUN, ids[0])
    gone = st.session_state.pop("train-run-gone", None)
    if gone is not None or current not in ids:
        st.info(f"{gone or current} was deleted (here or in another tab); showing another run")
    st.session_state[PAGE_RUN] = st.selectbox("Run", ids, index=ids.index(current) if current in ids else 0,
                                              format_func=labels.get)
    if st.query_params.get(URL_RUN) != st.session_state[PAGE_RUN]:
        st.query_params[URL_RUN] = st.session_state[PAGE_RUN]

    @st.fragment(run_every=1.0)
    def live_view() -> None:
        pending = manager.pending()
        if pending:
            st.caption("Queue: " + " → ".join(f"{run_id} ({manager.store.get(run_id).status})"
                                              for run_id in pending))
        try:
            record = manager.store.get(st.session_state[PAGE_RUN])
        except UserError:  # deleted in another tab since this view was drawn: the whole page picks another run
            st.session_state["train-run-gone"] = st.session_state.pop(PAGE_RUN)
            st.rerun()
        seen = st.session_state.get("train-live-status")
        st.session_state["train-live-status"] = (record.id, record.status)
        if seen is not None and seen[0] == record.id and seen[1] in ACTIVE and record.status not in ACTIVE:
            st.rerun()  # the whole page: the run picker's label gets the run's score, the queue line drops it
        if record.status in ACTIVE:
            if st.button("Cancel run", key=f"cancel-{record.id}"):
                try:
                    manager.cancel(record.id)
                except UserError as exc:
                    st.error(str(exc))
        elif record.status in ("interrupted", "cancelled", "failed"):
            retry = record.status == "failed"  # it fails again unless what the error names has changed
            if st.button("Retry run" if retry else "Resume run", key=f"resume-{record.id}",
                         help="runs it again from its last checkpoint, with the same choices; fix what the error "
                              "names first (a folder, a file, free memory) or start a new run with other choices"
                         if retry else "continues it from its last checkpoint"):
                try:
                    manager.resume(record.id)
                except UserError as exc:
                    st.error(str(exc))
        if state.get("train-copied") == record.id:
            state["train-copied"] = None
            st.rerun()  # the whole page: the form above is drawn again with the run's choices
        show_run(record, manager, pending)
        # under the run, not above it: at 1024 px a finished run's scores stay in the first screenful
        st.button("Copy its choices to the form", key=f"copy-{record.id}", type="tertiary",
                  icon=":material/content_copy:", on_click=copy_choices, args=(record,),
                  help="the form above takes this run's dataset, method, preset, K, seed, image size and settings: "
                       "change one (the seed, say) and press Start")
        with st.expander(f"How {record.method} works", expanded=record.status == "running"):
            how_it_works(record.method, record.stage if record.status == "running" else None)

    live_view()

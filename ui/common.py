"""UI pieces several pages share: the server's JobManager, run pickers, and the live view of one run."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import streamlit as st

from engine.analysis.curves import UNIT_RANGE_KINDS, Panel, stage_panels
from engine.analysis.overview import (expected_seconds, format_score, format_seconds, queue_note, quick_start_hint,
                                     run_title)
from engine.analysis.results import RunResults, load_results, run_neighbor_purity
from engine.data.folder import folder_class_names
from engine.data.roots import default_upload_dir, readable_roots
from engine.errors import UserError
from engine.runs import JobManager, RunRecord
from engine.runs.store import ACTIVE
from engine.runs.uploads import dataset_label
from ui.charts import CHART_HEIGHT_PX, line_chart


NEIGHBOURS_OPEN = "neighbours-open"  # an image another page asks the Neighbours page to show; taken once there


@st.cache_resource(show_spinner=False)
def _manager_for(runs_dir: str) -> JobManager:
    return JobManager(runs_dir, data_roots=readable_roots(Path(runs_dir)))


def job_manager() -> JobManager:
    """The one JobManager of this server process for the runs folder ``$DCE_RUNS_DIR`` (default ``runs``); its runs
    read images only inside ``$DCE_DATA_ROOTS`` and the uploads folder when that is set."""
    return _manager_for(os.environ.get("DCE_RUNS_DIR", "runs"))


@st.cache_resource(show_spinner=False, max_entries=8)
def _results(runs_dir: str, run_id: str, finished: float) -> RunResults:
    manager = job_manager()
    return load_results(manager.store, run_id, manager.data_roots)


def train_form_defaults(methods: list[str]) -> dict[str, object]:
    """The Train form's session keys and their first values: digits, SCAN's fast preset, K=10, seed 0; the
    choices stay in the session while other pages and runs are viewed."""
    return {"train-dataset": "digits", "train-folder": "", "train-data-root": "", "train-image-size": None,
            "train-method": "scan" if "scan" in methods else methods[0], "train-preset": "fast", "train-k": 10,
            "train-seed": 0}


@st.cache_data(ttl=30, show_spinner=False)
def folder_class_hint(folder: str, runs_root: Path) -> list[str] | None:
    """The class folders of the folder the Train form names, when it has two or more (the listing is read at most
    every 30 s while the form is used); None otherwise, or when it may not be read."""
    classes = folder_class_names(folder.strip(), readable_roots(runs_root)) if folder.strip() else None
    return classes if classes is not None and len(classes) >= 2 else None


def form_key(key: str) -> str:
    """The widget key for the form choice kept under ``key``: Streamlit drops a widget's own state when a page
    without it is shown, so the choice is kept under a plain session key and the widget starts from it."""
    widget_key = f"widget-{key}"
    if widget_key not in st.session_state:
        st.session_state[widget_key] = st.session_state[key]
    return widget_key


def remember_form(keys) -> None:
    """Copy the form widgets' values into their plain session keys (see :func:`form_key`)."""
    for key in keys:
        if f"widget-{key}" in st.session_state:
            st.session_state[key] = st.session_state[f"widget-{key}"]


def run_label(record: RunRecord) -> str:
    return run_title(record, default_upload_dir(job_manager().store.root))


def runs_table_key(run_ids: list[str]) -> str:
    """The Compare table's widget key, made from the runs it lists. Its selection is a row number: a table of other
    runs (one deleted, here or in another tab; one added) starts with no row selected instead of selecting
    whichever run moved into that row."""
    return "runs-table-" + hashlib.sha256(" ".join(run_ids).encode()).hexdigest()[:12]


PAGE_RUN = "run_id"  # the session key of the page-wide selected run
URL_RUN = "run"  # the address's query parameter naming it: a reload, a bookmark or a shared link opens that run


def pick_finished_run(label: str = "Run", key: str = PAGE_RUN, exclude: str | None = None) -> RunResults | None:
    """A select box of finished runs (defaulting to the page-wide selection, or in a new session to the run the
    address names in ``?run=``); returns the chosen run's results. The page-wide choice is written back into the
    address."""
    manager = job_manager()
    finished = [r for r in manager.store.list("finished") if r.id != exclude]
    if not finished:
        st.info(f"No finished run yet: start one on the Train page ({quick_start_hint(manager.store)}).")
        return None
    ids = [r.id for r in finished]
    wanted = st.session_state.get(key)
    if wanted is None and key == PAGE_RUN:
        wanted = st.query_params.get(URL_RUN)
    # a run still queued or running stays the page-wide choice (Train keeps showing its live view) until a
    # finished run is picked here; meanwhile this page shows the newest finished run, and that run once it finishes
    missing = wanted is not None and wanted not in ids and wanted != exclude
    status = _status(manager, wanted) if missing else None
    waiting = status in ACTIVE
    if missing:
        st.info(f"{wanted} is {status}: this page shows it once it has finished, and another run meanwhile"
                if waiting else f"{wanted} is {status}, not finished; showing another run" if status else
                f"{wanted} was deleted (here or in another tab); showing another run")
    labels = {r.id: run_label(r) for r in finished}
    widget = f"pick-{key}"
    chosen = st.selectbox(label, ids, index=ids.index(wanted) if wanted in ids else 0, format_func=labels.get,
                          key=widget, on_change=lambda: st.session_state.update({key: st.session_state[widget]}))
    if not waiting:
        st.session_state[key] = chosen
        if key == PAGE_RUN and st.query_params.get(URL_RUN) != chosen:
            st.query_params[URL_RUN] = chosen
    record = next(r for r in finished if r.id == chosen)
    try:
        results = _results(str(manager.store.root), chosen, record.finished or 0.0)
        results.images  # load now so a changed dataset is reported here, once
    except UserError as exc:
        st.error(str(exc))
        return None
    return results


def _status(manager: JobManager, run_id: str) -> str | None:
    """A run's status; None when it was deleted."""
    try:
        return manager.store.get(run_id).status
    except UserError:
        return None


def panel_chart(panel: Panel) -> dict:
    """The ECharts option of one panel: named lines, titled axes, the legend under the plot even for one line."""
    return line_chart(panel.title, panel.series, panel.x_title, panel.y_title,
                      y_range=(0, 1.02) if panel.kind in UNIT_RANGE_KINDS else None)


def show_panels(panels: list[Panel], run_id: str) -> None:
    """Values recorded once as numbers, the rest as charts two per row."""
    for panel in panels:
        if panel.single:
            for name, (_, values) in panel.series.items():
                st.metric(f"{panel.stage} · {name}",
                          f"{values[0]:.0f}" if float(values[0]).is_integer() else f"{values[0]:.3f}")
    charts = [panel for panel in panels if not panel.single]
    for first in range(0, len(charts), 2):
        for column, panel in zip(st.columns(2), charts[first:first + 2]):
            column.echarts_chart(panel_chart(panel), height=CHART_HEIGHT_PX,
                                 key=f"loss-{run_id}-{panel.stage}-{panel.kind}")


def show_run(record: RunRecord, manager: JobManager, pending: list[str]) -> None:
    """Status, progress with ETA (a queued run: what it waits behind in ``pending``, :meth:`JobManager.pending`),
    loss curves per stage, messages, and final scores of one run."""
    dataset = dataset_label(record.dataset, default_upload_dir(manager.store.root))
    st.markdown(f"**{record.id}** — `{record.method}` on `{dataset}` ({record.preset}) · status "
                f"**{record.status}**" + (f" · device {record.device}" if record.device else ""))
    if record.status == "queued":
        listed = {run.id: run for run in manager.store.list()}
        ahead = [listed[run_id] for run_id in pending[:pending.index(record.id)] if run_id in listed] \
            if record.id in pending else []  # in the order they will run
        own = expected_seconds(record)
        st.progress(0.0, text=queue_note(ahead, len(manager.workers) == 1)
                    + (f" · takes about {format_seconds(own)}" if own is not None else ""))
    elif record.status == "running":
        label = ("estimating the run's time from a few steps of every stage" if record.stage == "estimate" else
                 f"stage {record.stage or '…'} · ETA for the whole run {format_seconds(record.eta_s)}")
        st.progress(min(max(record.progress or 0.0, 0.0), 1.0), text=label)
    if record.status == "failed":
        st.error(record.error or "the run failed")
    elif record.status in ("cancelled", "interrupted"):
        st.warning(record.error or record.status)
    if record.status == "finished":
        summary = record.summary
        purity, purity_note = run_neighbor_purity(manager.store, record.id)
        # four scores to a row: a fifth column (the time) is too narrow at 1024 px for "1 min 05 s" in a metric's
        # type, which Streamlit cuts to "1 mi…"; the time goes in the caption below
        for column, (title, value) in zip(st.columns(4), (("ACC", summary.get("acc")), ("NMI", summary.get("nmi")),
                                                          ("ARI", summary.get("ari")), ("Neighbour purity", purity))):
            column.metric(title, format_score(value), help=purity_note if title == "Neighbour purity" and
                          purity_note else None)
        size = f" at {summary['image_size']} px" if summary.get("image_size") else ""
        attempts = " over its attempts (stopped and resumed)" if record.earlier_s else ""
        st.caption(f"trained in {format_seconds(summary.get('seconds'))}{attempts} · {summary.get('n_images')} "
                   f"images{size}, "
                   f"{summary.get('n_skipped')} skipped · cluster sizes {summary.get('cluster_sizes')}")
        for message in manager.store.messages(record.id):
            if message["message"].startswith("warning:"):
                st.warning(message["message"])
    panels = stage_panels(manager.store.metrics(record.id), record.method)
    if record.status == "finished":  # the mined neighbours' purity is among the scores above
        panels = [panel for panel in panels if not (panel.single and set(panel.series) == {"neighbor_purity"})]
    show_panels(panels, record.id)
    messages = manager.store.messages(record.id)
    if messages:
        with st.expander(f"Messages ({len(messages)})"):
            for message in messages[-200:]:
                st.text(f"[{message['stage']}] {message['message']}")


def how_it_works(method_name: str, current_stage: str | None = None) -> None:
    """The method's stages as a timeline with their objectives and key hyper-parameters, taken from the method
    class itself; the stage a run is in is highlighted."""
    from engine.methods import get_method

    description = get_method(method_name).describe()
    st.markdown(f"**{method_name}** — {description['summary']}  \n*{description['paper']}*")
    stages = description["stages"]
    st.markdown(" → ".join(f"**:blue-background[{s['name']}]**" if s["name"] == current_stage else s["name"]
                           for s in stages))
    for number, stage in enumerate(stages, 1):
        marker = " ← running now" if stage["name"] == current_stage else ""
        st.markdown(f"{number}. **{stage['name']}**{marker} — {stage['description']} "
                    f"(recorded: {', '.join(stage['losses'])})")
        if stage["equation"]:
            st.latex(stage["equation"])
    paper = description["presets"]["paper"]
    keys = description["key_settings"] or list(paper)
    st.caption("Key hyper-parameters (paper preset → fast preset)")
    st.table({"setting": keys, "paper": [str(paper.get(k)) for k in keys],
              "fast": [str(description["presets"]["fast"].get(k)) for k in keys]})


def open_in_neighbours(index: int) -> None:
    """Go to the Neighbours page showing image ``index``, at its position in the order and filter held there."""
    st.session_state[NEIGHBOURS_OPEN] = index
    st.switch_page("pages/neighbours.py")

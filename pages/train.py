"""Train: choose a dataset and a method, start a run, watch its losses live, read its scores."""
from __future__ import annotations

import streamlit as st

from engine.data import DATASETS
from engine.errors import UserError
from engine.methods import get_method, list_methods
from engine.runs import RunRequest
from pages.common import job_manager, show_run

manager = job_manager()
st.title("Train")

with st.form("new-run"):
    left, right = st.columns(2)
    dataset_names = list(DATASETS)
    dataset = left.selectbox("Dataset", dataset_names + ["folder:…"], index=dataset_names.index("digits"),
                             help="built-in, torchvision (needs the files or a download) or your own folder")
    folder = left.text_input("Image folder or archive (for folder:…)", "")
    data_root = left.text_input("Data root for torchvision datasets (optional)", "")
    method_name = right.selectbox("Method", list_methods(), index=list_methods().index("scan"))
    preset = right.radio("Preset", ["fast", "paper"], horizontal=True,
                         help="fast: minutes on a CPU; paper: the paper's schedule (GPU)")
    n_clusters = right.number_input("Clusters K", min_value=2, max_value=1000, value=10)
    seed = right.number_input("Seed", min_value=0, value=0)
    submitted = st.form_submit_button("Start", type="primary")

if submitted:
    spec = f"folder:{folder.strip()}" if dataset == "folder:…" else dataset
    request = RunRequest(method_name, spec, preset, {"n_clusters": int(n_clusters), "seed": int(seed)},
                         data_root=data_root.strip() or None)
    try:
        st.session_state["run_id"] = manager.submit(request)
    except UserError as exc:
        st.error(str(exc))

with st.expander(f"How {method_name} works"):
    description = get_method(method_name).describe()
    st.markdown(f"*{description['paper']}*")
    for number, stage in enumerate(description["stages"], 1):
        st.markdown(f"{number}. **{stage['name']}** — {stage['description']} (losses: "
                    f"{', '.join(stage['losses'])})")

runs = manager.store.list()
if runs:
    ids = [run.id for run in runs]
    current = st.session_state.get("run_id", ids[0])
    selected = st.selectbox("Run", ids, index=ids.index(current) if current in ids else 0)
    st.session_state["run_id"] = selected

    @st.fragment(run_every=1.0)
    def live_view() -> None:
        record = manager.store.get(st.session_state["run_id"])
        if record.status in ("queued", "running"):
            if st.button("Cancel run", key=f"cancel-{record.id}"):
                try:
                    manager.cancel(record.id)
                except UserError as exc:
                    st.error(str(exc))
        elif record.status in ("interrupted", "cancelled", "failed"):
            if st.button("Resume run", key=f"resume-{record.id}"):
                try:
                    manager.resume(record.id)
                except UserError as exc:
                    st.error(str(exc))
        show_run(record, manager)

    live_view()
else:
    st.info("No runs yet: pick a dataset and a method and press Start. The bundled digits need no download.")

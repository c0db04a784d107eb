"""Home: what the app does, the path through it, the runs so far, and a one-click first run."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from engine.analysis.overview import overview_rows, quick_start_hint
from engine.errors import UserError
from engine.runs import RunRequest
from engine.runs.store import ACTIVE
from ui.common import PAGE_RUN, job_manager

ASSETS = Path(__file__).resolve().parents[1] / "assets"

manager = job_manager()
st.title("Deep Clustering Explorer")
intro, picture = st.columns([3, 2])
intro.markdown(
    "Group unlabelled images into clusters with deep clustering methods (SCAN, CC, SPICE, DEC and more) trained "
    "here on your data or a built-in dataset. Then audit what each run found: a 2-D map, nearest neighbours, "
    "galleries per cluster, and scores against the true labels when the data has them.")
if intro.button("Try it: K-means on digits", type="primary"):
    try:
        st.session_state["try_run"] = manager.submit(RunRequest("kmeans", "digits"))
        st.session_state[PAGE_RUN] = st.session_state["try_run"]
    except UserError as exc:
        st.error(str(exc))
intro.caption(f"Trains K-means on the 1,797 bundled 8×8 digits, no download: {quick_start_hint(manager.store)}.")
picture.image(str(ASSETS / "digits-clusters.png"), caption="three clusters a run found in the digits",
              width="stretch")


@st.fragment(run_every=1.0)
def try_status() -> None:
    run_id = st.session_state.get("try_run")
    if run_id is None:
        return
    record = manager.store.get(run_id)
    if record.status in ACTIVE:
        st.info(f"{run_id} is {record.status}…")
    elif record.status == "finished":
        st.success(f"{run_id} finished: ACC {record.summary.get('acc', 0):.3f} against the digits' labels. "
                   f"Where to look next:")
        links = st.columns(4)
        for column, (path, label) in zip(links, (
                ("pages/train.py", "its losses and scores"), ("pages/map.py", "the 2-D map"),
                ("pages/clusters.py", "each cluster's images"), ("pages/neighbours.py", "the nearest neighbours"))):
            column.page_link(path, label=label)
    else:
        st.error(f"{run_id} {record.status}: {record.error or 'see the Train page'}")


try_status()

st.subheader("Three steps")
steps = st.columns(3)
steps[0].markdown("**1. Pick data** — the bundled digits, a torchvision dataset, a folder on the server or an "
                  "archive you upload.")
steps[0].page_link("pages/train.py", label="Pick data on Train")
steps[1].markdown("**2. Train** — choose a method and a preset; follow its losses live and read its scores.")
steps[1].page_link("pages/train.py", label="Train a method")
steps[2].markdown("**3. Audit** — where the clusters lie, which neighbours disagree, what each cluster holds; "
                  "compare runs and export them.")
for path, label in (("pages/map.py", "Map"), ("pages/neighbours.py", "Neighbours"), ("pages/clusters.py", "Clusters"),
                    ("pages/compare.py", "Compare")):
    steps[2].page_link(path, label=label)

st.subheader("Runs so far")
rows = overview_rows(manager.store)
if rows:
    st.dataframe(pd.DataFrame(rows)[["run", "method", "dataset", "ACC", "status"]].head(10), hide_index=True,
                 width="stretch")
    if len(rows) > 10:
        st.page_link("pages/compare.py", label=f"all {len(rows)} runs on Compare")
else:
    st.caption("None yet.")

"""Compare: every run in one sortable table; pick a finished one for the other pages, or delete a run (and its
upload)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.analysis.overview import overview_rows
from engine.data.roots import default_upload_dir
from engine.errors import UserError
from engine.runs.store import ACTIVE
from engine.runs.uploads import upload_only_used_by
from ui.common import PAGE_RUN, job_manager, runs_table_key

# The table's columns in sets that each fit the ~560 px beside the sidebar at 1024 px, so that no set scrolls
# sideways there; every set starts with the run, whose row a click selects, and ends with the column whose text
# can be long (a folder's path, a note), so that only that column runs past the edge.
COLUMN_SETS = {"scores": ("run", "ACC", "NMI", "ARI", "purity@k", "dataset"),
               "settings": ("run", "method", "preset", "K", "seed", "time", "device"),
               "status": ("run", "status", "note")}

st.title("Compare")
manager = job_manager()
rows = overview_rows(manager.store)
if not rows:
    st.info("No runs yet: start one on the Train page.")
else:
    shown = st.segmented_control("Columns", list(COLUMN_SETS), default="scores", required=True,
                                 key="compare-columns")
    deleted = st.session_state.pop("compare-deleted", None)
    if deleted:
        st.success(f"Deleted {deleted}.")
    event = st.dataframe(pd.DataFrame(rows), hide_index=True, on_select="rerun", selection_mode="single-row",
                         key=runs_table_key([row["run"] for row in rows]), column_order=COLUMN_SETS[shown])
    st.caption("Scores have three decimals; a run not finished shows its status instead; n/a means the run has no "
               "such score (its status note says why).")
    st.page_link("pages/clusters.py", icon=":material/view_column_2:",
                 label="Two runs' clusters side by side (on Clusters)",
                 help="the Clusters page's “Compare with another run side by side”: each cluster beside its match, "
                      "and the images the two runs disagree on")
    chosen = event.selection.rows if event else []
    if chosen:
        record = manager.store.get(rows[chosen[0]]["run"])
        if record.status == "finished":
            st.session_state[PAGE_RUN] = record.id
            st.success(f"{record.id} is now the selected run on the Map, Neighbours, Clusters, Suspects and "
                       "Export pages.")
        else:
            st.info(f"{record.id} is {record.status}: only finished runs can be explored on the Map, Neighbours, "
                    "Clusters, Suspects and Export pages. Follow it on the Train page.")
        with st.expander(f"Delete {record.id}"):
            active = record.status in ACTIVE
            confirmed = st.checkbox("Yes, " + ("cancel and " if active else "") + "delete this run and all its files",
                                    key=f"confirm-{record.id}")
            upload_dir = default_upload_dir(manager.store.root)
            upload = upload_only_used_by(manager.store, record.id, upload_dir)
            with_upload = upload is not None and st.checkbox(
                f"Also delete the uploaded archive it was made from ({', '.join(p.name for p in upload.iterdir())})"
                f"; no other run uses it", value=True, key=f"upload-{record.id}")
            if st.button("Delete run", disabled=not confirmed, key=f"delete-{record.id}"):
                try:
                    with st.spinner("Stopping the run…" if active else "Deleting…"):
                        manager.delete(record.id, with_upload_from=upload_dir if with_upload else None)
                    st.session_state.pop(PAGE_RUN, None)
                    st.session_state["compare-deleted"] = record.id
                    st.rerun()
                except UserError as exc:
                    st.error(str(exc))

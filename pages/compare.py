"""Compare: every run in one sortable table; pick one for the other pages, or delete it."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.errors import UserError
from pages.common import format_seconds, job_manager

st.title("Compare")
manager = job_manager()
records = manager.store.list()
if not records:
    st.info("No runs yet: start one on the Train page.")
else:
    table = pd.DataFrame([{
        "run": r.id, "method": r.method, "dataset": r.dataset, "preset": r.preset,
        "K": r.config.get("n_clusters"), "seed": r.config.get("seed"),
        "ACC": r.summary.get("acc"), "NMI": r.summary.get("nmi"), "ARI": r.summary.get("ari"),
        "purity@k": r.summary.get("neighbor_purity"), "time": format_seconds(r.summary.get("seconds", r.seconds)),
        "device": r.summary.get("device", r.device), "status": r.status,
    } for r in records])
    event = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row",
                         column_config={name: st.column_config.NumberColumn(format="%.3f")
                                        for name in ("ACC", "NMI", "ARI", "purity@k")}, key="runs-table")
    rows = event.selection.rows if event else []
    if rows:
        record = records[rows[0]]
        st.session_state["run_id"] = record.id
        st.success(f"{record.id} is now the selected run on the Map, Neighbours, Clusters and Export pages.")
        with st.expander(f"Delete {record.id}"):
            active = record.status in ("queued", "running")
            confirmed = st.checkbox("Yes, " + ("cancel and " if active else "") + "delete this run and all its files",
                                    key=f"confirm-{record.id}")
            if st.button("Delete run", disabled=not confirmed, key=f"delete-{record.id}"):
                try:
                    with st.spinner("Stopping the run…" if active else "Deleting…"):
                        manager.delete(record.id)
                    st.session_state.pop("run_id", None)
                    st.rerun()
                except UserError as exc:
                    st.error(str(exc))

"""Compare: every run in one sortable table; pick one for the other pages, or delete it (and its upload)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.data.roots import default_upload_dir
from engine.errors import UserError
from engine.runs.uploads import delete_run, upload_only_used_by
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
            confirmed = st.checkbox("Yes, delete this run and all its files", key=f"confirm-{record.id}")
            upload_dir = default_upload_dir(manager.store.root)
            upload = upload_only_used_by(manager.store, record.id, upload_dir)
            with_upload = upload is not None and st.checkbox(
                f"Also delete the uploaded archive it was made from ({', '.join(p.name for p in upload.iterdir())})"
                f"; no other run uses it", value=True, key=f"upload-{record.id}")
            if st.button("Delete run", disabled=not confirmed, key=f"delete-{record.id}"):
                try:
                    delete_run(manager.store, record.id, with_upload_from=upload_dir if with_upload else None)
                    st.session_state.pop("run_id", None)
                    st.rerun()
                except UserError as exc:
                    st.error(str(exc))

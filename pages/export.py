"""Export: a run's cluster galleries as PNG sheets, one offline HTML page, a CSV of assignments, or a zip."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine.analysis.export import FORMATS, export_run
from engine.errors import UserError
from pages.common import pick_finished_run

MIME = {"png": "image/png", "html": "text/html", "csv": "text/csv", "zip": "application/zip"}

st.title("Export")
results = pick_finished_run()
if results is not None:
    formats = st.multiselect("Formats", FORMATS, default=list(FORMATS))
    per_cluster = st.number_input("Images per cluster (PNG and HTML)", 1, 10_000, 100)
    if st.button("Export", type="primary", disabled=not formats):
        out_dir = results.store.run_dir(results.run_id) / "exports"
        try:
            with st.spinner("Writing…"):
                st.session_state["exported"] = (results.run_id, export_run(results, out_dir, formats,
                                                                           int(per_cluster)))
        except UserError as exc:
            st.error(str(exc))
    run_id, written = st.session_state.get("exported", (None, {}))
    if run_id == results.run_id and written:
        # The files' names only: where the server keeps them is no concern of a person downloading them.
        st.success(f"Written {sum(len(paths) for paths in written.values())} files for {run_id}; download them "
                   f"below")
        for fmt, paths in written.items():
            for path in paths:
                path = Path(path)
                st.download_button(f"Download {path.name}", path.read_bytes(), file_name=path.name,
                                   mime=MIME.get(fmt), key=f"download-{path.name}")

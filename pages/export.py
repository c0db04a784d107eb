"""Export: a run's cluster galleries as PNG sheets, one offline HTML page, a CSV of assignments and tags (with
labels also the corrected labels), or a zip; all images or only those the shared filter keeps."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine.analysis.export import FORMATS, export_run
from engine.analysis.filters import ImageFilter
from engine.errors import UserError
from ui.audit import current_filter, image_filter, run_tags
from ui.common import pick_finished_run

MIME = {"png": "image/png", "html": "text/html", "csv": "text/csv", "zip": "application/zip"}

st.title("Export")
results = pick_finished_run()
if results is not None:
    formats = st.multiselect("Formats", FORMATS, default=list(FORMATS))
    per_cluster_field, order_field = st.columns(2)
    per_cluster = per_cluster_field.number_input("Images per cluster (PNG and HTML)", 1, 10_000, 100)
    order = order_field.radio("Each cluster starts with its", ("most confident", "least confident"),
                              horizontal=True, help="A cluster's mistakes gather among its least confident images")
    keep = image_filter(results, run_tags(results))
    chosen = current_filter()
    only_kept = chosen.active and st.checkbox(
        f"Only the {int(keep.sum())} of {len(keep)} images the filter keeps ({chosen.describe(results.class_name)})",
        value=True, key="export-filtered")
    st.caption("The CSV lists every exported image with its tags"
               + ("; corrected_labels.csv adds the labels set with a “label: NAME” tag (Suspects, Neighbours, "
                  "Clusters or Map: Set label)" if results.labels is not None else "") + ".")
    if st.button("Export", type="primary", disabled=not formats):
        out_dir = results.store.run_dir(results.run_id) / "exports"
        try:
            with st.spinner("Writing…"):
                written = export_run(results, out_dir, formats, int(per_cluster),
                                     image_filter=chosen if only_kept else ImageFilter(),
                                     least_confident_first=order == "least confident")
                st.session_state["exported"] = (results.run_id, written)
        except UserError as exc:
            st.error(str(exc))
    run_id, written = st.session_state.get("exported", (None, {}))
    if run_id == results.run_id and written:
        # The files' names only: where the server keeps them is no concern of a person downloading them.
        st.success(f"Written {sum(len(paths) for paths in written.values())} files for {run_id}; download them "
                   f"below")
        # the zip first; a file is saved under a name that says its run, so two runs' downloads do not collide
        for fmt in sorted(written, key=lambda fmt: fmt != "zip"):
            many = len(written[fmt]) > 3
            place = st.expander(f"{len(written[fmt])} {fmt.upper()} files", expanded=False) if many else st
            for path in map(Path, written[fmt]):
                name = path.name if path.name.startswith(run_id) else f"{run_id}-{path.name}"
                place.download_button(f"Download {name}", path.read_bytes(), file_name=name, mime=MIME.get(fmt),
                                      key=f"download-{path.name}")

"""Map: a 2-D PaCMAP/UMAP picture of a run's features; colour by cluster, label, confidence or correctness;
select points to see their images."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from engine.analysis.maps import MAP_KINDS, compute_map
from engine.analysis.thumbnails import contact_sheet
from engine.clustering.metrics import match_clusters
from pages.audit import caption_with_tags, filter_note, image_filter, run_tags, tag_panel
from pages.common import pick_finished_run

st.title("Map")
results = pick_finished_run()
if results is not None:
    tags = run_tags(results)
    keep = image_filter(results, tags)
    filter_note(results, keep)
    left, right = st.columns(2)
    kind = left.radio("Projection", MAP_KINDS, horizontal=True, format_func={"pacmap": "PaCMAP",
                                                                             "umap": "UMAP"}.get)
    colourings = ["cluster", "confidence"] + (["true label", "correct / incorrect"] if results.labels is not None
                                              else [])
    colour_by = right.radio("Colour by", colourings, horizontal=True)
    with st.spinner(f"Computing the {kind} map of {len(results.assign)} points (once per run)…"):
        coords = compute_map(results, kind)

    index = np.flatnonzero(keep)  # the points the shared filter keeps
    # tags stay out of the figure: a changed figure clears the selection that is being tagged
    hover = {i: results.image_caption(i) for i in index}
    figure = go.Figure()
    if colour_by == "confidence":
        figure.add_trace(go.Scattergl(x=coords[index, 0], y=coords[index, 1], mode="markers", customdata=index,
                                      text=[hover[i] for i in index], hoverinfo="text",
                                      marker=dict(size=4, color=results.confidence[index], colorscale="Viridis",
                                                  colorbar=dict(title="confidence"))))
    else:
        if colour_by == "cluster":
            groups, names = results.assign, {c: f"cluster {c}" for c in np.unique(results.assign)}
        elif colour_by == "true label":
            groups = results.labels
            names = {c: results.class_name(int(c)) for c in np.unique(groups)}
        else:
            mapping = match_clusters(results.labels, results.assign)
            groups = (np.array([mapping[c] for c in results.assign]) == results.labels).astype(int)
            names = {1: "correct", 0: "incorrect"}
        for group, name in names.items():
            members = index[groups[index] == group]
            figure.add_trace(go.Scattergl(x=coords[members, 0], y=coords[members, 1], mode="markers", name=name,
                                          customdata=members, text=[hover[i] for i in members],
                                          hoverinfo="text", marker=dict(size=4)))
    # the legend goes under the plot: at the top right, plotly's toolbar covered its first entry
    figure.update_layout(height=700, margin=dict(l=10, r=10, t=40, b=10), dragmode="lasso",
                         legend=dict(itemsizing="constant", orientation="h", x=0, y=-0.04, yanchor="top"))
    event = st.plotly_chart(figure, on_select="rerun", selection_mode=("points", "box", "lasso"),
                            key=f"map-{results.run_id}-{kind}-{colour_by}")

    selected = sorted({int(p["customdata"]) for p in (event.selection.points if event else [])
                       if p.get("customdata") is not None})
    if selected:
        st.session_state["image_index"] = selected[0]
        shown = selected[:200]
        captions = [caption_with_tags(results.image_caption(i, separator="\n"), tags, i) for i in shown]
        st.subheader(f"{len(selected)} selected" + (" (first 200 shown)" if len(selected) > 200 else ""))
        st.image(contact_sheet(results.images.images[shown].numpy(), n_cols=12, cell=96, captions=captions))
        tag_panel(results, selected, tags, key="map-tags")
    else:
        st.caption("Drag a box or lasso around points to see their images.")

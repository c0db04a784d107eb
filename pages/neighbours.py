"""Neighbours: an image and its k mined neighbours (other-label neighbours outlined), and how pure the
neighbourhoods are over the dataset and per class."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from engine.analysis.metrics import neighbor_purity
from engine.analysis.results import view_neighbors
from engine.analysis.thumbnails import contact_sheet
from pages.common import class_name, pick_finished_run

st.title("Neighbours")
results = pick_finished_run()
if results is not None:
    neighbors, mined = view_neighbors(results)
    k = neighbors.shape[1]
    st.caption(f"The {k} neighbours the method mined" if mined else
               f"This method mines no neighbours: these are the {k} nearest in its features (cosine)")
    labels = results.labels
    purity = neighbor_purity(neighbors, labels) if labels is not None else None

    n = len(results.assign)
    left, middle, right = st.columns([2, 2, 1])
    order_by = left.radio("Order", ["index", "worst purity first"] if purity is not None else ["index"],
                          horizontal=True)
    order = np.argsort(purity, kind="stable") if order_by == "worst purity first" else np.arange(n)
    if right.button("Random image"):
        st.session_state["image_index"] = int(np.random.default_rng().integers(n))
    start = int(np.flatnonzero(order == st.session_state.get("image_index", int(order[0])))[0])
    position = middle.number_input(f"Position in this order (0–{n - 1})", 0, n - 1, start)
    index = int(order[position])
    st.session_state["image_index"] = index

    shown = [index, *neighbors[index].tolist()]
    wrong = [False] + ([bool(labels[j] != labels[index]) for j in neighbors[index]] if labels is not None
                       else [False] * k)
    captions = ["query"] + [f"#{j}" + (f" {class_name(results, int(labels[j]))}" if labels is not None else "")
                            for j in neighbors[index]]
    title = f"Image #{index} · cluster {results.assign[index]}"
    if labels is not None:
        title += f" · label {class_name(results, int(labels[index]))} · purity@{k} {purity[index]:.2f}"
    st.subheader(title)
    st.image(contact_sheet(results.images.images[shown].numpy(), n_cols=min(k + 1, 11), cell=80,
                           captions=captions, outline=wrong))
    if labels is not None:
        st.caption("Neighbours with another label than the query are outlined in red.")
        st.metric(f"Purity@{k} over the dataset", f"{purity.mean():.3f}")
        histogram, per_class = st.columns(2)
        figure = go.Figure(go.Histogram(x=purity, nbinsx=k + 1))
        figure.update_layout(title=f"Neighbour purity@{k}", xaxis_title="share of neighbours with the same label",
                             height=300, margin=dict(l=10, r=10, t=40, b=10))
        histogram.plotly_chart(figure)
        classes = np.unique(labels)
        figure = go.Figure(go.Bar(x=[class_name(results, int(c)) for c in classes],
                                  y=[purity[labels == c].mean() for c in classes]))
        figure.update_layout(title="Mean purity per class", height=300, margin=dict(l=10, r=10, t=40, b=10))
        per_class.plotly_chart(figure)

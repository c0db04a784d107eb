"""Clusters: one gallery per cluster (most confident first) with size, purity and majority label; the confusion
matrix after matching; two runs side by side with their agreement."""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from engine.analysis.clusters import cluster_summaries, matched_confusion, run_agreement
from engine.analysis.results import RunResults
from engine.analysis.thumbnails import contact_sheet
from pages.common import class_name, pick_finished_run

PER_CLUSTER = 30


def gallery(results: RunResults, matched_to: dict[int, int] | None = None,
            overlap: dict[int, float] | None = None) -> None:
    summaries = cluster_summaries(results.assign, results.confidence, results.n_clusters, results.labels)
    for summary in summaries:
        line = f"Cluster {summary.cluster} · {summary.size} images"
        if summary.purity is not None:
            line += f" · purity {summary.purity:.2f} · mostly {class_name(results, summary.majority_label)}"
        if overlap is not None:
            line += f" · {overlap.get(summary.cluster, 0.0):.0%} in the other run's cluster " \
                    f"{matched_to.get(summary.cluster, '—')}"
        st.markdown(f"**{line}**")
        shown = summary.members[:PER_CLUSTER]
        if len(shown):
            st.image(contact_sheet(results.images.images[shown].numpy(), n_cols=15, cell=48))
        else:
            st.caption("empty cluster")


st.title("Clusters")
results = pick_finished_run()
if results is not None:
    compare = st.toggle("Compare with another run side by side")
    if compare:
        other = pick_finished_run("Second run", key="second_run_id", exclude=results.run_id)
        if other is not None and len(other.assign) != len(results.assign):
            st.error("The two runs clustered different image sets; pick a run on the same dataset.")
        elif other is not None:
            a_to_b, overlap, agree = run_agreement(results.assign, other.assign)
            b_to_a, overlap_b, _ = run_agreement(other.assign, results.assign)
            st.metric("Images on which the matched clusterings agree", f"{agree:.1%}")
            left, right = st.columns(2)
            with left:
                st.subheader(results.run_id)
                gallery(results, a_to_b, overlap)
            with right:
                st.subheader(other.run_id)
                gallery(other, b_to_a, overlap_b)
    else:
        if results.labels is not None:
            n_classes = len(results.class_names) or int(results.labels.max()) + 1
            matrix, rows = matched_confusion(results.labels, results.assign, results.n_clusters, n_classes)
            figure = go.Figure(go.Heatmap(z=matrix, x=[class_name(results, c) for c in range(n_classes)],
                                          y=[f"cluster {r}" for r in rows], colorscale="Blues",
                                          text=matrix, texttemplate="%{text}"))
            figure.update_layout(title="Clusters × true labels (clusters ordered by their Hungarian match)",
                                 height=max(300, 28 * len(rows)), yaxis=dict(autorange="reversed"), xaxis=dict(type="category"),
                                 margin=dict(l=10, r=10, t=40, b=10))
            st.plotly_chart(figure)
        gallery(results)

"""Clusters: one gallery per cluster (most or least confident first, page by page) with size, purity and majority
label; the confusion matrix after matching; two runs side by side, row by row as their clusters match, with the
images they disagree on."""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from engine.analysis.clusters import (ClusterSummary, aligned_rows, cluster_summaries, disagreements,
                                      gallery_members, matched_confusion, off_majority, run_agreement)
from engine.analysis.results import RunResults
from engine.analysis.thumbnails import contact_sheet
from pages.common import pick_finished_run

PER_PAGE = 30
WIDTH = 880  # pixels a gallery row may take beside the sidebar on a 1400-px screen; half of it beside another run
DISAGREEMENTS_SHOWN = 200
SHOW = {"most confident first": "most", "least confident first": "least"}


def summaries_of(results: RunResults) -> list[ClusterSummary]:
    return cluster_summaries(results.assign, results.confidence, results.n_clusters, results.labels)


def cluster_block(results: RunResults, summary: ClusterSummary, order: str, page: int, cell: int, width: int,
                  overlap: str = "") -> None:
    """One cluster's header line and the page of its gallery; members off the majority label are outlined."""
    line = f"Cluster {summary.cluster} · {summary.size} images"
    if summary.purity is not None:
        line += f" · purity {summary.purity:.2f} · mostly {results.class_name(summary.majority_label)}"
    st.markdown(f"**{line + overlap}**")
    members = gallery_members(summary, order, page, PER_PAGE)
    if not summary.size:
        st.caption("empty cluster")
    elif not len(members):
        st.caption(f"no images on page {page}: the cluster has {summary.size}")
    else:
        start = (page - 1) * PER_PAGE
        st.caption(f"images {start + 1}–{start + len(members)} of {summary.size}"
                   + (" (outlined: not the majority label)" if results.labels is not None else ""))
        st.image(contact_sheet(results.images.images[members].numpy(), n_cols=max(1, width // cell), cell=cell,
                               captions=[results.image_name(i) for i in members],
                               outline=off_majority(summary, members, results.labels)))


def confusion_matrix(results: RunResults) -> None:
    n_classes = len(results.class_names) or int(results.labels.max()) + 1
    matrix, rows = matched_confusion(results.labels, results.assign, results.n_clusters, n_classes)
    figure = go.Figure(go.Heatmap(z=matrix, x=[results.class_name(c) for c in range(n_classes)],
                                  y=[f"cluster {r}" for r in rows], colorscale="Blues", text=matrix,
                                  texttemplate="%{text}", colorbar=dict(title="images")))
    figure.update_layout(title=f"{results.run_id}: clusters × true labels (clusters ordered by their Hungarian "
                               "match)", xaxis_title="true label", yaxis_title="cluster",
                         height=max(300, 28 * len(rows)), yaxis=dict(autorange="reversed"),
                         xaxis=dict(type="category"), margin=dict(l=10, r=10, t=40, b=10))
    st.plotly_chart(figure)


def side_by_side(results: RunResults, other: RunResults, order: str, page: int, cell: int) -> None:
    _, overlap, agree = run_agreement(results.assign, other.assign)
    _, overlap_other, _ = run_agreement(other.assign, results.assign)
    st.metric("Images on which the matched clusterings agree", f"{agree:.1%}")
    left, right = st.columns(2)
    left.subheader(results.run_id)
    right.subheader(other.run_id)
    mine, theirs = summaries_of(results), summaries_of(other)
    for a, b in aligned_rows(results.assign, other.assign, results.n_clusters, other.n_clusters):
        sides = ((results, mine, overlap, a, b), (other, theirs, overlap_other, b, a))
        for column, (run, summaries, overlaps, cluster, beside) in zip(st.columns(2), sides):
            with column:
                if cluster is None:
                    st.caption("no cluster of this run matches")
                else:
                    note = ("" if beside is None
                            else f" · {overlaps.get(cluster, 0.0):.0%} in cluster {beside} beside it")
                    cluster_block(run, summaries[cluster], order, page, cell, WIDTH // 2, note)
    differing = disagreements(results.assign, other.assign)
    st.subheader(f"{len(differing)} images the two runs disagree on")
    if len(differing):
        shown = differing[:DISAGREEMENTS_SHOWN]
        st.caption(f"Each is in a cluster of {results.run_id} (first line) whose match in {other.run_id} is not the "
                   "cluster it got there (second line)" + (f"; the first {DISAGREEMENTS_SHOWN} are shown"
                                                           if len(differing) > DISAGREEMENTS_SHOWN else ""))
        captions = [f"{results.image_name(i)}\nleft: cluster {results.assign[i]}\nright: cluster {other.assign[i]}"
                    for i in shown]
        st.image(contact_sheet(results.images.images[shown].numpy(), n_cols=max(1, WIDTH // max(cell, 96)),
                               cell=max(cell, 96), captions=captions))


st.title("Clusters")
results = pick_finished_run()
if results is not None:
    if results.labels is not None:
        confusion_matrix(results)
    compare = st.toggle("Compare with another run side by side")
    size, show, paging = st.columns(3)
    cell = size.slider("Thumbnail size (px)", 48, 128, 64, step=8)
    order = SHOW[show.radio("Show", list(SHOW), horizontal=True)]
    largest = max(summary.size for summary in summaries_of(results))
    page = int(paging.number_input(f"Page ({PER_PAGE} images per cluster)", 1, max(1, -(-largest // PER_PAGE)), 1))
    if compare:
        other = pick_finished_run("Second run", key="second_run_id", exclude=results.run_id)
        if other is not None and len(other.assign) != len(results.assign):
            st.error("The two runs clustered different image sets; pick a run on the same dataset.")
        elif other is not None:
            side_by_side(results, other, order, page, cell)
    else:
        for summary in summaries_of(results):
            cluster_block(results, summary, order, page, cell, WIDTH)

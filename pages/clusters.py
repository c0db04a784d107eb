"""Clusters: one gallery per cluster (most or least confident first, page by page) with size, purity and majority
label; the confusion matrix after matching, whose cells list their images; two runs side by side, row by row as
their clusters match, with the images they disagree on."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import streamlit as st

from engine.analysis.clusters import (ClusterSummary, aligned_rows, cell_members, cluster_summaries, confusion_cells,
                                      disagreements, gallery_members, matched_confusion, off_majority, run_agreement)
from engine.analysis.results import RunResults
from engine.wording import count
from ui.audit import caption_with_tags, filter_note, image_filter, run_tags, tag_panel, tags_text
from ui.charts import clicked_items, confusion_chart
from ui.common import pick_finished_run
from ui.gallery import image_grid

PER_PAGE = 30
DISAGREEMENTS_SHOWN = 200
SHOW = {"most confident first": "most", "least confident first": "least"}
CELL = "clusters-cell"  # the confusion-matrix cell whose images are listed, (cluster, label), or None
CELL_SHOWN = 120
state = st.session_state
WEAK_MATCH = 0.5  # a cluster with less than half of its images in the cluster beside it is flagged
WEAK_MATCH_NOTE = "a weak match: most of its images are elsewhere"


def summaries_of(results: RunResults) -> list[ClusterSummary]:
    return cluster_summaries(results.assign, results.confidence, results.n_clusters, results.labels)


def passing(summary: ClusterSummary, keep: np.ndarray | None) -> ClusterSummary:
    """The cluster with only the members the shared filter keeps (its size, purity and majority stay the
    cluster's own in the header)."""
    if keep is None:
        return summary
    kept = keep[summary.members]
    return replace(summary, members=summary.members[kept], confidence=summary.confidence[kept])


def cluster_block(results: RunResults, summary: ClusterSummary, order: str, page: int, cell: int,
                  overlap: str = "", keep: np.ndarray | None = None, tags: dict[int, list[str]] | None = None
                  ) -> None:
    """One cluster's header line and the page of its gallery (the members the filter ``keep`` keeps); members
    off the majority label are outlined, tagged ones list their tags under their name."""
    tags = tags or {}
    line = f"Cluster {summary.cluster} · {count(summary.size, 'image')}"
    if summary.purity is not None:
        line += f" · purity {summary.purity:.2f} · mostly {results.class_name(summary.majority_label)}"
    st.markdown(f"**{line + overlap}**")
    shown = passing(summary, keep)
    members = gallery_members(shown, order, page, PER_PAGE)
    passed = " passing the filter" if shown.size < summary.size else ""
    if not summary.size:
        st.caption("empty cluster")
    elif not shown.size:
        st.caption("no image of this cluster passes the filter")
    elif not len(members):
        st.caption(f"no images on page {page}: the cluster has {shown.size}{passed}")
    else:
        start = (page - 1) * PER_PAGE
        st.caption(f"images {start + 1}–{start + len(members)} of {shown.size}{passed}"
                   + (" (outlined: not the majority label)" if results.labels is not None else ""))
        image_grid(results.images.images[members].numpy(),
                   [caption_with_tags(results.image_name(i), tags, i) for i in members],
                   off_majority(summary, members, results.labels), cell=cell)
        tagged = [f"{results.image_name(i)} ({tags_text(tags, i)})" for i in members if i in tags]
        if tagged:
            st.caption("Tagged here: " + " · ".join(tagged))


def confusion_matrix(results: RunResults) -> None:
    """The cluster × true label counts, clusters ordered by their Hungarian match; a click on a cell lists its
    images below."""
    n_classes = len(results.class_names) or int(results.labels.max()) + 1
    matrix, rows = matched_confusion(results.labels, results.assign, results.n_clusters, n_classes)
    cells = [(cluster, label) for cluster in rows for label in range(n_classes)]  # the chart's data order
    key = f"confusion-{results.run_id}"
    # The chart's selection is read before it is drawn, so the cell a click chose is outlined in this very run.
    # The chart reports its selection on every rerun: only a new click chooses the cell, so a cell chosen in the
    # box below afterwards stays chosen.
    clicked = clicked_items(state.get(key))
    if clicked and state.get(f"{key}-clicked") != clicked[0]:
        state[f"{key}-clicked"] = clicked[0]
        state[CELL] = cells[clicked[0]]
    chosen = cells.index(state[CELL]) if state.get(CELL) in cells else None
    # a line between the picker and the chart: the chart's hover toolbar sits above its top edge, where it
    # covered the picker's arrow
    st.caption("Click a cell to list its images below.")
    # a short title: a long one ran under the chart's toolbar at 1024 px; the run is named in the picker above
    st.echarts_chart(confusion_chart("Clusters × true labels", matrix, [f"cluster {r}" for r in rows],
                                     [results.class_name(c) for c in range(n_classes)], "true label",
                                     "cluster, in the order of the Hungarian match", chosen),
                     key=key, on_select="rerun", height=max(360, 30 * len(rows) + 120))


def cell_images(results: RunResults, keep: np.ndarray, tags: dict[int, list[str]]) -> None:
    """The images of the chosen confusion-matrix cell (clicked, or chosen from the cells off the match first),
    most confident first, with a tag panel for them."""
    cells = confusion_cells(results.labels, results.assign)
    counts = {(cluster, label): n for cluster, label, n in cells}
    chosen = state.get(CELL)
    if chosen is not None and tuple(chosen) not in counts:  # an empty cell clicked, or another run's cell
        state[CELL] = None
        if chosen[0] < results.n_clusters and chosen[1] < len(np.unique(results.labels)):
            st.caption(f"No image of cluster {chosen[0]} has label {results.class_name(chosen[1])}.")
    cell = st.selectbox("Images of one cell", list(counts), key=CELL, index=None,
                        format_func=lambda c: f"cluster {c[0]} × label {results.class_name(c[1])} · "
                                              f"{count(counts[c], 'image')}",
                        placeholder="click a cell of the matrix, or choose one (cells off the match first)")
    if cell is None:
        return
    members = cell_members(results.assign, results.labels, results.confidence, *cell)
    members = members[keep[members]]
    if not len(members):
        st.caption("no image of this cell passes the filter")
        return
    shown = members[:CELL_SHOWN]
    st.caption(f"{count(len(members), 'image')} in cluster {cell[0]} with label {results.class_name(cell[1])}"
               + (" passing the filter" if len(members) < counts[cell] else "") + ", most confident first"
               + (f"; the first {CELL_SHOWN} are shown" if len(members) > CELL_SHOWN else ""))
    image_grid(results.images.images[shown].numpy(), [caption_with_tags(results.image_name(i), tags, i)
                                                      for i in shown])
    tag_panel(results, shown, tags, key="cell-tags")


def side_by_side(results: RunResults, other: RunResults, order: str, page: int, cell: int, keep: np.ndarray,
                 tags: dict[int, list[str]]) -> None:
    """Both runs' clusters row by row as they match, each gallery holding the images the filter keeps (the tags
    are the first run's), then the images they disagree on."""
    _, overlap, agree = run_agreement(results.assign, other.assign)
    _, overlap_other, _ = run_agreement(other.assign, results.assign)
    st.metric("Images on which the matched clusterings agree", f"{agree:.1%}")
    left, right = st.columns(2)
    left.subheader(results.run_id)
    right.subheader(other.run_id)
    mine, theirs = summaries_of(results), summaries_of(other)
    for a, b in aligned_rows(results.assign, other.assign, results.n_clusters, other.n_clusters):
        sides = ((results, mine, overlap, a, b, tags), (other, theirs, overlap_other, b, a, None))
        for column, (run, summaries, overlaps, cluster, beside, shown_tags) in zip(st.columns(2), sides):
            with column:
                if cluster is None:
                    st.caption("no cluster of this run matches")
                else:
                    share = overlaps.get(cluster, 0.0)
                    note = ("" if beside is None else f" · {share:.0%} in cluster {beside} beside it"
                            + (f" · :orange[{WEAK_MATCH_NOTE}]" if share < WEAK_MATCH else ""))
                    cluster_block(run, summaries[cluster], order, page, cell, note, keep, shown_tags)
    differing = disagreements(results.assign, other.assign)
    differing = differing[keep[differing]]
    st.subheader(f"{count(len(differing), 'image')} the two runs disagree on")
    if len(differing):
        shown = differing[:DISAGREEMENTS_SHOWN]
        st.caption(f"Each is in a cluster of {results.run_id} (first line) whose match in {other.run_id} is not the "
                   "cluster it got there (second line)" + (f"; the first {DISAGREEMENTS_SHOWN} are shown"
                                                           if len(differing) > DISAGREEMENTS_SHOWN else ""))
        captions = [f"{results.image_name(i)}\nleft: cluster {results.assign[i]}\nright: cluster {other.assign[i]}"
                    for i in shown]
        image_grid(results.images.images[shown].numpy(), captions, cell=max(cell, 96))


st.title("Clusters")
results = pick_finished_run()
if results is not None:
    tags = run_tags(results)
    keep = image_filter(results, tags)
    if results.labels is not None:
        confusion_matrix(results)
        cell_images(results, keep, tags)
    filter_note(results, keep)
    compare = st.toggle("Compare with another run side by side")
    size, show, paging = st.columns(3)
    cell = size.slider("Thumbnail size (px)", 48, 128, 64, step=8)
    order = SHOW[show.radio("Show", list(SHOW), horizontal=True)]
    largest = max(passing(summary, keep).size for summary in summaries_of(results))
    page = int(paging.number_input(f"Page ({PER_PAGE} images per cluster)", 1, max(1, -(-largest // PER_PAGE)), 1))
    on_page = [int(i) for summary in summaries_of(results)
               for i in gallery_members(passing(summary, keep), order, page, PER_PAGE)]
    with st.expander("Tag images of these galleries"):
        picked = st.multiselect("Images to tag", on_page, key=f"clusters-pick-{results.run_id}",
                                format_func=lambda i: f"{results.image_name(i)} · cluster {results.assign[i]}",
                                placeholder="type a name to find an image shown below")
        tag_panel(results, picked, tags, key="clusters-tags")
    if compare:
        other = pick_finished_run("Second run", key="second_run_id", exclude=results.run_id)
        if other is not None and len(other.assign) != len(results.assign):
            st.error("The two runs clustered different image sets; pick a run on the same dataset.")
        elif other is not None:
            side_by_side(results, other, order, page, cell, keep, tags)
    else:
        for summary in summaries_of(results):
            cluster_block(results, summary, order, page, cell, keep=keep, tags=tags)

"""Neighbours: an image and its k mined neighbours (other-label neighbours outlined), and how pure the
neighbourhoods are over the dataset and per class."""
from __future__ import annotations

import numpy as np
import streamlit as st

from engine.analysis.results import run_neighbor_purity, view_neighbors
from engine.clustering.metrics import best_neighbor_purity, neighbor_purity
from ui.audit import caption_with_tags, filter_note, image_filter, run_tags, tag_panel
from ui.charts import bar_chart
from ui.common import NEIGHBOURS_OPEN, pick_finished_run
from ui.gallery import image_grid

WORST_FIRST = "worst purity first"
POSITION = "neighbours-position"  # the position input's key: its value alone says which image is shown
ORDER = "order"  # also the address's query parameter (the radio is bound to it): ?order=worst+purity+first
SHOWN_K = "neighbours"  # also the address's query parameter: ?neighbours=5
SHOWN_IMAGE = "neighbours-image"  # the image last shown: a change of the neighbours shown keeps it
URL_IMAGE = "image"  # the address's query parameter naming the shown image: a reload or a shared link shows it
state = st.session_state


def start_order() -> None:
    """A new order starts at its first image."""
    state[POSITION] = 0


def keep_image() -> None:
    """Showing fewer or more neighbours reorders "worst purity first": the image shown stays the one shown."""
    state[NEIGHBOURS_OPEN] = state.get(SHOWN_IMAGE)


def show_random(n: int) -> None:
    state[POSITION] = int(np.random.default_rng().integers(n))


def place_position_input(order: np.ndarray, column) -> int:
    """The "Position" input; returns its value, the position of the image to show.

    Its value is the only record of the shown image: a second copy in the session (as this page once kept) can
    lag behind the input when clicks arrive during a rerun, and the heading then names another image than the
    input. Before the input is drawn, an image asked for by another page or, in a new session, by the address
    (``?image=``), or a position the order no longer has (the filter shrank it), sets its value.
    """
    n = len(order)
    wanted = state.pop(NEIGHBOURS_OPEN, None)
    if wanted is None and POSITION not in state:  # a new session: the image the address names, if any
        wanted = _int_or_none(st.query_params.get(URL_IMAGE))
    found = np.flatnonzero(order == wanted) if wanted is not None else []
    if len(found):
        state[POSITION] = int(found[0])
    elif not 0 <= state.get(POSITION, 0) < n:
        state[POSITION] = 0
    return int(column.number_input(f"Position (0–{n - 1})", 0, n - 1, key=POSITION, persist_state="session",
                                   help="the shown image's place in the order at the left"))


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


st.title("Neighbours")
results = pick_finished_run()
if results is not None:
    neighbors, mined = view_neighbors(results)
    k_all = neighbors.shape[1]
    tags = run_tags(results)
    keep = image_filter(results, tags)
    filter_note(results, keep)
    # one row: "Random image" and the number fields fit beside the order at 1024 px
    left, middle, how_many, right = st.columns([2.6, 2.2, 2, 2.2], vertical_alignment="bottom")
    if state.get(SHOWN_K, 1) > k_all:  # kept from a run that mined more
        state[SHOWN_K] = k_all
    k = int(how_many.number_input(f"Neighbours (1–{k_all})", 1, k_all, value=k_all, key=SHOWN_K,
                                  on_change=keep_image, persist_state="session", bind="query-params")
            ) if k_all > 1 else k_all
    neighbors = neighbors[:, :k]  # the nearest k: purity@k and its charts below follow
    labels = results.labels
    purity = neighbor_purity(neighbors, labels) if labels is not None else None

    n = len(results.assign)
    orders = ["index", WORST_FIRST] if purity is not None else ["index"]
    if state.get(ORDER, orders[0]) not in orders:  # kept from a labelled run; this one has no purity
        state[ORDER] = orders[0]
    order_by = left.radio("Order", orders, horizontal=True, key=ORDER, on_change=start_order,
                          persist_state="session", bind="query-params")
    order = np.argsort(purity, kind="stable") if order_by == WORST_FIRST else np.arange(n)
    order = order[keep[order]]  # only the images the shared filter keeps
    if not len(order):
        st.warning("No image passes the filter.")
        st.stop()
    n = len(order)
    index = int(order[place_position_input(order, middle)])
    right.button("Random image", on_click=show_random, args=(n,))
    shown_of = f"the nearest {k} of " if k < k_all else ""
    st.caption(f"Showing {shown_of}the {k_all} neighbours the method mined, nearest first" if mined else
               f"This method mines no neighbours: showing {shown_of}the {k_all} nearest in its features (cosine)")
    state[SHOWN_IMAGE] = index
    if st.query_params.get(URL_IMAGE) != str(index):
        st.query_params[URL_IMAGE] = str(index)

    shown = [index, *neighbors[index].tolist()]
    wrong = [False] + ([bool(labels[j] != labels[index]) for j in neighbors[index]] if labels is not None
                       else [False] * k)
    captions = [caption_with_tags("query", tags, index)] + [
        caption_with_tags(results.image_caption(j, separator="\n"), tags, j) for j in neighbors[index]]
    title = f"Image #{index}"
    if results.image_name(index) != f"#{index}":
        title += f" · {results.image_name(index)}"
    title += f" · cluster {results.assign[index]}"
    if labels is not None:
        title += f" · label {results.class_name(int(labels[index]))} · purity@{k} {purity[index]:.2f}"
    st.subheader(title)
    image_grid(results.images.images[shown].numpy(), captions, wrong, cell=96)
    if labels is not None:
        st.caption("Neighbours with another label than the query are outlined in red.")
    tag_panel(results, [index], tags, key="neighbours-tags")
    if labels is not None:
        # the run's own figure (the one Train and Compare show) for all its neighbours; fewer: from those shown
        overall = run_neighbor_purity(results.store, results.run_id, k)[0] if k == k_all else float(purity.mean())
        best = best_neighbor_purity(labels, k)
        st.metric(f"Purity@{k} over the dataset", f"{overall:.3f}",
                  help=None if best >= 1 else f"at most {best:.3f} is possible here: some classes have {k} images "
                                              f"or fewer, so their images cannot have {k} neighbours of their class")
        histogram, per_class = st.columns(2)
        same = np.bincount(np.rint(purity * k).astype(int), minlength=k + 1)  # images per count of same-label
        histogram.echarts_chart(bar_chart(f"Neighbour purity@{k}", [f"{j / k:.2f}" for j in range(k + 1)],
                                          same.tolist(), "share with the same label", "images"), height=300)
        classes = np.unique(labels)
        per_class.echarts_chart(bar_chart("Mean purity per class", [results.class_name(int(c)) for c in classes],
                                          [purity[labels == c].mean() for c in classes], "label", "mean purity"),
                                height=300)

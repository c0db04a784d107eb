"""Suspects: the images most likely to be mistakes, ranked, to step through and tag one by one."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from engine.analysis.results import RunResults, view_neighbors
from engine.analysis.suspects import COMBINED, SCORE_TITLES, Suspects, run_suspects
from engine.errors import UserError
from ui.audit import caption_with_tags, filter_note, image_filter, run_tags, tag_panel, tags_text
from ui.common import pick_finished_run
from ui.gallery import image_grid

TABLE_ROWS = 200
SHORT_TITLES = {"neighbours": "neighbours disagree", "confidence": "low confidence", "outlier": "outlier (LOF)",
                "centre": "far from centres", "label": "label vs neighbours"}
SCORES_PER_ROW = 3
state = st.session_state


@st.cache_resource(show_spinner="Scoring every image (once per run)…", max_entries=4)
def suspects_of(run_id: str, finished: float, _results: RunResults) -> Suspects:
    return run_suspects(_results)


NUMBER = "suspect-number"  # the stepper's key: its value alone says which suspect is shown (1 = the first)
NEXT = "suspect-next"  # an image the page is asked to show next (after tagging, a table row); taken once


def start_ranking() -> None:
    """Another ranking starts at its first suspect."""
    state[NUMBER] = 1


def show_next(order: np.ndarray, position: int) -> None:
    """After tagging: show the image after this one in the order, wherever the tag moved it (a filter on tags may
    drop the tagged image from the order)."""
    if position + 1 < len(order):
        state[NEXT] = int(order[position + 1])


def place_stepper(order: np.ndarray, column) -> int:
    """The suspect-number input; returns the shown suspect's position in ``order``.

    Its value is the only record of the shown suspect (a second copy in the session can lag behind the input when
    clicks arrive during a rerun). Before it is drawn, an image asked for (:data:`NEXT`), or a number the order
    no longer has, sets its value.
    """
    wanted = state.pop(NEXT, None)
    found = np.flatnonzero(order == wanted) if wanted is not None else []
    if len(found):
        state[NUMBER] = int(found[0]) + 1
    elif not 1 <= state.get(NUMBER, 1) <= len(order):
        state[NUMBER] = 1
    number = column.number_input("Suspect number (1 = most suspect)", 1, len(order), key=NUMBER,
                                 persist_state="session", help="+ and − step through the suspects in this order")
    return int(number) - 1


st.title("Suspects")
results = pick_finished_run()
if results is not None:
    tags = run_tags(results)
    keep = image_filter(results, tags)
    try:
        suspects = suspects_of(results.run_id, results.record.finished or 0.0, results)
    except UserError as exc:
        st.error(str(exc))
        st.stop()
    st.caption("Images whose cluster disagrees with their neighbours', that the run was unsure of, that sit in a "
               "sparse spot (scikit-learn's Local Outlier Factor) or far from every cluster centre"
               + (", or whose label disagrees with their neighbours'" if results.labels is not None else "")
               + ". Combined: most extreme in any one score first.")
    filter_note(results, keep)
    names = [COMBINED, *suspects.names]
    if state.get("suspect-rank-by", COMBINED) not in names:  # kept from a run with other scores
        state["suspect-rank-by"] = COMBINED
    by = st.radio("Rank by", names, horizontal=True, key="suspect-rank-by", on_change=start_ranking,
                  format_func=lambda name: SCORE_TITLES.get(name, name), persist_state="session")
    order = suspects.ranking(by)
    order = order[keep[order]]
    if not len(order):
        st.warning("No image passes the filter.")
        st.stop()
    stepper, advance_column = st.columns([1, 2], vertical_alignment="bottom")
    position = place_stepper(order, stepper)
    advance = advance_column.toggle("Go to the next suspect after tagging", value=True, key="suspect-advance")
    index = int(order[position])

    neighbors, _ = view_neighbors(results)
    title = f"Suspect {position + 1} of {len(order)}: {results.image_caption(index)}"
    st.subheader(title)
    reasons = suspects.reasons(index)
    st.markdown("**Why:** " + (", ".join(reasons) if reasons else "no score in its top 5 %; it ranks here because "
                                                                  "the images above it were reviewed or filtered"))
    if tags.get(index):
        st.markdown(f"**Tags:** {tags_text(tags, index)}")
    shown = [index, *neighbors[index].tolist()]
    captions = ["suspect"] + [caption_with_tags(results.image_caption(j, separator="\n"), tags, j)
                              for j in neighbors[index]]
    other_cluster = [False] + [bool(results.assign[j] != results.assign[index]) for j in neighbors[index]]
    image_grid(results.images.images[shown].numpy(), captions, other_cluster, cell=96)
    st.caption("The suspect, then its neighbours; neighbours in another cluster are outlined in red.")
    tag_panel(results, [index], tags, key="suspect-tags",
              after=(lambda: show_next(order, position)) if advance else None)
    # three scores to a row: five to a row cut their titles ("low confid…") at 1024 px
    columns = [column for _ in range(0, len(suspects.names), SCORES_PER_ROW) for column in st.columns(SCORES_PER_ROW)]
    for column, name in zip(columns, suspects.names):
        column.metric(SHORT_TITLES[name], f"{suspects.scores[name][index]:.2f}",
                      help=f"{SCORE_TITLES[name]}: at least as high as for {suspects.percentiles[name][index]:.0%} "
                           "of the images")

    st.subheader(f"The first {min(TABLE_ROWS, len(order))} suspects")
    top = order[:TABLE_ROWS]
    table = pd.DataFrame({"rank": np.arange(1, len(top) + 1), "image": [results.image_name(i) for i in top],
                          "cluster": results.assign[top]})
    if results.labels is not None:
        table["label"] = [results.class_name(int(results.labels[i])) for i in top]
    for name in suspects.names:
        table[SHORT_TITLES[name]] = np.round(suspects.scores[name][top], 3)
    table["tags"] = [tags_text(tags, int(i)) for i in top]
    picked = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row",
                          key=f"suspect-table-{results.run_id}-{by}",
                          column_config={"rank": st.column_config.NumberColumn(width="small"),
                                         "tags": st.column_config.TextColumn(width="large")})
    st.caption("Select a row to look at that suspect.")
    rows = picked.selection.rows if picked else []
    if rows and rows[0] != position and state.get("suspect-picked") != (by, rows[0]):
        state["suspect-picked"] = (by, rows[0])  # the table keeps reporting its row: act on a new pick only
        state[NEXT] = int(order[rows[0]])
        st.rerun()

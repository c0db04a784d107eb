"""The Map page's parts: the scatter (ECharts) of a subset of a run's images, the hover preview, finding an image,
and the grid of selected images with a way into the Neighbours page. ``show_map`` takes the indices of the images to
draw, so the page can pass every image or only those its filters keep."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import streamlit as st

from engine.analysis.map_view import (find_images, hover_batch, hover_captions, images_in_areas, map_extent,
                                      scatter_spec, view_window)
from engine.analysis.maps import MAP_KINDS, compute_map
from engine.clustering.metrics import match_clusters
from engine.analysis.results import RunResults
from engine.analysis.thumbnails import png_data_uri, thumbnail
from ui.audit import caption_with_tags, tag_panel
from ui.common import open_in_neighbours

PREVIEW_PX = 96  # the hover preview's width on screen
GRID_COLUMNS, GRID_ROWS = 5, 4  # five tiles keep the button's label whole at 1024 px
MATCHES_LISTED = 50
PROJECTIONS = {"pacmap": "PaCMAP", "umap": "UMAP"}
MAP_HEIGHT_PX = 700
# viridis at ten steps, for colouring by confidence
CONFIDENCE_COLOURS = ("#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58",
                      "#b5de2b", "#fde725")

# clusters and classes: Tableau's ten distinct hues first (the theme's palette pairs a colour with its own light
# shade, so neighbouring clusters looked alike), then their light shades for the 11th to 20th group
CATEGORY_COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                    "#9c755f", "#bab0ac", "#a0cbe8", "#ffbe7d", "#ff9d9a", "#86bcb6", "#8cd17d", "#f1ce63",
                    "#d4a6c8", "#fabfd2", "#d7b5a6", "#79706e")

# registered once per server process: a page script runs again on every rerun, a module only once
hover_preview_component = st.components.v2.component(
    "dce_map_hover", js=(Path(__file__).resolve().parent.parent / "assets" / "map_hover.js").read_text(),
    isolate_styles=False)


@st.cache_data(max_entries=4, show_spinner=False)
def _captions(_results: RunResults, run_id: str) -> list[str]:
    return hover_captions(_results.image_names, _results.assign, _results.labels, _results.class_names)


def colour_groups(results: RunResults, colour_by: str) -> tuple[np.ndarray, dict[int, str]]:
    """Each image's group for a categorical colouring, and the groups' legend names."""
    if colour_by == "cluster":
        return results.assign, {int(c): f"cluster {c}" for c in np.unique(results.assign)}
    if colour_by == "true label":
        return results.labels, {int(c): results.class_name(int(c)) for c in np.unique(results.labels)}
    mapping = match_clusters(results.labels, results.assign)
    correct = (np.array([mapping[c] for c in results.assign]) == results.labels).astype(int)
    return correct, {1: "correct", 0: "incorrect"}


def map_spec(results: RunResults, coords: np.ndarray, points: np.ndarray, colour_by: str,
             found: int | None = None) -> dict:
    """The ECharts option of the Map (see :func:`scatter_spec`): one series per group of ``colour_by``, or per
    tenth of the confidence range (a large-mode series has one colour); ``found`` ringed, the view zoomed in on
    it."""
    if colour_by == "confidence":
        bins = np.minimum((results.confidence[points] * len(CONFIDENCE_COLOURS)).astype(int),
                          len(CONFIDENCE_COLOURS) - 1)
        width = 1 / len(CONFIDENCE_COLOURS)
        # the range alone: with "confidence " before it the legend's 84 px cut every name to "confidence 0.2…"
        groups = [(f"{b * width:.1f}–{(b + 1) * width:.1f}", points[bins == b], colour)
                  for b, colour in enumerate(CONFIDENCE_COLOURS)]
    else:
        group_of, names = colour_groups(results, colour_by)
        groups = [(name, points[group_of[points] == group], CATEGORY_COLOURS[n % len(CATEGORY_COLOURS)])
                  for n, (group, name) in enumerate(names.items())]
    return scatter_spec(coords, groups, map_extent(coords),
                        ring=None if found is None else (f"found: {results.image_name(found)}", found),
                        window=None if found is None else view_window(coords, found))


def remember_hover(key: str) -> None:
    st.session_state[f"{key}-wanted"] = st.session_state[key]["hover"]


@st.fragment
def hover_preview(results: RunResults, coords: np.ndarray, points: np.ndarray, chart_key: str) -> None:
    """The hovered image above the pointer. A hover the browser has no thumbnail for reruns only this fragment,
    which sends that image's thumbnail and those of its nearest points on the map."""
    key = f"{chart_key}-hover"
    wanted = st.session_state.get(f"{key}-wanted")
    batch = hover_batch(coords, points, int(wanted)) if wanted is not None and 0 <= wanted < len(coords) else []
    images = results.images.images[np.asarray(batch, dtype=np.int64)].numpy() if len(batch) else []
    captions = _captions(results, results.run_id)
    hover_preview_component(
        key=key, height=0, on_hover_change=partial(remember_hover, key),
        data={"chart": chart_key, "run": results.run_id, "size": PREVIEW_PX,
              "thumbs": {str(i): png_data_uri(image) for i, image in zip(batch, images)},
              "captions": {str(i): captions[i] for i in batch}})


def image_tile(results: RunResults, index: int, column, key: str, tags: dict[int, list[str]]) -> None:
    """One image with its name, cluster, label and tags, and a button that opens it on the Neighbours page."""
    column.image(thumbnail(results.images.images[index].numpy(), PREVIEW_PX),
                 caption=caption_with_tags(results.image_caption(index), tags, index))
    if column.button("Neighbours", key=key, type="tertiary",
                     help="Open this image and its neighbours on the Neighbours page"):
        open_in_neighbours(index)


def search(results: RunResults, points: np.ndarray, column) -> np.ndarray:
    """A "find" box; returns the drawn images its query names (see :func:`find_images`), best first."""
    query = column.text_input("Find an image", key=f"map-find-{results.run_id}",
                              placeholder="index or file name",
                              help="A number finds that image's index; text finds file names containing it.")
    matches = find_images(query, results.image_names)
    shown = matches[np.isin(matches, points)]
    if query.strip() and not len(shown):
        column.warning(f"No image on the map matches “{query}”" + (" (the filters hide it)" if len(matches) else ""))
    return shown


def found_image(results: RunResults, matches: np.ndarray) -> int:
    """The image a search found, beside its picture: one match, or the one chosen among the first 50."""
    picture, details = st.columns([1, 5])
    found = int(matches[0])
    if len(matches) > 1:
        listed = matches[:MATCHES_LISTED].tolist()
        found = details.selectbox(f"{len(matches)} images match" + (f"; the first {MATCHES_LISTED} are listed"
                                                                    if len(matches) > MATCHES_LISTED else ""),
                                  listed, format_func=results.image_caption, key=f"map-found-{results.run_id}")
    else:
        details.markdown(f"Found **{results.image_caption(found)}**")
    picture.image(thumbnail(results.images.images[found].numpy(), PREVIEW_PX))
    if details.button("Open in Neighbours", key=f"map-open-found-{found}",
                      help="Open this image and its neighbours on the Neighbours page"):
        open_in_neighbours(found)
    return found


def selection_grid(results: RunResults, rows: list[int], tags: dict[int, list[str]]) -> None:
    """The selected images, a page of them at a time, each with a button into the Neighbours page, and the panel
    that tags them all."""
    per_page = GRID_COLUMNS * GRID_ROWS
    n_pages = -(-len(rows) // per_page)
    title, pager = st.columns([3, 1])
    title.subheader(f"{len(rows)} selected")
    page = pager.number_input(f"Page (of {n_pages})", 1, n_pages, 1, key="map-selection-page") if n_pages > 1 else 1
    shown = rows[(page - 1) * per_page:page * per_page]
    for first in range(0, len(shown), GRID_COLUMNS):
        for column, index in zip(st.columns(GRID_COLUMNS), shown[first:first + GRID_COLUMNS]):
            image_tile(results, index, column, key=f"map-open-{index}", tags=tags)
    tag_panel(results, rows, tags, key="map-tags")


def show_map(results: RunResults, points: np.ndarray, tags: dict[int, list[str]]) -> None:
    """The Map of ``points`` (indices of the run's images): controls, the scatter with its hover preview, the found
    image and the selected ones."""
    points = np.asarray(points, dtype=np.int64)
    projection, colouring, find = st.columns([2.2, 4.2, 2.6])
    kind = projection.radio("Projection", MAP_KINDS, horizontal=True, format_func=PROJECTIONS.get)
    colourings = ["cluster", "confidence"] + (["true label", "correct / incorrect"] if results.labels is not None
                                              else [])
    colour_by = colouring.radio("Colour by", colourings, horizontal=True)
    matches = search(results, points, find)
    with st.spinner(f"Computing the {PROJECTIONS[kind]} map of {len(results.assign)} points (once per run)…"):
        coords = compute_map(results, kind)
    if not len(points):
        st.info("No image to draw: the filters keep none.")
        return

    found = found_image(results, matches) if len(matches) else None
    chart_key = f"map-{results.run_id}-{kind}"  # not the colouring: colouring the map anew keeps its selection
    st.space("small")  # the chart's own toolbar (download, full screen) shows above it: clear of the controls
    event = st.echarts_chart(map_spec(results, coords, points, colour_by, found), key=chart_key,
                             height=MAP_HEIGHT_PX, on_select="rerun")
    hover_preview(results, coords, points, chart_key)

    rows = images_in_areas(coords, points, event["selection"]["areas"] if event else [])
    if rows:
        selection_grid(results, rows, tags)
    else:
        st.caption("Hover a point to see its image. To list images, pick the box or lasso tool at the top right of the "
                   "map and draw around them. Rest the pointer on the map, then scroll to zoom; drag to pan; "
                   "double-click clears the selection.")

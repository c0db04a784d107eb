"""The audit pieces the explorer pages share: the image filter in the sidebar and the tag panel.

The filter's choices live under plain session keys (``filter-…``), so a filter set on one page holds on every
other; its widgets start from them on each page. The address carries them too (``?cluster=3&cluster=7``,
``label``, ``confidence=0.2-0.9``, ``correct``, ``tag``), so a reload or a shared link shows the same images.
Tags are read from the run store on every script run, so a tag set in one page, session or process shows
everywhere at the next rerun.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import streamlit as st

from engine.analysis.filters import ANY_TAG, CORRECTNESS, NO_TAG, ImageFilter, confidence_range
from engine.analysis.results import RunResults
from engine.analysis.tags import SUGGESTED_TAGS, label_tag, tag_images, tag_names, untag_images
from engine.errors import UserError

state = st.session_state
FILTER_KEYS = ("filter-clusters", "filter-labels", "filter-confidence", "filter-correctness", "filter-tags")
FILTER_START = {"filter-clusters": [], "filter-labels": [], "filter-confidence": (0.0, 1.0),
                "filter-correctness": "all", "filter-tags": []}


def run_tags(results: RunResults) -> dict[int, list[str]]:
    """The run's tags as the store holds them now: image index → tags."""
    return results.store.image_tags(results.run_id)


def tags_text(tags: dict[int, list[str]], index: int) -> str:
    """An image's tags as one caption line ("" when it has none)."""
    return ", ".join(tags.get(index, []))


def caption_with_tags(caption: str, tags: dict[int, list[str]], index: int) -> str:
    """``caption`` with a line of the image's tags under it, when it has any."""
    return caption + (f"\n[{tags_text(tags, index)}]" if tags.get(index) else "")


# -- the shared filter ---------------------------------------------------------------------------------------------


def _kept_choice(key: str, allowed: Sequence) -> None:
    """Drop from the stored choice what the current run does not offer (another run's clusters or tags)."""
    value = state.get(key, FILTER_START[key])
    if key == "filter-confidence":
        state[key] = tuple(value)
    elif key == "filter-correctness":
        state[key] = value if value in allowed else "all"
    else:
        state[key] = [item for item in value if item in allowed]
    state[f"widget-{key}"] = state[key]  # the widget starts from the kept choice on every page


def _remember(key: str) -> None:
    state[key] = state[f"widget-{key}"]


def clear_filter() -> None:
    for key, value in FILTER_START.items():
        state[key] = value


def current_filter() -> ImageFilter:
    """The filter the session's choices make (defaults for what was never set)."""
    values = {key: state.get(key, start) for key, start in FILTER_START.items()}
    return ImageFilter(clusters=tuple(values["filter-clusters"]), labels=tuple(values["filter-labels"]),
                       confidence=tuple(float(v) for v in values["filter-confidence"]),
                       correctness=values["filter-correctness"], tags=tuple(values["filter-tags"]))


def _filter_from_address() -> None:
    """In a new session (a reload, a shared link), the filter the address names; a part that does not parse
    is left at its start, and what the run does not offer is dropped later (:func:`_kept_choice`)."""
    if any(key in state for key in FILTER_KEYS):
        return
    params = st.query_params
    state["filter-clusters"] = _integers(params.get_all("cluster"))
    state["filter-labels"] = _integers(params.get_all("label"))
    state["filter-confidence"] = _confidence_range(params.get("confidence"))
    state["filter-correctness"] = params.get("correct", "all")
    state["filter-tags"] = params.get_all("tag")


def _integers(texts: list[str]) -> list[int]:
    return [int(text) for text in texts if text.isdigit()]


def _confidence_range(text: str | None) -> tuple[float, float]:
    """The address's confidence range (:func:`confidence_range`); anything else as the whole range."""
    try:
        return confidence_range(text or "")
    except ValueError:
        return FILTER_START["filter-confidence"]


def _filter_to_address(chosen: ImageFilter) -> None:
    """Write ``chosen`` into the address; a part at its start is left out."""
    low, high = chosen.confidence
    start = ImageFilter()
    parts = {"cluster": [str(c) for c in chosen.clusters], "label": [str(c) for c in chosen.labels],
             "confidence": [f"{low:g}-{high:g}"] if chosen.confidence != start.confidence else [],
             "correct": [chosen.correctness] if chosen.correctness != start.correctness else [],
             "tag": list(chosen.tags)}
    for name, values in parts.items():
        if st.query_params.get_all(name) == values:
            continue
        if values:
            st.query_params[name] = values if len(values) > 1 else values[0]
        else:
            del st.query_params[name]


def image_filter(results: RunResults, tags: dict[int, list[str]]) -> np.ndarray:
    """Draw the filter in the sidebar and return which images of ``results`` it keeps (a boolean vector)."""
    _filter_from_address()
    labelled = results.labels is not None
    clusters = list(range(results.n_clusters))
    classes = sorted(int(label) for label in np.unique(results.labels)) if labelled else []
    tag_options = [ANY_TAG, NO_TAG, *tag_names(tags)]
    tag_options += [tag for tag in state.get("filter-tags", []) if tag not in tag_options]  # a tag just removed
    offered = {"filter-clusters": clusters, "filter-labels": classes, "filter-confidence": None,
               "filter-correctness": CORRECTNESS, "filter-tags": tag_options}
    for key, allowed in offered.items():
        _kept_choice(key, allowed)
    bar = st.sidebar
    bar.subheader("Filter")
    bar.multiselect("Clusters", clusters, key="widget-filter-clusters", on_change=_remember,
                    args=("filter-clusters",), format_func=lambda c: f"cluster {c}", placeholder="all clusters")
    if labelled:
        bar.multiselect("True labels", classes, key="widget-filter-labels", on_change=_remember,
                        args=("filter-labels",), format_func=results.class_name, placeholder="all labels")
    bar.slider("Confidence", 0.0, 1.0, key="widget-filter-confidence", step=0.01, on_change=_remember,
               args=("filter-confidence",))
    if labelled:
        bar.radio("Correct / incorrect", CORRECTNESS, key="widget-filter-correctness", on_change=_remember,
                  args=("filter-correctness",), horizontal=True,
                  help="correct: the image's label is the class its cluster is matched to")
    bar.multiselect("Tags", tag_options, key="widget-filter-tags", on_change=_remember, args=("filter-tags",),
                    placeholder="any or no tag")
    chosen = current_filter()
    _filter_to_address(chosen)
    keep = chosen.mask(results, tags)
    if chosen.active:
        bar.caption(f"{int(keep.sum())} of {len(keep)} images pass: {chosen.describe(results.class_name)}. "
                    "The filter holds on the Map, Neighbours, Clusters, Suspects and Export pages.")
        bar.button("Clear the filter", on_click=clear_filter)
    else:
        bar.caption(f"All {len(keep)} images. A filter set here holds on the Map, Neighbours, Clusters, Suspects "
                    "and Export pages.")
    return keep


def filter_note(results: RunResults, keep: np.ndarray) -> None:
    """A line on the page itself saying that a filter hides images (the sidebar may be collapsed)."""
    chosen = current_filter()
    if chosen.active:
        st.info(f"Filter: {chosen.describe(results.class_name)} — {int(keep.sum())} of {len(keep)} images shown "
                "(change it in the sidebar).")


# -- the tag panel -------------------------------------------------------------------------------------------------


def _apply(results: RunResults, images: list[int], key: str, tag: str | None = None, typed: str | None = None,
           remove: bool = False, after: Callable[[], None] | None = None) -> None:
    """A tag button's callback: tag (or untag) the images with ``tag`` or the text of the widget ``typed``, say
    what happened, then run ``after``. The widget is read here, when the button is pressed, never earlier."""
    if typed is not None:
        tag = state.get(typed) or ""
        if typed.endswith("-label"):
            tag = label_tag(tag) if tag else ""
    try:
        changed = (untag_images if remove else tag_images)(results, images, tag)
    except UserError as exc:
        state[f"{key}-said"] = ("error", str(exc))
        return
    one = f"image {results.image_name(images[0])}" if len(images) == 1 else None  # named: ``after`` may move on
    if remove:
        said = f"“{tag}” taken off {one or f'{changed} image(s)'}"
    elif one:
        said = f"{one} {'newly tagged' if changed else 'already had'} “{tag}”"
    else:
        already = len(images) - changed
        said = f"{changed} image(s) newly tagged “{tag}”" + (f"; {already} had it already" if already else "")
    if after is not None and not remove:
        after()
        said += "; showing the next one"
    state[f"{key}-said"] = ("success", said)
    if typed == f"{key}-text":
        state[typed] = ""
    elif typed == f"{key}-label":  # else the next image shown is offered this label, one click from a wrong tag
        state[typed] = None


def tag_panel(results: RunResults, images: Sequence[int], tags: dict[int, list[str]], key: str,
              after: Callable[[], None] | None = None) -> None:
    """Buttons that tag ``images`` ("mislabelled", "duplicate", typed text, a corrected label for a labelled set)
    and take tags off them; ``after`` runs after each tagging (e.g. move on to the next image)."""
    images = [int(i) for i in images]
    if not images:
        return
    said = state.pop(f"{key}-said", None)
    carried = list(dict.fromkeys(tag for i in images for tag in tags.get(i, [])))
    what = f"image {results.image_name(images[0])}" if len(images) == 1 else f"these {len(images)} images"
    st.markdown(f"**Tag {what}** · " + (f"tagged: {', '.join(carried)}" if carried else "no tags yet"))
    common = {"args": (results, images, key), "width": "stretch"}
    columns = st.columns([1, 1, 2, 1])
    for column, tag in zip(columns, SUGGESTED_TAGS):
        column.button(tag, key=f"{key}-{tag}", on_click=_apply, kwargs={"tag": tag, "after": after}, **common)
    columns[2].text_input("Other tag", key=f"{key}-text", label_visibility="collapsed",
                          placeholder="another tag, e.g. blurry")
    columns[3].button("Add tag", key=f"{key}-add", on_click=_apply, kwargs={"typed": f"{key}-text", "after": after},
                      **common)
    extra = st.columns([2, 1, 2, 1])
    if results.labels is not None:
        names = [results.class_name(int(c)) for c in sorted(np.unique(results.labels))]
        extra[0].selectbox("Corrected label", names, key=f"{key}-label", index=None,
                           placeholder="corrected label…", label_visibility="collapsed")
        extra[1].button("Set label", key=f"{key}-set-label", on_click=_apply,
                        kwargs={"typed": f"{key}-label", "after": after}, **common)
    if carried:
        extra[2].selectbox("Tag to remove", carried, key=f"{key}-remove", label_visibility="collapsed")
        extra[3].button("Remove tag", key=f"{key}-remove-button", on_click=_apply,
                        kwargs={"typed": f"{key}-remove", "remove": True}, **common)
    if said is not None:
        getattr(st, said[0])(said[1])

"""Small helpers the pages share."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("streamlit")
from ui.common import format_seconds  # noqa: E402


@pytest.mark.parametrize("seconds, text", [(None, "—"), (42.4, "42 s"), (185, "3 min 05 s"),
                                           (2 * 3600 + 7 * 60, "2 h 07 min"), (39000 * 60, "27 d 2 h")])
def test_durations_read_in_the_largest_sensible_units(seconds, text):
    assert format_seconds(seconds) == text


def test_the_quick_start_hint_promises_no_second_and_quotes_the_last_real_wait(tmp_path):
    from engine.analysis.overview import quick_start_hint
    from engine.runs import RunStore

    store = RunStore(tmp_path / "runs")
    assert "a second" not in quick_start_hint(store) and "half a minute" in quick_start_hint(store)
    run_id = store.create_run("kmeans", "digits", {"n_clusters": 10}, preset="fast")
    created = store.get(run_id).created
    store.update(run_id, status="finished", started=created + 1, finished=created + 14.2)
    assert quick_start_hint(store) == "digits + kmeans took 14 s here last time"


def test_the_pages_say_what_the_quickest_run_really_takes(tmp_path, monkeypatch):
    from conftest import open_page

    monkeypatch.setenv("DCE_RUNS_DIR", str(tmp_path / "runs"))
    said = [info.value for path in ("pages/map.py", "pages/train.py") for info in open_page(path).info]
    assert said and not [text for text in said if "takes a second" in text], said
    assert all("half a minute" in text for text in said), said


def test_a_gallery_is_laid_out_by_the_browser_with_readable_escaped_captions_and_frames():
    """Galleries flow with the column (no fixed-width picture shrunk until its captions cannot be read); captions
    are page text, so a name in any script reads as written, and markup in a file name stays text."""
    from ui.gallery import OUTLINE_CSS, grid_html

    images = np.zeros((3, 8, 8, 1), dtype=np.uint8)
    page = grid_html(images, ["日本語.png\ncluster 2", "<b>x</b>.png", "c.png"], [False, True, False], cell=96)
    assert page.count("<figure") == 3 and page.count("width:96px;height:96px") == 3
    assert "日本語.png</div><div" in page and "cluster 2" in page  # one line per caption line
    assert "&lt;b&gt;x&lt;/b&gt;.png" in page and "<b>" not in page
    assert page.count(f"solid {OUTLINE_CSS}") == 1 and "flex-wrap:wrap" in page
    with pytest.raises(ValueError):
        grid_html(images, ["one caption"], cell=96)


def test_a_queued_run_says_what_it_waits_for_and_when_it_starts_only_when_that_is_known(tmp_path):
    from engine.analysis.overview import queue_note
    from engine.runs import RunStore

    store = RunStore(tmp_path / "runs")
    running = store.create_run("scan", "digits", {"n_clusters": 10})
    store.update(running, status="running", eta_s=100.0)
    estimated = store.create_run("kmeans", "digits", {"n_clusters": 10}, options={"estimate": {"seconds": 50.0}})
    unknown = store.create_run("kmeans", "digits", {"n_clusters": 10})
    ahead = [store.get(running), store.get(estimated)]
    assert queue_note(ahead, one_worker=True) == f"queued behind 2 runs ({running}, {estimated}) · starts in about " \
                                                 f"2 min 30 s"
    assert "starts in" not in queue_note(ahead, one_worker=False)  # two workers: which frees first is not known
    assert "starts in" not in queue_note(ahead + [store.get(unknown)], one_worker=True)
    assert queue_note([], one_worker=True) == "queued · starts as soon as a worker is free"

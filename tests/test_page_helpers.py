"""Small helpers the pages share."""
from __future__ import annotations

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

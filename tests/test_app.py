"""The Streamlit app, driven headless with AppTest: it renders, and a digits K-means run started from the Train
page finishes and shows its scores."""
from __future__ import annotations

import time

import pytest

from conftest import HANG_GUARD_S, REPO

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402


def app() -> AppTest:
    return AppTest.from_file(str(REPO / "app.py"), default_timeout=HANG_GUARD_S)


def test_app_opens_on_the_train_page_with_digits_preselected():
    at = app().run()
    assert not at.exception
    assert at.title[0].value == "Train"
    dataset = next(box for box in at.selectbox if box.label == "Dataset")
    assert dataset.value == "digits"
    assert any("No runs yet" in info.value for info in at.info)


def test_a_kmeans_run_started_from_the_train_page_finishes_and_shows_its_scores():
    at = app().run()
    next(box for box in at.selectbox if box.label == "Method").select("kmeans")
    next(button for button in at.button if button.label == "Start").click()
    at.run()
    assert not at.exception
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        at.run()
        if any(metric.label == "ACC" for metric in at.metric):
            break
        time.sleep(0.5)
    assert not at.exception
    acc = next(metric for metric in at.metric if metric.label == "ACC")
    assert 0.7 < float(acc.value) < 0.85
    assert any("finished" in md.value for md in at.markdown)


def test_how_it_works_panel_renders_the_methods_own_stages_and_equations():
    at = app().run()
    from engine.methods import get_method

    scan = get_method("scan")
    latex = [element.value.strip("$\n") for element in at.latex]  # st.latex wraps in $$…$$
    assert latex == [stage.equation for stage in scan.stages if stage.equation]
    table = at.table[0].value
    assert list(table["setting"]) == list(scan.key_settings)
    assert table.set_index("setting").loc["pretext_epochs", "paper"] == "500"


def test_scan_offers_reusing_a_pretext_and_kmeans_does_not():
    at = app().run()
    assert any(box.label == "Reuse pretext from run" for box in at.selectbox)
    next(box for box in at.selectbox if box.label == "Method").select("kmeans").run()
    assert not any(box.label == "Reuse pretext from run" for box in at.selectbox)


@pytest.mark.parametrize("preset", ["fast", "paper"])
def test_the_train_page_offers_every_method_with_its_numeric_settings_and_objectives(preset):
    from engine.methods import get_method, list_methods

    at = app().run()
    next(radio for radio in at.radio if radio.label == "Preset").set_value(preset).run()
    for name in list_methods():
        next(box for box in at.selectbox if box.label == "Method").select(name).run()
        assert not at.exception, name
        method = get_method(name)
        values = method.describe()["presets"][preset]
        numeric = [key for key in method.key_settings
                   if isinstance(values[key], (int, float)) and not isinstance(values[key], bool)]
        assert sorted(box.label for box in at.number_input if box.label in numeric) == sorted(numeric), name
        latex = [element.value.strip("$\n") for element in at.latex]
        assert latex == [stage.equation for stage in method.stages if stage.equation], name


def test_the_image_size_chosen_on_the_train_page_is_the_size_the_run_decodes_and_records():
    from engine.runs import RunStore

    at = app().run()
    size = next(box for box in at.number_input if box.label == "Image size (px)")
    assert size.value is None  # auto: the dataset's own size
    size.set_value(16)
    next(box for box in at.selectbox if box.label == "Method").select("kmeans")
    next(button for button in at.button if button.label == "Start").click()
    at.run()
    assert not at.exception
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        at.run()
        if any(metric.label == "ACC" for metric in at.metric):
            break
        time.sleep(0.5)
    (record,) = RunStore().list()
    assert record.options["image_size"] == 16 and record.summary["image_size"] == 16

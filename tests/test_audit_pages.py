"""The audit in the app, driven headless with AppTest: tags set on one page show on the others, the shared filter
holds from page to page, the Suspects page steps through the ranked suspects, and the export carries the tags."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from conftest import HANG_GUARD_S, REPO
from engine.analysis.results import load_results
from engine.analysis.suspects import run_suspects
from engine.runs import JobManager, RunRequest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402
from streamlit.elements.echarts_chart import EChartsSelectionState, EChartsState  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A runs folder with one finished K-means run on digits; yields (folder, results)."""
    folder = tmp_path_factory.mktemp("audit-page-runs")
    manager = JobManager(folder)
    run_id = manager.submit(RunRequest("kmeans", "digits", device="cpu"))
    assert manager.wait(run_id, timeout=HANG_GUARD_S).status == "finished"
    manager.shutdown()
    return folder, load_results(manager.store, run_id)


@pytest.fixture
def app(run, monkeypatch):
    """The app, on its Home page, over the run's folder, with the run carrying no tags."""
    folder, results = run
    for image, tags in results.store.image_tags(results.run_id).items():
        for tag in tags:
            results.store.remove_tag(results.run_id, [image], tag)
    monkeypatch.setenv("DCE_RUNS_DIR", str(folder))
    return AppTest.from_file(str(REPO / "app.py"), default_timeout=HANG_GUARD_S).run()


def go(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def suspect_title(at: AppTest) -> str:
    return next(h.value for h in at.subheader if h.value.startswith("Suspect "))


def plotted_points(at: AppTest) -> int:
    spec = json.loads(at.get("echarts_chart")[0].proto.spec)
    return sum(len(series["data"]) for series in spec["series"] if not series.get("silent"))


def test_a_tag_set_on_suspects_shows_and_filters_on_every_other_page_and_reaches_the_csv(app, run):
    _, results = run
    first, second = run_suspects(results).ranking()[:2].tolist()
    at = go(app, "suspects")
    assert suspect_title(at).startswith(f"Suspect 1 of 1797: #{first} ")
    at.button(key="suspect-tags-mislabelled").click().run()
    assert not at.exception
    assert results.store.image_tags(results.run_id) == {first: ["mislabelled"]}
    assert suspect_title(at).startswith(f"Suspect 2 of 1797: #{second} ")  # tagging moved on

    go(at, "clusters")
    tags_filter = at.multiselect(key="widget-filter-tags")
    assert "mislabelled" in tags_filter.options
    tags_filter.set_value(["mislabelled"]).run()
    assert not at.exception
    ranges = [c.value for c in at.caption if c.value.startswith("images ")]
    assert ranges == ["images 1–1 of 1 passing the filter (outlined: not the majority label)"]
    assert any(c.value == f"Tagged here: #{first} (mislabelled)" for c in at.caption)

    go(at, "neighbours")  # the filter holds: the only image to step through is the tagged one
    assert at.multiselect(key="widget-filter-tags").value == ["mislabelled"]
    assert next(h.value for h in at.subheader if h.value.startswith("Image #")).startswith(f"Image #{first} ")
    assert any(md.value.startswith("**Tag image #") and "tagged: mislabelled" in md.value for md in at.markdown)

    go(at, "map")
    assert plotted_points(at) == 1

    go(at, "export")
    next(button for button in at.button if button.label == "Export").click().run()
    assert not at.exception
    exported = results.store.run_dir(results.run_id) / "exports" / "assignments.csv"
    rows = list(csv.DictReader(io.StringIO(exported.read_text())))
    assert [(int(row["index"]), row["tags"]) for row in rows] == [(first, "mislabelled")]


def test_a_filter_set_on_the_map_holds_on_clusters_and_clears_everywhere(app, run):
    _, results = run
    at = go(app, "map")
    at.multiselect(key="widget-filter-clusters").set_value([3]).run()
    assert plotted_points(at) == int((results.assign == 3).sum())
    go(at, "clusters")
    assert at.multiselect(key="widget-filter-clusters").value == [3]
    empty = [c.value for c in at.caption if c.value == "no image of this cluster passes the filter"]
    assert len(empty) == 9
    assert any(info.value.startswith("Filter: cluster 3 — ") for info in at.info)
    next(button for button in at.sidebar.button if button.label == "Clear the filter").click().run()
    assert not at.exception and at.multiselect(key="widget-filter-clusters").value == []
    go(at, "map")
    assert plotted_points(at) == 1797


def test_the_filter_is_in_the_address_so_a_reload_or_a_shared_link_shows_the_same_images(app, run, monkeypatch):
    folder, results = run
    at = go(app, "neighbours")
    at.multiselect(key="widget-filter-clusters").set_value([3, 5]).run()
    at.sidebar.slider(key="widget-filter-confidence").set_value((0.25, 1.0)).run()
    at.radio(key="widget-filter-correctness").set_value("incorrect").run()
    address = dict(at.query_params)
    assert (address["cluster"], address["confidence"], address["correct"]) == (["3", "5"], "0.25-1", "incorrect")
    assert "label" not in address and "tag" not in address  # parts at their start stay out of the address
    # a new session opened on that address (a reload, a link sent to a colleague) starts with the same filter
    monkeypatch.setenv("DCE_RUNS_DIR", str(folder))
    reloaded = AppTest.from_file(str(REPO / "pages" / "neighbours.py"), default_timeout=HANG_GUARD_S)
    reloaded.query_params.update(address)
    reloaded.run()
    assert not reloaded.exception
    assert reloaded.multiselect(key="widget-filter-clusters").value == [3, 5]
    assert reloaded.sidebar.slider(key="widget-filter-confidence").value == (0.25, 1.0)
    assert reloaded.radio(key="widget-filter-correctness").value == "incorrect"
    # an address that does not parse keeps every image rather than failing
    odd = AppTest.from_file(str(REPO / "pages" / "neighbours.py"), default_timeout=HANG_GUARD_S)
    odd.query_params.update(cluster=["x", "99"], confidence="0.9-0.1", correct="maybe")
    odd.run()
    assert not odd.exception and not any(info.value.startswith("Filter:") for info in odd.info)
    # clearing the filter clears the address
    next(button for button in at.sidebar.button if button.label == "Clear the filter").click().run()
    assert not {"cluster", "confidence", "correct"} & set(at.query_params)


def test_a_corrected_label_set_on_neighbours_reaches_the_corrected_labels_csv(app, run):
    _, results = run
    at = go(app, "neighbours")
    shown = int(next(h.value for h in at.subheader if h.value.startswith("Image #")).split("#")[1].split()[0])
    at.selectbox(key="neighbours-tags-label").select("7").run()
    at.button(key="neighbours-tags-set-label").click().run()
    assert not at.exception
    assert results.store.image_tags(results.run_id) == {shown: ["label: 7"]}
    assert at.selectbox(key="neighbours-tags-label").value is None  # not offered again for the next image
    go(at, "export")
    next(button for button in at.button if button.label == "Export").click().run()
    exported = results.store.run_dir(results.run_id) / "exports" / "corrected_labels.csv"
    rows = {int(row["index"]): row for row in csv.DictReader(io.StringIO(exported.read_text()))}
    assert len(rows) == 1797
    assert (rows[shown]["corrected_label_name"], rows[shown]["corrected"]) == ("7", "1")
    assert sum(row["corrected"] == "1" for row in rows.values()) == 1


def test_tags_typed_on_the_clusters_page_and_removed_again(app, run):
    _, results = run
    at = go(app, "clusters")
    picker = at.multiselect(key=f"clusters-pick-{results.run_id}")
    chosen = picker.options[:2]
    picker.set_value([int(option.split(" · ")[0].lstrip("#")) for option in chosen]).run()
    at.text_input(key="clusters-tags-text").input("blurry").run()
    at.button(key="clusters-tags-add").click().run()
    assert not at.exception
    tagged = results.store.image_tags(results.run_id)
    assert sorted(tagged) == sorted(int(option.split(" · ")[0].lstrip("#")) for option in chosen)
    assert all(tags == ["blurry"] for tags in tagged.values())
    assert any(s.value == "2 image(s) newly tagged “blurry”" for s in at.success)
    at.button(key="clusters-tags-remove-button").click().run()
    assert results.store.image_tags(results.run_id) == {}


def test_stepping_through_suspects_follows_the_chosen_ranking(app, run):
    _, results = run
    suspects = run_suspects(results)
    at = go(app, "suspects")
    at.radio(key="suspect-rank-by").set_value("outlier").run()
    order = suspects.ranking("outlier")
    for step in range(3):
        assert suspect_title(at).startswith(f"Suspect {step + 1} of 1797: #{order[step]} ")
        at.number_input(key="suspect-number").increment().run()
    at.toggle(key="suspect-advance").set_value(False).run()
    at.button(key="suspect-tags-duplicate").click().run()
    assert suspect_title(at).startswith(f"Suspect 4 of 1797: #{order[3]} ")  # stays when told to
    assert results.store.image_tags(results.run_id) == {int(order[3]): ["duplicate"]}
    assert [s.value for s in at.success] == [f"image #{order[3]} newly tagged “duplicate”"]
    table = at.dataframe[0].value
    assert table["tags"].iloc[3] == "duplicate" and table["image"].iloc[0] == f"#{order[0]}"
    assert np.array_equal(table["cluster"].to_numpy()[:5], results.assign[order[:5]])
    at.toggle(key="suspect-advance").set_value(True).run()
    at.button(key="suspect-tags-mislabelled").click().run()
    assert suspect_title(at).startswith(f"Suspect 5 of 1797: #{order[4]} ")
    # the message under the next suspect names the image it is about
    assert [s.value for s in at.success] == [f"image #{order[3]} newly tagged “mislabelled”; showing the next one"]
    assert results.store.image_tags(results.run_id) == {int(order[3]): ["duplicate", "mislabelled"]}


def test_the_suspect_shown_follows_its_number_a_table_row_and_holds_across_pages(app, run):
    _, results = run
    order = run_suspects(results).ranking()
    at = go(app, "suspects")
    at.number_input(key="suspect-number").set_value(3).run()
    assert suspect_title(at).startswith(f"Suspect 3 of 1797: #{order[2]} ")
    go(at, "clusters")
    go(at, "suspects")
    assert at.number_input(key="suspect-number").value == 3
    assert suspect_title(at).startswith(f"Suspect 3 of 1797: #{order[2]} ")
    at.session_state[f"suspect-table-{results.run_id}-combined"] = {"selection": {"rows": [7], "columns": []}}
    at.run()
    assert not at.exception
    assert at.number_input(key="suspect-number").value == 8
    assert suspect_title(at).startswith(f"Suspect 8 of 1797: #{order[7]} ")


def test_points_selected_on_the_map_are_tagged_and_the_figure_keeps_the_selection(app, run):
    _, results = run
    at = go(app, "map")
    figure = at.get("echarts_chart")[0].proto.spec
    coords = np.load(results.store.run_dir(results.run_id) / "map_pacmap.npy")
    # a lasso around image 11 and a box around image 42 (each small enough to hold that image only)
    x, y = coords[11]
    lasso = [[x - 1e-4, y - 1e-4], [x + 1e-4, y - 1e-4], [x, y + 1e-4]]
    (x0, y0), (x1, y1) = coords[42] - 1e-5, coords[42] + 1e-5
    at.session_state[f"map-{results.run_id}-pacmap"] = EChartsState({"selection": EChartsSelectionState(
        {"selected": [], "areas": [{"brush_index": 0, "brush_type": "polygon", "coord_range": lasso},
                                   {"brush_index": 1, "brush_type": "rect", "coord_range": [[x0, x1], [y0, y1]]}]})})
    at.run()
    assert any(h.value == "2 selected" for h in at.subheader)
    at.button(key="map-tags-duplicate").click().run()
    assert not at.exception
    assert results.store.image_tags(results.run_id) == {11: ["duplicate"], 42: ["duplicate"]}
    assert any(md.value == "**Tag these 2 images** · tagged: duplicate" for md in at.markdown)
    # a chart whose spec changes is drawn anew, without its brushes: tagging must leave the spec as it was
    assert at.get("echarts_chart")[0].proto.spec == figure


def test_a_running_run_stays_the_train_pages_run_while_other_pages_show_a_finished_one(app, run):
    folder, results = run
    live = results.store.create_run("kmeans", "digits", {"n_clusters": 10})
    results.store.update(live, status="running")  # owned by this (living) process
    try:
        at = go(app, "train")
        next(box for box in at.selectbox if box.label == "Run").select(live).run()
        at = go(at, "map")
        assert any(f"{live} is running: this page shows it once it has finished" in info.value for info in at.info)
        assert next(box for box in at.selectbox if box.label == "Run").value == results.run_id
        at = go(at, "clusters")
        at = go(at, "train")
        assert next(box for box in at.selectbox if box.label == "Run").value == live  # its live view, not another
        # a finished run picked on an analysis page becomes the page-wide choice
        at = go(at, "map")
        at = go(at, "train")
        next(box for box in at.selectbox if box.label == "Run").select(results.run_id).run()
        at = go(at, "map")
        assert not any(live in info.value for info in at.info)
    finally:
        results.store.update(live, status="cancelled")
        results.store.delete(live)

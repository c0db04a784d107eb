"""Every page of the app, driven headless with AppTest against a runs folder holding a finished digits run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import HANG_GUARD_S, REPO
from engine.runs import JobManager, RunRequest, RunStore

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from ui.common import runs_table_key  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs folder with two finished K-means runs on digits (seeds 0 and 1); yields (folder, store, ids)."""
    folder = tmp_path_factory.mktemp("page-runs")
    manager = JobManager(folder)
    ids = [manager.submit(RunRequest("kmeans", "digits", overrides={"seed": seed}, device="cpu"))
           for seed in (0, 1)]
    for run_id in ids:
        assert manager.wait(run_id, timeout=HANG_GUARD_S).status == "finished"
    manager.shutdown()
    return folder, manager.store, ids


@pytest.fixture
def page(runs, monkeypatch):
    folder, _, _ = runs
    monkeypatch.setenv("DCE_RUNS_DIR", str(folder))

    def open_page(path: str) -> AppTest:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=HANG_GUARD_S)
        at.run()
        at.switch_page(path)
        return at.run()
    return open_page


def test_map_page_draws_every_point_and_offers_label_colourings(page, runs):
    at = page("pages/map.py")
    assert not at.exception
    colour = next(radio for radio in at.radio if radio.label == "Colour by")
    assert colour.options == ["cluster", "confidence", "true label", "correct / incorrect"]
    _, store, _ = runs
    shown = store.list("finished")[0].id  # the newest run is preselected
    coords = np.load(store.run_dir(shown) / "map_pacmap.npy")
    assert coords.shape == (1797, 2)
    for colouring in ("cluster", "confidence", "correct / incorrect"):
        colour.set_value(colouring).run()
        assert not at.exception
        series = json.loads(at.get("echarts_chart")[0].proto.spec)["series"]
        drawn = [point for one in series for point in one["data"]]
        assert sorted(point[2] for point in drawn) == list(range(1797))  # every image once, by its index
        assert all(point[:2] == pytest.approx(coords[point[2]], abs=1e-4) for point in drawn[::97])
    # the hover preview finds the hovered image by the index the tooltip marks
    assert 'data-dce-index="{@[2]}"' in json.loads(at.get("echarts_chart")[0].proto.spec)["tooltip"]["formatter"]


def map_chart_key(at) -> str:
    return f"map-{at.session_state['run_id']}-pacmap"


def test_map_hover_sends_the_hovered_image_and_its_map_neighbours_as_inline_pngs(page, runs):
    at = page("pages/map.py")
    preview = json.loads(at.get("bidi_component")[0].proto.json)
    assert preview["chart"] == map_chart_key(at) and preview["thumbs"] == {}
    at.session_state[f"{map_chart_key(at)}-hover-wanted"] = 5  # what a hover's trigger value stores
    at.run()
    preview = json.loads(at.get("bidi_component")[0].proto.json)
    _, store, _ = runs
    coords = np.load(store.run_dir(at.session_state["run_id"]) / "map_pacmap.npy")
    nearest = np.argsort(((coords - coords[5]) ** 2).sum(axis=1), kind="stable")[1:33]
    assert list(preview["thumbs"])[0] == "5" and set(preview["thumbs"]) == {"5", *map(str, nearest)}
    assert all(uri.startswith("data:image/png;base64,") for uri in preview["thumbs"].values())
    assert preview["captions"]["5"].startswith("#5 · cluster ")


def test_map_finds_an_image_by_index_rings_it_and_centres_the_view(page):
    at = page("pages/map.py")
    next(box for box in at.text_input if box.label == "Find an image").set_value("42").run()
    assert not at.exception
    spec = json.loads(at.get("echarts_chart")[0].proto.spec)
    ring = spec["series"][-1]
    assert ring["name"] == "found: #42" and ring["silent"] and ring["tooltip"] == {"show": False}
    (x, y), = ring["data"]
    x_zoom, y_zoom = spec["dataZoom"]  # the view opens zoomed in on the image, the axes still span the whole map
    assert (x_zoom["startValue"] + x_zoom["endValue"]) / 2 == pytest.approx(x)
    assert (y_zoom["startValue"] + y_zoom["endValue"]) / 2 == pytest.approx(y)
    assert spec["xAxis"]["min"] < x_zoom["startValue"] < x_zoom["endValue"] < spec["xAxis"]["max"]
    assert [button.key for button in at.button] == ["map-open-found-42"]


def test_map_selection_lists_the_images_and_opens_one_on_the_neighbours_page(page, runs):
    at = page("pages/map.py")
    _, store, _ = runs
    coords = np.load(store.run_dir(at.session_state["run_id"]) / "map_pacmap.npy")
    boxes = [{"brush_index": i, "brush_type": "rect", "coord_range": [[x - 1e-5, x + 1e-5], [y - 1e-5, y + 1e-5]]}
             for i, (x, y) in enumerate(coords[[30, 7]])]
    at.session_state[map_chart_key(at)] = {"selection": {"selected": [], "areas": boxes}}
    at.run()
    assert not at.exception
    assert [header.value for header in at.main.subheader] == ["2 selected"]
    assert [button.key for button in at.button if button.key.startswith("map-open-")] == ["map-open-7", "map-open-30"]
    next(button for button in at.button if button.key == "map-open-30").click().run()
    assert not at.exception
    assert at.main.subheader[0].value.startswith("Image #30 · cluster ")


def test_colouring_the_map_anew_keeps_its_selection(page, runs):
    at = page("pages/map.py")
    _, store, _ = runs
    x, y = np.load(store.run_dir(at.session_state["run_id"]) / "map_pacmap.npy")[12]
    box = {"brush_index": 0, "brush_type": "rect", "coord_range": [[x - 1e-5, x + 1e-5], [y - 1e-5, y + 1e-5]]}
    at.session_state[map_chart_key(at)] = {"selection": {"selected": [], "areas": [box]}}
    at.run()
    next(radio for radio in at.radio if radio.label == "Colour by").set_value("confidence").run()
    assert not at.exception
    assert [header.value for header in at.main.subheader] == ["1 selected"]

def test_neighbours_page_shows_purity_for_the_chosen_image(page, runs):
    at = page("pages/neighbours.py")
    assert not at.exception
    assert any("nearest in its features" in caption.value for caption in at.caption)
    purity = next(metric for metric in at.metric if metric.label.startswith("Purity@20"))
    _, store, _ = runs
    shown = store.list("finished")[0].id
    knn, labels = store.load_array(shown, "knn"), store.load_array(shown, "labels")
    assert float(purity.value) == pytest.approx((labels[knn] == labels[:, None]).mean(), abs=1e-3)
    next(radio for radio in at.radio if radio.label == "Order").set_value("worst purity first").run()
    assert not at.exception


def test_fewer_neighbours_can_be_shown_and_purity_follows_them(page, runs):
    at = page("pages/neighbours.py")
    _, store, _ = runs
    run_id = at.session_state["run_id"]
    knn, labels = store.load_array(run_id, "knn"), store.load_array(run_id, "labels")
    next(radio for radio in at.radio if radio.label == "Order").set_value("worst purity first").run()
    at.number_input(key="neighbours-position").set_value(7).run()
    before = at.main.subheader[0].value.split(" · ")[0]
    at.number_input(key="neighbours").set_value(5).run()
    assert not at.exception
    purity = next(metric for metric in at.metric if metric.label.startswith("Purity@"))
    assert purity.label == "Purity@5 over the dataset"
    assert float(purity.value) == pytest.approx((labels[knn[:, :5]] == labels[:, None]).mean(), abs=1e-3)
    assert "purity@5" in at.main.subheader[0].value
    assert at.main.subheader[0].value.split(" · ")[0] == before  # the same image, though the order changed
    assert any("the nearest 5 of the 20" in caption.value for caption in at.caption)
    linked = AppTest.from_file(str(REPO / "pages" / "neighbours.py"), default_timeout=HANG_GUARD_S)
    linked.query_params.update(run=run_id, neighbours="5")  # the choice is in the address: a reload keeps it
    linked.run()
    assert linked.number_input(key="neighbours").value == 5 and "purity@5" in linked.subheader[0].value


def test_clusters_page_shows_one_gallery_per_cluster_and_the_confusion_matrix(page):
    at = page("pages/clusters.py")
    assert not at.exception
    headers = [md.value for md in at.markdown if md.value.startswith("**Cluster ")]
    assert len(headers) == 10
    assert sum(int(h.split(" · ")[1].split()[0]) for h in headers) == 1797


def cell_caption(at: AppTest) -> str:
    return next(c.value for c in at.caption if " images in cluster " in c.value)


def test_a_confusion_matrix_cell_lists_its_images_chosen_or_clicked(page, runs):
    from engine.analysis.clusters import confusion_cells

    at = page("pages/clusters.py")
    _, store, _ = runs
    shown = store.list("finished")[0].id
    assign, labels = store.load_array(shown, "assign"), store.load_array(shown, "labels")
    cells = confusion_cells(labels, assign)
    box = at.selectbox(key="clusters-cell")
    assert box.value is None
    cluster, label, count = cells[0]  # the largest cell off the match comes first
    assert box.options[0] == f"cluster {cluster} × label {label} · {count} images"
    box.select_index(0).run()
    assert not at.exception
    assert cell_caption(at).startswith(f"{count} images in cluster {cluster} with label {label}")
    assert any(md.value.startswith(f"**Tag these {min(count, 120)} images**") for md in at.markdown)

    # a click on the matrix: the heatmap's cells in data order, rows (clusters) in match order, then labels
    spec = json.loads(at.get("echarts_chart")[0].proto.spec)
    rows = [int(name.split()[1]) for name in spec["yAxis"]["data"]]
    n_classes = len(spec["xAxis"]["data"])
    (heatmap,) = spec["series"]
    assert sum(cell["value"][2] for cell in heatmap["data"]) == len(labels)  # every image counted once
    cluster, label, count = cells[-1]  # a matched cell
    at_cell = rows.index(cluster) * n_classes + label
    assert heatmap["data"][at_cell]["value"] == [label, rows.index(cluster), count]
    click = {"selection": {"selected": [{"series_index": 0, "data_indices": [at_cell]}], "areas": []}}
    at.session_state[f"confusion-{shown}"] = click
    at.run()
    assert not at.exception
    assert at.selectbox(key="clusters-cell").value == (cluster, label)
    assert cell_caption(at).startswith(f"{count} images in cluster {cluster} with label {label}")
    (heatmap,) = json.loads(at.get("echarts_chart")[0].proto.spec)["series"]
    outlined = [cell["value"][:2] for cell in heatmap["data"] if "itemStyle" in cell]  # the chosen cell, outlined
    assert outlined == [[label, rows.index(cluster)]]
    # the chart keeps reporting that click; a cell chosen in the box afterwards stays chosen
    at.selectbox(key="clusters-cell").select_index(0).run()
    assert at.selectbox(key="clusters-cell").value == cells[0][:2]


def test_clusters_page_compares_two_runs_side_by_side(page):
    at = page("pages/clusters.py")
    at.toggle[0].set_value(True).run()
    assert not at.exception
    agreement = next(metric for metric in at.metric if metric.label.startswith("Images on which"))
    assert 0.5 < float(agreement.value.rstrip("%")) / 100 <= 1.0
    assert len([md for md in at.markdown if md.value.startswith("**Cluster ")]) == 20


def test_compare_page_table_equals_the_run_store(page, runs):
    at = page("pages/compare.py")
    assert not at.exception
    table = at.dataframe[0].value
    _, store, ids = runs
    assert sorted(table["run"]) == sorted(ids)
    for run_id in ids:
        row = table[table["run"] == run_id].iloc[0]
        assert float(row["ACC"]) == pytest.approx(store.get(run_id).summary["acc"], abs=5e-4)
        assert row["status"] == "finished"


def test_a_page_whose_selected_run_was_deleted_elsewhere_says_so_and_shows_another(page, runs):
    _, _, ids = runs
    at = page("pages/map.py")
    at.session_state["run_id"] = "20260101-000000-kmeans-gone"  # chosen in another tab, deleted since
    at.run()
    assert not at.exception
    assert any("20260101-000000-kmeans-gone was deleted" in info.value for info in at.info), [i.value for i in at.info]
    assert at.session_state["run_id"] in ids


def test_export_page_writes_the_chosen_formats(page, runs):
    at = page("pages/export.py")
    assert not at.exception
    next(button for button in at.button if button.label == "Export").click().run()
    assert not at.exception
    _, store, _ = runs
    exported = store.run_dir(store.list("finished")[0].id) / "exports"
    assert (exported / "gallery.html").exists() and (exported / "assignments.csv").exists()
    assert len(list(exported.glob("cluster_*.png"))) == 10
    # the downloads are named for their run (two runs' cluster_0.png do not collide), the zip of all first
    labels = [element.proto.label for element in at.get("download_button")]
    run_id = store.list("finished")[0].id
    assert labels[0] == f"Download {run_id}.zip" and f"Download {run_id}-assignments.csv" in labels


def test_export_page_can_start_each_cluster_with_its_least_confident_images(page, runs):
    at = page("pages/export.py")
    next(r for r in at.radio if r.label == "Each cluster starts with its").set_value("least confident").run()
    next(button for button in at.button if button.label == "Export").click().run()
    assert not at.exception
    _, store, _ = runs
    page_html = (store.run_dir(store.list("finished")[0].id) / "exports" / "gallery.html").read_text()
    assert "ordered least confident first" in page_html


@pytest.fixture(scope="module")
def unlabelled_runs(tmp_path_factory):
    """A runs folder with one finished K-means run (K=3) on a flat folder of 40 generated images (no labels)."""
    from PIL import Image

    images = tmp_path_factory.mktemp("flat")
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(images / f"img{i:02d}.png")
    folder = tmp_path_factory.mktemp("unlabelled-runs")
    manager = JobManager(folder)
    run_id = manager.submit(RunRequest("kmeans", f"folder:{images}", overrides={"n_clusters": 3}, device="cpu"))
    assert manager.wait(run_id, timeout=HANG_GUARD_S).status == "finished"
    manager.shutdown()
    return folder


@pytest.mark.parametrize("path", ["pages/map.py", "pages/neighbours.py", "pages/clusters.py",
                                  "pages/suspects.py", "pages/compare.py", "pages/export.py"])
def test_every_page_works_for_a_run_without_labels(unlabelled_runs, monkeypatch, path):
    monkeypatch.setenv("DCE_RUNS_DIR", str(unlabelled_runs))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=HANG_GUARD_S)
    at.run()
    at.switch_page(path)
    at.run()
    assert not at.exception
    if path == "pages/map.py":
        assert next(r for r in at.radio if r.label == "Colour by").options == ["cluster", "confidence"]
    if path == "pages/clusters.py":
        headers = [md.value for md in at.markdown if md.value.startswith("**Cluster ")]
        assert len(headers) == 3 and not any("purity" in h for h in headers)
    if path == "pages/compare.py":
        table = at.dataframe[0].value
        assert (table["ACC"] == "n/a").all() and (table["purity@k"] == "n/a").all()
        assert table["note"].str.contains("no labels").all()
    if path == "pages/neighbours.py":  # a folder's images are named by their files, not by "#i"
        assert next(h.value for h in at.subheader if h.value.startswith("Image #")).split(" · ")[1] == "img00.png"


# -- issue 13: what a real browser showed --------------------------------------------------------------------


def position_input(at: AppTest):
    return next(box for box in at.number_input if box.label.startswith("Position ("))


def shown_image(at: AppTest) -> int:
    title = next(h.value for h in at.subheader if h.value.startswith("Image #"))
    return int(title.split("#")[1].split()[0])


def image_purity(store, run_id: str) -> np.ndarray:
    knn, labels = store.load_array(run_id, "knn"), store.load_array(run_id, "labels")
    return (labels[knn] == labels[:, None]).mean(axis=1)


def test_changing_the_neighbour_order_starts_at_its_first_image(page, runs):
    at = page("pages/neighbours.py")
    position_input(at).set_value(526).run()
    assert shown_image(at) == 526
    next(radio for radio in at.radio if radio.label == "Order").set_value("worst purity first").run()
    _, store, _ = runs
    worst = int(np.argsort(image_purity(store, store.list("finished")[0].id), kind="stable")[0])
    assert position_input(at).value == 0
    assert shown_image(at) == worst
    next(radio for radio in at.radio if radio.label == "Order").set_value("index").run()
    assert (position_input(at).value, shown_image(at)) == (0, 0)


def test_stepping_through_neighbours_moves_exactly_one_image_per_click(page, runs):
    at = page("pages/neighbours.py")
    next(radio for radio in at.radio if radio.label == "Order").set_value("worst purity first").run()
    _, store, _ = runs
    order = np.argsort(image_purity(store, store.list("finished")[0].id), kind="stable")
    identities = set()
    for step in range(1, 7):
        identities.add(position_input(at).id)
        position_input(at).increment().run()
        assert shown_image(at) == order[step]
    # one widget identity throughout: a new identity per step is what made the browser drop clicks and show two
    assert len(identities) == 1
    assert len([box for box in at.number_input if box.label.startswith("Position (")]) == 1


def test_the_heading_follows_the_position_input_and_both_hold_across_pages(page, runs):
    at = page("pages/neighbours.py")
    next(radio for radio in at.radio if radio.label == "Order").set_value("worst purity first").run()
    _, store, _ = runs
    order = np.argsort(image_purity(store, store.list("finished")[0].id), kind="stable")
    position_input(at).set_value(40).run()
    assert shown_image(at) == order[40]
    at.switch_page("pages/clusters.py").run()
    at.switch_page("pages/neighbours.py").run()
    assert not at.exception
    assert position_input(at).value == 40 and shown_image(at) == order[40]
    next(button for button in at.button if button.label == "Random image").click().run()
    assert shown_image(at) == order[position_input(at).value]


def test_side_by_side_clusters_are_aligned_by_their_match_with_the_disagreements_listed(page, runs):
    from engine.analysis.clusters import run_agreement

    at = page("pages/clusters.py")
    at.toggle[0].set_value(True).run()
    assert not at.exception
    _, store, _ = runs
    first, second = (record.id for record in store.list("finished")[:2])
    assign_a, assign_b = store.load_array(first, "assign"), store.load_array(second, "assign")
    a_to_b, overlap, _ = run_agreement(assign_a, assign_b)
    headers = [md.value for md in at.markdown if md.value.startswith("**Cluster ")]
    clusters = [int(header.split()[1]) for header in headers]
    assert list(zip(clusters[0::2], clusters[1::2])) == [(a, a_to_b[a]) for a in range(10)]
    # a cluster most of whose images the other run put elsewhere says so (two K-means seeds have one such)
    flagged = [int(header.split()[1]) for header in headers[0::2] if "a weak match" in header]
    assert flagged == [a for a in range(10) if overlap[a] < 0.5] and flagged
    disagreeing = int((np.array([a_to_b[a] for a in assign_a]) != assign_b).sum())
    assert any(h.value.startswith(f"{disagreeing} images the two runs disagree on") for h in at.subheader)
    assert at.get("echarts_chart"), "the confusion matrix stays when comparing"
    size = next(slider for slider in at.slider if slider.label.startswith("Thumbnail size"))
    assert size.value >= 64


def test_galleries_offer_size_order_and_pages_beyond_the_first_thirty(page, runs):
    at = page("pages/clusters.py")
    size = next(slider for slider in at.slider if slider.label.startswith("Thumbnail size"))
    assert (size.min, size.max) == (48, 128)
    show = next(radio for radio in at.radio if radio.label == "Show")
    assert show.options == ["most confident first", "least confident first"]
    ranges = [c.value for c in at.caption if c.value.startswith("images ")]
    assert len(ranges) == 10 and all(r.startswith("images 1–30 of ") for r in ranges)
    next(box for box in at.number_input if box.label.startswith("Page")).set_value(2).run()
    assert not at.exception
    assert all(c.value.startswith("images 31–60 of ") for c in at.caption if c.value.startswith("images "))
    show.set_value("least confident first").run()
    assert not at.exception


def test_neighbour_purity_is_one_figure_on_train_compare_and_neighbours(page, runs):
    from engine.analysis.results import run_neighbor_purity

    _, store, _ = runs
    run_id = store.list("finished")[0].id
    at = page("pages/neighbours.py")
    on_neighbours = next(metric for metric in at.metric if metric.label.startswith("Purity@")).value
    at = page("pages/compare.py")
    on_compare = at.dataframe[0].value.set_index("run").loc[run_id, "purity@k"]
    at = page("pages/train.py")
    on_train = next(metric for metric in at.metric if metric.label == "Neighbour purity").value
    value, _ = run_neighbor_purity(store, run_id)
    assert on_neighbours == on_compare == on_train == f"{value:.3f}"
    assert store.get(run_id).summary["neighbor_purity"] == pytest.approx(value)  # cached in the summary


def test_compare_shows_every_column_of_the_table_in_one_of_its_column_sets(page):
    at = page("pages/compare.py")
    choice = next(control for control in at.button_group if control.label == "Columns")
    shown = set()
    for option in choice.options:
        choice.set_value(option).run()
        assert not at.exception
        order = list(at.dataframe[0].proto.column_order)
        assert order[0] == "run"  # the row a click selects is always named
        shown |= set(order)
    assert shown == set(at.dataframe[0].value.columns)


def test_compare_never_shows_none_or_nan(page):
    at = page("pages/compare.py")
    table = at.dataframe[0].value
    assert not table.isna().any().any()
    assert not table.astype(str).isin(["None", "nan", "NaN", "<NA>"]).any().any()


def test_compare_only_selects_a_finished_run_for_the_explorer_pages(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    running = store.create_run("kmeans", "digits", {"n_clusters": 10, "seed": 0}, preset="fast")
    assert store.claim(running)
    monkeypatch.setenv("DCE_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=HANG_GUARD_S)
    at.run()
    at.switch_page("pages/compare.py")
    at.run()
    at.session_state[runs_table_key(list(at.dataframe[0].value["run"]))] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    assert not at.exception
    said = [element.value for element in [*at.success, *at.info, *at.warning]]
    assert not any("is now the selected run" in text for text in said)
    assert any("only finished runs" in text for text in said), said


def test_map_legend_sits_beside_the_plot_below_the_toolbar(page):
    at = page("pages/map.py")
    spec = json.loads(at.get("echarts_chart")[0].proto.spec)
    assert spec["legend"]["orient"] == "vertical" and spec["legend"]["right"] < spec["grid"]["right"]
    assert spec["toolbox"]["top"] < spec["legend"]["top"] == spec["grid"]["top"]  # the brush tools sit above both


def test_train_page_charts_name_their_axes_and_lines(page):
    at = page("pages/train.py")
    charts = [json.loads(chart.proto.spec) for chart in at.get("echarts_chart")]
    assert len(charts) == 1
    (chart,) = charts
    assert chart["xAxis"]["name"] == "restart"
    assert chart["yAxis"]["name"] == "inertia"
    assert "legend" in chart and [line["name"] for line in chart["series"]] == ["inertia"]


def test_train_page_charts_a_labelled_runs_accuracy_after_each_epoch_on_an_axis_of_its_own(tmp_path, monkeypatch):
    manager = JobManager(tmp_path / "runs")
    run_id = manager.submit(RunRequest("cc", "digits", overrides={"epochs": 2}, device="cpu"))
    assert manager.wait(run_id, timeout=HANG_GUARD_S).status == "finished"
    manager.shutdown()
    monkeypatch.setenv("DCE_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=HANG_GUARD_S)
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    charts = {json.loads(chart.proto.spec)["yAxis"]["name"]: json.loads(chart.proto.spec)
              for chart in at.get("echarts_chart")}
    accuracy = charts["ACC (train images)"]
    assert accuracy["title"]["text"] == "train · ACC (train images)"
    assert accuracy["xAxis"]["name"] == "training step"
    assert (accuracy["yAxis"]["min"], accuracy["yAxis"]["max"]) == (0, 1.02)
    (line,) = accuracy["series"]
    assert line["name"] == "ACC (train images)" and len(line["data"]) == 2
    assert all(0 <= y <= 1 for _, y in line["data"])
    losses = charts["loss"]
    assert "ACC (train images)" not in [line["name"] for line in losses["series"]]


def test_map_search_by_file_name_lists_every_match_and_rings_the_chosen_one(unlabelled_runs, monkeypatch):
    monkeypatch.setenv("DCE_RUNS_DIR", str(unlabelled_runs))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=HANG_GUARD_S)
    at.run()
    at.switch_page("pages/map.py")
    at.run()
    next(box for box in at.text_input if box.label == "Find an image").set_value("IMG1").run()
    matches = next(box for box in at.selectbox if box.label.endswith("images match"))
    assert [option.split(" · ")[0] for option in matches.options] == [f"img1{i}.png" for i in range(10)]
    matches.select_index(3).run()
    assert not at.exception
    ring = json.loads(at.get("echarts_chart")[0].proto.spec)["series"][-1]
    assert ring["name"] == "found: img13.png"


def test_the_compare_table_says_why_a_run_has_no_scores_by_its_status(tmp_path):
    from engine.analysis.overview import overview_rows

    store = RunStore(tmp_path / "runs")
    notes = {}
    for status, error in (("failed", "K=50 clusters asked for but the dataset has only 39 images"),
                          ("cancelled", "cancelled by the user"), ("queued", None)):
        run_id = store.create_run("kmeans", "digits", {"n_clusters": 50})
        if status != "queued":
            store.claim(run_id)
            store.finish(run_id, status, error)
        notes[status] = run_id
    by_run = {row["run"]: row["note"] for row in overview_rows(store)}
    assert by_run[notes["failed"]] == "failed: K=50 clusters asked for but the dataset has only 39 images"
    assert by_run[notes["cancelled"]] == "cancelled: scores come if it is resumed and finishes"
    assert by_run[notes["queued"]] == "queued: scores come when it finishes"
    scores = {row["run"]: (row["ACC"], row["purity@k"]) for row in overview_rows(store)}
    assert scores[notes["cancelled"]] == ("cancelled", "cancelled")  # the scores view says why without its note


def test_the_address_names_the_chosen_run_so_a_reload_or_a_shared_link_opens_it(page, runs):
    _, _, ids = runs
    at = page("pages/map.py")
    at.selectbox(key="pick-run_id").select(ids[1]).run()
    assert at.query_params["run"] == ids[1]
    # a new session (a reload, or the link opened elsewhere) with that address shows the same run
    reloaded = AppTest.from_file(str(REPO / "pages" / "neighbours.py"), default_timeout=HANG_GUARD_S)
    reloaded.query_params["run"] = ids[1]
    reloaded.run()
    assert not reloaded.exception
    assert reloaded.selectbox(key="pick-run_id").value == ids[1]
    # the shown image is in the address too: a reload shows the same image, not the first one
    reloaded.number_input(key="neighbours-position").set_value(7).run()
    assert reloaded.query_params["image"] == "7"
    again = AppTest.from_file(str(REPO / "pages" / "neighbours.py"), default_timeout=HANG_GUARD_S)
    again.query_params.update(run=ids[1], image="7")
    again.run()
    assert again.number_input(key="neighbours-position").value == 7
    assert again.subheader[0].value.startswith("Image #7 ")
    # so is an order other than by index: the link opens on that order at the same image
    again.radio(key="order").set_value("worst purity first").run()
    shown = again.query_params["image"]
    worst = AppTest.from_file(str(REPO / "pages" / "neighbours.py"), default_timeout=HANG_GUARD_S)
    worst.query_params.update(run=ids[1], image=shown, order="worst purity first")
    worst.run()
    assert worst.radio(key="order").value == "worst purity first"
    assert worst.subheader[0].value.startswith(f"Image #{shown} ")
    # an address naming a run that is gone says so and shows another
    gone = AppTest.from_file(str(REPO / "pages" / "neighbours.py"), default_timeout=HANG_GUARD_S)
    gone.query_params["run"] = "20260101-000000-kmeans-gone"
    gone.run()
    assert any("20260101-000000-kmeans-gone was deleted" in info.value for info in gone.info)
    assert gone.query_params["run"] == gone.selectbox(key="pick-run_id").value

"""The Streamlit app, driven headless with AppTest: it opens on a Home page that says what it is, the Train page
renders, and a digits K-means run started from the Train page (or Home's "Try it") finishes and shows its scores."""
from __future__ import annotations

import os
import time

import pytest

from conftest import HANG_GUARD_S, REPO, open_page
from engine.runs import RunStore

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402


def app() -> AppTest:
    """The app on its Train page, not yet run again."""
    return open_page("pages/train.py")


def test_the_train_page_opens_with_digits_preselected():
    at = app().run()
    assert not at.exception
    assert at.title[0].value == "Train"
    dataset = next(box for box in at.selectbox if box.label == "Dataset")
    assert dataset.value == "digits"
    assert any("No runs yet" in info.value for info in at.info)


@pytest.mark.parametrize("page", ["clusters", "neighbours"])
def test_a_deep_link_on_a_fresh_server_shows_its_page_and_pages_holds_only_the_apps_pages(page):
    """The first script run of a server process, opened on a page's link, shows that page. Streamlit may run it as
    an old-style "pages/ folder" app, listing every file of pages/ in the sidebar: so pages/ holds exactly the
    pages app.py's st.navigation lists, and their shared parts live in ui/."""
    import ast

    listed = {node.args[0].value for node in ast.walk(ast.parse((REPO / "app.py").read_text()))
              if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Page"}
    assert listed == {f"pages/{path.name}" for path in (REPO / "pages").glob("*.py")}
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=HANG_GUARD_S)
    at.switch_page(f"pages/{page}.py")  # before the first run: AppTest starts a fresh page registry then
    at.run()
    assert not at.exception
    assert at.title[0].value == page.capitalize()


def start_kmeans_and_wait_for_its_scores(at: AppTest) -> None:
    """Choose kmeans on the Train page, press Start and rerun until the run's ACC shows (or the hang guard)."""
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


def test_a_kmeans_run_started_from_the_train_page_finishes_and_shows_its_scores():
    at = app().run()
    start_kmeans_and_wait_for_its_scores(at)
    assert not at.exception
    acc = next(metric for metric in at.metric if metric.label == "ACC")
    assert 0.7 < float(acc.value) < 0.85
    assert any("finished" in md.value for md in at.markdown)
    run_box = next(box for box in at.selectbox if box.label == "Run")
    assert f" · ACC {acc.value}" in run_box.options[run_box.index]  # the picker names the run with its score


@pytest.mark.parametrize("k, reason", [(1, "at least 2"), (5000, "only 1797 images")])
def test_a_k_out_of_range_is_taken_as_typed_and_refused_at_start_with_the_reason(k, reason):
    """The K field has no bounds of its own: a browser keeps a typed value outside a field's bounds from the page,
    which would then start the run with the K typed before."""
    at = app().run()
    next(box for box in at.selectbox if box.label == "Method").select("kmeans")
    next(box for box in at.number_input if box.label == "Clusters K").set_value(k)
    next(button for button in at.button if button.label == "Start").click()
    at.run()
    assert not at.exception
    assert any(reason in error.value for error in at.error), [error.value for error in at.error]
    assert RunStore(os.environ["DCE_RUNS_DIR"]).list() == []


def test_how_it_works_panel_renders_the_methods_own_stages_and_equations():
    at = app().run()
    from engine.methods import get_method

    scan = get_method("scan")
    latex = [element.value.strip("$\n") for element in at.latex]  # st.latex wraps in $$…$$
    assert latex == [stage.equation for stage in scan.stages if stage.equation]
    table = at.table[0].value
    assert list(table["setting"]) == list(scan.key_settings)
    assert table.set_index("setting").loc["pretext_epochs", "paper"] == "500"


def test_how_it_works_highlights_the_stage_a_run_is_in():
    def panel():
        from ui.common import how_it_works

        how_it_works("scan", "cluster")

    at = AppTest.from_function(panel, default_timeout=HANG_GUARD_S)
    at.run()
    assert not at.exception
    from engine.methods import get_method

    stages = [stage.name for stage in get_method("scan").stages]
    timeline = next(md.value for md in at.markdown if " → " in md.value)
    assert timeline.split(" → ") == [f"**:blue-background[{name}]**" if name == "cluster" else name
                                     for name in stages]
    marked = [md.value for md in at.markdown if "← running now" in md.value]
    assert len(marked) == 1 and marked[0].startswith(f"{stages.index('cluster') + 1}. **cluster** ← running now")


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
    start_kmeans_and_wait_for_its_scores(at)
    (record,) = RunStore().list()
    assert record.options["image_size"] == 16 and record.summary["image_size"] == 16


# -- issue 13: the landing and the Train page ------------------------------------------------------------------


def wait_for(at: AppTest, done) -> AppTest:
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline and not done(at):
        time.sleep(0.5)
        at.run()
    return at


def test_the_app_opens_on_a_home_page_with_its_name_three_steps_and_try_it():
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=HANG_GUARD_S).run()
    assert not at.exception
    assert at.title[0].value == "Deep Clustering Explorer"
    assert [h.value for h in at.subheader] == ["Three steps", "Runs so far"]
    assert [md.value.split(" — ")[0] for md in at.markdown if md.value.startswith("**")] == [
        "**1. Pick data**", "**2. Train**", "**3. Audit**"]
    assert {link.proto.page for link in at.get("page_link")} >= {"train", "map", "neighbours", "clusters", "compare"}
    assert any(button.label.startswith("Try it") for button in at.button)


def test_try_it_trains_digits_kmeans_lists_the_run_and_says_where_to_look():
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=HANG_GUARD_S).run()
    next(button for button in at.button if button.label.startswith("Try it")).click().run()
    assert not at.exception
    wait_for(at, lambda at: any("finished" in s.value for s in at.success))
    assert not at.exception
    (record,) = RunStore().list()
    assert (record.method, record.dataset, record.status) == ("kmeans", "digits", "finished")
    assert next(s.value for s in at.success).startswith(f"{record.id} finished: ACC {record.summary['acc']:.3f}")
    labels = [link.proto.label for link in at.get("page_link")]
    assert {"the 2-D map", "each cluster's images"} <= set(labels)
    at.run()
    assert list(at.dataframe[0].value["run"]) == [record.id]


def test_the_train_page_opens_the_run_its_address_names_and_writes_its_choice_there():
    """A link to a run (one still training, say) opens its live view on Train, as on every other page."""
    store = RunStore()
    older = store.create_run("kmeans", "digits", {})
    newer = store.create_run("kmeans", "digits", {})
    for run_id in (older, newer):
        store.update(run_id, status="finished")
    at = AppTest.from_file(str(REPO / "pages" / "train.py"), default_timeout=HANG_GUARD_S)  # a new session
    at.query_params["run"] = older
    at.run()
    assert not at.exception
    assert next(box for box in at.selectbox if box.label == "Run").value == older
    next(box for box in at.selectbox if box.label == "Run").select(newer).run()
    assert at.query_params["run"] == newer
    # the shown run deleted in another tab (Compare): a note, and another run, not a traceback every second
    store.delete(newer)
    at.run()
    assert not at.exception
    assert any(f"{newer} was deleted" in info.value for info in at.info), [info.value for info in at.info]
    assert next(box for box in at.selectbox if box.label == "Run").value == older


def test_the_train_page_shows_the_folder_field_only_for_a_folder_and_the_data_root_only_for_torchvision():
    at = app().run()
    shown = lambda: [box.label for box in at.text_input]  # noqa: E731
    assert shown() == []  # digits: bundled, nothing to point at
    next(box for box in at.selectbox if box.label == "Dataset").select("folder:…").run()
    assert shown() == ["Image folder or archive"]
    next(box for box in at.selectbox if box.label == "Dataset").select("cifar10").run()
    assert [label.startswith("Data root") for label in shown()] == [True]


def test_a_folder_that_does_not_exist_is_refused_at_start_and_nothing_is_queued(tmp_path):
    at = app().run()
    next(box for box in at.selectbox if box.label == "Dataset").select("folder:…").run()
    next(box for box in at.text_input if box.label == "Image folder or archive").input(str(tmp_path / "nope")).run()
    next(button for button in at.button if button.label == "Start").click().run()
    assert not at.exception
    assert any("does not exist" in error.value for error in at.error), [e.value for e in at.error]
    assert RunStore().list() == [] and "run_id" not in at.session_state


def test_a_folder_of_class_folders_offers_one_cluster_per_class_folder(tmp_path):
    """K stays the user's, but a folder whose images sit in 3 class folders offers K = 3 in one click."""
    from PIL import Image

    pets = tmp_path / "pets"
    for name in ("cats", "dogs", "owls"):
        (pets / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(pets / name / "0163.png")
    at = app().run()
    next(box for box in at.selectbox if box.label == "Dataset").select("folder:…").run()
    next(box for box in at.text_input if box.label == "Image folder or archive").input(str(pets)).run()
    offer = next(button for button in at.button if button.label.startswith("K = "))
    assert offer.label == "K = 3 (class folders)" and "cats, dogs, owls" in offer.help
    offer.click().run()
    assert next(box for box in at.number_input if box.label == "Clusters K").value == 3
    assert not [button for button in at.button if button.label.startswith("K = ")]  # K matches: nothing to offer


def test_a_setting_typed_outside_its_range_is_refused_with_the_range_not_replaced_in_silence():
    """A number input bounded by the setting's range kept its old value when -5 was typed, with only a red icon:
    the run then trained with the preset's 30 epochs. The value is kept as typed, said to be out of range, and
    Start refuses it before anything is queued."""
    at = app().run()
    at.number_input(key="setting-scan-pretext_epochs").set_value(-5).run()
    assert not at.exception
    assert any(error.value == "pretext_epochs must be at least 0" for error in at.error), [e.value for e in at.error]
    next(button for button in at.button if button.label == "Start").click().run()
    assert any("pretext_epochs" in error.value and "-5" in error.value for error in at.error), \
        [e.value for e in at.error]
    assert RunStore().list() == []


def test_a_double_click_on_start_queues_one_run():
    at = app().run()
    next(box for box in at.selectbox if box.label == "Method").select("kmeans").run()
    for _ in range(2):
        next(button for button in at.button if button.label == "Start").click().run()
    assert not at.exception
    assert len(RunStore().list()) == 1
    assert any("is not queued twice" in info.value for info in at.info), [info.value for info in at.info]


def test_the_train_form_keeps_its_choices_while_another_page_or_run_is_viewed():
    at = app().run()
    next(box for box in at.selectbox if box.label == "Dataset").select("folder:…").run()
    next(box for box in at.text_input if box.label == "Image folder or archive").input("/srv/pets").run()
    next(box for box in at.selectbox if box.label == "Method").select("kmeans").run()
    next(box for box in at.number_input if box.label == "Clusters K").set_value(7).run()
    at.switch_page("pages/compare.py").run()
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert next(box for box in at.selectbox if box.label == "Dataset").value == "folder:…"
    assert next(box for box in at.text_input if box.label == "Image folder or archive").value == "/srv/pets"
    assert next(box for box in at.selectbox if box.label == "Method").value == "kmeans"
    assert next(box for box in at.number_input if box.label == "Clusters K").value == 7


# -- issue 16: honest time on the Train page ---------------------------------------------------------------------


def press(at: AppTest, label: str) -> AppTest:
    next(button for button in at.button if button.label == label).click()
    return at.run()


def test_the_train_page_estimates_a_run_before_start_and_the_run_keeps_that_estimate():
    at = app().run()
    next(box for box in at.selectbox if box.label == "Method").select("kmeans").run()
    press(at, "Estimate time")
    assert not at.exception
    (line,) = [info.value for info in at.info if info.value.startswith("Estimated time")]
    assert "on cpu" in line and "cluster" in line
    assert not at.warning  # K-means on digits: seconds
    estimate = at.session_state["train-estimate"][1]
    next(box for box in at.number_input if box.label == "Clusters K").set_value(7).run()
    assert not [info for info in at.info if info.value.startswith("Estimated time")]  # made for other choices
    next(box for box in at.number_input if box.label == "Clusters K").set_value(10).run()
    start_kmeans_and_wait_for_its_scores(at)
    (record,) = RunStore().list()
    assert record.options["estimate"] == estimate  # handed to the run, not estimated again
    assert not [m for m in RunStore().messages(record.id) if m["stage"] == "estimate"]


def test_a_cpu_run_estimated_over_half_an_hour_warns_and_points_to_pretrained_features_or_a_gpu():
    at = app().run()  # SCAN, fast preset, on digits
    # 100,000 SimCLR epochs of 7 batches: days on any CPU; the estimate still times only a few steps
    at.number_input(key="setting-scan-pretext_epochs").set_value(100_000).run()
    press(at, "Estimate time")
    assert not at.exception
    (line,) = [info.value for info in at.info if info.value.startswith("Estimated time")]
    assert " d " in line or " h " in line
    (warning,) = [warning.value for warning in at.warning]
    assert "on this CPU" in warning and "pretext_from=pretrained:NAME" in warning and "GPU" in warning
    assert RunStore().list() == []  # estimating queued nothing


def test_the_train_pages_setting_fields_say_when_a_value_is_outside_the_settings_declared_range():
    """One declaration serves the --set checker and the form: a value the checker would refuse is said to be out of
    range under its field (the field keeps it as typed, for Start to refuse with the reason)."""
    from engine.methods import get_method
    from engine.methods.settings import setting_range

    at = open_page("pages/train.py")
    next(box for box in at.selectbox if box.label == "Method").select("spice").run()
    at.number_input(key="setting-spice-center_ratio").set_value(1.5).run()  # declared: bounded(low=0, high=1)
    at.number_input(key="setting-spice-self_batch_size").set_value(0).run()  # implied: a positive int
    at.number_input(key="setting-spice-pretext_lr").set_value(0.0).run()  # a positive float: refused at Start
    assert [error.value for error in at.error] == ["center_ratio must be between 0 and 1",
                                                   "self_batch_size must be at least 1"]
    assert setting_range(get_method("spice").Config, "center_ratio", integer=False) == (0, 1)


def test_the_train_pages_choice_settings_say_what_their_choices_mean():
    at = open_page("pages/train.py")
    next(box for box in at.selectbox if box.label == "Method").select("dec").run()
    descriptor = at.selectbox(key="setting-dec-descriptor")
    assert descriptor.value == "auto" and descriptor.options == ["auto", "pixels", "hog_colour"]
    assert "HOG + an 8×8 colour map" in descriptor.help and "gray" in descriptor.help


def test_the_train_pages_number_settings_say_what_they_mean():
    at = open_page("pages/train.py")
    next(box for box in at.selectbox if box.label == "Method").select("jule").run()
    assert at.number_input(key="setting-jule-period_epochs").help == ("passes over the images in each period of "
                                                                       "CNN training")
    assert at.number_input(key="setting-jule-unfolding_rate").help.startswith("η: the share of the clusters merged")


def test_after_a_restart_the_train_page_names_the_interrupted_runs_and_resumes_them_all_at_once():
    import socket
    import subprocess
    import sys

    from engine.runs.owner import Owner

    store = RunStore()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = [store.create_run("kmeans", "digits", {"n_clusters": 10}) for _ in range(2)]
    for run_id in left:  # running under a server process that has since gone
        store.update(run_id, status="running", owner=str(Owner(socket.gethostname(), int(dead.stdout), None)))
    at = app()
    assert not at.exception
    note = next(w.value for w in at.warning if "stopped when the app" in w.value)
    assert all(run_id in note for run_id in left) and "2 runs" in note
    press(at, "Resume all 2")
    assert not at.exception
    assert all(store.get(run_id).status in ("queued", "running", "finished") for run_id in left)
    wait_for(at, lambda at: all(store.get(run_id).status == "finished" for run_id in left))
    assert not any("stopped when the app" in w.value for w in at.warning)


def test_a_queued_run_shows_what_it_waits_for_and_how_long_it_takes():
    store = RunStore()
    queued = store.create_run("kmeans", "digits", {"n_clusters": 10}, options={"estimate": {"seconds": 65.0}})
    at = app()
    assert not at.exception
    assert next(box for box in at.selectbox if box.label == "Run").value == queued
    text = " ".join(str(element.proto) for element in at.main if element.type == "progress")
    assert "queued" in text and "takes about 1 min 05 s" in text, text


def test_a_finished_runs_neighbour_purity_is_shown_once_among_its_scores():
    store = RunStore()
    run_id = store.create_run("scan", "digits", {"n_clusters": 10})
    store.add_metrics(run_id, "mine", 1, {"neighbor_purity": 0.947})
    store.update(run_id, status="running")
    at = app()
    assert [m.label for m in at.metric] == ["mine · neighbor_purity"]  # while it runs: the mining's outcome
    store.update(run_id, status="finished", summary={"acc": 0.9, "nmi": 0.8, "ari": 0.7, "neighbor_purity": 0.947})
    at.run()
    assert not at.exception
    assert [m.label for m in at.metric] == ["ACC", "NMI", "ARI", "Neighbour purity"]


def test_a_runs_choices_can_be_copied_into_the_train_form_to_start_a_variant(tmp_path):
    store = RunStore()
    run_id = store.create_run("kmeans", f"folder:{tmp_path}", {"n_clusters": 7, "seed": 3, "n_init": 4},
                              preset="paper", options={"image_size": 32})
    store.update(run_id, status="finished")
    at = app()
    press(at, "Copy its choices to the form")
    assert not at.exception
    value = {box.label: box.value for box in [*at.selectbox, *at.number_input, *at.text_input, *at.radio]}
    assert (value["Dataset"], value["Image folder or archive"], value["Method"]) == ("folder:…", str(tmp_path),
                                                                                     "kmeans")
    assert (value["Preset"], value["Clusters K"], value["Seed"], value["Image size (px)"]) == ("paper", 7, 3, 32)
    assert value["n_init"] == 4

"""Frozen pretrained backbones as a feature source: the registry, weights files, the offline error, the feature
cache, and clustering in a feature space. Nothing here downloads: weights are files the tests write themselves."""
from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pytest
import torch

from conftest import run_cli
from engine.clustering.kmeans import fit_kmeans
from engine.clustering.metrics import cluster_accuracy
from engine.data.imageset import ImageSet
from engine.errors import ConfigError, UserError
from engine.methods import FitContext, create_method
from engine.methods import feature_source
from engine.methods.feature_source import preprocess
from engine.nn.pretrained import PRETRAINED_BACKBONES, get_pretrained, load_pretrained, load_state_dict_strictly

RESNET18 = "resnet18-imagenet"


def small_digits(digits, n=24):
    return dataclasses.replace(digits, images=digits.images[:n], labels=digits.labels[:n])


def test_the_engine_and_the_backbone_registry_import_without_timm_or_open_clip():
    import subprocess
    import sys

    from conftest import HANG_GUARD_S, REPO

    code = ("import sys, engine.methods, engine.cli, engine.nn.pretrained; "
            "print([m for m in ('timm', 'open_clip') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_list_json_names_every_pretrained_backbone_with_input_size_and_feature_dimension():
    result = run_cli("list", "--json")
    assert result.returncode == 0, result.stderr
    listed = {b["name"]: b for b in json.loads(result.stdout)["pretrained"]}
    assert {name: (b["input_size"], b["feature_dim"]) for name, b in listed.items()} == {
        "dinov2-vits14": (224, 384), "dinov2-vitb14": (224, 768), "clip-vitb16": (224, 512),
        "resnet18-imagenet": (224, 512), "resnet50-imagenet": (224, 2048)}


def test_kmeans_runs_from_the_cli_on_a_weights_file_and_the_second_run_reads_the_feature_cache(
        tmp_path, resnet18_weights, two_kinds_folder):
    args = ("train", "--method", "kmeans", "--dataset", f"folder:{two_kinds_folder}", "--clusters", "2",
            "--device", "cpu", "--set", f"pretext_from=pretrained:{RESNET18}", "--weights", str(resnet18_weights),
            "--json")
    env = {"DCE_CACHE_DIR": str(tmp_path / "cache"), "DCE_RUNS_DIR": str(tmp_path / "runs")}
    first, second = run_cli(*args, env=env), run_cli(*args, env=env)
    for result in (first, second):
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads(result.stdout.strip().splitlines()[-1])["status"] == "finished"
    assert "[features] 1 steps" in first.stderr and "embedded 16 images" in first.stderr
    assert "[features] 1 steps" not in second.stderr and "reusing cached resnet18-imagenet features" in second.stderr
    assert len(list((tmp_path / "cache" / "features").glob("*.npy"))) == 1


def test_a_cached_feature_file_is_used_without_building_or_calling_the_backbone(digits, resnet18_weights,
                                                                                 monkeypatch):
    images = small_digits(digits)
    settings = dict(n_clusters=3, pretext_from=f"pretrained:{RESNET18}", pretrained_weights=str(resnet18_weights))
    first = create_method("kmeans", "fast", **settings).fit(images, FitContext("cpu"))
    cached = np.load(feature_source.feature_cache_path(images, RESNET18, str(resnet18_weights)))
    assert cached.dtype == np.float16 and cached.shape == (24, 512)

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone was built although its features are cached")
    monkeypatch.setattr(feature_source, "load_pretrained", no_backbone)
    monkeypatch.setattr(feature_source, "extract_features", no_backbone)
    second = create_method("kmeans", "fast", **settings).fit(images, FitContext("cpu"))
    np.testing.assert_array_equal(first.features_, second.features_)
    np.testing.assert_array_equal(first.labels_, second.labels_)
    # the centres live in the backbone's 512-d space: images are assigned by their (cached) features, not pixels
    np.testing.assert_allclose(second.predict_proba(images), second.probs_, atol=1e-5)


def test_other_weights_or_other_images_do_not_share_a_cache_entry(digits, resnet18_weights, tmp_path):
    import torchvision

    other = tmp_path / "other.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), other)
    images = small_digits(digits)
    path = feature_source.feature_cache_path(images, RESNET18, str(resnet18_weights))
    assert path != feature_source.feature_cache_path(images, RESNET18, str(other))
    assert path != feature_source.feature_cache_path(small_digits(digits, 25), RESNET18, str(resnet18_weights))
    assert path == feature_source.feature_cache_path(small_digits(digits), RESNET18, str(resnet18_weights))


def test_without_weights_or_download_the_cli_exits_2_with_one_error_line_and_queues_nothing(tmp_path):
    env = {"DCE_RUNS_DIR": str(tmp_path / "runs")}
    result = run_cli("train", "--method", "kmeans", "--device", "cpu", "--set",
                     f"pretext_from=pretrained:{RESNET18}", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "--weights FILE" in lines[0] and "--download-weights" in lines[0]
    listed = run_cli("runs", "--json", env=env)
    assert json.loads(listed.stdout) == []


def test_a_missing_weights_file_and_weights_without_a_pretrained_source_are_refused():
    with pytest.raises(UserError, match="does not exist"):
        create_method("kmeans", "fast", pretext_from=f"pretrained:{RESNET18}",
                      pretrained_weights="/no/such/file.pt").config.validate()
    with pytest.raises(ConfigError, match="pretext_from=pretrained:NAME"):
        create_method("temi", "fast", pretrained_weights="/no/such/file.pt").config.validate()
    with pytest.raises(ConfigError, match="unknown pretrained backbone"):
        create_method("kmeans", "fast", pretext_from="pretrained:alexnet").config.validate()


def test_weights_whose_keys_do_not_match_are_an_error_naming_the_missing_and_unexpected_keys(resnet18_weights,
                                                                                              tmp_path):
    renamed = {key.replace("layer4", "stage4"): value for key, value in torch.load(resnet18_weights).items()}
    path = tmp_path / "renamed.pt"
    torch.save(renamed, path)
    with pytest.raises(UserError) as error:
        load_pretrained(RESNET18, str(path))
    assert "missing keys: layer4.0.bn1.bias" in str(error.value)
    assert "unexpected keys: stage4.0.bn1.bias" in str(error.value)
    torch.save({key: value[:1] if key == "conv1.weight" else value
                for key, value in torch.load(resnet18_weights).items()}, path)
    with pytest.raises(UserError, match="wrong-shape keys: conv1.weight"):
        load_pretrained(RESNET18, str(path))


def test_a_weights_file_loads_every_parameter_into_a_frozen_eval_mode_backbone(resnet18_weights):
    model = load_pretrained(RESNET18, str(resnet18_weights))
    saved = torch.load(resnet18_weights)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert all(torch.equal(value, saved[key]) for key, value in model.state_dict().items())


@pytest.mark.parametrize("name", ["dinov2-vits14", "clip-vitb16"])
def test_transformer_backbones_build_without_weights_to_their_listed_dimension(name):
    entry = get_pretrained(name)
    if importlib.util.find_spec(entry.library) is None:
        pytest.skip(f"{entry.library} is not installed")
    model = entry.build().eval()
    load_state_dict_strictly(model, entry.adapt_state_dict(model.state_dict(), model), "its own state dict")
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, entry.input_size, entry.input_size)).shape == (1, entry.feature_dim)


def test_preprocessing_resizes_gray_images_to_three_normalised_channels():
    entry = PRETRAINED_BACKBONES[RESNET18]
    x = preprocess(torch.full((2, 8, 8, 1), 255, dtype=torch.uint8), entry)
    assert x.shape == (2, 3, 224, 224)
    expected = (1 - torch.tensor(entry.mean)) / torch.tensor(entry.std)
    torch.testing.assert_close(x[0, :, 100, 100], expected)


def gaussian_mixture(n_per_class=100, n_classes=10, dim=384, seed=0):
    """10 well separated classes in 384-d: unit-variance noise (radius ≈ 20) around centres drawn with unit
    variance per axis (≈ 28 apart). Closer centres (scale 0.5) still separate, but k-means++ then lands in a
    merged-and-split local optimum (ACC ≈ 0.88) for one seed in three even with 10 restarts."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    return (centres[labels] + rng.normal(0, 1, (len(labels), dim))).astype(np.float32), labels


def features_run(tmp_path, features, labels):
    """An ImageSet of placeholder images whose features another run stored (how features_from reads them)."""
    (tmp_path / "runs" / "gmm").mkdir(parents=True)
    np.save(tmp_path / "runs" / "gmm" / "features.npy", features.astype(np.float16))
    images = ImageSet(torch.zeros(len(labels), 1, 1, 1, dtype=torch.uint8), labels, [], "gmm")
    return images, FitContext("cpu", runs_root=tmp_path / "runs")


def test_kmeans_clusters_a_10_class_gaussian_mixture_in_384_d(tmp_path):
    features, labels = gaussian_mixture()
    _, assign = fit_kmeans(torch.from_numpy(features), 10, n_init=10, seed=0)
    assert cluster_accuracy(labels, assign.numpy()) >= 0.95
    images, context = features_run(tmp_path, features, labels)
    fitted = create_method("kmeans", "fast", features_from="gmm").fit(images, context)
    assert cluster_accuracy(labels, fitted.labels_) >= 0.95
    with pytest.raises(NotImplementedError, match="run gmm's stored features"):
        fitted.predict_proba(images)


def test_temi_clusters_a_10_class_gaussian_mixture_in_384_d(tmp_path):
    features, labels = gaussian_mixture()
    images, context = features_run(tmp_path, features, labels)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as fit_on_digits: one thread keeps the shared CPU from being oversubscribed
    try:
        fitted = create_method("temi", "fast", features_from="gmm", cluster_epochs=20,
                               warmup_epochs=2).fit(images, context)
    finally:
        torch.set_num_threads(threads)
    assert cluster_accuracy(labels, fitted.labels_) >= 0.95
    assert fitted.neighbors_.shape == (1000, 10) and fitted.features_.shape == (1000, 384)


def test_the_train_page_offers_pretrained_features_and_refuses_a_backbone_without_weights():
    pytest.importorskip("streamlit")
    from conftest import open_page

    at = open_page("pages/train.py")
    next(box for box in at.selectbox if box.label == "Method").select("temi").run()
    # without pretrained features temi trains a SimCLR pretext, which a later run may reuse
    assert any(box.label == "Reuse pretext from run" for box in at.selectbox)
    features = next(box for box in at.selectbox if box.label == "Frozen pretrained features")
    assert list(PRETRAINED_BACKBONES) == features.options[1:]
    assert features.options[0] == "none — the pretext's features"
    features.select(RESNET18).run()
    next(button for button in at.button if button.label == "Start").click().run()
    assert not at.exception
    assert any("--weights FILE" in error.value for error in at.error)
    assert "run_id" not in at.session_state


def test_an_authors_style_dinov2_checkpoint_at_518_px_is_converted_to_the_224_px_extractor():
    """The DINOv2 release files carry a mask token and a 37×37 position grid; timm's filter drops the one and
    resamples the other, and the strict load then accepts every key."""
    timm = pytest.importorskip("timm")
    entry = get_pretrained("dinov2-vits14")
    model = entry.build()
    released = dict(timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0).state_dict())
    released["mask_token"] = torch.zeros(1, 384)
    assert released["pos_embed"].shape != model.state_dict()["pos_embed"].shape
    load_state_dict_strictly(model, entry.adapt_state_dict(released, model), "a DINOv2 release file")


@pytest.mark.parametrize("method, stages", [("scan", ["mine", "cluster", "selflabel"]), ("smc", ["mine", "cluster"])])
def test_a_method_on_frozen_features_skips_its_pretext_and_clusters_a_10_class_gaussian_mixture(
        monkeypatch, method, stages):
    """With pretext_from=pretrained:NAME the backbone's (here: stand-in) features replace the pretext: SCAN's heads
    and self-labelling, and smc's three-view mining (one view: there are no pixels) and SCAN step, train on them;
    predict_proba assigns images through the same backbone's features."""
    import importlib

    features, labels = gaussian_mixture()
    monkeypatch.setattr(importlib.import_module("engine.methods.scan_heads"), "pretrained_features",
                        lambda *args: torch.from_numpy(features))
    images = ImageSet(torch.zeros(len(labels), 1, 1, 1, dtype=torch.uint8), labels, [], "gmm")
    events = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fitted = create_method(method, "fast", pretext_from=f"pretrained:{RESNET18}",
                               pretrained_weights=__file__).fit(images, FitContext("cpu", events.append))
    finally:
        torch.set_num_threads(threads)
    assert cluster_accuracy(labels, fitted.labels_) >= 0.95
    assert [e.stage for e in events if e.kind == "stage"] == stages
    assert fitted.features_.shape == (1000, 384) and fitted.neighbors_.shape[0] == 1000
    np.testing.assert_allclose(fitted.predict_proba(images), fitted.probs_, atol=1e-5)


def test_a_pretrained_kmeans_run_started_from_the_train_page_on_a_weights_file_finishes(resnet18_weights,
                                                                                         two_kinds_folder):
    pytest.importorskip("streamlit")
    import time

    from conftest import HANG_GUARD_S, open_page

    at = open_page("pages/train.py")
    next(box for box in at.selectbox if box.label == "Dataset").select("folder:…").run()
    next(box for box in at.text_input if box.label == "Image folder or archive").input(str(two_kinds_folder))
    next(box for box in at.selectbox if box.label == "Method").select("kmeans").run()
    next(box for box in at.number_input if box.label == "Clusters K").set_value(2)
    next(box for box in at.selectbox if box.label == "Frozen pretrained features").select(RESNET18).run()
    weights = next(box for box in at.text_input if box.label.startswith("Backbone weights file"))
    weights.input(str(resnet18_weights)).run()
    next(button for button in at.button if button.label == "Start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline and not any(metric.label == "ACC" for metric in at.metric):
        time.sleep(0.5)
        at.run()
    assert not at.exception
    assert any("finished" in md.value for md in at.markdown)
    from engine.runs import RunStore

    (run,) = RunStore().list()
    assert run.config["pretext_from"] == f"pretrained:{RESNET18}"
    assert run.config["pretrained_weights"] == str(resnet18_weights)

"""The engine as a library: light imports, the method registry and contract, K-means, shared losses."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import HANG_GUARD_S, REPO
from engine.clustering.kmeans import fit_kmeans
from engine.clustering.metrics import cluster_accuracy
from engine.errors import ConfigError, TrainingError
from engine.methods import FitContext, create_method, get_method, list_methods
from engine.methods.base import check_not_collapsed
from engine.nn import class_balanced_cross_entropy, ema_update, entropy, nt_xent_loss, scan_loss

HEAVY_UI_MODULES = ("streamlit", "plotly", "faiss", "umap", "pacmap")


def test_importing_the_engine_core_pulls_in_no_ui_or_optional_library():
    code = ("import sys, engine, engine.methods, engine.runs, engine.analysis, engine.data, engine.cli; "
            f"print([m for m in {HEAVY_UI_MODULES!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_registered_method_declares_stages_and_both_presets():
    for name in list_methods():
        method = get_method(name)
        assert method.stages and all(stage.losses for stage in method.stages), name
        assert {"paper", "fast"} <= set(method.presets), name
        described = method.describe()
        assert described["name"] == name and described["paper"]


def test_every_registered_methods_presets_pass_validation_also_read_back_from_json():
    """A stored run's config comes back from JSON (tuples as lists) and is validated again when it runs."""
    for name in list_methods():
        method = get_method(name)
        for preset in method.presets:
            config = create_method(name, preset).config
            config.validate()
            method.Config(**json.loads(json.dumps(dataclasses.asdict(config)))).validate()


def test_unknown_settings_and_presets_are_config_errors():
    with pytest.raises(ConfigError, match="no setting"):
        create_method("kmeans", "fast", not_a_setting=1)
    with pytest.raises(ConfigError, match="no preset"):
        create_method("kmeans", "turbo")
    with pytest.raises(ConfigError, match="unknown method"):
        get_method("dbscan-but-deep")


def test_config_validation_rejects_impossible_values(digits):
    with pytest.raises(ConfigError, match="at least 2"):
        create_method("kmeans", "fast", n_clusters=1).fit(digits)
    with pytest.raises(ConfigError, match="only 1797 images"):
        create_method("kmeans", "fast", n_clusters=1798).fit(digits)
    with pytest.raises(ConfigError, match="must be ≥ 0"):
        create_method("scan", "fast", pretext_epochs=-1).config.validate()
    with pytest.raises(ConfigError, match="must be positive"):
        create_method("scan", "fast", cluster_lr=-0.1).config.validate()


def test_kmeans_finds_well_separated_blobs_exactly():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    truth = np.repeat(np.arange(3), 50)
    points = torch.from_numpy(centres[truth] + rng.normal(0, 0.5, (150, 2)).astype(np.float32))
    _, assign = fit_kmeans(points, 3, n_init=3, seed=0)
    assert cluster_accuracy(truth, assign.numpy()) == 1.0


def test_kmeans_allocates_no_n_by_d_array_after_the_row_norms():
    """K-means on N×D data keeps to N×K and K×D temporaries (issue 16: a fresh N×D array per Lloyd iteration
    and per k-means++ draw made K-means on 60k CIFAR-10 pixels spend half its time in the kernel)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class NewArrays(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.shapes: list[tuple[str, tuple[int, ...]]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if any(result.alias_info for result in func._schema.returns):
                return out  # a view or an in-place op: no new memory
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(tensor, torch.Tensor):
                    self.shapes.append((str(func), tuple(tensor.shape)))
            return out

    x = torch.rand(500, 64)
    with NewArrays() as recorded:
        fit_kmeans(x, 4, n_init=2, seed=0, max_iter=5)
    assert [name for name, shape in recorded.shapes if shape == (500, 64)] == []


def test_kmeans_on_digits_pixels_matches_the_known_baseline(kmeans_digits_acc):
    assert 0.74 < kmeans_digits_acc < 0.82  # scikit-learn's K-means on the same pixels: ≈ 0.79


def test_kmeans_records_one_inertia_per_restart_and_can_be_cancelled(digits):
    events = []
    create_method("kmeans", "fast").fit(digits, FitContext("cpu", events.append))
    assert [e.step for e in events if e.kind == "step"] == list(range(1, 11))
    import threading

    cancelled = threading.Event()
    cancelled.set()
    from engine.errors import RunCancelled

    with pytest.raises(RunCancelled):
        create_method("kmeans", "fast").fit(digits, FitContext("cpu", cancel=cancelled))


def test_nt_xent_is_low_for_matching_views_and_log_2n_minus_1_for_identical_points():
    z = torch.randn(16, 8)
    assert nt_xent_loss(z, z, 0.1) < nt_xent_loss(z, torch.randn(16, 8), 0.1)
    same = torch.ones(4, 3)  # every similarity equal → −log(1 / (2N−1))
    assert nt_xent_loss(same, same, 0.5).item() == pytest.approx(np.log(7), rel=1e-5)


def test_scan_loss_rewards_confident_agreeing_neighbours_and_balanced_clusters():
    agree = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    total, consistency, mean_entropy = scan_loss(agree, agree, entropy_weight=5.0)
    assert consistency.item() == pytest.approx(0.0, abs=1e-3)
    assert mean_entropy.item() == pytest.approx(np.log(2), rel=1e-4)
    assert total.item() == pytest.approx(consistency.item() - 5 * np.log(2), rel=1e-4)
    collapsed = torch.tensor([[10.0, 0.0], [10.0, 0.0]])
    assert scan_loss(collapsed, collapsed)[0] > total


def test_entropy_of_uniform_is_log_k():
    assert entropy(torch.full((4,), 0.25)).item() == pytest.approx(np.log(4))


def test_class_balanced_cross_entropy_weighs_rare_classes_up():
    logits = torch.zeros(4, 2, requires_grad=True)
    targets = torch.tensor([0, 0, 0, 1])
    class_balanced_cross_entropy(logits, targets, 2).backward()
    # the lone class-1 sample pulls as hard as the three class-0 samples together
    assert logits.grad[3, 1].abs().item() == pytest.approx(3 * logits.grad[0, 0].abs().item(), rel=1e-5)


def test_ema_update_moves_target_towards_online():
    online, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = target.weight.detach().clone()
    ema_update(target, online, momentum=0.9)
    assert torch.allclose(target.weight, 0.9 * before + 0.1 * online.weight)


def test_a_collapsed_clustering_is_a_training_error():
    with pytest.raises(TrainingError, match="collapsed.*or a smaller K"):
        check_not_collapsed(np.array([0] * 95 + [1] * 5), 10)
    with pytest.raises(TrainingError, match="collapsed") as refusal:
        check_not_collapsed(np.array([0] * 95 + [1] * 5), 2)
    assert "smaller K" not in str(refusal.value)  # K = 2 is the smallest there is
    check_not_collapsed(np.array([0] * 50 + [1] * 50), 2)


def test_kmeans_keeps_a_cluster_holding_most_images_which_is_the_points_answer_not_a_collapse():
    from engine.data import ImageSet

    points = np.full((40, 4, 4, 1), 100, np.uint8)
    points[:2] = 250  # two outliers apart from 38 alike images
    points[2:] += np.random.default_rng(0).integers(0, 3, (38, 4, 4, 1), dtype=np.uint8)
    events = []
    fitted = create_method("kmeans", "fast", n_clusters=2).fit(
        ImageSet(torch.from_numpy(points), None, [], "test"), FitContext("cpu", events.append))
    assert sorted(np.bincount(fitted.labels_)) == [2, 38]
    warnings = [event.message for event in events if event.kind == "info" and event.stage == "result"]
    assert len(warnings) == 1 and "(cluster 1: 2 images)" in warnings[0] and "smaller K" not in warnings[0], warnings


def test_nan_loss_stops_the_fit_naming_stage_and_step():
    with pytest.raises(TrainingError, match="stage 'pretext' at step 7"):
        FitContext("cpu").step("pretext", 7, 10, {"nt_xent": torch.tensor(float("nan"))})


def test_flips_are_decided_by_content_never_by_the_dataset_name(digits):
    from engine.data.imageset import ImageSet
    from engine.methods.training import ImageGeometry

    gray_as_rgb = ImageSet(digits.images.repeat(1, 1, 1, 3), None, [], "folder:/my/digits")
    colour = ImageSet(torch.randint(0, 256, (50, 8, 8, 3), dtype=torch.uint8), None, [], "digits")
    assert not ImageGeometry.of(digits).flip and not ImageGeometry.of(gray_as_rgb).flip
    assert ImageGeometry.of(colour).flip  # named "digits", but colour photos: flipped
    assert ImageGeometry.of(digits, flip=True).flip and not ImageGeometry.of(colour, flip=False).flip


def test_contrastive_views_are_blurred_by_simclrs_size_rule_unless_the_blur_setting_says(digits):
    from engine.data.imageset import ImageSet
    from engine.methods.training import ImageGeometry

    small_colour = ImageSet(torch.randint(0, 256, (50, 32, 32, 3), dtype=torch.uint8), None, [], "cifar")
    large_colour = ImageSet(torch.randint(0, 256, (50, 96, 96, 3), dtype=torch.uint8), None, [], "photos")
    assert not ImageGeometry.of(small_colour).augment("simclr").blur  # CIFAR-sized views unblurred, as in SimCLR
    assert not ImageGeometry.of(digits).augment("simclr").blur
    assert ImageGeometry.of(large_colour).augment("simclr").blur  # ImageNet-sized views blurred
    assert ImageGeometry.of(digits, blur=True).augment("simclr").blur
    assert not ImageGeometry.of(large_colour, blur=False).augment("simclr").blur


def test_the_stroke_setting_varies_the_pen_width_of_gray_views_of_16_px_or_more_only(digits):
    from engine.data.imageset import ImageSet
    from engine.methods.training import ImageGeometry

    gray28 = ImageSet(torch.randint(0, 256, (50, 28, 28, 1), dtype=torch.uint8), None, [], "folder:/my/digits")
    gray28_as_rgb = ImageSet(gray28.images.repeat(1, 1, 1, 3), None, [], "folder:/my/scans")
    colour = ImageSet(torch.randint(0, 256, (50, 32, 32, 3), dtype=torch.uint8), None, [], "digits28")
    assert ImageGeometry.of(gray28, stroke=True).augment("simclr").stroke
    assert ImageGeometry.of(gray28_as_rgb, stroke=True).augment("simclr").stroke
    assert not ImageGeometry.of(gray28).augment("simclr").stroke  # off unless asked for
    assert not ImageGeometry.of(digits, stroke=True).augment("simclr").stroke  # 8 px: a pixel is most of a stroke
    assert not ImageGeometry.of(colour, stroke=True).augment("simclr").stroke  # photos have no pen


def test_every_image_method_has_a_flip_setting_that_validates():
    for name in list_methods():
        config = create_method(name, "fast").config
        if hasattr(config, "image_size"):
            assert config.flip is None, name
            create_method(name, "fast", flip=True).config.validate()
            with pytest.raises(ConfigError):
                create_method(name, "fast", flip="sometimes").config.validate()
            if hasattr(config, "blur"):  # DEC's autoencoder sees no augmented views
                # the papers' presets keep SimCLR's size rule; a fast preset may set it (digpro blurs)
                assert create_method(name, "paper").config.blur is None, name
                with pytest.raises(ConfigError):
                    create_method(name, "fast", blur="often").config.validate()


def test_empty_and_tiny_clusters_are_reported_with_their_sizes():
    from engine.methods.base import uneven_clusters_warning

    assert uneven_clusters_warning(np.repeat(np.arange(4), 50), 4) is None
    labels = np.concatenate([np.repeat([0, 1, 2], 60), [3] * 5])  # 185 images, K=5: even share 37
    warning = uneven_clusters_warning(labels, 5)
    assert warning.startswith("warning:") and "1 of 5 clusters are empty (4)" in warning
    assert "1 cluster holds under a quarter of the 37 images an even split gives each (cluster 3: 5 images)" in warning
    assert "cluster 0" not in warning
    assert warning.endswith("try another seed or a smaller K.")  # K-means, DEC, JULE: no balance setting to raise


def test_uneven_clusters_point_to_the_methods_own_balance_setting_with_its_value():
    from engine.methods.base import balance_remedy, uneven_clusters_warning

    labels = np.concatenate([np.repeat([0, 1, 2], 60), [3] * 5])
    warning = uneven_clusters_warning(labels, 4, balance_remedy(create_method("socnet", "fast").config))
    assert warning.endswith("try a larger balance_weight (now 3), another seed or a smaller K.")
    with pytest.raises(TrainingError, match=r"try a larger entropy_weight \(now 5\), another seed or a smaller K"):
        check_not_collapsed(np.array([0] * 95 + [1] * 5), 3, balance_remedy(create_method("scan", "fast").config))


def test_a_fit_with_a_tiny_cluster_says_so_in_its_messages():
    from engine.data.imageset import ImageSet

    values = torch.tensor([0] * 60 + [120] * 60 + [250] * 2, dtype=torch.uint8)
    images = ImageSet(values[:, None, None, None].expand(-1, 8, 8, 1).contiguous(), None, [], "generated")
    events = []
    create_method("kmeans", "fast", n_clusters=3).fit(images, FitContext("cpu", events.append))
    warnings = [e.message for e in events if e.kind == "info" and e.message.startswith("warning:")]
    assert len(warnings) == 1 and re.search(r"\(cluster \d: 2 images\)", warnings[0])


def test_a_map_above_the_fit_limit_places_the_other_points_where_the_full_map_would(monkeypatch):
    import engine.analysis.maps as maps
    from engine.bench import clustered_features

    monkeypatch.setattr(maps, "MAP_FIT_MAX", 300)
    monkeypatch.setattr(maps, "_project", lambda features, kind, seed: features[:, :2] * 10)  # a stand-in map
    features = clustered_features(1000, dim=16, n_clusters=5)
    coords = maps._project_sampled(features, "pacmap", seed=0)
    assert coords.shape == (1000, 2) and np.isfinite(coords).all()
    # placed points land near where the stand-in map would have put them
    assert np.median(np.linalg.norm(coords - features[:, :2] * 10, axis=1)) < 1.0


def test_on_a_small_set_the_presets_step_batches_shrink_so_an_epoch_takes_about_eight_steps():
    from engine.data.imageset import ImageSet
    from engine.methods.base import small_set_batches

    spice = create_method("spice", "fast").config
    config, reduced = small_set_batches(spice, 300, frozenset({"self_train_batch_size"}))
    assert (config.pretext_batch_size, config.self_train_batch_size) == (37, spice.self_train_batch_size)  # user's
    assert config.self_batch_size == spice.self_batch_size  # SPICE-Self's prototype batch is not a step batch
    assert reduced == "pretext_batch_size 256→37"
    assert small_set_batches(spice, 1000, frozenset()) == (spice, "")  # 1,000 images or more: the preset's
    assert small_set_batches(spice, 40, frozenset())[0].pretext_batch_size == 16  # never under 16
    # a fit says what it reduced
    values = torch.randint(0, 256, (200, 8, 8, 1), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    events = []
    method = create_method("dec", "fast", n_clusters=3, layerwise_epochs=1, finetune_epochs=1, cluster_epochs=1)
    method.fit(ImageSet(values, None, [], "generated"), FitContext("cpu", events.append))
    said = [e.message for e in events if e.kind == "info" and e.message.startswith("a small set")]
    assert said == ["a small set (200 images): the preset's batches are reduced so that an epoch takes about 8 "
                    "steps: pretrain_batch_size 256→25, cluster_batch_size 256→25"]
    assert method.config.pretrain_batch_size == 256  # the config keeps the preset's: it reproduces the run


def test_fit_on_a_bare_array_says_to_build_an_image_set_and_a_missing_gpu_is_a_user_error():
    from engine.errors import UserError

    with pytest.raises(TypeError, match="ImageSet.*not a numpy.ndarray"):
        create_method("kmeans", "fast").fit(np.zeros((10, 8, 8, 1), np.uint8), FitContext("cpu"))
    assert FitContext("auto").device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU is visible"):
            FitContext("cuda")

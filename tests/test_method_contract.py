"""The contract every registered method follows — the written rule for adding one (engine/methods/README.md).

Each method is fitted once, cheaply (every training stage 2 epochs of batches of 100 over 300 digits; a result
may be collapsed that early, which the contract does not judge), and must give: integer labels_ in [0, K),
N×K probs_ whose rows sum to 1, N-row float features_, exactly its stages' declared loss names recorded per stage,
and, where it can assign images, predict_proba equal to probs_ on the images it was fitted on; before fit,
predict_proba and predict raise NotFittedError and the declared fitted attributes are unset. Every trained
stage runs ``training.train_epochs`` and must resume mid-stage to the very result of an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from conftest import recorded_losses
from engine.errors import NotFittedError, RunCancelled, TrainingError
from engine.methods import FitContext, create_method, get_method, list_methods
from engine.methods.settings import setting_choices, setting_help
from engine.methods.training import TRAIN_ACC

N_IMAGES = 300
# every trained stage, each run by train_epochs: a fit cancelled after the stage's first epoch resumes there
TRAINED_STAGES = [("cc", "train"), ("pica", "train"), ("socnet", "train"), ("scan", "pretext"),
                  ("spice", "pretext"), ("smc", "pretext"), ("temi", "pretext"), ("digpro", "train"),
                  ("temi", "cluster"),
                  ("dec", "layerwise"), ("dec", "finetune"), ("dec", "cluster"), ("jule", "unroll"),
                  ("scan", "cluster"), ("scan", "selflabel"), ("smc", "cluster"), ("spice", "self"), ("spice", "semi")]
# stages that train no network: K-means, neighbour mining, JULE's first clusters
UNTRAINED_STAGES = {("kmeans", "cluster"), ("scan", "mine"), ("smc", "mine"), ("temi", "mine"), ("jule", "init")}
# the trained stages whose network assigns clusters: with labels, each records its accuracy after every epoch
CLUSTERING_STAGES = {"cc": {"train"}, "pica": {"train"}, "socnet": {"train"}, "digpro": {"train"},
                     "temi": {"cluster"}, "dec": {"cluster"}, "jule": {"unroll"}, "scan": {"cluster", "selflabel"},
                     "smc": {"cluster"}, "spice": {"semi"}, "kmeans": set()}
# settings counted in steps rather than epochs: kept as short as the epochs; 2 epochs on 300 digits leave SPICE-Semi
# a reliable image per cluster, which it would skip as too few: it runs on them here
SHORT_STEPS = {"dec": {"update_interval": 2}, "spice": {"semi_steps": 4, "min_reliable_per_cluster": 0}}


@pytest.fixture(scope="module")
def few_digits(digits):
    return dataclasses.replace(digits, images=digits.images[:N_IMAGES], labels=digits.labels[:N_IMAGES])


def cheap_settings(method: str) -> dict:
    """Every stage of the fast preset at 2 epochs (a warm-up at most 1) of batches of at most 100, and the
    settings of :data:`SHORT_STEPS`."""
    fast = dataclasses.asdict(create_method(method, "fast").config)
    settings = {}
    for name, value in fast.items():
        if name.endswith("epochs") and isinstance(value, int) and value > 0:
            settings[name] = 1 if name.startswith("warmup") else min(value, 2)
        elif name.endswith("batch_size") and isinstance(value, int):
            settings[name] = min(value, 100)
    return {**settings, **SHORT_STEPS.get(method, {})}


def fit(method: str, images, context: FitContext):
    """Fit with the cheap settings on one thread; a collapsed result still has its attributes to check."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = create_method(method, "fast", **cheap_settings(method))
        try:
            model.fit(images, context)
        except TrainingError as error:
            if "collapsed" not in str(error):
                raise
        return model
    finally:
        torch.set_num_threads(threads)


_FITS: dict[str, tuple] = {}


def fitted(method: str, images):
    if method not in _FITS:
        events = []
        _FITS[method] = fit(method, images, FitContext("cpu", events.append)), events
    return _FITS[method]


@pytest.mark.parametrize("method", sorted(list_methods()))
def test_results_have_the_contracts_shapes_and_types(method, few_digits):
    model, _ = fitted(method, few_digits)
    k = model.config.n_clusters
    assert model.labels_.shape == (N_IMAGES,) and np.issubdtype(model.labels_.dtype, np.integer)
    assert 0 <= model.labels_.min() and model.labels_.max() < k
    assert model.probs_.shape == (N_IMAGES, k) and np.issubdtype(model.probs_.dtype, np.floating)
    np.testing.assert_allclose(model.probs_.sum(1), 1.0, atol=1e-3)
    assert model.features_.ndim == 2 and model.features_.shape[0] == N_IMAGES
    assert np.issubdtype(model.features_.dtype, np.floating)


@pytest.mark.parametrize("method", sorted(list_methods()))
def test_every_stage_records_exactly_its_declared_losses(method, few_digits):
    _, events = fitted(method, few_digits)
    assert recorded_losses(events) == {stage.name: set(stage.losses) for stage in get_method(method).stages}


@pytest.mark.parametrize("method", sorted(list_methods()))
def test_a_labelled_fit_records_the_accuracy_of_every_stage_that_assigns_clusters(method, few_digits):
    _, events = fitted(method, few_digits)
    recorded = [(event.stage, event.losses[TRAIN_ACC]) for event in events
                if event.kind == "step" and TRAIN_ACC in event.losses]
    assert {stage for stage, _ in recorded} == CLUSTERING_STAGES[method]
    assert all(0 <= accuracy <= 1 for _, accuracy in recorded)


@pytest.mark.parametrize("method", sorted(list_methods()))
def test_measuring_the_accuracy_after_each_epoch_changes_nothing_the_fit_learns(method, few_digits):
    labelled, _ = fitted(method, few_digits)
    unlabelled = fit(method, dataclasses.replace(few_digits, labels=None), FitContext("cpu"))
    np.testing.assert_array_equal(unlabelled.labels_, labelled.labels_)
    np.testing.assert_array_equal(unlabelled.probs_, labelled.probs_)


@pytest.mark.parametrize("method", sorted(list_methods()))
def test_predict_proba_gives_the_fitted_images_their_probs(method, few_digits):
    model, _ = fitted(method, few_digits)
    try:
        probs = model.predict_proba(few_digits)
    except NotImplementedError:
        pytest.skip(f"{method} cannot assign new images")
    np.testing.assert_allclose(probs, model.probs_, atol=1e-5)


@pytest.mark.parametrize("method", sorted(list_methods()))
def test_assigning_images_before_fit_raises_not_fitted_and_fit_sets_every_declared_attribute(method, few_digits):
    unfitted = create_method(method, "fast")
    for assign in (unfitted.predict_proba, unfitted.predict):
        with pytest.raises(NotFittedError, match=f"{method} model is not fitted yet.*call fit"):
            assign(few_digits)
    model, _ = fitted(method, few_digits)
    assert all(getattr(model, name, None) is not None for name in model.fitted_attributes)


@pytest.mark.parametrize(("method", "stage"), TRAINED_STAGES)
def test_a_fit_cancelled_mid_stage_resumes_to_the_uninterrupted_result(method, stage, few_digits, tmp_path):
    cancel = threading.Event()
    epoch_loss = next(s.losses[0] for s in get_method(method).stages if s.name == stage)

    def cancel_after_first_epoch(event) -> None:
        if event.kind == "step" and event.stage == stage and epoch_loss in event.losses:
            cancel.set()

    def context(on_event=None) -> FitContext:
        return FitContext("cpu", on_event, cancel, checkpoint_dir=tmp_path / "checkpoints", checkpoint_every_s=0)

    with pytest.raises(RunCancelled):
        fit(method, few_digits, context(cancel_after_first_epoch))
    cancel.clear()
    messages = []
    resumed = fit(method, few_digits, context(lambda e: messages.append(e.message)))
    assert f"resumed {stage} at epoch 1" in messages
    uninterrupted, _ = fitted(method, few_digits)
    np.testing.assert_array_equal(resumed.labels_, uninterrupted.labels_)
    np.testing.assert_array_equal(resumed.probs_, uninterrupted.probs_)


def test_every_stage_of_every_method_is_trained_by_the_loop_or_trains_nothing():
    stages = {(method, stage.name) for method in list_methods() for stage in get_method(method).stages}
    assert stages - UNTRAINED_STAGES == set(TRAINED_STAGES)


@pytest.mark.parametrize("method", sorted(list_methods()))
def test_every_setting_the_train_page_offers_says_what_it_means(method):
    """The Train page draws a widget for each key setting that is a number or a choice; each shows its help."""
    cls = get_method(method)
    fast = cls.describe()["presets"]["fast"]
    offered = [name for name in cls.key_settings if setting_choices(cls.Config, name) is not None
               or (isinstance(fast.get(name), (int, float)) and not isinstance(fast.get(name), bool))]
    assert offered and [name for name in offered if not setting_help(cls.Config, name)] == []

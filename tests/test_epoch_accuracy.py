"""The accuracy after each epoch (issue 13, "loss falls while accuracy falls"): a stage that assigns clusters
records its Hungarian-matched ACC on the training images once per epoch when they have labels, measured in the
shared training loop without touching what the training draws or learns."""
from __future__ import annotations

import dataclasses

from conftest import fit_on_digits
from engine.clustering.metrics import cluster_accuracy
from engine.methods.training import TRAIN_ACC

EPOCHS = 3


def epoch_values(events, name: str) -> list[float]:
    return [event.losses[name] for event in events if event.kind == "step" and name in event.losses]


def test_a_labelled_fit_records_its_accuracy_after_every_epoch_of_its_clustering_stage(digits):
    method, events = fit_on_digits("cc", digits, epochs=EPOCHS)
    accuracies = epoch_values(events, TRAIN_ACC)
    assert len(accuracies) == EPOCHS and all(0 <= acc <= 1 for acc in accuracies)
    assert {event.stage for event in events if TRAIN_ACC in event.losses} == {"train"}
    # digits has fewer images than the sample, so the last epoch's figure is the fitted model's accuracy
    assert accuracies[-1] == cluster_accuracy(digits.labels, method.labels_)


def test_an_unlabelled_fit_records_no_accuracy_and_trains_exactly_as_the_labelled_one(digits):
    labelled, labelled_events = fit_on_digits("cc", digits, epochs=EPOCHS)
    unlabelled, events = fit_on_digits("cc", dataclasses.replace(digits, labels=None), epochs=EPOCHS)
    assert epoch_values(events, TRAIN_ACC) == []
    for loss in ("total", "instance", "cluster", "entropy"):
        assert epoch_values(events, loss) == epoch_values(labelled_events, loss), loss
    assert (unlabelled.labels_ == labelled.labels_).all()


def test_scan_records_the_accuracy_of_its_cluster_and_selflabel_epochs(digits):
    _, events = fit_on_digits("scan", digits, pretext_epochs=1, cluster_epochs=2, selflabel_epochs=2)
    stages = [event.stage for event in events if event.kind == "step" and TRAIN_ACC in event.losses]
    assert stages == ["cluster", "cluster", "selflabel", "selflabel"]
    assert all(0 <= acc <= 1 for acc in epoch_values(events, TRAIN_ACC))

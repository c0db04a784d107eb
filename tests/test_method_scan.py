"""Specification of SCAN's heads trained on the frozen pretext backbone (``head_views='frozen'``, the fast preset).
SCAN's quality on digits is checked by ``test_cli.py::test_scan_fast_beats_kmeans_on_digits_by_005``."""

import torch

from engine.methods import FitContext, create_method

TINY = {"pretext_epochs": 1, "pretext_batch_size": 128, "cluster_epochs": 2, "selflabel_epochs": 1,
        "n_clusters": 10, "seed": 0}


def test_frozen_heads_leave_the_pretext_backbone_as_the_pretext_left_it_and_assign_images_from_pixels(digits):
    heads_trained = create_method("scan", "fast", **TINY).fit(digits, FitContext("cpu"))
    pretext_only = create_method("scan", "fast", **{**TINY, "cluster_epochs": 1, "selflabel_epochs": 0})
    pretext_only.fit(digits, FitContext("cpu"))
    assert heads_trained.config.head_views == "frozen"
    trained, reference = heads_trained.model_.backbone.state_dict(), pretext_only.model_.backbone.state_dict()
    assert trained.keys() == reference.keys()
    assert all(torch.equal(trained[key], reference[key]) for key in trained)  # the heads' steps never touched it
    assert not torch.equal(heads_trained.model_.heads.heads[0].weight, pretext_only.model_.heads.heads[0].weight)
    probabilities = heads_trained.predict_proba(digits)  # from the pixels, through backbone and kept head
    assert probabilities.shape == (len(digits), 10)
    assert (probabilities.argmax(1) == heads_trained.labels_).mean() == 1.0

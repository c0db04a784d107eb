"""``digits28``: the bundled digits drawn at 28×28 with seeded stroke widths and shifts."""
from __future__ import annotations

import numpy as np
import pytest

from engine.data import DATASETS, load_dataset
from engine.data.digits28 import GLYPH, MAX_SHIFT, SIDE, render_digits28


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DCE_CACHE_DIR", str(tmp_path / "cache"))


def test_digits28_is_the_1797_digits_at_28x28_gray_with_their_labels():
    digits, drawn = load_dataset("digits"), load_dataset("digits28")
    assert drawn.images.shape == (1797, 28, 28, 1)
    assert np.array_equal(drawn.labels, digits.labels)
    assert drawn.class_names == digits.class_names and drawn.source == "digits28"
    assert DATASETS["digits28"].source == "bundled" and DATASETS["digits28"].n_images == 1797


def test_digits28_is_the_same_on_every_load_and_another_seed_draws_it_otherwise():
    from sklearn.datasets import load_digits

    eights = load_digits().images[:50]
    assert np.array_equal(render_digits28(eights, seed=0), render_digits28(eights, seed=0))
    assert not np.array_equal(render_digits28(eights, seed=0), render_digits28(eights, seed=1))


def test_digits28_ink_stays_inside_the_shifted_glyph_box_and_stroke_widths_vary():
    from sklearn.datasets import load_digits

    drawn = render_digits28(load_digits().images[:200])[..., 0]
    margin = (SIDE - GLYPH) // 2 - MAX_SHIFT
    assert drawn[:, :margin].max() == 0 and drawn[:, SIDE - margin:].max() == 0
    assert drawn[:, :, :margin].max() == 0 and drawn[:, :, SIDE - margin:].max() == 0
    ink = (drawn > 127).reshape(len(drawn), -1).sum(1)
    assert ink.max() > 1.5 * ink.min() > 0


def test_digits28_refuses_images_that_are_not_8x8():
    with pytest.raises(ValueError, match="8×8"):
        render_digits28(np.zeros((3, 16, 16)))

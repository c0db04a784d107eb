"""DEC (Xie et al., ICML 2016): autoencoder pretraining, then self-training on a sharpened Student's t assignment."""
import pytest
import torch

from conftest import fit_on_digits
from engine.clustering.metrics import cluster_accuracy
from engine.data.imageset import ImageSet
from engine.methods import get_method
from engine.data.descriptors import hog_colour
from engine.errors import ConfigError
from engine.methods.dec import dec_loss, student_t_assignment, target_distribution
from engine.methods.training import resolve_descriptor


@pytest.fixture(scope="module")
def dec_fit(digits):
    """One fast-preset fit on digits (CPU, seed 0), shared by the tests that need a trained model."""
    return fit_on_digits("dec", digits, seed=0)


def test_dec_beats_kmeans_on_digits(dec_fit, digits, kmeans_digits_acc):
    method, _ = dec_fit
    n = len(digits)
    assert method.features_.shape == (n, 10)  # the autoencoder's 10-d embedding
    assert cluster_accuracy(digits.labels, method.labels_) >= kmeans_digits_acc + 0.03


def test_dec_assigns_new_images_like_the_training_ones(dec_fit, digits):
    method, _ = dec_fit
    probs = method.predict_proba(ImageSet(digits.images[:50], None, [], digits.source))
    assert probs.shape == (50, 10)
    assert probs == pytest.approx(method.probs_[:50], abs=1e-5)


def test_dec_reads_photos_through_hog_and_a_colour_map_and_glyphs_as_pixels(digits):
    """The paper's inputs: pixels for MNIST, HOG + an 8×8 colour map for the STL-10 photos (§4.1)."""
    colour = ImageSet(torch.randint(0, 256, (20, 32, 32, 3), dtype=torch.uint8), None, [], "folder:/photos")
    gray_as_rgb = ImageSet(digits.images[:20].repeat(1, 1, 1, 3), None, [], "folder:/digits")
    assert resolve_descriptor("auto", colour, 32) == "hog_colour"
    assert resolve_descriptor("auto", colour, 8) == "pixels"  # too small for 4 × 4 cells of gradients
    assert resolve_descriptor("auto", gray_as_rgb, 8) == resolve_descriptor("auto", digits, 28) == "pixels"
    assert resolve_descriptor("pixels", colour, 32) == "pixels"
    assert resolve_descriptor("hog_colour", digits, 16) == "hog_colour"
    with pytest.raises(ConfigError, match="at least 8 px"):
        resolve_descriptor("hog_colour", digits, 4)
    with pytest.raises(ConfigError, match="descriptor must be one of"):
        get_method("dec")(descriptor="sift").config.validate()


def test_hog_sees_edge_orientation_and_the_colour_map_sees_colour():
    vertical = torch.zeros(1, 3, 32, 32)
    vertical[..., 16:] = 1.0  # a vertical edge: a horizontal gradient, orientation 0°
    horizontal = vertical.transpose(-1, -2).contiguous()
    red, blue = torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)
    red[:, 0], blue[:, 2] = 1.0, 1.0
    a, b = hog_colour(vertical)[0, :324], hog_colour(horizontal)[0, :324]
    assert float(a @ b) < 0.2  # other orientation bins
    assert float(hog_colour(red)[0, 324:] @ hog_colour(blue)[0, 324:]) == 0.0
    assert float(hog_colour(vertical * 0.5)[0] @ hog_colour(vertical)[0]) == pytest.approx(2.0, abs=1e-4)  # contrast


def test_dec_on_colour_images_assigns_new_images_like_the_training_ones(one_torch_thread):
    images = ImageSet(torch.randint(0, 256, (64, 16, 16, 3), dtype=torch.uint8), None, [], "folder:/photos")
    method = get_method("dec").from_preset("fast", n_clusters=3, layerwise_epochs=1, finetune_epochs=1,
                                           cluster_epochs=1)
    method.fit(images)
    assert method.input_.descriptor == "hog_colour"
    probs = method.predict_proba(ImageSet(images.images[:10], None, [], images.source))
    assert probs == pytest.approx(method.probs_[:10], abs=1e-5)


def test_student_t_assignment_and_target_distribution_by_hand():
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    q = student_t_assignment(z, centres, alpha=1.0)
    # kernels (1 + d²)^−1: row 0 → 1, 1/2; row 1 → 1/10, 1/5
    assert q.flatten().tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3, 2 / 3])
    p = target_distribution(q)
    # f = (1, 1): p ∝ q², so 4:1 and 1:4
    assert p.flatten().tolist() == pytest.approx([0.8, 0.2, 0.2, 0.8])


def test_target_distribution_discounts_large_clusters():
    q = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.9, 0.1]])  # cluster 0 holds most of the mass
    p = target_distribution(q)
    assert p[0, 1] > p[0, 0]  # an undecided sample is pushed towards the smaller cluster


def test_dec_loss_is_the_kl_divergence():
    q = torch.tensor([[0.5, 0.5]])
    p = torch.tensor([[0.8, 0.2]])
    expected = 0.8 * torch.log(torch.tensor(1.6)) + 0.2 * torch.log(torch.tensor(0.4))
    assert float(dec_loss(q, p)) == pytest.approx(float(expected))
    assert float(dec_loss(p, p)) == pytest.approx(0.0, abs=1e-7)


def test_dec_paper_preset_matches_the_paper():
    config = get_method("dec").from_preset("paper").config
    assert (*config.hidden_dims, config.embedding_dim) == (500, 500, 2000, 10)
    assert config.dropout == 0.2
    assert (config.pretrain_optimizer, config.pretrain_lr, config.pretrain_batch_size) == ("sgd", 0.1, 256)
    assert config.pretrain_lr_drop_steps == 20000 and config.pretrain_weight_decay == 0.0
    assert (config.cluster_lr, config.cluster_momentum, config.cluster_batch_size) == (0.01, 0.9, 256)
    assert config.alpha == 1.0
    assert config.tolerance == 0.001
    assert config.kmeans_restarts == 20

"""The stacked autoencoder DEC pretrains: its shape, its layer-wise pieces and that it learns to reconstruct."""
import pytest
import torch

from engine.nn.autoencoder import StackedAutoencoder, reconstruction_loss


def test_encoder_and_decoder_mirror_each_other():
    ae = StackedAutoencoder((12, 8, 6, 3))
    z, reconstruction = ae(torch.randn(4, 12))
    assert z.shape == (4, 3) and reconstruction.shape == (4, 12)
    assert ae.encode(torch.randn(4, 12), depth=2).shape == (4, 6)
    assert ae.n_layers == 3


def test_embedding_and_reconstruction_are_linear_hidden_layers_are_not():
    torch.manual_seed(0)
    ae = StackedAutoencoder((10, 16, 4))
    z, reconstruction = ae(torch.randn(256, 10))
    assert (ae.encode(torch.randn(256, 10), depth=1) >= 0).all()  # ReLU after the hidden layer
    assert (z < 0).any() and (reconstruction < 0).any()  # no ReLU on the embedding or the output


def test_reconstruction_loss_is_half_the_summed_squared_error():
    target = torch.zeros(2, 3)
    assert float(reconstruction_loss(torch.ones(2, 3), target)) == pytest.approx(1.5)
    assert float(reconstruction_loss(target, target)) == 0.0
    with pytest.raises(ValueError):
        reconstruction_loss(torch.ones(2, 3), torch.ones(2, 4))


def test_layerwise_loss_trains_only_its_own_pair():
    ae = StackedAutoencoder((10, 8, 4))
    with torch.no_grad():  # the layers below are frozen while pair 1 trains on their output
        below = ae.encode(torch.randn(5, 10), depth=1)
    ae.layer_reconstruction_loss(below, layer=1, dropout=0.2).backward()
    trained = {id(p) for p in ae.layer_parameters(1)}
    for p in ae.parameters():
        assert (p.grad is not None) == (id(p) in trained)


def test_a_few_steps_reduce_the_reconstruction_error():
    torch.manual_seed(0)
    x = torch.randn(64, 3) @ torch.randn(3, 20)  # rank-3 data: a 3-d code can reconstruct it
    ae = StackedAutoencoder((20, 32, 3))
    optimizer = torch.optim.Adam(ae.parameters(), lr=3e-2)
    before = reconstruction_loss(ae(x)[1], x).item()
    for _ in range(60):
        loss = reconstruction_loss(ae(x)[1], x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * before

"""A fully connected stacked autoencoder, trainable greedily layer by layer (as denoising autoencoders) and then
end to end — the feature learner of DEC (Xie et al., ICML 2016, §3.2) and of the methods built on it.

Layer i of the encoder maps ``dims[i] → dims[i+1]``; decoder layer i maps back ``dims[i+1] → dims[i]``. Every
layer is followed by a ReLU except two, as in DEC: the last encoder layer (the embedding keeps its full linear
range) and the first decoder layer's output (the reconstruction of the input, which may be negative, e.g.
zero-mean pixels).

Examples:
    >>> ae = StackedAutoencoder((64, 32, 8))
    >>> x = torch.randn(5, 64)
    >>> z, reconstruction = ae(x)
    >>> z.shape, reconstruction.shape
    (torch.Size([5, 8]), torch.Size([5, 64]))
    >>> ae.layer_reconstruction_loss(ae.encode(x, depth=1), layer=1, dropout=0.2).ndim
    0
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least-squares reconstruction error ½‖x − y‖², summed over features and averaged over the batch."""
    if reconstruction.shape != target.shape:
        raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} differ")
    return 0.5 * (reconstruction - target).pow(2).flatten(1).sum(1).mean()


class StackedAutoencoder(nn.Module):
    """Encoder ``dims[0] → … → dims[-1]`` and its mirror decoder; ``forward`` returns (embedding, reconstruction).

    Args:
        dims: layer widths from the input to the embedding, e.g. DEC's ``(d, 500, 500, 2000, 10)``.
    """

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        dims = tuple(int(d) for d in dims)
        if len(dims) < 2 or min(dims) < 1:
            raise ValueError(f"dims needs at least two positive widths (input and embedding), got {dims}")
        self.dims = dims
        self.encoder_layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(len(dims) - 1))
        self.decoder_layers = nn.ModuleList(nn.Linear(dims[i + 1], dims[i]) for i in range(len(dims) - 1))

    @property
    def n_layers(self) -> int:
        return len(self.encoder_layers)

    def _encode_layer(self, h: torch.Tensor, i: int) -> torch.Tensor:
        h = self.encoder_layers[i](h)
        return h if i == self.n_layers - 1 else F.relu(h)

    def _decode_layer(self, h: torch.Tensor, i: int) -> torch.Tensor:
        h = self.decoder_layers[i](h)
        return h if i == 0 else F.relu(h)

    def encode(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """The output of the first ``depth`` encoder layers (all of them by default: the embedding)."""
        for i in range(self.n_layers if depth is None else depth):
            x = self._encode_layer(x, i)
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        for i in reversed(range(self.n_layers)):
            z = self._decode_layer(z, i)
        return z

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return z, self.decode(z)

    def layer_reconstruction_loss(self, h: torch.Tensor, layer: int, dropout: float) -> torch.Tensor:
        """Denoising loss of one encoder/decoder pair (DEC §3.2): the pair reconstructs its input ``h`` (the
        previous layer's output) from a dropout-corrupted copy, with dropout on its code too:
        h̃ = Dropout(h), c = g(W₁h̃ + b₁), c̃ = Dropout(c), y = g'(W₂c̃ + b₂), loss ½‖y − h‖²."""
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer must be in [0, {self.n_layers}), got {layer}")
        code = self._encode_layer(F.dropout(h, dropout, self.training), layer)
        reconstruction = self._decode_layer(F.dropout(code, dropout, self.training), layer)
        return reconstruction_loss(reconstruction, h)

    def layer_parameters(self, layer: int) -> list[nn.Parameter]:
        """The parameters of one encoder/decoder pair (what greedy layer-wise pretraining updates)."""
        return [*self.encoder_layers[layer].parameters(), *self.decoder_layers[layer].parameters()]

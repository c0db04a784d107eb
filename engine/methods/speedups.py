"""How a training step uses a GPU: bfloat16 autocast, channels-last memory, fused optimisers, opt-in torch.compile.

On a CUDA device the network's convolutions and matrix products run in bfloat16 under ``torch.autocast`` (weights,
optimiser state and the ops autocast keeps in float32 — softmax, log-softmax, norms, reductions — stay float32),
activations are laid out channels-last (what tensor cores read fastest), and the optimiser updates every
parameter in one fused kernel. On the CPU all of these are off, so CPU runs compute what they always did.

``torch.compile`` is opt-in (``DCE_COMPILE=1`` or ``bench --compile``): compiling a ResNet-18 costs about a minute
before the first step, which pays off over a paper-length pretext but not in a short interactive run.

Examples:
    >>> Speedups.for_device(torch.device("cpu"))
    Speedups(autocast_dtype=None, channels_last=False, fused_optimizer=False, compile=False)
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import ContextManager

import torch
from torch import nn


@dataclass(frozen=True)
class Speedups:
    """The speed options of one fit.

    Args:
        autocast_dtype: the low-precision dtype of ``torch.autocast`` (bfloat16), or None for float32 throughout.
        channels_last: store convolution weights (hence activations) channels-last.
        fused_optimizer: build optimisers with ``fused=True`` (one kernel for all parameters; CUDA only).
        compile: compile the trained networks with ``torch.compile``.
    """

    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    fused_optimizer: bool = False
    compile: bool = False

    @classmethod
    def for_device(cls, device: torch.device, compile: bool | None = None) -> "Speedups":
        """All on for a CUDA device (bfloat16 where the GPU supports it), all off elsewhere; ``compile`` defaults
        to the ``DCE_COMPILE`` environment variable being ``1``."""
        if device.type != "cuda":
            return cls()
        if compile is None:
            compile = os.environ.get("DCE_COMPILE") == "1"
        bf16 = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return cls(autocast_dtype=bf16, channels_last=True, fused_optimizer=True, compile=compile)

    def autocast(self, device: torch.device) -> ContextManager:
        """The context a forward pass and its loss run in."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Lay ``model`` out channels-last and compile it, in place (its ``state_dict`` keys do not change, so
        checkpoints stay interchangeable with uncompiled runs); returns it."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.compile:
            model.compile()
        return model

"""How a training step uses a GPU: bfloat16 autocast, channels-last memory, fused optimisers, opt-in torch.compile.

On a CUDA device the network's convolutions and matrix products run in bfloat16 under ``torch.autocast`` (weights,
optimiser state and the ops autocast keeps in float32 — softmax, log-softmax, norms, reductions — stay float32),
activations are laid out channels-last (what tensor cores read fastest), the optimiser updates every
parameter in one fused kernel, cuDNN picks the fastest convolution algorithm for each shape, and what stays
float32 may use TF32 matmuls. On the CPU all of these are off, so CPU runs compute what they always did.

``torch.compile`` is opt-in (``DCE_COMPILE=1`` or ``bench --compile``): compiling a ResNet-18 costs about a minute
before the first step, which pays off over a paper-length pretext but not in a short interactive run.

Examples:
    >>> Speedups.for_device(torch.device("cpu"))
    Speedups(autocast_dtype=None, channels_last=False, fused_optimizer=False, tuned_kernels=False, compile=False)
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
        tuned_kernels: cuDNN autotuning and TF32 float32 matmuls (process-wide settings, set by :meth:`prepare`).
        compile: compile the trained networks with ``torch.compile``.
    """

    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    fused_optimizer: bool = False
    tuned_kernels: bool = False
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
        return cls(autocast_dtype=bf16, channels_last=True, fused_optimizer=True, tuned_kernels=True,
                   compile=compile)

    def autocast(self, device: torch.device) -> ContextManager:
        """The context a forward pass and its loss run in."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Lay ``model`` out channels-last and compile it, in place (its ``state_dict`` keys do not change, so
        checkpoints stay interchangeable with uncompiled runs), and switch on the tuned kernels; returns it."""
        if self.tuned_kernels:
            torch.backends.cudnn.benchmark = True
            torch.set_float32_matmul_precision("high")
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.compile:
            model.compile()
        return model

"""How a training step uses a GPU: bfloat16 (or float16) autocast, channels-last memory, fused optimisers, opt-in
torch.compile.

On a CUDA device the network's convolutions and matrix products run in bfloat16 under ``torch.autocast`` (weights,
optimiser state and the ops autocast keeps in float32 — softmax, log-softmax, norms, reductions — stay float32),
activations are laid out channels-last (what tensor cores read fastest), the optimiser updates every
parameter in one fused kernel, cuDNN picks the fastest convolution algorithm for each shape, and what stays
float32 may use TF32 matmuls. On the CPU all of these are off, so CPU runs compute what they always did.

bfloat16 is used only where the GPU computes it natively (compute capability 8.0 and up: A100, H100, RTX 30xx…);
older GPUs can emulate it, slower than float32. Those with float16 tensor cores (7.0 and up: V100, T4, RTX 20xx)
train in float16 instead, with a gradient scaler (:meth:`Speedups.grad_scaler`): float16's narrow range turns
small gradients into zeros unless the loss is scaled up before the backward pass. Only a loop that scales its
gradients — :func:`training.train_epochs` — runs float16; the loops that do not yet run on it stay float32 there.
Older GPUs (Pascal and before) train in float32.

``torch.compile`` is opt-in (``DCE_COMPILE=1`` or ``bench --compile``, on a GPU or the CPU): compiling a ResNet-18
costs about a minute before the first step, which pays off over a paper-length pretext but not in a short
interactive run. What is compiled is what a training loop calls (:meth:`Speedups.compiled`: a network, a
submodule, or a method such as a queue pretext's ``contrast``), never the module in place: evaluation
(``training.embed``, in eval mode, without gradients or autocast, with a smaller last batch) calls the plain module,
so it neither recompiles the step's graphs nor runs in low precision. A compiler that fails on a graph (a Triton
pass failed on one batch-norm kernel of SPICE's pretext on an H200 with torch 2.11) does not end the run: the call
warns with :class:`CompileFallbackWarning` and runs uncompiled from then on.

Examples:
    >>> Speedups.for_device(torch.device("cpu"))  # doctest: +NORMALIZE_WHITESPACE
    Speedups(autocast_dtype=None, channels_last=False, fused_optimizer=False, tuned_kernels=False, compile=False,
             compile_backend='inductor', compile_mode=None)
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ContextManager

import torch
from torch import nn

if TYPE_CHECKING:
    from .distributed import DataParallel


@dataclass(frozen=True)
class Speedups:
    """The speed options of one fit.

    Args:
        autocast_dtype: the low-precision dtype of ``torch.autocast`` (bfloat16, or float16 with a gradient
            scaler), or None for float32 throughout.
        channels_last: store convolution weights (hence activations) channels-last.
        fused_optimizer: build optimisers with ``fused=True`` (one kernel for all parameters; CUDA only).
        tuned_kernels: cuDNN autotuning and TF32 float32 matmuls (process-wide settings, set by :meth:`prepare`).
        compile: compile what the training loops call with ``torch.compile`` (see :meth:`compiled`).
        compile_backend: the ``torch.compile`` backend (``inductor`` generates kernels; ``aot_eager`` only traces,
            which is how the tests check what is compiled without paying for code generation).
        compile_mode: inductor's ``torch.compile`` mode, None for its default: ``reduce-overhead`` replays each
            compiled graph as a CUDA graph (one launch instead of one per kernel), ``max-autotune`` also searches
            for faster kernels. Only ``bench --micro`` sets it, to measure what they would add.
        parallel: the processes of a multi-process fit (:mod:`.distributed`), whose ``train_epochs`` steps run
            what :meth:`compiled` returns through DistributedDataParallel; None in a one-process fit.
    """

    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    fused_optimizer: bool = False
    tuned_kernels: bool = False
    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str | None = None
    parallel: "DataParallel | None" = field(default=None, repr=False, compare=False)

    @classmethod
    def for_device(cls, device: torch.device, compile: bool | None = None) -> "Speedups":
        """All on for a CUDA device (autocast in :func:`low_precision_dtype`), all off elsewhere except
        ``compile``, which defaults to the ``DCE_COMPILE`` environment variable being ``1``."""
        if compile is None:
            compile = os.environ.get("DCE_COMPILE") == "1"
        if device.type != "cuda":
            return cls(compile=compile)
        return cls(autocast_dtype=low_precision_dtype(device), channels_last=True, fused_optimizer=True,
                   tuned_kernels=True, compile=compile)

    @property
    def scales_gradients(self) -> bool:
        """Whether the loss is scaled before the backward pass: float16 autocast needs it, bfloat16 does not."""
        return self.autocast_dtype == torch.float16

    def autocast(self, device: torch.device, gradients_scaled: bool = False) -> ContextManager:
        """The context a forward pass and its loss run in. float16 autocast needs its gradients scaled: a loop that
        does not scale them (``gradients_scaled`` False) runs in float32 instead."""
        if self.autocast_dtype is None or (self.scales_gradients and not gradients_scaled):
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """The loss scaler of a training loop: ``torch.amp.GradScaler`` when autocast runs float16, a pass-through
        (``enabled=False``) otherwise. With a fused optimiser a skipped step (inf or NaN gradients) is decided on the
        device, so the scaler makes the CPU wait for nothing."""
        return torch.amp.GradScaler(device.type, enabled=self.scales_gradients)

    def full_precision(self, device: torch.device) -> ContextManager:
        """Float32 again inside an autocast step: for whole-dataset statistics a decision hangs on (DEC's target
        and stop test)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, enabled=False)

    def prepare(self, model: nn.Module, sync_batchnorm: bool = False) -> nn.Module:
        """Lay ``model`` out channels-last, in place, and switch on the tuned kernels; in a multi-process fit with
        ``sync_batchnorm``, make its batch-norm layers ``SyncBatchNorm`` (GPUs only). Returns it. Compiling and
        replicating what a step calls is :meth:`compiled`'s job."""
        if sync_batchnorm and self.parallel is not None:
            self.parallel.synchronise_batchnorm(model)
        if self.tuned_kernels:
            torch.backends.cudnn.benchmark = True
            torch.set_float32_matmul_precision("high")
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def compiled(self, step_call: Callable[..., Any]) -> Callable[..., Any]:
        """``step_call`` — a module, a submodule or a bound method that a training step calls — compiled with
        ``torch.compile`` when ``compile`` is on, else itself. The module is not changed: its ``state_dict`` keys
        stay those of an uncompiled run, and everything outside the step calls it uncompiled.

        In a multi-process fit the call is also replicated: inside a ``train_epochs`` stage it runs through
        DistributedDataParallel, which averages the gradients of the processes (:meth:`DataParallel.replicate`)."""
        plain = self._compiled_module(step_call)
        if self.parallel is None:
            return plain
        return self.parallel.replicate(step_call, plain, self._compiled_module)

    def _compiled_module(self, module: Callable[..., Any]) -> Callable[..., Any]:
        if not self.compile:
            return module
        compiled = torch.compile(module, backend=self.compile_backend, mode=self.compile_mode)
        return EagerOnCompilerError(compiled, module)


class CompileFallbackWarning(RuntimeWarning):
    """``torch.compile`` failed on a step's graph; the step runs uncompiled."""


class EagerOnCompilerError:
    """A compiled call that runs ``plain`` instead, with a :class:`CompileFallbackWarning`, once compiling fails
    (an error raised by ``torch._dynamo`` or ``torch._inductor``: a compiler bug, not the step's own error).
    Attributes other than the call are ``plain``'s."""

    def __init__(self, compiled: Callable[..., Any], plain: Callable[..., Any]) -> None:
        self._compiled, self._plain = compiled, plain
        self.failed: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed is None:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 — only the compiler's own errors are caught below
                if not type(error).__module__.startswith(("torch._dynamo", "torch._inductor")):
                    raise
                # dynamo also wraps an error of the step itself (a shape mismatch met while tracing): the plain
                # call raises that one as it is, before anything is switched or warned about
                result = self._plain(*args, **kwargs)
                cause = error
                while (inner := getattr(cause, "inner_exception", None) or cause.__cause__) is not None:
                    cause = inner  # dynamo wraps the backend's error: name the original
                first_line = (str(cause).strip().splitlines() or [""])[0]
                self.failed = f"{type(cause).__name__}: {first_line}"
                warnings.warn(f"torch.compile failed ({self.failed[:300]}); this step runs uncompiled from now on",
                              CompileFallbackWarning, stacklevel=2)
                return result
        return self._plain(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._plain, name)


def low_precision_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the CUDA GPU ``device``: bfloat16 where it computes it natively, else float16 where it
    has float16 tensor cores (compute capability 7.0 and up), else None (float32)."""
    if native_bf16(device):
        return torch.bfloat16
    if torch.cuda.get_device_capability(device) >= (7, 0):
        return torch.float16
    return None


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA GPU (``torch.cuda.is_bf16_supported`` also counts
    emulation, which is slower than float32), or a CPU with AVX-512 BF16 or AMX (oneDNN's check). Training uses
    bf16 only on a GPU; frozen-feature extraction also on such a CPU (:mod:`engine.methods.feature_source`)."""
    if device.type != "cuda":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch without the argument
        return torch.cuda.get_device_capability(device) >= (8, 0)

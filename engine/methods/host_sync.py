"""Counting what makes the host wait for an accelerator, on a GPU or without one.

A training step should queue work and move on. The host waits for the device when it reads a value back
(``item``, ``float``, ``bool``, ``tolist``, ``.cpu()``), when an op's output size depends on the data (``nonzero``,
indexing by a mask, ``unique``, ``bincount``), and when it copies host data onto the device from pageable memory
(``torch.tensor(..., device=…)``, ``.to(device)``). :class:`HostSyncCounter` is a ``TorchDispatchMode``: it sees
every aten op a region runs (autograd's backward included) and counts the ones that cross between host and device
or read device data on the host.

Without a GPU the same count is taken by *simulating* one (:func:`simulated_accelerator`): the ``meta`` device
stands in for the accelerator. A fit given ``torch.device("meta")`` puts its data and networks "on the device";
under the mode those tensors are wrappers that claim the ``meta`` device and hold real CPU tensors inside, so every
op computes real values on the CPU while the program behaves as it would with a second device: a host tensor mixed
into a device op raises (as CUDA does, 0-d tensors excepted), and a copy between the two is a transfer. What the
simulation cannot see: it treats every host→device copy alike (on a GPU the counter tells a pinned, non-blocking
copy from a pageable one), and the engine's CUDA-only branches (pinned draws, autocast) are not taken; a counted
copy is still a copy that a GPU run makes, pinned or not.

Examples:
    >>> with simulated_accelerator() as syncs:
    ...     x = torch.ones(3, device="meta") * 2  # made on the "device": no transfer
    ...     y = x + torch.tensor([1.0, 2.0, 3.0], device="meta")  # host data copied over: one transfer
    ...     total = float(y.sum())  # read back: one read
    >>> total, syncs.host_to_device, syncs.reads
    (12.0, 1, 1)
"""
from __future__ import annotations

import contextlib
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

aten = torch.ops.aten
STAND_IN = torch.device("meta")

# ops whose output size (or a returned Python value) depends on device data: the host waits for the result
_DATA_DEPENDENT = {aten.nonzero.default, aten.masked_select.default, aten.bincount.default,
                   aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
                   aten.repeat_interleave.Tensor, aten.equal.default}
_FACTORIES_OF_HOST_DATA = {torch.tensor, torch.as_tensor, torch.asarray}


@dataclass
class HostSyncs:
    """What a region did across the host–device boundary.

    host_to_device: copies of host data onto the device (``torch.tensor(data, device=…)``, ``.to(device)``);
    ``pinned`` counts those that came from pinned memory (asynchronous on a GPU; the simulation never pins).
    device_to_host: copies of device tensors to the host. reads: values read on the host (``item``, ``bool``, …)
    and ops whose output size depends on device data. ``ops`` names each counted op, for the message of a failed
    check, with the innermost engine line that ran it.
    """

    host_to_device: int = 0
    pinned: int = 0
    device_to_host: int = 0
    reads: int = 0
    ops: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.host_to_device + self.device_to_host + self.reads

    def add(self, kind: str, op: Any) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.ops[f"{kind} {getattr(op, '__name__', op)} at {_engine_caller()}"] += 1


def _engine_caller() -> str:
    """The two innermost engine lines on the stack (``file:line ← file:line``), or ``torch`` when none is."""
    lines = []
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        if "engine" in path.parts and path.name != "host_sync.py" and len(lines) < 2:
            lines.append(f"{'/'.join(path.parts[path.parts.index('engine') + 1:])}:{frame.lineno}")
    return " ← ".join(lines) or "torch"


class HostSyncCounter(TorchDispatchMode):
    """Counts, into :attr:`syncs`, the transfers and reads of every op run under it, for accelerator ``device``.

    On a real accelerator (``cuda``) it only watches. With ``device`` the ``meta`` stand-in (use
    :func:`simulated_accelerator`) it also runs the ops, on the CPU tensors inside the device wrappers.
    """

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device_type = torch.device(device).type
        self.simulated = self.device_type == STAND_IN.type
        self.syncs = HostSyncs()

    def _on_device(self, value: Any) -> bool:
        return isinstance(value, torch.Tensor) and value.device.type == self.device_type

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        any_on_device = any(self._on_device(t) for t in tensors)
        target = kwargs.get("device")
        to_device = target is not None and torch.device(target).type == self.device_type
        if func is aten._to_copy.default:
            source_on_device = self._on_device(args[0])
            if to_device and not source_on_device:
                self.syncs.add("host_to_device", func)
                if not self.simulated and args[0].is_pinned():
                    self.syncs.pinned += 1
            elif source_on_device and target is not None and not to_device:
                self.syncs.add("device_to_host", func)
        elif func is aten.copy_.default and self._on_device(args[0]) != self._on_device(args[1]):
            self.syncs.add("host_to_device" if self._on_device(args[0]) else "device_to_host", func)
        elif any_on_device and (func is aten._local_scalar_dense.default or func in _DATA_DEPENDENT
                                or (func is aten.index.Tensor and _indexes_by_mask(args[1]))):
            self.syncs.add("reads", func)
        if not self.simulated:
            return func(*args, **kwargs)
        return self._run_on_host(func, args, kwargs, to_device if target is not None else any_on_device)

    def _run_on_host(self, func, args, kwargs, result_on_device: bool):
        """The simulation: unwrap device tensors, run on the CPU, wrap the result when it lives on the device."""
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if (func not in (aten._to_copy.default, aten.copy_.default) and any(isinstance(t, _OnDevice) for t in tensors)
                and any(not isinstance(t, _OnDevice) and t.dim() > 0 for t in tensors)):
            raise RuntimeError(f"{func}: a host tensor and a device tensor in one op (a GPU refuses this too)")
        unwrapped_args = tree_map(_unwrap, args)
        unwrapped_kwargs = tree_map(_unwrap, kwargs)
        if result_on_device and kwargs.get("device") is not None:
            unwrapped_kwargs["device"] = torch.device("cpu")
        out = func(*unwrapped_args, **unwrapped_kwargs)
        if func is aten.copy_.default:
            return args[0]
        if func is aten._local_scalar_dense.default or not result_on_device:
            return out
        return tree_map(lambda t: _OnDevice(t) if isinstance(t, torch.Tensor) else t, out)


def _indexes_by_mask(indices: Any) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


def _unwrap(value: Any) -> Any:
    return value.inner if isinstance(value, _OnDevice) else value


class _OnDevice(torch.Tensor):
    """A tensor on the simulated accelerator: claims the ``meta`` device, holds a CPU tensor with the values."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> "_OnDevice":
        wrapper = torch.Tensor._make_wrapper_subclass(
            cls, inner.size(), strides=inner.stride(), storage_offset=inner.storage_offset(), dtype=inner.dtype,
            device=STAND_IN, requires_grad=inner.requires_grad)
        wrapper.inner = inner
        return wrapper

    def __repr__(self) -> str:
        return f"simulated device tensor {tuple(self.shape)} {self.dtype}"

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func} ran on a simulated device tensor outside simulated_accelerator()")


class _HostDataOntoStandIn(TorchFunctionMode):
    """What the simulation handles above the dispatcher: ``torch.tensor(data, device="meta")`` would make a real
    meta tensor (no values), so it is built on the host and copied over (the dispatch mode counts that copy, the
    transfer it is on a GPU); ``tolist`` reads the values inside a device tensor (a read)."""

    def __init__(self, syncs: HostSyncs) -> None:
        super().__init__()
        self.syncs = syncs

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if func in _FACTORIES_OF_HOST_DATA and device is not None and torch.device(device).type == STAND_IN.type:
            return func(*args, **{**kwargs, "device": "cpu"}).to(STAND_IN)
        if func is torch.Tensor.tolist and isinstance(args[0], _OnDevice):
            self.syncs.add("reads", func)
            return args[0].inner.tolist()
        return func(*args, **kwargs)


@contextlib.contextmanager
def count_host_syncs(device: torch.device) -> Iterator[HostSyncs]:
    """Count the host syncs of the ops run inside, for a fit on ``device`` (a GPU, or the ``meta`` stand-in)."""
    if torch.device(device).type == STAND_IN.type:
        with simulated_accelerator() as syncs:
            yield syncs
        return
    counter = HostSyncCounter(device)
    with counter:
        yield counter.syncs


@contextlib.contextmanager
def simulated_accelerator() -> Iterator[HostSyncs]:
    """Inside, ``torch.device("meta")`` acts as an accelerator whose tensors hold real values (computed on the
    CPU); yields the running count of host syncs against it."""
    counter = HostSyncCounter(STAND_IN)
    with _HostDataOntoStandIn(counter.syncs), counter:
        yield counter.syncs

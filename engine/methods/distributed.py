"""One run trained by several processes: ``torchrun --nproc-per-node N -m engine train …``.

Every process holds the whole dataset and runs the whole fit with the same seeds. What differs is the stages that
run on :func:`training.train_epochs`: there each process takes its share of every batch (``batch_size`` stays the
batch of all processes together, so steps per epoch, learning-rate schedule and checkpoints are those of a
one-process run, which can resume them), and the step's calls run through ``DistributedDataParallel``, which
averages the gradients (NCCL between GPUs, gloo between CPU processes). Where the paper's code synchronises
batch-norm across devices (SimCLR's "global BN") the network's ``BatchNorm`` layers become ``SyncBatchNorm`` (on
GPUs; on the CPU, torch has none, and each process normalises by its own share). Everything else — embedding,
neighbour mining, K-means, the stages with loops of their own — runs unsharded in every process, identically.

Rank 0 alone writes the run store and the checkpoints. A cancel (Ctrl-C, SIGTERM, which torchrun passes on) takes
effect where the processes agree on it: at the end of a ``train_epochs`` epoch, which is then checkpointed.

The step must call what it trains through :meth:`Speedups.compiled` (as every ``train_epochs`` step does): only
those calls are replicated. After each epoch the processes compare their parameters and stop with a
``TrainingError`` when they differ, which is what a call around ``DistributedDataParallel`` would cause.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError, TrainingError, UserError


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(eq=False)
class DataParallel:
    """This process's place in a multi-process fit, and the collective operations the fit uses.

    Args:
        rank: this process's index, 0 … ``world_size`` − 1; rank 0 writes the store.
        world_size: how many processes train the run.
        device: this process's device (``cuda:LOCAL_RANK`` on GPUs).
    """

    rank: int
    world_size: int
    device: torch.device
    sharding: bool = False  # a train_epochs stage is running: its steps' calls go through DistributedDataParallel
    _unused_parameters: bool = field(default=False, repr=False)  # the stage's steps may leave some unused
    _replicas: dict[tuple, nn.Module] = field(default_factory=dict, repr=False)

    @classmethod
    def start(cls, device: str = "auto", timeout_s: float = 1800) -> "DataParallel":
        """Join the process group ``torchrun`` set up (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
        ``MASTER_PORT``): NCCL on GPUs, gloo on the CPU. ``device`` is the run's (``auto``: the GPUs when there are
        any); each process takes the GPU of its local rank. ``timeout_s`` bounds a wait for the other processes."""
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
            if device != "cuda":
                raise UserError(f"--device {device} names one GPU; with torchrun use --device cuda (or auto): each "
                                "process takes the GPU of its local rank")
            if local_rank >= torch.cuda.device_count():
                raise UserError(f"process {local_rank} of this machine has no GPU of its own "
                                f"({torch.cuda.device_count()} visible); start at most that many processes")
            where = torch.device("cuda", local_rank)
            torch.cuda.set_device(where)
        elif device == "cpu":
            where = torch.device("cpu")
        else:
            raise UserError(f"unknown device {device!r}; use auto, cpu or cuda")
        dist.init_process_group("nccl" if where.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
        return cls(dist.get_rank(), dist.get_world_size(), where)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run store and the checkpoints (rank 0)."""
        return self.rank == 0

    # -- a train_epochs stage ------------------------------------------------------------------------------------
    def start_sharding(self, batch_size: int, n_samples: int, passes: int = 1) -> None:
        """A train_epochs stage starts: batches are shared out and the step's calls replicated until it sets
        ``sharding`` back to False. A stage of several ``passes`` trains part of the network in each (PICA: one
        head per pass), which DistributedDataParallel must be told: it then looks for the unused parameters at
        every step, which costs a walk over the autograd graph."""
        batch = min(batch_size, n_samples)
        if batch % self.world_size:
            raise ConfigError(f"a batch of {batch} images cannot be shared equally by {self.world_size} processes; "
                              f"use a batch size divisible by {self.world_size}, or another number of processes")
        self.sharding, self._unused_parameters = True, passes > 1

    def end_sharding(self, model: nn.Module) -> None:
        """A train_epochs stage ends: every process takes rank 0's buffers of ``model`` (batch-norm statistics,
        which each process gathered from its own share), so that what follows, unsharded, computes the same thing
        everywhere from the same network."""
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
        self.sharding = False

    def share(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's contiguous share of a batch of sample indices (:meth:`start_sharding` checked that the
        shares are equal)."""
        return batch.chunk(self.world_size)[self.rank]

    def replicate(self, step_call: Callable[..., Any], plain: Callable[..., Any],
                  compile: Callable[[nn.Module], Callable[..., Any]]) -> Callable[..., Any]:
        """What :meth:`Speedups.compiled` returns in a multi-process fit: ``step_call`` (a module, or a bound method
        of one) run through ``DistributedDataParallel`` (then ``compile``\\ d) while a train_epochs stage runs, and
        ``plain`` elsewhere (the loops of their own, unsharded)."""
        owner, name = _module_and_method(step_call)
        replicated: Callable[..., Any] | None = None

        def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal replicated
            if not self.sharding:
                return plain(*args, **kwargs)
            if replicated is None:  # built at the first step, when every process calls it
                replicated = compile(self._ddp(owner, name))
            return replicated(*args, **kwargs)

        return call

    def _ddp(self, module: nn.Module, method: str) -> nn.Module:
        """``module`` (its ``method``) in DistributedDataParallel, which shares the gradients of the parameters that
        train when it is built: one per set of trainable parameters (a later stage may freeze a backbone). A
        module that trains nothing (an EMA teacher) is returned as it is: it has no gradients to share."""
        trainable = tuple(p.requires_grad for p in module.parameters())
        target = module if method == "forward" else _MethodAsForward(module, method)
        if not any(trainable):
            return target
        key = (id(module), method, self._unused_parameters, trainable)
        if key not in self._replicas:
            self._replicas[key] = nn.parallel.DistributedDataParallel(
                target, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self._unused_parameters)
        return self._replicas[key]

    def synchronise_batchnorm(self, model: nn.Module) -> bool:
        """Make ``model``'s batch-norm layers ``SyncBatchNorm`` in place (same parameters, buffers and state-dict
        keys); False, and the model unchanged, on the CPU, where torch does not synchronise batch-norm."""
        if self.device.type != "cuda":
            return False
        for name, child in model.named_children():
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
        return True

    # -- collectives ---------------------------------------------------------------------------------------------
    def epoch_end(self, means: dict[str, torch.Tensor], stop: bool) -> tuple[dict[str, torch.Tensor], bool]:
        """One all-reduce per epoch: the loss means of all processes averaged, and whether any process was asked
        to stop."""
        names = list(means)
        values = torch.stack([means[name].float() for name in names] + [torch.tensor(float(stop), device=self.device)])
        dist.all_reduce(values)
        return {name: values[i] / self.world_size for i, name in enumerate(names)}, bool(values[-1] > 0)

    def check_replicas_agree(self, stage: str, modules: list[nn.Module]) -> None:
        """Raise TrainingError when the processes' copies of ``modules`` differ (their float parameters and
        buffers other than batch-norm statistics, which each process keeps from its own share)."""
        sums = [tensor.detach().double().sum() for module in modules for name, tensor in _compared_state(module)]
        local = torch.stack(sums) if sums else torch.zeros(1, dtype=torch.float64, device=self.device)
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        if not all(torch.equal(gathered[0], other) for other in gathered[1:]):
            raise TrainingError(f"the {self.world_size} processes' copies of the {stage} network differ: its step "
                                "calls a network that context.speedups.compiled(...) did not wrap, so its gradients "
                                "were not shared")

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's ``tensor`` (same shape everywhere), concatenated along the first axis in rank order."""
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object), in every process."""
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]


class _MethodAsForward(nn.Module):
    """A module whose forward is another module's method (a queue pretext's ``contrast``), so that
    DistributedDataParallel, which replicates forward calls, can replicate it."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.module, self.method = module, method

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, self.method)(*args, **kwargs)


def _module_and_method(step_call: Callable[..., Any]) -> tuple[nn.Module, str]:
    if isinstance(step_call, nn.Module):
        return step_call, "forward"
    owner = getattr(step_call, "__self__", None)
    if isinstance(owner, nn.Module):
        return owner, step_call.__name__
    raise TypeError(f"a multi-process fit replicates modules and their methods, not {step_call!r}")


def _compared_state(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    norms = {name for name, child in module.named_modules() if isinstance(child, nn.modules.batchnorm._BatchNorm)}
    for name, tensor in module.state_dict().items():
        owner = name.rpartition(".")[0]
        if tensor.is_floating_point() and not (owner in norms and name.rpartition(".")[2].startswith("running_")):
            yield name, tensor

"""Training-loop pieces the methods share: seeding, batching a device-resident dataset, optimisers, schedules,
and embedding a whole dataset."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..analysis.metrics import mean_neighbor_purity
from ..analysis.neighbors import mine_neighbors
from ..data.augment import build_augment
from ..data.imageset import ImageSet
from ..errors import ConfigError
from .context import FitContext

def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a CPU generator for batch order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class ImageGeometry:
    """How a dataset is fed to a network: output side, channels, whether flips are allowed, normalisation."""

    size: int
    channels: int
    flip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, images: ImageSet, size: int | None = None, flip: bool | None = None) -> "ImageGeometry":
        """The geometry of ``images`` at ``size`` (None: their own); ``flip`` None decides by content."""
        h, w, c = images.image_shape
        sample = images.images[:: max(1, len(images) // 2000)]  # statistics from ≤ ~2000 images: cheap, stable
        pixels = sample.reshape(-1, c).float() / 255
        mean = pixels.mean(0).tolist()
        std = pixels.std(0).clamp_min(1e-3).tolist()
        flip = flips_by_content(sample) if flip is None else flip
        return cls(size or min(h, w), c, flip, tuple(mean), tuple(std))

    def augment(self, kind: str, **options: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        """A batched augmentation (``eval``, ``weak``, ``simclr`` or ``strong``) for uint8 N×H×W×C batches;
        ``options`` go to the pipeline (e.g. ``crop_scale``)."""
        if kind != "eval":
            options["flip"] = self.flip
        return build_augment(kind, self.size, self.channels, mean=self.mean, std=self.std, **options)


def flips_by_content(sample: torch.Tensor) -> bool:
    """Whether horizontal flips suit a set of images, judged from a uint8 N×H×W×C sample: colour images (photos,
    objects) yes; gray ones (digits, letters, scans, also stored as RGB with equal channels) no, since a mirrored
    glyph is another glyph or none. The ``flip`` setting overrides this either way."""
    if sample.shape[-1] == 1:
        return False
    return bool((sample != sample[..., :1]).any())


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small CPU tensor (random draws from a CPU generator) to ``device`` without a host sync.

    A plain ``.to("cuda")`` from pageable memory makes the CPU wait until the GPU has finished all queued work,
    which stalls the training loop once per call; a copy from pinned memory is queued like a kernel instead.
    """
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def index_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device,
                  drop_last: bool = True) -> Iterator[torch.Tensor]:
    """Shuffled index batches over n samples. ``drop_last`` keeps batch-norm statistics sane; when n is smaller
    than one batch the whole set is one batch."""
    batch_size = min(batch_size, n)
    order = to_device(torch.randperm(n, generator=generator), device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = True) -> int:
    batch_size = min(batch_size, n)
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def make_optimizer(name: str, params, lr: float, weight_decay: float, momentum: float = 0.9, *,
                   fused: bool = False) -> torch.optim.Optimizer:
    """SGD (with ``momentum``), Adam or AdamW; ``fused`` updates all parameters in one kernel (GPU runs pass
    ``context.speedups.fused_optimizer``)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    raise ConfigError(f"unknown optimizer {name!r}; use sgd, adam or adamw")


def set_cosine_lr(optimizer: torch.optim.Optimizer, base_lr: float, step: int, total_steps: int,
                  final_fraction: float = 0.1) -> None:
    """Cosine decay from ``base_lr`` to ``final_fraction·base_lr`` over ``total_steps`` (SCAN's schedule)."""
    progress = min(step / max(total_steps, 1), 1.0)
    lr = base_lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))
    for group in optimizer.param_groups:
        group["lr"] = lr


@torch.no_grad()
def embed(model: nn.Module, images_u8: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor],
          batch_size: int = 512) -> torch.Tensor:
    """Run ``model`` in eval mode over every image (no augmentation beyond ``transform``); returns its outputs
    concatenated along the sample axis (N×D, or heads×N×K for cluster heads)."""
    was_training = model.training
    model.eval()
    outputs = [model(transform(images_u8[start:start + batch_size]))
               for start in range(0, len(images_u8), batch_size)]
    model.train(was_training)
    return torch.cat(outputs, dim=-2)


def save_epoch(context: FitContext, stage: str, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
               epochs: int, **extra: Any) -> None:
    """Checkpoint a stage after ``epoch`` of its ``epochs`` (finished at the last one): the ``model``,
    ``optimizer`` and ``epoch`` keys that :func:`resume_stage` reads back, plus ``extra`` entries."""
    context.save_stage(stage, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                               **extra}, done=epoch >= epochs)


def resume_stage(context: FitContext, stage: str, model: nn.Module,
                 optimizer: torch.optim.Optimizer | None = None, **modules: nn.Module) -> tuple[int, bool]:
    """Load a stage's stored checkpoint (``model``, ``optimizer``, ``epoch`` keys, and one key per extra module
    in ``modules``, as :func:`save_epoch` wrote them) if this run has one.

    Returns (epoch to continue from, whether the stage had finished); (0, False) when nothing was stored.
    """
    stored = context.load_stage(stage)
    if stored is None:
        return 0, False
    state, done = stored
    model.load_state_dict(state["model"])
    for name, module in modules.items():
        module.load_state_dict(state[name])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    epoch = int(state.get("epoch", 0))
    context.info(stage, f"resumed {stage} at epoch {epoch}{' (finished)' if done else ''}")
    return epoch, done


def mine_stage(context: FitContext, embedding_of: Callable[[], torch.Tensor], n_neighbors: int,
               labels: np.ndarray | None) -> torch.Tensor:
    """The ``mine`` stage of SCAN-style methods: each sample's ``n_neighbors`` nearest neighbours by cosine
    similarity in ``embedding_of()`` (SCAN, Van Gansbeke et al. 2020, §2.2), on the context's device. A finished
    mining stored in the checkpoints is reused and ``embedding_of`` is then never called; with labels the
    neighbour purity is recorded as the stage's one value."""
    stored = context.load_stage("mine")
    if stored is not None and stored[1]:
        return stored[0]["neighbors"].long()
    context.start_stage("mine", 1)
    embedding = embedding_of()
    k = min(n_neighbors, len(embedding) - 1)
    neighbors = torch.from_numpy(mine_neighbors(embedding, k)).long().to(context.device)
    if labels is not None:
        purity = mean_neighbor_purity(neighbors.cpu().numpy(), labels)
        context.step("mine", 1, 1, {"neighbor_purity": purity})
        context.info("mine", f"neighbour purity@{k}: {purity:.3f}")
    context.save_stage("mine", {"neighbors": neighbors.int()}, done=True)
    context.end_stage("mine")
    return neighbors

"""Momentum-contrast pretext stage with a queue of negatives, shared by SPICE (MoCo v2) and the super-multi-class
model (BYOL-style online/target networks with queued negatives).

Both train an online network against a slowly moving target network (its EMA): the online network sees one view,
the target network encodes the other, and the target's keys of past batches wait in a FIFO queue to serve as
negatives (MoCo, He et al. 2020, §3.2). What differs between the two — which network produces the query, how the
momentum evolves, whether the loss is symmetrised — is the pretext model's :meth:`QueueContrastModel.contrast`;
this module owns the queue (updated after every optimiser step); :func:`training.train_epochs` runs the loop,
its checkpoints and resuming.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..nn.memory_queue import FeatureQueue
from .context import FitContext
from .simclr import SimCLRSettings, load_reused_pretext
from .training import ImageGeometry, Position, make_optimizer, train_epochs

STAGE = "pretext"
QUEUE_INFO_NCE_EQUATION = (r"\mathcal{L}_q = -\log \frac{\exp(q \cdot k_+/\tau)}"
                           r"{\exp(q \cdot k_+/\tau) + \sum_{k_- \in \mathrm{queue}} \exp(q \cdot k_-/\tau)}")


@dataclass(frozen=True)
class QueuePretextSettings(SimCLRSettings):
    """The SimCLR pretext's hyper-parameters (the same augmentations and schedule) and the queue's length."""
    queue_size: int

    @classmethod
    def of(cls, config: Any) -> "QueuePretextSettings":
        return super().of(config, queue_size=config.queue_size)


class QueueContrastModel(nn.Module):
    """An online network trained against its EMA copy with queued negatives.

    Subclasses hold the networks and implement :meth:`contrast`; their target network's parameters must have
    ``requires_grad`` off, so the optimizer only sees the online side (:meth:`trainable_parameters`).
    """

    def contrast(self, view_a: torch.Tensor, view_b: torch.Tensor, negatives: torch.Tensor, temperature: float,
                 step: int, total_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the target network's EMA, then return (loss, keys to enqueue) for one batch of two views."""
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def usable_queue_size(requested: int, n_images: int, batch_size: int) -> int:
    """A queue longer than the dataset minus one batch would hold old keys of the very images it is contrasted
    with, so it is shortened to that (CIFAR-10: 60 000 images, batches of 128, 65 536 → 59 872 keys).

    Examples:
        >>> usable_queue_size(65536, 60000, 128)
        59872
        >>> usable_queue_size(1024, 60000, 128)
        1024
    """
    return min(requested, max(1, n_images - min(batch_size, n_images)))


def reuse_or_train_queue_pretext(model: QueueContrastModel, images_u8: torch.Tensor, geometry: ImageGeometry,
                                  config: Any, context: FitContext, generator: torch.Generator,
                                  identity: dict[str, Any]) -> None:
    """Load the finished pretext of run ``config.pretext_from`` into ``model`` when it names one, else train it here
    with the settings of ``config`` (:meth:`QueuePretextSettings.of`)."""
    if config.pretext_from:
        load_reused_pretext(model, context, config.pretext_from, identity)
    else:
        train_queue_pretext(model, images_u8, geometry, QueuePretextSettings.of(config), context, generator,
                            identity)


def train_queue_pretext(model: QueueContrastModel, images_u8: torch.Tensor, geometry: ImageGeometry,
                        settings: QueuePretextSettings, context: FitContext, generator: torch.Generator,
                        identity: dict[str, Any]) -> None:
    """Train ``model`` for ``settings.epochs`` epochs (SGD/Adam with a cosine learning rate), enqueueing the keys
    of every step, checkpointing model, queue and optimizer each epoch and resuming from this run's checkpoint.
    Records ``info_nce`` (the epoch's mean loss)."""
    queue_size = usable_queue_size(settings.queue_size, len(images_u8), settings.batch_size)
    if queue_size < settings.queue_size:
        context.info(STAGE, f"queue shortened to {queue_size} keys for {len(images_u8)} images")
    queue = FeatureQueue(settings.projection_dim, queue_size).to(context.device)
    augment = geometry.augment("simclr", crop_scale=(settings.crop_min_scale, 1.0))
    contrast = context.speedups.compiled(model.contrast)  # what the step calls, not the module's forward
    optimizer = make_optimizer(settings.optimizer, model.trainable_parameters(), settings.lr, settings.weight_decay,
                               fused=context.speedups.fused_optimizer)
    keys: list[torch.Tensor] = []  # the step's keys, enqueued once the optimiser has stepped

    def step(indices: torch.Tensor, at: Position) -> dict[str, torch.Tensor]:
        batch = images_u8[indices]
        loss, new_keys = contrast(augment(batch), augment(batch), queue.features, settings.temperature, at.step,
                                  at.total)
        keys.append(new_keys)
        return {"info_nce": loss}

    train_epochs(context, STAGE, model, optimizer, step, epochs=settings.epochs, n_samples=len(images_u8),
                 batch_size=settings.batch_size, generator=generator, losses=("info_nce",), lr=settings.lr,
                 lr_schedule="cosine", after_step=lambda: queue.enqueue(context.gathered(keys.pop())),
                 checkpointed={"queue": queue},
                 extra_state={"identity": identity})

"""SimCLR pretext stage (Chen et al. 2020), shared by the methods that start from a self-supervised backbone.

Two SimCLR-augmented views of every image in a batch go through backbone + MLP projector; NT-Xent (eq. 1) pulls
the two views together and pushes the other 2N−2 views away. The stage is checkpointed so it can resume, and its
stored state can be reused by later runs on the same dataset and backbone ("pretext once, cluster many times").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..nn import mlp_projector, nt_xent_loss
from .context import FitContext
from .training import (ImageGeometry, index_batches, make_optimizer, resume_stage, save_epoch, set_cosine_lr,
                       steps_per_epoch)

STAGE = "pretext"


@dataclass(frozen=True)
class SimCLRSettings:
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    temperature: float
    projection_dim: int
    crop_min_scale: float


class ContrastiveModel(nn.Module):
    """Backbone + projector; ``forward`` gives the projection used by the loss and for neighbour mining."""

    def __init__(self, backbone: nn.Module, projection_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = mlp_projector(backbone.out_dim, projection_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))


def pretext_identity(images_source: str, geometry: ImageGeometry, backbone: str) -> dict[str, Any]:
    """What must match for a stored pretext to be reusable: the data, its geometry and the backbone."""
    return {"dataset": images_source, "size": geometry.size, "channels": geometry.channels, "backbone": backbone}


def load_reused_pretext(model: ContrastiveModel, context: FitContext, from_run: str,
                        identity: dict[str, Any]) -> None:
    """Load run ``from_run``'s finished pretext into ``model``; every parameter must match, or a UserError says
    what differs (a silently half-loaded backbone is how results fail to reproduce)."""
    stored = context.load_stage(STAGE, from_run=from_run)
    assert stored is not None
    state, done = stored
    if not done:
        raise UserError(f"run {from_run}'s pretext stage did not finish; resume that run or train a new pretext")
    if state["identity"] != identity:
        raise UserError(f"run {from_run}'s pretext was trained on {state['identity']}, this run needs {identity}")
    result = model.load_state_dict(state["model"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"run {from_run}'s pretext does not fit this model: missing {result.missing_keys[:5]}, "
                        f"unexpected {result.unexpected_keys[:5]}")
    context.info(STAGE, f"pretext reused from run {from_run} ({len(state['model'])} tensors loaded)")


def train_simclr(model: ContrastiveModel, images_u8: torch.Tensor, geometry: ImageGeometry,
                 settings: SimCLRSettings, context: FitContext, generator: torch.Generator,
                 identity: dict[str, Any]) -> None:
    """Train ``model`` with NT-Xent for ``settings.epochs`` epochs, resuming from this run's checkpoint if any."""
    augment = geometry.augment("simclr", crop_scale=(settings.crop_min_scale, 1.0))
    context.speedups.prepare(model)
    forward = context.speedups.compiled(model)
    optimizer = make_optimizer(settings.optimizer, model.parameters(), settings.lr, settings.weight_decay,
                               fused=context.speedups.fused_optimizer)
    n_steps = steps_per_epoch(len(images_u8), settings.batch_size)
    total = settings.epochs * n_steps
    start_epoch, _ = resume_stage(context, STAGE, model, optimizer)
    context.start_stage(STAGE, total)
    model.train()
    for epoch in range(start_epoch, settings.epochs):
        loss_sum = torch.zeros((), device=context.device)
        for i, idx in enumerate(index_batches(len(images_u8), settings.batch_size, generator, context.device)):
            step = epoch * n_steps + i
            set_cosine_lr(optimizer, settings.lr, step, total, final_fraction=0.0)
            batch = images_u8[idx]
            with context.autocast():
                loss = nt_xent_loss(forward(augment(batch)), forward(augment(batch)), settings.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            context.step(STAGE, step + 1, total)
        context.step(STAGE, (epoch + 1) * n_steps, total, {"nt_xent": loss_sum / n_steps})
        save_epoch(context, STAGE, model, optimizer, epoch + 1, settings.epochs, identity=identity)
    if start_epoch >= settings.epochs or settings.epochs == 0:
        save_epoch(context, STAGE, model, optimizer, settings.epochs, settings.epochs, identity=identity)
    context.end_stage(STAGE)

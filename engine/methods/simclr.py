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
from ..nn import build_backbone, mlp_projector, nt_xent_loss
from .base import BackboneConfig, Stage
from .context import FitContext
from .training import ImageGeometry, Position, make_optimizer, train_epochs

STAGE = "pretext"
SIMCLR_STAGE = Stage(STAGE, ("nt_xent",), "SimCLR: two augmented views of an image should embed alike",
                     r"\ell_{i,j} = -\log \frac{\exp(\mathrm{sim}(z_i,z_j)/\tau)}"
                     r"{\sum_{k \ne i} \exp(\mathrm{sim}(z_i,z_k)/\tau)}")


@dataclass
class PretextConfig(BackboneConfig):
    """The settings of a contrastive pretext (read by :meth:`SimCLRSettings.of`), at SCAN's SimCLR values for
    CIFAR-10; a method with another pretext redeclares the defaults that differ."""

    pretext_from: str | None = None  # run id whose finished pretext to reuse (some methods: or pretrained:NAME)
    pretext_epochs: int = 500
    pretext_batch_size: int = 512
    pretext_optimizer: str = "sgd"
    pretext_lr: float = 0.4
    pretext_weight_decay: float = 1e-4
    temperature: float = 0.1
    projection_dim: int = 128
    crop_min_scale: float = 0.2


@dataclass(frozen=True)
class SimCLRSettings:
    """The pretext's hyper-parameters; methods that run it name their config fields alike (:meth:`of`)."""
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    temperature: float
    projection_dim: int
    crop_min_scale: float

    @classmethod
    def of(cls, config: Any, **more: Any) -> "SimCLRSettings":
        """The settings from a method's config: ``pretext_*`` for the schedule, and ``temperature``,
        ``projection_dim`` and ``crop_min_scale``; ``more`` fills a subclass's own fields."""
        return cls(config.pretext_epochs, config.pretext_batch_size, config.pretext_optimizer, config.pretext_lr,
                   config.pretext_weight_decay, config.temperature, config.projection_dim, config.crop_min_scale,
                   **more)


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
        differences = "; ".join(f"{key} {state['identity'].get(key)} (this run: {identity.get(key)})"
                                for key in identity if state["identity"].get(key) != identity[key])
        raise UserError(f"run {from_run}'s pretext was trained with {differences}; pick a run whose pretext was "
                        "trained alike, or train a new pretext")
    result = model.load_state_dict(state["model"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"run {from_run}'s pretext does not fit this model: missing {result.missing_keys[:5]}, "
                        f"unexpected {result.unexpected_keys[:5]}")
    context.info(STAGE, f"pretext reused from run {from_run} ({len(state['model'])} tensors loaded)")


def simclr_pretext(config: PretextConfig, images_u8: torch.Tensor, geometry: ImageGeometry, backbone: str,
                   source: str, context: FitContext, generator: torch.Generator) -> ContrastiveModel:
    """The pretext stage of a method with a SimCLR pretext: ``backbone`` + projector, loaded from run
    ``config.pretext_from``'s finished pretext when it names one, else trained here on ``images_u8``."""
    identity = pretext_identity(source, geometry, backbone)
    model = ContrastiveModel(build_backbone(backbone, geometry.size, geometry.channels),
                             config.projection_dim).to(context.device)
    if config.pretext_from:
        load_reused_pretext(model, context, config.pretext_from, identity)
    else:
        train_simclr(model, images_u8, geometry, SimCLRSettings.of(config), context, generator, identity)
    return model


def train_simclr(model: ContrastiveModel, images_u8: torch.Tensor, geometry: ImageGeometry,
                 settings: SimCLRSettings, context: FitContext, generator: torch.Generator,
                 identity: dict[str, Any]) -> None:
    """Train ``model`` with NT-Xent for ``settings.epochs`` epochs (cosine learning rate), resuming from this run's
    checkpoint if any."""
    augment = geometry.augment("simclr", crop_scale=(settings.crop_min_scale, 1.0))
    forward = context.speedups.compiled(model)
    optimizer = make_optimizer(settings.optimizer, model.parameters(), settings.lr, settings.weight_decay,
                               fused=context.speedups.fused_optimizer)

    def step(indices: torch.Tensor, at: Position) -> dict[str, torch.Tensor]:
        batch = images_u8[indices]
        return {"nt_xent": nt_xent_loss(forward(augment(batch)), forward(augment(batch)), settings.temperature)}

    train_epochs(context, STAGE, model, optimizer, step, epochs=settings.epochs, n_samples=len(images_u8),
                 batch_size=settings.batch_size, generator=generator, losses=("nt_xent",), lr=settings.lr,
                 lr_schedule="cosine", extra_state={"identity": identity},
                 sync_batchnorm=True)  # SimCLR's global BN (Chen et al. 2020, §2): statistics over all devices

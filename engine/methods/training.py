"""The training loop the methods share (:func:`train_epochs`) and its pieces: seeding, batching a device-resident
dataset, optimisers, schedules, checkpoints and embedding a whole dataset."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..clustering.metrics import cluster_accuracy, mean_neighbor_purity
from ..clustering.neighbors import mine_neighbors
from ..data.augment import build_augment
from ..data.descriptors import MIN_SIDE
from ..data.imageset import ImageSet
from ..errors import ConfigError, RunCancelled
from .context import FitContext
from .distributed import DataParallel
from .settings import LR_SCHEDULES

STROKE_MIN_SIZE = 16  # px: the smallest gray views whose stroke width a `stroke` setting varies


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a CPU generator for batch order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class ImageGeometry:
    """How a dataset is fed to a network: output side, channels, whether flips are allowed, normalisation, and
    whether contrastive views are blurred or have their stroke width varied."""

    size: int
    channels: int
    flip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    blur: bool | None = None  # Gaussian blur in SimCLR views; None → SimCLR's rule (only views above 64 px)
    stroke: bool = False  # a random stroke width in SimCLR views (only ever on for gray images of STROKE_MIN_SIZE+)

    @classmethod
    def of(cls, images: ImageSet, size: int | None = None, flip: bool | None = None,
           blur: bool | None = None, stroke: bool = False) -> "ImageGeometry":
        """The geometry of ``images`` at ``size`` (None: their own); ``flip`` None decides by content; ``stroke``
        is kept only for gray images (glyphs) of at least :data:`STROKE_MIN_SIZE` px, where a pixel of pen width
        is a small change (on 8×8 digits it is most of a stroke)."""
        h, w, c = images.image_shape
        sample = content_sample(images)
        pixels = sample.reshape(-1, c).float() / 255
        mean = pixels.mean(0).tolist()
        std = pixels.std(0).clamp_min(1e-3).tolist()
        gray = is_gray(sample)
        flip = not gray if flip is None else flip
        size = size or min(h, w)
        stroke = stroke and gray and size >= STROKE_MIN_SIZE
        return cls(size, c, flip, tuple(mean), tuple(std), blur, stroke)

    def augment(self, kind: str, **options: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        """A batched augmentation (``eval``, ``weak``, ``simclr`` or ``strong``) for uint8 N×H×W×C batches;
        ``options`` go to the pipeline (e.g. ``crop_scale``)."""
        if kind != "eval":
            options["flip"] = self.flip
        if kind == "simclr" and self.blur is not None:
            options.setdefault("blur", self.blur)
        if kind == "simclr" and self.stroke:
            options.setdefault("stroke", True)
        return build_augment(kind, self.size, self.channels, mean=self.mean, std=self.std, **options)


def content_sample(images: ImageSet) -> torch.Tensor:
    """At most about 2,000 of ``images``, spread over the set: what decisions by content read (channel statistics,
    gray or colour), cheap and stable."""
    return images.images[:: max(1, len(images) // 2000)]


def is_gray(sample: torch.Tensor) -> bool:
    """Whether a uint8 N×H×W×C sample of a set is gray (digits, letters, scans; also stored as RGB with equal
    channels). Gray sets get no horizontal flips by default, since a mirrored glyph is another glyph or none;
    colour images (photos, objects) do. The ``flip`` setting overrides this either way."""
    if sample.shape[-1] == 1:
        return True
    return not bool((sample != sample[..., :1]).any())


DESCRIPTORS = ("auto", "pixels", "hog_colour")  # what a method reads its images as (dec's input, jule's first graph)


def resolve_descriptor(descriptor: str, images: ImageSet, size: int) -> str:
    """``auto`` → ``hog_colour`` (:func:`engine.data.descriptors.hog_colour`) for colour images of at least 16 px,
    photos, which DEC's paper reads so; else ``pixels``: gray images (glyphs, whose pixels are their shapes, as
    MNIST in the papers) and tiny ones. A named descriptor is checked and kept."""
    if descriptor == "hog_colour" and size < MIN_SIDE:
        raise ConfigError(f"descriptor hog_colour needs images of at least {MIN_SIDE} px, got {size} px")
    if descriptor != "auto":
        return descriptor
    colour = not is_gray(content_sample(images))
    return "hog_colour" if colour and size >= 2 * MIN_SIDE else "pixels"


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small CPU tensor (random draws from a CPU generator) to ``device`` without a host sync.

    A plain ``.to("cuda")`` from pageable memory makes the CPU wait until the GPU has finished all queued work,
    which stalls the training loop once per call; a copy from pinned memory is queued like a kernel instead.
    """
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def index_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device,
                  drop_last: bool = True, shared_by: DataParallel | None = None) -> Iterator[torch.Tensor]:
    """Shuffled index batches over n samples. ``drop_last`` keeps batch-norm statistics sane; when n is smaller
    than one batch the whole set is one batch. With ``shared_by`` (a multi-process fit) every process draws the
    same order and takes its share of each batch."""
    batch_size = min(batch_size, n)
    order = to_device(torch.randperm(n, generator=generator), device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        batch = order[start:start + batch_size]
        yield batch if shared_by is None else shared_by.share(batch)


class EndlessBatches:
    """Shuffled index batches over n samples without end: one order after another, each as
    :func:`index_batches` gives it (a new order drawn when the last one runs out). Its place in the current order
    is part of a checkpoint (``state_dict``/``load_state_dict``), so a resumed stage draws the very same batches."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> None:
        self.n, self.batch_size = n, min(batch_size, n)
        self.generator, self.device = generator, device
        self.order: torch.Tensor | None = None
        self.start = 0

    def __iter__(self) -> "EndlessBatches":
        return self

    def __next__(self) -> torch.Tensor:
        if self.order is None or self.start + self.batch_size > self.n - self.n % self.batch_size:
            self.order = to_device(torch.randperm(self.n, generator=self.generator), self.device)
            self.start = 0
        self.start += self.batch_size
        return self.order[self.start - self.batch_size:self.start]

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "start": self.start}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.order, self.start = state["order"], int(state["start"])


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


LRSchedule = Callable[[int, int], float]  # (step, total steps) → learning rate


def set_lr(optimizer: torch.optim.Optimizer, schedule: str | LRSchedule, base_lr: float, step: int,
           total_steps: int, final_fraction: float = 0.0) -> None:
    """The learning rate of ``step`` under a ``constant`` schedule (``base_lr`` throughout, left as the optimiser
    was built), a ``cosine`` one (:func:`set_cosine_lr`, decaying to ``final_fraction·base_lr``) or a method's
    own ``schedule(step, total_steps)``, which sets every parameter group's rate times its ``lr_scale`` (1 if
    absent)."""
    if callable(schedule):
        lr = schedule(step, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
    elif schedule == "cosine":
        set_cosine_lr(optimizer, base_lr, step, total_steps, final_fraction)
    elif schedule != "constant":
        raise ConfigError(f"unknown lr_schedule {schedule!r}; use {' or '.join(LR_SCHEDULES)}")


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
               epochs: int, *, force: bool = False, **extra: Any) -> None:
    """Checkpoint a stage after ``epoch`` of its ``epochs`` (finished at the last one): the ``model``,
    ``optimizer`` and ``epoch`` keys that :func:`resume_stage` reads back, plus ``extra`` entries. ``force``
    saves even within ``FitContext.checkpoint_every_s`` of the last save."""
    context.save_stage(stage, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                               **extra}, done=epoch >= epochs, force=force)


def resume_stage(context: FitContext, stage: str, model: nn.Module,
                 optimizer: torch.optim.Optimizer | None = None, **modules: nn.Module) -> tuple[int, bool]:
    """Load a stage's stored checkpoint (``model``, ``optimizer``, ``epoch`` keys, and one key per extra module
    in ``modules``, as :func:`save_epoch` wrote them) if this run has one.

    Returns (epoch to continue from, whether the stage had finished); (0, False) when nothing was stored.
    """
    _, epoch, done = _restore_stage(context, stage, model, optimizer, modules)
    return epoch, done


def _restore_stage(context: FitContext, stage: str, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                   modules: Mapping[str, "Checkpointed"]) -> tuple[dict[str, Any], int, bool]:
    """:func:`resume_stage`'s work; also returns the stored state ({} when there is none)."""
    stored = context.load_stage(stage)
    if stored is None:
        return {}, 0, False
    state, done = stored
    model.load_state_dict(state["model"])
    for name, module in modules.items():
        if isinstance(module, torch.Tensor):
            with torch.no_grad():
                module.copy_(state[name])
        else:
            module.load_state_dict(state[name])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    epoch = int(state.get("epoch", 0))
    context.info(stage, f"resumed {stage} at epoch {epoch}{' (finished)' if done else ''}")
    return state, epoch, done


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


@dataclass(frozen=True)
class Position:
    """Where a training step stands: its ``epoch``, its ``pass_`` over the data within the epoch (methods that
    alternate heads make several), and its ``step`` (0-based) of the stage's ``total``."""

    epoch: int
    pass_: int
    step: int
    total: int


@dataclass(frozen=True)
class BatchPlan:
    """The batches of a stage whose steps are not shuffled index batches over its samples: ``of(epoch)`` yields
    the epoch's batches (anything its step takes), at most ``steps`` of them, drawn as they are needed; ``total``
    is the stage's number of steps when its last epoch is cut short (default: epochs × steps)."""

    steps: int
    of: Callable[[int], Iterable[Any]]
    total: int | None = None


class StopStage(Exception):
    """Raised by a step or a ``before_epoch`` hook to finish its stage early (DEC converged, JULE reached K
    clusters): :func:`train_epochs` records the epoch so far and stores the stage as finished."""


TRAIN_ACC = "train_acc"  # the recorded name of a stage's clustering accuracy after each epoch
ACC_SAMPLE_SIZE = 2000  # images the epoch accuracy is measured on: enough for ±0.01, cheap beside an epoch


def epoch_accuracy(context: FitContext, model: nn.Module,
                   clusters_of: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """The clustering accuracy (Hungarian-matched, :func:`cluster_accuracy`) of ``model`` as it stands on the
    same ≤ :data:`ACC_SAMPLE_SIZE` training images every epoch: ``clusters_of(indices)`` assigns them, with
    ``model`` in eval mode and no gradient. Their choice draws from a generator of its own, so the training's
    random draws are the ones a fit without labels makes."""
    labels = context.labels
    sample = np.random.default_rng(0).permutation(len(labels))[:ACC_SAMPLE_SIZE]
    modes = [(module, module.training) for module in model.modules()]  # a frozen part may stay in eval mode
    model.eval()
    try:
        with torch.no_grad():
            clusters = clusters_of(torch.from_numpy(sample).to(context.device))
    finally:
        for module, training in modes:
            module.training = training
    return cluster_accuracy(labels[sample], clusters.cpu().numpy())


Checkpointed = Union[nn.Module, torch.Tensor, Any]  # a module, a tensor restored in place, or state_dict() holder
TrainingStep = Callable[[Any, Position], Union[Mapping[str, torch.Tensor],
                                               tuple[torch.Tensor, Mapping[str, torch.Tensor]]]]


def train_epochs(context: FitContext, stage: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                 step: TrainingStep, *, epochs: int, generator: torch.Generator, losses: Sequence[str], lr: float,
                 n_samples: int | None = None, batch_size: int | None = None, batches: BatchPlan | None = None,
                 lr_schedule: str | LRSchedule = "constant", passes: int = 1,
                 before_epoch: Callable[[int], None] | None = None,
                 after_epoch: Callable[[int], None] | None = None,
                 after_step: Callable[[], None] | None = None,
                 checkpointed: Mapping[str, Checkpointed] | None = None,
                 extra_state: Mapping[str, Any] | None = None, sync_batchnorm: bool = False,
                 clusters_of: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
    """Train ``model`` for ``epochs`` epochs of stage ``stage``: the loop every method's trained stage runs.

    ``step(batch, position)`` is the method's part: it gets one batch — by default shuffled sample indices over
    ``n_samples`` in batches of ``batch_size`` (on the device), else what ``batches`` yields — and returns its
    named loss tensors. **The first entry is the objective** that is minimised, unless the step returns a pair
    (objective, named losses) (SCAN sums its heads' losses and records their mean). Every entry is recorded as
    its mean over the epoch's steps that returned it, under its name, which must be one of ``losses`` (the
    stage's ``Stage.losses``; they are recorded in that order). The loop owns the rest:

    - resuming: a finished stage stored in this run's checkpoints is loaded and skipped (no events); an unfinished
      one continues at the epoch after its last checkpoint, with the batch order and the augmentations' random
      draws restored, so a resumed run trains what the uninterrupted one would have;
    - the ``stage`` start and end events, progress every step and the losses once per epoch (summed on the device
      and read once per epoch: no step waits for the device);
    - the speed-ups: :meth:`Speedups.prepare` on ``model``, the step run under autocast, its loss scaled when
      autocast runs float16 (:meth:`Speedups.grad_scaler`; compiling what the step calls is the method's choice:
      :meth:`Speedups.compiled`);
    - the learning rate of every step (:func:`set_lr` with ``lr_schedule``: a name or the method's function);
    - zero_grad / backward / optimiser step, then ``after_step()`` (a queue or EMA update…);
    - a checkpoint after every epoch (throttled by ``FitContext.checkpoint_every_s``; always at the end) holding
      ``model``, ``optimizer``, the entries of ``checkpointed`` — modules (an EMA copy, a queue), tensors the
      method updates in place (restored in place) or objects with ``state_dict``/``load_state_dict`` — and
      ``extra_state``. Whatever a resumed epoch needs must be there or be recomputed by ``before_epoch``.

    A stage that assigns clusters passes ``clusters_of(indices)``: the cluster of each training sample at
    ``indices`` (a tensor on the device) by the model as it stands. When the images have labels
    (``context.labels``) each epoch then also records its clustering accuracy under :data:`TRAIN_ACC`
    (:func:`epoch_accuracy`: a fixed sample, eval mode, no gradient, no draw from the training's generators).

    Hooks: ``before_epoch(epoch)`` runs before each epoch trained here, outside autocast (K-means E-steps,
    resetting per-epoch tallies); ``after_epoch(epoch)`` after its losses are recorded and before its checkpoint
    (JULE's merges). The step or ``before_epoch`` may raise :class:`StopStage` to end the stage early.
    ``passes`` > 1 makes each epoch that many passes over the data, each in its own shuffled order (PICA trains
    its heads in turn).

    In a multi-process fit (``context.parallel``, :mod:`.distributed`) each process gets its share of every batch
    of the default plan (``n_samples`` in batches of ``batch_size``; a method's own ``batches`` run whole in every
    process), the step's :meth:`Speedups.compiled` calls run through DistributedDataParallel, the recorded losses
    are the means over all processes, the processes' copies of ``model`` and ``checkpointed`` modules are compared
    after every epoch, and a cancel stops every process at the end of the epoch, checkpointed. ``sync_batchnorm``
    (where the paper's code synchronises batch-norm across devices) makes ``model``'s batch-norm layers
    ``SyncBatchNorm`` there.
    Under a context's ``step_limit`` (an estimate) the stage ends after that many steps, without its epoch's
    losses or a checkpoint; its start event still gives the full run's steps.
    """
    parallel = context.parallel
    checkpointed = dict(checkpointed or {})
    context.speedups.prepare(model, sync_batchnorm)
    scaler = context.speedups.grad_scaler(context.device)
    start_epoch, done = _resume_epoch(context, stage, model, optimizer, generator, checkpointed, scaler)
    if done:
        return
    sharded = parallel is not None and batches is None  # a method's own batch plan runs whole in every process
    if batches is None:
        batches = BatchPlan(steps_per_epoch(n_samples, batch_size),
                            lambda epoch: index_batches(n_samples, batch_size, generator, context.device,
                                                        shared_by=parallel))
    n_steps = batches.steps
    total = batches.total or epochs * passes * n_steps

    def save(epoch: int, force: bool = False) -> None:
        scaling = {"scaler": scaler.state_dict()} if scaler.is_enabled() else {}
        save_epoch(context, stage, model, optimizer, epoch, epochs, rng=_rng_state(generator, context.device),
                   **{name: _state_of(value) for name, value in checkpointed.items()}, **scaling,
                   **(extra_state or {}), force=force)

    context.start_stage(stage, total, first_step=start_epoch * passes * n_steps)
    model.train()
    if sharded:
        parallel.start_sharding(batch_size, n_samples, passes)  # until the stage ends; an error ends the fit
    stopped = False
    for epoch in range(start_epoch, epochs):
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        reached = epoch * passes * n_steps
        try:
            if before_epoch is not None:
                before_epoch(epoch)
            for pass_ in range(passes):
                for i, batch in enumerate(batches.of(epoch)):
                    at = Position(epoch, pass_, (epoch * passes + pass_) * n_steps + i, total)
                    set_lr(optimizer, lr_schedule, lr, at.step, total)
                    with context.autocast(gradients_scaled=True):
                        result = step(batch, at)
                    objective, terms = result if isinstance(result, tuple) else (next(iter(result.values())),
                                                                                 result)
                    unknown = set(terms) - set(losses)
                    if unknown:
                        raise ValueError(f"stage {stage!r} records {list(losses)}, its step returned "
                                         f"{sorted(unknown)}")
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(objective).backward()
                    scaler.step(optimizer)  # skipped (and the scale lowered) when a float16 gradient overflowed
                    scaler.update()
                    if after_step is not None:
                        after_step()
                    for name, value in terms.items():
                        value = value.detach()
                        sums[name] = sums[name] + value if name in sums else value
                        counts[name] = counts.get(name, 0) + 1
                    reached = at.step + 1
                    context.step(stage, reached, total)
                    if context.step_limit is not None and reached >= context.step_limit:
                        context.end_stage(stage)
                        return
        except StopStage:
            stopped = True
        means, stop = {name: sums[name] / counts[name] for name in losses if name in sums}, False
        if parallel is not None:
            means, stop = parallel.epoch_end(means, context.cancel_requested)
            parallel.check_replicas_agree(stage, [model, *(value for value in checkpointed.values()
                                                           if isinstance(value, nn.Module))])
        if clusters_of is not None and context.labels is not None and context.writes:
            means[TRAIN_ACC] = epoch_accuracy(context, model, clusters_of)
        context.step(stage, reached, total, means)
        if stopped:
            break
        if after_epoch is not None:
            after_epoch(epoch)
        save(epoch + 1, force=stop)
        if stop:
            raise RunCancelled(f"cancelled by the user; {stage} stopped after epoch {epoch + 1}, checkpointed")
    if stopped or start_epoch >= epochs:
        save(epochs)
    if sharded:
        parallel.end_sharding(model)
    context.end_stage(stage)


def _state_of(value: Checkpointed) -> Any:
    return value if isinstance(value, torch.Tensor) else value.state_dict()


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """The random states an epoch's draws come from: the batch order's generator and torch's global generators
    (the augmentations draw from them)."""
    state = {"batches": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _resume_epoch(context: FitContext, stage: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                  generator: torch.Generator, modules: Mapping[str, Checkpointed],
                  scaler: torch.amp.GradScaler) -> tuple[int, bool]:
    """:func:`resume_stage`, plus the random states and the loss scale of an unfinished stage's checkpoint (the
    checkpoint is loaded onto the fit's device; random states live on the host)."""
    state, start_epoch, done = _restore_stage(context, stage, model, optimizer, modules)
    if "scaler" in state and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    rng = state.get("rng")
    if rng is not None and not done:
        generator.set_state(rng["batches"].cpu())
        torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and context.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu(), context.device)
    return start_epoch, done

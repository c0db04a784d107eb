"""DEC: Unsupervised Deep Embedding for Clustering Analysis (Xie, Girshick & Farhadi, ICML 2016).

Stages:
1. ``pretrain`` — a stacked autoencoder d–500–500–2000–10 on flattened pixels (§3.2): each encoder/decoder pair is
   first trained greedily as a denoising autoencoder on the previous layer's output (dropout 20 % on its input and
   on its code, for every pair as the paper writes it), then the whole autoencoder is fine-tuned end to end without
   dropout on the reconstruction loss ½‖x − x̂‖² (summed over features, averaged over the batch: Caffe's Euclidean
   loss, which the paper's lr refers to). The decoder is then dropped; the encoder f_θ maps an image to its
   embedding z.
2. ``cluster`` — K-means (20 restarts) on the embeddings initialises the centres μ_j (§3.2), then encoder and centres
   minimise KL(P‖Q) (eq. 2) by SGD, where
   - q_ij = (1 + ‖z_i − μ_j‖²/α)^(−(α+1)/2) / Σ_j' (…) is a Student's t soft assignment, α = 1 (eq. 1);
   - p_ij = (q_ij² / f_j) / Σ_j' (q_ij'² / f_j'), f_j = Σ_i q_ij, is the target distribution (eq. 3): it sharpens
     confident assignments and divides by cluster frequency so that large clusters do not swallow the others.
   P is computed on the whole dataset and held fixed for ``update_interval`` steps (T) between refreshes; training
   stops when fewer than ``tolerance`` = 0.1 % of the images change cluster between two refreshes.

Defaults (``paper`` preset): the paper's implementation details, given for MNIST-sized data (60–70k images, batch
256). Layer-wise pretraining 50,000 iterations per layer with dropout 0.2 and end-to-end fine-tuning 100,000
iterations, SGD (momentum 0.9) lr 0.1 divided by 10 every 20,000 iterations, weight decay 0 — stated here as 200
and 400 epochs (≈ 50k and 100k iterations on 60–70k images); clustering SGD lr 0.01, momentum 0.9, batch 256,
tol 0.1 %. On digits (64-d) pretraining at lr 0.1 diverges (the stage stops with a clear error); the ``fast``
preset pretrains with Adam.

Readings we had to make:
- Input scaling: the paper normalises images so that (1/d)‖x‖² ≈ 1; we standardise pixels with the dataset's
  channel mean and std (the shared ``eval`` transform), which gives the same mean square of 1 and zero mean.
  ``image_size`` resizes first; colour images are flattened as they are (a fully connected autoencoder, as in the
  paper; no convolutional variant).
- Dropout and initialisation: the paper's text corrupts the input and the code of every pair; the author's MXNet
  reference code spares the raw pixels of the first pair and the embedding of the last, and draws weights and
  biases from U(±0.07). We follow the text and keep PyTorch's initialisation: on digits (fast preset) the reference
  variant ended lower (ACC 0.81/0.80/0.84 against 0.83/0.83/0.84 for seeds 0/1/2; its dropout alone: 0.73, seed 0).
- T (target refresh interval): not stated in the paper; the official MXNet example sweeps it. We use 140
  iterations, the value of the widely used Keras reimplementation for MNIST (about half an epoch). The first
  refresh (at step 0) only builds P: its argmax equals the K-means labels, so the stop test starts at the second.
- ``cluster_epochs`` caps the clustering stage if the 0.1 % criterion is never met (the reimplementations cap it
  at 20,000 iterations ≈ 75 epochs at batch 256 on MNIST).
- Collapse: nothing in DEC's loss forbids an empty cluster, but the 1/f_j normalisation of P works against one
  cluster absorbing the others; the shared guard still stops a run that ends with one cluster > 90 % of the data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..clustering.kmeans import fit_kmeans
from ..data.imageset import ImageSet
from ..errors import ConfigError
from ..nn.autoencoder import StackedAutoencoder, reconstruction_loss
from .base import Method, MethodConfig, Stage, register_method
from .context import FitContext
from .training import ImageGeometry, index_batches, make_optimizer, seed_everything, steps_per_epoch

AUTOENCODERS = ("auto", "mlp")


def student_t_assignment(z: torch.Tensor, centres: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Soft assignment Q of DEC eq. 1: a Student's t kernel between embeddings and centres, normalised per row.

    Examples:
        >>> q = student_t_assignment(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        >>> [round(v, 4) for v in q[0].tolist()]  # kernels 1 and 1/2 (α = 1), normalised
        [0.6667, 0.3333]
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    squared = (z.unsqueeze(1) - centres.unsqueeze(0)).pow(2).sum(-1)
    kernel = (1.0 + squared / alpha).pow(-(alpha + 1.0) / 2.0)
    return kernel / kernel.sum(1, keepdim=True)


def target_distribution(q: torch.Tensor) -> torch.Tensor:
    """Target P of DEC eq. 3: p_ij ∝ q_ij² / f_j with f_j = Σ_i q_ij, normalised per row.

    Examples:
        >>> p = target_distribution(torch.tensor([[0.6, 0.4], [0.4, 0.6]]))
        >>> [round(v, 4) for v in p[0].tolist()]  # squaring sharpens: 0.36 : 0.16
        [0.6923, 0.3077]
    """
    weight = q.pow(2) / q.sum(0)
    return weight / weight.sum(1, keepdim=True)


def dec_loss(q: torch.Tensor, p: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """KL(P‖Q) = Σ_i Σ_j p_ij log(p_ij / q_ij) of DEC eq. 2, averaged over the samples of the batch."""
    if q.shape != p.shape:
        raise ValueError(f"q {tuple(q.shape)} and p {tuple(p.shape)} must have one shape")
    return (p * (torch.log(p.clamp_min(eps)) - torch.log(q.clamp_min(eps)))).sum(1).mean()


@dataclass
class DecConfig(MethodConfig):
    backbone: str = "auto"  # the fully connected stacked autoencoder ("auto" = "mlp")
    image_size: int | None = None  # None → the dataset's own size
    flip: bool | None = None  # horizontal flips in augmentations; None → by content (gray: off)
    hidden_dims: tuple[int, ...] = (500, 500, 2000)
    embedding_dim: int = 10
    dropout: float = 0.2
    layerwise_epochs: int = 200
    finetune_epochs: int = 400
    pretrain_batch_size: int = 256
    pretrain_optimizer: str = "sgd"
    pretrain_lr: float = 0.1
    pretrain_lr_drop_steps: int = 20000  # lr ÷ 10 every this many iterations of each training phase
    pretrain_weight_decay: float = 0.0
    kmeans_restarts: int = 20
    alpha: float = 1.0
    cluster_epochs: int = 75
    cluster_batch_size: int = 256
    cluster_lr: float = 0.01
    cluster_momentum: float = 0.9
    update_interval: int = 140
    tolerance: float = 0.001

    def validate(self, n_images: int | None = None) -> None:
        super().validate(n_images)
        if self.backbone not in AUTOENCODERS:
            raise ConfigError(f"DEC trains its own fully connected autoencoder; backbone must be one of "
                              f"{', '.join(AUTOENCODERS)}, got {self.backbone!r}")
        if not self.hidden_dims or min(self.hidden_dims) < 1 or self.embedding_dim < 1:
            raise ConfigError(f"hidden_dims and embedding_dim must be positive widths, got {self.hidden_dims} "
                              f"and {self.embedding_dim}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("pretrain_lr_drop_steps", "update_interval", "kmeans_restarts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.alpha <= 0 or not 0 <= self.tolerance < 1:
            raise ConfigError(f"alpha must be positive and tolerance in [0, 1), got {self.alpha} and "
                              f"{self.tolerance}")


@register_method
class Dec(Method):
    """DEC: a pretrained autoencoder's embedding, refined by self-training on a sharpened soft assignment."""

    name = "dec"
    paper = "Xie, Girshick & Farhadi, Unsupervised Deep Embedding for Clustering Analysis, ICML 2016"
    Config = DecConfig
    stages = (
        Stage("pretrain", ("layer_reconstruction", "reconstruction"),
              "stacked denoising autoencoder: greedy layer-wise, then fine-tuned end to end",
              r"\min_{f, g} \sum_i \lVert x_i - g(f(\tilde x_i)) \rVert^2,\quad \tilde x_i = \mathrm{dropout}(x_i)"),
        Stage("cluster", ("kl", "label_change"),
              "K-means on the embedding, then KL(P‖Q) self-training until < 0.1 % of labels change",
              r"q_{ij} = \frac{(1 + \lVert z_i - \mu_j \rVert^2/\alpha)^{-\frac{\alpha+1}{2}}}"
              r"{\sum_{j'} (1 + \lVert z_i - \mu_{j'} \rVert^2/\alpha)^{-\frac{\alpha+1}{2}}},\ "
              r"p_{ij} = \frac{q_{ij}^2 / f_j}{\sum_{j'} q_{ij'}^2 / f_{j'}},\ "
              r"L = \mathrm{KL}(P \Vert Q) = \sum_i \sum_j p_{ij} \log \frac{p_{ij}}{q_{ij}}"),
    )
    key_settings = ("hidden_dims", "embedding_dim", "dropout", "layerwise_epochs", "finetune_epochs", "pretrain_lr",
                    "cluster_lr", "update_interval", "tolerance")
    presets = {
        "paper": {},
        # about a minute on a CPU: Adam instead of the long SGD schedule, few epochs, a short refresh interval
        "fast": {"layerwise_epochs": 10, "finetune_epochs": 60, "pretrain_optimizer": "adam",
                 "pretrain_lr": 1e-3, "cluster_epochs": 40, "update_interval": 14},
    }

    def _fit(self, images: ImageSet, context: FitContext) -> None:
        cfg = self.config
        generator = seed_everything(cfg.seed)
        geometry = ImageGeometry.of(images, cfg.image_size, cfg.flip)
        data = images.images.to(context.device)
        transform = geometry.augment("eval")

        def flatten(batch: torch.Tensor) -> torch.Tensor:  # DEC works on flattened, standardised pixels
            return transform(batch).flatten(1)

        dims = (geometry.channels * geometry.size ** 2, *cfg.hidden_dims, cfg.embedding_dim)
        autoencoder = StackedAutoencoder(dims).to(context.device)

        self._pretrain(autoencoder, data, flatten, context, generator)
        centres = self._cluster(autoencoder, data, flatten, context, generator)

        self.autoencoder_, self.centres_, self.flatten_ = autoencoder, centres, flatten
        z = self._embed(autoencoder, data, flatten)
        self.features_ = z.cpu().numpy().astype(np.float16)
        self.probs_ = student_t_assignment(z, centres, cfg.alpha).cpu().numpy()
        self.labels_ = self.probs_.argmax(1)

    @staticmethod
    @torch.no_grad()
    def _embed(autoencoder: StackedAutoencoder, data: torch.Tensor, flatten, batch_size: int = 1024
               ) -> torch.Tensor:
        was_training = autoencoder.training
        autoencoder.eval()
        z = torch.cat([autoencoder.encode(flatten(data[i:i + batch_size])) for i in range(0, len(data), batch_size)])
        autoencoder.train(was_training)
        return z

    # -- stage 1 ---------------------------------------------------------------------------------------------------
    def _pretrain(self, autoencoder: StackedAutoencoder, data: torch.Tensor, flatten, context: FitContext,
                  generator: torch.Generator) -> None:
        """Greedy layer-wise denoising pretraining, then end-to-end fine-tuning; resumable at any epoch.

        Phases 0 … L−1 train encoder/decoder pair i on the (fixed) output of the pairs below it; phase L fine-tunes
        every layer on the reconstruction of the input. Each phase has its own optimiser and lr schedule."""
        cfg = self.config
        n_layers = autoencoder.n_layers
        n_steps = steps_per_epoch(len(data), cfg.pretrain_batch_size)
        phase_epochs = [cfg.layerwise_epochs] * n_layers + [cfg.finetune_epochs]
        total = sum(phase_epochs) * n_steps
        phase, start_epoch, optimizer_state = 0, 0, None
        stored = context.load_stage("pretrain")
        if stored is not None:
            state, done = stored
            autoencoder.load_state_dict(state["model"])
            if done:
                return
            phase, start_epoch, optimizer_state = int(state["phase"]), int(state["epoch"]), state["optimizer"]
            context.info("pretrain", f"resumed pretraining at phase {phase}, epoch {start_epoch}")
        context.start_stage("pretrain", total)
        autoencoder.train()
        for phase in range(phase, n_layers + 1):
            params = autoencoder.layer_parameters(phase) if phase < n_layers else autoencoder.parameters()
            optimizer = make_optimizer(cfg.pretrain_optimizer, params, cfg.pretrain_lr, cfg.pretrain_weight_decay)
            if optimizer_state is not None:
                optimizer.load_state_dict(optimizer_state)
                optimizer_state = None
            loss_name = "layer_reconstruction" if phase < n_layers else "reconstruction"
            steps_before = sum(phase_epochs[:phase]) * n_steps
            for epoch in range(start_epoch, phase_epochs[phase]):
                loss_sum = torch.zeros((), device=context.device)
                for i, idx in enumerate(index_batches(len(data), cfg.pretrain_batch_size, generator, context.device)):
                    phase_step = epoch * n_steps + i
                    for group in optimizer.param_groups:
                        group["lr"] = cfg.pretrain_lr * 0.1 ** (phase_step // cfg.pretrain_lr_drop_steps)
                    x = flatten(data[idx])
                    if phase < n_layers:
                        with torch.no_grad():
                            below = autoencoder.encode(x, depth=phase)
                        loss = autoencoder.layer_reconstruction_loss(below, phase, cfg.dropout)
                    else:
                        loss = reconstruction_loss(autoencoder(x)[1], x)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.detach()
                    context.step("pretrain", steps_before + phase_step + 1, total)
                context.step("pretrain", steps_before + (epoch + 1) * n_steps, total, {loss_name: loss_sum / n_steps})
                if epoch + 1 < phase_epochs[phase]:
                    context.save_stage("pretrain", {"model": autoencoder.state_dict(), "phase": phase,
                                                    "epoch": epoch + 1, "optimizer": optimizer.state_dict()},
                                       done=False)
            start_epoch = 0
        context.save_stage("pretrain", {"model": autoencoder.state_dict()}, done=True)
        context.end_stage("pretrain")

    # -- stage 2 ---------------------------------------------------------------------------------------------------
    def _cluster(self, autoencoder: StackedAutoencoder, data: torch.Tensor, flatten, context: FitContext,
                 generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        stored = context.load_stage("cluster")
        if stored is not None and stored[1]:
            autoencoder.load_state_dict(stored[0]["model"])
            return stored[0]["centres"]
        n_steps = steps_per_epoch(len(data), cfg.cluster_batch_size)
        total = cfg.cluster_epochs * n_steps
        context.start_stage("cluster", total)
        z = self._embed(autoencoder, data, flatten)
        centres, labels = fit_kmeans(z, cfg.n_clusters, cfg.kmeans_restarts, cfg.seed)
        context.info("cluster", f"K-means on the {z.shape[1]}-d embedding: cluster sizes "
                                f"{torch.bincount(labels, minlength=cfg.n_clusters).tolist()}")
        centres = nn.Parameter(centres.clone())
        optimizer = torch.optim.SGD([*autoencoder.encoder_layers.parameters(), centres], lr=cfg.cluster_lr,
                                    momentum=cfg.cluster_momentum)
        autoencoder.train()
        step, target = 0, None
        converged = False
        for epoch in range(cfg.cluster_epochs):
            loss_sum, n_batches = torch.zeros((), device=context.device), 0
            for idx in index_batches(len(data), cfg.cluster_batch_size, generator, context.device):
                if step % cfg.update_interval == 0:
                    with torch.no_grad():
                        q_all = student_t_assignment(self._embed(autoencoder, data, flatten), centres, cfg.alpha)
                    target = target_distribution(q_all)
                    new_labels = q_all.argmax(1)
                    if step > 0:
                        change = (new_labels != labels).float().mean()
                        context.step("cluster", step, total, {"label_change": change})
                        if float(change) < cfg.tolerance:
                            converged = True
                            break
                    labels = new_labels
                q = student_t_assignment(autoencoder.encode(flatten(data[idx])), centres, cfg.alpha)
                loss = dec_loss(q, target[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
                n_batches += 1
                step += 1
                context.step("cluster", step, total)
            if n_batches:
                context.step("cluster", step, total, {"kl": loss_sum / n_batches})
            if converged:
                context.info("cluster", f"converged after {step} steps: fewer than {cfg.tolerance:.1%} of the "
                                        "labels changed since the last target refresh")
                break
        centres = centres.detach()
        context.save_stage("cluster", {"model": autoencoder.state_dict(), "centres": centres}, done=True)
        context.end_stage("cluster")
        return centres

    def predict_proba(self, images: ImageSet) -> np.ndarray:
        data = images.images.to(self.centres_.device)
        z = self._embed(self.autoencoder_, data, self.flatten_)
        return student_t_assignment(z, self.centres_, self.config.alpha).cpu().numpy()

"""DEC: Unsupervised Deep Embedding for Clustering Analysis (Xie, Girshick & Farhadi, ICML 2016).

Stages:
1. ``layerwise`` — a stacked autoencoder d–500–500–2000–10 on flattened pixels (§3.2): each encoder/decoder pair
   is trained greedily, one after the other, as a denoising autoencoder on the previous layer's output (dropout
   20 % on its input and on its code, for every pair as the paper writes it).
2. ``finetune`` — the whole autoencoder is fine-tuned end to end without dropout on the reconstruction loss
   ½‖x − x̂‖² (summed over features, averaged over the batch: Caffe's Euclidean loss, which the paper's lr refers
   to). The decoder is then dropped; the encoder f_θ maps an image to its embedding z.
3. ``cluster`` — K-means (20 restarts) on the embeddings initialises the centres μ_j (§3.2), then encoder and centres
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
- Input: the paper feeds MNIST's pixels to the autoencoder, but for the STL-10 photos "HOG feature and a 8-by-8
  color map" concatenated (§4.1). ``descriptor`` = ``auto`` does the same by content: gray images (glyphs) of any
  size and colour images under 16 px give their pixels; colour images of 16 px or more give HOG + the colour map
  (:func:`engine.data.descriptors.hog_colour`, 516 values at any size, after ``image_size``). It matters on
  photos: 2,000 CIFAR-10 test images, ``fast``, seeds 0–5, ACC 0.260 / 0.237 / 0.234 / 0.280 / 0.238 / 0.270
  (mean 0.253) against 0.213 / 0.208 / 0.211 / 0.216 / 0.206 / 0.214 for pixel K-means; from the pixels DEC
  scored 0.225 over seeds 0–2 (``benchmarks/presets-dec-hog-cifar10-2k``). A fully connected autoencoder, as in
  the paper; no convolutional variant.
- Input scaling: the paper normalises its inputs so that (1/d)‖x‖² ≈ 1; we standardise the pixels with the
  dataset's channel mean and std (the shared ``eval`` transform), and each descriptor value with its mean and std
  over the fitted images: the same mean square of 1, and zero mean. (Scaling the descriptor as a whole instead,
  to mean square 1, scored 0.214 / 0.235 / 0.233.)
- Dropout and initialisation: the paper's text corrupts the input and the code of every pair; the author's MXNet
  reference code spares the raw pixels of the first pair and the embedding of the last, and draws weights and
  biases from U(±0.07). We follow the text and keep PyTorch's initialisation: on digits (fast preset) the reference
  variant ended lower (ACC 0.81/0.80/0.84 against 0.83/0.83/0.84 for seeds 0/1/2; its dropout alone: 0.73, seed 0).
- T (target refresh interval): not stated in the paper; the official MXNet example sweeps it. We use 140
  iterations, the value of the widely used Keras reimplementation for MNIST (about half an epoch). The first
  refresh (at step 0) only builds P: its argmax equals the K-means labels, so the stop test starts at the second.
- Each pair of the layer-wise stage gets an optimiser state of its own, as in the paper's separate runs: the
  stage's one optimiser holds every pair, and a pair whose turn has not come has no gradient, hence no state.
- ``cluster_epochs`` caps the clustering stage if the 0.1 % criterion is never met (the reimplementations cap it
  at 20,000 iterations ≈ 75 epochs at batch 256 on MNIST).
- Collapse: nothing in DEC's loss forbids an empty cluster, but the 1/f_j normalisation of P works against one
  cluster absorbing the others; the shared guard still stops a run that ends with one cluster > 90 % of the data.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..clustering.kmeans import fit_kmeans
from ..data.descriptors import hog_colour_of_images
from ..data.imageset import ImageSet
from ..errors import ConfigError
from ..nn.autoencoder import StackedAutoencoder, reconstruction_loss
from .base import DeepMethod, MethodConfig, Stage, Transform, register_method
from .context import FitContext
from .settings import described, one_of
from .training import (DESCRIPTORS, ImageGeometry, LRSchedule, Position, StopStage, make_optimizer, resolve_descriptor,
                       seed_everything, steps_per_epoch, train_epochs)

AUTOENCODERS = ("auto", "mlp")


class AutoencoderInput:
    """The rows DEC's autoencoder reads for uint8 images, scaled as the paper scales its input ((1/d)‖x‖² ≈ 1):
    the pixels standardised with the dataset's channel mean and std, or the values of the HOG + colour map
    descriptor, each standardised with its mean and std over the fitted images."""

    def __init__(self, descriptor: str, geometry: ImageGeometry, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None) -> None:
        self.descriptor, self.size, self.mean, self.std = descriptor, geometry.size, mean, std
        self._evaluate = geometry.augment("eval")

    @classmethod
    def fit(cls, descriptor: str, geometry: ImageGeometry, images: torch.Tensor
            ) -> tuple["AutoencoderInput", torch.Tensor]:
        """The input fitted to uint8 ``images``, and what training reads of them: the images themselves for
        ``pixels`` (standardised batch by batch: a float copy of the set may not fit), else their standardised
        descriptor rows (a few hundred values an image, computed once here)."""
        if descriptor == "pixels":
            return cls(descriptor, geometry), images
        values = hog_colour_of_images(images, geometry.size)
        mean, std = values.mean(0), values.std(0).clamp_min(1e-6)
        return cls(descriptor, geometry, mean, std), (values - mean) / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.descriptor == "pixels":
            return self._evaluate(images).flatten(1)
        return (hog_colour_of_images(images, self.size) - self.mean) / self.std

    def __str__(self) -> str:
        return {"pixels": "the pixels, flattened",
                "hog_colour": "HOG + an 8×8 colour map (the paper's input for photos, STL-10)"}[self.descriptor]


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
    descriptor: str = one_of("auto", DESCRIPTORS, help=(
        "what the autoencoder reads: pixels, or HOG + an 8×8 colour map (the paper's input for photos); auto: "
        "HOG + colour map for colour images of 16 px or more, pixels for gray ones"))
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
    update_interval: int = described(140, "steps between two updates of the target distribution P (eq. 3)")
    tolerance: float = described(0.001, "the clustering stage stops once fewer than this share of the images "
                                        "change cluster between two updates of P")

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
class Dec(DeepMethod):
    """DEC: a pretrained autoencoder's embedding, refined by self-training on a sharpened soft assignment."""

    name = "dec"
    paper = "Xie, Girshick & Farhadi, Unsupervised Deep Embedding for Clustering Analysis, ICML 2016"
    Config = DecConfig
    fitted_attributes = DeepMethod.fitted_attributes + ("cluster_centers_", "input_")
    stages = (
        Stage("layerwise", ("layer_reconstruction",),
              "stacked denoising autoencoder, trained greedily: each encoder/decoder pair in turn",
              r"\min_{f_l, g_l} \sum_i \lVert h_i - g_l(\tilde f_l(\tilde h_i)) \rVert^2,\quad "
              r"\tilde h_i = \mathrm{dropout}(h_i)"),
        Stage("finetune", ("reconstruction",), "the whole autoencoder fine-tuned end to end",
              r"\min_{f, g} \sum_i \lVert x_i - g(f(x_i)) \rVert^2"),
        Stage("cluster", ("kl", "label_change"),
              "K-means on the embedding, then KL(P‖Q) self-training until < 0.1 % of labels change",
              r"q_{ij} = \frac{(1 + \lVert z_i - \mu_j \rVert^2/\alpha)^{-\frac{\alpha+1}{2}}}"
              r"{\sum_{j'} (1 + \lVert z_i - \mu_{j'} \rVert^2/\alpha)^{-\frac{\alpha+1}{2}}},\ "
              r"p_{ij} = \frac{q_{ij}^2 / f_j}{\sum_{j'} q_{ij'}^2 / f_{j'}},\ "
              r"L = \mathrm{KL}(P \Vert Q) = \sum_i \sum_j p_{ij} \log \frac{p_{ij}}{q_{ij}}"),
    )
    key_settings = ("descriptor", "hidden_dims", "embedding_dim", "dropout", "layerwise_epochs", "finetune_epochs",
                    "pretrain_lr", "cluster_lr", "update_interval", "tolerance")
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
        self.input_, source = AutoencoderInput.fit(resolve_descriptor(cfg.descriptor, images, geometry.size),
                                                   geometry, data)
        context.info("layerwise", f"autoencoder input: {self.input_}")
        flatten = self.input_ if self.input_.descriptor == "pixels" else nn.Identity()  # rows are read as they are

        dims = (flatten(source[:1]).shape[1], *cfg.hidden_dims, cfg.embedding_dim)
        autoencoder = StackedAutoencoder(dims).to(context.device)

        self._pretrain(autoencoder, source, flatten, context, generator)
        centres = self._cluster(autoencoder, source, flatten, context, generator)

        self.cluster_centers_ = centres
        self._finish(autoencoder, geometry, data, self._embed(autoencoder, source, flatten))

    @staticmethod
    @torch.no_grad()
    def _embed(autoencoder: StackedAutoencoder, data: torch.Tensor, flatten, batch_size: int = 1024) -> torch.Tensor:
        was_training = autoencoder.training
        autoencoder.eval()
        z = torch.cat([autoencoder.encode(flatten(data[i:i + batch_size])) for i in range(0, len(data), batch_size)])
        autoencoder.train(was_training)
        return z

    # -- stages 1 and 2 ------------------------------------------------------------------------------------------
    def _pretrain(self, autoencoder: StackedAutoencoder, data: torch.Tensor, flatten, context: FitContext,
                  generator: torch.Generator) -> None:
        """Greedy layer-wise denoising pretraining (pair l during epochs [l·E, (l+1)·E) of the stage, on the fixed
        output of the pairs below it), then end-to-end fine-tuning on the reconstruction of the input; each with
        the lr divided by 10 every ``pretrain_lr_drop_steps`` steps of a pair's or the fine-tuning's run."""
        cfg = self.config
        n_steps = steps_per_epoch(len(data), cfg.pretrain_batch_size)

        def dropping_lr(run_steps: int) -> LRSchedule:
            """lr ÷ 10 every ``pretrain_lr_drop_steps`` steps of a run of ``run_steps`` (a pair's, the fine-tuning)."""
            return lambda step, total: cfg.pretrain_lr * 0.1 ** (step % max(run_steps, 1) // cfg.pretrain_lr_drop_steps)

        def layer_step(indices: torch.Tensor, at: Position) -> dict[str, torch.Tensor]:
            layer = at.epoch // cfg.layerwise_epochs
            x = flatten(data[indices])
            with torch.no_grad():
                below = autoencoder.encode(x, depth=layer)
            return {"layer_reconstruction": autoencoder.layer_reconstruction_loss(below, layer, cfg.dropout)}

        def finetune_step(indices: torch.Tensor, at: Position) -> dict[str, torch.Tensor]:
            x = flatten(data[indices])
            return {"reconstruction": reconstruction_loss(autoencoder(x)[1], x)}

        for stage, step, epochs, run_epochs in (
                ("layerwise", layer_step, autoencoder.n_layers * cfg.layerwise_epochs, cfg.layerwise_epochs),
                ("finetune", finetune_step, cfg.finetune_epochs, cfg.finetune_epochs)):
            optimizer = make_optimizer(cfg.pretrain_optimizer, autoencoder.parameters(), cfg.pretrain_lr,
                                       cfg.pretrain_weight_decay)
            train_epochs(context, stage, autoencoder, optimizer, step, epochs=epochs, n_samples=len(data),
                         batch_size=cfg.pretrain_batch_size, generator=generator,
                         losses=("layer_reconstruction", "reconstruction"), lr=cfg.pretrain_lr,
                         lr_schedule=dropping_lr(run_epochs * n_steps))

    # -- stage 3 ---------------------------------------------------------------------------------------------------
    def _cluster(self, autoencoder: StackedAutoencoder, data: torch.Tensor, flatten, context: FitContext,
                 generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        centres = nn.Parameter(torch.zeros(cfg.n_clusters, cfg.embedding_dim, device=context.device))
        target = torch.zeros(len(data), cfg.n_clusters, device=context.device)  # P, held between refreshes
        labels = torch.zeros(len(data), dtype=torch.long, device=context.device)  # argmax Q at the last refresh
        optimizer = make_optimizer("sgd", [*autoencoder.encoder_layers.parameters(), centres], cfg.cluster_lr, 0.0,
                                   momentum=cfg.cluster_momentum)

        def initialise(epoch: int) -> None:
            if epoch > 0:
                return
            z = self._embed(autoencoder, data, flatten)
            kmeans_centres, kmeans_labels = fit_kmeans(z, cfg.n_clusters, cfg.kmeans_restarts, cfg.seed)
            context.info("cluster", f"K-means on the {z.shape[1]}-d embedding: cluster sizes "
                                    f"{torch.bincount(kmeans_labels, minlength=cfg.n_clusters).tolist()}")
            with torch.no_grad():
                centres.copy_(kmeans_centres)
            labels.copy_(kmeans_labels)

        def refresh(at: Position) -> None:
            """P from the whole dataset every ``update_interval`` steps; stop once under ``tolerance`` of the
            labels changed since the last refresh. In float32: the stop test must not hinge on bf16 rounding."""
            with torch.no_grad(), context.speedups.full_precision(context.device):
                q_all = student_t_assignment(self._embed(autoencoder, data, flatten), centres, cfg.alpha)
            new_labels = q_all.argmax(1)
            if at.step > 0:
                change = (new_labels != labels).float().mean()
                context.step("cluster", at.step, at.total, {"label_change": change})
                if float(change) < cfg.tolerance:
                    context.info("cluster", f"converged after {at.step} steps: fewer than {cfg.tolerance:.1%} of "
                                            "the labels changed since the last target refresh")
                    raise StopStage
            target.copy_(target_distribution(q_all))
            labels.copy_(new_labels)

        def step(indices: torch.Tensor, at: Position) -> dict[str, torch.Tensor]:
            if at.step % cfg.update_interval == 0:
                refresh(at)
            q = student_t_assignment(autoencoder.encode(flatten(data[indices])), centres, cfg.alpha)
            return {"kl": dec_loss(q, target[indices])}

        train_epochs(context, "cluster", autoencoder, optimizer, step, epochs=cfg.cluster_epochs,
                     n_samples=len(data), batch_size=cfg.cluster_batch_size, generator=generator, losses=("kl",),
                     lr=cfg.cluster_lr, before_epoch=initialise,
                     checkpointed={"centres": centres, "target": target, "labels": labels},
                     clusters_of=lambda indices: student_t_assignment(
                         self._embed(autoencoder, data[indices], flatten), centres, cfg.alpha).argmax(1))
        return centres.detach()

    def _probabilities(self, model: torch.nn.Module, inputs: torch.Tensor, evaluate: Transform) -> torch.Tensor:
        """Eq. 1: the Student's t similarity of each embedding to each cluster centre."""
        z = self._embed(model, inputs, self.input_)
        return student_t_assignment(z, self.cluster_centers_, self.config.alpha)

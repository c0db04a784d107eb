"""The contract every clustering method follows, and the registry the CLI and UI list methods from.

A method is a class with a config dataclass (hyper-parameters, the paper's defaults), named presets that override
it (``paper``: the paper's schedule; ``fast``: minutes on a CPU), the stages it runs with their loss names, and
``fit``. After ``fit`` it exposes scikit-learn-style results: ``labels_``, ``probs_`` (N×K), ``features_`` (N×D,
what the maps are drawn from) and, for neighbour-based methods, ``neighbors_`` (N×k). A class declares what fit
sets in ``fitted_attributes``; ``predict_proba`` and ``predict`` before ``fit`` raise :class:`NotFittedError`.
A method that trains a network on the images derives from :class:`DeepMethod`, which keeps the network and the
image geometry and assigns new images with them, as ``fit`` assigned its own.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, NamedTuple

import numpy as np
import torch

from ..data.imageset import ImageSet
from ..errors import ConfigError, LossDiverged, NotFittedError, TrainingError
from ..nn.backbones import resolve_backbone
from ..wording import count
from .context import FitContext
from .settings import bounded, check_ranges, check_types
from .training import ImageGeometry, seed_everything

COLLAPSE_SHARE = 0.9
TINY_SHARE = 0.25  # a cluster under this share of N/K is reported as tiny
Transform = Callable[[torch.Tensor], torch.Tensor]  # a batch of inputs → what the network reads


@dataclass(frozen=True)
class Stage:
    """One stage of a method: its name, the loss terms it records, one line on what it does and, for teaching,
    its objective as a LaTeX equation."""

    name: str
    losses: tuple[str, ...]
    description: str
    equation: str = ""
    step_unit: str = "training step"  # what the step of its recorded values counts (a chart's x-axis)


@dataclass
class MethodConfig:
    """Settings every method has. Subclasses add their paper's hyper-parameters."""

    n_clusters: int = 10
    seed: int = bounded(0, low=0)
    # its ``*_batch_size`` settings that are not an optimiser step's batch: a small set does not shrink them
    not_step_batches: ClassVar[tuple[str, ...]] = ()

    def validate(self, n_images: int | None = None) -> None:
        """Raise ConfigError for values no run can use; ``n_images`` enables the checks against the data.

        Every setting must be of its annotated type and within its field's range (:mod:`.settings`).
        """
        check_types(self)
        if self.n_clusters < 2:
            raise ConfigError(f"the number of clusters K must be at least 2, got {self.n_clusters}")
        if n_images is not None and self.n_clusters > n_images:
            raise ConfigError(f"K={self.n_clusters} clusters asked for but the dataset has only {n_images} "
                              "images; choose K ≤ the number of images")
        check_ranges(self)
        # a warm-up is part of a stage, not a stage of its own
        epochs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name.endswith("epochs") and not f.name.startswith("warmup")}
        # A single stage at 0 epochs is a way to skip it; all of them at 0 would train nothing at all.
        if epochs and not any(epochs.values()):
            raise ConfigError(f"every training stage is set to 0 epochs ({', '.join(epochs)}), so nothing would "
                              "be trained; give at least one of them 1 epoch or more")


@dataclass
class BackboneConfig(MethodConfig):
    """Settings every method that trains a network on the images has: the backbone and how images reach it."""

    backbone: str = "auto"
    image_size: int | None = None  # None → the dataset's own size
    flip: bool | None = None  # horizontal flips in augmentations; None → by content (gray: off)
    # Gaussian blur in contrastive (SimCLR) views; None → SimCLR's rule: only views above 64 px. Blurred views thicken
    # or thin a stroke: on digits28 (3 seeds) they raised digpro and scan and lowered smc, spice, socnet and pica
    # (benchmarks/presets-digits28-blur-seeds), so no content default turns it on.
    blur: bool | None = None
    # A random stroke width (one pixel thicker or thinner) in contrastive views of gray images of 16 px or more;
    # ours, not from the papers (see engine.data.augment.random_stroke_width). Colour images never get it.
    stroke: bool = False


class FitStart(NamedTuple):
    """What a :class:`BackboneConfig` method's fit starts from (:func:`start_fit`)."""

    generator: torch.Generator  # seeded: the batch order
    geometry: ImageGeometry  # how the images are fed to the network
    backbone: str  # the backbone's name, ``auto`` resolved for the geometry
    data: torch.Tensor  # the uint8 images on the fit's device


def start_fit(images: ImageSet, config: BackboneConfig, context: FitContext) -> FitStart:
    """Seed everything, and work out the geometry, the backbone and the images on the device from ``config``."""
    generator = seed_everything(config.seed)
    geometry = ImageGeometry.of(images, config.image_size, config.flip, config.blur, config.stroke)
    backbone = resolve_backbone(config.backbone, geometry.size, geometry.channels)
    return FitStart(generator, geometry, backbone, images.images.to(context.device))


class Method:
    """Base class: holds the config, checks it, and offers the result attributes.

    Subclasses set ``name``, ``paper``, ``Config``, ``stages``, ``presets`` and implement ``_fit``.
    """

    name: ClassVar[str]
    paper: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    stages: ClassVar[tuple[Stage, ...]]
    presets: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "fast": {}}
    key_settings: ClassVar[tuple[str, ...]] = ()  # the hyper-parameters the UI shows first
    # what fit sets and predict_proba reads; None until fit has run
    fitted_attributes: ClassVar[tuple[str, ...]] = ("labels_", "probs_", "features_")
    # A network trained on a clustering objective has degenerate optima (every image in one cluster), which fit
    # stops with an error. K-means on fixed points has none: a cluster holding most images is the points'
    # own answer (a few outliers apart from the rest), which fit keeps, with the uneven-clusters warning.
    can_collapse: ClassVar[bool] = True

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        config = config or self.Config()
        self.config = self._apply(config, overrides)
        self.explicit_settings = frozenset(overrides)  # what the user set, as opposed to the preset's values
        self.labels_: np.ndarray | None = None
        self.probs_: np.ndarray | None = None
        self.features_: np.ndarray | None = None
        self.neighbors_: np.ndarray | None = None

    @classmethod
    def from_preset(cls, preset: str = "fast", **overrides: Any) -> "Method":
        if preset not in cls.presets:
            raise ConfigError(f"method '{cls.name}' has no preset {preset!r}; choose one of "
                              f"{', '.join(cls.presets)}")
        return cls(cls._apply(cls.Config(), cls.presets[preset]), **overrides)

    @classmethod
    def _apply(cls, config: MethodConfig, overrides: dict[str, Any]) -> MethodConfig:
        known = {f.name: f for f in dataclasses.fields(config)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ConfigError(f"method '{cls.name}' has no setting {', '.join(unknown)}; its settings are "
                              f"{', '.join(known)}")
        return dataclasses.replace(config, **overrides)

    def get_params(self) -> dict[str, Any]:
        """The full config as a plain dict: enough to reproduce the run."""
        return dataclasses.asdict(self.config)

    def fit(self, images: ImageSet, context: FitContext | None = None) -> "Method":
        """Train on ``images``; the results land in ``labels_``, ``probs_``, ``features_`` (and, for a method that
        mines neighbours, ``neighbors_``; None for the others).

        Raises:
            TypeError: ``images`` is not an :class:`~engine.data.ImageSet` (build one from arrays:
                ``ImageSet(torch.from_numpy(uint8 N×H×W×C), labels or None, class_names, "my-set")``).
        """
        if not isinstance(images, ImageSet):
            raise TypeError(f"fit takes an engine.data.ImageSet (load_dataset(...) gives one), not a "
                            f"{type(images).__module__}.{type(images).__name__}; from arrays: "
                            f"ImageSet(torch.from_numpy(uint8 N×H×W×C), labels or None, class_names, 'my-set')")
        self.config.validate(len(images))
        check_batch_sizes(self.config, len(images), self.explicit_settings)
        context = context or FitContext()
        # the stages train with a small set's reduced batches; the config keeps the preset's, so it reproduces
        # the run and a later fit on another set reduces them afresh
        requested = self.config
        self.config, reduced = small_set_batches(requested, len(images), self.explicit_settings)
        if reduced:
            context.info("data", f"a small set ({len(images)} images): the preset's batches are reduced so that an "
                                 f"epoch takes about {SMALL_SET_STEPS} steps: {reduced}")
        context.labels = images.labels
        try:
            self._fit(images, context)
        except LossDiverged as error:
            rates = [f"{name}={value:g}" for name, value in dataclasses.asdict(self.config).items()
                     if name.endswith("lr") and isinstance(value, float)]
            if not rates:
                raise
            raise LossDiverged(f"{error} (this run's: {', '.join(rates)}; --set NAME=VALUE, or the Train page's "
                               f"settings)") from error
        finally:
            self.config = requested
        remedy = balance_remedy(self.config)
        if self.can_collapse:
            check_not_collapsed(self.labels_, self.config.n_clusters, remedy)
        warning = uneven_clusters_warning(self.labels_, self.config.n_clusters, remedy)
        if warning is not None:
            context.info("result", warning)
        return self

    def _fit(self, images: ImageSet, context: FitContext) -> None:
        raise NotImplementedError

    def check_fitted(self, action: str = "predict_proba") -> None:
        """Raise :class:`NotFittedError`, naming ``action``, while any of ``fitted_attributes`` is unset."""
        missing = [name for name in self.fitted_attributes if getattr(self, name, None) is None]
        if missing:
            raise NotFittedError(f"this {self.name} model is not fitted yet ({', '.join(missing)} unset): call "
                                 f"fit(images) before {action}")

    def predict_proba(self, images: ImageSet) -> np.ndarray:
        """Soft assignments N×K for (possibly new) images, made as ``fit`` made ``probs_`` (:meth:`_assign`)."""
        self.check_fitted("predict_proba")
        return self._assign(images).cpu().numpy()

    def predict(self, images: ImageSet) -> np.ndarray:
        """The cluster of each image: the argmax of :meth:`predict_proba`."""
        self.check_fitted("predict")
        return self.predict_proba(images).argmax(axis=1)

    def _assign(self, images: ImageSet) -> torch.Tensor:
        """N×K probabilities of ``images`` by the fitted model; a method that cannot assign new images keeps
        this refusal."""
        raise NotImplementedError(f"{self.name} cannot assign new images")

    @classmethod
    def light_on_cpu(cls, config: MethodConfig) -> bool:
        """Whether a run of ``config`` is quick on a CPU whatever the dataset (it trains no network): a job server
        with a GPU gives such runs to its CPU worker rather than queueing them behind the GPU's runs."""
        return False

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """What the CLI's ``list`` and the UI show: stages, losses, presets, defaults and the paper."""
        defaults = dataclasses.asdict(cls.Config())
        return {
            "name": cls.name,
            "paper": cls.paper,
            "summary": " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split()),  # its first paragraph
            "stages": [dataclasses.asdict(s) for s in cls.stages],
            "presets": {name: {**defaults, **over} for name, over in cls.presets.items()},
            "key_settings": list(cls.key_settings),
        }


class DeepMethod(Method):
    """A method that trains a network on the images: ``fit`` ends with :meth:`_finish`, which keeps the network and
    the geometry, and new images are assigned as the fitted ones were, through the evaluation transform.

    Subclasses implement :meth:`_probabilities`; one whose network reads something else than the pixels (frozen
    features) overrides :meth:`_network_inputs`.
    """

    fitted_attributes = Method.fitted_attributes + ("model_", "geometry_")

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.model_: torch.nn.Module | None = None
        self.geometry_: ImageGeometry | None = None

    def _probabilities(self, model: torch.nn.Module, inputs: torch.Tensor, evaluate: Transform) -> torch.Tensor:
        """N×K cluster probabilities of ``inputs`` (on the model's device) by ``model`` (the fitted network, or the
        one being trained) under the evaluation transform."""
        raise NotImplementedError

    def _clusters_by(self, model: torch.nn.Module, inputs: torch.Tensor,
                     geometry: ImageGeometry) -> Callable[[torch.Tensor], torch.Tensor]:
        """The ``clusters_of`` of a :func:`train_epochs` stage training ``model``: the cluster of the fitted
        ``inputs`` at some indices by the network as it stands, assigned as :meth:`_probabilities` assigns."""
        evaluate = geometry.augment("eval")
        return lambda indices: self._probabilities(model, inputs[indices], evaluate).argmax(1)

    def _network_inputs(self, images: ImageSet) -> torch.Tensor:
        """What the fitted network reads for ``images``: their uint8 pixels, on the network's device."""
        return images.images.to(next(self.model_.parameters()).device)

    def _assign(self, images: ImageSet) -> torch.Tensor:
        return self._probabilities(self.model_, self._network_inputs(images), self.geometry_.augment("eval"))

    def _finish(self, model: torch.nn.Module, geometry: ImageGeometry, inputs: torch.Tensor,
                features: torch.Tensor, neighbors: torch.Tensor | None = None) -> None:
        """Keep the fitted ``model`` and ``geometry`` and store the results on the fitted ``inputs``: ``features_``
        as float16 (what the maps read), ``probs_`` as :meth:`predict_proba` gives them, ``labels_`` their argmax
        and, where mined, ``neighbors_``."""
        self.model_, self.geometry_ = model, geometry
        self.features_ = features.cpu().numpy().astype(np.float16)
        self.probs_ = self._probabilities(model, inputs, geometry.augment("eval")).cpu().numpy()
        self.labels_ = self.probs_.argmax(1)
        if neighbors is not None:
            self.neighbors_ = neighbors.cpu().numpy().astype(np.int32)


SMALL_SET_IMAGES = 1000  # below this many images a preset's step batches shrink …
SMALL_SET_STEPS = 8  # … to about N/8 (never under 16), so that an epoch takes about 8 optimiser steps
MIN_SMALL_SET_BATCH = 16


def small_set_batches(config: MethodConfig, n_images: int, explicit: frozenset[str]
                      ) -> tuple[MethodConfig, str]:
    """``config`` with the preset's step batch sizes reduced on a small set, and what was reduced ("" if nothing).

    The presets' batches of 64–500 leave an epoch of a few hundred images one or two steps, and a fast preset's
    30–60 epochs then train a few dozen steps. On 300 images (seed 0), batches of 32 raised 9 of the 10 deep
    methods, most above pixel K-means where the presets' batches left them under it: letters (K = 10) scan 0.49 →
    0.68, pica 0.40 → 0.55, smc 0.32 → 0.50, spice 0.37 → 0.48, digpro 0.34 → 0.47, cc 0.39 → 0.46, jule 0.44 →
    0.50, dec 0.31 → 0.34 (K-means 0.39); colour shapes (K = 3) pica 0.37 → 0.63, cc 0.53 → 0.66
    (``benchmarks/presets-letters28``). A batch the user set is kept, and sets of 1,000 images or more (every
    preset figure on digits, digits28 and 2k CIFAR-10) are unchanged.

    Examples:
        >>> from engine.methods import create_method
        >>> config, reduced = small_set_batches(create_method("scan", "fast").config, 300, frozenset())
        >>> config.pretext_batch_size, reduced
        (37, 'pretext_batch_size 256→37, cluster_batch_size 128→37, selflabel_batch_size 500→37')
        >>> kept, _ = small_set_batches(create_method("scan", "fast").config, 300, frozenset({"pretext_batch_size"}))
        >>> kept.pretext_batch_size  # the user's
        256
    """
    if n_images >= SMALL_SET_IMAGES:
        return config, ""
    cap = max(MIN_SMALL_SET_BATCH, n_images // SMALL_SET_STEPS)
    changed = {field.name: cap for field in dataclasses.fields(config)
               if field.name.endswith("batch_size") and field.name not in explicit | set(config.not_step_batches)
               and isinstance(getattr(config, field.name), int) and getattr(config, field.name) > cap}
    reduced = ", ".join(f"{name} {getattr(config, name)}→{cap}" for name in changed)
    return dataclasses.replace(config, **changed), reduced


def check_batch_sizes(config: MethodConfig, n_images: int, explicit: frozenset[str]) -> None:
    """Refuse a batch size the user set (one of ``explicit``) that is larger than the dataset.

    A preset's batch size is only an upper bound, reduced by the method to the dataset's size, so a small folder
    works with every preset; a batch size typed by the user is taken at its word.
    """
    for name in sorted(explicit):
        value = getattr(config, name, None)
        if name.endswith("batch_size") and isinstance(value, int) and value > n_images:
            raise ConfigError(f"{name}={value} is larger than the dataset ({n_images} images); choose {name} ≤ "
                              f"{n_images}, or leave it at the preset's value, which is reduced to the dataset's "
                              "size")


# settings whose larger value spreads the images over more clusters (the losses' entropy or balance terms)
BALANCE_SETTINGS = ("entropy_weight", "balance_weight")


def balance_remedy(config: MethodConfig) -> str:
    """The first thing to try when ``config``'s clusters came out uneven: a larger value of the balance settings it
    has, with their values, or nothing for a method without one (K-means, DEC, JULE).

    Examples:
        >>> from engine.methods import create_method
        >>> balance_remedy(create_method("pica", "fast").config), balance_remedy(create_method("kmeans").config)
        ('a larger entropy_weight (now 2)', '')
    """
    names = [f"{name} (now {getattr(config, name):g})" for name in BALANCE_SETTINGS if hasattr(config, name)]
    return f"a larger {' or '.join(names)}" if names else ""


def check_not_collapsed(labels: np.ndarray | None, n_clusters: int, remedy: str = "") -> None:
    """Stop with a clear error when one cluster holds more than 90 % of the data (a degenerate solution);
    ``remedy`` (:func:`balance_remedy`) is suggested first."""
    if labels is None or len(labels) == 0:
        raise TrainingError("the method produced no cluster assignments")
    share = np.bincount(labels, minlength=n_clusters).max() / len(labels)
    if share > COLLAPSE_SHARE:
        raise TrainingError(f"the clustering collapsed: one cluster holds {share:.0%} of the images; try "
                            f"{_what_to_try(remedy, n_clusters)}")


def uneven_clusters_warning(labels: np.ndarray, n_clusters: int, remedy: str = "") -> str | None:
    """A warning naming the empty clusters and those under a quarter of the even share N/K, with their sizes, or
    None when every cluster is in use at a reasonable size. Not an error: real classes can be that uneven, but a
    user should look before trusting a partition with fewer clusters than asked for. ``remedy``
    (:func:`balance_remedy`) is suggested first."""
    sizes = np.bincount(labels, minlength=n_clusters)
    empty = [int(c) for c in np.flatnonzero(sizes == 0)]
    small = (sizes > 0) & (sizes < TINY_SHARE * len(labels) / n_clusters)
    tiny = {int(c): int(sizes[c]) for c in np.flatnonzero(small)}
    if not empty and not tiny:
        return None
    parts = []
    if empty:
        parts.append(f"{len(empty)} of {n_clusters} clusters are empty ({', '.join(map(str, empty))})")
    if tiny:
        listed = ", ".join(f"cluster {c}: {count(size, 'image')}" for c, size in tiny.items())
        parts.append(f"{count(len(tiny), 'cluster')} {'holds' if len(tiny) == 1 else 'hold'} under a quarter of "
                     f"the {len(labels) / n_clusters:.0f} images an even split gives each ({listed})")
    return ("warning: " + "; ".join(parts) + ". Fewer clusters are in use than asked for: try "
            f"{_what_to_try(remedy, n_clusters)}.")


def _what_to_try(remedy: str, n_clusters: int) -> str:
    """The remedy, another seed, or a smaller K where there is one (K = 2 is the smallest)."""
    return _listed([remedy, "another seed", "a smaller K" if n_clusters > 2 else ""])


def _listed(options: list[str]) -> str:
    """``a, b or c`` of the options that are not empty."""
    options = [option for option in options if option]
    return ", ".join(options[:-1]) + f" or {options[-1]}" if len(options) > 1 else options[0]


_REGISTRY: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_methods() -> list[str]:
    return list(_REGISTRY)


def create_method(name: str, preset: str = "fast", **overrides: Any) -> Method:
    """``create_method('scan', 'fast', n_clusters=10)``: the registered class built from a preset."""
    return get_method(name).from_preset(preset, **overrides)

"""Frozen pretrained feature extractors: what each one is, how to build it, and where its weights come from.

Each entry names a published image encoder (DINOv2, CLIP, ImageNet ResNets), its input size, feature dimension
and input normalisation, and how to build the architecture without weights. Weights come from one of two places,
never silently: a local file (``train --weights PATH``: a state dict saved with ``torch.save``, loaded with every
key checked), or the library's own download and cache (torchvision, timm, open_clip) when the user asks for it
(``train --download-weights``) on a machine with internet access. Nothing is downloaded otherwise.

timm and open_clip are imported only when an entry that needs them is built, so the engine imports without them.

Examples:
    >>> entry = get_pretrained("resnet18-imagenet")
    >>> entry.input_size, entry.feature_dim
    (224, 512)
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError, UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's preprocessing statistics
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# pip pins that resolve with the rest of requirements.txt, named in the "please install" errors
LIBRARY_PINS = {"torchvision": "torchvision==0.29.1", "timm": "timm==1.0.31", "open_clip": "open_clip_torch==3.3.0"}


@dataclass(frozen=True)
class PretrainedBackbone:
    """One frozen feature extractor.

    ``build()`` returns the architecture with random weights, mapping N×3×S×S (normalised with ``mean``/``std``)
    to N×``feature_dim``; ``download()`` the same module with the library's published weights (its own cache;
    needs internet the first time). ``adapt_state_dict(state, model)`` turns a checkpoint as the library or the
    authors publish it into this module's keys (drops the classifier or text tower the extractor has no use for).
    """

    name: str
    description: str
    library: str
    input_size: int
    feature_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_tag: str  # which published weights ``download`` fetches; part of the feature cache key
    build: Callable[[], nn.Module]
    download: Callable[[], nn.Module]
    adapt_state_dict: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]
    # whether bf16 autocast speeds extraction up on a CPU that computes bf16 natively (benchmarks/extract-cpu:
    # DINOv2 1.2–2.2×, ResNets 2.4×; open_clip's ViT-B/16 ran at 0.47× float32 there)
    cpu_bf16: bool = True

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "library": self.library,
                "input_size": self.input_size, "feature_dim": self.feature_dim, "weights": self.weights_tag}


def _torchvision_resnet(arch: str, weights: str | None) -> nn.Module:
    import torchvision

    net = getattr(torchvision.models, arch)(weights=weights)
    net.fc = nn.Identity()
    return net


def _drop_prefix_keys(prefix: str) -> Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]:
    """An adapter dropping the keys of a part the extractor replaced by an identity (a ResNet's ``fc``)."""
    def adapt(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        return {key: value for key, value in state.items() if not key.startswith(prefix)}
    return adapt


def _timm_vit(arch: str, pretrained: bool) -> nn.Module:
    import timm

    # 224 px instead of DINOv2's 518: timm resamples the position embedding, 16×16 patches of 14 px
    return timm.create_model(arch, pretrained=pretrained, num_classes=0, img_size=224)


def _timm_adapt(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The authors' DINOv2 checkpoints (``dinov2_vits14_pretrain.pth``) use other key names and a 518-px position
    embedding; timm's own filter converts them and resamples the embedding to the model's grid."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(state, model)


def _open_clip_visual(arch: str, pretrained: str | None) -> nn.Module:
    import open_clip

    model = open_clip.create_model(arch, pretrained=pretrained)
    return model.visual  # the image tower; its output is CLIP's joint embedding


def _clip_adapt(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A whole CLIP state dict keeps only its image tower (``visual.*``); a visual-only one is used as it is."""
    if any(key.startswith("visual.") for key in state):
        return {key[len("visual."):]: value for key, value in state.items() if key.startswith("visual.")}
    return state


def _resnet_entry(arch: str, dim: int) -> PretrainedBackbone:
    weights = f"{arch.replace('resnet', 'ResNet')}_Weights.IMAGENET1K_V1"
    return PretrainedBackbone(
        f"{arch}-imagenet", f"torchvision {arch.replace('resnet', 'ResNet-')}, supervised on ImageNet-1k",
        "torchvision", 224, dim, IMAGENET_MEAN, IMAGENET_STD, f"torchvision:{weights}",
        build=lambda: _torchvision_resnet(arch, None), download=lambda: _torchvision_resnet(arch, weights),
        adapt_state_dict=_drop_prefix_keys("fc."))


def _dinov2_entry(size: str, dim: int) -> PretrainedBackbone:
    arch = f"vit_{size}_patch14_dinov2"
    return PretrainedBackbone(
        f"dinov2-vit{size[0]}14", f"DINOv2 ViT-{size[0].upper()}/14 (Oquab et al. 2023), self-supervised, via timm",
        "timm", 224, dim, IMAGENET_MEAN, IMAGENET_STD, f"timm:{arch}.lvd142m",
        build=lambda: _timm_vit(arch, False), download=lambda: _timm_vit(arch, True), adapt_state_dict=_timm_adapt)


PRETRAINED_BACKBONES: dict[str, PretrainedBackbone] = {entry.name: entry for entry in (
    _dinov2_entry("small", 384),
    _dinov2_entry("base", 768),
    PretrainedBackbone(
        "clip-vitb16", "CLIP ViT-B/16 image encoder (Radford et al. 2021, OpenAI weights), via open_clip",
        "open_clip", 224, 512, CLIP_MEAN, CLIP_STD, "open_clip:ViT-B-16.openai",
        build=lambda: _open_clip_visual("ViT-B-16", None), download=lambda: _open_clip_visual("ViT-B-16", "openai"),
        adapt_state_dict=_clip_adapt, cpu_bf16=False),
    _resnet_entry("resnet18", 512),
    _resnet_entry("resnet50", 2048),
)}


def get_pretrained(name: str) -> PretrainedBackbone:
    if name not in PRETRAINED_BACKBONES:
        raise ConfigError(f"unknown pretrained backbone {name!r}; choose one of {', '.join(PRETRAINED_BACKBONES)}")
    return PRETRAINED_BACKBONES[name]


def list_pretrained() -> list[dict[str, Any]]:
    """Name, library, input size, feature dimension and published weights of every entry (for ``list --json``)."""
    return [entry.describe() for entry in PRETRAINED_BACKBONES.values()]


def _require_library(entry: PretrainedBackbone) -> None:
    if importlib.util.find_spec(entry.library) is None:
        raise UserError(f"pretrained backbone {entry.name} needs {entry.library}: "
                        f"pip install {LIBRARY_PINS[entry.library]}")


def check_weights_source(name: str, weights: str | None, download: bool) -> None:
    """Raise a UserError unless the backbone can get its weights: from a file that exists, or a download the user
    allowed. Called before a run is queued, so a run that cannot start is never recorded."""
    entry = get_pretrained(name)
    _require_library(entry)
    if weights:
        if not Path(weights).is_file():
            raise UserError(f"weights file {weights} does not exist")
        return
    if not download:
        raise UserError(f"pretrained backbone {name} needs weights: pass --weights FILE (a state dict saved with "
                        f"torch.save) or --download-weights to let {entry.library} download and cache "
                        f"{entry.weights_tag} (needs internet access)")


def file_identity(path: str | Path) -> str:
    """SHA-256 of a file's bytes: features computed with other weights must not be reused."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def weights_identity(name: str, weights: str | None) -> str:
    """What the features of ``name`` depend on besides the images: the weights file's hash, or the library tag."""
    return file_identity(weights) if weights else get_pretrained(name).weights_tag


def _unwrap(checkpoint: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint: the object itself, or its ``state_dict``/``model`` entry."""
    for key in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise UserError(f"{path} holds no state dict (a mapping of parameter names to tensors)")
    return checkpoint


def load_state_dict_strictly(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every parameter and buffer of ``model`` from ``state`` or fail with the keys that did not match: a
    partly loaded backbone gives plausible-looking but meaningless features."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(key for key in set(expected) & set(state) if expected[key].shape != state[key].shape)

    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")

    problems = [f"{label} keys: {listed(keys)}" for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrong-shape", wrong_shape)) if keys]
    if problems:
        raise UserError(f"the weights in {source} do not fit this backbone — {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)


def load_pretrained(name: str, weights: str | None = None, download: bool = False) -> nn.Module:
    """The frozen backbone ``name`` in eval mode, its weights from the file ``weights`` or, when ``download``, from
    the library's download and cache; neither → a UserError naming both ways."""
    check_weights_source(name, weights, download)
    entry = get_pretrained(name)
    if weights:
        model = entry.build()
        try:
            checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 — any unreadable file is the user's to replace
            raise UserError(f"cannot read weights file {weights}: {exc}") from exc
        load_state_dict_strictly(model, entry.adapt_state_dict(_unwrap(checkpoint, weights), model), weights)
    else:
        try:
            model = entry.download()
        except Exception as exc:  # noqa: BLE001 — no network, a proxy, a full cache: each library raises its own
            raise UserError(f"{entry.library} could not get {entry.weights_tag} ({exc}); on a machine without "
                            "internet access pass --weights FILE") from exc
    model.eval().requires_grad_(False)
    return model

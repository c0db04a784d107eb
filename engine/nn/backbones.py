"""Feature extractors: ResNets with a CIFAR stem for small colour images, a small ConvNet for tiny gray ones."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

BACKBONES = ("auto", "convnet", "resnet18", "resnet34", "resnet50")
STRIDED_STEM_ABOVE = 16  # px: larger gray images start with a stride-2 conv (see SmallConvNet)


class SmallConvNet(nn.Module):
    """Three conv blocks + global pooling, for 8–28 px gray images (digits, MNIST) where a ResNet is overkill.

    Above :data:`STRIDED_STEM_ABOVE` px the first conv has stride 2: the last block then sees a map of at most
    4×4 (7×7 at 28 px without it), so its 3×3 receptive field spans most of the digit before the global pooling
    discards the layout, and every step costs about a quarter (28 px images are 12× the pixels of 8 px digits,
    on which the presets' epochs were set). The weights keep their shapes and names either way.
    """

    def __init__(self, in_channels: int = 1, width: int = 32, image_size: int = 8) -> None:
        super().__init__()

        def block(cin: int, cout: int, pool: bool, stride: int = 1) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        stem_stride = 2 if image_size > STRIDED_STEM_ABOVE else 1
        self.features = nn.Sequential(*block(in_channels, width, False, stem_stride), *block(width, width * 2, True),
                                      *block(width * 2, width * 4, True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = width * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _resnet(name: str, in_channels: int, image_size: int) -> nn.Module:
    """torchvision ResNet without its classifier; for inputs ≤ 64 px the 7×7/2 stem and max-pool become a 3×3/1
    conv (the "CIFAR stem" of SimCLR's and SCAN's CIFAR experiments), so 32 px images keep spatial detail."""
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    if image_size <= 64:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    out_dim = net.fc.in_features
    net.fc = nn.Identity()
    net.out_dim = out_dim
    return net


def resolve_backbone(name: str, image_size: int, channels: int) -> str:
    """``auto`` picks the small ConvNet for gray images up to 28 px and ResNet-18 otherwise."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if name != "auto":
        return name
    return "convnet" if channels == 1 and image_size <= 28 else "resnet18"


def build_backbone(name: str, image_size: int, channels: int) -> nn.Module:
    """A backbone mapping N×C×S×S to N×D features; the module has an ``out_dim`` attribute (D)."""
    name = resolve_backbone(name, image_size, channels)
    if name == "convnet":
        return SmallConvNet(channels, image_size=image_size)
    return _resnet(name, channels, image_size)

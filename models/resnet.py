"""ResNet trunks with torchvision's module layout and parameter names.

torchvision's wheels cannot be installed beside the CPU torch build used here,
so the backbone is written out. `resnet_trunk()` returns what the tutorial builds
with `nn.Sequential(*list(resnet101.children())[:-2])`: children 0..7 are conv1,
bn1, relu, maxpool, layer1..layer4, so state-dict keys read `0.weight`,
`4.0.conv1.weight`, `4.0.downsample.0.weight`, ... exactly as torchvision's.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class BackboneConfig:
    """Block counts and widths of a bottleneck ResNet (output channels = widths[-1] * 4)."""

    layers: tuple[int, int, int, int] = (3, 4, 23, 3)  # ResNet-101
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    stem_width: int = 64
    # stride of each stage; (1, 2, 2, 1) keeps layer4 at 1/16 of the input (a finer grid for small objects)
    strides: tuple[int, int, int, int] = (1, 2, 2, 2)

    @property
    def out_channels(self) -> int:
        return self.widths[-1] * Bottleneck.expansion


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (stride on the 3x3 conv, "ResNet v1.5")."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * Bottleneck.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * Bottleneck.expansion),
        )
    mods = [Bottleneck(inplanes, planes, stride, downsample)]
    mods += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*mods)


def resnet_trunk(cfg: BackboneConfig) -> nn.Sequential:
    """The ResNet without its avgpool and fc (output stride 32 with the default strides)."""
    mods: list[nn.Module] = [
        nn.Conv2d(3, cfg.stem_width, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(cfg.stem_width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    ]
    inplanes = cfg.stem_width
    for blocks, width, stride in zip(cfg.layers, cfg.widths, cfg.strides):
        mods.append(_layer(inplanes, width, blocks, stride=stride))
        inplanes = width * Bottleneck.expansion
    trunk = nn.Sequential(*mods)
    for m in trunk.modules():  # torchvision's initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return trunk

"""Depth-based photo refocus: synthetic defocus from an image and its depth map.

Inputs: `image` [B, 3, H, W] in [0, 1], `depth` [B, 1, H, W] (metres, >= 0),
`near` [B] and `far` [B], the in-focus depth range. The focus range is a graph
input, not a constant, so one exported graph serves every focus setting.

Per pixel:

* distance = how far the depth lies outside [near, far] (0 inside), in metres;
* in-focus mask = 2 * sigmoid(-distance / softness): exactly 1 inside the range,
  falling smoothly towards 0 outside (softness in metres); softness = 0 makes it a
  step (1 inside, 0 outside);
* blur level t = clamp(distance * depth_scale, 0, n - 1) over the n blurred copies
  of the image (`blur_sigmas`, increasing), blended with linear "hat" weights
  max(0, 1 - |t - k|) between the two neighbouring levels; depth_scale is the
  number of blur levels per metre out of focus;
* output = mask * image + (1 - mask) * blended.

Degenerate case, a hard threshold with one blur: `softness=0, blur_sigmas=(s,)`
gives the sharp image inside [near, far] and the Gaussian blur of sigma s
everywhere else (with one level, t is always 0). A sigma of 0 is the identity,
so `blur_sigmas=(0, ...)` lets the blur start from sharp.

Every op is a plain one (comparison, Where, Sub, Mul, Sigmoid, Clip, depthwise
Conv with constant weights, edge Pad), chosen to export to ONNX, Core ML and
TensorRT alike. `far = inf` is allowed: the distance is taken with Where, never
as inf - inf, so near=0, far=inf returns the image unchanged (mask exactly 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmedge.models.zoo import register


@dataclass(frozen=True)
class RefocusConfig:
    """Blur levels, mask softness and blur growth; `image_size` is only the example inputs' size."""

    blur_sigmas: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)  # pixels, increasing; 0 = no blur
    softness: float = 0.25  # metres; 0 = hard (step) in-focus mask
    depth_scale: float = 1.0  # blur levels per metre out of focus
    image_size: int = 256
    max_depth: float = 10.0  # example depth maps span (0, max_depth] metres

    def __post_init__(self) -> None:
        if not self.blur_sigmas:
            raise ValueError("refocus needs at least one blur level")
        if any(s < 0 for s in self.blur_sigmas) or list(self.blur_sigmas) != sorted(self.blur_sigmas):
            raise ValueError(f"blur_sigmas must be non-negative and increasing, got {self.blur_sigmas}")
        if self.softness < 0:
            raise ValueError(f"softness must be >= 0 (0 = hard mask), got {self.softness}")
        if not 0 < self.depth_scale < math.inf:  # 0 * an infinite distance would be NaN
            raise ValueError(f"depth_scale must be positive and finite, got {self.depth_scale}")

    @property
    def n_levels(self) -> int:
        return len(self.blur_sigmas)


CONFIGS: dict[str, RefocusConfig] = {
    "tiny": RefocusConfig(blur_sigmas=(1.0, 2.0), softness=0.25, depth_scale=1.0, image_size=32),
    # `mmedge demo`'s build: three blur levels (kernels up to 19 taps instead of 49), 128 px example inputs
    "demo": RefocusConfig(blur_sigmas=(1.0, 2.0, 3.0), image_size=128),
    "full": RefocusConfig(),
}


def gaussian_kernel(sigma: float) -> Tensor:
    """Normalised 1-D Gaussian of radius ceil(3 sigma); sigma 0 -> [1.0] (identity)."""
    if sigma == 0:
        return torch.ones(1)
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


class GaussianBlur(nn.Module):
    """Separable Gaussian blur of a 3-channel image: two depthwise convs, edge (replicate) padding."""

    def __init__(self, sigma: float, channels: int = 3) -> None:
        super().__init__()
        k = gaussian_kernel(sigma)
        self.radius = (k.numel() - 1) // 2
        self.channels = channels
        self.register_buffer("weight_h", k.view(1, 1, 1, -1).repeat(channels, 1, 1, 1))
        self.register_buffer("weight_v", k.view(1, 1, -1, 1).repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.radius == 0:
            return x
        r = self.radius
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), self.weight_h, groups=self.channels)
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), self.weight_v, groups=self.channels)


class Refocus(nn.Module):
    """(image, depth, near, far) -> refocused image; no learned parameters, only fixed blur kernels."""

    def __init__(self, cfg: RefocusConfig) -> None:
        super().__init__()
        self.config = cfg
        self.blurs = nn.ModuleList(GaussianBlur(s) for s in cfg.blur_sigmas)

    def focus(self, depth: Tensor, near: Tensor, far: Tensor) -> tuple[Tensor, Tensor]:
        """-> (in-focus mask [B, 1, H, W] in [0, 1], blur level [B, 1, H, W] in [0, n - 1])."""
        near = near.reshape(-1, 1, 1, 1)
        far = far.reshape(-1, 1, 1, 1)
        # Where, not clamp(depth - far): depth = far = inf must give 0, not NaN.
        distance = torch.where(depth < near, near - depth, 0.0) + torch.where(depth > far, depth - far, 0.0)
        if self.config.softness > 0:
            mask = 2.0 * torch.sigmoid(distance * (-1.0 / self.config.softness))
        else:
            mask = (distance <= 0).to(depth.dtype)
        level = torch.clamp(distance * self.config.depth_scale, 0.0, float(self.config.n_levels - 1))
        return mask, level

    def forward(self, image: Tensor, depth: Tensor, near: Tensor, far: Tensor) -> Tensor:
        mask, level = self.focus(depth, near, far)
        terms = [torch.relu(1.0 - torch.abs(level - float(k))) * blur(image)  # hat weight x blurred copy
                 for k, blur in enumerate(self.blurs)]  # a fixed number of levels: unrolled when traced
        blended = terms[0]
        for term in terms[1:]:
            blended = blended + term
        return mask * image + (1.0 - mask) * blended


def _example(model: Refocus, cfg: RefocusConfig, batch: int, gen: torch.Generator) -> dict[str, Tensor]:
    """Random image, a depth ramp (top near, bottom far) with noise, a 1.5 m focus band inside it."""
    s = cfg.image_size
    image = torch.rand(batch, 3, s, s, generator=gen)
    ramp = torch.linspace(0.05, 1.0, s).view(1, 1, s, 1) * cfg.max_depth
    noise = 0.05 * cfg.max_depth * torch.rand(batch, 1, s, s, generator=gen)
    depth = (ramp + noise).clamp(min=0.0)
    near = (0.2 + 0.4 * torch.rand(batch, generator=gen)) * cfg.max_depth
    far = near + 0.15 * cfg.max_depth
    return {"image": image, "depth": depth, "near": near, "far": far}


def _preprocessing(cfg: RefocusConfig) -> dict:
    return {"kind": "image_depth", "value_range": [0, 1]}


# Graph names, inputs/outputs, dynamic axes and the description: the catalog in mmedge.models.zoo.
SPEC = register(
    "refocus",
    configs=CONFIGS,
    build=lambda cfg: Refocus(cfg),
    graphs={"model": (lambda m: m, _example)},
    preprocessing=_preprocessing,
)

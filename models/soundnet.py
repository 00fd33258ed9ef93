"""SoundNet-8 (Aytar, Vondrick, Torralba 2016): a raw-waveform audio encoder.

Eight 1-D convolutions over the waveform, no spectrogram: conv1..conv7 with
BatchNorm + ReLU (max-pooling after conv1, conv2 and conv5), then two conv8
heads predicting the teacher networks' ImageNet objects (1000) and Places
scenes (401). The layer sizes are the original's; `Conv1d` is used instead of
the original's `Conv2d` with (k, 1) kernels because it is the same arithmetic
and exports as a plain 1-D Conv to every backend (a (k, 1) checkpoint loads
after squeezing its last weight axis).

Input convention: the graph takes the mono waveform in [-1, 1] at
`config.sample_rate` and multiplies it by `config.input_scale` (256) itself,
because SoundNet was trained on waveforms in [-256, 256]. The runtime's job is
therefore only to read the WAV at the right rate; nothing else to remember.

Outputs are averaged over the remaining time frames (conv8 logits and conv7
features), so any input at least `config.min_samples` long gives fixed-size
results; shorter inputs leave conv8 no frame to produce and are rejected by the
backends with a shape error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mmedge.data.sounds import CLASSES as SOUND_CLASSES
from mmedge.models.zoo import register

# (kernel, stride, padding) of conv1..conv7, as in SoundNet-8.
CONV_LAYERS: tuple[tuple[int, int, int], ...] = (
    (64, 2, 32), (32, 2, 16), (16, 2, 8), (8, 2, 4), (4, 2, 2), (4, 2, 2), (4, 2, 2),
)
# The layers (0-based) followed by a max-pool, the pool sizes are in the config.
POOLED_LAYERS: tuple[int, ...] = (0, 1, 4)
CONV8 = (8, 2, 0)  # the two heads: kernel, stride, padding


def _conv_len(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


def frames_out(n_samples: int, pools: tuple[int, ...]) -> int:
    """Time frames conv8 produces for `n_samples` input samples (<= 0: too short)."""
    n = n_samples
    pool_of = dict(zip(POOLED_LAYERS, pools))
    for i, (k, s, p) in enumerate(CONV_LAYERS):
        n = _conv_len(n, k, s, p)
        if n < 1:
            return 0
        if i in pool_of:
            n = _conv_len(n, pool_of[i], pool_of[i], 0)  # MaxPool1d, stride = kernel, floor
            if n < 1:
                return 0
    return max(_conv_len(n, *CONV8), 0)


def _min_samples(pools: tuple[int, ...]) -> int:
    lo, hi = 1, 1
    while frames_out(hi, pools) < 1:
        hi *= 2
    while lo < hi:  # frames_out is non-decreasing in the length
        mid = (lo + hi) // 2
        if frames_out(mid, pools) >= 1:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True)
class SoundNetConfig:
    """SoundNet-8 sizes.

    `min_samples` is derived (not an argument): the shortest waveform for which
    conv8 still produces one frame. It depends only on the pool sizes, because
    the kernels and strides are SoundNet's: 209,374 samples (9.5 s at 22,050 Hz)
    for the real network, 6,422 for `tiny`.
    """

    sample_rate: int = 22050
    widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)  # conv1..conv7 channels
    n_objects: int = 1000
    n_scenes: int = 401
    pools: tuple[int, int, int] = (8, 8, 4)  # max-pool after conv1, conv2, conv5
    input_scale: float = 256.0  # waveform [-1, 1] -> SoundNet's [-256, 256]
    labels: tuple[str, ...] | None = None  # class names of the `objects` head (trained configs)
    min_samples: int = field(init=False)

    def __post_init__(self) -> None:
        if len(self.widths) != len(CONV_LAYERS):
            raise ValueError(f"SoundNet-8 has {len(CONV_LAYERS)} conv widths, got {len(self.widths)}")
        if len(self.pools) != len(POOLED_LAYERS):
            raise ValueError(f"SoundNet-8 has {len(POOLED_LAYERS)} pools, got {len(self.pools)}")
        object.__setattr__(self, "min_samples", _min_samples(tuple(self.pools)))

    @property
    def embedding_dim(self) -> int:
        return self.widths[-1]


CONFIGS: dict[str, SoundNetConfig] = {
    # Pools of 2 instead of 8/8/4 make ~1 s at 8 kHz long enough for conv8.
    "tiny": SoundNetConfig(sample_rate=8000, widths=(2, 4, 8, 16, 32, 64, 128),
                           n_objects=10, n_scenes=5, pools=(2, 2, 2)),
    # Trained on the synthetic sounds of mmedge.data.sounds (weights shipped): 16 kHz, pools of 2
    # (min_samples 6,422 = 0.4 s), the `objects` head classifies the ten sound classes.
    "demo": SoundNetConfig(sample_rate=16000, widths=(16, 32, 32, 64, 64, 128, 128),
                           n_objects=len(SOUND_CLASSES), n_scenes=2, pools=(2, 2, 2), labels=SOUND_CLASSES),
    "full": SoundNetConfig(),
}


class SoundNet8(nn.Module):
    """waveform [B, T] in [-1, 1] -> (objects [B, n_objects], scenes [B, n_scenes], embedding [B, C7])."""

    def __init__(self, cfg: SoundNetConfig) -> None:
        super().__init__()
        self.config = cfg
        pool_of = dict(zip(POOLED_LAYERS, cfg.pools))
        layers: list[nn.Module] = []
        c_in = 1
        for i, ((k, s, p), c_out) in enumerate(zip(CONV_LAYERS, cfg.widths)):
            layers += [nn.Conv1d(c_in, c_out, k, stride=s, padding=p), nn.BatchNorm1d(c_out), nn.ReLU()]
            if i in pool_of:
                layers.append(nn.MaxPool1d(pool_of[i], stride=pool_of[i]))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        k, s, p = CONV8
        self.conv8_objs = nn.Conv1d(c_in, cfg.n_objects, k, stride=s, padding=p)
        self.conv8_scns = nn.Conv1d(c_in, cfg.n_scenes, k, stride=s, padding=p)

    def forward(self, waveform: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = (waveform * self.config.input_scale).unsqueeze(1)  # [B, 1, T]
        x = self.features(x)  # conv7 features [B, C7, T7]
        objects = self.conv8_objs(x).mean(dim=2)
        scenes = self.conv8_scns(x).mean(dim=2)
        return objects, scenes, x.mean(dim=2)


def _example(model: SoundNet8, cfg: SoundNetConfig, batch: int, gen: torch.Generator) -> dict[str, Tensor]:
    """About one second of noise in [-1, 1] (never shorter than `min_samples`)."""
    n = max(cfg.min_samples, cfg.sample_rate)
    return {"waveform": torch.rand(batch, n, generator=gen) * 2.0 - 1.0}


def _preprocessing(cfg: SoundNetConfig) -> dict:
    return {"kind": "waveform", "sample_rate": cfg.sample_rate}


# Graph names, inputs/outputs, dynamic axes and the description: the catalog in mmedge.models.zoo.
SPEC = register(
    "soundnet",
    configs=CONFIGS,
    build=lambda cfg: SoundNet8(cfg),
    graphs={"model": (lambda m: m, _example)},
    preprocessing=_preprocessing,
    manifest_extra=lambda cfg: {"class_output": "objects", "min_samples": cfg.min_samples},
    labels=lambda cfg: list(cfg.labels) if cfg.labels else None,
    weights={"demo": "soundnet-demo.pt"},
)

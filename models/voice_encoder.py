"""A Speech2Face-style voice encoder (Oh et al. 2019): spectrogram -> face-feature-sized embedding.

The front-end is Speech2Face's: 16 kHz audio, STFT with a 25 ms Hann window and
a 10 ms hop, whose real and imaginary parts are each power-law compressed
(sign(x) |x|^0.3) into a [B, 2, 257, frames] tensor. `spectrogram` computes it
with `torch.stft`; it is the PyTorch reference that the numpy front-end in
`mmedge.runtime` must match, so it is kept to exactly that call and nothing
else.

The exported graph starts at the spectrogram: a VGG-like CNN (3x3 conv, BN,
ReLU blocks with max-pooling over frequency and time), the mean over time (so
any duration of at least `min_samples` works), two fully connected layers to
the embedding (4096-d as Speech2Face's face features) and a linear classifier
head on the embedding. 3x3 kernels replace Speech2Face's 4x4 because odd
kernels pad symmetrically, which every backend handles the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmedge.data.sounds import CLASSES as SOUND_CLASSES
from mmedge.models.zoo import register

_WINDOWS = {"hann": torch.hann_window, "hamming": torch.hamming_window}


@dataclass(frozen=True)
class VoiceEncoderConfig:
    """Front-end parameters (written to the manifest) and network sizes.

    `pools[i]` is the (frequency, time) max-pool after conv block i; (1, 1) is
    none. The time pools set the shortest input: `min_frames` STFT frames.
    """

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400  # 25 ms at 16 kHz
    hop_length: int = 160  # 10 ms at 16 kHz
    window: str = "hann"  # periodic, as torch.hann_window makes it
    center: bool = True
    pad_mode: str = "reflect"
    power: float = 0.3
    channels: tuple[int, ...] = (64, 64, 128, 128, 128, 256, 512, 512)
    pools: tuple[tuple[int, int], ...] = ((1, 1), (2, 1), (2, 2), (1, 1), (2, 2), (2, 1), (1, 1), (2, 2))
    embed_dim: int = 4096
    n_classes: int = 10
    example_seconds: float = 1.0
    labels: tuple[str, ...] | None = None  # class names of the `logits` head (trained configs)

    def __post_init__(self) -> None:
        if self.window not in _WINDOWS:
            raise ValueError(f"window must be one of {sorted(_WINDOWS)}, got {self.window!r}")
        if len(self.channels) != len(self.pools):
            raise ValueError(f"{len(self.channels)} conv blocks but {len(self.pools)} pools")
        if self.freq_bins_out < 1:
            raise ValueError(f"the frequency pools {self.pools} leave no frequency bin")

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def freq_bins_out(self) -> int:
        f = self.n_freq
        for pf, _ in self.pools:
            f //= pf
        return f

    @property
    def min_frames(self) -> int:
        """Fewest STFT frames the time pools leave at least one frame of."""
        n = 1
        for _, pt in self.pools:
            n *= pt
        return n

    @property
    def min_samples(self) -> int:
        """Fewest samples giving `min_frames` frames (and a legal reflect padding)."""
        frames_samples = (self.min_frames - 1) * self.hop_length if self.center else \
            (self.min_frames - 1) * self.hop_length + self.n_fft
        return max(frames_samples, self.n_fft // 2 + 1)


CONFIGS: dict[str, VoiceEncoderConfig] = {
    "tiny": VoiceEncoderConfig(channels=(4, 8, 8), pools=((2, 2), (2, 2), (2, 2)), embed_dim=32, n_classes=10),
    # Trained on the synthetic sounds of mmedge.data.sounds (weights shipped): a small VGG whose
    # classifier head names the ten sound classes.
    "demo": VoiceEncoderConfig(channels=(16, 16, 32, 32, 64), pools=((2, 2), (2, 2), (2, 2), (2, 2), (2, 1)),
                               embed_dim=128, n_classes=len(SOUND_CLASSES), labels=SOUND_CLASSES),
    "full": VoiceEncoderConfig(),
}


def spectrogram(waveform: Tensor, config: VoiceEncoderConfig) -> Tensor:
    """waveform [B, T] (or [T]) -> power-law compressed STFT [B, 2, n_fft//2+1, frames] (real, imag)."""
    window = _WINDOWS[config.window](config.win_length, periodic=True, dtype=waveform.dtype,
                                     device=waveform.device)
    spec = torch.stft(waveform, n_fft=config.n_fft, hop_length=config.hop_length,
                      win_length=config.win_length, window=window, center=config.center,
                      pad_mode=config.pad_mode, normalized=False, onesided=True, return_complex=True)
    parts = torch.stack([spec.real, spec.imag], dim=-3)
    return torch.sign(parts) * parts.abs().pow(config.power)


class VoiceEncoder(nn.Module):
    """spectrogram [B, 2, F, T] -> (embedding [B, embed_dim], logits [B, n_classes])."""

    def __init__(self, cfg: VoiceEncoderConfig) -> None:
        super().__init__()
        self.config = cfg
        layers: list[nn.Module] = []
        c_in = 2
        for c_out, (pf, pt) in zip(cfg.channels, cfg.pools):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            if (pf, pt) != (1, 1):
                layers.append(nn.MaxPool2d((pf, pt), stride=(pf, pt)))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(c_in * cfg.freq_bins_out, cfg.embed_dim)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.classifier = nn.Linear(cfg.embed_dim, cfg.n_classes)

    def forward(self, spectrogram: Tensor) -> tuple[Tensor, Tensor]:
        x = self.features(spectrogram)  # [B, C, F', T']
        x = x.mean(dim=3).flatten(1)  # average over time: any duration -> [B, C * F']
        embedding = self.fc2(self.relu(self.fc1(x)))
        return embedding, self.classifier(embedding)

    def embed_waveform(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        """Convenience: the PyTorch front-end followed by the network."""
        return self(spectrogram(waveform, self.config))


def _example(model: VoiceEncoder, cfg: VoiceEncoderConfig, batch: int, gen: torch.Generator) -> dict[str, Tensor]:
    n = max(int(cfg.example_seconds * cfg.sample_rate), cfg.min_samples)
    waveform = torch.rand(batch, n, generator=gen) - 0.5
    return {"spectrogram": spectrogram(waveform, cfg)}


def _preprocessing(cfg: VoiceEncoderConfig) -> dict:
    return {"kind": "stft_powerlaw", "sample_rate": cfg.sample_rate, "n_fft": cfg.n_fft,
            "win_length": cfg.win_length, "hop_length": cfg.hop_length, "window": cfg.window,
            "center": cfg.center, "pad_mode": cfg.pad_mode, "power": cfg.power}


# Graph names, inputs/outputs, dynamic axes and the description: the catalog in mmedge.models.zoo.
SPEC = register(
    "voice-encoder",
    configs=CONFIGS,
    build=lambda cfg: VoiceEncoder(cfg),
    graphs={"model": (lambda m: m, _example)},
    preprocessing=_preprocessing,
    manifest_extra=lambda cfg: {"class_output": "logits", "min_samples": cfg.min_samples},
    labels=lambda cfg: list(cfg.labels) if cfg.labels else None,
    weights={"demo": "voice-encoder-demo.pt"},
)

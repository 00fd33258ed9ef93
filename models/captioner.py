"""Show, Attend and Tell captioner, as in sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning.

Module names and parameter names follow the tutorial (`encoder.resnet.*`,
`decoder.attention.encoder_att`, `decoder.decode_step.weight_ih`, ...) so its
checkpoints load. Two deliberate differences, both for export:

* the 14x14 adaptive pooling is a fixed pooling matrix (two matmuls) that
  computes exactly what `nn.AdaptiveAvgPool2d` does, because the TorchScript
  ONNX exporter refuses adaptive pooling when 8 does not divide into 14;
* the LSTM cell is written out (two linear maps split into i, f, g, o gates)
  because coremltools cannot convert `nn.LSTMCell`; it keeps LSTMCell's
  parameter names.

Besides the teacher-forced `forward`, the decoder has the two entry points the
runtime exports: `init_state` (h0, c0 and the step-invariant attention
projection `att1`) and `step` (one decoding step given `att1`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmedge.data import shapes
from mmedge.models.resnet import BackboneConfig, resnet_trunk
from mmedge.models.zoo import register
from mmedge.runtime.vocab import Vocabulary

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class CaptionerConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    image_size: int = 256
    encoded_size: int = 14
    embed_dim: int = 512
    attention_dim: int = 512
    decoder_dim: int = 512
    vocab_size: int = 9490  # the tutorial's COCO word map
    dropout: float = 0.5
    # the words of a known vocabulary (tutorial layout around them); None: placeholder words
    words: tuple[str, ...] | None = None

    def vocabulary(self) -> Vocabulary:
        return Vocabulary.from_words(self.words) if self.words is not None else Vocabulary.synthetic(self.vocab_size)

    @property
    def encoder_dim(self) -> int:
        return self.backbone.out_channels

    @property
    def num_pixels(self) -> int:
        return self.encoded_size**2


CONFIGS: dict[str, CaptionerConfig] = {
    "tiny": CaptionerConfig(
        backbone=BackboneConfig(layers=(1, 1, 1, 1), widths=(4, 8, 16, 16), stem_width=8),
        image_size=64, embed_dim=16, attention_dim=16, decoder_dim=24, vocab_size=23,
    ),
    "full": CaptionerConfig(),
    # trained on the synthetic shapes scenes (mmedge.data.shapes); weights shipped in models/weights/
    "demo": CaptionerConfig(
        backbone=BackboneConfig(layers=(1, 1, 1, 1), widths=(24, 48, 64, 64), stem_width=24, strides=(1, 2, 2, 1)),
        image_size=160, encoded_size=10, embed_dim=64, attention_dim=96, decoder_dim=160,
        vocab_size=len(shapes.vocabulary_words()) + 4, dropout=0.1, words=shapes.vocabulary_words(),
    ),
}


@lru_cache(maxsize=64)
def _pool_rows(size_in: int, size_out: int) -> tuple[tuple[float, ...], ...]:
    rows = []
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -((-(i + 1) * size_in) // size_out)  # ceil
        rows.append(tuple(1.0 / (end - start) if start <= j < end else 0.0 for j in range(size_in)))
    return tuple(rows)


def adaptive_pool_matrix(size_in: int, size_out: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """[size_out, size_in] averaging matrix with AdaptiveAvgPool's bins (floor start, ceil end)."""
    return torch.tensor(_pool_rows(size_in, size_out), dtype=dtype)


class AdaptivePool(nn.Module):
    """`AdaptiveAvgPool2d((n, n))` followed by NCHW->NHWC, as two matmuls.

    The matrices depend only on the input's spatial size, which is fixed per
    export, so every backend sees plain MatMul nodes with constant weights.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        ph = adaptive_pool_matrix(h, self.size, x.dtype).to(x.device)  # [S, h]
        pw = adaptive_pool_matrix(w, self.size, x.dtype).to(x.device)  # [S, w]
        x = torch.matmul(x, pw.t())  # [B, C, h, S]
        x = torch.matmul(ph, x)  # [B, C, S, S]
        return x.permute(0, 2, 3, 1)


class Encoder(nn.Module):
    """ResNet trunk -> pooled grid [B, S, S, C] (the tutorial's `models.Encoder`)."""

    def __init__(self, cfg: CaptionerConfig) -> None:
        super().__init__()
        self.enc_image_size = cfg.encoded_size
        self.resnet = resnet_trunk(cfg.backbone)
        self.adaptive_pool = AdaptivePool(cfg.encoded_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.adaptive_pool(self.resnet(images))


class Attention(nn.Module):
    def __init__(self, encoder_dim: int, decoder_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(decoder_dim, attention_dim)
        self.full_att = nn.Linear(attention_dim, 1)
        self.relu = nn.ReLU()
        self.softmax = nn.Softmax(dim=1)

    def forward(self, encoder_out: Tensor, decoder_hidden: Tensor, att1: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Attention-weighted encoding and weights; pass `att1` to skip recomputing it."""
        if att1 is None:
            att1 = self.encoder_att(encoder_out)  # [N, P, A]
        att2 = self.decoder_att(decoder_hidden)  # [N, A]
        att = self.full_att(self.relu(att1 + att2.unsqueeze(1))).squeeze(2)  # [N, P]
        alpha = self.softmax(att)
        # one batched matmul, not broadcast-multiply + sum: the exported step graph then
        # never materialises an [N, P, C] product (faster end to end, same tokens)
        awe = torch.matmul(alpha.unsqueeze(1), encoder_out).squeeze(1)  # [N, C]
        return awe, alpha


class LSTMCell(nn.Module):
    """nn.LSTMCell written out (gate order i, f, g, o), with its parameter names."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)
        i, f, g, o = gates.chunk(4, dim=1)
        c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_next = torch.sigmoid(o) * torch.tanh(c_next)
        return h_next, c_next


class DecoderWithAttention(nn.Module):
    """The tutorial's decoder, plus `init_state` / `step` for export."""

    def __init__(self, attention_dim: int, embed_dim: int, decoder_dim: int, vocab_size: int,
                 encoder_dim: int = 2048, dropout: float = 0.5) -> None:
        super().__init__()
        self.encoder_dim, self.attention_dim, self.embed_dim = encoder_dim, attention_dim, embed_dim
        self.decoder_dim, self.vocab_size, self.dropout_p = decoder_dim, vocab_size, dropout
        self.attention = Attention(encoder_dim, decoder_dim, attention_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(p=dropout)
        self.decode_step = LSTMCell(embed_dim + encoder_dim, decoder_dim)
        self.init_h = nn.Linear(encoder_dim, decoder_dim)
        self.init_c = nn.Linear(encoder_dim, decoder_dim)
        self.f_beta = nn.Linear(decoder_dim, encoder_dim)
        self.sigmoid = nn.Sigmoid()
        self.fc = nn.Linear(decoder_dim, vocab_size)
        self.embedding.weight.data.uniform_(-0.1, 0.1)
        self.fc.bias.data.fill_(0)
        self.fc.weight.data.uniform_(-0.1, 0.1)

    @staticmethod
    def _flat(features: Tensor) -> Tensor:
        return features.reshape(features.shape[0], -1, features.shape[-1])

    def init_hidden_state(self, encoder_out: Tensor) -> tuple[Tensor, Tensor]:
        mean = encoder_out.mean(dim=1)
        return self.init_h(mean), self.init_c(mean)

    def init_state(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """features [B, P, C] (or [B, S, S, C]) -> h0, c0 [B, D], att1 [B, P, A]."""
        enc = self._flat(features)
        h, c = self.init_hidden_state(enc)
        return h, c, self.attention.encoder_att(enc)

    def step(self, features: Tensor, att1: Tensor, prev_word: Tensor, h: Tensor, c: Tensor
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One decoding step -> log_probs [N, V], h, c, alpha [N, P]."""
        enc = self._flat(features)
        emb = self.embedding(prev_word)
        awe, alpha = self.attention(enc, h, att1)
        awe = self.sigmoid(self.f_beta(h)) * awe
        h, c = self.decode_step(torch.cat([emb, awe], dim=1), (h, c))
        log_probs = F.log_softmax(self.fc(h), dim=1)
        return log_probs, h, c, alpha

    def forward(self, encoder_out: Tensor, encoded_captions: Tensor, caption_lengths: Tensor):
        """Teacher-forced training pass, exactly the tutorial's (sorted by length)."""
        batch_size = encoder_out.size(0)
        encoder_out = self._flat(encoder_out)
        num_pixels = encoder_out.size(1)
        caption_lengths, sort_ind = caption_lengths.squeeze(1).sort(dim=0, descending=True)
        encoder_out = encoder_out[sort_ind]
        encoded_captions = encoded_captions[sort_ind]
        embeddings = self.embedding(encoded_captions)
        h, c = self.init_hidden_state(encoder_out)
        att1 = self.attention.encoder_att(encoder_out)
        decode_lengths = (caption_lengths - 1).tolist()
        max_len = max(decode_lengths)
        predictions = encoder_out.new_zeros(batch_size, max_len, self.vocab_size)
        alphas = encoder_out.new_zeros(batch_size, max_len, num_pixels)
        for t in range(max_len):
            bt = sum(length > t for length in decode_lengths)
            awe, alpha = self.attention(encoder_out[:bt], h[:bt], att1[:bt])
            awe = self.sigmoid(self.f_beta(h[:bt])) * awe
            h, c = self.decode_step(torch.cat([embeddings[:bt, t, :], awe], dim=1), (h[:bt], c[:bt]))
            predictions[:bt, t, :] = self.fc(self.dropout(h))
            alphas[:bt, t, :] = alpha
        return predictions, encoded_captions, decode_lengths, alphas, sort_ind


class CaptionModel(nn.Module):
    """Encoder + decoder + the vocabulary they were trained with."""

    def __init__(self, cfg: CaptionerConfig, vocab: Vocabulary | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.vocab = vocab or cfg.vocabulary()
        if len(self.vocab) != cfg.vocab_size:
            raise ValueError(f"vocabulary has {len(self.vocab)} words, config expects {cfg.vocab_size}")
        self.encoder = Encoder(cfg)
        self.decoder = DecoderWithAttention(cfg.attention_dim, cfg.embed_dim, cfg.decoder_dim,
                                            cfg.vocab_size, cfg.encoder_dim, cfg.dropout)

    def encode(self, images: Tensor) -> Tensor:
        """images [B, 3, H, W] -> features [B, P, C]."""
        return DecoderWithAttention._flat(self.encoder(images))


# ----------------------------------------------------------------- graphs for export
class _InitGraph(nn.Module):
    def __init__(self, decoder: DecoderWithAttention) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.decoder.init_state(features)


class _StepGraph(nn.Module):
    def __init__(self, decoder: DecoderWithAttention) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, features: Tensor, att1: Tensor, prev_word: Tensor, h: Tensor, c: Tensor):
        return self.decoder.step(features, att1, prev_word, h, c)


def _example_image(model: CaptionModel, cfg: CaptionerConfig, batch: int, gen: torch.Generator) -> dict[str, Tensor]:
    return {"image": torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=gen)}


def _example_features(model: CaptionModel, cfg: CaptionerConfig, batch: int, gen: torch.Generator) -> dict[str, Tensor]:
    with torch.no_grad():
        return {"features": model.encode(_example_image(model, cfg, batch, gen)["image"])}


def _example_step(model: CaptionModel, cfg: CaptionerConfig, batch: int, gen: torch.Generator) -> dict[str, Tensor]:
    feats = _example_features(model, cfg, batch, gen)["features"]
    with torch.no_grad():
        h, c, att1 = model.decoder.init_state(feats)
    prev = torch.randint(0, cfg.vocab_size, (batch,), generator=gen, dtype=torch.int64)
    return {"features": feats, "att1": att1, "prev_word": prev, "h": h, "c": c}


def _preprocessing(cfg: CaptionerConfig) -> dict:
    return {"kind": "image", "image_size": cfg.image_size, "resize": "bilinear",
            "scale": 1.0 / 255.0, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


# Graph names, inputs/outputs, dynamic axes and the description: the catalog in mmedge.models.zoo.
SPEC = register(
    "captioner",
    configs=CONFIGS,
    build=lambda cfg: CaptionModel(cfg),
    graphs={
        "encoder": (lambda m: m.encoder, _example_image),
        "decoder_init": (lambda m: _InitGraph(m.decoder), _example_features),
        "decoder_step": (lambda m: _StepGraph(m.decoder), _example_step),
    },
    preprocessing=_preprocessing,
    weights={"demo": "captioner-demo.pt"},
)

"""The PyTorch reference captioner behind the runtime `Captioner`'s `caption()` interface.

It preprocesses with the runtime's own `preprocess_image` and decodes with
`mmedge.models.decoding.caption_images`, so the reference and an exported
artifact are scored by the same code on the same inputs: by the trainer's
validation (`models/train_captioner.py`) and by `mmedge eval captioner` without
`--artifact` (`calibration/eval_caption.py`). Torch and the model zoo are imported only when
used, so importing this module (and the evaluators that name it) needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from mmedge.runtime.decode import DEFAULT_MAX_LEN
from mmedge.runtime.image import ImageLike, preprocess_image
from mmedge.runtime.vocab import Vocabulary


@dataclass
class TorchCaption:
    caption: str
    tokens: list[int]
    score: float
    finished: bool


class TorchCaptioner:
    """The PyTorch reference behind the runtime Captioner's `caption()` interface."""

    source = "pytorch"

    def __init__(self, model: Any, preprocessing: dict[str, Any] | None = None) -> None:
        if preprocessing is None:
            from mmedge.models import zoo

            preprocessing = zoo.get("captioner").preprocessing(model.config)
        self.model = model.eval()
        self.vocab: Vocabulary = model.vocab
        self.preprocessing = preprocessing

    @classmethod
    def from_zoo(cls, config: str = "demo") -> "TorchCaptioner":
        from mmedge.models import zoo

        return cls(zoo.get("captioner").create(config))

    def preprocess(self, images: Sequence[ImageLike]) -> np.ndarray:
        return np.stack([preprocess_image(im, self.preprocessing, f"image {i}") for i, im in enumerate(images)])

    def caption(self, images: Sequence[ImageLike] | ImageLike, beam: int = 3, max_len: int = DEFAULT_MAX_LEN,
                length_norm: bool = False) -> list[TorchCaption]:
        import torch

        from mmedge.models.decoding import caption_images

        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        batch = torch.from_numpy(self.preprocess(list(images)))
        hyps = caption_images(self.model, batch, beam, max_len, length_norm)
        return [TorchCaption(self.vocab.decode(h.tokens), list(h.tokens), h.score, h.finished) for h in hyps]

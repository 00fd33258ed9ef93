"""Write the golden reference outputs: `python tests/golden/make_golden.py`.

For every registered model, its `tiny` config is built with seed 0; each graph
is fed its seeded example inputs (batch 2) and inputs and outputs are stored as
`<graph>.<name>` in `tests/golden/<model>-tiny.npz`. For the captioner the
reference beam search (k = 1, 3, 5) on the example images is stored too, as
`beam<k>.tokens` (padded with -1), `beam<k>.scores` and `beam<k>.finished`.

Every backend's parity test replays these files; `test_golden.py` checks that the
PyTorch models still produce them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from mmedge.models import zoo

HERE = Path(__file__).resolve().parent
SEED = 0
BATCH = 2
BEAM_IMAGES = 4
BEAMS = (1, 3, 5)
MAX_LEN = 12


def reference_model(name: str, config: str = "tiny") -> torch.nn.Module:
    """The seeded model behind the goldens.

    The tutorial's initialisation makes a random decoder's word distributions
    almost uniform, so beam search would only break near-ties. The tiny
    captioner's decoder weights are redrawn from N(0, 0.8) and `<end>` gets a
    bias of +1: its beams then make real decisions, and on the golden images
    some end early and some run to `MAX_LEN`.
    """
    model = zoo.get(name).create(config, seed=SEED)
    if name == "captioner":
        gen = torch.Generator().manual_seed(SEED + 1)
        with torch.no_grad():
            for p in model.decoder.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.8)
            model.decoder.fc.bias[model.vocab.end] += 1.0
    return model


def golden_outputs(name: str, config: str = "tiny") -> dict[str, np.ndarray]:
    spec = zoo.get(name)
    model = reference_model(name, config)
    cfg = spec.config(config)
    out: dict[str, np.ndarray] = {}
    for graph in spec.graphs:
        gen = torch.Generator().manual_seed(SEED)
        feeds = graph.example(model, cfg, BATCH, gen)
        with torch.no_grad():
            res = graph.wrap(model)(*feeds.values())
        res = res if isinstance(res, tuple) else (res,)
        for k, v in feeds.items():
            out[f"{graph.name}.{k}"] = v.numpy()
        for k, v in zip(graph.outputs, res):
            out[f"{graph.name}.{k}"] = v.numpy()
    if spec.pipeline == "captioner":
        from mmedge.models.decoding import caption_images

        gen = torch.Generator().manual_seed(SEED)
        images = torch.randn(BEAM_IMAGES, 3, cfg.image_size, cfg.image_size, generator=gen)
        out["beam.image"] = images.numpy()
        for k in BEAMS:
            hyps = caption_images(model, images, beam=k, max_len=MAX_LEN)
            tokens = np.full((len(hyps), MAX_LEN), -1, dtype=np.int64)
            for i, h in enumerate(hyps):
                tokens[i, : len(h.tokens)] = h.tokens
            out[f"beam{k}.tokens"] = tokens
            out[f"beam{k}.scores"] = np.array([h.score for h in hyps], dtype=np.float64)
            out[f"beam{k}.finished"] = np.array([h.finished for h in hyps])
    return out


def golden_path(name: str, config: str = "tiny") -> Path:
    return HERE / f"{name}-{config}.npz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=None, help="models to write (default: all)")
    args = ap.parse_args()
    for name in args.models or zoo.names():
        path = golden_path(name)
        np.savez_compressed(path, **golden_outputs(name))
        print(f"wrote {path.relative_to(HERE.parent.parent)} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

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
MAX_LEN = 12  # decoding steps, <end> included (the meaning of max_len everywhere)


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


def golden_inputs(name: str, config: str = "tiny") -> dict[str, np.ndarray]:
    """The seeded inputs of every graph (`<graph>.<input>`) and, for captioners, `beam.image`."""
    spec = zoo.get(name)
    model = reference_model(name, config)
    cfg = spec.config(config)
    out: dict[str, np.ndarray] = {}
    for graph in spec.graphs:
        gen = torch.Generator().manual_seed(SEED)
        for k, v in graph.example(model, cfg, BATCH, gen).items():
            out[f"{graph.name}.{k}"] = v.numpy()
    if spec.pipeline == "captioner":
        gen = torch.Generator().manual_seed(SEED)
        out["beam.image"] = torch.randn(BEAM_IMAGES, 3, cfg.image_size, cfg.image_size, generator=gen).numpy()
    return out


def replay(name: str, inputs: dict[str, np.ndarray], config: str = "tiny") -> dict[str, np.ndarray]:
    """The reference model's outputs (and beam searches) on the given inputs.

    Outputs are computed from `inputs` as given, not from freshly drawn ones, so a golden
    test compares the model's kernels alone: the inputs' own reproduction (an STFT's
    rounding differs between CPUs) is checked separately, where it is well conditioned.
    """
    spec = zoo.get(name)
    model = reference_model(name, config)
    out: dict[str, np.ndarray] = {}
    for graph in spec.graphs:
        feeds = [torch.from_numpy(inputs[f"{graph.name}.{k}"]) for k in graph.inputs]
        with torch.no_grad():
            res = graph.wrap(model)(*feeds)
        res = res if isinstance(res, tuple) else (res,)
        for k, v in zip(graph.outputs, res):
            out[f"{graph.name}.{k}"] = v.numpy()
    if spec.pipeline == "captioner":
        from mmedge.models.decoding import caption_images

        images = torch.from_numpy(inputs["beam.image"])
        for k in BEAMS:
            hyps = caption_images(model, images, beam=k, max_len=MAX_LEN)
            tokens = np.full((len(hyps), MAX_LEN), -1, dtype=np.int64)
            for i, h in enumerate(hyps):
                tokens[i, : len(h.tokens)] = h.tokens
            out[f"beam{k}.tokens"] = tokens
            out[f"beam{k}.scores"] = np.array([h.score for h in hyps], dtype=np.float64)
            out[f"beam{k}.finished"] = np.array([h.finished for h in hyps])
    return out


def golden_outputs(name: str, config: str = "tiny") -> dict[str, np.ndarray]:
    """Everything a golden file holds: the seeded inputs and the reference's outputs on them."""
    inputs = golden_inputs(name, config)
    return {**inputs, **replay(name, inputs, config)}


def well_conditioned(name: str, key: str, value: np.ndarray, config: str = "tiny") -> np.ndarray:
    """`value` of golden entry `key` in the view where comparing it is well conditioned.

    A spectrogram input is the STFT front-end's output after power-law or log compression;
    its float32 rounding differs between CPUs and the compression multiplies that near
    zero, so it is compared before the compression (runtime.audio.linear_view). Every other
    entry is compared as stored.
    """
    from mmedge.runtime.audio import linear_view

    spec = zoo.get(name)
    params = spec.preprocessing(spec.config(config))
    graph, _, tensor = key.partition(".")
    if spec.pipeline == "audio" and tensor == spec.graph(graph).inputs[0] and params.get("kind") != "waveform":
        return linear_view(value, params)
    return value


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

"""Graph roles and per-graph hints: the one place that names the captioner's graphs.

Exporters, calibration recipes, sessions and the CLI all need to know which graph is
the encoder, which ones are decoders (weight-only int8 when a recipe asks for a dynamic
decoder, MatMul/Gemm-only static int8 otherwise) and which one runs once per decoding
step. Exporters write each graph's hints into its entry of the artifact's manifest (from
the model catalog's GraphSpec.hints); recipes and runtime code read them back from there
(`GraphEntry.hints`). A manifest of format_version 1 has no hints: reading one fills them
in from the graph's name with `hints_for`. Torch-free: the lowest layer that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mmedge.runtime.manifest_fields import OMIT_DEFAULT, JsonFields, spec

ENCODER = "encoder"
DECODER_INIT = "decoder_init"
DECODER_STEP = "decoder_step"
DECODER_GRAPHS = (DECODER_INIT, DECODER_STEP)
CAPTIONER_GRAPHS = (ENCODER, DECODER_INIT, DECODER_STEP)

# Outputs int8 parity reports but does not judge (`runtime/parity.py`): the attention weights, a
# softmax over the grid's cells, nearly one-hot on the random test vectors, where int8 rounding of
# the attention logits moves a peak to a neighbouring cell. Cosine then reads a good build as broken
# (the demo captioner's ONNX Runtime int8 build: alpha cosine 0.16 while beam search on the same
# vectors gives identical captions and BLEU-4 on real scenes moves 0.6 points). Every output the
# captions depend on is still judged.
INT8_REPORTED_ONLY: dict[str, tuple[str, ...]] = {DECODER_STEP: ("alpha",)}

# op types a static int8 recipe quantizes in a decoder: the recurrent state stays in float
DECODER_QUANTIZE_OPS = ("MatMul", "Gemm")


@dataclass(frozen=True)
class GraphHints(JsonFields):
    """What recipes and exporters may assume of one graph; in the manifest, the graph entry's
    `hints` object (only the fields that differ from the defaults; no object when none do).

    `decoder`: a decoder graph (weight-only int8 under a dynamic-decoder recipe; its row axis
    is images x beams). `step`: runs once per decoding step, its state fed back (stateful).
    `quantize_ops`: op types a static int8 recipe quantizes (None: the backend's default).
    """

    SCHEMA_NAME: ClassVar[str] = "hints"
    SCHEMA_KEYWORDS: ClassVar[dict] = {
        "description": "what recipes may assume of the graph (format_version 2; absent: none of these)"}

    decoder: bool = spec(False, omit=OMIT_DEFAULT,
                         title="a decoder graph: its rows are images x beams; weight-only int8 under a dynamic "
                               "decoder")
    step: bool = spec(False, omit=OMIT_DEFAULT, title="runs once per decoding step, its state fed back (stateful)")
    quantize_ops: tuple[str, ...] | None = spec(
        None, omit=OMIT_DEFAULT, items={"ref": "name"}, minItems=1, maxItems=64,
        title="the only op types a static int8 recipe quantizes (absent: the backend's default)")


NO_HINTS = GraphHints()
_BY_ROLE = {
    DECODER_INIT: GraphHints(decoder=True, quantize_ops=DECODER_QUANTIZE_OPS),
    DECODER_STEP: GraphHints(decoder=True, step=True, quantize_ops=DECODER_QUANTIZE_OPS),
}


def hints_for(name: str) -> GraphHints:
    """The hints of the graph named `name` (its role): what an older manifest without hints implies."""
    return _BY_ROLE.get(name, NO_HINTS)


def is_decoder(name: str) -> bool:
    """Whether the graph named `name` is one of the captioner's decoder graphs."""
    return hints_for(name).decoder

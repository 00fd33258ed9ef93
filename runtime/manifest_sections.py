"""The manifest's typed sections: `extra`, its calibration record, preprocessing, a graph's cost.

`ManifestExtra` names every key mmedge writes under the manifest's `extra` (the fields the
runtime, packagers and reports need beyond the core ones); keys it does not know (written by
a newer mmedge or another tool) are kept as read in `other` and written back unchanged. It
also reads like the JSON object it stands for (`extra["calibration"]["method"]`,
`"int8_layout" in extra`), so code that only looks at the document keeps working; new code
uses the attributes. `Preprocessing` and `GraphCostFields` describe objects the manifest keeps
as plain dicts (the image and audio front-ends, runtime/graph_cost.py) for the schema.
Torch-free, numpy-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Iterator

from mmedge.runtime.manifest_fields import OMIT_NONE, JsonFields, fields_to_json, from_json, spec, to_json

TEST_VECTORS = "test_vectors.npz"  # an artifact's test vectors, where its manifest names no other file
INT8_LAYOUT_TENSORRT = "tensorrt"  # extra.int8_layout of int8 ONNX artifacts in TensorRT's Q/DQ layout


@dataclass
class Calibration(JsonFields):
    """How an int8 artifact was calibrated (`extra.calibration`)."""

    SCHEMA_NAME: ClassVar[str] = "calibration"
    SCHEMA_KEYWORDS: ClassVar[dict] = {"description": "how the int8 build was calibrated"}

    data: str = spec(maxLength=1000, title="the calibration samples, in words (count, source, split, seed)")
    digest: str = spec(ref="sha256", title="sha256 of the calibration feeds (the recipes' cache key)")
    method: str = spec(ref="name", title="range estimation: minmax | entropy | percentile")
    per_channel: bool = spec(title="per-channel weight scales")
    keep_float: list[str] = spec(items={"maxLength": 1000}, maxItems=1000,
                                 title="op types or node names kept in float")
    dynamic_decoder: bool = spec(title="the captioner's decoder graphs got weight-only int8")
    accuracy_control: dict[str, Any] | None = spec(
        None, omit=OMIT_NONE, maxProperties=100,
        title="NNCF accuracy control: metric of fp32 and int8, maximum drop, per-graph changes")


@dataclass
class ManifestExtra(JsonFields, Mapping):
    """`extra`: every key mmedge writes there, typed. Unset (None) keys are not written."""

    SCHEMA_NAME: ClassVar[str] = "extra"
    SCHEMA_OPEN: ClassVar[bool] = True  # keys of newer writers pass (and are kept in `other`)
    SCHEMA_KEYWORDS: ClassVar[dict] = {"maxProperties": 1000}

    test_vectors: str | None = spec(
        None, omit=OMIT_NONE, ref="path",
        title="the .npz of inputs and reference outputs of every graph (absent: test_vectors.npz if present)")
    min_samples: int | None = spec(None, omit=OMIT_NONE, minimum=0, maximum=115200000,
                                   title="the shortest waveform the model takes, in samples")
    class_output: str | None = spec(None, omit=OMIT_NONE, ref="name",
                                    title="the output of the first graph that holds class logits")
    calibration: Calibration | None = spec(None, omit=OMIT_NONE)
    int8_report: dict[str, Any] | None = spec(None, omit=OMIT_NONE,
                                              title="int8 against fp32: task metrics, agreement, speed")
    int8_layout: str | None = spec(None, omit=OMIT_NONE, ref="name",
                                   title="'tensorrt': Q/DQ graphs in TensorRT's layout, with calibration caches")
    tensorrt_calibration_cache: dict[str, str] | None = spec(
        None, omit=OMIT_NONE, keys={"ref": "name"}, values={"ref": "path"}, maxProperties=64,
        title="graph -> its TensorRT calibration cache file (int8_layout 'tensorrt')")
    tensorrt: dict[str, Any] | None = spec(None, omit=OMIT_NONE,
                                           title="the engines' build record (TensorRT version, GPU, settings)")
    converted_from: dict[str, Any] | None = spec(
        None, omit=OMIT_NONE, title="the artifact this one was converted from (format, folder, graph sha256s)")
    precision_policy: dict[str, Any] | None = spec(None, omit=OMIT_NONE,
                                                   title="why --precision auto chose this build for the CPU")
    precision_mix: dict[str, Any] | None = spec(None, omit=OMIT_NONE,
                                                title="precision per graph group of a mixed build")
    other: dict[str, Any] = spec(default_factory=dict, json=False)  # keys this mmedge does not know, as read

    def __post_init__(self) -> None:
        if isinstance(self.calibration, Mapping) and not isinstance(self.calibration, Calibration):
            self.calibration = Calibration.from_json(self.calibration)
        clash = sorted(set(self.other) & set(self.names()))
        if clash:
            raise TypeError(f"ManifestExtra.other may not hold named fields ({', '.join(clash)})")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The keys this mmedge knows (written from attributes)."""
        return tuple(f.name for f in fields(cls) if f.name != "other")

    @property
    def vectors_file(self) -> str:
        """The test vectors' file, relative to the artifact: `test_vectors`, else test_vectors.npz."""
        return self.test_vectors or TEST_VECTORS

    def to_json(self) -> dict[str, Any]:
        return {**to_json(self.other), **fields_to_json(self)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "ManifestExtra":
        known = set(cls.names())
        extra = from_json(cls, {k: v for k, v in doc.items() if k in known})
        extra.other = {k: to_json(v) for k, v in doc.items() if k not in known}
        return extra

    def merged(self, more: Mapping[str, Any] | None) -> "ManifestExtra":
        """A copy with the keys of `more` (a ManifestExtra or its JSON) set over these."""
        return ManifestExtra.from_json({**self.to_json(), **to_json(dict(more or {}))})

    # the read-only view of the JSON object (extra["key"], "key" in extra, dict(extra))
    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())


def _param(**schema: Any) -> Any:
    """An optional front-end parameter (absent unless the front-end takes it)."""
    return spec(None, omit=OMIT_NONE, **schema)


@dataclass
class Preprocessing(JsonFields):
    """`preprocessing`: the front-end's parameters (the manifest keeps them as a dict, as
    runtime/image.py and runtime/audio.py read them); what the schema checks of each."""

    SCHEMA_NAME: ClassVar[str] = "preprocessing"
    SCHEMA_OPEN: ClassVar[bool] = True  # a front-end's own parameters (log_mel: fmin, htk, ...) pass
    SCHEMA_KEYWORDS: ClassVar[dict] = {"maxProperties": 100, "allOf": [
        {"if": {"properties": {"kind": {"const": "image"}}, "required": ["kind"]},
         "then": {"required": ["image_size", "mean", "std"]}},
        {"if": {"properties": {"kind": {"enum": ["stft_powerlaw", "waveform"]}}, "required": ["kind"]},
         "then": {"required": ["sample_rate"]}},
        {"if": {"properties": {"kind": {"const": "stft_powerlaw"}}, "required": ["kind"]},
         "then": {"required": ["n_fft", "hop_length", "win_length"]}},
    ]}

    kind: str = spec(ref="name", title="image | image_depth | waveform | stft_powerlaw | log_mel")
    image_size: int | None = _param(minimum=1, maximum=16384, title="square input side, pixels")
    mean: list[float] | None = _param(minItems=1, maxItems=4, items={"minimum": -1000, "maximum": 1000},
                                      title="per-channel mean, subtracted after scaling")
    std: list[float] | None = _param(minItems=1, maxItems=4, items={"exclusiveMinimum": 0, "maximum": 1000},
                                     title="per-channel standard deviation, divided by")
    scale: float | None = _param(exclusiveMinimum=0, maximum=1000, title="pixel scale (default 1/255)")
    resize: str | None = _param(maxLength=32, title="resampling filter")
    sample_rate: int | None = _param(minimum=1, maximum=384000, title="Hz")
    n_fft: int | None = _param(minimum=2, maximum=65536)
    win_length: int | None = _param(minimum=1, maximum=65536)
    hop_length: int | None = _param(minimum=1, maximum=65536)
    n_mels: int | None = _param(minimum=1, maximum=4096)
    power: float | None = _param(exclusiveMinimum=0, maximum=16, title="power-law exponent")
    center: bool | None = _param()
    window: str | None = _param(maxLength=32)
    pad_mode: str | None = _param(maxLength=32)
    value_range: list[float] | None = _param(minItems=2, maxItems=2, title="[low, high] of the input")


@dataclass
class GraphCostFields(JsonFields):
    """A graph entry's optional `cost` as runtime/graph_cost.py's GraphCost writes it."""

    SCHEMA_NAME: ClassVar[str] = "cost"
    SCHEMA_KEYWORDS: ClassVar[dict] = {
        "description": "FLOPs and weight bytes of one run at batch 1 (mmedge/runtime/graph_cost.py); optional"}

    flops: int = spec(minimum=0)
    weight_bytes: int = spec(minimum=0)
    elementwise: int = spec(minimum=0, required=False)
    inputs: dict[str, list[int]] = spec(keys={"ref": "name"}, maxProperties=64, required=False,
                                        values={"maxItems": 8, "items": {"type": "integer", "minimum": 0}})
    by_op: dict[str, int] = spec(default_factory=dict, keys={"ref": "name"}, maxProperties=256,
                                 values={"minimum": 0})
    batch: int = spec(1, minimum=1, maximum=16777216, required=True)
    counter: str = spec("", maxLength=64)

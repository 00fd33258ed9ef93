"""OpenVINO INT8 through NNCF, from the fp32 ONNX artifact and the shared calibration set.

Every graph of the fp32 ONNX artifact is read by OpenVINO (`ov.convert_model`)
and quantized with `nncf.quantize` on an `nncf.Dataset` over the graph's
calibration feeds (calibration/data.py: the same feeds every recipe gets; for
the captioner's `decoder_step`, the inputs beam search really produced):

- `QuantConfig.keep_float` (op types or node names) -> `nncf.IgnoredScope`
  (the softmaxes stay in float by default);
- `QuantConfig.ops_for(pipeline, graph)` (ONNX op types to quantize, e.g. the
  decoder's MatMul/Gemm, the refocus network's Conv) -> every other op type of
  the graph goes into the ignored scope, so only those ops get quantizers;
- `QuantConfig.method`: minmax -> NNCF's MINMAX range estimator (global min/max,
  as ONNX Runtime's minmax), percentile -> MEAN_QUANTILE with the configured
  percentile, entropy -> NNCF's HISTOGRAM estimator (error-minimising ranges
  from histograms; NNCF has no KL-entropy calibrator);
- `QuantConfig.per_channel` -> per-channel (or per-tensor) weight scales;
- `QuantConfig.dynamic_decoder`: the decoder graphs get weight-only int8
  (`nncf.compress_weights`, INT8_ASYM, per output channel) instead of static
  quantization, restricted to the same op types.

With the OpenVINO releases known to need it (OUTPUT_CHECK_RELEASES, see
`repair` for the upstream reports), every statically quantized graph is then run
against its float version on calibration feeds (in a child process with a
timeout): activation quantizers with which OpenVINO's CPU plugin computes wrong
results or hangs are found by bisection and removed, with a warning.

Presets: `performance` (symmetric int8 weights and activations) for the CNNs;
`mixed` (asymmetric activations) for the decoder graphs, whose MatMul inputs
(hidden state, attention-weighted features) are not post-ReLU. Target device CPU.

Quantized IRs are cached on disk (`cache_dir(cfg)/ov-<key>.xml|.bin`) keyed by
the ONNX graph's sha256, the calibration data digest, the method and every
setting above, so re-exporting reuses them.

`quantize_with_accuracy_control()` is the accuracy-aware variant
(`nncf.quantize_with_accuracy_control`): give it held-out items and a task
metric computed on a Pipeline, and a maximum drop; NNCF reverts the most
harmful quantizers to float until the metric is within the drop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from mmedge.calibration.data import CalibrationSet, CalibSource, gather
from mmedge.calibration.recipes import (QuantConfig, QuantizeRequest, cache_dir, cache_key, calibration_record,
                                        register_recipe)
from mmedge.errors import ExportError, InputError
from mmedge.runtime.manifest import GraphEntry, Manifest, TensorSpec
from mmedge.runtime.session import Feeds, Session

# ONNX op type (QuantConfig's vocabulary) -> the OpenVINO op types it becomes
ONNX_TO_OV = {
    "MatMul": ("MatMul",), "Gemm": ("MatMul",), "Conv": ("Convolution", "GroupConvolution"),
    "ConvTranspose": ("ConvolutionBackpropData", "GroupConvolutionBackpropData"),
    "Softmax": ("Softmax",), "LogSoftmax": ("LogSoftmax",), "Gather": ("Gather",),
    "Add": ("Add",), "Mul": ("Multiply",), "MaxPool": ("MaxPool",), "AveragePool": ("AvgPool",),
    "ReduceMean": ("ReduceMean",), "Concat": ("Concat",),
}
STRUCTURAL = {"Parameter", "Constant", "Result"}
LOG = logging.getLogger("mmedge.calibration.openvino")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF logs progress bars and INFO lines; the export's log is ours."""
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        nncf_log.setLevel(level)


def _ov_types(onnx_types: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for t in onnx_types:
        out.update(ONNX_TO_OV.get(t, (t,)))  # an OpenVINO type name is accepted as is
    return out


def ignored_scope(model: Any, cfg: QuantConfig, ops: list[str] | None) -> Any:
    """keep_float (types or node names) + every op type outside `ops` -> nncf.IgnoredScope."""
    import nncf

    present = {op.get_type_name() for op in model.get_ordered_ops()} - STRUCTURAL
    names = {op.get_friendly_name() for op in model.get_ordered_ops()}
    keep_types = _ov_types([k for k in cfg.keep_float if k not in names]) & present
    keep_names = [k for k in cfg.keep_float if k in names]
    if ops is not None:
        keep_types |= present - _ov_types(ops)
    return nncf.IgnoredScope(names=sorted(keep_names), types=sorted(keep_types), validate=False)


def advanced_parameters(cfg: QuantConfig) -> Any:
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if cfg.method == "minmax":
        ranges = RangeEstimatorParametersSet.MINMAX
    elif cfg.method == "percentile":
        q = RangeEstimatorParametersSet.MEAN_QUANTILE
        prob = 1.0 - cfg.percentile / 100.0
        ranges = dataclasses.replace(q, min=dataclasses.replace(q.min, quantile_outlier_prob=prob),
                                     max=dataclasses.replace(q.max, quantile_outlier_prob=prob))
    else:  # entropy
        ranges = RangeEstimatorParametersSet.HISTOGRAM
    return AdvancedQuantizationParameters(
        activations_range_estimator_params=ranges,
        weights_quantization_params=QuantizationParameters(per_channel=cfg.per_channel))


def _settings(cfg: QuantConfig, pipeline: str, graph: str) -> str:
    from importlib import metadata

    return "|".join([graph, "openvino", metadata.version("nncf"), metadata.version("openvino"),
                     str(cfg.per_channel), ",".join(cfg.keep_float), str(cfg.dynamic_decoder),
                     ",".join(cfg.ops_for(pipeline, graph) or ["*"])])


def read_onnx(path: Path) -> Any:
    import openvino as ov

    try:
        with _quiet():
            return ov.convert_model(str(path))
    except Exception as e:
        raise ExportError(f"{path}: OpenVINO cannot read it: {_one_line(e)}") from e


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith("Exception from")]
    return (lines[0] if lines else e.__class__.__name__)[:300]


def quantize_model(model: Any, feeds: list[Feeds], cfg: QuantConfig, decoder: bool, ops: list[str] | None) -> Any:
    """One ov.Model -> its int8 version (static, or weight-only for decoders with dynamic_decoder)."""
    import nncf

    scope = ignored_scope(model, cfg, ops)
    with _quiet():
        if decoder and cfg.dynamic_decoder:
            return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=scope)
        if not feeds:
            raise ExportError("no calibration feeds")
        preset = nncf.QuantizationPreset.MIXED if decoder else nncf.QuantizationPreset.PERFORMANCE
        return nncf.quantize(model, nncf.Dataset(feeds), preset=preset, target_device=nncf.TargetDevice.CPU,
                             subset_size=len(feeds), ignored_scope=scope,
                             advanced_parameters=advanced_parameters(cfg))


# OpenVINO 2026.4.1's CPU plugin computed some int8 convolutions wrongly on a Xeon with AMX (1-D and
# 2-D convolutions with fewer than 32 input channels and kernels of 8 or more gave outputs far from
# the float result, and different results with 1 or 2 threads; SoundNet's conv2, 16->32 channels,
# kernel 32, lost most of its top-1), and hung on the full refocus network's int8 blur convolutions
# after the replicate padding. So every quantized graph is run against the float graph on
# calibration feeds; when an output's cosine falls below GRAPH_MIN_COSINE (quantization error alone
# stays far above it on every model here), the activation quantizer that breaks it is found by
# bisection over the quantizers in topological order and removed (that layer then runs in float
# with int8-compressed weights), until the graph passes. Each removal is logged. Reading
# intermediate outputs instead (add_outputs) is not an option: OpenVINO's int8 fusions return wrong
# values for them. Checks run in a child process with a timeout (a hang or a crash is a failed check).
#
# Upstream: the nearest report is openvinotoolkit/openvino#37577 (open): the CPU plugin crashes in
# JIT kernel code on the first inference of NNCF-int8 models with dynamic input dims on Intel AMX
# CPUs, reproduced with 2026.1.0, 2026.2.0 and 2026.3.0, never on AMD or pre-AMX Xeons (our graphs
# have dynamic axes too). No upstream report of the wrong results themselves was found; oneDNN's
# AMX int8 convolution had a silent wrong-result bug of this kind fixed in uxlfoundation/oneDNN#5494
# (backported to oneDNN 3.13 in #5568), for strided kernels. Hence the version gate: the check runs
# for the OpenVINO releases known to need it, 2026.1 (the first #37577 names) to 2026.4 (measured
# here); re-measure with tests/test_openvino.py::test_broken_int8_layers_are_kept_in_float on an
# AMX Xeon before widening the range to a newer release.
OUTPUT_CHECK_RELEASES = ((2026, 1), (2026, 4))  # first and last (year, release) that need the check
GRAPH_MIN_COSINE = 0.98
MAX_REMOVED = 8
N_CHECK_FEEDS = 2
# int8 checks run in a child process: an OpenVINO hang must not hang the export
CHECK_TIMEOUT_S = 10.0
CHECK_TIMEOUT_FACTOR = 20.0  # x the float graph's time on the same feeds


def _cosines(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    worst = 1.0
    for x, y in zip(a, b):
        x, y = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
        nx, ny = np.linalg.norm(x), np.linalg.norm(y)
        cos = 1.0 if nx == 0 and ny == 0 else float(x @ y / max(nx * ny, 1e-300))
        worst = min(worst, cos if np.isfinite(cos) else -1.0)
    return worst


def _outputs(model: Any, feeds: list[Feeds]) -> list[np.ndarray]:
    from mmedge.runtime.backends.openvino import core

    compiled = core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    out = []
    for f in feeds:
        res = request.infer(f, share_outputs=False)
        out += [np.asarray(res[o]) for o in compiled.outputs]
    return out


def _outputs_isolated(model: Any, feeds: list[Feeds], timeout: float) -> list[np.ndarray] | None:
    """`_outputs` in a child process: None when it crashes or runs past `timeout` seconds (OpenVINO's
    CPU plugin hung forever in int8 inference of the refocus network's blur convolutions here)."""
    import subprocess
    import sys
    import tempfile

    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="mmedge-ov-check-") as tmp:
        ov.save_model(model, str(Path(tmp) / "m.xml"), compress_to_fp16=False)
        np.savez(Path(tmp) / "feeds.npz", **{f"{i}.{k}": v for i, f in enumerate(feeds) for k, v in f.items()})
        try:
            res = subprocess.run([sys.executable, "-m", "mmedge.calibration.openvino", "--check-run", tmp],
                                 capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if res.returncode != 0 or not (Path(tmp) / "out.npz").is_file():
            return None
        with np.load(Path(tmp) / "out.npz") as out:
            return [out[str(i)] for i in range(len(out.files))]


def _check_run(folder: str) -> None:
    """Child side of `_outputs_isolated`."""
    import openvino as ov

    with np.load(Path(folder) / "feeds.npz") as data:
        feeds: dict[int, Feeds] = {}
        for key in data.files:
            i, name = key.split(".", 1)
            feeds.setdefault(int(i), {})[name] = data[key]
    model = ov.Core().read_model(str(Path(folder) / "m.xml"))
    out = _outputs(model, [feeds[i] for i in sorted(feeds)])
    np.savez(Path(folder) / "out.npz", **{str(i): v for i, v in enumerate(out)})


def activation_quantizers(model: Any) -> list[str]:
    """Names of the FakeQuantize nodes on activations (not on constant weights), in topological order."""
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
            and op.input_value(0).get_node().get_type_name() != "Constant"]


def without_quantizers(model: Any, names: Sequence[str]) -> Any:
    """A copy of `model` with the FakeQuantize nodes `names` bypassed (their input passed through)."""
    m = model.clone()
    drop = set(names)
    for op in m.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize" and op.get_friendly_name() in drop:
            op.output(0).replace(op.input_value(0))
    m.validate_nodes_and_infer_types()
    return m


def repair(fp32: Any, int8: Any, feeds: list[Feeds], graph: str) -> tuple[Any, list[str]]:
    """Remove the activation quantizers that make `int8` compute wrong results, or hang (see above)."""
    import time

    feeds = feeds[:N_CHECK_FEEDS]
    t0 = time.perf_counter()
    ref = _outputs(fp32, feeds)
    timeout = CHECK_TIMEOUT_S + CHECK_TIMEOUT_FACTOR * (time.perf_counter() - t0)
    removed: list[str] = []
    fqs = activation_quantizers(int8)

    def score(keep: int) -> float:  # only the first `keep` quantizers (minus the removed ones) active
        drop = removed + [n for n in fqs[keep:] if n not in removed]
        got = _outputs_isolated(without_quantizers(int8, drop) if drop else int8, feeds, timeout)
        return -1.0 if got is None else _cosines(ref, got)

    def ok(keep: int) -> bool:
        return score(keep) >= GRAPH_MIN_COSINE

    full = score(len(fqs))
    if full >= GRAPH_MIN_COSINE:
        return int8, removed
    floor = score(0)  # every activation in float: what weight quantization alone costs
    if floor < GRAPH_MIN_COSINE:
        if floor == -1.0:
            raise ExportError(f"graph {graph!r}: OpenVINO cannot run it even with int8 weights only on this "
                              f"CPU (crashed or ran past {timeout:.0f} s)")
        # not a broken int8 kernel: this graph is sensitive to int8 weights (e.g. random weights
        # saturating attention); keep the build, the accuracy report and parity judge it
        LOG.warning(f"{graph}: int8 outputs differ from float (min cosine {full:.3f} on calibration data; "
                    f"{floor:.3f} with int8 weights only); check the accuracy report")
        return int8, removed
    while not ok(len(fqs)):
        if len(removed) >= MAX_REMOVED:
            raise ExportError(f"graph {graph!r} computes wrong results in int8 on this OpenVINO/CPU even without "
                              f"{len(removed)} activation quantizers ({', '.join(removed)}); keep it in float "
                              f"(--keep-float) or use another backend")
        lo, hi = 0, len(fqs)  # prefix lo passes, prefix hi fails
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        culprit = fqs[hi - 1]
        removed.append(culprit)
        LOG.warning(f"{graph}: OpenVINO computes wrong results (or hangs) with int8 quantizer {culprit} on this "
                    f"CPU; that layer runs in float")
    return without_quantizers(int8, removed), removed


def openvino_release(version: str | None = None) -> tuple[int, int] | None:
    """(year, release) of an OpenVINO version string ("2026.4.1-22982-..." -> (2026, 4)); None if unreadable.
    Default: the installed package's."""
    if version is None:
        from importlib import metadata

        try:
            version = metadata.version("openvino")
        except metadata.PackageNotFoundError:
            return None
    m = re.match(r"\s*(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def needs_output_check(version: str | None = None) -> bool:
    """Whether int8 graphs are checked against float (`repair`) with this OpenVINO: the releases in
    OUTPUT_CHECK_RELEASES, the ones known to compute wrong results or crash (see above)."""
    release = openvino_release(version)
    first, last = OUTPUT_CHECK_RELEASES
    return release is not None and first <= release <= last


def quantize_checked(onnx_file: Path, feeds: list[Feeds], cfg: QuantConfig, decoder: bool,
                     ops: list[str] | None, graph: str) -> Any:
    """quantize_model + the output check above where the OpenVINO release needs it (static
    quantization; weight-only has no activation quantizers)."""
    q = quantize_model(read_onnx(onnx_file), feeds, cfg, decoder, ops)
    if (decoder and cfg.dynamic_decoder) or not needs_output_check():
        return q
    return repair(read_onnx(onnx_file), q, feeds, graph)[0]


def _save(model: Any, path: Path) -> None:
    import openvino as ov

    from mmedge.export.openvino import canonical_names

    canonical_names(model, path.stem)  # byte-identical IR from run to run
    ov.save_model(model, str(path), compress_to_fp16=False)


def _cached(fp32_dir: Path, manifest: Manifest, g: GraphEntry, calib: CalibrationSet, cfg: QuantConfig,
            out: Path, build: Callable[[], Any]) -> None:
    """Write the int8 IR of graph `g` at `out` (.xml + .bin), from the cache when possible."""
    key = cache_key(manifest.files[g.file], calib, cfg, _settings(cfg, manifest.pipeline, g.name))
    cached = cache_dir(cfg) / f"ov-{key}.xml"
    if cached.is_file() and cached.with_suffix(".bin").is_file():
        shutil.copyfile(cached, out)
        shutil.copyfile(cached.with_suffix(".bin"), out.with_suffix(".bin"))
        return
    _save(build(), out)
    try:  # the cache is an optimisation: a read-only cache dir must not fail the export
        cached.parent.mkdir(parents=True, exist_ok=True)
        tag = f"tmp-{os.getpid()}-{np.random.randint(1 << 30)}"
        for ext in (".bin", ".xml"):  # the .xml last: an .xml in the cache means both are complete
            tmp = cached.parent / f"{cached.stem}.{tag}{ext}"
            shutil.copyfile(out.with_suffix(ext), tmp)
            tmp.replace(cached.with_suffix(ext))
    except OSError:
        pass


@register_recipe("openvino")
def quantize_openvino_artifact(req: QuantizeRequest) -> list[GraphEntry]:
    """Write an int8 IR (`<graph>.xml/.bin`) of every graph of an fp32 ONNX artifact into `req.dest`."""
    fp32_dir, manifest, calib, dest, cfg = req.fp32_dir, req.manifest, req.calib, req.dest, req.cfg
    entries = []
    for g in manifest.graphs:
        feeds = calib.feeds.get(g.name)
        decoder = g.hints.decoder
        if not feeds and not (decoder and cfg.dynamic_decoder):
            raise ExportError(f"no calibration feeds for graph {g.name!r}")
        out = dest / f"{g.name}.xml"
        ops = cfg.ops_for(manifest.pipeline, g.name)
        try:
            _cached(fp32_dir, manifest, g, calib, cfg, out,
                    lambda: quantize_checked(fp32_dir / g.file, feeds or [], cfg, decoder, ops, g.name))
        except ExportError as e:
            raise ExportError(f"OpenVINO int8 quantization of graph {g.name!r} failed: {e}") from e
        except Exception as e:  # NNCF / OpenVINO internals: one line naming the graph
            raise ExportError(f"OpenVINO int8 quantization of graph {g.name!r} failed: {_one_line(e)}") from e
        entries.append(dataclasses.replace(g, file=out.name))
    return entries


# ----------------------------------------------------------------------------- accuracy control
class CompiledSession(Session):
    """A Session over an already compiled OpenVINO model (what NNCF hands to a validation function)."""

    backend = "openvino"

    def __init__(self, compiled: Any, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
        super().__init__(path, inputs, outputs)
        self.request = compiled.create_infer_request()
        self._ports = [(t.name, compiled.output(t.name)) for t in outputs]

    def _run(self, feeds: Feeds) -> Feeds:
        res = self.request.infer(self._all_feeds(feeds), share_outputs=False)
        return {name: res[port] for name, port in self._ports}


def quantize_with_accuracy_control(
    fp32_dir: str | Path, dest: str | Path, validation: Sequence[Any],
    metric: Callable[[Any, Sequence[Any]], float], *, max_drop: float = 0.01, drop_type: str = "absolute",
    calib: CalibSource | CalibrationSet | None = None, cfg: QuantConfig | None = None,
    graphs: Sequence[str] | None = None, max_num_iterations: int = 20,
) -> Path:
    """INT8 OpenVINO artifact at `dest` whose task metric stays within `max_drop` of fp32.

    - `fp32_dir`: an fp32 ONNX artifact (as `mmedge export MODEL --format onnx` writes it).
    - `validation`: held-out items, anything `metric` understands (e.g. (wav path, label) pairs).
    - `metric(pipeline, items) -> float`: higher is better, computed with the mmedge Pipeline it is
      given (e.g. top-1 of `pipeline.embed(...)`, BLEU-4 of `pipeline.caption(...)`). NNCF calls it
      with the fp32 model, with candidates, and with single items to rank them; the graph being
      quantized runs in OpenVINO (f32), the artifact's other graphs in fp32.
    - `max_drop` / `drop_type` ("absolute" | "relative"): passed to
      `nncf.quantize_with_accuracy_control`, which quantizes, validates, and reverts the quantizers
      that cost most until the drop is within bounds (or `max_num_iterations` reverts are spent).
    - `calib`: a CalibrationSet, or a CalibSource to gather one through the fp32 artifact
      (default: CalibSource(), the demo generator); `cfg`: as for `mmedge export --precision int8`.
    - `graphs`: graphs to quantize with accuracy control (default: all; decoder graphs with
      `cfg.dynamic_decoder` get weight-only int8, which needs no validation).

    NNCF validates candidates in this process, so the static recipe's hang guard (child process,
    timeout) cannot protect that loop: for graphs whose int8 kernels hang OpenVINO here (the full
    refocus network) use the static recipe. The result is still checked for wrong outputs (`repair`).

    The artifact's manifest and test vectors are the fp32 artifact's (format openvino, precision
    int8); `manifest.extra["calibration"]["accuracy_control"]` records the metric of the fp32 and
    int8 models and the settings. Example (voice encoder, 1 point max top-1 drop)::

        fp32 = registry.export(ExportRequest("voice-encoder", ["onnx"], config="demo", out=tmp)).artifacts[0]
        items = [(c.audio, c.label) for c in held_out_clips]
        top1 = lambda pipe, items: float(np.mean([pipe.embed(a)[0].label == y for a, y in items]))
        quantize_with_accuracy_control(fp32, "ve-int8-ac", items, top1, max_drop=0.01)
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    from mmedge.export.artifact import atomic_dir, finish, tool_versions
    from mmedge.runtime.pipelines import load

    fp32_dir, dest = Path(fp32_dir), Path(dest)
    cfg = cfg or QuantConfig()
    if drop_type not in ("absolute", "relative"):
        raise InputError(f"drop_type must be 'absolute' or 'relative', got {drop_type!r}")
    if not max_drop >= 0:
        raise InputError(f"max_drop must be >= 0, got {max_drop}")
    items = list(validation)
    if not items:
        raise InputError("no validation items for accuracy control")
    base = load(fp32_dir, "openvino")  # OpenVINO reads the ONNX files; f32, like NNCF's validation
    m = base.manifest
    if m.format != "onnx" or m.precision != "fp32":
        raise InputError(f"{fp32_dir}: expected an fp32 ONNX artifact, got {m.format} {m.precision}")
    todo = list(graphs) if graphs is not None else [g.name for g in m.graphs]
    for name in todo:
        m.graph(name)  # unknown graph names fail here
    if not isinstance(calib, CalibrationSet):
        calib = gather(base, calib if calib is not None else CalibSource())
    fp32_metric = float(metric(base, items))
    results: dict[str, Any] = {}
    with atomic_dir(dest) as tmp:
        for g in m.graphs:
            out = tmp / f"{g.name}.xml"
            decoder = g.hints.decoder
            ops = cfg.ops_for(m.pipeline, g.name)
            feeds = calib.feeds.get(g.name) or []
            if g.name not in todo or (decoder and cfg.dynamic_decoder):
                _cached(fp32_dir, m, g, calib, cfg, out,
                        lambda: quantize_checked(fp32_dir / g.file, feeds, cfg, decoder, ops, g.name))
                continue

            def validate(compiled: Any, data: Any, g: GraphEntry = g) -> float:
                pipe = load(fp32_dir, "openvino")
                pipe.sessions[g.name] = CompiledSession(compiled, fp32_dir / g.file, g.inputs, g.outputs)
                return float(metric(pipe, list(data)))

            model = read_onnx(fp32_dir / g.file)
            try:
                with _quiet():
                    q = nncf.quantize_with_accuracy_control(
                        model, nncf.Dataset(feeds), nncf.Dataset(items), validate, max_drop=max_drop,
                        drop_type=nncf.DropType.ABSOLUTE if drop_type == "absolute" else nncf.DropType.RELATIVE,
                        preset=nncf.QuantizationPreset.MIXED if decoder else nncf.QuantizationPreset.PERFORMANCE,
                        target_device=nncf.TargetDevice.CPU, subset_size=len(feeds),
                        ignored_scope=ignored_scope(model, cfg, ops),
                        advanced_quantization_parameters=advanced_parameters(cfg),
                        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                            max_num_iterations=max_num_iterations))
            except Exception as e:
                raise ExportError(f"OpenVINO int8 (accuracy control) of graph {g.name!r} failed: "
                                  f"{_one_line(e)}") from e
            # NNCF validated in this process: a hanging kernel would have hung it already, but wrong
            # results on inputs the metric does not exercise are still caught here
            removed: list[str] = []
            if needs_output_check():
                q, removed = repair(read_onnx(fp32_dir / g.file), q, feeds, g.name)
            _save(q, out)
            results[g.name] = {"fake_quantize_nodes": _count(q, "FakeQuantize"), "removed_by_check": removed}
        shutil.copyfile(fp32_dir / m.extra.vectors_file, tmp / m.extra.vectors_file)
        record = calibration_record(calib, cfg)
        record.accuracy_control = {"max_drop": max_drop, "drop_type": drop_type, "graphs": todo,
                                   "validation_items": len(items), "fp32_metric": fp32_metric, "per_graph": results}
        int8 = m.derive(format="openvino", precision="int8",
                        graphs=[dataclasses.replace(g, file=f"{g.name}.xml") for g in m.graphs],
                        tools={**m.tools, **tool_versions("openvino", "nncf")},
                        extra=dataclasses.replace(m.extra, calibration=record))
        finish(tmp, int8)
        pipe = load(tmp, "openvino")
        record.accuracy_control["int8_metric"] = float(metric(pipe, items))
        finish(tmp, int8)
    return dest


def _count(model: Any, op_type: str) -> int:
    return sum(1 for op in model.get_ordered_ops() if op.get_type_name() == op_type)


if __name__ == "__main__":  # the child process of _outputs_isolated
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--check-run":
        _check_run(sys.argv[2])
    else:
        sys.exit("usage: python -m mmedge.calibration.openvino --check-run DIR (internal)")

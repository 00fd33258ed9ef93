"""ONNX Runtime session: graph optimizations on (the optimized graph of a large model cached per
machine, `runtime/ort_cache.py`), threads configurable, and step-invariant inputs bound once
through IOBinding so the decoder's features are not converted again at every beam-search step.

`reuse_outputs()` is the mode beam search runs decoder_step in: inputs are wrapped as OrtValues
sharing the numpy memory (no copy), and the outputs are written by ONNX Runtime straight into
numpy buffers kept per input shapes (their sizes follow from the manifest's symbolic dims), which
run() returns and the next run with the same shapes overwrites: no allocation and no copy per
step. Plain run() keeps returning fresh arrays that the caller owns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import onnxruntime as ort

from mmedge.errors import ArtifactError, InputError
from mmedge.runtime import ort_cache
from mmedge.runtime.backends.wrapped import ReuseState, WrapCache
from mmedge.runtime.manifest import TensorSpec
from mmedge.runtime.session import Feeds, Session


# -O optimization=...: graph rewrites change float rounding (fused kernels), so the parity tests
# also run with them off (.ci/run) to show the goldens do not depend on one kernel choice.
_OPT_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
               "disable": "ORT_DISABLE_ALL"}


# -O spinning=...: the session config entries of each choice; "auto" (a graph opened on its own) spins
# as ONNX Runtime does by default, and a Pipeline resolves it per graph (backends/__init__.py)
_SPINNING = {
    "auto": {"session.intra_op.allow_spinning": "1"},
    "on": {"session.intra_op.allow_spinning": "1"},
    "run": {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"},
    "off": {"session.intra_op.allow_spinning": "0"},
}


@dataclass
class _Outputs:
    """Preallocated outputs for one set of input shapes: numpy buffers and the OrtValues wrapping them
    (None where a size is not known from the inputs: ONNX Runtime allocates that output)."""

    arrays: dict[str, Optional[np.ndarray]]
    values: dict[str, Any]

    @property
    def allocated_by_ort(self) -> bool:
        return any(v is None for v in self.values.values())


@dataclass
class _Reuse(ReuseState):
    """State of the reuse mode: the inputs' OrtValues (ReuseState: neither wrapped nor bound again
    when fed again), and the outputs per input-shape key with the key bound last."""

    outputs: dict[tuple, _Outputs] = field(default_factory=dict)
    bound_key: Optional[tuple] = None


def output_shapes(inputs: list[TensorSpec], outputs: list[TensorSpec],
                  shapes: dict[str, tuple[int, ...]]) -> dict[str, Optional[tuple[int, ...]]]:
    """Each output's shape from the manifest: fixed dims as declared, symbolic ones by the size the
    same symbol has in the inputs; None where a symbol is not in the inputs or has two sizes there."""
    sizes: dict[str, Optional[int]] = {}
    for spec in inputs:
        for dim, size in zip(spec.shape, shapes[spec.name]):
            if isinstance(dim, str):
                sizes[dim] = size if sizes.get(dim, size) == size else None
    out: dict[str, Optional[tuple[int, ...]]] = {}
    for spec in outputs:
        dims = [d if isinstance(d, int) else sizes.get(d) for d in spec.shape]
        out[spec.name] = None if any(d is None for d in dims) else tuple(int(d) for d in dims)  # type: ignore[arg-type]
    return out


class OrtSession(Session):
    backend = "onnxruntime"

    def __init__(self, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec],
                 threads: int | None = None, providers: list[str] | str | None = None,
                 optimization: str = "all", spinning: str = "auto", cache: str = "auto") -> None:
        super().__init__(path, inputs, outputs)
        if isinstance(providers, str):  # from the command line: "CUDAExecutionProvider,CPUExecutionProvider"
            providers = [p.strip() for p in providers.split(",") if p.strip()]
        providers = providers or ["CPUExecutionProvider"]
        if optimization not in _OPT_LEVELS:
            raise InputError(f"onnxruntime option optimization={optimization!r}; valid: {', '.join(_OPT_LEVELS)}")
        if spinning not in _SPINNING:
            raise InputError(f"onnxruntime option spinning={spinning!r}; valid: {', '.join(_SPINNING)}")
        if cache not in ort_cache.MODES:
            raise InputError(f"onnxruntime option cache={cache!r}; valid: {', '.join(ort_cache.MODES)}")

        def make(model: str, save_to: str | None) -> ort.InferenceSession:
            opts = ort.SessionOptions()
            level = "disable" if save_to == "off" else optimization  # "off": an already optimized graph
            opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[level])
            if save_to not in (None, "off"):
                opts.optimized_model_filepath = save_to
                for key, value in ort_cache.save_config(save_to).items():
                    opts.add_session_config_entry(key, value)
            opts.log_severity_level = 3
            for key, value in _SPINNING[spinning].items():
                opts.add_session_config_entry(key, value)
            if threads:
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
            return ort.InferenceSession(model, opts, providers=providers)

        decision = ort_cache.decide(Path(path), optimization, cache, providers == ["CPUExecutionProvider"],
                                    ort.__version__)
        self.cache_entry = decision.entry  # (None: loaded without the cache; decision.why_not says why)
        try:
            self.sess = ort_cache.load(Path(path), decision, make)
        except Exception as e:  # ORT raises its own exception types; one line for the user
            first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
            raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({first[:200]})") from None
        self._check_names(path, [i.name for i in self.sess.get_inputs()], [o.name for o in self.sess.get_outputs()])
        self._binding = self.sess.io_binding()
        self._bound_values: dict[str, Any] = {}
        self._output_names = [o.name for o in outputs]

    # reuse_outputs() (the base class): run() returns buffers that the next run with the same input
    # shapes overwrites (the caller copies what it keeps), written in place by ONNX Runtime; inputs
    # are not copied
    def _reuse_begin(self) -> _Reuse:
        return _Reuse(WrapCache(ort.OrtValue.ortvalue_from_numpy))

    def _reuse_end(self) -> None:
        self._binding.clear_binding_inputs()
        self._binding.clear_binding_outputs()

    def _bind(self, name: str, array: np.ndarray) -> None:
        self._bound_values[name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))

    def _unbind(self, name: str) -> None:
        self._bound_values.pop(name, None)

    def _run(self, feeds: Feeds) -> Feeds:
        if not self._bound_values:
            return dict(zip(self._output_names, self.sess.run(self._output_names, feeds)))
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, value in self._bound_values.items():
            if name not in feeds:
                binding.bind_ortvalue_input(name, value)
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(arr))
        for name in self._output_names:
            binding.bind_output(name)
        self.sess.run_with_iobinding(binding)
        return dict(zip(self._output_names, binding.copy_outputs_to_cpu()))

    def _outputs_for(self, shapes: dict[str, tuple[int, ...]]) -> _Outputs:
        arrays: dict[str, Optional[np.ndarray]] = {}
        values: dict[str, Any] = {}
        dtypes = {t.name: np.dtype(t.dtype) for t in self.outputs}
        for name, shape in output_shapes(self.inputs, self.outputs, shapes).items():
            arrays[name] = None if shape is None else np.empty(shape, dtypes[name])
            values[name] = None if shape is None else ort.OrtValue.ortvalue_from_numpy(arrays[name])
        return _Outputs(arrays, values)

    def _bind_outputs(self, outs: _Outputs) -> None:
        self._binding.clear_binding_outputs()
        for name in self._output_names:
            if outs.values[name] is None:
                self._binding.bind_output(name)
            else:
                self._binding.bind_ortvalue_output(name, outs.values[name])

    def _run_reusing(self, feeds: Feeds, reuse: _Reuse) -> Feeds:
        binding = self._binding
        # zero-copy: ORT reads a fed array's memory at run time, whatever it holds then
        self._place_inputs(feeds, reuse, self._bound_values, binding.bind_ortvalue_input)
        shapes = {name: (feeds[name] if name in feeds else self._bound[name]).shape for name in self._by_name}
        key = tuple(shapes.values())
        outs = reuse.outputs.get(key)
        if outs is None:
            outs = reuse.outputs[key] = self._outputs_for(shapes)
        if reuse.bound_key != key or outs.allocated_by_ort:  # ORT's own outputs: bound afresh every run
            self._bind_outputs(outs)
            reuse.bound_key = key
        try:
            self.sess.run_with_iobinding(binding)
        except Exception:  # a graph whose output sizes the manifest's dims do not give: let ORT allocate them
            if outs.allocated_by_ort and all(v is None for v in outs.values.values()):
                raise
            outs = reuse.outputs[key] = _Outputs({n: None for n in outs.arrays}, {n: None for n in outs.values})
            self._bind_outputs(outs)
            self.sess.run_with_iobinding(binding)
        result = dict(outs.arrays)
        if outs.allocated_by_ort:
            for name, value in zip(self._output_names, binding.get_outputs()):
                if result[name] is None:
                    result[name] = value.numpy()
        return result  # type: ignore[return-value]

    def _close(self) -> None:
        self._bound_values.clear()
        self._binding = None
        self.sess = None  # ONNX Runtime frees the session (its arena, prepacked weights) with the last reference


def create_session(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], **options: Any) -> OrtSession:
    return OrtSession(path, inputs, outputs, **options)

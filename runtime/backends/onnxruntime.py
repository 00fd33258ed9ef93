"""ONNX Runtime session: graph optimizations on, threads configurable, and
step-invariant inputs bound once through IOBinding so the decoder's features
are not converted again at every beam-search step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from mmedge.errors import ArtifactError, InputError
from mmedge.runtime.manifest import TensorSpec
from mmedge.runtime.session import Feeds, Session


# -O optimization=...: graph rewrites change float rounding (fused kernels), so the parity tests
# also run with them off (.ci/run) to show the goldens do not depend on one kernel choice.
_OPT_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
               "disable": "ORT_DISABLE_ALL"}


class OrtSession(Session):
    backend = "onnxruntime"

    def __init__(self, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec],
                 threads: int | None = None, providers: list[str] | str | None = None,
                 optimization: str = "all") -> None:
        super().__init__(path, inputs, outputs)
        if isinstance(providers, str):  # from the command line: "CUDAExecutionProvider,CPUExecutionProvider"
            providers = [p.strip() for p in providers.split(",") if p.strip()]
        opts = ort.SessionOptions()
        if optimization not in _OPT_LEVELS:
            raise InputError(f"onnxruntime option optimization={optimization!r}; valid: {', '.join(_OPT_LEVELS)}")
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[optimization])
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.sess = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types; one line for the user
            first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
            raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({first[:200]})") from None
        got_in = [i.name for i in self.sess.get_inputs()]
        got_out = [o.name for o in self.sess.get_outputs()]
        want_in, want_out = [t.name for t in inputs], [t.name for t in outputs]
        if sorted(got_in) != sorted(want_in) or not set(want_out) <= set(got_out):
            raise ArtifactError(f"{path}: graph inputs {got_in} / outputs {got_out} do not match the manifest "
                                f"({want_in} / {want_out}); the file belongs to another model")
        self._binding = self.sess.io_binding()
        self._bound_values: dict[str, Any] = {}
        self._output_names = [o.name for o in outputs]

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


def create_session(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], **options: Any) -> OrtSession:
    return OrtSession(path, inputs, outputs, **options)

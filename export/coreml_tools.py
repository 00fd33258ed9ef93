"""coremltools access for the Core ML exporter: a quiet, patched import and deployment targets.

Kept apart from the conversion so that everything touching coremltools' own quirks (its
log noise, its NumPy incompatibility, its target enum) is in one place, below both the
option schema (coreml_options) and the package checks (coreml_inspect).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any, Iterator

import numpy as np


def minimum_os(spec_version: int) -> dict[str, str]:
    """The OS versions that run a Core ML specification version (7: iOS 16 / macOS 13)."""
    from mmedge.export.mobile_versions import coreml_minimum_os

    return coreml_minimum_os(spec_version)


def target_value(name: str) -> int:
    """Core ML specification version of a deployment target (iOS16 == macOS13 == 7)."""
    ct = coremltools()
    return int(getattr(ct.target, name).value)


# ----------------------------------------------------------------------------- coremltools quirks
_PATCHED = False


def coremltools() -> Any:
    """Import coremltools quietly, once made compatible with this NumPy."""
    global _PATCHED
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools as ct
    if not _PATCHED:
        _patch_int_cast()
        _PATCHED = True
    return ct


def _patch_int_cast() -> None:
    """coremltools 9.0 folds `aten::Int(size)` with `int(array)`; NumPy >= 2.4 refuses
    `int()` of a 1-element array (the captioner's `reshape(x.shape[0], -1, C)` hits it).
    Same conversion, with `.item()` for constants."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op

    def cast(context: Any, node: Any, dtype: type, dtype_name: str) -> None:
        x = _get_inputs(context, node, expected=1)[0]
        if not (len(x.shape) == 0 or all(d == 1 for d in x.shape)):
            raise ValueError("input to cast must be either a scalar or a length 1 tensor")
        if x.can_be_folded_to_const():
            val = x.val.reshape(()).item() if isinstance(x.val, np.ndarray) else x.val
            res = x if isinstance(x.val, dtype) else mb.const(val=dtype(val), name=node.name)
        elif len(x.shape) > 0:
            res = mb.cast(x=mb.squeeze(x=x, name=node.name + "_item"), dtype=dtype_name, name=node.name)
        else:
            res = mb.cast(x=x, dtype=dtype_name, name=node.name)
        context.add(res, node.name)

    def mmedge_int(context: Any, node: Any) -> None:
        cast(context, node, int, "int32")

    def mmedge_bool(context: Any, node: Any) -> None:
        cast(context, node, bool, "bool")

    register_torch_op(mmedge_int, torch_alias=["int"], override=True)
    register_torch_op(mmedge_bool, torch_alias=["bool"], override=True)


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """coremltools prints progress bars and warnings; keep stdout/stderr clean (--json)."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        warnings.simplefilter("ignore")
        yield buf

"""The error hierarchy: one exit code per class, and every class survives pickling (Ray sends
exceptions between processes), whatever its __init__ takes."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
from pathlib import Path
from typing import Any

import pytest

import mmedge
from mmedge import errors
from mmedge.errors import (CheckFailedError, InputError, Mismatch, MissingDependencyError, MmedgeError,
                           ParityError, UnknownNameError)


def _import_everything() -> None:
    """Subclasses defined outside errors.py (e.g. CoreMLUnavailableError) count too."""
    for mod in pkgutil.walk_packages(mmedge.__path__, "mmedge."):
        if ".tests" in mod.name or mod.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(mod.name)
        except Exception:  # an optional dependency missing: its classes cannot be raised here either
            pass


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_all_subclasses(sub)]
    return out


_import_everything()
CLASSES = sorted(set([MmedgeError, *_all_subclasses(MmedgeError)]), key=lambda c: f"{c.__module__}.{c.__name__}")
SAMPLE_ARGS: dict[str, Any] = {
    "valid": ["a", "b"], "mismatches": [Mismatch("decoder_step.log_probs", 0.5, 0.1, 1e-4)],
    "path": Path("model.mlpackage"), "package": "onnx", "extra": "onnxruntime", "purpose": "the ONNX exporter",
}


def make(cls: type[MmedgeError]) -> MmedgeError:
    """An instance built through the class's own __init__, with plausible arguments."""
    params = [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    if not params or params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        return cls(f"{cls.__name__}: something was wrong")
    return cls(*[SAMPLE_ARGS.get(p.name, f"{p.name}-value") for p in params])


def test_every_subclass_is_found() -> None:
    names = {c.__name__ for c in CLASSES}
    assert {"InputError", "UnknownNameError", "MissingDependencyError", "ParityError", "CheckFailedError",
            "ArtifactError"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_pickle_round_trip(cls: type[MmedgeError]) -> None:
    e = make(cls)
    e.note = "set after raising"  # an attribute added later survives too
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is cls
    assert str(back) == str(e) and back.args == e.args
    assert back.__dict__ == e.__dict__
    assert back.exit_code == e.exit_code
    with pytest.raises(cls, match="."):  # still raisable and catchable as itself
        raise back


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_exit_code_per_class(cls: type[MmedgeError]) -> None:
    """1: a check ran and found a mismatch; 2: usage, bad input, a missing package."""
    want = errors.EXIT_CHECK_FAILED if issubclass(cls, CheckFailedError) else errors.EXIT_USAGE
    assert cls.exit_code == want == make(cls).exit_code


def test_exit_codes_are_the_documented_ones() -> None:
    assert (errors.EXIT_OK, errors.EXIT_CHECK_FAILED, errors.EXIT_USAGE, errors.EXIT_INTERRUPTED) == (0, 1, 2, 130)
    assert ParityError.exit_code == CheckFailedError.exit_code == 1
    assert InputError.exit_code == UnknownNameError.exit_code == MissingDependencyError.exit_code == 2
    readme = (Path(mmedge.__file__).parent / "README.md").read_text(encoding="utf-8")
    for row in ("| 0 |", "| 1 |", "| 2 |", "| 130 |"):
        assert row in readme, f"README's exit-code table lacks {row}"


def test_attributes_survive_pickling() -> None:
    e = pickle.loads(pickle.dumps(UnknownNameError("backend", "tflite", ("onnxruntime", "openvino"))))
    assert (e.kind, e.name, e.valid) == ("backend", "tflite", ["onnxruntime", "openvino"])
    assert str(e) == "unknown backend 'tflite'; valid: onnxruntime, openvino"
    e = pickle.loads(pickle.dumps(MissingDependencyError("ray", "ray", "--ray")))
    assert (e.package, e.extra) == ("ray", "ray") and "pip install 'mmedge[ray]'" in str(e)
    m = [Mismatch("a", 1.0, 0.5, 1e-4), Mismatch("b", 0.0, 0.0, 1e-4, ok=True)]
    e = pickle.loads(pickle.dumps(ParityError("art", m)))
    assert e.mismatches == m and str(e).startswith("art: 1 output(s) out of tolerance: a: max abs 1 > 0.0001")


def test_cause_is_not_needed_to_unpickle() -> None:
    try:
        try:
            raise OSError("disk")
        except OSError as inner:
            raise InputError("x.png: unreadable") from inner
    except InputError as e:
        back = pickle.loads(pickle.dumps(e))
    assert str(back) == "x.png: unreadable" and type(back) is InputError

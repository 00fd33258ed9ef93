"""One small error hierarchy for everything a user can get wrong.

The CLI turns any `MmedgeError` into one line on stderr and the class's exit code;
anything else is a bug and keeps its traceback. The exit codes (README, Commands):

    0    success
    1    a check ran and found a mismatch (`CheckFailedError`: parity, `package --verify`)
    2    usage or bad input, a missing package (every other `MmedgeError`)
    130  interrupted (Ctrl-C)

Every class pickles round trip (Ray sends them between processes), whatever its
`__init__` takes: `__reduce__` rebuilds the instance from its message and attributes
without calling `__init__` again.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _rebuild(cls: type[MmedgeError], args: tuple[Any, ...], state: dict[str, Any]) -> MmedgeError:
    e = cls.__new__(cls, *args)
    e.args = args
    e.__dict__.update(state)
    return e


class MmedgeError(Exception):
    """Base class: a problem the user can fix (bad input, missing package, ...)."""

    exit_code = EXIT_USAGE

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class InputError(MmedgeError):
    """A file or argument given by the user is not what was expected."""


class UnknownNameError(MmedgeError):
    """A name (model, format, backend, config) is not registered."""

    def __init__(self, kind: str, name: str, valid: list[str] | tuple[str, ...]) -> None:
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}")
        self.kind, self.name, self.valid = kind, name, list(valid)


class MissingDependencyError(MmedgeError):
    """An optional package is not installed; the message names the extra."""

    def __init__(self, package: str, extra: str, purpose: str = "") -> None:
        why = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"{package} is not installed{why}; install it with: pip install 'mmedge[{extra}]'")
        self.package, self.extra = package, extra


# The optional packages mmedge imports: top-level import name -> (distribution name, the extra
# that installs it). The one table `require` and the CLI's error boundary read, so a package
# missing anywhere (even deep inside a third-party import) becomes one line naming the extra.
OPTIONAL_PACKAGES: dict[str, tuple[str, str]] = {
    "torch": ("torch", "torch"),
    "onnx": ("onnx", "onnx"),  # also in the torch extra, for export
    "onnxscript": ("onnxscript", "torch"),
    "onnxruntime": ("onnxruntime", "onnxruntime"),
    "openvino": ("openvino", "openvino"),
    "nncf": ("nncf", "openvino"),
    "coremltools": ("coremltools", "coreml"),
    "tensorrt": ("tensorrt", "tensorrt"),
    "cuda": ("cuda-python", "tensorrt"),
    "ray": ("ray", "ray"),
    "nltk": ("nltk", "eval"),
    "matplotlib": ("matplotlib", "plot"),
}


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that fails to import; a module without __spec__
        return False


def require(module: str, purpose: str = "", extra: str | None = None) -> None:
    """Fail with `MissingDependencyError` naming the extra when `module` (a key of
    OPTIONAL_PACKAGES, or any module with `extra` given) cannot be imported. Checks
    without importing, so it is cheap to call before any work starts."""
    if not _importable(module):
        package, default_extra = OPTIONAL_PACKAGES.get(module, (module, ""))
        raise MissingDependencyError(package, extra or default_extra or "all", purpose)


def missing_dependency(exc: ImportError, purpose: str = "") -> MissingDependencyError | None:
    """The `MissingDependencyError` for an ImportError caused by an optional package (of
    OPTIONAL_PACKAGES) that is not installed, else None: anything else (a broken install,
    a missing submodule of an installed package) is a bug and keeps its traceback."""
    name = getattr(exc, "name", None) or ""
    top = name.partition(".")[0]
    if top not in OPTIONAL_PACKAGES or _importable(top):
        return None
    package, extra = OPTIONAL_PACKAGES[top]
    return MissingDependencyError(package, extra, purpose)


class CheckpointError(InputError):
    """A checkpoint or word map could not be loaded safely."""


class ExportError(MmedgeError):
    """Export to a target format failed."""


class ArtifactError(InputError):
    """An artifact directory is missing, corrupt or tampered with."""


@dataclass
class Mismatch:
    """Difference of one output against its reference."""

    name: str
    max_abs: float
    max_rel: float
    tolerance: float
    ok: bool = field(default=False)
    cosine: float | None = None  # int8: judged by cosine similarity, not max error


class CheckFailedError(MmedgeError):
    """A check ran and found a mismatch (a bundle's file against its sha256, outputs against
    their reference); exit code 1, where bad input is 2."""

    exit_code = EXIT_CHECK_FAILED


class ParityError(CheckFailedError):
    """Outputs differ from the reference beyond tolerance; carries every mismatch."""

    def __init__(self, what: str, mismatches: list[Mismatch]) -> None:
        bad = [m for m in mismatches if not m.ok]
        detail = "; ".join(f"{m.name}: max abs {m.max_abs:.3g} > {m.tolerance:.3g}" if m.cosine is None
                           else f"{m.name}: cosine {m.cosine:.4f} < {m.tolerance:.4f}" for m in bad)
        super().__init__(f"{what}: {len(bad)} output(s) out of tolerance: {detail}")
        self.mismatches = mismatches


class NumericsError(MmedgeError):
    """A graph produced NaN/Inf where finite values are required."""


def plural(n: int, noun: str, many: str | None = None) -> str:
    """'1 image', '2 images' (messages are read by people)."""
    return f"{n} {noun if n == 1 else (many or noun + 's')}"


def article(word: str) -> str:
    """'an audio', 'a captioner'."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


# errno values that say the machine, not mmedge, refused an operation: a full disk, a file
# size limit, a read-only or foreign folder. The CLI reports them as one line, not a traceback.
_ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, n) for n in ("ENOSPC", "EFBIG", "EROFS", "EDQUOT", "EACCES", "EPERM", "ENAMETOOLONG",
                                "EMFILE", "ENFILE", "EISDIR", "ENOTDIR", "ETXTBSY") if hasattr(errno, n))


def environment_error(e: OSError) -> InputError | None:
    """An InputError naming the file for an OSError the environment caused, else None (a bug)."""
    if e.errno not in _ENVIRONMENT_ERRNOS:
        return None
    where = e.filename2 if e.filename2 is not None else e.filename  # a copy fails on its destination
    return InputError(f"{where if where is not None else 'a file'}: {e.strerror or e}")

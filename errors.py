"""One small error hierarchy for everything a user can get wrong.

The CLI turns any `MmedgeError` into one line on stderr and a non-zero exit code;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class MmedgeError(Exception):
    """Base class: a problem the user can fix (bad input, missing package, ...)."""

    exit_code = 2


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


class CheckpointError(InputError):
    """A checkpoint or word map could not be loaded safely."""


class ExportError(MmedgeError):
    """Export to a target format failed."""


class ArtifactError(InputError):
    """An artifact directory is missing, corrupt or tampered with."""


class NotBuiltError(MmedgeError):
    """A command that is part of the design but not implemented yet."""


@dataclass
class Mismatch:
    """Difference of one output against its reference."""

    name: str
    max_abs: float
    max_rel: float
    tolerance: float
    ok: bool = field(default=False)
    cosine: float | None = None  # int8: judged by cosine similarity, not max error


class ParityError(MmedgeError):
    """Outputs differ from the reference beyond tolerance; carries every mismatch."""

    def __init__(self, what: str, mismatches: list[Mismatch]) -> None:
        bad = [m for m in mismatches if not m.ok]
        detail = "; ".join(f"{m.name}: max abs {m.max_abs:.3g} > {m.tolerance:.3g}" if m.cosine is None
                           else f"{m.name}: cosine {m.cosine:.4f} < {m.tolerance:.4f}" for m in bad)
        super().__init__(f"{what}: {len(bad)} output(s) out of tolerance: {detail}")
        self.mismatches = mismatches


class NumericsError(MmedgeError):
    """A graph produced NaN/Inf where finite values are required."""

"""The Session: the one thing a backend implements.

Modelled on Polygraphy's runner: the base class checks feeds (names, dtypes,
ranks, fixed dims) and times every call in `run()`; a backend implements only
`_run()` (and optionally `_bind()` for step-invariant inputs). The reuse mode
(`reuse_outputs()`) is one skeleton here too: a backend that has one supplies
its state (`_reuse_begin`), its run in that mode (`_run_reusing`) and its
clean-up (`_reuse_end`). Backends are found by name in a registry and import
their package lazily, so one missing package never breaks the others.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import importlib
import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

import numpy as np

from mmedge.errors import ArtifactError, InputError, MissingDependencyError
from mmedge.runtime.backends import (BACKENDS, BackendInfo, available, backend_for_format, backend_names,
                                     register_backend, session_options)
from mmedge.runtime.backends.wrapped import ReuseState
from mmedge.runtime.manifest import TensorSpec

__all__ = ["Session", "Timing", "Feeds", "open_session", "BACKENDS", "BackendInfo", "available",
           "backend_for_format", "backend_names", "register_backend", "session_options"]  # the registry: backends/

Feeds = Dict[str, np.ndarray]  # typing.Dict: a runtime alias must work on Python 3.8


@dataclass
class Timing:
    """Wall-clock seconds of every `run()` call (monotonic clock)."""

    calls: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.calls.append(seconds)

    @property
    def total(self) -> float:
        return float(sum(self.calls))


class Session(abc.ABC):
    """A loaded graph. Subclasses implement `_run` (and may override `_bind`)."""

    backend: str = "?"

    def __init__(self, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
        self.path = Path(path)
        self.inputs = inputs
        self.outputs = outputs
        self.timing = Timing()
        self._bound: Feeds = {}
        self._by_name = {t.name: t for t in inputs}
        # axes named alike ("batch") must agree across inputs: a backend would otherwise fail in its own
        # words, or (OpenVINO) compute 0-row outputs without an error
        named = [(t.name, i, d) for t in inputs for i, d in enumerate(t.shape) if isinstance(d, str)]
        self._named_axes = [x for x in named if sum(1 for y in named if y[2] == x[2]) > 1]

    # ---------------------------------------------------------------- public API
    _closed: bool = False
    _reuse: Optional[ReuseState] = None  # the reuse mode's state while reuse_outputs() is active

    def run(self, feeds: Feeds) -> Feeds:
        """Check `feeds`, run the graph, return outputs by name."""
        if self._closed:
            raise InputError(f"{self.path.name}: this {self.backend} session is closed")
        for name, arr in feeds.items():
            self._check(name, arr)
        missing = [t.name for t in self.inputs if t.name not in feeds and t.name not in self._bound]
        if missing:
            raise InputError(f"{self.path.name}: missing input(s) {', '.join(missing)}")
        if self._named_axes:
            self._check_named_axes(feeds)
        t0 = time.perf_counter()
        out = self._run(feeds) if self._reuse is None else self._run_reusing(feeds, self._reuse)
        self.timing.add(time.perf_counter() - t0)
        return out

    def _check_named_axes(self, feeds: Feeds) -> None:
        seen: dict[str, tuple[str, int]] = {}
        for name, axis, dim in self._named_axes:
            arr = feeds.get(name)
            if arr is None:
                arr = self._bound.get(name)
            if arr is None:
                continue
            first = seen.setdefault(dim, (name, arr.shape[axis]))
            if first[1] != arr.shape[axis]:
                raise InputError(f"{self.path.name}: inputs disagree on axis {dim!r}: {first[0]!r} has "
                                 f"{first[1]}, {name!r} has {arr.shape[axis]}")

    def bind(self, name: str, array: np.ndarray) -> None:
        """Fix an input for the following runs (step-invariant data: uploaded/wrapped once)."""
        self._check(name, array)
        self._bind(name, array)  # first: a failed upload must not leave the input marked bound
        self._bound[name] = array

    def close(self) -> None:
        """Free the backend's resources (engines, device buffers, compiled models); idempotent.
        A closed session refuses to run. Pipelines close their sessions; `with` closes too."""
        if self._closed:
            return
        self._closed = True
        self._bound.clear()
        self._close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def reuse_outputs(self) -> Iterator[None]:
        """Within this context a backend may return its own output buffers, overwritten by the next
        run (no copy per call); the caller copies what it keeps. A backend without a reuse mode
        (`_reuse_begin` gives None) keeps returning fresh arrays. Nested: the outer mode stays."""
        if self._reuse is not None:
            yield
            return
        state = self._reuse_begin()
        if state is None:
            yield
            return
        self._reuse = state
        try:
            yield
        finally:
            self._reuse = None
            self._reuse_end()

    def unbind(self, name: str) -> None:
        self._bound.pop(name, None)
        self._unbind(name)

    # ---------------------------------------------------------------- for backends
    @abc.abstractmethod
    def _run(self, feeds: Feeds) -> Feeds:
        """Run the graph on the checked feeds (bound inputs via `_all_feeds`)."""

    def _bind(self, name: str, array: np.ndarray) -> None:
        """Default: keep the array and pass it with every run."""

    def _unbind(self, name: str) -> None:
        pass

    def _close(self) -> None:
        """Default: drop nothing explicitly; a backend holding native resources frees them here."""

    def _reuse_begin(self) -> Optional[ReuseState]:
        """The state of a fresh reuse mode; default None: this backend has none."""
        return None

    def _run_reusing(self, feeds: Feeds, reuse: ReuseState) -> Feeds:
        """Run in the reuse mode (called instead of `_run` while one is active). Default: a plain
        run; fresh arrays keep the mode's contract, so only the speed-up is the backend's own."""
        return self._run(feeds)

    def _reuse_end(self) -> None:
        """Undo what the reuse mode left on the backend (bindings, tensors set on a request)."""

    def _place_inputs(self, feeds: Feeds, reuse: ReuseState, bound: Mapping[str, Any],
                      place: Callable[[str, Any], None]) -> None:
        """Reuse mode: hand every input to the backend as a wrapper sharing its memory (a fed array's
        from `reuse.wrapped`, a bound one's from `bound`), calling `place` only when the wrapper
        differs from the one placed last: beam search feeds the same few buffers again and again."""
        for name in self._by_name:
            arr = feeds.get(name)
            wrapper = bound[name] if arr is None else reuse.wrapped.get(np.ascontiguousarray(arr))
            if reuse.placed.get(name) is not wrapper:
                place(name, wrapper)
                reuse.placed[name] = wrapper

    def _check_names(self, where: object, got_in: list[str], got_out: list[str], kind: str = "graph",
                     holder: str = "file") -> None:
        """The loaded graph's own input/output names against the manifest's: the same inputs and at
        least its outputs, else the file belongs to another model (one line naming both lists)."""
        want_in, want_out = [t.name for t in self.inputs], [t.name for t in self.outputs]
        if sorted(got_in) != sorted(want_in) or not set(want_out) <= set(got_out):
            raise ArtifactError(f"{where}: {kind} inputs {got_in} / outputs {got_out} do not match the manifest "
                                f"({want_in} / {want_out}); the {holder} belongs to another model")

    def _all_feeds(self, feeds: Feeds) -> Feeds:
        return {**self._bound, **feeds}

    def _check(self, name: str, arr: np.ndarray) -> None:
        spec = self._by_name.get(name)
        if spec is None:
            raise InputError(f"{self.path.name}: unknown input {name!r}; inputs are {', '.join(self._by_name)}")
        if not isinstance(arr, np.ndarray):
            raise InputError(f"{self.path.name}: input {name!r} must be a numpy array, got {type(arr).__name__}")
        if arr.dtype != _dtype(spec.dtype):
            raise InputError(f"{self.path.name}: input {name!r} has dtype {arr.dtype}, expected {spec.dtype}")
        if arr.ndim != len(spec.shape):
            raise InputError(f"{self.path.name}: input {name!r} has shape {list(arr.shape)}, expected {spec.shape}")
        for i, (got, want) in enumerate(zip(arr.shape, spec.shape)):
            if isinstance(want, int) and got != want:
                raise InputError(f"{self.path.name}: input {name!r} has shape {list(arr.shape)}, "
                                 f"expected {spec.shape} (axis {i} is fixed at {want})")


@functools.lru_cache(maxsize=None)
def _dtype(name: str) -> np.dtype:
    """np.dtype(name), resolved once per name: checked for every input at every run."""
    return np.dtype(name)


def open_session(backend: str, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec],
                 **options: Any) -> Session:
    """Create a Session of `backend` for the graph file at `path`; `options` are checked against the
    backend's schema (BackendInfo.options) first."""
    info = BACKENDS.get(backend)
    options = info.schema.validate(options)
    if importlib.util.find_spec(info.package) is None:
        raise MissingDependencyError(info.package, info.extra, f"the {backend} backend")
    module = importlib.import_module(info.module)
    factory: Callable[..., Session] = module.create_session
    return factory(path, inputs, outputs, **options)

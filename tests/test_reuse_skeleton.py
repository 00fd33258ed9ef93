"""The reuse mode's one skeleton (issue #17): `Session.reuse_outputs()` in the base class, each
backend supplying only its state (`_reuse_begin`), its run in the mode (`_run_reusing`) and its
clean-up (`_reuse_end`). Checked on in-process fake backends, so no runtime package is needed;
the real backends' reuse modes are checked against plain runs in test_overhead.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmedge.runtime.backends.wrapped import ReuseState, WrapCache
from mmedge.runtime.manifest import TensorSpec
from mmedge.runtime.session import Feeds, Session

INPUTS = [TensorSpec("x", ["n"], "float32"), TensorSpec("y", ["n"], "float32")]
OUTPUTS = [TensorSpec("z", ["n"], "float32")]


class Plain(Session):
    """A backend without a reuse mode."""

    backend = "plain"

    def _run(self, feeds: Feeds) -> Feeds:
        f = self._all_feeds(feeds)
        return {"z": f["x"] + f["y"]}


class Reusing(Plain):
    """A backend with a reuse mode: records what the skeleton asks of it."""

    backend = "reusing"

    def __init__(self) -> None:
        super().__init__(Path("g.onnx"), INPUTS, OUTPUTS)
        self.events: list[str] = []
        self.placed: list[tuple[str, Any]] = []
        self.out = np.zeros(2, np.float32)

    def _reuse_begin(self) -> ReuseState:
        self.events.append("begin")
        return ReuseState(WrapCache(lambda a: ("wrapped", id(a))))

    def _reuse_end(self) -> None:
        self.events.append("end")

    def _run_reusing(self, feeds: Feeds, reuse: ReuseState) -> Feeds:
        self.events.append("reusing")
        self._place_inputs(feeds, reuse, {k: ("bound", k) for k in self._bound},
                           lambda name, w: self.placed.append((name, w)))
        f = self._all_feeds(feeds)
        np.add(f["x"], f["y"], out=self.out)
        return {"z": self.out}


def _feeds() -> Feeds:
    return {"x": np.ones(2, np.float32), "y": np.full(2, 2, np.float32)}


def test_a_backend_without_a_reuse_mode_keeps_returning_fresh_arrays() -> None:
    s = Plain(Path("g.onnx"), INPUTS, OUTPUTS)
    feeds = _feeds()
    with s.reuse_outputs():
        a, b = s.run(feeds)["z"], s.run(feeds)["z"]
    assert a is not b and np.array_equal(a, [3, 3]) and s._reuse is None and len(s.timing.calls) == 2


def test_the_mode_runs_the_backends_reusing_path_and_ends_once_when_nested() -> None:
    s = Reusing()
    feeds = _feeds()
    s.run(feeds)
    with s.reuse_outputs():
        with s.reuse_outputs():  # nested: the outer mode stays, no second begin or end
            first = s.run(feeds)["z"]
        second = s.run(feeds)["z"]
        assert first is second  # the backend's own buffer
    s.run(feeds)
    assert s.events == ["begin", "reusing", "reusing", "end"] and s._reuse is None
    assert len(s.timing.calls) == 4  # timed in either mode


def test_the_mode_ends_when_the_block_raises() -> None:
    s = Reusing()
    with pytest.raises(RuntimeError, match="boom"):
        with s.reuse_outputs():
            raise RuntimeError("boom")
    assert s.events == ["begin", "end"] and s._reuse is None


def test_inputs_are_placed_only_when_another_array_takes_their_place() -> None:
    s = Reusing()
    x, y, x2 = np.ones(2, np.float32), np.ones(2, np.float32), np.zeros(2, np.float32)
    with s.reuse_outputs():
        s.run({"x": x, "y": y})
        s.run({"x": x, "y": y})  # the same arrays again: nothing placed
        s.run({"x": x2, "y": y})  # another array for x only
        s.bind("y", y)
        s.run({"x": x2})  # y from its bound wrapper
    assert s.placed == [("x", ("wrapped", id(x))), ("y", ("wrapped", id(y))), ("x", ("wrapped", id(x2))),
                        ("y", ("bound", "y"))]

"""The graph-name check every backend ran on its own, now once in the base Session (issue #17): the
same inputs and at least the manifest's outputs, else one line naming both lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmedge.errors import ArtifactError
from mmedge.runtime.manifest import TensorSpec
from mmedge.runtime.session import Feeds, Session


class Fake(Session):
    def _run(self, feeds: Feeds) -> Feeds:
        return {}


def _session() -> Fake:
    return Fake(Path("g.onnx"), [TensorSpec("a", [1], "float32"), TensorSpec("b", [1], "float32")],
                [TensorSpec("y", [1], "float32")])


def test_same_inputs_in_any_order_and_extra_outputs_pass() -> None:
    _session()._check_names("g.onnx", ["b", "a"], ["y", "extra"])


@pytest.mark.parametrize("got_in, got_out", [(["a"], ["y"]), (["a", "b", "c"], ["y"]), (["a", "b"], ["z"])])
def test_another_models_graph_is_refused_in_one_line(got_in: list, got_out: list) -> None:
    with pytest.raises(ArtifactError) as e:
        _session()._check_names("art/g.onnx", got_in, got_out)
    assert str(e.value) == (f"art/g.onnx: graph inputs {got_in} / outputs {got_out} do not match the manifest "
                            "(['a', 'b'] / ['y']); the file belongs to another model")


def test_core_ml_words() -> None:
    with pytest.raises(ArtifactError, match=r"^p\.mlpackage: package inputs \['a'\] / outputs \['y'\] do not match "
                                            r"the manifest \(\['a', 'b'\] / \['y'\]\); the package belongs to "
                                            r"another model$"):
        _session()._check_names("p.mlpackage", ["a"], ["y"], "package", "package")

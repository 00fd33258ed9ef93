"""A pipeline's ONNX Runtime sessions open side by side (runtime/pipelines.py): every graph gets its
session, and a graph that cannot be opened is one error naming it, with the others closed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mmedge.errors import ArtifactError
from mmedge.runtime.manifest import read_manifest

pytest.importorskip("onnxruntime")


def test_every_graph_gets_its_session(golden_onnx: dict[str, Path]) -> None:
    from mmedge.runtime.pipelines import Pipeline

    root = golden_onnx["captioner"]
    m = read_manifest(root)
    p = Pipeline(root, m, "onnxruntime")
    assert list(p.sessions) == [g.name for g in m.graphs] and len(p.sessions) == 3
    p.close()


def test_a_graph_that_cannot_be_opened_is_one_error(golden_onnx: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from mmedge.runtime import pipelines
    from mmedge.runtime.pipelines import Pipeline

    root = tmp_path / "art"
    shutil.copytree(golden_onnx["captioner"], root)
    m = read_manifest(root)
    broken = next(g for g in m.graphs if g.name == "decoder_init")
    (root / broken.file).write_bytes(b"not a graph")
    closed: list[str] = []
    real_close = pipelines.Session.close

    def spy(self) -> None:
        closed.append(str(self.path))
        real_close(self)

    monkeypatch.setattr(pipelines.Session, "close", spy)
    with pytest.raises(ArtifactError, match=r"decoder_init\.onnx: ONNX Runtime cannot load it"):
        Pipeline(root, m, "onnxruntime")
    assert sorted(Path(c).name for c in closed) == ["decoder_step.onnx", "encoder.onnx"]

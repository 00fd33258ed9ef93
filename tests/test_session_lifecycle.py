"""One session lifecycle for every backend (issue #17 item 3): the base Session owns the checks,
the timing and `close()`; pipelines close their sessions; both work as context managers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mmedge.errors import ArtifactError, InputError
from mmedge.runtime import load
from mmedge.runtime.manifest import read_manifest

ROOT = Path(__file__).resolve().parent.parent
SCENE = ROOT / "data" / "examples" / "scenes" / "scene0.png"
BACKENDS = ["onnxruntime", "openvino"]


@pytest.fixture(scope="module")
def captioner(cli_onnx: dict[str, Path]) -> Path:
    return cli_onnx["captioner"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_with_closes_every_session_and_a_closed_one_refuses_to_run(captioner: Path, backend: str) -> None:
    pytest.importorskip(backend)
    with load(captioner, backend) as cap:
        first = cap.caption([str(SCENE)])[0].tokens
        sessions = list(cap.sessions.values())
    assert first and all(s._closed for s in sessions)
    step = cap.sessions["decoder_step"]
    with pytest.raises(InputError, match=r"^decoder_step\.onnx: this \w+ session is closed$"):
        step.run({})
    cap.close()  # idempotent
    with load(captioner, backend) as again:  # closing one pipeline leaves the next one working
        assert again.caption([str(SCENE)])[0].tokens == first


def test_a_session_is_its_own_context_manager(captioner: Path) -> None:
    pytest.importorskip("onnxruntime")
    from mmedge.runtime.session import open_session

    m = read_manifest(captioner)
    g = m.graph("decoder_init")
    feats = np.zeros([1] + [d if isinstance(d, int) else 1 for d in g.inputs[0].shape[1:]], np.float32)
    with open_session("onnxruntime", captioner / g.file, g.inputs, g.outputs) as s:
        out = s.run({g.inputs[0].name: feats})
        assert set(out) >= {o.name for o in g.outputs}
    assert s._closed and s.timing.calls  # timing survives close, for the caller to read


def test_a_graph_that_fails_to_open_closes_the_ones_opened_before(captioner: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    from mmedge.runtime import session as session_mod

    art = tmp_path / "art"
    shutil.copytree(captioner, art)
    opened: list = []
    real = session_mod.open_session

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(args[1]).name == "decoder_step.onnx":  # (the graphs open side by side: fail one by name)
            raise ArtifactError("third graph: broken")
        s = real(*args, **kwargs)
        opened.append(s)
        return s

    monkeypatch.setattr("mmedge.runtime.pipelines.open_session", spy)
    with pytest.raises(ArtifactError, match="third graph"):
        load(art)
    assert len(opened) == 2 and all(s._closed for s in opened)

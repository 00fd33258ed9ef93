"""The runtime's TensorRT session without TensorRT, a GPU, torch or onnx (fakes: tests/trt_fakes.py).

In the torch-free jobs (.ci/floors.sh, .ci/pythons.sh on Python 3.8-3.12): what a Jetson board
runs. TensorRT dtypes are mapped by mmedge's own table, never by `trt.nptype`, which on TensorRT
8.5 (JetPack 5) raises for every binding under numpy >= 1.24.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
from trt_fakes import SPECS_IN, SPECS_OUT, DataType, FakeCudart, fake_gpu, fake_tensorrt  # noqa: F401 - a fixture

from mmedge.errors import ArtifactError
from mmedge.runtime.backends import tensorrt as trtrt

EXPECTED = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
            "BOOL": np.bool_, "UINT8": np.uint8}


@pytest.mark.parametrize("member", list(DataType), ids=lambda m: m.name)
def test_every_tensorrt_type_maps_to_numpy_or_one_clear_error(member: DataType) -> None:
    if member.name in EXPECTED:
        assert trtrt.numpy_dtype(member) == np.dtype(EXPECTED[member.name])
    else:  # FP8, BF16, INT4: numpy has no such dtype
        with pytest.raises(ArtifactError, match=f"x.engine: tensor 'y' has TensorRT type {member.name}, which "
                                                f"numpy has no dtype for .* FLOAT, HALF, INT8, INT32, INT64, BOOL"):
            trtrt.numpy_dtype(member, "x.engine: tensor 'y'")


def test_types_are_keyed_by_name_as_every_tensorrt_release_spells_them() -> None:
    # a pybind11 enum member without `.name` (old pybind11) still prints as 'DataType.HALF'
    class Legacy:
        def __str__(self) -> str:
            return "DataType.HALF"

    assert trtrt.numpy_dtype(Legacy()) == np.float16
    assert trtrt.numpy_dtype(types.SimpleNamespace(name="BOOL")) == np.bool_
    assert trtrt.trt_dtype_name(DataType.INT64) == "INT64"


def test_fake_nptype_raises_like_tensorrt_8_5_on_new_numpy() -> None:
    trt = fake_tensorrt(FakeCudart())
    with pytest.raises(AttributeError, match="no attribute 'bool'"):
        trt.nptype(trt.DataType.FLOAT)


@pytest.mark.parametrize("version", ["8.5.2.2", "8.6.1", "10.3.0.30", "11.1.0"])
def test_session_runs_without_nptype(version: str, fake_gpu: tuple[FakeCudart, Path],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cudart, engine = fake_gpu
    monkeypatch.setattr(trtrt, "import_tensorrt", lambda *a: fake_tensorrt(cudart, version))
    (engine.parent / "tensorrt.json").write_text(json.dumps(
        {"tensorrt": version, "gpu": {"name": "Fake Orin", "compute_capability": "8.7"}}))
    sess = trtrt.TrtSession(engine, SPECS_IN, SPECS_OUT)
    assert sess._dtypes["prev_word"] == np.int32 and sess._dtypes["feats"] == np.float32
    feats = np.arange(8, dtype=np.float32).reshape(2, 4)
    word = np.array([3, 5], np.int64)
    out = sess.run({"feats": feats, "prev_word": word, "h": np.ones((2, 2), np.float32)})
    np.testing.assert_array_equal(out["out"], feats * word[:, None] + 2)
    assert out["word"].dtype == np.int64 and out["word"].tolist() == [4, 6]
    sess.close()
    assert not cudart.mem


def test_engine_with_a_type_numpy_lacks_is_one_clear_error(fake_gpu: tuple[FakeCudart, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cudart, engine = fake_gpu
    monkeypatch.setattr(trtrt, "import_tensorrt", lambda *a: fake_tensorrt(cudart, types_={"out": "BF16"}))
    with pytest.raises(ArtifactError, match="step.engine: tensor 'out' has TensorRT type BF16"):
        trtrt.TrtSession(engine, SPECS_IN, SPECS_OUT)

"""The goldens still match what the PyTorch models compute, and cover every model."""

from __future__ import annotations

import numpy as np
import pytest

import make_golden
from mmedge.models import zoo


@pytest.mark.parametrize("name", zoo.names())
def test_golden_file_reproduces(name: str) -> None:
    path = make_golden.golden_path(name)
    assert path.exists(), f"{path} missing: run python tests/golden/make_golden.py"
    stored = np.load(path)
    fresh = make_golden.golden_outputs(name)
    assert sorted(stored.files) == sorted(fresh)
    for key, ref in fresh.items():
        got = stored[key]
        assert got.shape == ref.shape and got.dtype == ref.dtype, key
        scale = max(float(np.abs(ref).max()), 1e-6) if ref.dtype.kind == "f" else 1
        np.testing.assert_allclose(got, ref, atol=1e-5 * scale, rtol=0, err_msg=key)


def test_goldens_are_small() -> None:
    total = sum(make_golden.golden_path(n).stat().st_size for n in zoo.names())
    assert total < 2 * 1024 * 1024

"""Core ML packages are byte-identical across processes, not only within one.

coremltools writes the spec's map fields (metadata) in an order that depends on the process's
hash seed; `save_package` re-serialises the spec deterministically. Two exports in processes with
different PYTHONHASHSEED values must give the same bytes in every file.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("coremltools")
pytest.importorskip("torch")


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_coreml_export_is_byte_identical_across_processes(tmp_path: Path) -> None:
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"seed{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-m", "mmedge", "export", "soundnet", "--format", "coreml", "--config",
                        "tiny", "--out", str(out)], check=True, env=env, cwd=tmp_path, capture_output=True)
        outs.append(_digests(out))
    assert any(k.endswith("model.mlmodel") for k in outs[0])
    assert outs[0] == outs[1]

"""The torch-free runtime: numpy + one backend package. Never imports torch.

`load(artifact_dir, backend=None)` returns the pipeline named by the artifact's
manifest: `Captioner`, `AudioEncoder` or `Refocuser`. They are imported on first
use (PEP 562), so the data-only modules (runtime.options, runtime.backends) import
without numpy: the CLI builds its --help from them.
"""

from typing import Any

__all__ = ["load", "Pipeline", "Captioner", "AudioEncoder", "Refocuser"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mmedge.runtime import pipelines

        return getattr(pipelines, name)
    raise AttributeError(f"module 'mmedge.runtime' has no attribute {name!r}")

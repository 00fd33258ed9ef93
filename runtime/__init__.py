"""The torch-free runtime: numpy + one backend package. Never imports torch.

`load(artifact_dir, backend=None)` returns the pipeline named by the artifact's
manifest: `Captioner`, `AudioEncoder` or `Refocuser`.
"""

from mmedge.runtime.pipelines import AudioEncoder, Captioner, Pipeline, Refocuser, load

__all__ = ["load", "Pipeline", "Captioner", "AudioEncoder", "Refocuser"]

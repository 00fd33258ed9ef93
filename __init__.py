"""mmedge: PyTorch multi-modal models to edge runtimes, with a torch-free runtime.

The package root is the repository root (see pyproject's package-dir): `models/`,
`export/`, `runtime/` and `calibration/` import as `mmedge.models`, ... Importing
`mmedge` itself pulls in nothing heavy, so the runtime works without torch.
"""

__version__ = "0.1.0"

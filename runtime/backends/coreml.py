"""Core ML session: an ML Program package (`.mlpackage`) run by `coremltools` on macOS.

Core ML predicts only on macOS (and iOS); coremltools converts and inspects
packages on Linux too. So a package is checked wherever it is opened (is it a
Core ML package at all, does it hold the graph the manifest names), and only
then does a non-macOS machine get one clear error: "Core ML predictions need
macOS". The session keeps the runtime's interface exactly as for ONNX:

* int64 inputs (the captioner's `prev_word`) are cast to Core ML's int32;
* an image input (`ct.ImageType`, the captioner's encoder by default) still
  takes the normalised float tensor the runtime's preprocessing produces; the
  session undoes the normalisation (scale, mean, std from the package's
  metadata), checks the result is an 8-bit RGB image and passes one pixel
  buffer per image. Images read from files always are; a float tensor that is
  not (random test data) is refused with a message naming the option that
  exports a tensor input instead.

The graph file in an artifact manifest is the package's `Manifest.json` (an
artifact lists files, and a package is a folder); the package folder itself is
accepted too.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.errors import ArtifactError, InputError, MissingDependencyError, MmedgeError
from mmedge.runtime.manifest import TensorSpec
from mmedge.runtime.session import Feeds, Session

PACKAGE_MANIFEST = "Manifest.json"
PREPROCESSING_KEY = "mmedge.preprocessing"
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


class CoreMLUnavailableError(MissingDependencyError):
    """coremltools is installed but this OS cannot run Core ML models."""

    def __init__(self, path: Path) -> None:
        MmedgeError.__init__(self, f"{path}: Core ML predictions need macOS (this machine runs "
                                   f"{platform.system() or sys.platform}); the package was checked and can be "
                                   f"run on a Mac or an iPhone, or use the ONNX artifact here")
        self.package, self.extra = "coremltools", "coreml"


def package_dir(path: str | Path) -> Path:
    """The `.mlpackage` folder for `path` (the folder or its Manifest.json), checked to be one.

    Reads only the package's own index (JSON), so it works without coremltools.
    """
    p = Path(path)
    pkg = p.parent if p.name == PACKAGE_MANIFEST else p
    index = pkg / PACKAGE_MANIFEST
    if not pkg.is_dir():
        what = "a file" if pkg.exists() else "missing"
        raise ArtifactError(f"{pkg}: not a Core ML package ({what}; expected a .mlpackage folder "
                            f"with {PACKAGE_MANIFEST})")
    if not index.is_file():
        raise ArtifactError(f"{pkg}: not a Core ML package (no {PACKAGE_MANIFEST} inside)")
    try:
        doc = json.loads(index.read_text(encoding="utf-8"))
        root = doc["rootModelIdentifier"]
        entry = doc["itemInfoEntries"][root]
        rel = entry["path"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ArtifactError(f"{index}: not a Core ML package index ({e.__class__.__name__}: {e})") from None
    if not isinstance(rel, str) or rel.startswith(("/", "\\")) or ".." in Path(rel).parts:
        raise ArtifactError(f"{index}: root model path {rel!r} points outside the package")
    spec = pkg / "Data" / rel
    if not spec.is_file():
        raise ArtifactError(f"{pkg}: not a Core ML package (its root model {('Data/' + rel)!r} is missing)")
    return pkg


class CoreMLSession(Session):
    backend = "coreml"

    def __init__(self, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec],
                 compute_units: str = "ALL", threads: int | None = None) -> None:
        # `threads` is accepted for the common --threads option; Core ML schedules its own threads.
        super().__init__(path, inputs, outputs)
        import logging

        logging.getLogger("coremltools").setLevel(logging.ERROR)  # its import-time version notes
        import coremltools as ct

        units = str(compute_units).upper()
        if units not in COMPUTE_UNITS:
            raise InputError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}, got {compute_units!r}")
        self.package = package_dir(path)
        self.path = self.package  # input errors name `<graph>.mlpackage`, not the Manifest.json inside it
        try:
            self.model = ct.models.MLModel(str(self.package), compute_units=ct.ComputeUnit[units])
            spec = self.model.get_spec()
        except Exception as e:  # Core ML's own errors: one line naming the package
            first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
            raise ArtifactError(f"{self.package}: Core ML cannot load it ({first[:200]})") from None
        desc = spec.description
        self._check_names(self.package, [i.name for i in desc.input], [o.name for o in desc.output], "package",
                          "package")
        self._images = {i.name for i in desc.input if i.type.WhichOneof("Type") == "imageType"}
        self._int32 = {i.name for i in desc.input if i.type.WhichOneof("Type") == "multiArrayType"
                       and i.type.multiArrayType.dataType == i.type.multiArrayType.INT32}
        self._out_dtype = {t.name: np.dtype(t.dtype) for t in outputs}
        self._pre: dict[str, Any] = {}
        if self._images:
            raw = desc.metadata.userDefined.get(PREPROCESSING_KEY)
            if raw is None:
                raise ArtifactError(f"{self.package}: image input without {PREPROCESSING_KEY} metadata "
                                    f"(mean/std); re-export it with mmedge")
            self._pre = json.loads(raw)

    def _pixels(self, name: str, x: np.ndarray) -> np.ndarray:
        """Normalised [B, 3, H, W] float -> [B, H, W, 3] uint8, refusing what no 8-bit image gives."""
        mean = np.asarray(self._pre["mean"], np.float64)[:, None, None]
        std = np.asarray(self._pre["std"], np.float64)[:, None, None]
        scale = float(self._pre.get("scale", 1.0 / 255.0))
        p = (x.astype(np.float64) * std + mean) / scale
        r = np.rint(p)
        if r.size and (r.min() < 0 or r.max() > 255 or float(np.abs(p - r).max()) > 1e-2):
            raise InputError(f"{self.package.name}: input {name!r} takes 8-bit RGB images (a pixel buffer, "
                             f"ct.ImageType) and this tensor is not one once the normalisation is undone; "
                             f"export with --export-option encoder_input=tensor to feed float tensors")
        return np.ascontiguousarray(r.astype(np.uint8).transpose(0, 2, 3, 1))

    def _run(self, feeds: Feeds) -> Feeds:
        feeds = self._all_feeds(feeds)
        arrays: dict[str, Any] = {}
        for name, arr in feeds.items():
            if name in self._images:
                arrays[name] = self._pixels(name, arr)
            elif name in self._int32:
                arrays[name] = np.ascontiguousarray(arr, dtype=np.int32)
            else:
                arrays[name] = np.ascontiguousarray(arr, dtype=np.float32)
        if not self._images:
            outs = [self.model.predict(arrays)]
        else:  # a pixel buffer is one image: predict image by image
            from PIL import Image

            n = next(iter(arrays[k] for k in self._images)).shape[0]
            outs = []
            for i in range(n):
                one = {k: (Image.fromarray(v[i], "RGB") if k in self._images else v[i:i + 1])
                       for k, v in arrays.items()}
                outs.append(self.model.predict(one))
        return {name: np.concatenate([np.asarray(o[name]) for o in outs], axis=0).astype(dtype, copy=False)
                if len(outs) > 1 else np.asarray(outs[0][name]).astype(dtype, copy=False)
                for name, dtype in self._out_dtype.items()}

    def _close(self) -> None:
        self.model = None


def create_session(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], **options: Any) -> CoreMLSession:
    package_dir(path)  # a broken package is named on every OS, before the platform check
    if sys.platform != "darwin":
        raise CoreMLUnavailableError(Path(path).parent if Path(path).name == PACKAGE_MANIFEST else Path(path))
    return CoreMLSession(path, inputs, outputs, **options)

"""`mmedge package mobile`: one zip per app, for iOS (Core ML) and Android (ONNX Runtime).

    mmedge package mobile --artifact A [--artifact B ...] --out app.zip
    mmedge package mobile --verify app.zip

Artifacts: `coreml` ones become `ios/<model>/<graph>.mlpackage`, `onnx` ones are
converted to ONNX Runtime's mobile format (`android/<model>/<graph>.ort`, with
`onnxruntime.tools.convert_onnx_models_to_ort`, fixed optimisations for ARM)
together with the reduced-operator configuration that ORT's build script takes
(`build.sh --include_ops_by_config android/required_operators_and_types.config
--enable_reduced_operator_type_support`). Per model the zip holds
`preprocessing.json`, the vocabulary / labels, for captioners `decoding.json`
(the beam-search loop spelled out: graphs, which output feeds which input,
start/end tokens, max length), and `test_vectors/` (raw little-endian arrays
described in `index.json`: inputs, expected outputs, expected tokens) so an
app's own implementation can be checked on the device, with a per-step beam trace
(`beam.trace.*`, recorded by `beam_search(trace=...)` on the artifact's graphs) and
preprocessing vectors from an RGBA image that is not the model's size. `manifest.json`
lists the sha256 and size of every other file and the minimum OS / runtime versions;
`MODEL_CARD.md`, `LICENSE`, a label file per classifier head and `README.md` (Kotlin and
Swift feeds) are for the app developer. `ports/js/` in the repository is a second
implementation (JavaScript, onnxruntime-node) that replays a bundle's vectors.

The zip is written to a temporary file next to `--out` and renamed into place
(`os.replace`): a failed packaging leaves nothing. Entries are sorted and dated
1980-01-01; every file is reproducible except the `.ort` files, whose table order
ONNX Runtime's serializer does not keep from run to run (and so `manifest.json`).

`--verify` extracts safely (absolute paths, `..`, links and oversized archives
are refused before anything is written), checks every sha256 and that nothing
unlisted was added, then replays the Android test vectors through
`mmedge.runtime` (ONNX Runtime reads `.ort` files) with the parity criteria of
`mmedge parity`, beam-search tokens included; on macOS the iOS packages too.

This module packages; the bundle's parts are written by export/mobile_spec.py
(decoding.json, preprocessing.json, labels), export/mobile_vectors.py (test_vectors/),
export/mobile_docs.py (README.md, MODEL_CARD.md, LICENSE, minimum versions) and checked
by export/mobile_verify.py (`--verify`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmedge.atomic import atomic_path
from mmedge.errors import ArtifactError, InputError, require
from mmedge.export.mobile_docs import LICENSE_TEXT, README, minimum_versions, model_card, readme
from mmedge.export.mobile_spec import decoding_doc, head_labels, preprocessing_doc
from mmedge.export.mobile_vectors import (PREP_SOURCE, VECTORS_SCHEMA, beam_trace, preprocess_vectors, read_vectors,
                                          write_vectors)
from mmedge.export.mobile_verify import (BUNDLE_FORMAT, BUNDLE_SCHEMA, BUNDLE_VERSION, MAX_ENTRIES,
                                         MAX_MEMBER_RATIO, MAX_RATIO, MAX_UNPACKED, check_files, extract, verify)
from mmedge.export.mobile_versions import add_ort_requirements
from mmedge.export.package import PackageRequest, register_packager
from mmedge.runtime.manifest import (MANIFEST, GraphEntry, Manifest, artifact_file, load_npz, load_test_vectors,
                                    read_manifest, sha256_file)

__all__ = ["BUNDLE_FORMAT", "BUNDLE_SCHEMA", "BUNDLE_VERSION", "FORMATS", "LICENSE_TEXT", "MAX_ENTRIES",
           "MAX_MEMBER_RATIO", "MAX_RATIO", "MAX_UNPACKED", "ORT_CONFIG", "PREP_SOURCE", "README", "VECTORS_SCHEMA",
           "build", "check_bundle", "check_files", "convert_to_ort", "extract", "package_mobile", "read_vectors",
           "verify"]

FORMATS = {"coreml": "ios", "onnx": "android"}
ORT_CONFIG = "required_operators_and_types.config"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _artifacts(paths: list[Path]) -> dict[str, dict[str, tuple[Path, Manifest]]]:
    """model -> platform -> (artifact dir, manifest); every problem named before any work."""
    if not paths:
        raise InputError("package mobile needs at least one --artifact (onnx and/or coreml)")
    models: dict[str, dict[str, tuple[Path, Manifest]]] = {}
    for p in paths:
        m = read_manifest(p)  # verifies every file's sha256
        platform = FORMATS.get(m.format)
        if platform is None:
            raise InputError(f"{p}: a {m.format} artifact; mobile packages take onnx (Android) and coreml (iOS) "
                             f"artifacts")
        per = models.setdefault(m.model, {})
        if platform in per:
            raise InputError(f"{p}: a second {m.format} artifact of {m.model} (first: {per[platform][0]}); "
                             f"one per platform and model")
        for other_dir, other in per.values():
            if other.config != m.config:
                raise InputError(f"{p}: {m.model} config {m.config!r} but {other_dir} is {other.config!r}; "
                                 f"package one build of each model")
            _same_vectors(other_dir, other, p, m)
        per[platform] = (Path(p), m)
    return models


def bundle_graph(g: GraphEntry) -> dict[str, Any]:
    """A graph of the bundle's manifest: its interface only (mobile-bundle.schema.json's graph);
    graph hints stay in the artifact's manifest, for the exporters and recipes that read them."""
    doc = g.to_json()
    doc.pop("hints", None)
    return doc


def _vectors(root: Path, m: Manifest) -> dict[str, np.ndarray]:
    path = root / m.extra.vectors_file
    if not path.is_file() and not path.is_symlink():
        raise ArtifactError(f"{path}: missing; the artifact has no test vectors to ship")
    return load_test_vectors(root, m)  # checked against the graphs: no pickles, no bombs


def _same_vectors(a_dir: Path, a: Manifest, b_dir: Path, b: Manifest) -> None:
    va, vb = _vectors(a_dir, a), _vectors(b_dir, b)
    if set(va) != set(vb) or any(va[k].shape != vb[k].shape or not np.array_equal(va[k], vb[k]) for k in va):
        raise InputError(f"{b_dir}: its reference outputs differ from {a_dir}'s; the artifacts come from "
                         f"different weights (package the builds of one model)")


def convert_to_ort(onnx_dir: Path, out_dir: Path, type_reduction: bool = True) -> Path:
    """`.onnx` files under onnx_dir -> `.ort` files under out_dir (same layout) + the reduced-ops config."""
    import logging

    for module in ("onnxruntime", "onnx"):  # the converter imports onnx; a device install may lack it
        require(module, "mmedge package mobile: ONNX Runtime's ORT-format converter", extra="onnx")
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)  # it logs INFO lines to stderr
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            # Fixed: CPU-EP optimisations baked in (FusedConv/FusedGemm...); Runtime: `.with_runtime_opt.ort`,
            # basic optimisations only, the rest replayed at load time: for NNAPI/XNNPACK/CoreML EPs
            convert_onnx_models_to_ort(onnx_dir, output_dir=out_dir,
                                       optimization_styles=[OptimizationStyle.Fixed, OptimizationStyle.Runtime],
                                       target_platform="arm", enable_type_reduction=type_reduction)
    except Exception as e:  # ORT's converter: one line naming the failing model (it prints which)
        failing = [ln for ln in log.getvalue().splitlines() if ln.startswith("Error converting")]
        detail = failing[-1] if failing else (str(e).strip().splitlines() or [e.__class__.__name__])[0]
        raise InputError(f"ONNX Runtime mobile (.ort) conversion failed: {detail[:300]}") from None
    config = out_dir / (ORT_CONFIG if type_reduction else "required_operators.config")
    if not config.is_file():
        raise InputError(f"ONNX Runtime did not write {config.name}")
    # its comments name the models by absolute (temporary) path: make them bundle-relative
    prefix = str(out_dir.resolve().parent) + os.sep
    for c in (config, config.with_suffix(".with_runtime_opt.config")):
        if c.is_file():  # the Runtime style also lists its temporary fixed-style conversion: name it stably
            text = re.sub(r"(?m)^# - .*?\.without_runtime_opt[/\\](.*)$", r"# - (fixed style, for the config) \1",
                          c.read_text(encoding="utf-8").replace(prefix, ""))
            c.write_text(text, encoding="utf-8")
    return config


def _stage(models: dict[str, dict[str, tuple[Path, Manifest]]], stage: Path, type_reduction: bool
           ) -> dict[str, Any]:
    """Lay out every file of the bundle under `stage`; returns the bundle manifest's `models`."""
    doc: dict[str, Any] = {}
    onnx_src = stage.parent / (stage.name + "-onnx")
    has_android = any("android" in per for per in models.values())
    for model, per in sorted(models.items()):
        entry: dict[str, Any] = {}
        files: dict[str, dict[str, str]] = {}
        for platform, (root, m) in sorted(per.items()):
            graphs = []
            for g in m.graphs:
                if platform == "ios":
                    from mmedge.runtime.backends.coreml import package_dir

                    pkg = package_dir(root / g.file)
                    rel = f"ios/{model}/{g.name}.mlpackage"
                    shutil.copytree(pkg, stage / rel)
                else:
                    src = root / g.file
                    (onnx_src / model).mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, onnx_src / model / f"{g.name}.onnx")
                    rel = f"android/{model}/{g.name}.ort"
                files.setdefault(g.name, {})[platform] = rel
                graphs.append(bundle_graph(replace(g, file=rel)))
            entry[platform] = {"format": m.format, "precision": m.precision, "graphs": graphs}
            if platform == "ios" and (root / "image_vectors.npz").is_file():
                entry[platform]["image_input"] = True
        base = next(iter(per.values()))
        m = base[1]
        d = stage / model
        d.mkdir(parents=True)
        (d / "preprocessing.json").write_text(json.dumps(preprocessing_doc(m, per), indent=2, sort_keys=True)
                                              + "\n", encoding="utf-8")
        entry.update({"config": m.config, "pipeline": m.pipeline, "preprocessing": f"{model}/preprocessing.json",
                      "test_vectors": f"{model}/test_vectors", "model_config": m.model_config,
                      # extra.test_vectors names the artifact's npz, which is not in the zip
                      "extra": replace(m.extra, test_vectors=None).to_json()})
        if m.vocabulary is not None:
            (d / "vocabulary.json").write_text(json.dumps(m.vocabulary, indent=1, sort_keys=True, ensure_ascii=False)
                                               + "\n", encoding="utf-8")
            entry["vocabulary"] = f"{model}/vocabulary.json"
        if m.labels:
            (d / "labels.json").write_text(json.dumps(m.labels, indent=1) + "\n", encoding="utf-8")
            entry["labels"] = f"{model}/labels.json"
        heads = head_labels(m)
        if heads:
            entry["head_labels"] = {}
            for head, (labels, named) in heads.items():
                rel = f"{model}/labels.{head}.json"
                (d / f"labels.{head}.json").write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")
                entry["head_labels"][head] = {"file": rel, "named": named}
        if m.pipeline == "captioner":
            (d / "decoding.json").write_text(json.dumps(decoding_doc(model, m, files), indent=2) + "\n",
                                             encoding="utf-8")
            entry["decoding"] = f"{model}/decoding.json"
        image = None
        if "ios" in per and (per["ios"][0] / "image_vectors.npz").is_file():
            image = load_npz(artifact_file(per["ios"][0], "image_vectors.npz", "test vectors"))
        vectors = _vectors(*base)
        trace = beam_trace(*per["android"], vectors) if "android" in per else None
        write_vectors(d / "test_vectors", vectors, m, image, m.vocabulary,
                      {p: pm.precision for p, (_, pm) in per.items()}, trace, preprocess_vectors(m))
        doc[model] = entry
    if has_android:
        config = convert_to_ort(onnx_src, stage / "android", type_reduction)
        shutil.rmtree(onnx_src, ignore_errors=True)
        for model, entry in doc.items():
            if "android" in entry:
                entry["android"]["ort_config"] = f"android/{config.name}"
    return doc


def _zip(stage: Path, out: Path) -> None:
    """Write the staged tree as a zip next to `out`, then rename it into place."""
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(stage.rglob("*"), key=lambda q: q.relative_to(stage).as_posix()):
            if not p.is_file():
                continue
            info = zipfile.ZipInfo(p.relative_to(stage).as_posix(), ZIP_DATE)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(p, "rb") as src, z.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def build(req: PackageRequest) -> Path:
    out = Path(req.out)
    if out.suffix.lower() != ".zip":
        raise InputError(f"{out}: a mobile bundle is a .zip file")
    if out.is_dir():
        raise InputError(f"{out}: is a directory; give the zip file to write")
    models = _artifacts([Path(a) for a in req.artifacts])
    type_reduction = bool(req.options.get("type_reduction", True))
    with tempfile.TemporaryDirectory(prefix="mmedge-mobile-") as work:
        stage = Path(work) / "bundle"
        stage.mkdir()
        doc = _stage(models, stage, type_reduction)
        ort_config = next((e["android"]["ort_config"].split("/")[-1] for e in doc.values() if "android" in e), None)
        (stage / "README.md").write_text(readme(models, ort_config or ORT_CONFIG), encoding="utf-8")
        from mmedge.export.artifact import tool_versions

        requirements = minimum_versions(stage, doc)
        add_ort_requirements(stage, doc, requirements)  # ORT format floor, runtime-optimised models, min iOS
        (stage / "MODEL_CARD.md").write_text(model_card(models, doc, requirements), encoding="utf-8")
        (stage / "LICENSE").write_text(LICENSE_TEXT, encoding="utf-8")
        listed = [p for p in sorted(stage.rglob("*")) if p.is_file()]
        manifest = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION,
                    "tools": tool_versions("onnxruntime", "coremltools"), "models": doc,
                    "requirements": requirements,
                    "sizes": {p.relative_to(stage).as_posix(): p.stat().st_size for p in listed},
                    "files": {p.relative_to(stage).as_posix(): sha256_file(p) for p in listed}}
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _zip(stage, out)
    return out


def check_bundle(bundle: Path, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> list[Any]:
    """`--verify`: `verify()` with a line per platform and model through `log` (stderr: stdout stays
    for --json); returns the parity reports (runtime.parity.ParityReport)."""
    reports = verify(Path(bundle))
    for r in reports:
        worst = max((m.max_rel for m in r.outputs), default=0.0)
        beam = f", beam tokens equal {r.beam['tokens_equal']}" if r.beam else ""
        log(f"{r.artifact}: parity ok ({r.precision}, max rel error {worst:.2e}{beam})")
    return reports


@register_packager("mobile")
def package_mobile(req: PackageRequest) -> Path:
    """Write the bundle, or with the `verify` option re-check one (check_bundle gives its reports)."""
    verify_path = req.options.get("verify")
    if verify_path is not None:
        check_bundle(Path(verify_path))
        return Path(verify_path)
    return build(req)

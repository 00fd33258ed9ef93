"""The mobile bundle's documents for the app developer: README.md (layout, Kotlin and Swift
feeds), MODEL_CARD.md, LICENSE, and the minimum OS / runtime versions (`manifest.json`
`requirements`) that both the card and the manifest state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmedge.runtime.manifest import Manifest


README = """# {title}

Built by mmedge {version} from: {sources}.

## What is here

{layout}

* `manifest.json`: every file with its sha256; `mmedge package mobile --verify <this zip>`
  re-checks them and replays the Android test vectors through ONNX Runtime.
* `<model>/preprocessing.json`: what to do to an input before the first graph.
* `<model>/decoding.json` (captioners): the beam-search loop, step by step: which output feeds which
  input, start/end tokens, max length. Graph and tensor names are a stable interface.
* `<model>/test_vectors/`: `index.json` describes raw little-endian arrays (`*.bin`): the inputs of
  every graph, the expected outputs, and the expected beam-search tokens. Run them through your app's
  own code on the device and compare with `index.json`'s criterion.

## iOS (Core ML)

Add `ios/<model>/*.mlpackage` to the Xcode project (Xcode compiles them to `.mlmodelc`). Inputs and
outputs carry descriptions; `user_defined_metadata` holds the preprocessing and the vocabulary.
The captioner's encoder takes a pixel buffer (RGB, the model's size) unless it was exported with
`encoder_input=tensor`; `prev_word` is int32 on iOS. Batch axes are flexible.

## Android (ONNX Runtime)

`android/<model>/<graph>.ort` are ONNX Runtime mobile-format models with fixed optimisations for
ARM baked in (FusedConv/FusedGemm contrib ops): use them with the CPU execution provider.
`android/<model>/<graph>.with_runtime_opt.ort` (ORT's "Runtime" optimisation style: basic
optimisations only, the rest replayed at load time on what the EP leaves to the CPU) are for the
NNAPI, XNNPACK and CoreML execution providers; set the session option
`session.enable_saved_runtime_optimizations=1` for them (`manifest.json`:
`models.<model>.android.runtime_optimized`).

Runtime versions (`manifest.json` `requirements.android.ort`): the files are ORT format version N
(their header), written by the onnxruntime release named there; releases older than
`format_readable_from` cannot read them, and only the writing release has run them. Use
`onnxruntime-android` of that release or newer, or build a smaller runtime from that same release
that contains only the operators they use:

    ./build.sh --android --minimal_build --include_ops_by_config android/{ort_config} \\
        --enable_reduced_operator_type_support ...

(runtime-optimised models: `required_operators_and_types.with_runtime_opt.config`).

## The captioner's feeds on each platform (the same as decoding.json)

| graph | input | shape | dtype (Android / iOS) |
| --- | --- | --- | --- |
| encoder | image | [B, 3, S, S] (iOS pixel-buffer builds: an S x S RGB image) | float32 |
| decoder_init | features | [B, P, C] = encoder.features [B, s, s, C] reshaped | float32 |
| decoder_step | features, att1 | [rows, P, C], [rows, P, A]: the row's image | float32 |
| decoder_step | prev_word | [rows] | int64 / int32 |
| decoder_step | h, c | [rows, D] | float32 |

Outputs of decoder_step: log_probs [rows, V], h_next, c_next [rows, D], alpha [rows, P]. Running
scores are float32 sums; ties go to the lower index (decoding.json: tie_breaking).

Kotlin (onnxruntime-android), one decoder_step:

```kotlin
val env = OrtEnvironment.getEnvironment()
val step = env.createSession(File(dir, "android/captioner/decoder_step.ort").readBytes())
val feeds = mapOf(
    "features" to OnnxTensor.createTensor(env, FloatBuffer.wrap(features), longArrayOf(rows, P, C)),
    "att1" to OnnxTensor.createTensor(env, FloatBuffer.wrap(att1), longArrayOf(rows, P, A)),
    "prev_word" to OnnxTensor.createTensor(env, LongBuffer.wrap(prevWords), longArrayOf(rows)),
    "h" to OnnxTensor.createTensor(env, FloatBuffer.wrap(h), longArrayOf(rows, D)),
    "c" to OnnxTensor.createTensor(env, FloatBuffer.wrap(c), longArrayOf(rows, D)))
step.run(feeds).use {{ out ->
    val logProbs = (out.get("log_probs").get() as OnnxTensor).floatBuffer  // [rows, V]
    val hNext = (out.get("h_next").get() as OnnxTensor).floatBuffer
    val cNext = (out.get("c_next").get() as OnnxTensor).floatBuffer
}}
```

Swift (onnxruntime-objc with the same .ort files; Core ML packages take the same names with
prev_word as Int32):

```swift
let env = try ORTEnv(loggingLevel: .warning)
let step = try ORTSession(env: env, modelPath: dir + "/android/captioner/decoder_step.ort", sessionOptions: nil)
func tensor(_ data: NSMutableData, _ type: ORTTensorElementDataType, _ shape: [NSNumber]) throws -> ORTValue {{
    try ORTValue(tensorData: data, elementType: type, shape: shape)
}}
let out = try step.run(withInputs: [
    "features": tensor(features, .float, [rows, P, C]), "att1": tensor(att1, .float, [rows, P, A]),
    "prev_word": tensor(prevWords, .int64, [rows]),  // Int64 values
    "h": tensor(h, .float, [rows, D]), "c": tensor(c, .float, [rows, D])],
    outputNames: ["log_probs", "h_next", "c_next", "alpha"], runOptions: nil)
let logProbs = try out["log_probs"]!.tensorData()  // Float32, [rows, V]
```

With Vision and Core ML on iOS: `request.imageCropAndScaleOption = .scaleFill` (the default
`.centerCrop` changes every caption of a non-square photo; see preprocessing.json).

A complete second implementation of the beam search, in JavaScript on onnxruntime-node (the API of
onnxruntime-web and onnxruntime-react-native), is `ports/js/decoder.mjs` in the mmedge
repository; `node ports/js/replay.mjs <unzipped bundle>` replays every test vector and the
per-step beam trace (`test_vectors/beam.trace.*`) with nothing but this bundle's files.

## Versions and what has run where

`manifest.json` `requirements` and `MODEL_CARD.md` give the minimum versions read from the files
(Core ML specification version, ORT format version and the onnxruntime release that wrote them),
`sizes` the bytes of every file. Checked while packaging and in mmedge's CI: the ONNX Runtime
test vectors (Python, and the JavaScript port on onnxruntime-node). Not run on any phone: Android,
iOS, NNAPI, Core ML on the Neural Engine.
"""


def readme(models: dict[str, dict[str, tuple[Path, Manifest]]], ort_config: str) -> str:
    from mmedge.export.artifact import tool_versions

    lines = []
    for model, per in sorted(models.items()):
        m = next(iter(per.values()))[1]
        for platform, (_, pm) in sorted(per.items()):
            where = "ios" if platform == "ios" else "android"
            graphs = ", ".join(g.name + (".mlpackage" if platform == "ios" else ".ort") for g in pm.graphs)
            lines.append(f"* `{where}/{model}/`: {graphs} ({pm.format}, {pm.precision})")
        extra = ["preprocessing.json", "test_vectors/"]
        if m.vocabulary is not None:
            extra += ["vocabulary.json", "decoding.json"]
        if m.labels:
            extra.append("labels.json")
        lines.append(f"* `{model}/`: {', '.join(extra)}")
    sources = ", ".join(f"{model} ({next(iter(per.values()))[1].config})" for model, per in sorted(models.items()))
    return README.format(title="mmedge mobile bundle", version=tool_versions()["mmedge"], sources=sources,
                         layout="\n".join(lines), ort_config=ort_config)


LICENSE_TEXT = """MIT License

Copyright (c) the mmedge authors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def minimum_versions(stage: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """Minimum OS / runtime versions, read from the files themselves and the tools that wrote them."""
    from mmedge.export.artifact import tool_versions

    out: dict[str, Any] = {}
    from mmedge.export.mobile_versions import COREML_MIN_OS, coreml_spec_version, ort_format_version

    specs = {coreml_spec_version(stage / g["file"]) for e in doc.values() if "ios" in e for g in e["ios"]["graphs"]}
    if specs:
        spec = max(specs)
        ios = COREML_MIN_OS.get(spec, {}).get("iOS", f"spec {spec}")
        out["ios"] = {"coreml_spec_version": spec, "minimum_ios": ios,
                      "note": "Core ML specification version of the .mlpackage files (7 = iOS 16 / macOS 13)"}
    orts = {str(ort_format_version(stage / g["file"])) for e in doc.values() if "android" in e
            for g in e["android"]["graphs"]}
    if any("android" in e for e in doc.values()):
        ort = tool_versions("onnxruntime").get("onnxruntime", "")
        out["android"] = {
            "ort_format_version": ",".join(sorted(orts)) or None, "written_by_onnxruntime": ort or None,
            "minimum_onnxruntime_android": ort or None,
            "note": f"the .ort files were written by onnxruntime {ort or '?'} (ORT format version "
                    f"{','.join(sorted(orts)) or '?'}): use onnxruntime-android / onnxruntime-objc / "
                    f"onnxruntime-react-native {ort or '?'} or newer; a reduced-operator build "
                    f"(required_operators_and_types.config) must be built from that same release. Older "
                    f"releases may read them (onnxruntime-node 1.30 does, in mmedge's CI) but are not "
                    f"guaranteed to. Android API level: the minSdkVersion of that onnxruntime-android release"}
    return out


def model_card(models: dict[str, dict[str, tuple[Path, Manifest]]], doc: dict[str, Any],
               requirements: dict[str, Any]) -> str:
    """MODEL_CARD.md: what each model is, its data, vocabulary, metrics and precision per platform,
    from the artifacts' manifests and a parity run of the ONNX graphs at packaging time."""
    from mmedge.export.artifact import tool_versions

    lines = ["# Model card", "", f"Bundle written by mmedge {tool_versions()['mmedge']}. Everything below comes "
             "from the artifacts' manifests and from checks run while packaging; nothing here ran on a phone.", ""]
    for model, per in sorted(models.items()):
        m = next(iter(per.values()))[1]
        lines += [f"## {model} ({m.config})", "", f"* pipeline: {m.pipeline}"]
        cal = m.extra.calibration.to_json() if m.extra.calibration is not None else None
        lines.append("* training data: not recorded in the artifact's manifest (see the model's own documentation)"
                     + (f"; int8 calibration data: {json.dumps(cal, sort_keys=True)[:300]}" if cal else ""))
        if m.vocabulary is not None:
            lines.append(f"* vocabulary: {len(m.vocabulary)} words (`{model}/vocabulary.json`, word -> id)")
        for head, info in sorted(doc[model].get("head_labels", {}).items()):
            lines.append(f"* output `{head}`: labels in `{info['file']}`"
                         + ("" if info["named"] else " (index labels: the model config names no classes for it)"))
        rep = m.extra.int8_report
        lines.append(f"* metrics: int8 report of the export: {json.dumps(rep, sort_keys=True)[:600]}" if rep else
                     "* metrics: none recorded in the manifest (no evaluation was run on real data by the export)")
        for platform, (root, pm) in sorted(per.items()):
            effect = "not measured here (Core ML predictions need macOS)"
            if platform == "android":
                try:
                    from mmedge.runtime.parity import check
                    from mmedge.runtime.pipelines import load

                    r = check(load(root, "onnxruntime"))
                    worst = max((x.max_rel for x in r.outputs), default=0.0)
                    effect = (f"on the test vectors (random inputs) vs the PyTorch fp32 reference: max relative "
                              f"error {worst:.2e}" + (f", beam tokens equal {r.beam['tokens_equal']}" if r.beam else ""))
                except Exception as e:  # noqa: BLE001 - the card states the failure rather than hiding the bundle
                    effect = f"parity run failed while packaging ({e.__class__.__name__})"
            lines.append(f"* {platform}: {pm.format} {pm.precision}; measured effect: {effect}")
        lines.append("")
    lines += ["## Minimum versions", ""]
    for platform, req in sorted(requirements.items()):
        lines.append(f"* {platform}: " + "; ".join(f"{k} {v}" for k, v in req.items() if k != "note" and v))
        lines.append(f"  ({req['note']})")
    lines += ["", "License: MIT (`LICENSE`).", ""]
    return "\n".join(lines)

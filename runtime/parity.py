"""Parity of an artifact with its PyTorch reference, without torch.

Every artifact carries `test_vectors.npz`: inputs and the PyTorch reference's
outputs for each graph (and, for captioners, the reference beam search's tokens),
written at export time. Replaying them through the runtime is the parity check
of DESIGN.md, and it runs wherever the runtime runs (a Jetson, a phone test rig).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.errors import ArtifactError, InputError, Mismatch
from mmedge.runtime.manifest import load_test_vectors
from mmedge.runtime.pipelines import Captioner, Pipeline, load
from mmedge.runtime.roles import INT8_REPORTED_ONLY

# max abs error allowed, as a fraction of the reference's max abs value (DESIGN.md)
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 2e-2}
# beam scores: |difference| <= SCORE_TOLERANCE x max(1, |score|). A relative bound, because a
# sum of 50 log-probs of a ResNet-101 captioner moves by ~1e-5 of its size between two fp32
# implementations whose encoder outputs agree to 1e-6.
SCORE_TOLERANCE = 1e-4
# int8 is judged by task metrics (the export's accuracy report, on real data); parity only guards
# against a broken build: every output's cosine similarity with the fp32 reference on the test
# vectors (random inputs, outside the calibrated ranges) must reach this. A wrong scale or a
# dropped node gives cosines far below it; good builds stay well above it (README, INT8 table).
INT8_MIN_COSINE = 0.9
# ...except the outputs `roles.INT8_REPORTED_ONLY` names (the attention weights): reported, not judged.
INT8_NOT_JUDGED = frozenset(f"{g}.{o}" for g, outs in INT8_REPORTED_ONLY.items() for o in outs)


def compare(name: str, got: np.ndarray, ref: np.ndarray, rel_tol: float) -> Mismatch:
    """Max abs / relative error of `got` against `ref`, judged against rel_tol x max|ref|."""
    if got.shape != ref.shape:
        return Mismatch(name, float("inf"), float("inf"), rel_tol, False)
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    tol = rel_tol * max(scale, 1e-12)
    return Mismatch(name, max_abs, max_abs / max(scale, 1e-12), tol, bool(np.isfinite(max_abs) and max_abs <= tol))


def compare_cosine(name: str, got: np.ndarray, ref: np.ndarray, min_cosine: float) -> Mismatch:
    """int8: max errors for information, judged by cosine similarity."""
    m = compare(name, got, ref, 1.0)
    a, b = got.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    cos = 1.0 if denom == 0 and not a.any() and not b.any() else float(a @ b / max(denom, 1e-300))
    return Mismatch(name, m.max_abs, m.max_rel, min_cosine, bool(cos >= min_cosine), cos)


@dataclass
class ParityReport:
    artifact: str
    backend: str
    precision: str
    outputs: list[Mismatch] = field(default_factory=list)
    beam: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.outputs) and self.beam.get("ok", True)

    def to_json(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "backend": self.backend, "precision": self.precision, "ok": self.ok,
                "outputs": [asdict(m) for m in self.outputs], "beam": self.beam}


def check(pipeline: Pipeline, rel_tol: float | None = None) -> ParityReport:
    """Replay the artifact's test vectors through `pipeline`'s sessions."""
    if rel_tol is not None and not (np.isfinite(rel_tol) and rel_tol > 0):
        raise InputError(f"--tolerance must be a finite number > 0, got {rel_tol}")
    m = pipeline.manifest
    vec_file = pipeline.root / m.extra.vectors_file
    if not vec_file.is_file() and not vec_file.is_symlink():
        raise ArtifactError(f"{vec_file}: missing; the artifact has no reference outputs to compare with")
    # checked against the manifest's graphs before use (no pickles, no bombs, every key, dtype and
    # shape); image_vectors.npz: Core ML image-input builds, real 8-bit images
    vectors = load_test_vectors(pipeline.root, m, with_images=True)
    tol = rel_tol if rel_tol is not None else TOLERANCE.get(m.precision, 2e-2)
    report = ParityReport(str(pipeline.root), pipeline.backend, m.precision)
    for g in m.graphs:
        feeds = {t.name: vectors[f"{g.name}.{t.name}"] for t in g.inputs}
        outs = pipeline.sessions[g.name].run(feeds)
        for t in g.outputs:
            name, ref = f"{g.name}.{t.name}", vectors[f"{g.name}.{t.name}"]
            if m.precision == "int8" and rel_tol is None:
                judged = compare_cosine(name, outs[t.name], ref, INT8_MIN_COSINE)
                report.outputs.append(replace(judged, tolerance=0.0, ok=True) if name in INT8_NOT_JUDGED
                                      else judged)
            else:
                report.outputs.append(compare(name, outs[t.name], ref, tol))
    if isinstance(pipeline, Captioner) and "beam.tokens" in vectors:
        beam, max_len = (int(v) for v in vectors["beam.settings"])
        feats = pipeline.encode(vectors["beam.image"])
        results = pipeline.caption_features(feats, [f"vector {i}" for i in range(len(feats))], beam, max_len)
        ref_tokens = [[int(t) for t in row if t >= 0] for row in vectors["beam.tokens"]]
        same = [r.tokens == ref for r, ref in zip(results, ref_tokens)]
        score_err = max(abs(r.score - float(s)) / max(1.0, abs(float(s)))
                        for r, s in zip(results, vectors["beam.scores"]))
        exact = m.precision == "fp32"
        report.beam = {"beam": beam, "max_len": max_len, "tokens_equal": same, "max_rel_score_error": score_err,
                       "ok": (all(same) and score_err <= SCORE_TOLERANCE) if exact else True}
    return report


def check_artifact(artifact_dir: str | Path, backend: str | None = None, **options: Any) -> ParityReport:
    return check(load(artifact_dir, backend, **options))

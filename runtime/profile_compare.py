"""Two saved profiles side by side: `mmedge profile --compare OLD.json NEW.json`.

Works on the JSON documents (read and validated from files), so profiles made on other machines
or by other mmedge versions of the same schema compare; `result_from_json` rebuilds the dataclasses
for rendering a saved profile. `mmedge.runtime.profiler` re-exports every name here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmedge.errors import InputError
from mmedge.runtime.profile_schema import SCHEMA_LATENCY, validate_json
from mmedge.runtime.profile_types import ArtifactInfo, LatencyStats, ProfileResult, ProfileRow, RowInfo, _r

DEFAULT_COMPARE_THRESHOLD = 0.10  # relative p50 change that counts as a regression


@dataclass
class Change:
    id: str
    old_p50: float | None
    new_p50: float | None
    change: float | None  # (new - old) / old
    status: str  # "regression" | "improvement" | "same" | "added" | "removed"
    noisy: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "old_p50_ms": _r(self.old_p50), "new_p50_ms": _r(self.new_p50),
                "change": _r(self.change), "status": self.status, "noisy": self.noisy}


@dataclass
class CompareReport:
    threshold: float
    changes: list[Change]
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.status == "regression"]

    @property
    def exit_code(self) -> int:
        """0: no row slower than the threshold; 1: at least one regression."""
        return 1 if self.regressions else 0

    def summary(self) -> str:
        n = len(self.regressions)
        if n:
            worst = max(self.regressions, key=lambda c: c.change or 0.0)
            return (f"{n} regression{'s' if n != 1 else ''} beyond +{self.threshold:.0%} p50 "
                    f"(worst {worst.id}: {worst.change:+.1%})")
        matched = sum(c.status in ("same", "improvement") for c in self.changes)
        return f"no regression beyond +{self.threshold:.0%} p50 ({matched} rows compared)"

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "regressions": len(self.regressions), "exit_code": self.exit_code,
                "summary": self.summary(), "notes": self.notes, "changes": [c.to_json() for c in self.changes]}


def compare(old: dict[str, Any], new: dict[str, Any], threshold: float = DEFAULT_COMPARE_THRESHOLD) -> CompareReport:
    """Match rows by id; p50 change (new - old) / old above `threshold` is a regression."""
    if not threshold > 0:
        raise InputError(f"--threshold must be > 0 (a fraction: 0.1 = 10%), got {threshold}")

    def rows_by_id(doc: dict[str, Any], which: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for r in doc["rows"]:
            if r["id"] in out:
                raise InputError(f"{which}: row {r['id']!r} appears twice")
            out[r["id"]] = r
        return out

    a, b = rows_by_id(old, "OLD"), rows_by_id(new, "NEW")
    changes = []
    for rid in list(a) + [k for k in b if k not in a]:
        ra, rb = a.get(rid), b.get(rid)
        if ra is None or rb is None:
            changes.append(Change(rid, ra and ra["latency_ms"]["p50"], rb and rb["latency_ms"]["p50"], None,
                                  "added" if ra is None else "removed"))
            continue
        p_old, p_new = float(ra["latency_ms"]["p50"]), float(rb["latency_ms"]["p50"])
        rel = (p_new - p_old) / p_old if p_old > 0 else (0.0 if p_new == p_old else math.inf)
        status = "regression" if rel > threshold else "improvement" if rel < -threshold else "same"
        changes.append(Change(rid, p_old, p_new, rel, status, bool(ra["noise"]["noisy"] or rb["noise"]["noisy"])))
    notes = []
    if old["machine"].get("cpu") != new["machine"].get("cpu"):
        notes.append(f"different CPUs: {old['machine'].get('cpu')!r} vs {new['machine'].get('cpu')!r}")
    if old["options"].get("threads") != new["options"].get("threads"):
        notes.append(f"different --threads: {old['options'].get('threads')} vs {new['options'].get('threads')}")
    if any(c.noisy for c in changes if c.status in ("regression", "improvement")):
        notes.append("some changed rows were noisy in one of the runs (marked ~); rerun to confirm")
    return CompareReport(threshold, changes, notes)


def read_profile(path: str | Path) -> dict[str, Any]:
    """Read and validate a JSON document written by `mmedge profile --json`."""
    import json

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: not found")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{p}: invalid JSON ({e})") from None
    return validate_json(doc, str(p))


def result_from_json(doc: dict[str, Any]) -> ProfileResult:
    """Rebuild a ProfileResult (for rendering a saved profile)."""
    res = ProfileResult(doc["machine"], doc["options"], environment=doc.get("environment", {}),
                        warnings=list(doc.get("warnings", [])), created=doc.get("created", ""),
                        roofline=doc.get("roofline"))
    for a in doc["artifacts"]:
        res.artifacts.append(ArtifactInfo(**{k: a[k] for k in ArtifactInfo.__dataclass_fields__ if k in a}))
    info_keys = list(RowInfo.__dataclass_fields__)
    for r in doc["rows"]:
        lat = r["latency_ms"]
        res.rows.append(ProfileRow(
            RowInfo(**{k: r[k] for k in info_keys}), r["kind"], r["graph"], r["batch"], r["beam"], r["size_bytes"],
            r["load_ms"], r["first_ms"], LatencyStats(**{k: lat[k] for k in SCHEMA_LATENCY}), list(r["samples_ms"]),
            r["throughput"]["value"], r["throughput"]["unit"], r["memory"]["peak_rss_mb"], r["memory"]["rss_mb"],
            r["noise"]["noisy"], r["stages"], dict(r["extra"]), r["metrics"]))
    return res

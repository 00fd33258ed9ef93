"""Validation of a profile JSON document (schema version 1, described in runtime/profiler.py).

Apart from the dataclasses (runtime/profile_types.py) because a document's optional `roofline`
section is checked by runtime/roofline.py, which itself annotates with those dataclasses.
"""

from __future__ import annotations

from typing import Any

from mmedge.errors import InputError
from mmedge.runtime.profile_types import SCHEMA, SCHEMA_VERSION

# JSON schema version 1: required keys and their types (what `validate_json` checks)
_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
SCHEMA_TOP: dict[str, Any] = {"schema": str, "schema_version": int, "created": str, "mmedge": str,
                              "machine": dict, "options": dict, "environment": dict, "artifacts": list,
                              "rows": list, "warnings": list}
SCHEMA_MACHINE: dict[str, Any] = {"cpu": str, "arch": str, "board": (str, type(None)), "logical_cpus": int,
                                  "physical_cores": int, "affinity": (list, type(None)), "os": str, "python": str,
                                  "numpy": str, "backends": dict}
SCHEMA_ARTIFACT: dict[str, Any] = {"id": str, "path": str, "model": str, "config": str, "pipeline": str,
                                   "format": str, "precision": str, "backend": str, "size_bytes": int,
                                   "model_bytes": int, "load_ms": _OPT_NUM, "eval": (list, type(None)),
                                   "eval_error": (str, type(None))}
SCHEMA_ROW: dict[str, Any] = {"id": str, "artifact": str, "model": str, "config": str, "pipeline": str,
                              "format": str, "precision": str, "backend": str, "kind": str, "graph": str,
                              "batch": int, "beam": (int, type(None)), "size_bytes": int, "load_ms": _NUM,
                              "first_ms": _NUM, "latency_ms": dict, "noise": dict, "throughput": dict,
                              "memory": dict, "samples_ms": list, "stages": (dict, type(None)), "extra": dict,
                              "metrics": (dict, type(None))}
SCHEMA_LATENCY = ("n", "min", "p10", "p50", "p90", "p99", "max", "mean", "std")


def validate_json(doc: Any, where: str = "profile") -> dict[str, Any]:
    """Check a profile JSON document against schema version 1; raise InputError naming the first problem."""

    def need(obj: Any, spec: dict[str, Any], at: str) -> None:
        if not isinstance(obj, dict):
            raise InputError(f"{where}: {at} must be an object")
        for key, typ in spec.items():
            if key not in obj:
                raise InputError(f"{where}: {at} has no {key!r}")
            if not isinstance(obj[key], typ) or (typ is int and isinstance(obj[key], bool)):
                raise InputError(f"{where}: {at}.{key} has type {type(obj[key]).__name__}")

    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise InputError(f"{where}: not an mmedge profile (expected \"schema\": \"{SCHEMA}\"; "
                         f"write one with `mmedge profile --json`)")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{where}: schema_version {doc.get('schema_version')!r}, this mmedge reads "
                         f"{SCHEMA_VERSION}")
    need(doc, SCHEMA_TOP, "document")
    need(doc["machine"], SCHEMA_MACHINE, "machine")
    for i, a in enumerate(doc["artifacts"]):
        need(a, SCHEMA_ARTIFACT, f"artifacts[{i}]")
    for i, row in enumerate(doc["rows"]):
        need(row, SCHEMA_ROW, f"rows[{i}]")
        need(row["latency_ms"], {k: (int if k == "n" else _NUM) for k in SCHEMA_LATENCY}, f"rows[{i}].latency_ms")
        need(row["noise"], {"minmax": _NUM, "p10_p90": _NUM, "noisy": bool}, f"rows[{i}].noise")
        need(row["throughput"], {"value": _NUM, "unit": str}, f"rows[{i}].throughput")
        need(row["memory"], {"peak_rss_mb": _OPT_NUM, "rss_mb": _OPT_NUM}, f"rows[{i}].memory")
    if "roofline" in doc:  # optional: profiles without it (older ones, --no-roofline) stay readable
        from mmedge.runtime.roofline import validate_section

        validate_section(doc["roofline"], where)
    return doc

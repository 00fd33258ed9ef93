"""The manifest's JSON Schema, generated from the dataclasses that read and write it.

    python -m mmedge.runtime.manifest_schema > runtime/schemas/manifest.schema.json

regenerates the shipped file (tests/test_manifest_typed.py fails while the two differ). Each
field's type comes from its annotation, its bounds, pattern, shared definition and title from
its `spec(...)` metadata (runtime/manifest_fields.py); rules that span fields (a captioner
needs a vocabulary, an image front-end needs a size) are the classes' SCHEMA_KEYWORDS. Only
what runtime/schema.py's validator implements is generated (draft 2020-12: type, enum,
const, bounds, lengths, pattern, items, properties, required, additionalProperties,
propertyNames, allOf, anyOf, if/then, local $ref), so mmedge and a mobile app's JSON Schema
library check the same document the same way.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

from mmedge.runtime.manifest import FORMAT_VERSION, Manifest
from mmedge.runtime.manifest_fields import (SHARED_DEFS, OMIT_NONE, WRITE_ALWAYS, TypeRef, field_type, has_default,
                                            json_fields, schema_of)

SCHEMA_ID = "https://github.com/mmedge/mmedge/runtime/schemas/manifest.schema.json"
_SCALARS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}


class _Builder:
    """Schemas of dataclasses, collecting the definitions they refer to."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def ref(self, target: str | type) -> dict[str, Any]:
        if isinstance(target, type):
            name = target.SCHEMA_NAME  # type: ignore[attr-defined]
            if name not in self.defs:
                self.defs[name] = None  # reserved first: a class may refer to itself
                self.defs[name] = self.object(target)
        else:
            if target not in SHARED_DEFS:
                raise KeyError(f"no shared definition {target!r}")
            name = target
        return {"$ref": f"#/$defs/{name}"}

    def object(self, cls: type) -> dict[str, Any]:
        keywords = dict(getattr(cls, "SCHEMA_KEYWORDS", {}))
        rules = keywords.pop("allOf", None)
        out: dict[str, Any] = {"type": "object", **{k: keywords.pop(k) for k in ("description",) if k in keywords}}
        props, required = {}, []
        for f in json_fields(cls):
            props[f.name] = self.field(cls, f)
            fs = schema_of(f)
            if fs.required or (fs.required is None and not has_default(f)):
                required.append(f.name)
        for name, target in getattr(cls, "SCHEMA_PROPERTIES", {}).items():
            props[name] = self.ref(target)
        if required:
            out["required"] = required
        if not getattr(cls, "SCHEMA_OPEN", False):
            out["additionalProperties"] = False
        out.update(keywords)
        out["properties"] = props
        if rules:
            out["allOf"] = rules
        return out

    def field(self, cls: type, f: dataclasses.Field) -> dict[str, Any]:  # type: ignore[type-arg]
        t, fs = field_type(cls, f), schema_of(f)
        out: dict[str, Any] = {"title": fs.title} if fs.title else {}
        out.update(self.ref(fs.ref) if fs.ref is not None else self.type(t.without_none()))
        out.update(fs.keywords)
        for key, sub in (("items", fs.items), ("additionalProperties", fs.values), ("propertyNames", fs.keys)):
            if sub:
                base = out.get(key, {"type": "string"} if key == "propertyNames" else {})
                out[key] = self.sub(base, sub)
        if t.optional and fs.omit == WRITE_ALWAYS:  # written as null when unset
            out["type"] = [out["type"], "null"]
        elif t.optional and fs.omit != OMIT_NONE and f.default is not None:
            raise TypeError(f"{cls.__name__}.{f.name}: an optional field must be omitted or written as null")
        return out

    def sub(self, base: dict[str, Any], keywords: dict[str, Any]) -> dict[str, Any]:
        keywords = dict(keywords)
        if "ref" in keywords:
            return {**self.ref(keywords.pop("ref")), **keywords}
        return {**base, **keywords}

    def type(self, t: TypeRef) -> dict[str, Any]:
        if t.name in _SCALARS:
            return {"type": _SCALARS[t.name]}
        if t.name == "Any":
            return {}
        if t.cls is not None:
            return self.ref(t.cls)
        if t.name in ("list", "tuple"):
            item = self.type(t.args[0]) if t.args else {}
            return {"type": "array", **({"items": item} if item else {})}
        if t.name == "dict":
            value = self.type(t.args[1]) if len(t.args) == 2 else {}
            return {"type": "object", **({"additionalProperties": value} if value else {})}
        if t.name == "|":
            return {"anyOf": [self.type(a) for a in t.args]}
        raise TypeError(f"no JSON Schema for the annotation {t.name!r}")


def generate() -> dict[str, Any]:
    """The JSON Schema of manifest.json (format_version 1 and 2)."""
    b = _Builder()
    body = b.object(Manifest)
    defs = {**SHARED_DEFS, **b.defs}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": f"mmedge artifact manifest (manifest.json), format_version 1 to {FORMAT_VERSION}",
            "description": "What an artifact directory holds and how to run it. mmedge validates every manifest "
                           "against this schema before using any field; paths must also resolve inside the "
                           "artifact directory without symbolic links. Generated from mmedge/runtime/manifest.py "
                           "(python -m mmedge.runtime.manifest_schema); do not edit.",
            **body, "$defs": defs}


def render() -> str:
    return json.dumps(generate(), indent=2) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())

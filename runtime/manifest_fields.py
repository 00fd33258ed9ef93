"""Field metadata of the artifact contract: each dataclass field says what its JSON holds.

The manifest's dataclasses (runtime/manifest.py, runtime/manifest_sections.py and
runtime/roles.py's GraphHints) declare their fields with `spec(...)`: a title, JSON Schema
bounds or a pattern, a shared definition (`ref`), and when the writer leaves the field out.
From the same declarations, `runtime/manifest_schema.py` generates the JSON Schema that ships
in `schemas/manifest.schema.json`, and `to_json` / `from_json` below write and read the JSON,
so the writer, the reader and the published schema cannot drift apart.

Types come from the annotations, parsed as text (never evaluated): the runtime also runs on
Python 3.8 (JetPack 5), where `int | None` or `dict[str, int]` cannot be evaluated.
Torch-free, numpy-free, standard library only.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

SCHEMA_KEY = "mmedge.schema"  # the dataclasses.field metadata key that holds a FieldSchema

# when the writer leaves a field out of the JSON
WRITE_ALWAYS = "always"  # written even when None (as null)
OMIT_NONE = "none"  # left out when None (optional sections)
OMIT_DEFAULT = "default"  # left out when equal to its default (hints: only what a graph is)

NAME_PATTERN = "^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$"
PATH_PATTERN = "^(?!/)(?!.*/$)(?!.*(^|/)\\.{1,2}(/|$))(?!.*//)[^\\\\:\\u0000-\\u001f\\u007f]+$"

# Definitions shared by many fields (`spec(ref="name")`): the JSON Schema's $defs. Their
# `description` is what a validation error says was expected, so it stays short.
SHARED_DEFS: Dict[str, Dict[str, Any]] = {
    "name": {"type": "string", "pattern": NAME_PATTERN,
             "description": "a name: letters, digits, '_', '.', '+', '-' (at most 128)"},
    "path": {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": PATH_PATTERN,
             "description": "a relative POSIX path inside the folder (no '/' first, no '..', '.', '\\\\', ':')",
             "x-mmedge-check": "path"},
    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "a lowercase hex sha256"},
    "dim": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 16777216},
                      {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                       "description": "a dynamic axis name"}]},
}


@dataclass(frozen=True)
class FieldSchema:
    """What one field's JSON holds, beyond its Python type."""

    title: str = ""
    ref: Optional[str] = None  # a $defs entry (SHARED_DEFS or a dataclass's SCHEMA_NAME) instead of the type's schema
    keywords: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # JSON Schema keywords for the field
    items: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # ... for each array item ("ref" too)
    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # ... for each object value ("ref" too)
    keys: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # propertyNames ("ref" too)
    omit: str = WRITE_ALWAYS
    required: Optional[bool] = None  # None: required when the field has no default
    json: bool = True  # False: not a key of this object's JSON (kept elsewhere)


def spec(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, title: str = "",
         ref: Optional[str] = None, items: Optional[Mapping[str, Any]] = None,
         values: Optional[Mapping[str, Any]] = None, keys: Optional[Mapping[str, Any]] = None,
         omit: str = WRITE_ALWAYS, required: Optional[bool] = None, json: bool = True, **keywords: Any) -> Any:
    """A dataclass field with its JSON Schema: `spec(0, minimum=0, maximum=10, title="...")`.
    `keywords` are JSON Schema keywords spelled as in the schema (maxItems, exclusiveMinimum, ...)."""
    meta = {SCHEMA_KEY: FieldSchema(title, ref, dict(keywords), dict(items or {}), dict(values or {}),
                                    dict(keys or {}), omit, required, json)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def schema_of(f: dataclasses.Field) -> FieldSchema:  # type: ignore[type-arg]
    return f.metadata.get(SCHEMA_KEY) or FieldSchema()


def json_fields(cls: type) -> List[dataclasses.Field]:  # type: ignore[type-arg]
    """The fields of `cls` that are keys of its JSON object, in declaration order."""
    return [f for f in dataclasses.fields(cls) if schema_of(f).json]


def has_default(f: dataclasses.Field) -> bool:  # type: ignore[type-arg]
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING  # type: ignore[misc]


def default_of(f: dataclasses.Field) -> Any:  # type: ignore[type-arg]
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return f.default


# ----------------------------------------------------------------------------- annotations as text
@dataclass(frozen=True)
class TypeRef:
    """A parsed annotation: `name` (str, int, list, dict, a class, ...) with `args`; a union is "|"."""

    name: str
    args: Tuple["TypeRef", ...] = ()
    cls: Optional[type] = None  # the dataclass `name` refers to

    @property
    def optional(self) -> bool:
        return self.name == "|" and any(a.name == "None" for a in self.args)

    def without_none(self) -> "TypeRef":
        if self.name != "|":
            return self
        rest = tuple(a for a in self.args if a.name != "None")
        return rest[0] if len(rest) == 1 else TypeRef("|", rest)


_ALIASES = {"List": "list", "Dict": "dict", "Tuple": "tuple", "Mapping": "dict", "Sequence": "list"}
_TOKEN = re.compile(r"\s*(\.\.\.|[A-Za-z_][A-Za-z0-9_.]*|[\[\],|])")


def parse_annotation(text: str, namespace: Mapping[str, Any]) -> TypeRef:
    """`"dict[str, int] | None"` -> TypeRef; class names are looked up in `namespace`."""
    tokens = _TOKEN.findall(text)
    if "".join(tokens) != re.sub(r"\s+", "", text):
        raise TypeError(f"cannot read the annotation {text!r}")
    pos = 0

    def union() -> TypeRef:
        nonlocal pos
        parts = [term()]
        while pos < len(tokens) and tokens[pos] == "|":
            pos += 1
            parts.append(term())
        return parts[0] if len(parts) == 1 else TypeRef("|", tuple(parts))

    def term() -> TypeRef:
        nonlocal pos
        name = tokens[pos].split(".")[-1]
        pos += 1
        args: List[TypeRef] = []
        if pos < len(tokens) and tokens[pos] == "[":
            pos += 1
            args.append(union())
            while tokens[pos] == ",":
                pos += 1
                args.append(union())
            pos += 1  # "]"
        name = _ALIASES.get(name, name)
        if name == "Optional":
            return TypeRef("|", (args[0], TypeRef("None")))
        if name == "Union":
            return TypeRef("|", tuple(args))
        found = namespace.get(name)
        cls = found if isinstance(found, type) and dataclasses.is_dataclass(found) else None
        return TypeRef(name, tuple(args), cls)

    return union()


def field_type(owner: type, f: dataclasses.Field) -> TypeRef:  # type: ignore[type-arg]
    """The parsed annotation of `owner.f` (names resolved in `owner`'s module)."""
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return parse_annotation(text, vars(sys.modules[owner.__module__]))


# ----------------------------------------------------------------------------- the codec
def to_json(obj: Any) -> Any:
    """A dataclass (nested ones too) as its JSON value: fields the metadata omits are left out;
    tuples become lists; every dict and list is a copy."""
    if isinstance(obj, JsonFields):
        return obj.to_json()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return fields_to_json(obj)
    if isinstance(obj, (list, tuple)):
        return [to_json(x) for x in obj]
    if isinstance(obj, Mapping):
        return {k: to_json(v) for k, v in obj.items()}
    return obj


def fields_to_json(obj: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for f in json_fields(type(obj)):
        value, fs = getattr(obj, f.name), schema_of(f)
        if (fs.omit == OMIT_NONE and value is None) or (
                fs.omit == OMIT_DEFAULT and has_default(f) and value == default_of(f)):
            continue
        out[f.name] = to_json(value)
    return out


def from_json(cls: type, doc: Mapping[str, Any]) -> Any:
    """An instance of dataclass `cls` from its JSON object (already validated against the schema):
    nested dataclasses are built from their objects, lists of them item by item; every other
    value is copied as is."""
    kwargs = {f.name: decode(field_type(cls, f), doc[f.name]) for f in json_fields(cls) if f.init and f.name in doc}
    return cls(**kwargs)


def decode(t: TypeRef, value: Any) -> Any:
    if value is None:
        return None
    t = t.without_none()
    if t.cls is not None and isinstance(value, Mapping):
        reader = getattr(t.cls, "from_json", None)
        return reader(value) if reader is not None else from_json(t.cls, value)
    if t.name in ("list", "tuple") and isinstance(value, (list, tuple)):
        item = t.args[0] if t.args else TypeRef("Any")
        items = list(value) if item.name in _SCALARS else [decode(item, v) for v in value]
        return tuple(items) if t.name == "tuple" else items
    if t.name == "dict" and isinstance(value, Mapping):
        item = t.args[1] if len(t.args) == 2 else TypeRef("Any")
        return dict(value) if item.name in _SCALARS else {k: decode(item, v) for k, v in value.items()}
    return copy.deepcopy(value) if isinstance(value, (dict, list)) else value


_SCALARS = frozenset({"str", "int", "float", "bool"})  # values a shallow copy copies whole


class JsonFields:
    """Mixin: `to_json()` / `from_json()` through the field metadata (a class may override either)."""

    def to_json(self) -> Dict[str, Any]:
        return fields_to_json(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Any:
        return from_json(cls, doc)


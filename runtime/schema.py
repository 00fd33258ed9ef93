"""Reading untrusted descriptors safely: bounded JSON, a small JSON Schema validator, safe paths.

Everything mmedge reads from an artifact or a bundle (`manifest.json`, a mobile bundle's
`manifest.json` and `test_vectors/index.json`, a Jetson `bundle.json`, word maps) goes through
here before any field is used:

* `read_regular` opens a regular file only (never a FIFO, device or folder; `O_NONBLOCK`, so a
  FIFO cannot hang the open), optionally without following a link, and refuses it before
  reading when it is larger than the limit.
* `parse_json` bounds the size and the nesting depth, refuses `NaN`/`Infinity` and duplicate
  keys, and turns every failure (a `RecursionError` on deep nesting included) into one line.
* `validate` checks a document against a JSON Schema (draft 2020-12; the subset the published
  schemas under `mmedge/runtime/schemas/` use) and names the first problem by its JSON path.
* `check_relpath` / `inside` keep every path a descriptor names inside its folder: relative POSIX
  paths only (no absolute path, drive, `..`, `.`, backslash, NUL or control character), and no
  symbolic link anywhere on the way (a link could point anywhere).

Torch-free, numpy-free: mobile apps can apply the same schemas with any JSON Schema library.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from mmedge.errors import ArtifactError, InputError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
MAX_JSON_BYTES = 16 << 20  # a descriptor (a full-size captioner's manifest with its vocabulary: ~0.3 MB)
MAX_JSON_DEPTH = 64  # nesting levels of a descriptor (mmedge writes at most 8)
MAX_PATH_CHARS = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


# ----------------------------------------------------------------------------- files
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))


def kind_of(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_regular(path: str | Path, what: str, limit: int, error: type[InputError] = ArtifactError,
                 follow_links: bool = True) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else is one-line `error`."""
    p = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise error(f"{p}: {what} not found") from None
    except OSError as e:
        if not follow_links and os.path.islink(p):
            raise error(f"{p}: is a symbolic link; refusing to follow it (a {what} may not be a link)") from None
        raise error(f"{p}: cannot read the {what} ({e.strerror or e.__class__.__name__})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{p}: is {kind_of(st.st_mode)}, expected a regular {what} file")
        if st.st_size > limit:
            raise error(f"{p}: the {what} is {st.st_size} bytes, over the {mib(limit)} limit")
        chunks, size = [], 0
        while size <= limit:
            try:
                block = os.read(fd, min(1 << 20, limit + 1 - size))
            except OSError as e:
                raise error(f"{p}: cannot read the {what} ({e.strerror or e.__class__.__name__})") from None
            if not block:
                break
            chunks.append(block)
            size += len(block)
        if size > limit:
            raise error(f"{p}: the {what} is over the {mib(limit)} limit")
        return b"".join(chunks)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- JSON
def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k[:60]!r}")
        out[k] = v
    return out


def depth_of(doc: Any) -> int:
    """Nesting depth (a scalar: 0), without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, d)
        if d > MAX_JSON_DEPTH:
            return d
        stack.extend((c, d + 1) for c in children)
    return deepest


def newer_format(doc: dict, newest: int) -> int | None:
    """The descriptor's `format_version` when it is newer than `newest` (this mmedge cannot read it)."""
    version = doc.get("format_version")
    return version if isinstance(version, int) and not isinstance(version, bool) and version > newest else None


def parse_json(data: bytes, where: str, error: type[InputError] = ArtifactError, label: str = "invalid JSON",
               limit: int = MAX_JSON_BYTES) -> Any:
    """Bounded, strict JSON: size, depth, no NaN/Infinity, no duplicate keys; one-line errors
    `<where>: <label> (<why>)`."""
    if len(data) > limit:
        raise error(f"{where}: {len(data)} bytes, over the {mib(limit)} limit for a JSON descriptor")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where}: {label} (not UTF-8: byte {e.start})") from None
    try:
        doc = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise error(f"{where}: {label} (nested more than {MAX_JSON_DEPTH} levels deep)") from None
    except ValueError as e:  # JSONDecodeError, over-long integers, NaN, duplicate keys
        raise error(f"{where}: {label} ({str(e).splitlines()[0][:200]})") from None
    if depth_of(doc) > MAX_JSON_DEPTH:
        raise error(f"{where}: {label} (nested more than {MAX_JSON_DEPTH} levels deep)")
    return doc


def read_json(path: str | Path, what: str, error: type[InputError] = ArtifactError, label: str = "invalid JSON",
              follow_links: bool = True, limit: int = MAX_JSON_BYTES) -> Any:
    return parse_json(read_regular(path, what, limit, error, follow_links), str(path), error, label, limit)


# ----------------------------------------------------------------------------- paths
def path_problem(rel: Any) -> str | None:
    """Why `rel` is not a safe relative POSIX path inside a folder (None: it is)."""
    if not isinstance(rel, str):
        return f"expected a relative path (a string), got {type(rel).__name__}"
    if not rel or len(rel) > MAX_PATH_CHARS:
        return f"expected a relative path of 1 to {MAX_PATH_CHARS} characters"
    if _CONTROL.search(rel) or "\\" in rel:
        return "a path may not hold NUL, control characters or backslashes"
    if rel.startswith("/") or ":" in rel:
        return "an absolute path (or a drive or URL) points outside the folder"
    for part in rel.split("/"):
        if part in ("", ".", ".."):
            return "'..', '.' and empty components are not allowed (the path must stay inside the folder)"
        if len(part) > 255:
            return "a path component is longer than 255 characters"
    return None


def check_relpath(rel: Any, where: str, what: str = "path") -> str:
    problem = path_problem(rel)
    if problem:
        raise ArtifactError(f"{where}: {what} {str(rel)[:200]!r} is not allowed: {problem}")
    return rel


def inside(root: Path, rel: str, where: str, what: str = "file", missing: str | None = None) -> Path:
    """`root/rel` after checking the path and that no component below `root` is a symbolic link
    (a link could point anywhere); the final component must be a regular file."""
    check_relpath(rel, where, what)
    p = Path(root)
    parts = rel.split("/")
    for i, part in enumerate(parts):
        p = p / part
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            raise ArtifactError(missing.format(path=p) if missing else f"{p}: missing (named in {where})") from None
        except OSError as e:
            raise ArtifactError(f"{p}: cannot read it ({e.strerror or e.__class__.__name__})") from None
        if stat.S_ISLNK(st.st_mode):
            raise ArtifactError(f"{p}: is a symbolic link; refusing to follow it (the files of an artifact or "
                                f"bundle may not be links: one could point outside {root})")
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            raise ArtifactError(f"{p}: is {kind_of(st.st_mode)}, expected a folder (named in {where})")
        if i == len(parts) - 1 and not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{p}: is {kind_of(st.st_mode)}, expected a regular {what} (named in {where})")
    return p


# ----------------------------------------------------------------------------- JSON Schema
@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """A schema shipped in mmedge/runtime/schemas/ (e.g. "manifest.schema.json")."""
    return json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))


_TYPE_NAMES = {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def _is_type(value: Any, t: str) -> bool:
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if t == "integer":
        return isinstance(value, int)  # strict: 3.0 is not an integer here (Python would treat it as a float)
    if t == "number":
        return isinstance(value, (int, float)) and (not isinstance(value, float) or math.isfinite(value))
    return False


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"{'an object' if isinstance(value, dict) else 'an array'} of {len(value)} item(s)"
    text = json.dumps(value) if isinstance(value, (str, int, float, bool)) or value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else f"{path}[{json.dumps(key)[:60]}]"


class SchemaError(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message


def describe(schema: dict[str, Any], root: dict[str, Any]) -> str:
    """What a schema expects, in words (for error messages)."""
    schema = _deref(schema, root)
    if "description" in schema and len(schema["description"]) <= 80:
        return schema["description"]
    if "const" in schema:
        return _show(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(_show(v) for v in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(describe(s, root) for s in schema["anyOf"])
    types = schema.get("type")
    if types is None:
        return "a valid value"
    types = [types] if isinstance(types, str) else types
    text = " or ".join(_TYPE_NAMES.get(t, t) for t in types)
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None and hi is not None:
        text += f" in {lo}..{hi}"
    elif lo is not None:
        text += f" >= {lo}"
    elif hi is not None:
        text += f" <= {hi}"
    if "exclusiveMinimum" in schema:
        text += f" > {schema['exclusiveMinimum']}"
    return text


def _deref(schema: Any, root: dict[str, Any]) -> Any:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/") or seen > 32:
            raise ValueError(f"unsupported $ref {ref!r}")
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema, seen = node, seen + 1
    return schema


def _errors(value: Any, schema: Any, root: dict[str, Any], path: str) -> SchemaError | None:
    """The first problem of `value` against `schema`, or None."""
    schema = _deref(schema, root)
    if schema is True or schema == {}:
        return None
    if schema is False:
        return SchemaError(path, "not allowed here")
    types = schema.get("type")
    if types is not None:
        tl = [types] if isinstance(types, str) else types
        if not any(_is_type(value, t) for t in tl):
            return SchemaError(path, f"expected {describe(schema, root)}, got {_show(value)}")
    if "const" in schema and (value != schema["const"] or type(value) is not type(schema["const"])):
        return SchemaError(path, f"expected {_show(schema['const'])}, got {_show(value)}")
    if "enum" in schema and not any(value == v and type(value) is type(v) for v in schema["enum"]):
        return SchemaError(path, f"expected {describe({'enum': schema['enum']}, root)}, got {_show(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, ok, word in (("minimum", lambda v, b: v >= b, ">="), ("maximum", lambda v, b: v <= b, "<="),
                              ("exclusiveMinimum", lambda v, b: v > b, ">"),
                              ("exclusiveMaximum", lambda v, b: v < b, "<")):
            if key in schema and not ok(value, schema[key]):
                return SchemaError(path, f"expected a number {word} {schema[key]}, got {_show(value)}")
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", math.inf):
            return SchemaError(path, f"expected at most {schema['maxLength']} characters, got {len(value)}")
        if len(value) < schema.get("minLength", 0):
            return SchemaError(path, f"expected at least {schema['minLength']} character(s), got {_show(value)}")
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            if schema.get("x-mmedge-check") == "path" and path_problem(value):
                return SchemaError(path, f"{_show(value)} is not allowed: {path_problem(value)}")
            what = schema.get("description") or f"a string matching {schema['pattern']}"
            return SchemaError(path, f"expected {what}, got {_show(value)}")
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", math.inf):
            return SchemaError(path, f"expected at most {schema['maxItems']} item(s), got {len(value)}")
        if len(value) < schema.get("minItems", 0):
            return SchemaError(path, f"expected at least {schema['minItems']} item(s), got {len(value)}")
        if "items" in schema:
            items = _deref(schema["items"], root)
            passes = _quick_check(items)
            for i, item in enumerate(value):
                if passes is not None and passes(item):  # (a 9,490-word vocabulary: no path built per word)
                    continue
                err = _errors(item, items, root, _join(path, i))
                if err:
                    return err
    if isinstance(value, dict):
        if len(value) > schema.get("maxProperties", math.inf):
            return SchemaError(path, f"expected at most {schema['maxProperties']} entries, got {len(value)}")
        if len(value) < schema.get("minProperties", 0):
            return SchemaError(path, f"expected at least {schema['minProperties']} entries, got {len(value)}")
        for key in schema.get("required", ()):
            if key not in value:
                want = schema.get("properties", {}).get(key, {})
                return SchemaError(_join(path, key), f"required, missing (expected {describe(want, root)})")
        props = schema.get("properties", {})
        names = schema.get("propertyNames")
        extra = schema.get("additionalProperties", True)
        # a map (the 9,490-word vocabulary): keys and values that certainly pass skip the full walk
        name_ok = _quick_check(_deref(names, root)) if names is not None else _any
        extra_ok = _quick_check(_deref(extra, root)) if not props else None
        for key, item in value.items():
            if name_ok is not None and extra_ok is not None and name_ok(key) and extra_ok(item):
                continue
            if names is not None:
                err = _errors(key, names, root, _join(path, key))
                if err:
                    return SchemaError(_join(path, key), f"key not allowed: {err.message}")
            if key in props:
                err = _errors(item, props[key], root, _join(path, key))
            elif extra is False:
                err = SchemaError(_join(path, key), f"unknown key (expected only {', '.join(sorted(props))})")
            else:
                err = _errors(item, extra, root, _join(path, key))
            if err:
                return err
    for sub in schema.get("allOf", ()):
        err = _errors(value, sub, root, path)
        if err:
            return err
    if "anyOf" in schema:
        found = [_errors(value, sub, root, path) for sub in schema["anyOf"]]
        if all(found):
            deeper = [e for e in found if e is not None and e.path != path]
            return deeper[0] if len(deeper) == 1 else SchemaError(
                path, f"expected {describe(schema, root)}, got {_show(value)}")
    if "if" in schema and _errors(value, schema["if"], root, path) is None:
        if "then" in schema:
            return _errors(value, schema["then"], root, path)
    elif "if" in schema and "else" in schema:
        return _errors(value, schema["else"], root, path)
    return None


_WORDS = frozenset({"description", "title", "x-mmedge-check"})


def _any(value: Any) -> bool:
    return True


_PLAIN_STRING_KEYS = frozenset({"type", "minLength", "maxLength", "pattern"}) | _WORDS
_PLAIN_INTEGER_KEYS = frozenset({"type", "minimum", "maximum"}) | _WORDS


def _quick_check(schema: Any) -> Callable[[Any], bool] | None:
    """For a schema that only bounds a string (length, pattern) or an integer (minimum, maximum): a
    test that is True when a value certainly passes it (False sends the value through `_errors` for
    its message); None for any other schema."""
    if schema is True or (isinstance(schema, dict) and not set(schema) - _WORDS):
        return _any
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "string" and set(schema) <= _PLAIN_STRING_KEYS:
        lo, hi = schema.get("minLength", 0), schema.get("maxLength", math.inf)
        search = _pattern(schema["pattern"]).search if "pattern" in schema else None
        return lambda v: isinstance(v, str) and lo <= len(v) <= hi and (search is None or search(v) is not None)
    if schema.get("type") == "integer" and set(schema) <= _PLAIN_INTEGER_KEYS:
        lo, hi = schema.get("minimum", -math.inf), schema.get("maximum", math.inf)
        return lambda v: type(v) is int and lo <= v <= hi
    return None


@lru_cache(maxsize=256)
def _pattern(p: str) -> re.Pattern[str]:
    return re.compile(p)


def validate(doc: Any, schema: dict[str, Any] | str, where: str, what: str = "manifest",
             error: type[InputError] = ArtifactError) -> None:
    """Raise `error`("<where>: malformed <what> at <JSON path>: expected ...") on the first problem."""
    if isinstance(schema, str):
        schema = load_schema(schema)
    err = _errors(doc, schema, schema, "$")
    if err is not None:
        raise error(f"{where}: malformed {what} at {err.path}: {err.message}")

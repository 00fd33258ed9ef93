"""Typed options: one schema per backend (`-O KEY=VALUE`) and per exporter (`-x KEY=VALUE`).

Every option a backend session or an exporter takes is declared once, as an
`Option` in its owner's `OptionSchema` (backends: `BackendInfo.options` in
runtime/backends/__init__.py; exporters: `register_exporter(..., options=...)`).
That one declaration is what the command line parses, what the Python API
checks, what `--help` and the README's Options table show. Nothing else parses
`KEY=VALUE` text.

- `parse(["threads=2"])`: command-line pairs. Integers are ASCII decimal digits
  (`str.isdigit` would take '²'), booleans true/false/1/0/yes/no/on/off,
  floats finite, choices case-insensitive (with their other spellings: `aliases`), lists
  comma-separated.
- `validate({"threads": 2})`: Python values. Types are checked (a bool is not an
  integer, a float is not an integer); a `str` is read as on the command line.

A bad key or value is an `InputError` of one line naming the owner, e.g.
`onnxruntime session option threads='abc': expected an integer from 1 to 1024`.
Torch-free and numpy-free: the CLI builds its help from it at import time.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from mmedge.errors import InputError

_INT = re.compile(r"[+-]?[0-9]{1,19}")  # ASCII only: '²'.isdigit() is True, int('²') a ValueError
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
INT_LIMIT = 2**31 - 1  # what a backend's C API takes, unless an option says less
MAX_TEXT = 4096  # longest value text (a path, a device name)


@dataclass(frozen=True)
class Option:
    """One option: its name, type, default and a one-line help.

    `type` is int, float, bool, str or list (comma-separated items of type `item`).
    `choices` (str options): the valid values, matched case-insensitively.
    `aliases`: other spellings of a choice, as (spelling, choice) pairs, read as that choice and
    listed before it in help: one name for a thing across mmedge (precision `fp32` everywhere,
    also where the backend's own word, OpenVINO's `f32`, is the value the session gets).
    `minimum`/`maximum`: bounds of a number (of each item of a list).
    `parse`: a custom reader for values the types above do not cover; it gets the
    text (or the Python value), returns the value, raises ValueError or TypeError
    when it is not valid; `expects` and `metavar` then say what it takes.
    A name `PREFIX.PLACEHOLDER` (e.g. `profile.AXIS`) with `prefix=True` matches
    every key `PREFIX.<identifier>`.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    parse: Callable[[Any], Any] | None = field(default=None, compare=False)
    item: type = str
    aliases: tuple[tuple[str, str], ...] = ()
    expects: str = ""
    metavar: str = ""
    prefix: bool = False

    def __post_init__(self) -> None:
        unknown = [c for _, c in self.aliases if c not in (self.choices or ())]
        if unknown:
            raise ValueError(f"option {self.name!r}: aliases of {unknown}, which are not among its choices")

    def spellings(self) -> tuple[str, ...]:
        """Every accepted choice spelling, each choice after its aliases (fp32, f32, bf16, fp16, f16)."""
        out: list[str] = []
        for c in self.choices or ():
            out += [a for a, target in self.aliases if target == c] + [c]
        return tuple(out)

    def matches(self, key: str) -> bool:
        if not self.prefix:
            return key == self.name
        head = self.name.rsplit(".", 1)[0] + "."
        return key.startswith(head) and _KEY.fullmatch(key[len(head):]) is not None

    # ---------------------------------------------------------------- what it takes (messages, help)
    def describe(self) -> str:
        """What a valid value looks like: 'an integer from 1 to 1024', 'one of latency, throughput'."""
        if self.expects:
            return self.expects
        if self.choices:
            return "one of " + ", ".join(self.spellings())
        if self.type is bool:
            return "true or false"
        if self.type is list:
            what = {int: "integers", float: "numbers"}.get(self.item, "names")
            return f"a comma-separated list of {what}{self._bounds()}"
        what = {int: "an integer", float: "a finite number", str: "a non-empty text"}[self.type]
        return what + self._bounds()

    def _bounds(self) -> str:
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return f" from {_num(lo)} to {_num(hi)}"
        if lo is not None:
            return f" >= {_num(lo)}"
        if hi is not None:
            return f" <= {_num(hi)}"
        return ""

    def value_help(self) -> str:
        """The value part of `KEY=VALUE` in help texts: N, true|false, a|b|c, A,B, ..."""
        if self.metavar:
            return self.metavar
        if self.choices:
            return "|".join(self.spellings())
        if self.type is list:
            return "N,N" if self.item is int else "A,B"
        return {int: "N", float: "X", bool: "true|false", str: "TEXT"}[self.type]

    def default_text(self) -> str:
        d = self.default
        if d is None:
            return ""
        if isinstance(d, bool):
            return "true" if d else "false"
        if isinstance(d, (list, tuple)):
            return ",".join(str(x) for x in d)
        return str(d)

    # ---------------------------------------------------------------- reading a value
    def read(self, value: Any) -> Any:
        """The typed value, or ValueError (the caller words the message)."""
        if value is None:
            if self.default is None:
                return None
            raise ValueError
        if self.parse is not None:
            return self.parse(value)
        if self.type is list:
            if isinstance(value, str):
                items: Sequence[Any] = [v.strip() for v in _text(value).split(",") if v.strip()]
            elif isinstance(value, (list, tuple)):
                items = list(value)
            else:
                raise ValueError
            if not items:
                raise ValueError
            return [self._scalar(self.item, v) for v in items]
        return self._scalar(self.type, value)

    def _scalar(self, kind: type, value: Any) -> Any:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = _text(value).strip().lower() if isinstance(value, str) else None
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, str) and _INT.fullmatch(_text(value).strip()):
                v: Any = int(value.strip())
            elif isinstance(value, numbers.Integral) and not _is_bool(value):
                v = int(value)
            else:
                raise ValueError
            return self._in_range(v, INT_LIMIT)
        if kind is float:
            if isinstance(value, str) and _FLOAT.fullmatch(_text(value).strip()):
                v = float(value.strip())
            elif isinstance(value, numbers.Real) and not _is_bool(value):
                v = float(value)
            else:
                raise ValueError
            if not math.isfinite(v):
                raise ValueError
            return self._in_range(v, None)
        # str
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not _text(value).strip():
            raise ValueError
        text = value.strip()
        if self.choices:
            canon = {**{a.lower(): c for a, c in self.aliases}, **{c.lower(): c for c in self.choices}}
            if text.lower() not in canon:
                raise ValueError
            return canon[text.lower()]
        return text

    def _in_range(self, v: Any, limit: int | None) -> Any:
        if self.minimum is not None and v < self.minimum:
            raise ValueError
        if self.maximum is not None and v > self.maximum:
            raise ValueError
        if limit is not None and abs(v) > limit:
            raise ValueError
        return v


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy's bool without numpy


def _text(value: str) -> str:
    if len(value) > MAX_TEXT:
        raise ValueError
    return value


def _shown(value: Any) -> str:
    """A value in a message: repr, cut short (a value may be a megabyte of text)."""
    r = repr(value)
    return r if len(r) <= 80 else r[:77] + "..."


@dataclass(frozen=True)
class OptionSchema:
    """The options of one owner ('onnxruntime session', 'tensorrt export')."""

    owner: str
    options: tuple[Option, ...]

    def __post_init__(self) -> None:
        names = [o.name for o in self.options]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.owner}: an option is declared twice: {names}")

    def names(self) -> list[str]:
        return [o.name for o in self.options]

    def find(self, key: str) -> Option | None:
        return next((o for o in self.options if o.matches(key)), None)

    # ---------------------------------------------------------------- the two entry points
    def parse(self, pairs: Iterable[str]) -> dict[str, Any]:
        """`["threads=2", "providers=A,B"]` -> {"threads": 2, "providers": ["A", "B"]}: the command line."""
        raw: dict[str, Any] = {}
        for pair in pairs:
            if not isinstance(pair, str):
                raise InputError(f"{self.owner} option {_shown(pair)}: expected KEY=VALUE text")
            key, sep, value = pair.partition("=")
            key = key.strip()
            if not sep:
                raise InputError(f"{self.owner} option {_shown(pair)}: expected KEY=VALUE ({self.example()})")
            if not key:
                raise InputError(f"{self.owner} option {_shown(pair)}: the key is empty; expected KEY=VALUE "
                                 f"({self.example()})")
            if key in raw:
                raise InputError(f"{self.owner} option {key} is given twice ({key}={_shown(raw[key])} and "
                                 f"{key}={_shown(value.strip())}); give it once")
            raw[key] = value.strip()
        return self.validate(raw)

    def validate(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Python values by key -> the typed values; unknown keys and bad values are an InputError."""
        if not isinstance(values, Mapping):
            raise InputError(f"{self.owner} options must be a mapping of names to values, got "
                             f"{type(values).__name__}")
        unknown = sorted(str(k) for k in values if not isinstance(k, str) or self.find(k) is None)
        if unknown:
            raise InputError(f"unknown {self.owner} option(s) {', '.join(_shown(k)[1:-1] for k in unknown)}; "
                             f"valid: {', '.join(self.names()) or 'none'}")
        out: dict[str, Any] = {}
        for key, value in values.items():
            opt = self.find(key)
            assert opt is not None
            try:
                out[key] = opt.read(value)
            except (ValueError, TypeError, OverflowError):
                raise InputError(f"{self.owner} option {key}={_shown(value)}: expected {opt.describe()}") from None
        return out

    # ---------------------------------------------------------------- for the option's users
    def resolve(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """validate(), with the default of every option not given (prefix options have none)."""
        return {**{o.name: o.default for o in self.options if not o.prefix}, **self.validate(values)}

    def select(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of `values` this schema knows (a dict shared by several formats)."""
        return {k: v for k, v in values.items() if isinstance(k, str) and self.find(k) is not None}

    @classmethod
    def union(cls, owner: str, schemas: Iterable[OptionSchema]) -> OptionSchema:
        """The options of several owners (the formats of one export); a name declared by two must be the
        same option (e.g. tensorrt's ONNX options are onnx's)."""
        merged: dict[str, Option] = {}
        for schema in schemas:
            for o in schema.options:
                if o.name in merged and merged[o.name] != o:
                    raise ValueError(f"option {o.name!r} is declared differently by two schemas of {owner}")
                merged.setdefault(o.name, o)
        return cls(owner, tuple(merged.values()))

    def example(self) -> str:
        shown = [f"{o.name}={o.value_help().split('|')[0]}" for o in self.options[:2]]
        return "e.g. " + ", ".join(shown) if shown else "this has no options"

    def help_line(self) -> str:
        """`threads=N, providers=A,B, optimization=all | extended | basic | disable` (for --help; spaced
        so that the help can wrap between choices)."""
        return ", ".join(f"{o.name}={o.value_help().replace('|', ' | ')}" for o in self.options)


def markdown_table(schemas: Sequence[tuple[str, OptionSchema]]) -> str:
    """One Markdown table of the options of several owners (README, Options). An option declared
    by an earlier owner (tensorrt's ONNX options) is one row pointing there."""
    rows = ["| For | Option | Value | Default | What it does |", "| --- | --- | --- | --- | --- |"]
    seen: dict[int, str] = {}  # id of an Option object -> where it is listed
    for label, schema in schemas:
        inherited: dict[str, list[str]] = {}
        for o in schema.options:
            if id(o) in seen:
                inherited.setdefault(seen[id(o)], []).append(o.name)
                continue
            seen[id(o)] = label
            value = o.value_help().replace("|", "\\|")
            rows.append(f"| {label} | `{o.name}` | `{value}` | {o.default_text()} | {o.help} |")
        for other, names in inherited.items():
            rows.append(f"| {label} | {', '.join(f'`{n}`' for n in names)} | | | as for {other} |")
    return "\n".join(rows) + "\n"

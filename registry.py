"""One small registry type for every extension point (formats, backends, recipes, ...).

Entries are registered by name (usually by a decorator at import time of the
module that implements them). Modules are imported lazily on first lookup and
only if they exist, so an optional package that is missing disables only its
own entries. An unknown name fails with the list of valid ones.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable, Generic, Iterable, Mapping, TypeVar

from mmedge.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, modules: Iterable[str] = (), per_name: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._modules = tuple(modules)  # imported on first lookup
        self._per_name = dict(per_name or {})  # name -> module imported when that name is asked for
        self._entries: dict[str, T] = {}
        self._loaded = False

    def add(self, name: str, value: T) -> T:
        self._entries[name] = value
        return value

    def register(self, name: str) -> Callable[[T], T]:
        def deco(value: T) -> T:
            return self.add(name, value)

        return deco

    def _load(self, name: str | None = None) -> None:
        if not self._loaded:
            self._loaded = True
            for mod in self._modules:
                _import_if_present(mod)
        if name is not None and name not in self._entries and name in self._per_name:
            _import_if_present(self._per_name[name])

    def get(self, name: str) -> T:
        self._load(name)
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, self.names())
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(set(self._entries) | set(self._per_name))

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._entries.items())

    def __contains__(self, name: str) -> bool:
        self._load(name)
        return name in self._entries


def _import_if_present(module: str) -> None:
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is not None:
        importlib.import_module(module)

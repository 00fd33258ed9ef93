"""Backend-side wrappers (OrtValue, ov.Tensor) of arrays a caller feeds again and again.

A loop such as beam search feeds the same few buffers at every step (h/c in two alternating
buffers, the next words), rewritten in place. A backend in reuse mode wraps each of them once,
sharing its memory (the runtime reads whatever it holds at run time), instead of wrapping it
anew at every call; the cache holds the array with its wrapper, so an id stays that array's.
`ReuseState` is what every reuse mode keeps (the base Session places inputs with it); a
backend extends it with its own part. No third-party import: used by every backend that has
a reuse mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Tuple

MAX_WRAPPED = 32  # a caller feeding new arrays every run only refills it


class WrapCache:
    """id(array) -> (array, wrapper made by `make(array)`), cleared when it reaches MAX_WRAPPED."""

    def __init__(self, make: Callable[[Any], Any]) -> None:
        self.make = make
        self.entries: Dict[int, Tuple[Any, Any]] = {}

    def get(self, array: Any) -> Any:
        hit = self.entries.get(id(array))
        if hit is not None and hit[0] is array:
            return hit[1]
        if len(self.entries) >= MAX_WRAPPED:
            self.entries.clear()
        wrapper = self.make(array)
        self.entries[id(array)] = (array, wrapper)
        return wrapper


@dataclass
class ReuseState:
    """One reuse mode's inputs: the wrappers of the arrays fed before (`wrapped`) and the wrapper
    each input of the backend holds now (`placed`, so an unchanged one is not set again)."""

    wrapped: WrapCache
    placed: Dict[str, Any] = field(default_factory=dict)

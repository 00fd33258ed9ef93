"""The captioner's vocabulary, in the tutorial's word-map format (word -> id).

Torch-free: the runtime, the exporters and the reference models share it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from mmedge.errors import InputError

SPECIALS = ("<start>", "<end>", "<pad>", "<unk>")
MAX_WORD_MAP_BYTES = 64 << 20  # the COCO word map: ~0.2 MB


@dataclass(frozen=True)
class Vocabulary:
    """A word map plus its inverse; ids are contiguous 0..size-1."""

    word_map: Mapping[str, int]

    def __post_init__(self) -> None:
        missing = [s for s in ("<start>", "<end>") if s not in self.word_map]
        if missing:
            raise InputError(f"word map lacks {', '.join(missing)} (a captioner needs both)")
        ids = sorted(self.word_map.values())
        if ids != list(range(len(ids))):
            raise InputError(f"word map ids must be 0..{len(ids) - 1} without gaps or repeats")
        object.__setattr__(self, "_words", [w for w, _ in sorted(self.word_map.items(), key=lambda kv: kv[1])])

    def __len__(self) -> int:
        return len(self.word_map)

    @property
    def start(self) -> int:
        return self.word_map["<start>"]

    @property
    def end(self) -> int:
        return self.word_map["<end>"]

    @property
    def words(self) -> list[str]:
        return self._words  # type: ignore[attr-defined]

    def decode(self, tokens: Iterable[int]) -> str:
        """Token ids -> caption text, dropping the special tokens."""
        skip = {self.word_map.get(s) for s in ("<start>", "<end>", "<pad>")}
        return " ".join(self.words[t] for t in tokens if t not in skip)

    def encode(self, caption: str) -> list[int]:
        unk = self.word_map.get("<unk>")
        out = []
        for w in caption.split():
            if w in self.word_map:
                out.append(self.word_map[w])
            elif unk is not None:
                out.append(unk)
            else:
                raise InputError(f"word {w!r} not in the vocabulary and no <unk> token")
        return out

    @classmethod
    def from_words(cls, words: Iterable[str]) -> "Vocabulary":
        """The tutorial's layout: <pad>=0, words 1..n, then <unk>, <start>, <end>."""
        wm = {w: i + 1 for i, w in enumerate(words)}
        n = len(wm)
        wm.update({"<unk>": n + 1, "<start>": n + 2, "<end>": n + 3, "<pad>": 0})
        return cls(wm)

    @classmethod
    def synthetic(cls, size: int) -> "Vocabulary":
        """Placeholder words for untrained models (benchmarks, tests)."""
        if size < 5:
            raise InputError(f"vocabulary size must be >= 5, got {size}")
        return cls.from_words(f"w{i}" for i in range(1, size - 3))

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        """Read a tutorial `WORDMAP_*.json`: a regular file (never a FIFO or device: opened with
        O_NONBLOCK and checked with fstat) of at most MAX_WORD_MAP_BYTES, bounded JSON; every
        problem is one `InputError` line naming the file."""
        from mmedge.runtime.schema import parse_json, read_regular

        p = Path(path)
        raw = read_regular(p, "word map", MAX_WORD_MAP_BYTES, InputError)
        data = parse_json(raw, str(p), InputError, "not a JSON word map", MAX_WORD_MAP_BYTES)
        if not isinstance(data, dict) or not all(isinstance(k, str) and type(v) is int for k, v in data.items()):
            raise InputError(f"{p}: expected a JSON object mapping words to integer ids")
        try:
            return cls(data)
        except InputError as e:
            raise InputError(f"{p}: {e}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(dict(self.word_map), sort_keys=True), encoding="utf-8")

"""What a caption says is in the picture: a multiset of (colour, shape) objects, and its score.

BLEU rewards wording; a user asks whether the captioner saw the right things. The
grammar of `data/shapes.py` names every object with a colour word and a shape word,
and a count from its determiner:

    "a large red circle", "there is an orange square", "a single small red circle"  -> 1
    "two green triangles", "a pair of green triangles"                              -> 2
    "three red circles", "a row of three red circles"                               -> 3

(size words between the determiner and the colour are skipped; "three shapes" names no
object). A colour without a shape word after it, or a shape word without a colour before
it, is an object of unknown colour or shape ("?"): it matches nothing in the scene.

Scoring against the scene's true objects (multisets on (colour, shape)):
object accuracy = sum |predicted & true| / sum |true|; a caption is clean when it names
nothing beyond the true objects (no hallucinated or duplicated object).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence, Tuple, Union

from mmedge.data import shapes

ObjectKey = Tuple[str, str]  # (colour, shape)
UNKNOWN = "?"
SIZE_WORDS = frozenset(shapes.SIZES) | frozenset(shapes.SIZE_SYNONYM.values())
COUNT_WORDS = {"a": 1, "an": 1, "single": 1, "one": 1, "two": 2, "pair": 2, "three": 3}
SINGULAR = {p: s for s, p in shapes.PLURAL.items()}


def _count(words: Sequence[str], start: int, plural: bool) -> int:
    """The count of the noun phrase whose adjectives end before `start`: its determiner's."""
    i = start - 1
    while i >= 0 and words[i] in SIZE_WORDS:
        i -= 1
    if i >= 1 and words[i] == "of" and words[i - 1] == "pair":  # "a pair of"
        return 2
    if i >= 0 and words[i] in COUNT_WORDS:
        return COUNT_WORDS[words[i]]
    return 2 if plural else 1  # no determiner: a bare plural names at least two


def _phrases(caption: str) -> list[tuple[ObjectKey, int]]:
    """The noun phrases of a caption, in order: ((colour, shape), count)."""
    words = caption.lower().split()
    out: list[tuple[ObjectKey, int]] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w in shapes.COLOURS:
            nxt = words[i + 1] if i + 1 < len(words) else ""
            shape = nxt if nxt in shapes.PLURAL else SINGULAR.get(nxt)
            out.append(((w, shape or UNKNOWN), _count(words, i, nxt in SINGULAR)))
            i += 2 if shape else 1
            continue
        if w in shapes.PLURAL or w in SINGULAR:  # a shape without a colour
            out.append(((UNKNOWN, SINGULAR.get(w, w)), _count(words, i, w in SINGULAR)))
        i += 1
    return out


def parse_caption(caption: str) -> list[ObjectKey]:
    """The objects a caption names, in the order it names them ("two red circles" -> twice)."""
    return [key for key, count in _phrases(caption) for _ in range(count)]


VERTICAL = frozenset({"above", "below", "over", "under", "stacked"})


def stated_left_to_right(caption: str) -> list[ObjectKey] | None:
    """The left-to-right order a caption states ("b to the right of a" -> [a, b]); None if it states none.

    Stated: one object; objects all alike; or single objects listed left to right ("a b and c",
    "from left to right ...", "a to the left of b", "a next to b", "a and b side by side") or
    right to left ("... from right to left", "b to the right of a")."""
    phrases = _phrases(caption)
    keys = [k for k, n in phrases for _ in range(n)]
    if len(set(keys)) <= 1:
        return keys
    words = caption.lower().split()
    if VERTICAL & set(words) or any(n > 1 for _, n in phrases):
        return None
    text = f" {' '.join(words)} "
    return keys[::-1] if " right of " in text or " from right to left " in text else keys


ObjectLike = Union["shapes.ShapeObject", Sequence[str]]


def object_keys(objects: Iterable[ObjectLike]) -> list[ObjectKey]:
    """(colour, shape) of scene objects, or of [colour, shape] pairs (as results files carry them)."""
    out = []
    for o in objects:
        if isinstance(o, shapes.ShapeObject):
            out.append((o.colour, o.shape))
        else:
            colour, shape = o
            out.append((str(colour), str(shape)))
    return out


def match(caption: str, objects: Iterable[ObjectLike]) -> tuple[int, int, bool]:
    """(true objects named, true objects, clean) of one caption against its scene."""
    predicted, true = Counter(parse_caption(caption)), Counter(object_keys(objects))
    return sum((predicted & true).values()), sum(true.values()), not (predicted - true)


Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial rate (sound near 0 and 1, unlike p +- z*se); (0, 1) without trials."""
    if trials <= 0:
        return 0.0, 1.0
    p, n = successes / trials, float(trials)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)  # exactly 0 / 1 at the ends, not 1e-18 off
    return lo, 1.0 if successes >= trials else min(1.0, centre + half)


@dataclass(frozen=True)
class ObjectScore:
    captions: int
    clean: int  # captions naming nothing beyond the scene's objects
    true_objects: int
    matched: int  # true objects named (multiset intersection)

    @property
    def object_accuracy(self) -> float:
        return self.matched / self.true_objects if self.true_objects else 0.0

    @property
    def clean_rate(self) -> float:
        return self.clean / self.captions if self.captions else 0.0

    @property
    def hallucination_rate(self) -> float:
        return 1.0 - self.clean_rate if self.captions else 0.0

    def metrics(self) -> dict[str, float]:
        return {"object_accuracy": self.object_accuracy, "hallucination_rate": self.hallucination_rate}

    def intervals(self, z: float = Z95) -> dict[str, tuple[float, float]]:
        """95 % Wilson intervals of both rates: on 300 captions, 10 hallucinations (3.3 %) is
        anywhere from 1.8 to 6.0 %, so one caption more or less is not a finding. Objects are
        counted as independent trials (those of one caption are not quite: a slight understatement)."""
        lo, hi = wilson_interval(self.clean, self.captions, z)
        return {"object_accuracy": wilson_interval(self.matched, self.true_objects, z),
                "hallucination_rate": (1.0 - hi, 1.0 - lo) if self.captions else (0.0, 1.0)}

    def counts(self) -> dict[str, int]:
        return {"captions": self.captions, "clean": self.clean, "true_objects": self.true_objects,
                "matched": self.matched}


def score_captions(captions: Sequence[str], objects: Sequence[Iterable[ObjectLike]]) -> ObjectScore:
    """Object accuracy and clean captions of `captions[i]` against the objects of scene i."""
    if len(captions) != len(objects):
        raise ValueError(f"{len(captions)} captions for {len(objects)} scenes' objects")
    results = [match(c, objs) for c, objs in zip(captions, objects)]
    return ObjectScore(captions=len(results), clean=sum(r[2] for r in results),
                       true_objects=sum(r[1] for r in results), matched=sum(r[0] for r in results))

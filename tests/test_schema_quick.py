"""The validator's quick path for long maps and lists of plain strings/integers (a 9,490-word
vocabulary) finds the same first problem, with the same path and message, as the full walk."""

from __future__ import annotations

import pytest

from mmedge.errors import ArtifactError
from mmedge.runtime import schema as sch

MAP = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 999},
       "propertyNames": {"type": "string", "minLength": 1, "maxLength": 8}}
LIST = {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5}}


@pytest.mark.parametrize("doc, where", [
    ({**{f"w{i}": i for i in range(900)}, "w900": -1}, "$.w900: expected a number >= 0, got -1"),
    ({**{f"w{i}": i for i in range(900)}, "toolongkey": 3}, "$.toolongkey: key not allowed"),
    ({**{f"w{i}": i for i in range(900)}, "w900": True}, "$.w900: expected"),
    ({**{f"w{i}": i for i in range(900)}, "w900": 2.0}, "$.w900: expected"),
])
def test_a_bad_entry_at_the_end_of_a_long_map_is_found(doc: dict, where: str) -> None:
    with pytest.raises(ArtifactError, match=f"m.json: malformed manifest at {where}".replace("$", r"\$")):
        sch.validate(doc, MAP, "m.json")


def test_a_bad_item_at_the_end_of_a_long_list_is_found() -> None:
    sch.validate(["abc"] * 5000, LIST, "m.json")
    for bad, why in (("ABC", "a string matching"), ("abcdef", "at most 5 characters"), (7, "expected a string")):
        with pytest.raises(ArtifactError, match=rf"at \$\[5000\]: .*{why}"):
            sch.validate(["abc"] * 5000 + [bad], LIST, "m.json")


def test_other_schemas_take_the_full_walk() -> None:
    assert sch._quick_check({"type": "string", "enum": ["a"]}) is None
    assert sch._quick_check({"type": ["integer", "null"]}) is None
    assert sch._quick_check(True)(object()) and sch._quick_check({"title": "anything"})(None)
    assert sch._quick_check(False) is None
    ok = sch._quick_check(MAP["additionalProperties"])
    assert ok(5) and not ok(-1) and not ok(True) and not ok(5.0)

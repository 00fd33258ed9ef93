"""`--precision auto`'s captioner table is data (issue #17): rows of (families, formats, mix, reason),
indexed by one function that refuses a cell two rows claim. The choices themselves per real CPU are
checked in test_precision_auto.py."""

from __future__ import annotations

import pytest

from mmedge.export.precision_policy import CAPTIONER, CAPTIONER_ROWS, CPU_FORMATS, Row, table
from mmedge.runtime.cpu_features import FAMILIES


def test_every_family_and_cpu_format_has_exactly_one_row() -> None:
    cells = [(f, fmt) for r in CAPTIONER_ROWS for f in r.families for fmt in r.formats]
    assert len(cells) == len(set(cells))
    assert set(cells) == {(f, fmt) for f in FAMILIES if f != "jetson" for fmt in CPU_FORMATS}
    assert list(CAPTIONER) == [f for f in FAMILIES if f != "jetson"]  # the families' order, as before


def test_every_row_says_why_in_one_line() -> None:
    for r in CAPTIONER_ROWS:
        assert r.reason and "\n" not in r.reason and r.families and r.formats
        for f in r.families:
            for fmt in r.formats:
                assert CAPTIONER[f][fmt] == r.rule


def test_two_rows_for_one_cell_are_refused() -> None:
    rows = (Row(("x86",), ("onnx",), ("fp32", "fp32", "fp32"), "a"),
            Row(("x86", "arm64"), ("onnx",), ("int8", "int8", "int8"), "b"))
    with pytest.raises(ValueError, match="two rows for x86 / onnx"):
        table(rows)


def test_formats_follow_cpu_formats_whatever_the_row_order() -> None:
    rows = (Row(("a",), ("openvino",), ("fp32", "fp32", "fp32"), "ov"),
            Row(("a",), ("onnx",), ("int8", "int8", "int8"), "ort"))
    assert list(table(rows)["a"]) == list(CPU_FORMATS)

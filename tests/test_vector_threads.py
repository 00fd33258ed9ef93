"""Test vectors are recorded at one torch thread whatever the caller set, and the count is put back:
references recorded at the caller's count differ in their last bits between runs, so a re-export
was not byte-identical after anything (a test, a trainer) changed torch's threads."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mmedge.export import registry  # noqa: E402


def test_vectors_are_recorded_at_one_thread_and_the_count_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = registry.build_context(registry.ExportRequest("captioner", ["onnx"], config="tiny"))
    seen: list[int] = []
    reference = ctx.reference

    def spy(graph, feeds):  # type: ignore[no-untyped-def]
        seen.append(torch.get_num_threads())
        return reference(graph, feeds)

    monkeypatch.setattr(ctx, "reference", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first = registry.test_vectors(ctx)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        second = registry.test_vectors(ctx)
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}
    assert first.keys() == second.keys()
    for k in first:
        assert np.array_equal(first[k], second[k]), k

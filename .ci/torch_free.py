"""pytest plugin for the lowest-versions job (.ci/floors.sh), loaded with `-p torch_free`.

That venv holds only the runtime's declared floors (no torch, onnx, openvino, ...). A test
module or test that stops because one of those optional packages is absent (ModuleNotFoundError
at import, or mmedge's MissingDependencyError) is reported as skipped, with the package named.
Anything else fails as usual: a missing attribute of numpy, a changed typer behaviour, or a
missing package that *is* installed here (a floor that does not hold) stays a failure.
"""

from __future__ import annotations

import importlib.util
from typing import Optional

import pytest


def _absent_optional(exc: BaseException) -> Optional[str]:
    """The optional top-level package whose absence raised `exc` (or its cause), else None."""
    from mmedge.errors import MissingDependencyError

    seen = 0
    while exc is not None and seen < 8:
        name = None
        if isinstance(exc, MissingDependencyError):
            name = exc.package
        elif isinstance(exc, ModuleNotFoundError) and exc.name:
            name = exc.name.split(".")[0]
        if name:
            try:
                present = importlib.util.find_spec(name.replace("-", "_")) is not None
            except (ImportError, ValueError):
                present = False
            return None if present else name
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _as_skip(rep: pytest.BaseReport, where: str, name: str) -> None:
    rep.outcome = "skipped"
    rep.longrepr = (where, 0, f"Skipped: {name} is not installed in the floors venv")


@pytest.hookimpl(tryfirst=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Optional[pytest.CollectReport]:
    if not isinstance(collector, pytest.Module):
        return None
    try:
        collector.obj  # imports the test module (pytest caches it on success)
    except BaseException as e:  # noqa: BLE001 - pytest's own report follows unless it is an absent package
        name = _absent_optional(e)
        if name:
            reason = f"Skipped: {name} is not installed in the floors venv"
            return pytest.CollectReport(collector.nodeid, "skipped", (str(collector.path), 0, reason), [])
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.excinfo is not None:
        name = _absent_optional(call.excinfo.value)
        if name:
            _as_skip(rep, str(item.path), name)

"""The Jetson bundle's shell scripts and README, from the template files in export/templates/jetson/.

The templates are package data (pyproject.toml `[tool.setuptools.package-data]`), so they
are in the wheel the bundle carries, and plain files that shellcheck and an editor read as
what they are. Placeholders are `@@NAME@@`, replaced as text (nothing else in them is
interpreted): build_engines.sh takes `@@GRAPHS@@` (one line per graph), `@@MATRIX@@` (the
TensorRT support matrix), `@@WORKSPACE_MIB@@`, `@@DLA_CORE@@`, `@@VERSION_COMPATIBLE@@`
and `@@MMEDGE@@`; README.md takes `@@ROWS@@`, `@@NOTES@@` and `@@MATRIX@@`; install.sh
is copied as it is.
"""

from __future__ import annotations

import re
from typing import Any

from mmedge.errors import ExportError

SCRIPT = "build_engines.sh"
INSTALL_SCRIPT = "install.sh"
README = "README.md"
TEMPLATES = "templates/jetson"  # below the mmedge.export package
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-/:,]+$")  # what build_engines.sh can pass to trtexec safely


def template(name: str) -> str:
    """The text of one template, read through the package's loader (a source tree, an installed
    wheel, a zip): importlib.resources.files on Python 3.9+, pkgutil on 3.8 (JetPack 5)."""
    package = __name__.rpartition(".")[0]
    try:
        try:
            from importlib.resources import files
        except ImportError:  # Python 3.8
            import pkgutil

            data = pkgutil.get_data(package, f"{TEMPLATES}/{name}")
        else:
            res = files(package)
            for part in [*TEMPLATES.split("/"), name]:
                res = res / part
            data = res.read_bytes()
    except OSError:
        data = None
    if data is None:
        raise ExportError(f"mmedge's template {TEMPLATES}/{name} is missing (a broken install: reinstall mmedge)")
    return data.decode("utf-8")


def build_script(graph_lines: list[str], defaults: dict[str, str] | None = None) -> str:
    """build_engines.sh: the template with the graphs, the support matrix and the packaged defaults."""
    from mmedge.export.artifact import tool_versions
    from mmedge.export.trt_matrix import script_table

    body = "\n".join(f'  "{line}"' for line in graph_lines)
    d = {"WORKSPACE_MIB": "1024", "DLA_CORE": "", "VERSION_COMPATIBLE": "0", **(defaults or {})}
    for key, value in d.items():
        if value and not re.fullmatch(r"[0-9]+", value):
            raise ExportError(f"build_engines.sh default {key}={value!r} is not a number")
    text = template(SCRIPT).replace("@@GRAPHS@@", body).replace("@@MATRIX@@", script_table())
    for key, value in d.items():
        text = text.replace(f"@@{key}@@", value)
    return text.replace("@@MMEDGE@@", tool_versions()["mmedge"] or "dev")


def install_script() -> str:
    """install.sh: no placeholders; what it installs is in the requirements files beside it."""
    return template(INSTALL_SCRIPT)


def bundle_readme(groups: list[dict[str, Any]]) -> str:
    """README.md: the bundle's models, its compatibility notes and the support matrix."""
    rows = "\n".join(f"| {g['name']} | {g['pipeline']} | {', '.join(g['graphs'])} | "
                     f"{'yes' if g['int8'] else 'no'} |" for g in groups)
    notes = "\n".join(f"- {g['name']}: {n}" for g in groups for n in g["notes"]) or "- none"
    from mmedge.export.trt_matrix import markdown_table

    return template(README).replace("@@ROWS@@", rows).replace("@@NOTES@@", notes).replace(
        "@@MATRIX@@", markdown_table())

"""Graph roles live in one place (runtime/roles.py): the catalog carries them as hints and no
package module keeps its own list of the captioner's decoder graphs."""

from __future__ import annotations

import re
from pathlib import Path

from mmedge.calibration.recipes import QuantConfig
from mmedge.models import zoo
from mmedge.runtime import roles

ROOT = Path(__file__).resolve().parents[1]
# a tuple/list literal naming both decoder graphs: the duplicated DECODER_GRAPHS this replaces
DECODER_LIST = re.compile(r"""[(\[]\s*["']decoder_init["']\s*,\s*["']decoder_step["']\s*[,)\]]""")


def test_catalog_hints_match_the_roles() -> None:
    graphs = {g.name: g for g in zoo.info("captioner").graphs}
    assert tuple(graphs) == roles.CAPTIONER_GRAPHS
    assert [n for n, g in graphs.items() if g.hints.decoder] == list(roles.DECODER_GRAPHS)
    assert [n for n, g in graphs.items() if g.hints.step] == [roles.DECODER_STEP]
    for name, g in graphs.items():
        assert g.hints == roles.hints_for(name), name
    for model in zoo.catalog():
        if model.name != "captioner":
            assert all(g.hints == roles.NO_HINTS for g in model.graphs), model.name


def test_older_manifests_fall_back_to_the_role_name() -> None:
    assert roles.is_decoder("decoder_init") and roles.is_decoder("decoder_step")
    assert not roles.is_decoder("encoder") and not roles.is_decoder("model")
    assert roles.hints_for("decoder_step").step and not roles.hints_for("decoder_init").step


def test_recipes_quantize_the_ops_the_hints_name() -> None:
    cfg = QuantConfig()
    for name in roles.DECODER_GRAPHS:
        assert tuple(cfg.ops_for("captioner", name) or ()) == roles.hints_for(name).quantize_ops


def test_no_package_module_keeps_its_own_decoder_list() -> None:
    skip = {"tests", "benchmarks", "docs", "mmedge.egg-info"}
    found = [str(p.relative_to(ROOT)) for p in sorted(ROOT.rglob("*.py"))
             if not skip & set(p.relative_to(ROOT).parts) and p != ROOT / "runtime" / "roles.py"
             and (DECODER_LIST.search(p.read_text(encoding="utf-8"))
                  or re.search(r"^DECODER_GRAPHS\s*=", p.read_text(encoding="utf-8"), re.M))]
    assert found == []


def test_int8_reported_only_names_real_outputs_and_parity_reads_it() -> None:
    """The parity exemption is declared with the graph roles and names outputs the graphs have."""
    from mmedge.models import zoo
    from mmedge.runtime import parity
    from mmedge.runtime.roles import INT8_REPORTED_ONLY

    spec = zoo.get("captioner")
    for graph, outputs in INT8_REPORTED_ONLY.items():
        assert set(outputs) <= set(spec.graph(graph).outputs), graph
    assert parity.INT8_NOT_JUDGED == {"decoder_step.alpha"}
    assert "decoder_step.log_probs" not in parity.INT8_NOT_JUDGED  # what the captions depend on stays judged

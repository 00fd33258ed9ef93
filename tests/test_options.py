"""Typed options (`-x KEY=VALUE` of the exporters, `-O KEY=VALUE` of the backends): one schema per
exporter and backend (runtime/options.py), checked in one place before any work.

Hostile values through the command line (exit 2, exactly one line `mmedge: error: ...`, nothing
written) and through the Python API (InputError); the schemas themselves (every backend and
exporter has one, every option has help); the README's Options table equals the schemas.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mmedge.errors import InputError
from mmedge.runtime.options import Option, OptionSchema, markdown_table

ROOT = Path(__file__).resolve().parents[1]
ORT_THREADS = "expected an integer from 1 to 1024"


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, list[str], str]:
    from mmedge.cli import run

    capsys.readouterr()
    rc = run([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.err.splitlines(), cap.out


def assert_one_line(capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    rc, err, out = cli(capsys, *args)
    assert rc == 2, (rc, err)
    assert len(err) == 1, err
    assert err[0].startswith("mmedge: error: "), err
    assert message in err[0], (message, err[0])
    assert "Traceback" not in err[0]


# ------------------------------------------------------------------ -O through the command line
BACKEND_CASES = [
    (["threads=²"], "onnxruntime session option threads='²': " + ORT_THREADS),  # '²'.isdigit() is True
    (["threads=abc"], "onnxruntime session option threads='abc': " + ORT_THREADS),
    (["threads=1e20"], "onnxruntime session option threads='1e20': " + ORT_THREADS),
    (["threads=0"], "onnxruntime session option threads='0': " + ORT_THREADS),
    (["threads=-1"], "onnxruntime session option threads='-1': " + ORT_THREADS),
    (["threads=true"], "onnxruntime session option threads='true': " + ORT_THREADS),
    (["threads=2.0"], "onnxruntime session option threads='2.0': " + ORT_THREADS),
    (["threads=99999999999999999999999999"], "threads='99999999999999999999999999': " + ORT_THREADS),
    (["threads="], "onnxruntime session option threads='': " + ORT_THREADS),
    (["optimization=fast"], "onnxruntime session option optimization='fast': expected one of all, extended, "
                            "basic, disable"),
    (["providers=,"], "onnxruntime session option providers=',': expected a comma-separated list of names"),
    (["device=GPU"], "unknown onnxruntime session option(s) device; valid: threads, providers, optimization"),
    (["nonsense=1", "bogus=2"], "unknown onnxruntime session option(s) bogus, nonsense; valid: threads"),
    (["threads=1", "threads=2"], "onnxruntime session option threads is given twice"),
    (["threads"], "onnxruntime session option 'threads': expected KEY=VALUE"),
    (["=2"], "onnxruntime session option '=2': the key is empty; expected KEY=VALUE"),
]


@pytest.mark.parametrize("pairs, message", BACKEND_CASES, ids=lambda v: ",".join(v) if isinstance(v, list) else "")
def test_backend_options_on_the_command_line(pairs: list[str], message: str, cli_onnx: dict[str, Path],
                                             capsys: pytest.CaptureFixture) -> None:
    args = ["parity", "-a", cli_onnx["soundnet"]]
    for p in pairs:
        args += ["-O", p]
    assert_one_line(capsys, args, message)


def test_backend_options_are_checked_for_the_chosen_backend(cli_onnx: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    """--backend names the schema (before its package is even looked for)."""
    art = cli_onnx["soundnet"]
    assert_one_line(capsys, ["parity", "-a", art, "--backend", "openvino", "-O", "hint=fast"],
                    "openvino session option hint='fast': expected one of latency, throughput")
    assert_one_line(capsys, ["parity", "-a", art, "--backend", "tensorrt", "-O", "device=GPU"],
                    "tensorrt session option device='GPU': expected an integer from 0 to 1024")
    assert_one_line(capsys, ["profile", "-a", art, "--runs", "1", "-O", "streams=2"],
                    "unknown onnxruntime session option(s) streams; valid: threads")
    assert_one_line(capsys, ["eval", "soundnet", "-a", art, "--out", tmp_path / "e.jsonl", "-O", "threads=x"],
                    "onnxruntime session option threads='x': " + ORT_THREADS)
    assert not list(tmp_path.iterdir())


def test_good_backend_options_run(cli_onnx: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    rc, err, _ = cli(capsys, "parity", "-a", cli_onnx["soundnet"], "-O", "threads=1", "-O", "optimization=BASIC",
                     "-O", "providers=CPUExecutionProvider")
    assert rc == 0, err


# ------------------------------------------------------------------ -o through the command line
EXPORT_CASES = [
    (["onnx"], ["opset=abc"], "onnx export option opset='abc': expected an integer from 7 to 23"),
    (["onnx"], ["opset=99999"], "onnx export option opset='99999': expected an integer from 7 to 23"),
    (["onnx"], ["opset=17.0"], "onnx export option opset='17.0': expected an integer from 7 to 23"),
    (["onnx"], ["opset=¹⁷"], "onnx export option opset='¹⁷': expected an integer from 7 to 23"),
    (["onnx"], ["exporter=nonsense"], "onnx export option exporter='nonsense': expected one of torchscript, dynamo"),
    (["onnx"], ["simplify=maybe"], "onnx export option simplify='maybe': expected true or false"),
    (["onnx"], ["nonsense=1"], "unknown onnx export option(s) nonsense; valid: opset, exporter, simplify, target"),
    (["openvino"], ["opset=17"], "unknown openvino export option(s) opset; valid: from_onnx"),
    (["onnx", "openvino"], ["dla_core=0"], "unknown --format onnx,openvino export option(s) dla_core; valid: opset"),
    (["onnx"], ["opset=17", "opset=18"], "onnx export option opset is given twice"),
    (["onnx"], ["opset"], "onnx export option 'opset': expected KEY=VALUE"),
    (["onnx"], ["=17"], "onnx export option '=17': the key is empty"),
    (["tensorrt"], ["batch=4,2,8"], "tensorrt export option batch='4,2,8': expected MIN,OPT,MAX with 1 <= MIN"),
    (["tensorrt"], ["profile.=1,2,3"], "unknown tensorrt export option(s) profile.; valid: workspace"),
    (["tensorrt"], ["workspace=-5"], "tensorrt export option workspace='-5': expected an integer from 1 to"),
    (["coreml"], ["batches=1,0"], "coreml export option batches='1,0': expected a comma-separated list of integers"),
    (["coreml"], ["deployment_target=iOS12"], "coreml export option deployment_target='iOS12': expected one of"),
]


@pytest.mark.parametrize("formats, pairs, message", EXPORT_CASES,
                         ids=lambda v: ",".join(v) if isinstance(v, list) else "")
def test_export_options_on_the_command_line(formats: list[str], pairs: list[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("torch")
    args = ["export", "soundnet", "--config", "tiny", "--format", ",".join(formats), "--out", tmp_path / "out"]
    for p in pairs:
        args += ["-x", p]
    assert_one_line(capsys, args, message)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_eval_split_is_a_choice(cli_onnx: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert_one_line(capsys, ["eval", "soundnet", "-a", cli_onnx["soundnet"], "--split", "foo"],
                    "unknown split 'foo'; expected one of train, val, test")


# ------------------------------------------------------------------ the Python API
@pytest.mark.parametrize("options, message", [
    ({"threads": "x"}, "onnxruntime session option threads='x': " + ORT_THREADS),
    ({"threads": True}, "onnxruntime session option threads=True: " + ORT_THREADS),  # a bool is not an int
    ({"threads": 2.0}, "onnxruntime session option threads=2.0: " + ORT_THREADS),
    ({"threads": 0}, "onnxruntime session option threads=0: " + ORT_THREADS),
    ({"threads": -1}, "onnxruntime session option threads=-1: " + ORT_THREADS),
    ({"threads": "²"}, "onnxruntime session option threads='²': " + ORT_THREADS),
    ({"threads": [1]}, "onnxruntime session option threads=[1]: " + ORT_THREADS),
    ({"providers": 3}, "onnxruntime session option providers=3: expected a comma-separated list of names"),
    ({"optimization": None}, "onnxruntime session option optimization=None: expected one of all"),
    ({"device": "GPU"}, "unknown onnxruntime session option(s) device; valid: threads, providers, optimization"),
])
def test_load_checks_its_options(options: dict[str, Any], message: str, cli_onnx: dict[str, Path]) -> None:
    from mmedge.runtime import load

    with pytest.raises(InputError, match=re.escape(message)):
        load(cli_onnx["soundnet"], **options)
    with pytest.raises(InputError, match=re.escape(message)):  # the backend named: checked before the manifest
        load(cli_onnx["soundnet"], "onnxruntime", **options)


def test_load_takes_typed_options_and_their_text(cli_onnx: dict[str, Path]) -> None:
    from mmedge.runtime import load

    pytest.importorskip("onnxruntime")
    import numpy as np

    for options in ({"threads": 1}, {"threads": np.int64(2)}, {"threads": "2"}, {"threads": None},
                    {"providers": ["CPUExecutionProvider"], "optimization": "disable"}):
        assert load(cli_onnx["soundnet"], **options).sessions["model"] is not None


def test_open_session_checks_options_before_importing_the_backend(tmp_path: Path) -> None:
    from mmedge.runtime.session import open_session

    with pytest.raises(InputError, match=re.escape("coreml session option compute_units='GPU': expected one of")):
        open_session("coreml", tmp_path / "m.mlpackage", [], [], compute_units="GPU")
    with pytest.raises(InputError, match=re.escape("tensorrt session option device=-1: expected an integer")):
        open_session("tensorrt", tmp_path / "m.engine", [], [], device=-1)


def _soundnet_ctx(options: dict[str, Any]) -> Any:
    pytest.importorskip("torch")
    from mmedge.export.registry import ExportContext
    from mmedge.models import zoo

    spec = zoo.get("soundnet")
    return ExportContext(spec, "tiny", spec.config("tiny"), spec.create("tiny"), "fp32", None, options)


@pytest.mark.parametrize("formats, options, message", [
    (["onnx"], {"opset": "abc"}, "onnx export option opset='abc': expected an integer from 7 to 23"),
    (["onnx"], {"opset": True}, "onnx export option opset=True: expected an integer from 7 to 23"),
    (["onnx"], {"opset": 99999}, "onnx export option opset=99999: expected an integer from 7 to 23"),
    (["onnx"], {"exporter": "nonsense"}, "onnx export option exporter='nonsense': expected one of torchscript"),
    (["onnx"], {"simplify": 1}, "onnx export option simplify=1: expected true or false"),  # an int is not a bool
    (["onnx"], {"nonsense": 1}, "unknown onnx export option(s) nonsense; valid: opset"),
    (["openvino"], {"from_onnx": ""}, "openvino export option from_onnx='': expected a non-empty text"),
])
def test_export_checks_its_options(formats: list[str], options: dict[str, Any], message: str,
                                   tmp_path: Path) -> None:
    from mmedge.export.registry import ExportRequest, export, export_context

    with pytest.raises(InputError, match=re.escape(message)):
        export_context(_soundnet_ctx(dict(options)), formats, tmp_path / "a")
    with pytest.raises(InputError, match=re.escape(message)):
        export(ExportRequest("soundnet", formats, config="tiny", out=tmp_path / "b", options=dict(options)))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_each_exporter_gets_only_its_own_options() -> None:
    pytest.importorskip("torch")
    from mmedge.export import registry

    opts = registry.parse_options(["coreml", "tensorrt"], ["batches=4,1,2", "opset=18", "timing_cache=false",
                                                          "profile.samples=8000,16000,32000"])
    assert opts == {"batches": [4, 1, 2], "opset": 18, "timing_cache": False,
                    "profile.samples": (8000, 16000, 32000)}
    ctx = _soundnet_ctx(opts)
    assert registry.own_options(ctx, registry.EXPORTERS.get("coreml")).options == {"batches": [4, 1, 2]}
    assert registry.own_options(ctx, registry.EXPORTERS.get("tensorrt")).options == {
        "opset": 18, "timing_cache": False, "profile.samples": (8000, 16000, 32000)}
    assert registry.own_options(ctx, registry.EXPORTERS.get("onnx")).options == {"opset": 18}


def test_tensorrt_and_coreml_read_the_schema() -> None:
    from mmedge.export.tensorrt import settings_from_options

    s = settings_from_options({"dla_core": "1", "gpu_fallback": "no", "beam": (1, 2, 2), "int8_source": "QDQ"},
                              "int8")
    assert (s.dla_core, s.gpu_fallback, s.beam, s.int8_source) == (1, False, (1, 2, 2), "qdq")
    with pytest.raises(InputError, match=re.escape("tensorrt export option dla_core='x': expected an integer")):
        settings_from_options({"dla_core": "x"}, "int8")
    pytest.importorskip("torch")
    from mmedge.export.coreml import CoreMLOptions

    o = CoreMLOptions.from_options({"batches": "4,1,2,2", "deployment_target": "ios17", "max_batch": 8})
    assert (o.batches, o.deployment_target, o.axis_max["batch"]) == ((1, 2, 4), "iOS17", 8)
    assert CoreMLOptions.from_options({}, default_target="iOS17").deployment_target == "iOS17"


# ------------------------------------------------------------------ the schema itself
def test_schema_parse_and_validate() -> None:
    s = OptionSchema("toy", (
        Option("n", int, 1, "a count", minimum=1, maximum=10),
        Option("x", float, None, "a number", minimum=0),
        Option("on", bool, False, "a switch"),
        Option("mode", str, "a", "a mode", choices=("a", "B")),
        Option("items", list, None, "numbers", item=int, minimum=0),
        Option("profile.AXIS", tuple, None, "a prefix option", parse=lambda v: tuple(v.split(":")), expects="A:B",
               prefix=True),
    ))
    assert s.parse(["n=+3", " x = 1.5e2 ", "on=YES", "mode=b", "items=1, 2,", "profile.h=1:2"]) == {
        "n": 3, "x": 150.0, "on": True, "mode": "B", "items": [1, 2], "profile.h": ("1", "2")}
    assert s.resolve({}) == {"n": 1, "x": None, "on": False, "mode": "a", "items": None}
    assert s.select({"n": 2, "zz": 3, "profile.w": "1:1"}) == {"n": 2, "profile.w": "1:1"}
    for bad in (["x=nan"], ["x=inf"], ["x=-1"], ["x=1e999"], ["on=2"], ["items=1,-1"], ["n=11"], ["n=" + "9" * 5000],
                ["mode=" + "a" * 5000], ["profile.=1:2"], ["profile.1h=1:2"]):
        with pytest.raises(InputError) as e:
            s.parse(bad)
        assert "\n" not in str(e.value) and len(str(e.value)) < 300, bad
    for bad in ({"n": True}, {"n": 2.0}, {"on": 1}, {"x": True}, {"x": float("nan")}, {"items": "a"}, {1: 2}):
        with pytest.raises(InputError):
            s.validate(bad)
    with pytest.raises(InputError, match="must be a mapping"):
        s.validate(["n=1"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="declared twice"):
        OptionSchema("bad", (Option("a", int, 0, "x"), Option("a", int, 0, "x")))
    with pytest.raises(ValueError, match="declared differently"):
        OptionSchema.union("two", [OptionSchema("p", (Option("a", int, 0, "x"),)),
                                   OptionSchema("q", (Option("a", str, "0", "x"),))])


ORDER = ("onnx", "onnxruntime", "openvino", "coreml", "tensorrt")  # the README's order


def _ordered(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return sorted(items, key=lambda kv: (ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER), kv[0]))


def _backends() -> list[tuple[str, Any]]:
    from mmedge.runtime.backends import BACKENDS

    return _ordered(BACKENDS.items())


def _exporters() -> list[tuple[str, Any]]:
    pytest.importorskip("torch")
    from mmedge.export.registry import EXPORTERS

    return _ordered(EXPORTERS.items())


def _check_schema(owner: str, schema: Any) -> None:
    assert isinstance(schema, OptionSchema) and schema.owner, owner
    for o in schema.options:
        assert o.help.strip() and o.help == o.help.strip() and not o.help.endswith("."), (owner, o.name)
        assert re.fullmatch(r"[a-z][a-z0-9_]*(\.[A-Z]+)?", o.name), (owner, o.name)
        assert o.describe() and o.value_help(), (owner, o.name)
        if o.default is not None and not o.prefix:  # the default is a valid value of the option
            schema.validate({o.name: o.default})


def test_every_backend_and_exporter_has_a_schema_with_help() -> None:
    backends, exporters = _backends(), _exporters()
    assert {n for n, _ in backends} >= {"onnxruntime", "openvino", "coreml", "tensorrt"}
    assert {n for n, _ in exporters} >= {"onnx", "openvino", "coreml", "tensorrt"}
    for name, info in backends:
        _check_schema(name, info.options)
        assert info.options.owner == f"{name} session" and "threads" in info.options.names()
    for name, info in exporters:
        _check_schema(name, info.options)
        assert info.options.owner == f"{name} export"
    from mmedge.export.registry import option_schema

    option_schema([n for n, _ in exporters])  # one key means the same thing in every exporter


def test_the_backend_option_help_comes_from_the_schemas(capsys: pytest.CaptureFixture) -> None:
    from mmedge.runtime.backends import backends_help

    rc, _, out = cli(capsys, "caption", "--help")
    assert rc == 0
    assert re.sub(r"\s+", "", backends_help()) in re.sub(r"\s+", "", out)  # click wraps the lines
    for name, info in _backends():
        assert f"{name}: " + ", ".join(f"{o.name}=" for o in info.options.options[:1]) in backends_help()


# ------------------------------------------------------------------ README, Options
def options_table() -> str:
    rows = [(f"`-O` {name}", info.options) for name, info in _backends()]
    rows += [(f"`-x` {name}", info.options) for name, info in _exporters()]
    return markdown_table(rows)


def test_readme_options_table_equals_the_schemas() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- options-table -->\n(.*?)<!-- /options-table -->", readme, re.S)
    assert m, "README.md lacks the <!-- options-table --> ... <!-- /options-table --> section"
    assert m.group(1) == options_table(), "README's Options table differs from the schemas; paste:\n" + options_table()

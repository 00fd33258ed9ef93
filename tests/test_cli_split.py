"""The command line as a package of thin modules (issue 17, items 6 and 8).

- `-x/--export-option` is export's spelling; `-o/--option` still works, hidden, with one
  deprecation line on stderr, and gives the same request.
- OpenVINO's `-O precision=` takes mmedge's spellings (fp32, fp16) and OpenVINO's (f32, f16), and
  its help lists fp32 first.
- `mmedge` without a command is recognised by class, not by class name.
- The logic moved out of the CLI (integer lists, executor options, eval and export requests)
  keeps its messages; the CLI modules stay small and import only what `--help` needs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from mmedge.cli import run
from mmedge.errors import InputError, MmedgeError
from mmedge.runtime.options import Option, OptionSchema

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "cli"
DEPRECATED = "-o/--option is deprecated: use -x/--export-option"


def cli(capsys: pytest.CaptureFixture, *args: Any) -> tuple[int, list[str], str]:
    capsys.readouterr()
    rc = run([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.err.splitlines(), cap.out


# ------------------------------------------------------------------ -x/--export-option and its old spelling
@pytest.fixture
def captured_request(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Export requests as the command builds them; nothing is exported."""
    try:
        from mmedge.calibration import export_job
    except ModuleNotFoundError as e:  # a torch-free install has no exporter
        pytest.skip(f"export needs {e.name}")
    seen: list[Any] = []

    def fake(req: Any, log: Any) -> Any:
        seen.append(req)
        return export_job.ExportOutcome([], [])

    monkeypatch.setattr(export_job, "run_export", fake)
    return seen


@pytest.mark.parametrize("flag, deprecated", [("-x", False), ("--export-option", False), ("-o", True),
                                              ("--option", True)])
def test_every_spelling_gives_the_same_request(flag: str, deprecated: bool, captured_request: list[Any],
                                               tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, err, _ = cli(capsys, "export", "soundnet", "--config", "tiny", "--out", tmp_path / "out",
                     flag, "opset=18", flag, "simplify=false")
    assert rc == 0, err
    assert err == ([DEPRECATED] if deprecated else [])
    assert captured_request[0].options == {"opset": 18, "simplify": False}


def test_both_spellings_together_are_one_option_list(captured_request: list[Any], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    rc, err, _ = cli(capsys, "export", "soundnet", "--out", tmp_path, "-x", "opset=18", "-o", "simplify=false")
    assert rc == 0 and err == [DEPRECATED]
    assert captured_request[0].options == {"opset": 18, "simplify": False}
    rc, err, _ = cli(capsys, "export", "soundnet", "--out", tmp_path, "-x", "opset=18", "-o", "opset=17")
    assert rc == 2 and err[0] == DEPRECATED and "onnx export option opset is given twice" in err[1]


@pytest.mark.parametrize("flag", ["-x", "-o"])
def test_a_bad_export_option_is_one_error_line_after_the_notice(flag: str, captured_request: list[Any],
                                                                tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, err, out = cli(capsys, "export", "soundnet", "--out", tmp_path / "out", flag, "opset=abc")
    assert rc == 2 and out == "" and not captured_request
    assert err[-1] == "mmedge: error: onnx export option opset='abc': expected an integer from 7 to 23"
    assert err[:-1] == ([DEPRECATED] if flag == "-o" else [])
    assert not (tmp_path / "out").exists()


def test_export_help_shows_the_new_spelling_only(capsys: pytest.CaptureFixture) -> None:
    rc, _, out = cli(capsys, "export", "--help")
    assert rc == 0
    assert "-x, --export-option KEY=VALUE" in out
    assert "--option" not in out.replace("--export-option", "").replace("--backend-option", "")
    assert "-o," not in out


# ------------------------------------------------------------------ precision spellings of -O
def test_openvino_precision_takes_both_spellings() -> None:
    from mmedge.runtime.backends import BACKENDS

    schema = BACKENDS.get("openvino").schema
    for given, value in [("fp32", "f32"), ("f32", "f32"), ("FP32", "f32"), ("fp16", "f16"), ("f16", "f16"),
                         ("bf16", "bf16"), ("BF16", "bf16")]:
        assert schema.parse([f"precision={given}"]) == {"precision": value}
        assert schema.validate({"precision": given}) == {"precision": value}  # load(..., precision="fp32")
    with pytest.raises(InputError, match=r"^openvino session option precision='fp8': expected one of "
                                         r"fp32, f32, bf16, fp16, f16$"):
        schema.parse(["precision=fp8"])


def test_help_lists_the_fp32_spelling_first(capsys: pytest.CaptureFixture) -> None:
    from mmedge.runtime.backends import backends_help

    assert "precision=fp32 | f32 | bf16 | fp16 | f16" in backends_help()
    rc, _, out = cli(capsys, "parity", "--help")
    assert rc == 0 and "precision=fp32 | f32 | bf16 | fp16 | f16" in " ".join(out.split())


def test_an_alias_must_name_a_choice() -> None:
    with pytest.raises(ValueError, match="aliases of \\['f64'\\]"):
        Option("precision", str, "f32", "", choices=("f32",), aliases=(("fp64", "f64"),))
    opt = Option("p", str, "b", "", choices=("a", "b"), aliases=(("bee", "b"), ("B2", "b")))
    schema = OptionSchema("test", (opt,))
    assert opt.spellings() == ("a", "bee", "B2", "b") and opt.value_help() == "a|bee|B2|b"
    assert schema.parse(["p=b2"]) == {"p": "b"} and schema.parse(["p=A"]) == {"p": "a"}
    assert Option("q", str, "x", "", choices=("x", "y")).spellings() == ("x", "y")  # no aliases: as before


# ------------------------------------------------------------------ mmedge without a command
def test_no_command_prints_the_help(capsys: pytest.CaptureFixture) -> None:
    rc, err, out = cli(capsys)
    assert rc == 0 and err == [] and "Usage:" in out and "Commands:" in out


def test_no_args_is_matched_by_class_not_by_name() -> None:
    from mmedge.cli.main import _no_args_errors, app

    if not _no_args_errors():
        pytest.skip("click < 8.2 prints the help itself and has no NoArgsIsHelpError")
    with pytest.raises(Exception) as raised:
        app(args=[], standalone_mode=False)
    assert isinstance(raised.value, _no_args_errors())

    class NoArgsIsHelpError(typer.BadParameter):  # the same name, another class
        pass

    assert not isinstance(NoArgsIsHelpError("x"), _no_args_errors())


# ------------------------------------------------------------------ the logic that left the CLI
def test_int_list_messages() -> None:
    from mmedge.runtime.arguments import int_list

    assert int_list("--batch", "1, 4,8") == (1, 4, 8)
    assert int_list("--pin", "0,2", minimum=0) == (0, 2)
    assert int_list("--beam", "3,3", distinct=False) == (3, 3)
    for value, message in [("1,x", "--batch expects comma-separated integers, got '1,x'"),
                           ("", "--batch values must be >= 1, got ''"),
                           ("0,2", "--batch values must be >= 1, got '0,2'"),
                           ("2,2", "--batch lists a value twice: '2,2'")]:
        with pytest.raises(MmedgeError) as e:
            int_list("--batch", value)
        assert str(e.value) == message


def test_executor_options_without_ray() -> None:
    from mmedge.scale.executor_options import executor_options

    assert executor_options(None, None, False) == {"executor": "local"}
    for workers, ship in [(2, False), (None, True)]:
        with pytest.raises(MmedgeError, match="^--workers and --ship-artifact need --ray$"):
            executor_options(None, workers, ship)


def test_eval_checks_come_before_any_work(tmp_path: Path) -> None:
    from mmedge.scale.eval_job import EvalArgs, evaluate_sharded_beams, evaluator_for

    with pytest.raises(MmedgeError, match="^unknown split 'foo'; expected one of train, val, test, oos$"):
        evaluator_for(EvalArgs("captioner", split="foo"))
    with pytest.raises(MmedgeError, match="pass --artifact DIR"):
        evaluate_sharded_beams(EvalArgs("captioner"), None, False, {"executor": "local"}, False, print)
    with pytest.raises(MmedgeError, match=r"^--out holds one evaluation: pass one --beam \(got '1,3'\)$"):
        evaluate_sharded_beams(EvalArgs("captioner", tmp_path, beam="1,3"), tmp_path / "o.jsonl", False,
                               {"executor": "local"}, False, print)
    assert EvalArgs("captioner", beam="3,3").beams == (3, 3)  # eval scores a width twice if asked


def test_ray_argv() -> None:
    from mmedge.cli import ray_argv

    assert ray_argv(["caption", "a.png", "--ray"]) == ["caption", "a.png", "--ray=local"]
    assert ray_argv(["--ray", "host:6379", "x"]) == ["--ray=host:6379", "x"]
    assert ray_argv(["--ray", "photos/"]) == ["--ray=local", "photos/"]
    assert ray_argv(["--", "--ray"]) == ["--", "--ray"]
    argv = ["eval", "captioner"]
    assert ray_argv(argv) == argv and ray_argv(argv) is not argv


# ------------------------------------------------------------------ the package's shape
def test_cli_modules_are_small() -> None:
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in CLI.glob("*.py")}
    assert {"common.py", "main.py", "export_cmds.py", "run_cmds.py", "check_cmds.py"} <= set(sizes)
    assert not (ROOT / "cli.py").exists()  # a module next to the package would shadow nothing, confuse all
    assert max(sizes.values()) <= 350, sizes


LIGHT = ("typer", "mmedge.cli", "mmedge.errors", "mmedge.atomic", "mmedge.runtime.backends")
STDLIB = {"__future__", "functools", "json", "signal", "sys", "threading", "pathlib", "typing"}


def test_cli_modules_import_only_what_help_needs() -> None:
    """Heavy or optional packages are imported inside the commands: --help is instant, torch-free."""
    for path in CLI.glob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name in STDLIB or name.startswith(LIGHT), f"{path.name}: top-level import of {name}"


def test_help_imports_no_numpy_torch_or_scale() -> None:
    code = ("import sys, mmedge.cli\n"
            "rc = mmedge.cli.run(['--help'])\n"
            "rc |= mmedge.cli.run(['export', '--help'])\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'torch') "
            "or m.startswith(('mmedge.scale', 'mmedge.calibration', 'mmedge.export', 'mmedge.models')))\n"
            "print(rc, heavy, file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "0 []"

"""One conformance suite for every registered backend (the shape of onnx's backend test runner).

Each check below is generated for every backend in `mmedge.runtime.backends.BACKENDS`, so a
new backend joins by registering itself: it runs the goldens' fp32 artifacts of its format
(`golden_artifact`, tests/conftest.py: exported once per session) and must give

- parity: every graph's outputs within DESIGN.md's fp32 bound of the PyTorch goldens, and
  `mmedge parity`'s check on the artifact's own test vectors;
- decoding: beam-search tokens (and scores, and which beams finished) identical to the PyTorch
  reference decoder on the tiny captioner;
- the error contract: a wrong input name, dtype, rank or fixed dimension is one line of
  InputError naming the graph file; a corrupt, tampered or missing graph file is an
  ArtifactError naming it; a backend whose package is missing is a MissingDependencyError
  naming the extra to install.

What a backend cannot do on this machine is skipped with the reason (CANNOT_RUN, CANNOT_EXPORT:
Core ML predicts only on macOS, TensorRT needs a CUDA GPU), and what it does not do yet is an
expected failure with the reason (EXPECTED_FAILURES), never left out silently. Backend-specific
behaviour (options, bf16, int8 recipes, package inspection, engine records) stays in
tests/test_<backend>.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from mmedge.errors import ArtifactError, InputError, MissingDependencyError
from mmedge.runtime import Captioner, load
from mmedge.runtime.backends import BACKENDS, available, backend_names
from mmedge.runtime.parity import TOLERANCE, check, compare
from mmedge.runtime.session import open_session

GOLDEN = Path(__file__).resolve().parent / "golden"
# every model with a golden (make_golden.py writes one per registered model; test_golden.py checks them)
MODELS = tuple(sorted(p.name[: -len("-tiny.npz")] for p in GOLDEN.glob("*-tiny.npz")))
BEAMS = (1, 3, 5)

# .ci/run replays the goldens with ONNX Runtime's graph rewrites off as well (other kernels,
# other rounding): a golden that only passes with one kernel choice is a wrong test.
ORT_OPTIMIZATION = os.environ.get("MMEDGE_TEST_ORT_OPTIMIZATION", "all")

# Session options of the conformance runs (absent: the backend's defaults).
SESSION_OPTIONS: dict[str, dict[str, Any]] = {
    "onnxruntime": {"optimization": ORT_OPTIMIZATION},
    "openvino": {"threads": 1},  # the test machines are shared
    "coreml": {"compute_units": "CPU_ONLY"},  # fp32 on the CPU: the Neural Engine computes in fp16
}


@dataclass(frozen=True)
class Unable:
    """Why a backend cannot do something on this machine: the test is skipped with `reason`."""

    reason: str
    here: Callable[[], bool]  # true where it applies (evaluated when a test runs, not at import)


def _no_cuda() -> bool:
    """No TensorRT + cuda-python + CUDA GPU here (imported late: numpy only until it looks)."""
    from mmedge.runtime.backends.tensorrt import cuda_available

    return not cuda_available()


NO_GPU = "TensorRT needs a CUDA GPU (an NVIDIA GPU with its driver, tensorrt and cuda-python)"
# backend -> what stops its sessions from running here (beyond a missing package)
CANNOT_RUN: dict[str, Unable] = {
    "coreml": Unable("Core ML predictions need macOS", lambda: sys.platform != "darwin"),
    "tensorrt": Unable(NO_GPU, _no_cuda),
}
# backend -> what stops its artifacts from being built here (Core ML converts on every OS)
CANNOT_EXPORT: dict[str, Unable] = {
    "tensorrt": Unable(f"{NO_GPU}: engines are built where they run", _no_cuda),
}


@dataclass(frozen=True)
class Known:
    """A check a backend is known to fail: xfail with `reason`. strict: an unexpected pass fails the
    run (the entry is stale); False where the failure could not be reproduced on the test machines."""

    reason: str
    strict: bool = True


# check (the test function's name without `test_`) -> backend -> why it fails today (none at present:
# the Session base class checks that axes named alike agree, and Core ML errors name the package)
EXPECTED_FAILURES: dict[str, dict[str, Known]] = {}

# The backend's own words for an unreadable graph file (a backend missing here: the generic contract only).
CORRUPT_MESSAGE = {
    "onnxruntime": r"ONNX Runtime cannot load it \(",
    "openvino": r"OpenVINO cannot read it \(",
    "coreml": r"not a Core ML package index",
    "tensorrt": r"TensorRT \S+ cannot deserialize this engine",
}


def backends(check: str) -> list[Any]:
    """Every registered backend as a parameter, marked xfail where EXPECTED_FAILURES lists it."""
    known = EXPECTED_FAILURES.get(check, {})
    return [pytest.param(name, id=name, marks=[pytest.mark.xfail(reason=known[name].reason,
                                                                 strict=known[name].strict)]
                         if name in known else []) for name in backend_names()]


# ------------------------------------------------------------------ what runs here, and on what
def _skip_unless_it_runs_here(backend: str) -> None:
    """Skip, with the reason, where `backend`'s sessions cannot run."""
    info = BACKENDS.get(backend)
    if backend in CANNOT_RUN and CANNOT_RUN[backend].here():
        pytest.skip(CANNOT_RUN[backend].reason)
    if not available(backend):
        pytest.skip(f"{info.package} is not installed or cannot run on {sys.platform} "
                    f"(pip install 'mmedge[{info.extra}]')")


def artifact(backend: str, model: str, golden_artifact: Callable[[str, str], Path]) -> Path:
    """The golden fp32 artifact of `model` in `backend`'s format (skips where it cannot be built)."""
    if backend in CANNOT_EXPORT and CANNOT_EXPORT[backend].here():
        pytest.skip(CANNOT_EXPORT[backend].reason)
    return golden_artifact(BACKENDS.get(backend).formats[0], model)


def pipeline(backend: str, model: str, golden_artifact: Callable[[str, str], Path]) -> Any:
    """The loaded pipeline of `model` on `backend` (skips where the backend cannot run)."""
    _skip_unless_it_runs_here(backend)
    pipe = load(artifact(backend, model, golden_artifact), backend, **SESSION_OPTIONS.get(backend, {}))
    assert pipe.backend == backend
    return pipe


def golden(model: str) -> Any:
    return np.load(GOLDEN / f"{model}-tiny.npz")


def copy_artifact(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rehash(art: Path) -> None:
    """Make the manifest agree with the files again: what is wrong is then the file itself."""
    from mmedge.export.artifact import finish
    from mmedge.runtime.manifest import read_manifest

    finish(art, read_manifest(art, verify=False))


def graph_name(file: str) -> str:
    """The name a message should use for a manifest's graph file: `encoder.onnx`, `encoder.mlpackage`."""
    return Path(file).parts[0]


# ------------------------------------------------------------------ the suite itself
def test_tables_name_registered_backends_and_checks() -> None:
    """Meta-test: a renamed backend or check cannot leave a stale skip or expected failure behind."""
    names = set(backend_names())
    for table in (SESSION_OPTIONS, CANNOT_RUN, CANNOT_EXPORT, CORRUPT_MESSAGE):
        assert set(table) <= names, set(table) - names
    checks = {n[len("test_"):] for n, f in globals().items() if n.startswith("test_") and callable(f)}
    for check_name, known in EXPECTED_FAILURES.items():
        assert check_name in checks, check_name
        assert set(known) <= names and all(k.reason for k in known.values()), check_name


# ------------------------------------------------------------------ parity
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("backend", backends("every_graph_matches_goldens"))
def test_every_graph_matches_goldens(backend: str, model: str, golden_artifact: Callable) -> None:
    gold = golden(model)
    pipe = pipeline(backend, model, golden_artifact)
    for g in pipe.manifest.graphs:
        outs = pipe.sessions[g.name].run({t.name: gold[f"{g.name}.{t.name}"] for t in g.inputs})
        for t in g.outputs:
            m = compare(t.name, outs[t.name], gold[f"{g.name}.{t.name}"], TOLERANCE["fp32"])
            assert m.ok, (g.name, m)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("backend", backends("parity_command_passes"))
def test_parity_command_passes(backend: str, model: str, golden_artifact: Callable) -> None:
    """What `mmedge parity` runs: the artifact's own test vectors (and beam search for captioners)."""
    report = check(pipeline(backend, model, golden_artifact))
    assert report.ok and report.outputs and report.backend == backend, report.to_json()
    assert max(m.max_rel for m in report.outputs) < TOLERANCE["fp32"]


# ------------------------------------------------------------------ decoding
@pytest.mark.parametrize("k", BEAMS)
@pytest.mark.parametrize("backend", backends("beam_search_equals_reference_on_goldens"))
def test_beam_search_equals_reference_on_goldens(backend: str, k: int, golden_artifact: Callable) -> None:
    import make_golden

    gold = golden("captioner")
    cap = pipeline(backend, "captioner", golden_artifact)
    assert isinstance(cap, Captioner)
    images = gold["beam.image"]
    results = cap.caption_features(cap.encode(images), ["x"] * len(images), beam=k, max_len=make_golden.MAX_LEN)
    for i, r in enumerate(results):
        assert r.tokens == [t for t in gold[f"beam{k}.tokens"][i] if t >= 0], i
        assert r.finished == bool(gold[f"beam{k}.finished"][i]), i
        assert r.score == pytest.approx(gold[f"beam{k}.scores"][i], abs=1e-4), i


@pytest.mark.parametrize("backend", backends("length_normalised_beam_search_equals_reference"))
def test_length_normalised_beam_search_equals_reference(backend: str, golden_artifact: Callable) -> None:
    """The PyTorch reference decoder run here (not a stored golden), ranking by length-normalised score."""
    import make_golden
    import torch

    from mmedge.models.decoding import caption_images

    gold = golden("captioner")
    cap = pipeline(backend, "captioner", golden_artifact)
    ref = caption_images(make_golden.reference_model("captioner"), torch.from_numpy(gold["beam.image"]), beam=5,
                         max_len=make_golden.MAX_LEN, length_norm=True)
    got = cap.caption_features(cap.encode(gold["beam.image"]), ["x"] * len(ref), 5, make_golden.MAX_LEN,
                               length_norm=True)
    assert [r.tokens for r in got] == [h.tokens for h in ref]


@pytest.mark.parametrize("backend", backends("runtime_works_without_torch"))
def test_runtime_works_without_torch(backend: str, golden_artifact: Callable, tmp_path: Path) -> None:
    """A captioner artifact captions an image file and an array in a process where torch cannot be imported."""
    from PIL import Image

    _skip_unless_it_runs_here(backend)
    art = artifact(backend, "captioner", golden_artifact)
    img = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)).save(img)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from mmedge.runtime import load\n"
        f"r = load({str(art)!r}, {backend!r}, **{SESSION_OPTIONS.get(backend, {})!r})"
        f".caption([{str(img)!r}, np.full((40, 50, 3), 128, np.uint8)], beam=3, max_len=5)\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(' '.join(f'{len(x.tokens)} {x.score}' for x in r))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    n1, score1, n2, score2 = res.stdout.split()
    assert 0 <= int(n1) <= 5 and float(score1) < 0 and 0 <= int(n2) <= 5 and float(score2) < 0


# ------------------------------------------------------------------ the error contract: inputs
def _image(shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    return np.zeros(shape, dtype)


# graph, feeds, what the one-line message must say (the tiny captioner: image [batch, 3, 64, 64] float32)
BAD_INPUTS: dict[str, tuple[str, Callable[[], dict[str, Any]], str]] = {
    "unknown name": ("encoder", lambda: {"img": _image((1, 3, 64, 64))}, r"unknown input 'img'; inputs are image"),
    "dtype": ("encoder", lambda: {"image": _image((1, 3, 64, 64), np.float64)},
              r"input 'image' has dtype float64, expected float32"),
    "int dtype": ("decoder_step", lambda: {"prev_word": np.zeros(2, np.int32)},
                  r"input 'prev_word' has dtype int32, expected int64"),
    "rank": ("encoder", lambda: {"image": _image((3, 64, 64))},
             r"input 'image' has shape \[3, 64, 64\], expected \['batch', 3, 64, 64\]$"),
    "fixed dim": ("encoder", lambda: {"image": _image((1, 3, 32, 32))},
                  r"expected \['batch', 3, 64, 64\] \(axis 2 is fixed at 64\)"),
    "not an array": ("encoder", lambda: {"image": [[0.0]]}, r"input 'image' must be a numpy array, got list"),
    "missing": ("decoder_step", lambda: {"prev_word": np.zeros(2, np.int64)}, r"missing input\(s\) features, att1"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("backend", backends("bad_input_is_one_line_input_error"))
def test_bad_input_is_one_line_input_error(backend: str, case: str, golden_artifact: Callable) -> None:
    graph, feeds, message = BAD_INPUTS[case]
    pipe = pipeline(backend, "captioner", golden_artifact)
    file = graph_name(pipe.manifest.graph(graph).file)
    with pytest.raises(InputError, match=message) as e:
        pipe.sessions[graph].run(feeds())
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{file}: "), str(e.value)


@pytest.mark.parametrize("backend", backends("bad_bound_input_is_one_line_input_error"))
def test_bad_bound_input_is_one_line_input_error(backend: str, golden_artifact: Callable) -> None:
    """bind() checks as run() does, and a refused binding leaves nothing bound."""
    pipe = pipeline(backend, "captioner", golden_artifact)
    step = pipe.sessions["decoder_step"]
    file = graph_name(pipe.manifest.graph("decoder_step").file)
    with pytest.raises(InputError, match=rf"^{re.escape(file)}: input 'features' has dtype float64, expected float32$"):
        step.bind("features", np.zeros((2, 196, 64)))
    with pytest.raises(InputError, match=r"missing input\(s\) features, att1"):
        step.run({"prev_word": np.zeros(2, np.int64), "h": np.zeros((2, 24), np.float32),
                  "c": np.zeros((2, 24), np.float32)})


# Run in a child process: OpenVINO computes on such rows, and the process crashed (SIGSEGV) in a later
# OpenVINO test of the same session (tests/test_openvino.py, beam search) whenever this ran first.
ROWS_THAT_DISAGREE = """
import json, sys
import numpy as np
from mmedge.errors import InputError
from mmedge.runtime import load
art, backend, options, golden = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), np.load(sys.argv[4])
feeds = {k: golden[f"decoder_step.{k}"] for k in ("features", "att1", "prev_word", "h", "c")}
feeds["h"] = np.concatenate([feeds["h"], feeds["h"][:1]])  # 3 rows, the others 2
step = load(art, backend, **options).sessions["decoder_step"]
try:
    out = step.run(feeds)
    print(json.dumps({"raised": None, "output_rows": {k: v.shape[0] for k, v in out.items()}}))
except Exception as e:
    print(json.dumps({"raised": type(e).__name__, "input_error": isinstance(e, InputError), "message": str(e)}))
"""


@pytest.mark.parametrize("backend", backends("rows_that_disagree_are_one_line_input_error"))
def test_rows_that_disagree_are_one_line_input_error(backend: str, golden_artifact: Callable) -> None:
    """Each input alone is valid, together they are not: one clear error, not the backend's own or none."""
    import json

    _skip_unless_it_runs_here(backend)
    art = artifact(backend, "captioner", golden_artifact)
    file = graph_name(load(art, backend, **SESSION_OPTIONS.get(backend, {})).manifest.graph("decoder_step").file)
    res = subprocess.run([sys.executable, "-c", ROWS_THAT_DISAGREE, str(art), backend,
                          json.dumps(SESSION_OPTIONS.get(backend, {})), str(GOLDEN / "captioner-tiny.npz")],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got.get("input_error"), got
    assert "\n" not in got["message"] and got["message"].startswith(f"{file}: "), got["message"]


# ------------------------------------------------------------------ the error contract: files, packages
@pytest.mark.parametrize("backend", backends("corrupt_graph_file_is_one_line_artifact_error"))
def test_corrupt_graph_file_is_one_line_artifact_error(backend: str, golden_artifact: Callable,
                                                       tmp_path: Path) -> None:
    """The manifest agrees with the file (re-hashed): the file itself is not a model the backend reads."""
    from mmedge.runtime.manifest import read_manifest

    info = BACKENDS.get(backend)
    if importlib.util.find_spec(info.package) is None:
        pytest.skip(f"{info.package} is not installed (pip install 'mmedge[{info.extra}]')")
    art = copy_artifact(artifact(backend, "captioner", golden_artifact), tmp_path / "a")
    g = read_manifest(art).graph("encoder")
    (art / g.file).write_bytes(b"not a model file\n\x00\x01")
    rehash(art)
    says = rf"{re.escape(graph_name(g.file))}\S*: {CORRUPT_MESSAGE.get(backend, '')}"  # encoder.onnx: ONNX ...
    with pytest.raises(ArtifactError, match=says) as e:
        load(art, backend, **SESSION_OPTIONS.get(backend, {}))
    assert "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("backend", backends("tampered_graph_file_is_refused"))
def test_tampered_graph_file_is_refused(backend: str, golden_artifact: Callable, tmp_path: Path) -> None:
    """A file that differs from the manifest's sha256 is refused before any backend reads it."""
    from mmedge.runtime.manifest import read_manifest

    art = copy_artifact(artifact(backend, "captioner", golden_artifact), tmp_path / "a")
    g = read_manifest(art).graph("decoder_step")
    data = (art / g.file).read_bytes()
    (art / g.file).write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=rf"{re.escape(g.file)}: sha256 does not match"):
        load(art, backend)


@pytest.mark.parametrize("backend", backends("missing_graph_file_is_named"))
def test_missing_graph_file_is_named(backend: str, golden_artifact: Callable, tmp_path: Path) -> None:
    from mmedge.runtime.manifest import read_manifest

    art = copy_artifact(artifact(backend, "captioner", golden_artifact), tmp_path / "a")
    g = read_manifest(art).graph("encoder")
    (art / g.file).unlink()
    with pytest.raises(ArtifactError, match=rf"{re.escape(g.file)}: missing"):
        load(art, backend)


@pytest.mark.parametrize("backend", backends("missing_package_names_the_extra"))
def test_missing_package_names_the_extra(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs everywhere: the backend's package is made unimportable (sys.modules blocks it)."""
    info = BACKENDS.get(backend)
    monkeypatch.setitem(sys.modules, info.package, None)
    with pytest.raises(MissingDependencyError, match=rf"^{info.package} is not installed .*"
                                                      rf"pip install 'mmedge\[{info.extra}\]'$") as e:
        open_session(backend, tmp_path / "graph", [], [])
    assert e.value.package == info.package and e.value.extra == info.extra and "\n" not in str(e.value)

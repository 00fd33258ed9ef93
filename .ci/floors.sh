#!/usr/bin/env bash
# Lowest-versions job: install every lower bound pyproject.toml declares for the CLI and the
# torch-free runtime (the core dependencies and the [onnxruntime] extra), exactly (==), in a
# fresh venv, then run the CLI and the tests that need no torch. The pins are read from
# pyproject.toml itself, so the declaration and this job cannot drift apart. A requirement's
# environment marker (python_version<'3.9', ...) is evaluated for the venv's Python: only the floors
# that apply to it are installed.
#   .ci/floors.sh            (FLOORS_VENV=/some/dir to choose the venv; default: a temp dir)
#   PYTHON=/path/to/python3.8 .ci/floors.sh   the venv's Python (default python3); HOST_PYTHON (default
#       python3) reads pyproject and exports the artifacts (torch), FLOORS_ARTIFACTS=DIR reuses exported
#       ones instead (.ci/pythons.sh runs this for Python 3.8, 3.10 and 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
start=$SECONDS
PY=${PYTHON:-python3}
HOST=${HOST_PYTHON:-python3}
VENV=${FLOORS_VENV:-$(mktemp -d /tmp/mmedge-floors.XXXXXX)}
[ -n "${FLOORS_VENV:-}" ] || trap 'rm -rf "$VENV"' EXIT

# "name>=X" -> "name==X" for the core dependencies, the [onnxruntime] extra, and the test tools.
# the venv Python's marker environment (python_version, ...), as JSON
target_env=$("$PY" -c "import json, os, platform, sys; v = sys.version_info; print(json.dumps({
    'python_version': '%d.%d' % v[:2], 'python_full_version': platform.python_version(),
    'implementation_name': sys.implementation.name, 'platform_machine': platform.machine(),
    'platform_python_implementation': platform.python_implementation(), 'platform_system': platform.system(),
    'sys_platform': sys.platform, 'os_name': os.name}))")
pins=$(TARGET_ENV=$target_env "$HOST" - <<'EOF'
import json, os, re, tomllib
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
env = json.loads(os.environ["TARGET_ENV"])
extras = project["optional-dependencies"]
test_tools = [r for r in extras["dev"] if re.split(r"[<>=!~ \[;]", r)[0] in ("pytest", "hypothesis", "pytest-timeout")]
pins = {}
for text in project["dependencies"] + extras["onnxruntime"] + test_tools:
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate(env):
        continue  # for another Python
    lows = [s.version for s in req.specifier if s.operator == ">="]
    if len(lows) != 1:
        raise SystemExit(f"floors: no lower bound to test in {text!r} (declare one as name>=X)")
    name = req.name.lower()
    if name in pins:
        raise SystemExit(f"floors: two requirements of {name} apply to Python {env['python_version']}")
    pins[name] = lows[0]
print(" ".join(f"{n}=={v}" for n, v in sorted(pins.items())))
EOF
)
echo "floors: Python $("$PY" -c 'import platform; print(platform.python_version())'): $pins"

step() { echo "floors: [$((SECONDS - start)) s] $*"; }
step "venv $VENV"
"$PY" -m venv "$VENV"
# shellcheck disable=SC2086  # $pins is a word list on purpose
"$VENV/bin/pip" install -q $pins
# mmedge itself as the py3-none-any wheel a device installs (the Jetson bundle ships one): building
# it needs setuptools>=77 (PEP 639 license), which Python 3.8 cannot run, so the host builds it
step "the mmedge wheel, built by $HOST, installed --no-deps"
wheeldir=$(mktemp -d /tmp/mmedge-floors-wheel.XXXXXX)
"$HOST" -m pip wheel -q --no-deps --no-build-isolation -w "$wheeldir" . >/dev/null
"$VENV/bin/pip" install -q --no-deps "$wheeldir"/mmedge-*.whl
rm -rf "$wheeldir"
"$VENV/bin/pip" check
echo "floors: installed $("$VENV/bin/pip" list --format=freeze 2>/dev/null |
  grep -iE '^(numpy|typer|click|rich|pillow|onnxruntime|scipy|pytest|hypothesis)==' | tr '\n' ' ')"

# The CLI itself: help, and the usage errors that must be one line and exit 2 on every typer.
step "the CLI"
cli() { (cd /tmp && "$VENV/bin/mmedge" "$@"); }
cli --help >/dev/null
cli models >/dev/null
for args in "nosuchcmd" "caption x.png -a y --beam 0"; do
  # shellcheck disable=SC2086
  if out=$(cli $args 2>&1); then echo "floors: 'mmedge $args' exited 0" >&2; exit 1; else rc=$?; fi
  if [ "$rc" != 2 ] || [ "$(printf '%s\n' "$out" | wc -l)" != 1 ] || [[ "$out" != "mmedge: error: "* ]]; then
    printf "floors: 'mmedge %s' should print one 'mmedge: error: ...' line and exit 2; got %s:\n%s\n" "$args" "$rc" "$out" >&2
    exit 1
  fi
done

# The runtime on real graphs: artifacts exported by the main install (torch, when it has it),
# checked and run by the floors' onnxruntime/numpy/pillow.
if [ -n "${FLOORS_ARTIFACTS:-}" ] || "$HOST" -c "import torch, onnx" 2>/dev/null; then
  step "parity of exported artifacts under the floors"
  if [ -n "${FLOORS_ARTIFACTS:-}" ]; then
    arts=$FLOORS_ARTIFACTS
  else
    arts=$(mktemp -d /tmp/mmedge-floors-arts.XXXXXX)
    trap 'rm -rf "$arts"; [ -n "${FLOORS_VENV:-}" ] || rm -rf "$VENV"' EXIT
    pids=()
    for m in $("$HOST" -m mmedge models --json | "$HOST" -c "import json,sys; print(*(m['name'] for m in json.load(sys.stdin)['models']))"); do
      "$HOST" -m mmedge export "$m" --config tiny --format onnx --out "$arts" >/dev/null & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
  fi
  for a in "$arts"/*/; do cli parity --artifact "$a" >/dev/null; done
  cli caption "$PWD/data/examples/scenes/scene0.png" --artifact "$arts"/captioner-tiny-onnx-fp32 >/dev/null
else
  step "no torch in $HOST: the parity step of exported artifacts is skipped"
fi

# The torch-free test modules (listed: a new module joins when it runs without torch); a test in
# them that needs torch/onnx/openvino/... is reported as skipped (.ci/torch_free.py).
step "the torch-free tests"
tests=(tests/test_cli.py tests/test_torch_free_cli.py tests/test_audio_frontend.py tests/test_fuzz.py
       tests/test_profiler.py tests/test_scale_out.py tests/test_interrupted.py tests/test_tensorrt_session.py)
PYTHONPATH=.ci "$VENV/bin/python" -m pytest -q -p torch_free -p no:cacheprovider -m "not slow" --timeout=300 "${tests[@]}"
echo "floors: done in $((SECONDS - start)) s"

#!/usr/bin/env bash
# Multi-Python job: the torch-free runtime (what a board runs) on Python 3.8 (JetPack 5), 3.10
# (JetPack 6) and 3.12 (JetPack 7). For each, .ci/floors.sh builds a fresh venv from that Python
# holding exactly the floors pyproject.toml declares for it (numpy 1.21.6 < 1.24 on 3.8, 1.24.2 on
# 3.10, 1.26.0 on 3.12; onnxruntime 1.18.0), installs mmedge --no-deps, checks the CLI, runs
# `mmedge parity` on tiny ONNX artifacts exported once by the main Python, and runs the torch-free
# tests. Wheels come from pip's cache after the first run.
#   .ci/pythons.sh               Python 3.8, 3.10 and 3.12 (from pyenv, else python3.X on PATH)
#   .ci/pythons.sh 3.8           only these
#   PYTHONS_REQUIRED=1           a Python that is not installed fails the job (CI) instead of skipping
#   PYTHONS_MODELS="captioner soundnet"   the models exported for the parity step
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
start=$SECONDS
HOST=${HOST_PYTHON:-python3}
[ $# -gt 0 ] || set -- 3.8 3.10 3.12
step() { echo "pythons: [$((SECONDS - start)) s] $*"; }

find_python() {  # newest pyenv 3.X.*, else python3.X on PATH
  local root py
  root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  py=$(ls -d "$root"/versions/"$1".*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$py" ] || py=$(command -v "python$1" || true)
  [ -z "$py" ] || "$py" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$1'.split('.'))))" || py=
  echo "$py"
}

arts=$(mktemp -d /tmp/mmedge-pythons-arts.XXXXXX)
trap 'rm -rf "$arts"' EXIT
if "$HOST" -c "import torch, onnx" 2>/dev/null; then
  step "tiny ONNX artifacts exported by $HOST (torch), for parity under each Python"
  pids=()
  for m in ${PYTHONS_MODELS:-captioner soundnet}; do  # the image and the audio runtime; floors.sh exports all
    "$HOST" -m mmedge export "$m" --config tiny --format onnx --out "$arts" >/dev/null & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  export FLOORS_ARTIFACTS=$arts
else
  step "no torch in $HOST: the parity step of exported artifacts is skipped"
fi

ran=() skipped=()
for v in "$@"; do
  py=$(find_python "$v")
  if [ -z "$py" ]; then
    if [ -n "${PYTHONS_REQUIRED:-}" ]; then
      echo "pythons: Python $v is not installed (pyenv install $v, or python$v on PATH)" >&2
      exit 1
    fi
    echo "pythons: SKIPPED Python $v: not installed (pyenv install $v, or python$v on PATH)" >&2
    skipped+=("$v")
    continue
  fi
  step "Python $v: $py"
  PYTHON=$py HOST_PYTHON=$HOST bash .ci/floors.sh
  ran+=("$v")
done
step "done: ran on Python ${ran[*]:-none}${skipped[*]:+; skipped ${skipped[*]}}"

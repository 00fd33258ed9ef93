#!/usr/bin/env bash
# Install the torch-free mmedge runtime from this bundle's own files, offline; written by
# `mmedge package jetson`. Picks requirements-jetpack<N>.txt by the board's L4T release
# (/etc/nv_tegra_release: R35 -> JetPack 5, R36 -> 6, R38 -> 7) and runs
#   $PYTHON -m pip install --no-index --find-links wheels/ -r requirements-jetpack<N>.txt
#
#   python3 -m venv --system-site-packages ~/mmedge-env      # keeps JetPack's TensorRT visible
#   PYTHON=~/mmedge-env/bin/python ./install.sh
#
# Environment:
#   JETPACK=5|6|7      skip the detection
#   PYTHON=python3     the interpreter to install into (JetPack 5: 3.8, 6: 3.10, 7: 3.12)
#   CUDA=0             leave out cuda-python (no TensorRT session: ONNX artifacts only)
#   ONNXRUNTIME=1      also install onnxruntime (its wheel must be in wheels/: --with-wheels)
#   ONLINE=1           let pip fetch from the index what wheels/ lacks
#   ANY_PYTHON=1       install into another Python than the JetPack's (its TensorRT will not import)
#   NV_TEGRA_RELEASE   the release file to read (/etc/nv_tegra_release)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
JETPACK="${JETPACK:-}"
CUDA="${CUDA:-1}"
ONNXRUNTIME="${ONNXRUNTIME:-0}"
ONLINE="${ONLINE:-0}"
ANY_PYTHON="${ANY_PYTHON:-0}"
NV_TEGRA_RELEASE="${NV_TEGRA_RELEASE:-/etc/nv_tegra_release}"

die() { echo "install.sh: error: $*" >&2; exit 1; }
note() { echo "install.sh: $*" >&2; }

if [[ -z "$JETPACK" ]]; then
  [[ -r "$NV_TEGRA_RELEASE" ]] || die "no $NV_TEGRA_RELEASE (not a Jetson?); set JETPACK=5, 6 or 7"
  release="$(grep -o -m 1 'R[0-9][0-9]* (release)' "$NV_TEGRA_RELEASE" | tr -dc '0-9' || true)"
  case "$release" in
    35) JETPACK=5 ;;
    36) JETPACK=6 ;;
    38) JETPACK=7 ;;
    *) die "L4T release '${release:-?}' in $NV_TEGRA_RELEASE: this bundle installs on JetPack 5 (R35), 6 (R36) or 7 (R38); set JETPACK= to override" ;;
  esac
  note "L4T R$release: JetPack $JETPACK"
fi
case "$JETPACK" in
  5) WANT_PY=3.8 ;;
  6) WANT_PY=3.10 ;;
  7) WANT_PY=3.12 ;;
  *) die "JETPACK='$JETPACK': expected 5, 6 or 7" ;;
esac
REQ="$HERE/requirements-jetpack$JETPACK.txt"
[[ -f "$REQ" ]] || die "$REQ is missing from the bundle"

HAVE_PY="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" || die "cannot run PYTHON=$PYTHON"
if [[ "$HAVE_PY" != "$WANT_PY" ]]; then
  if [[ "$ANY_PYTHON" == 1 ]]; then
    note "Python $HAVE_PY, not JetPack $JETPACK's $WANT_PY: JetPack's TensorRT bindings will not import there"
  else
    die "$PYTHON is Python $HAVE_PY; JetPack $JETPACK's TensorRT bindings are for Python $WANT_PY (ANY_PYTHON=1 installs anyway)"
  fi
fi

REQS="$(mktemp)"
trap 'rm -f "$REQS"' EXIT
if [[ "$CUDA" == 0 ]]; then
  grep -v '^cuda-python' "$REQ" >"$REQS"
else
  cp "$REQ" "$REQS"
fi
if [[ "$ONNXRUNTIME" == 1 ]]; then echo "onnxruntime" >>"$REQS"; fi

PIP_ARGS=(--find-links "$HERE/wheels")
if [[ "$ONLINE" != 1 ]]; then PIP_ARGS=(--no-index "${PIP_ARGS[@]}"); fi
note "installing requirements-jetpack$JETPACK.txt into $PYTHON (Python $HAVE_PY)$([[ "$ONLINE" == 1 ]] || echo ', offline')"
"$PYTHON" -m pip install "${PIP_ARGS[@]}" -r "$REQS" \
  || die "pip could not install from wheels/ alone: add the missing wheels with 'mmedge package jetson --with-wheels DIR' (see README.md), or ONLINE=1"

if [[ "$CUDA" != 0 ]] && ! "$PYTHON" -c 'import tensorrt' >/dev/null 2>&1; then
  note "TensorRT's Python bindings do not import in $PYTHON: make the venv with --system-site-packages, or sudo apt-get install python3-libnvinfer"
fi
"$PYTHON" -m mmedge doctor || true
note "done: $PYTHON -m mmedge parity --artifact artifacts/<model>-<config>-onnx-fp32 (with ONNXRUNTIME=1), then ./build_engines.sh"

#!/usr/bin/env bash
# Build TensorRT engines on this board from the bundle's ONNX graphs; written by
# `mmedge package jetson` (mmedge @@MMEDGE@@). Engines do not move across GPUs or
# TensorRT versions, so they are built here, then turned into artifact folders
# under engines/ that `mmedge parity` and `mmedge profile` load.
#
#   ./build_engines.sh                               fp32, fp16 and int8 engines for the GPU
#   PRECISIONS="fp16 int8" DLA_CORE=0 ./build_engines.sh     on DLA core 0, GPU fallback on (boards with
#                                                    DLA: AGX Orin, Orin NX; Orin Nano has none)
#
# Environment:
#   TRT_VERSION=10.3     skip detection (else trtexec's banner, python3's tensorrt, then dpkg)
#   TRTEXEC=PATH         trtexec to run (else PATH, then /usr/src/tensorrt/bin/trtexec)
#   PRECISIONS           "fp32 fp16 int8"
#   DLA_CORE=N           build fp16/int8 for DLA core N (static shapes: opt; fp32 stays on the GPU);
#                        packaged default: "@@DLA_CORE@@" (DLA_CORE= builds for the GPU)
#   DLA_COUNT=N          the board's DLA cores (else counted from /dev/nvhost-nvdla* and
#                        /sys/bus/platform/devices/*nvdla*; Orin Nano: 0)
#   JETSON_MODEL=TEXT    the board's model (else /proc/device-tree/model), for TensorRT 11.4.1+ DLA
#   INT8_SOURCE          auto | qdq | calib: int8 from the Q/DQ graph, or from the fp32 graph plus the
#                        calibration cache (TensorRT <= 10); auto = Q/DQ on the GPU, cache on DLA
#   WORKSPACE_MIB=1024   builder workspace
#   VERSION_COMPATIBLE=1 version-compatible engines (TensorRT >= 8.6)
#   BENCH=1              run trtexec's latency measurement on each engine, on the test vectors' inputs
#                        (--loadInputs, files under bench/) where they fit the engine's shapes
#   OUT=DIR              where engines go (./engines)
#   PYTHON=python3       interpreter with the mmedge runtime, to write the artifact manifests
#   DRY_RUN=1            print the trtexec commands, build nothing
#
# What each TensorRT release can do is the MATRIX below, generated from mmedge's support matrix
# (mmedge/export/trt_matrix.py, from NVIDIA's release notes and support matrix):
# TensorRT 8.5-10.x: --fp16 / --int8 builder flags (int8 from the Q/DQ graph, or --calib).
# TensorRT 11+: strongly typed only (--stronglyTyped): no --fp16/--int8/--calib; int8 from the
# Q/DQ graph, fp16 from the bundle's fp16 graphs. DLA: 8.5-10.7; not 10.8-11.4.0; 11.4.1+ on
# Jetson AGX Orin (JetPack 7.2.2+) only.
# This script was checked with shellcheck and a fake trtexec that records its arguments, not on
# a Jetson.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PRECISIONS="${PRECISIONS:-fp32 fp16 int8}"
DLA_CORE="${DLA_CORE-@@DLA_CORE@@}"
INT8_SOURCE="${INT8_SOURCE:-auto}"
WORKSPACE_MIB="${WORKSPACE_MIB:-@@WORKSPACE_MIB@@}"
VERSION_COMPATIBLE="${VERSION_COMPATIBLE:-@@VERSION_COMPATIBLE@@}"
BENCH="${BENCH:-0}"
OUT="${OUT:-$HERE/engines}"
PYTHON="${PYTHON:-python3}"
DRY_RUN="${DRY_RUN:-0}"

# TensorRT support matrix (generated), versions as MAJOR*1000000+MINOR*1000+PATCH:
# first|until (exclusive)|DLA (yes/no/board)|fp16 (flag/typed)|int8 (flags/typed)|INT64 I/O|version-compatible|build-only flag
MATRIX=(
@@MATRIX@@
)

# One line per graph (generated):
# name|fp32 artifact|int8 artifact (- if none)|graph|onnx file|min shapes|opt shapes|max shapes|DLA ok (1/0)|
# test vector shapes (- if outside the profile)|integer inputs (- if none)
# (the captioner's decoder graphs stay on the GPU: their rows change at every beam-search step
# and DLA takes static shapes only)
GRAPHS=(
@@GRAPHS@@
)

die() { echo "build_engines.sh: error: $*" >&2; exit 1; }
note() { echo "build_engines.sh: $*" >&2; }

find_trtexec() {
  if [[ -n "${TRTEXEC:-}" ]]; then
    echo "$TRTEXEC"
  elif command -v trtexec >/dev/null 2>&1; then
    command -v trtexec
  elif [[ -x /usr/src/tensorrt/bin/trtexec ]]; then
    echo /usr/src/tensorrt/bin/trtexec
  else
    return 1
  fi
}

# TensorRT's version number: 8502 -> 8.5.2, 100300 -> 10.3.0
version_from_int() {
  local n=$1
  if (( n >= 100000 )); then
    echo "$((n / 10000)).$((n / 100 % 100)).$((n % 100))"
  else
    echo "$((n / 1000)).$((n / 100 % 10)).$((n % 100))"
  fi
}

detect_version() {
  local banner n v
  banner="$("$TRTEXEC_BIN" --help 2>&1 || true)"
  n="$(grep -o 'TensorRT v[0-9]*' <<<"$banner" | head -n 1 | tr -dc '0-9' || true)"
  if [[ -n "$n" ]]; then
    version_from_int "$n"
    return 0
  fi
  v="$("$PYTHON" -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)"
  if [[ -n "$v" ]]; then
    echo "$v"
    return 0
  fi
  v="$(dpkg-query -W -f="\${Version}" libnvinfer-bin 2>/dev/null || true)"
  if [[ -n "$v" ]]; then
    echo "${v%%-*}"
    return 0
  fi
  return 1
}

TRTEXEC_BIN="$(find_trtexec)" || die "trtexec not found: install TensorRT (JetPack) or set TRTEXEC=/path/to/trtexec"
if [[ -z "${TRT_VERSION:-}" ]]; then
  TRT_VERSION="$(detect_version)" || die "cannot tell the TensorRT version; set TRT_VERSION (e.g. TRT_VERSION=10.3)"
fi
IFS=. read -r TRT_MAJOR TRT_MINOR TRT_PATCH _ <<<"$TRT_VERSION.0.0.0"
[[ "$TRT_MAJOR" =~ ^[0-9]+$ && "$TRT_MINOR" =~ ^[0-9]+$ && "$TRT_PATCH" =~ ^[0-9]+$ ]] \
  || die "TRT_VERSION='$TRT_VERSION' is not a version like 10.3"
if (( TRT_MAJOR >= 10 )); then
  TRT_INT=$(( TRT_MAJOR * 10000 + TRT_MINOR * 100 + TRT_PATCH ))
else
  TRT_INT=$(( TRT_MAJOR * 1000 + TRT_MINOR * 100 + TRT_PATCH ))
fi
TRT_KEY=$(( 10#$TRT_MAJOR * 1000000 + 10#$TRT_MINOR * 1000 + 10#$TRT_PATCH ))
TRT_ROW=""
for row in "${MATRIX[@]}"; do
  IFS='|' read -r first until _ <<<"$row"
  if (( TRT_KEY >= first && TRT_KEY < until )); then TRT_ROW=$row; fi
done
[[ -n "$TRT_ROW" ]] || die "TensorRT $TRT_VERSION is too old: mmedge needs 8.5 or later (JetPack 5.1+)"
IFS='|' read -r _ _ TRT_DLA TRT_FP16 TRT_INT8 TRT_INT64 TRT_VC TRT_BUILD_ONLY <<<"$TRT_ROW"

# the board's DLA cores: DLA_COUNT, else the nvdla device nodes, else the nvdla platform devices
dla_count() {
  local n=0 d
  for d in /dev/nvhost-nvdla[0-9]*; do
    if [[ -e "$d" ]]; then n=$((n + 1)); fi
  done
  if (( n == 0 )); then
    for d in /sys/bus/platform/devices/*nvdla[0-9]*; do
      if [[ -e "$d" ]]; then n=$((n + 1)); fi
    done
  fi
  echo "$n"
}

case "$INT8_SOURCE" in auto|qdq|calib) ;; *) die "INT8_SOURCE='$INT8_SOURCE': expected auto, qdq or calib" ;; esac
if [[ -n "$DLA_CORE" ]]; then
  [[ "$DLA_CORE" =~ ^[0-9]+$ ]] || die "DLA_CORE='$DLA_CORE' is not a core number"
  case "$TRT_DLA" in
    yes) ;;
    no) die "TensorRT $TRT_VERSION does not support DLA (NVIDIA's support matrix: DLA up to 10.7, then from 11.4.1 on Jetson AGX Orin with JetPack 7.2.2+); set DLA_CORE= to build for the GPU" ;;
    *)
      JETSON_MODEL="${JETSON_MODEL:-$(tr -d '\0' </proc/device-tree/model 2>/dev/null || true)}"
      [[ "$JETSON_MODEL" == *"$TRT_DLA"* ]] \
        || die "TensorRT $TRT_VERSION supports DLA on Jetson $TRT_DLA only (JetPack 7.2.2+), not on '${JETSON_MODEL:-an unknown board}'; set DLA_CORE= to build for the GPU (JETSON_MODEL overrides the board)"
      ;;
  esac
  DLA_COUNT="${DLA_COUNT:-$(dla_count)}"
  [[ "$DLA_COUNT" =~ ^[0-9]+$ ]] || die "DLA_COUNT='$DLA_COUNT' is not a number"
  if (( DLA_CORE >= DLA_COUNT )); then
    if (( DLA_COUNT == 0 )); then
      die "DLA_CORE=$DLA_CORE: this board has no DLA (Jetson Orin Nano has none); set DLA_CORE= to build for the GPU (DLA_COUNT overrides the count)"
    fi
    die "DLA_CORE=$DLA_CORE: this board has $DLA_COUNT DLA cores (0-$((DLA_COUNT - 1))); use one of them or set DLA_CORE= to build for the GPU"
  fi
fi
if [[ "$VERSION_COMPATIBLE" == 1 && "$TRT_VC" != 1 ]]; then
  die "VERSION_COMPATIBLE=1 needs TensorRT 8.6 or later (this is $TRT_VERSION)"
fi
if [[ "$TRT_INT8" == typed && "$INT8_SOURCE" == calib ]]; then
  die "TensorRT $TRT_VERSION has no INT8 calibration (--calib); use INT8_SOURCE=qdq"
fi
note "TensorRT $TRT_VERSION, trtexec: $TRTEXEC_BIN"
if [[ "$DRY_RUN" != 1 ]]; then mkdir -p "$OUT"; fi

run() {
  local log=$1
  shift
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "$@"
    echo
    return 0
  fi
  if ! "$@" >"$log" 2>&1; then
    tail -n 20 "$log" >&2 || true
    die "trtexec failed (full log: $log)"
  fi
}

# uses_dla PRECISION [GRAPH_DLA_OK]
uses_dla() { [[ -n "$DLA_CORE" && "$1" != fp32 && "${2:-1}" == 1 ]]; }

engine_dir() {
  local name=$1 precision=$2
  if uses_dla "$precision"; then
    echo "$OUT/$name-tensorrt-$precision-dla$DLA_CORE"
  else
    echo "$OUT/$name-tensorrt-$precision"
  fi
}

# int8_from_cache GRAPH_DLA_OK
int8_from_cache() {
  [[ "$TRT_INT8" == flags ]] || return 1
  [[ "$INT8_SOURCE" == calib ]] || { [[ "$INT8_SOURCE" == auto ]] && uses_dla int8 "$1"; }
}

# bench_inputs NAME GRAPH VECTOR_SHAPES INTEGER_INPUTS -> trtexec's --loadInputs value
bench_inputs() {
  local name=$1 graph=$2 vec=$3 ints=",$4," spec="" part input file
  local parts=()
  IFS=, read -r -a parts <<<"$vec"
  for part in "${parts[@]}"; do
    input=${part%%:*}
    file="$HERE/bench/$name/$graph.$input.bin"
    if [[ "$ints" == *",$input,"* && "$TRT_INT64" != 1 ]]; then
      file="$HERE/bench/$name/$graph.$input.i32.bin"  # TensorRT 8.x engines take INT64 inputs as INT32
    fi
    spec+="${spec:+,}$input:$file"
  done
  echo "$spec"
}

# build_graph PRECISION NAME FP32_DIR INT8_DIR GRAPH ONNX MIN OPT MAX DLA_OK VECTORS INTS -> 0 built, 2 skipped
build_graph() {
  local precision=$1 name=$2 fp32_dir=$3 int8_dir=$4 graph=$5 onnx=$6 min=$7 opt=$8 max=$9 dla_ok=${10}
  local vec=${11} ints=${12}
  local dir model cache dla=0
  local args=()
  dir="$(engine_dir "$name" "$precision")"
  if [[ "$DRY_RUN" != 1 ]]; then mkdir -p "$dir"; fi
  if uses_dla "$precision" "$dla_ok"; then dla=1; fi
  if uses_dla "$precision" && [[ "$dla" == 0 ]]; then
    note "$name/$graph stays on the GPU (DLA takes static shapes; this graph's rows change every step)"
  fi
  if [[ "$dla" == 1 ]]; then
    min=$opt
    max=$opt
  fi
  model="$HERE/$fp32_dir/$onnx"
  if [[ "$TRT_FP16" == typed ]]; then
    args+=(--stronglyTyped)
    if [[ "$precision" == fp16 ]]; then
      model="$HERE/fp16/$name/$onnx"
      if [[ ! -f "$model" ]]; then
        note "skip $name/$graph fp16: TensorRT $TRT_VERSION is strongly typed and the bundle has no fp16 graphs"
        return 2
      fi
    elif [[ "$precision" == int8 ]]; then
      [[ "$int8_dir" != - ]] || { note "skip $name/$graph int8: no int8 graphs in the bundle"; return 2; }
      model="$HERE/$int8_dir/$onnx"
    fi
  else
    if [[ "$precision" == fp16 ]]; then
      args+=(--fp16)
    elif [[ "$precision" == int8 ]]; then
      [[ "$int8_dir" != - ]] || { note "skip $name/$graph int8: no int8 graphs in the bundle"; return 2; }
      args+=(--int8 --fp16)
      if int8_from_cache "$dla_ok"; then
        # implicit quantization: the fp32 graph + the cache, its header set to this TensorRT
        cache="$dir/$graph.calib"
        if [[ "$DRY_RUN" != 1 ]]; then
          { echo "TRT-$TRT_INT-$(head -n 1 "$HERE/$int8_dir/$graph.calib" | sed 's/^TRT-[0-9]*-//')"
            tail -n +2 "$HERE/$int8_dir/$graph.calib"; } >"$cache"
        fi
        args+=(--calib="$cache")
      else
        model="$HERE/$int8_dir/$onnx"
      fi
    fi
  fi
  args+=(--minShapes="$min" --optShapes="$opt" --maxShapes="$max")
  args+=(--memPoolSize="workspace:$WORKSPACE_MIB" --timingCacheFile="$OUT/timing.cache")
  if [[ "$dla" == 1 ]]; then
    args+=(--useDLACore="$DLA_CORE" --allowGPUFallback)
  fi
  if [[ "$VERSION_COMPATIBLE" == 1 ]]; then
    args+=(--versionCompatible)
  fi
  args+=("$TRT_BUILD_ONLY")
  note "building $name/$graph ($precision$([[ "$dla" == 1 ]] && echo ", DLA core $DLA_CORE"))"
  run "$dir/$graph.log" "$TRTEXEC_BIN" --onnx="$model" --saveEngine="$dir/$graph.engine" "${args[@]}"
  if [[ "$BENCH" == 1 ]]; then
    local bench=(--loadEngine="$dir/$graph.engine")
    if [[ "$vec" != - ]] && [[ "$dla" == 0 || "$vec" == "$opt" ]]; then
      bench+=(--shapes="$vec" --loadInputs="$(bench_inputs "$name" "$graph" "$vec" "$ints")")
    elif [[ "$ints" != - ]]; then
      note "skip benchmarking $name/$graph: its test vectors do not fit the engine's shapes and random $ints would not be valid"
      return 0
    else
      note "$name/$graph: test vectors do not fit the engine's shapes; benchmarking random inputs at $opt"
      bench+=(--shapes="$opt")
    fi
    if [[ "$dla" == 1 ]]; then bench+=(--useDLACore="$DLA_CORE"); fi
    if [[ "$VERSION_COMPATIBLE" == 1 ]]; then bench+=(--versionCompatible); fi  # to load such engines
    run "$dir/$graph.bench.log" "$TRTEXEC_BIN" "${bench[@]}"
    [[ "$DRY_RUN" == 1 ]] || grep -h -E 'Latency|Throughput' "$dir/$graph.bench.log" | tail -n 2 >&2 || true
  fi
  return 0
}

# adopt PRECISION NAME SOURCE_DIR GPU_ONLY_GRAPHS: engines -> an artifact folder (manifest, build
# record, test vectors)
adopt() {
  local precision=$1 name=$2 src=$3 gpu_only=$4 dir g
  local extra=()
  dir="$(engine_dir "$name" "$precision")"
  if ! "$PYTHON" -c 'import mmedge.runtime' >/dev/null 2>&1; then
    note "engines of $name ($precision) are in $dir; install the mmedge runtime (README.md) and re-run to get an artifact for mmedge parity/profile"
    return 0
  fi
  if uses_dla "$precision"; then
    extra+=(--dla-core "$DLA_CORE")
    for g in $gpu_only; do extra+=(--gpu-only "$g"); done
  fi
  if [[ "$VERSION_COMPATIBLE" == 1 ]]; then extra+=(--version-compatible); fi
  if [[ "$precision" == int8 ]]; then
    if int8_from_cache 1; then extra+=(--int8-source calib); else extra+=(--int8-source qdq); fi
  fi
  "$PYTHON" -m mmedge.runtime.backends.tensorrt adopt --source "$HERE/$src" --engines "$dir" \
    --precision "$precision" --trt-version "$TRT_VERSION" "${extra[@]}" >/dev/null
  echo "$dir"
}

BUILT=()
for precision in $PRECISIONS; do
  case "$precision" in fp32|fp16|int8) ;; *) die "unknown precision '$precision' in PRECISIONS (fp32 fp16 int8)" ;; esac
  if [[ -n "$DLA_CORE" && "$precision" == fp32 ]]; then
    note "DLA runs fp16 and int8 only: fp32 engines are built for the GPU"
  fi
  declare -A SOURCE=() SKIPPED=() GPU_ONLY=()
  NAMES=()
  for line in "${GRAPHS[@]}"; do
    IFS='|' read -r name fp32_dir int8_dir graph onnx min opt max dla_ok vec ints <<<"$line"
    if [[ -z "${SOURCE[$name]+x}" ]]; then
      NAMES+=("$name")
      GPU_ONLY[$name]=""
      if [[ "$precision" == int8 ]]; then SOURCE[$name]=$int8_dir; else SOURCE[$name]=$fp32_dir; fi
    fi
    if [[ "$dla_ok" != 1 ]]; then GPU_ONLY[$name]+=" $graph"; fi
    status=0
    build_graph "$precision" "$name" "$fp32_dir" "$int8_dir" "$graph" "$onnx" "$min" "$opt" "$max" "$dla_ok" \
      "$vec" "$ints" || status=$?
    if [[ "$status" == 2 ]]; then SKIPPED[$name]=1; fi
  done
  for name in "${NAMES[@]}"; do
    if [[ -n "${SKIPPED[$name]+x}" || "$DRY_RUN" == 1 ]]; then continue; fi
    BUILT+=("$(adopt "$precision" "$name" "${SOURCE[$name]}" "${GPU_ONLY[$name]}")")
  done
  unset SOURCE SKIPPED GPU_ONLY
done

if [[ "$DRY_RUN" != 1 ]]; then
  note "done. Check and time them:"
  for dir in "${BUILT[@]}"; do
    if [[ -n "$dir" ]]; then note "  mmedge parity --artifact $dir && mmedge profile --artifact $dir"; fi
  done
fi

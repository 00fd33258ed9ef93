#!/usr/bin/env bash
# TensorRT device check, for a machine with an NVIDIA GPU, TensorRT and cuda-python
# (pip install -e '.[all,dev]' tensorrt 'cuda-python>=12,<13'; cuda-bindings 13 needs driver >= 580).
# A few minutes end to end:
#   1. versions: TensorRT, GPU, compute capability
#   2. the requires_cuda tests of tests/test_tensorrt.py (real engines, parity, rebuild message)
#   3. mmedge export --format tensorrt for fp32 / fp16 / int8 demo models, then mmedge parity on each
#   4. latency per graph: TensorRT engines vs the fp32 ONNX artifact on ONNX Runtime (CPU)
#   5. a Jetson bundle's build_engines.sh with this machine's trtexec (if there is one) + parity
# Usage: benchmarks/tensorrt_device_check.sh [OUT_DIR]     (default /tmp/mmedge-trt-check)
# Writes OUT_DIR/report.json; exit code 1 when a parity check or a test fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-${OUT:-/tmp/mmedge-trt-check}}"
PY="${PYTHON:-python3}"
RUNS="${RUNS:-50}"
mkdir -p "$OUT"
FAILED=0
step() { echo "== $*" >&2; }

step "1. environment"
"$PY" -c '
import tensorrt
from mmedge.runtime.backends.tensorrt import gpu_info
g = gpu_info()
print(f"TensorRT {tensorrt.__version__} on {g.name} (compute capability {g.compute_capability})")
' || { echo "tensorrt_device_check.sh: needs TensorRT, cuda-python and a CUDA GPU" >&2; exit 2; }

step "2. requires_cuda tests"
"$PY" -m pytest -q -p no:cacheprovider -m requires_cuda tests/test_tensorrt.py || FAILED=1

step "3. export + parity"
ARTS=()
for spec in "captioner demo fp32" "captioner demo fp16" "captioner demo int8" "soundnet demo fp16" \
            "voice-encoder demo int8" "refocus tiny fp16"; do
  read -r model config precision <<<"$spec"
  extra=()
  if [[ "$precision" == int8 ]]; then extra=(--calib-size 32); fi
  art="$("$PY" -m mmedge export "$model" --config "$config" --format tensorrt --precision "$precision" \
           --out "$OUT/artifacts" "${extra[@]}" -o "timing_cache=$OUT/timing.cache" --json \
         | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["artifacts"][0])')" || { FAILED=1; continue; }
  ARTS+=("$art")
  "$PY" -m mmedge parity --artifact "$art" --json >"$OUT/parity-$(basename "$art").json" || FAILED=1
  "$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); print(sys.argv[2], "parity", "ok" if r["ok"] else "FAIL",
            "worst", max((o["max_rel"] for o in r["outputs"]), default=0))' \
    "$OUT/parity-$(basename "$art").json" "$(basename "$art")" >&2
done
"$PY" -m mmedge export captioner --config demo --format onnx --out "$OUT/artifacts" --json >/dev/null

step "4. latency (median of $RUNS runs per graph, test-vector inputs)"
"$PY" - "$OUT" "$RUNS" "$OUT/artifacts/captioner-demo-onnx-fp32" "${ARTS[@]}" <<'EOF'
import json, statistics, sys, time
from pathlib import Path

import numpy as np

from mmedge.runtime import load

out, runs, dirs = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
rows = []
for d in dirs:
    pipe = load(d)
    vectors = np.load(Path(d) / "test_vectors.npz")
    for g in pipe.manifest.graphs:
        sess = pipe.sessions[g.name]
        feeds = {t.name: vectors[f"{g.name}.{t.name}"] for t in g.inputs}
        for _ in range(5):
            sess.run(feeds)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(feeds)
            times.append(time.perf_counter() - t0)
        rows.append({"artifact": Path(d).name, "graph": g.name, "backend": pipe.backend,
                     "median_ms": 1e3 * statistics.median(times), "p90_ms": 1e3 * sorted(times)[int(0.9 * runs)]})
        print(f"{Path(d).name:<40} {g.name:<14} {pipe.backend:<12} {rows[-1]['median_ms']:8.3f} ms", file=sys.stderr)
(out / "latency.json").write_text(json.dumps(rows, indent=2))
EOF

step "5. Jetson bundle + build_engines.sh"
"$PY" -m mmedge export soundnet --config demo --format onnx --out "$OUT/bundle-src" --json >/dev/null
"$PY" -m mmedge package jetson --artifact "$OUT/bundle-src/soundnet-demo-onnx-fp32" --out "$OUT/bundle.tar.gz"
rm -rf "$OUT/bundle" && mkdir -p "$OUT/bundle" && tar -xzf "$OUT/bundle.tar.gz" -C "$OUT/bundle"
if command -v trtexec >/dev/null 2>&1 || [[ -x /usr/src/tensorrt/bin/trtexec ]]; then
  PYTHON="$PY" "$OUT/bundle/mmedge-jetson/build_engines.sh" || FAILED=1
  for art in "$OUT"/bundle/mmedge-jetson/engines/*-tensorrt-*; do
    "$PY" -m mmedge parity --artifact "$art" >&2 || FAILED=1
  done
else
  TRT_VERSION="$("$PY" -c 'import tensorrt; print(tensorrt.__version__)')"
  echo "no trtexec here (pip's tensorrt has none): dry run for TensorRT $TRT_VERSION" >&2
  TRTEXEC=/bin/true TRT_VERSION="$TRT_VERSION" DRY_RUN=1 "$OUT/bundle/mmedge-jetson/build_engines.sh" || FAILED=1
fi

"$PY" - "$OUT" "$FAILED" <<'EOF'
import json, sys
from pathlib import Path

out, failed = Path(sys.argv[1]), sys.argv[2] == "1"
parity = {p.stem[len("parity-"):]: json.loads(p.read_text())["ok"] for p in sorted(out.glob("parity-*.json"))}
latency = json.loads((out / "latency.json").read_text()) if (out / "latency.json").is_file() else []
(out / "report.json").write_text(json.dumps({"ok": not failed, "parity": parity, "latency": latency}, indent=2))
print(json.dumps({"ok": not failed, "parity": parity}, indent=2))
EOF
exit "$FAILED"

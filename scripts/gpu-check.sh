#!/usr/bin/env bash
# The exporters' GPU path in one go, on a GPU host holding a copy of this repository:
#   1. export models/demo to ONNX, parity against torch on CUDA (float64 reference)
#   2. TensorRT engines (fp16, strongly typed) when `tensorrt` is importable, else recorded as skipped
#   3. the gpu-marked tests: CUDA torch vs onnxruntime, fp16/bf16 bounds on CUDA, TensorRT and
#      onnxruntime's CUDA / TensorRT providers when installed
#   4. `bench export --device cuda`: torch CPU / onnxruntime CPU / torch CUDA eager (+ ORT CUDA EP,
#      TensorRT when installed), rows/s and ratios
#
# No venv, no network, no pip install: it runs the source tree with PYTHONPATH=. and python3, which
# needs torch (CUDA), onnx, onnxruntime, onnxscript, safetensors, typer, rich, pyyaml, numpy,
# scikit-image and pydantic; pytest for step 3 (recorded as skipped without it). PyAV is not needed
# (real parity inputs fall back to pans over scikit-image's photographs).
#
#   OUT=/tmp/gpu-check bash scripts/gpu-check.sh
#
# Writes at most 7 files under $OUT (log, manifests, test report, benchmark JSON, summary); each step
# has its own time limit so the whole run stays under 6 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-check}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
: > "$LOG"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
WORK="$(mktemp -d /tmp/lawm-gpu-check.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
declare -A STATUS

run() {  # run NAME SECONDS CMD...: log the command's output, remember its exit status
  local name=$1 limit=$2; shift 2
  echo "== $name: $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  STATUS[$name]="rc=$rc seconds=$((SECONDS - t0))"
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
  return $rc
}

{
  echo "host: $(hostname)  date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "nvidia-smi not found"
  "$PY" - <<'EOF'
import importlib, torch
print("python", __import__("sys").version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
for mod in ("onnx", "onnxruntime", "onnxscript", "pydantic", "tensorrt", "pytest", "av"):
    try:
        print(f"{mod}: {importlib.import_module(mod).__version__}")
    except Exception as e:
        print(f"{mod}: not importable ({type(e).__name__})")
import onnxruntime as ort
print("onnxruntime providers:", ort.get_available_providers())
EOF
} >> "$LOG" 2>&1

# 1. ONNX export, parity reference on CUDA
if run export-onnx 150 "$PY" -m exporters.cli export models/demo --to "$WORK/repo" --name demo --device cuda; then
  cp "$WORK/repo/demo/1/manifest.json" "$OUT/manifest-onnx.json"
fi

# 2. TensorRT engines, when TensorRT is there
if "$PY" -c "import tensorrt" 2>/dev/null; then
  if run export-tensorrt 150 "$PY" -m exporters.cli export models/demo --to "$WORK/repo" --name demo --version 2 \
      --format tensorrt --precision fp16 --device cuda; then
    cp "$WORK/repo/demo/2/manifest.json" "$OUT/manifest-tensorrt.json"
    export LAWM_GPU_TRT_REPO="$WORK/repo"
  fi
else
  STATUS[export-tensorrt]="skipped: tensorrt not installed"
  echo "== export-tensorrt: skipped: tensorrt not installed" | tee -a "$LOG"
fi

# 3. gpu-marked tests against the repository exported above
if "$PY" -c "import pytest" 2>/dev/null; then
  LAWM_GPU_REPO="$WORK/repo" run gpu-tests 120 "$PY" -m pytest -q -rs tests/gpu tests/unit/exporters/test_tensorrt_host.py \
    -p no:cacheprovider -o addopts="" --junitxml="$OUT/gpu-tests.xml"
else
  STATUS[gpu-tests]="skipped: pytest not installed"
  echo "== gpu-tests: skipped: pytest not installed" | tee -a "$LOG"
fi

# 4. throughput, side by side in one run
run bench 150 "$PY" -m exporters.cli bench export --repo "$WORK/repo" --name demo --version 1 --device cuda --repeats 5 \
  --json "$OUT/export-gpu.json"

{
  echo "{"
  first=1
  for key in "${!STATUS[@]}"; do
    [ $first = 1 ] || echo ","
    first=0
    printf '  "%s": "%s"' "$key" "${STATUS[$key]}"
  done
  echo ""
  echo "}"
} > "$OUT/summary.json"
echo "== summary" | tee -a "$LOG"
tee -a "$LOG" < "$OUT/summary.json"
ls -la "$OUT" | tee -a "$LOG"

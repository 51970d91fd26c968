#!/usr/bin/env bash
# The one GPU command: bash benchmarks/device_check.sh   (OUT=folder, default ./device-out)
# Runs from a bare checkout with $PYTHON (default python3) and no install: the repository root goes on
# PYTHONPATH, and build/gpu-baselines/ too when present (mamba-ssm / causal-conv1d forward extensions).
# Each section is its own process under its own time limit and writes $OUT/<section>.json; all output
# also goes to $OUT/device_check.log (the device machine returns at most 8 files). Without CUDA the
# same sections run as a rehearsal under TRITON_INTERPRET=1 at tiny shapes (timings meaningless).
# Exit status: 0 only if every section ran and passed its checks.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-./device-out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
read -r -a PY <<< "${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
[ -d "$ROOT/build/gpu-baselines" ] && export PYTHONPATH="$ROOT/build/gpu-baselines:$PYTHONPATH"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
LOG="$OUT/device_check.log"
: > "$LOG"

if "${PY[@]}" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >>"$LOG" 2>&1; then
    MODE=device; ARGS=()
    # seconds per section; together under 8 minutes
    LIMITS="preflight=40 conv=60 scan=150 pyramid=45 head=90 video=75"
else
    MODE=rehearsal; ARGS=(--smoke --dtype fp32)
    export TRITON_INTERPRET=1
    LIMITS="preflight=60 conv=60 scan=120 pyramid=60 head=120 video=120"
fi
echo "device_check: $MODE, python ${PY[*]}, out $OUT" | tee -a "$LOG"

status=0
for pair in $LIMITS; do
    name="${pair%%=*}"; limit="${pair##*=}"
    start=$(date +%s)
    echo "===== $name (limit ${limit}s) =====" >>"$LOG"
    timeout -k 5 "$limit" "${PY[@]}" -m benchmarks.gpu_check --section "$name" --out "$OUT" "${ARGS[@]}" \
        >>"$LOG" 2>&1
    rc=$?
    [ -f "$OUT/$name.json" ] || { echo "{\"section\": \"$name\", \"failed\": true, \"rc\": $rc}" > "$OUT/$name.json"; rc=${rc/#0/1}; }
    echo "device_check: $name rc=$rc in $(( $(date +%s) - start ))s" | tee -a "$LOG"
    [ "$rc" = 0 ] || status=1
done
"${PY[@]}" -m benchmarks.gpu_check --section summary --out "$OUT" 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
echo "device_check: $MODE finished, exit $status" | tee -a "$LOG"
exit $status

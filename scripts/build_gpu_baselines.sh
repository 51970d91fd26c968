#!/usr/bin/env bash
# Builds the reference CUDA Mamba ahead, on a CPU-only machine: the FORWARD CUDA extensions of
# mamba-ssm 2.3.2.post1 (selective_scan_cuda) and causal-conv1d 1.7.0 (causal_conv1d_cuda), for sm_90
# only, against torch 2.11.0 (+cu130) and Python 3.12, with nvcc 13.0 from PyPI's nvidia-* wheels.
# Output: build/gpu-baselines/*.so (<= 60 MiB), which benchmarks/device_check.sh puts on PYTHONPATH
# (carry build/gpu-baselines to the GPU machine). Then checks what can be checked without a GPU:
# sm_90 SASS in the .so files, their undefined symbols resolve against the torch 2.11 wheel (+ cudart,
# the C/C++ runtime, Python), and they import in the Python 3.12 + torch 2.11 venv.
#
# Idempotent: the venv, the sdists and the compiled objects are reused (ninja rebuilds what changed).
# Run as `make gpu-baselines`. Needs the package index only (pip's configured index); ~5 GB of disk
# for the venv (torch's CUDA wheels).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/build_gpu_baselines.sh [--dry-run] [--check-only] [--jobs N] [--help]

  --dry-run     print the steps and the pinned versions, do nothing
  --check-only  skip venv/download/compile; run the checks on build/gpu-baselines/*.so
  --jobs N      parallel compile jobs (default: MAX_JOBS or 2)
env: PYTHON312 (a python3.12; default: python3.12 on PATH, else pyenv's 3.12.x)
out: build/gpu-baselines/{selective_scan_cuda,causal_conv1d_cuda}.cpython-312-x86_64-linux-gnu.so,
     build/gpu-baselines/BUILD_INFO.txt; logs in build/gpu-baselines-logs/
EOF
}

DRY=0; CHECK_ONLY=0; JOBS="${MAX_JOBS:-2}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --check-only) CHECK_ONLY=1 ;;
    --jobs) JOBS="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="$ROOT/build"
OUTDIR="$B/gpu-baselines"
VENV="$B/gpu-baselines-venv"
SRC="$B/gpu-baselines-src"
TMP="$B/gpu-baselines-tmp"
LOGS="$B/gpu-baselines-logs"
MAX_MIB=60

MAMBA_VER=2.3.2.post1
CONV_VER=1.7.0
# torch 2.11.0 from PyPI is the cu130 build; its nvidia-cuda-runtime is 13.0.x. nvcc's own pieces (crt
# headers, nvvm/cicc) are pinned to 13.0 too, or pip picks the newest (13.5) for them. cuobjdump has no
# 13.0 wheel (the first is 13.2); any version reads sm_90 cubins.
PINS=(torch==2.11.0 'nvidia-cuda-nvcc==13.0.*' 'nvidia-cuda-runtime==13.0.*' 'nvidia-cuda-cccl==13.0.*'
      'nvidia-cuda-crt==13.0.*' 'nvidia-nvvm==13.0.*' 'nvidia-cuda-cuobjdump>=13.2'
      ninja setuptools wheel packaging)
MAMBA_SRC="$SRC/mamba_ssm-$MAMBA_VER"
CONV_SRC="$SRC/causal_conv1d-$CONV_VER"

find_py312() {
  if [ -n "${PYTHON312:-}" ]; then echo "$PYTHON312"; return; fi
  local p
  for p in "$(command -v python3.12 2>/dev/null || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12; do
    if [ -n "$p" ] && [ -x "$p" ] && "$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      echo "$p"; return
    fi
  done
  return 1
}

T_ALL=$(date +%s)
step_start() { STEP="$1"; T0=$(date +%s); echo "== [$STEP] $(date -u +%H:%M:%S)"; }
step_end() { echo "== [$STEP] done in $(( $(date +%s) - T0 )) s"; TIMES+=("$STEP: $(( $(date +%s) - T0 )) s"); }
TIMES=()

if [ "$DRY" = 1 ]; then
  echo "dry run: nothing is created, downloaded or compiled"
  echo "python3.12: $(find_py312 || echo 'NOT FOUND (set PYTHON312)')"
  echo "1. venv     $VENV: pip install ${PINS[*]}"
  echo "2. sdists   $SRC: pip download --no-deps --no-binary :all: mamba-ssm==$MAMBA_VER causal-conv1d==$CONV_VER"
  echo "3. compile  (MAX_JOBS=$JOBS, TORCH_CUDA_ARCH_LIST=9.0 -> -gencode=arch=compute_90,code=sm_90)"
  echo "            selective_scan_cuda: selective_scan.cpp + selective_scan_fwd_{fp32,fp16,bf16}.cu + bwd stub"
  echo "            causal_conv1d_cuda:  causal_conv1d.cpp + causal_conv1d_fwd.cu + bwd/update stub"
  echo "4. strip    host debug info (strip --strip-debug; the device code is untouched)"
  echo "5. checks   cuobjdump --list-elf (sm_90 only), nm -D undefined vs torch/nvidia/system/python, import, size <= $MAX_MIB MiB"
  exit 0
fi

mkdir -p "$OUTDIR" "$SRC" "$TMP/link" "$LOGS"
PY="$VENV/bin/python"

if [ "$CHECK_ONLY" = 0 ]; then
  step_start venv
  PY312="$(find_py312)" || { echo "no python3.12 found (set PYTHON312)" >&2; exit 1; }
  STAMP="$VENV/.stamp-$(printf '%s\n' "${PINS[@]}" | md5sum | cut -c1-12)"
  if [ ! -f "$STAMP" ]; then
    [ -x "$PY" ] || "$PY312" -m venv "$VENV"
    "$PY" -m pip install -q "${PINS[@]}" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
    "$PY" -W ignore -c 'import torch; assert torch.__version__.startswith("2.11.0"), torch.__version__'
    rm -f "$VENV"/.stamp-*; touch "$STAMP"
  else
    echo "venv up to date ($VENV)"
  fi
  step_end

  step_start sdists
  if [ ! -f "$SRC/mamba_ssm-$MAMBA_VER.tar.gz" ] || [ ! -f "$SRC/causal_conv1d-$CONV_VER.tar.gz" ]; then
    # --no-build-isolation: pip prepares the sdists' metadata with this venv (torch is in it) instead of
    # building their build dependencies from source; the SKIP flags keep setup.py from compiling.
    MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE "$PY" -m pip download -q --no-deps \
      --no-binary :all: --no-build-isolation "mamba-ssm==$MAMBA_VER" "causal-conv1d==$CONV_VER" -d "$SRC" \
      2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
  fi
  [ -d "$MAMBA_SRC" ] || tar -xzf "$SRC/mamba_ssm-$MAMBA_VER.tar.gz" -C "$SRC"
  [ -d "$CONV_SRC" ] || tar -xzf "$SRC/causal_conv1d-$CONV_VER.tar.gz" -C "$SRC"
  ls -l "$SRC"/*.tar.gz
  step_end
fi

SP="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
CU="$SP/nvidia/cu13"
TORCH_LIB="$SP/torch/lib"
ln -sf "$CU/lib/libcudart.so.13" "$TMP/link/libcudart.so"   # the wheel has only the soname file

if [ "$CHECK_ONLY" = 0 ]; then
  for ext in causal_conv1d_cuda selective_scan_cuda; do
    step_start "compile $ext"
    echo "nvcc: $("$CU/bin/nvcc" --version | tail -n 1); log: $LOGS/compile-$ext.log"
    ( cd "$ROOT/scripts/gpu_baselines" && \
      env CUDA_HOME="$CU" PATH="$CU/bin:$VENV/bin:$PATH" MAX_JOBS="$JOBS" TORCH_CUDA_ARCH_LIST=9.0 \
        MUSE_TVR_MAMBA_SRC="$MAMBA_SRC" MUSE_TVR_CONV_SRC="$CONV_SRC" MUSE_TVR_LINK_DIR="$TMP/link" \
        MUSE_TVR_ONLY="$ext" "$PY" setup_fwd.py build_ext --build-lib "$OUTDIR" --build-temp "$TMP/obj" \
    ) > "$LOGS/compile-$ext.log" 2>&1 || { tail -n 40 "$LOGS/compile-$ext.log"; echo "FAILED: compile $ext" >&2; exit 1; }
    step_end
  done
  # Per-file compile times from ninja's log (start/end ms of the last build of each object).
  echo "-- per-file compile times (ninja log; MAX_JOBS=$JOBS)"
  awk -F'\t' 'NR > 1 { t[$4] = ($2 - $1) / 1000 } END { for (f in t) { n = split(f, p, "/"); printf "   %7.1f s  %s\n", t[f], p[n] } }' \
    "$TMP/obj/.ninja_log" | sort -rn
  step_start strip
  for so in "$OUTDIR"/*.so; do strip --strip-debug "$so"; done
  step_end
fi

# ---------------------------------------------------------------------------------------------- checks
step_start checks
FAIL=0
SOS=("$OUTDIR"/selective_scan_cuda.cpython-312-*.so "$OUTDIR"/causal_conv1d_cuda.cpython-312-*.so)
for so in "${SOS[@]}"; do [ -f "$so" ] || { echo "MISSING: $so"; FAIL=1; }; done
[ "$FAIL" = 0 ] || { echo "FAILED: extensions missing" >&2; exit 1; }

echo "-- sizes"
for so in "${SOS[@]}"; do printf '   %6.1f MiB  %s\n' "$(awk -v b="$(stat -c %s "$so")" 'BEGIN { print b / 1048576 }')" "$(basename "$so")"; done
TOTAL=$(du -sb "$OUTDIR" | cut -f1)
printf '   %6.1f MiB  total build/gpu-baselines (limit %d MiB)\n' "$(awk -v b="$TOTAL" 'BEGIN { print b / 1048576 }')" "$MAX_MIB"
[ "$TOTAL" -le $((MAX_MIB * 1048576)) ] || { echo "FAIL: over $MAX_MIB MiB"; FAIL=1; }

echo "-- SASS (cuobjdump --list-elf)"
for so in "${SOS[@]}"; do
  elfs="$("$CU/bin/cuobjdump" --list-elf "$so" 2>&1 || true)"
  n90=$(grep -c '\.sm_90\.cubin' <<<"$elfs" || true)
  other=$(grep -E '\.sm_[0-9]+a?\.cubin' <<<"$elfs" | grep -vc '\.sm_90\.cubin' || true)
  ptx=$("$CU/bin/cuobjdump" --list-ptx "$so" 2>/dev/null | grep -c ptx || true)
  nk=$("$CU/bin/cuobjdump" --dump-resource-usage "$so" 2>/dev/null | grep -c ' Function ' || true)
  echo "   $(basename "$so"): $n90 sm_90 cubin(s), $other other-arch cubin(s), $ptx PTX, $nk kernels"
  [ "$n90" -ge 1 ] && [ "$other" = 0 ] || { echo "FAIL: $(basename "$so") has no sm_90 SASS or other archs"; FAIL=1; }
done

echo "-- undefined symbols vs torch 2.11 wheel libs + nvidia libs + system C/C++ runtime + python"
DEFS="$TMP/defined-symbols.txt"
{
  for lib in "$TORCH_LIB"/*.so* "$CU"/lib/libcudart.so.13; do nm -D --defined-only "$lib" 2>/dev/null; done
  for lib in libc.so.6 libm.so.6 libstdc++.so.6 libgcc_s.so.1; do
    p="$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64/ { print $NF; exit }')"; [ -n "$p" ] && nm -D --defined-only "$p"
  done
  # Python's C API: from libpython3.12.so when the interpreter has one, else from the executable.
  PYLIB="$("$PY" -c 'import sysconfig, os; d = sysconfig.get_config_var("LIBDIR"); l = sysconfig.get_config_var("LDLIBRARY"); print(os.path.join(d, l))')"
  if [ -f "$PYLIB" ] && [[ "$PYLIB" == *.so* ]]; then nm -D --defined-only "$PYLIB"; else nm -D --defined-only "$(readlink -f "$PY")"; fi
} 2>/dev/null | awk '{ print $NF }' | sed 's/@.*//' | sort -u > "$DEFS"
for so in "${SOS[@]}"; do
  und="$TMP/undef-$(basename "$so").txt"
  nm -D --undefined-only "$so" | awk '{ print $NF }' | sed 's/@.*//' | sort -u > "$und"
  # Weak undefined symbols (w) may stay unresolved by design (e.g. __gmon_start__, ITM).
  weak="$(nm -D --undefined-only "$so" | awk '$1 == "w" { print $NF }' | sed 's/@.*//' | sort -u)"
  unresolved="$(comm -23 "$und" "$DEFS" | grep -vxF -f <(printf '%s\n' "$weak" "__dummy__") || true)"
  echo "   $(basename "$so"): $(wc -l < "$und") undefined, $(grep -c . <<<"$unresolved" || true) unresolved"
  if [ -n "$unresolved" ]; then echo "$unresolved" | sed 's/^/      UNRESOLVED /' | head -n 40; FAIL=1; fi
  echo "      glibc >= $(objdump -T "$so" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1 | cut -d_ -f2), libstdc++ >= $(objdump -T "$so" | grep -o 'GLIBCXX_[0-9.]*' | sort -uV | tail -n 1 | cut -d_ -f2) (symbol versions)"
  echo "      needs: $(readelf -d "$so" | awk '/NEEDED/ { gsub(/[][]/, "", $NF); printf "%s ", $NF }')"
done

echo "-- import (Python 3.12 + torch 2.11 venv, no GPU)"
if PYTHONPATH="$OUTDIR" "$PY" -W ignore -c "import torch, selective_scan_cuda, causal_conv1d_cuda; print('   torch', torch.__version__, 'cuda', torch.version.cuda); print('  ', selective_scan_cuda.fwd, causal_conv1d_cuda.causal_conv1d_fwd); print('   from', selective_scan_cuda.__file__)"; then
  :
else
  echo "FAIL: import"; FAIL=1
fi
step_end

[ "$CHECK_ONLY" = 1 ] || {
  echo "muse-tvr build/gpu-baselines: forward-only mamba-ssm $MAMBA_VER selective_scan_cuda + causal-conv1d $CONV_VER causal_conv1d_cuda"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(nproc) cores, MAX_JOBS=$JOBS"
  echo "arch: -gencode=arch=compute_90,code=sm_90 (no PTX); nvcc: $("$CU/bin/nvcc" --version | tail -n 1)"
  echo "torch: $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null); python: $("$PY" -c 'import platform; print(platform.python_version())')"
  echo "times of this run (a rerun reuses the venv, the sdists and ninja's objects):"
  for t in "${TIMES[@]}"; do echo "time: $t"; done
  for so in "${SOS[@]}"; do echo "size: $(stat -c %s "$so") $(basename "$so")"; done
} > "$OUTDIR/BUILD_INFO.txt"
echo "== total $(( $(date +%s) - T_ALL )) s; ${TIMES[*]/#/| }"
if [ "$FAIL" != 0 ]; then echo "FAILED: some checks failed (see above)" >&2; exit 1; fi
echo "OK: all checks passed; carry build/gpu-baselines to the GPU machine"

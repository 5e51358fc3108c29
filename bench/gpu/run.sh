#!/usr/bin/env bash
# The GPU check: one run that never stops early and leaves everything to read
# afterwards. Each step has its own time budget and its own log in one folder
# ($OUT when set, else out/gpu-check); summary.md there lists pass/fail per
# step, the registers per kernel and the headline numbers.
#
#     bash bench/gpu/run.sh                       # on a GPU machine, under 8 minutes
#     bash bench/gpu/run.sh --device cpu --tiny   # smoke test of every step that needs no GPU
#     bash bench/gpu/run.sh -- --sizes 1M         # arguments after -- go to bench.py
#
# Steps: 1 build for the visible GPU (-Xptxas -v: registers, spills, shared
# memory), 2 tests/test_cuda.py, 3 compute-sanitizer memcheck and racecheck
# on small calls (bench/gpu/sanitize.py), 4 parity with the CPU at 300k faces
# (parity.py), 5 per-kernel profile at 42M (profile.py), 6 the benchmark
# (bench.py). No network needed: the build uses the installed torch.
#
# Environment: OUT (log folder), PYTHON (default python3), SKIP_BUILD=1 (use
# the facenms that is importable), TOTAL_S (whole budget, default 475),
# BUILD_S (the build's, default 180).
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEVICE=cuda
TINY=0
BENCH_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --device=*) DEVICE="${1#*=}"; shift ;;
    --tiny) TINY=1; shift ;;
    --) shift; BENCH_ARGS+=("$@"); break ;;
    *) BENCH_ARGS+=("$1"); shift ;;
  esac
done
PY="${PYTHON:-$(command -v python3 || command -v python)}"
LOGS="${OUT:-$REPO/out/gpu-check}"
mkdir -p "$LOGS"
SITE="${FACENMS_SITE:-/tmp/facenms-gpu-check/site}"
SRC=/tmp/facenms-gpu-check/src
TOTAL_S="${TOTAL_S:-475}"
START=$(date +%s)
SUMMARY="$LOGS/summary.md"
ROWS="$(mktemp)"
export PYTHONUNBUFFERED=1
G="$REPO/bench/gpu"
if [ "$DEVICE" = cpu ]; then
  SMALL=(--device cpu); [ "$TINY" = 1 ] && SMALL+=(--tiny)
else
  SMALL=()
fi

# step NAME LOG BUDGET_S COMMAND: runs COMMAND (a bash string) under timeout,
# appending to LOG, and records the outcome.
NO_BUILD=""  # set when the build failed: the later steps would test another facenms
step() {
  local name="$1" log="$LOGS/$2" budget="$3" cmd="$4"
  if [ -n "$NO_BUILD" ] && [ "$name" != build ]; then
    echo "| $name | SKIP | - | 0 | $NO_BUILD |" >>"$ROWS"
    echo "== $name: SKIP ($NO_BUILD)"
    return
  fi
  local left=$((TOTAL_S - ($(date +%s) - START)))
  [ "$budget" -gt "$left" ] && budget="$left"
  if [ "$budget" -lt 5 ]; then
    echo "| $name | SKIP | - | 0 | no time left |" >>"$ROWS"
    return
  fi
  echo "== $(date -u +%H:%M:%S) $name (budget ${budget}s): $cmd" | tee -a "$log"
  local t0=$(date +%s)
  timeout -k 5 "$budget" bash -c "$cmd" >>"$log" 2>&1
  local rc=$? status
  local secs=$(($(date +%s) - t0))
  case $rc in
    0) status=PASS ;;
    124|137) status=TIMEOUT ;;
    *) status=FAIL ;;
  esac
  echo "   $status (rc $rc, ${secs}s)"
  echo "| $name | $status | $rc | $secs | $budget s, log $(basename "$log") |" >>"$ROWS"
}
skip() { echo "| $1 | SKIP | - | 0 | $2 |" >>"$ROWS"; echo "== $1: SKIP ($2)"; }

# ---------------------------------------------------------- 1. build ----
if [ "${SKIP_BUILD:-0}" = 1 ]; then
  skip build "SKIP_BUILD=1: using the importable facenms"
else
  # A copy of the tree, so the in-tree build folders of this checkout stay as they are.
  if [ "$DEVICE" = cpu ]; then FLAGS="FORCE_CPU=1"; else FLAGS="FORCE_CUDA=1"; fi
  step build build.log "${BUILD_S:-180}" "
    rm -rf '$SRC' '$SITE' && mkdir -p '$SRC' '$SITE' &&
    tar -C '$REPO' --exclude=./.git --exclude=./build --exclude=./out --exclude='*.so' -cf - . |
      tar -C '$SRC' -xf - &&
    cd '$SRC' && $FLAGS FACENMS_NVCC_FLAGS='-Xptxas -v' MAX_JOBS=\$(nproc) \
      '$PY' -m pip install -v --no-index --no-build-isolation --no-deps --target '$SITE' ."
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
cd /tmp  # outside the source tree: the built facenms is imported
WHICH=$("$PY" -c "import facenms, json; print(facenms.__file__); print(json.dumps(facenms.build_info()))" 2>&1)
if [ "${SKIP_BUILD:-0}" != 1 ] && [[ "$(echo "$WHICH" | head -1)" != "$SITE"/* ]]; then
  NO_BUILD="no facenms from the build (see build.log)"
fi

# ---------------------------------------------------------- 2. tests ----
step tests tests.log 75 "'$PY' -m pytest -q -p no:cacheprovider -rs '$REPO/tests/test_cuda.py'"

# ------------------------------------------------------ 3. sanitizer ----
SAN="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
if [ "$DEVICE" = cpu ]; then
  skip "memcheck" "no GPU"
  skip "racecheck" "no GPU"
  step "sanitize.py on the CPU" sanitizer.log 60 "'$PY' '$G/sanitize.py' ${SMALL[*]}"
elif [ -z "$SAN" ]; then
  skip "memcheck" "compute-sanitizer not found"
  skip "racecheck" "compute-sanitizer not found"
  step "sanitize.py without sanitizer" sanitizer.log 40 "'$PY' '$G/sanitize.py'"
else
  step memcheck sanitizer.log 40 \
    "'$SAN' --tool memcheck --error-exitcode 9 --print-limit 30 '$PY' '$G/sanitize.py'"
  step racecheck sanitizer.log 30 \
    "'$SAN' --tool racecheck --error-exitcode 9 --print-limit 30 '$PY' '$G/sanitize.py' --quick"
fi

# --------------------------------------------------------- 4. parity ----
step parity parity.log 40 "'$PY' '$G/parity.py' ${SMALL[*]}"

# -------------------------------------------------------- 5. profile ----
step profile profile.log 50 "'$PY' '$G/profile.py' ${SMALL[*]}"

# ---------------------------------------------------------- 6. bench ----
if [ ${#BENCH_ARGS[@]} -eq 0 ]; then
  if [ "$DEVICE" = cpu ]; then BENCH_ARGS=(--device cpu --tiny); else BENCH_ARGS=(--sizes 1M,42M --budget-s 15); fi
fi
step bench bench.log 60 "'$PY' '$G/bench.py' ${BENCH_ARGS[*]}"

# -------------------------------------------------------- summary ----
{
  echo "# GPU check $(date -u +%Y-%m-%dT%H:%M:%SZ), $(($(date +%s) - START)) s"
  echo
  echo "- device: $DEVICE$([ "$TINY" = 1 ] && echo ' (tiny)'); $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1 || echo 'no nvidia-smi')"
  echo "- $("$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| gpu', torch.cuda.is_available())" 2>&1)"
  echo "- nvcc: $(nvcc --version 2>/dev/null | tail -1 || echo 'not on PATH'); compute-sanitizer: ${SAN:-none}"
  echo "- source: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no git') $(git -C "$REPO" status --porcelain 2>/dev/null | grep -q . && echo '(with changes)')"
  echo "- facenms imported from: $(echo "$WHICH" | head -1)"
  echo "- build_info: $(echo "$WHICH" | tail -1)"
  echo
  echo "| step | result | rc | seconds | |"
  echo "|---|---|---:|---:|---|"
  cat "$ROWS"
  echo
  echo "## Tests"
  echo
  echo '```'
  grep -E "passed|failed|error" "$LOGS/tests.log" 2>/dev/null | tail -3
  grep -E "^(FAILED|ERROR)" "$LOGS/tests.log" 2>/dev/null | head -30
  echo '```'
  echo
  echo "## Sanitizer, parity"
  echo
  echo '```'
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|calls, .* mismatches|MISMATCH" "$LOGS/sanitizer.log" 2>/dev/null | head -20
  grep -E "faces,|differing|first differences|counts per lane|similarity error|nms_with_norms ==|PARITY|UNEXPLAINED" "$LOGS/parity.log" 2>/dev/null | head -20
  echo '```'
  echo
  echo "## Profile (wall times; tables in profile.log)"
  echo
  echo '```'
  grep -E "^## |^# " "$LOGS/profile.log" 2>/dev/null
  echo '```'
  echo
  echo "## Benchmark (tables in bench.log)"
  echo
  grep -E "^## |^- " "$LOGS/bench.log" 2>/dev/null
  echo
  echo "## Estimate (bench/gpu/estimate.py, read against the profile)"
  echo
  "$PY" "$G/estimate.py" $([ "$TINY" = 1 ] && echo "--faces 50000 --dim 64") 2>&1
  echo
  echo "## Registers per kernel (ptxas -v)"
  echo
  "$PY" "$G/ptxas_summary.py" "$LOGS/build.log" 2>&1
} >"$SUMMARY"
rm -f "$ROWS"
echo "== $(date -u +%H:%M:%S) done: $SUMMARY"
cat "$SUMMARY" | head -30

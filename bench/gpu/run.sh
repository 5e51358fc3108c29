#!/usr/bin/env bash
# One command for a GPU machine: build facenms there, run the CUDA tests, then
# the benchmark against the torch / faiss baselines (1M, 10M, 42M faces).
#
#     bash bench/gpu/run.sh                 # everything (about 6-8 minutes on one H200)
#     bash bench/gpu/run.sh --sizes 1M      # extra arguments go to bench.py
#     SKIP_BUILD=1 SKIP_TESTS=1 bash bench/gpu/run.sh
#
# No network needed: the build uses the installed torch, and a faiss-cpu wheel
# found in .whl/ (untracked; carried along) is installed if faiss is missing.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python}"
cd "$REPO"

echo "== $(date -u +%H:%M:%S) environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| gpu', torch.cuda.is_available())"
command -v nvcc >/dev/null && nvcc --version | tail -1 || echo "nvcc not on PATH"

if ! "$PY" -c "import faiss" 2>/dev/null; then
  whl=$(ls "$REPO"/.whl/faiss_cpu-*.whl 2>/dev/null | head -1 || true)
  if [ -n "$whl" ]; then
    echo "== installing $(basename "$whl")"
    "$PY" -m pip install -q --no-index --no-deps "$whl" || echo "faiss-cpu wheel did not install: faiss baselines will be skipped"
  fi
fi

if [ "${SKIP_BUILD:-0}" != "1" ]; then
  echo "== $(date -u +%H:%M:%S) build (pip install --no-index --no-build-isolation --no-deps .)"
  # TORCH_CUDA_ARCH_LIST unset: setup.py builds for the visible GPU only.
  export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  "$PY" -m pip install --no-index --no-build-isolation --no-deps . 2>&1 | tail -3
fi

# Run from outside the source tree so that the installed build is imported.
cd /tmp
"$PY" -c "import facenms, json; print(json.dumps(facenms.build_info(), indent=1))"
if [ "${SKIP_TESTS:-0}" != "1" ]; then
  echo "== $(date -u +%H:%M:%S) CUDA tests"
  "$PY" -m pytest -q -p no:cacheprovider "$REPO/tests/test_cuda.py" -x -rs
fi
echo "== $(date -u +%H:%M:%S) benchmark"
"$PY" "$REPO/bench/gpu/bench.py" "$@"
echo "== $(date -u +%H:%M:%S) done"

#!/usr/bin/env bash
# Installs facenms the way users do, in fresh virtual environments, and runs it:
#   python -m venv V && V/bin/pip install torch==X && V/bin/pip install . &&
#   facenms info && facenms demo --faces 20000
# once per torch given (default: 2.13.0, then 2.14.1), timing each step.
# Plain `pip install .`: with build isolation, as users run it.
#
#   bench/install/check.sh [torch version ...]     (run from anywhere)
#   KEEP=1 keeps the venvs; WORK=/some/dir puts them there (default: a temp dir)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${WORK:-$(mktemp -d /tmp/facenms-install.XXXXXX)}
PY=${PYTHON:-python3}
VERSIONS=("$@")
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(2.13.0 2.14.1)

# a clean copy of the source tree (tracked and new files, nothing built)
SRC=$WORK/src
mkdir -p "$SRC"
(cd "$ROOT" && git ls-files -co --exclude-standard -z | tar --null -cf - -T -) | tar -xf - -C "$SRC"

step() {  # step NAME CMD...: runs CMD, prints how long it took
  local name=$1 t0 t1; shift
  echo "+ $*"
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  printf '== %s: %.0f s\n' "$name" "$(echo "$t1 - $t0" | bc)"
}

for v in "${VERSIONS[@]}"; do
  echo "=================== torch==$v ==================="
  V=$WORK/venv-$v
  rm -rf "$V" "$SRC/build"
  "$PY" -m venv "$V"
  step "pip install torch==$v" "$V/bin/pip" install -q "torch==$v"
  step "pip install . (facenms)" "$V/bin/pip" install -q "$SRC"
  # from elsewhere, so the installed package is used, not the source tree
  (cd "$WORK" && step "facenms info" "$V/bin/facenms" info)
  (cd "$WORK" && step "facenms demo --faces 20000" "$V/bin/facenms" demo --faces 20000)
  [ -n "${KEEP:-}" ] || rm -rf "$V"
done
[ -n "${KEEP:-}" ] || rm -rf "$WORK"

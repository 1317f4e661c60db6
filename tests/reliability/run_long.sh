#!/usr/bin/env bash
# The long versions of the reliability tests of issue 7, points 1-5, 11 and 12
# (docs/RELIABILITY.md): the same binaries as ctest runs, with
# PATLEDGER_LONG=1.
#
#   tests/reliability/run_long.sh [BUILD_DIR] [TEST...]
#
# BUILD_DIR defaults to ./build (configured and built as the README says). TEST is any
# of power_loss corruption_matrix io_error determinism crash_loop soak abuse (default:
# all). `abuse` is tests/security/security_abuse; the others are
# tests/reliability/reliability_<TEST>.
# Each test prints its seed and figures; the whole output also goes to
# BUILD_DIR/reliability-long.log. PATLEDGER_SEED=N reproduces a run; the per-test size
# variables named in docs/RELIABILITY.md override the long sizes.
set -uo pipefail

build="${1:-build}"
shift || true
tests=("$@")
if [[ ${#tests[@]} -eq 0 ]]; then
  tests=(power_loss corruption_matrix io_error determinism crash_loop soak abuse)
fi
log="$build/reliability-long.log"
export PATLEDGER_LONG=1

: >"$log"
failed=()
for t in "${tests[@]}"; do
  case $t in
    abuse) bin="$build/tests/security/security_$t" ;;
    *) bin="$build/tests/reliability/reliability_$t" ;;
  esac
  if [[ ! -x "$bin" ]]; then
    echo "run_long.sh: $bin is missing (build first: cmake --build $build)" >&2
    exit 2
  fi
  echo "=== $(basename "$bin") (long) ===" | tee -a "$log"
  start=$(date +%s)
  "$bin" --log_level=message --report_level=short --color_output=no 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
  echo "=== $(basename "$bin"): exit $status in $(( $(date +%s) - start )) s ===" | tee -a "$log"
  [[ $status -eq 0 ]] || failed+=("$t")
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "run_long.sh: FAILED: ${failed[*]} (log: $log)"
  exit 1
fi
echo "run_long.sh: all passed (log: $log)"

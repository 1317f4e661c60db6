#!/usr/bin/env bash
# tools/sanitize.sh: the test suite under sanitizers (issue 7, point 6).
#
#   tools/sanitize.sh [address,undefined | thread | all]        (default: all)
#
# address,undefined  Debug build in build-asan (-DPATLEDGER_SANITIZE=address,undefined),
#                    then the whole ctest suite except the `timing` label (a timing
#                    statistic of instrumented code measures the instrumentation).
# thread             Debug build in build-tsan (-DPATLEDGER_SANITIZE=thread), then the
#                    tests labelled `concurrency` and the ones that run the real server
#                    (server_test, e2e_test, security_secrets).
#
# Zero reports or it fails: every sanitizer halts at its first report
# (halt_on_error=1), and every process — the test binaries and the `patledger serve`
# children they start, which inherit the options — writes its reports under
# <build>/sanitizer-logs/, which must be empty after ctest (so a report in a child
# whose exit status a test ignores still fails the run). LeakSanitizer is on.
# tests/tsan.supp suppresses known reports from inside Debian's librocksdb, which is
# not TSan-instrumented, and tests/lsan.supp one RocksDB leak after a failed flush;
# any other report fails.
#
# Environment: PATLEDGER_ASAN_DIR, PATLEDGER_TSAN_DIR (build directories, default
# build-asan and build-tsan in the repository), CMAKE_BUILD_PARALLEL_LEVEL,
# CTEST_PARALLEL_LEVEL (default 2), CXX (default: cmake's choice, GCC on Debian 12).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
mode="${1:-all}"
case "$mode" in
  address,undefined|asan) modes=(asan) ;;
  thread|tsan) modes=(tsan) ;;
  all) modes=(asan tsan) ;;
  -h|--help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0 ;;
  *) echo "usage: tools/sanitize.sh [address,undefined|thread|all]" >&2; exit 2 ;;
esac
jobs="${CTEST_PARALLEL_LEVEL:-2}"

# Prints the reports under $1 and returns 1 if there is any.
check_logs() {
  local dir="$1" found=0
  for f in "$dir"/*; do
    [[ -e "$f" ]] || continue
    found=1
    echo "==== sanitizer report: $f" >&2
    cat "$f" >&2
  done
  return "$found"
}

run() {
  local name="$1" sanitize dir
  local -a select
  if [[ "$name" == asan ]]; then
    sanitize=address,undefined
    dir="${PATLEDGER_ASAN_DIR:-$root/build-asan}"
    select=(-LE '^timing$')
  else
    sanitize=thread
    dir="${PATLEDGER_TSAN_DIR:-$root/build-tsan}"
  fi
  local logs="$dir/sanitizer-logs"
  local t0 t1 t2
  t0=$(date +%s)
  cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
        -DPATLEDGER_SANITIZE="$sanitize" >/dev/null
  if [[ "$name" == tsan ]]; then
    # ctest ANDs -L with -R, so the union goes through names: the tests labelled
    # concurrency plus the server tests. Each is built by the target of its name (and
    # the servers they start by `patledger`): only those are built.
    local -a names
    mapfile -t names < <(ctest --test-dir "$dir" -N -L '^concurrency$' |
                         sed -n 's/^ *Test *#[0-9]*: //p')
    names+=(server_test e2e_test security_secrets)
    local regex
    regex="$(printf '%s\n' "${names[@]}" | paste -sd'|' -)"
    select=(-R "^($regex)\$")
    cmake --build "$dir" --target "${names[@]}" patledger
  else
    cmake --build "$dir"
  fi
  t1=$(date +%s)
  rm -rf "$logs"
  mkdir -p "$logs"
  local status=0
  ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:log_path=$logs/asan" \
  LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan" \
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tests/tsan.supp:log_path=$logs/tsan" \
    ctest --test-dir "$dir" --output-on-failure -j "$jobs" --timeout 1800 "${select[@]}" ||
    status=1
  check_logs "$logs" || status=1
  t2=$(date +%s)
  echo "sanitize.sh: $sanitize: build $((t1 - t0)) s, tests $((t2 - t1)) s:" \
       "$([[ $status == 0 ]] && echo "0 reports, passed" || echo FAILED)"
  return "$status"
}

start=$(date +%s)
overall=0
for m in "${modes[@]}"; do
  run "$m" || overall=1
done
echo "sanitize.sh: ${modes[*]} in $(( $(date +%s) - start )) s"
exit "$overall"

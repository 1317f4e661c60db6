#!/usr/bin/env bash
# tools/fuzz.sh: the libFuzzer targets of fuzz/, each for a bounded time (issue 7,
# point 7). docs/RELIABILITY.md (section 7) says what each target covers.
#
#   tools/fuzz.sh [SECONDS] [TARGET...]     (default: 60 seconds, every target)
#   tools/fuzz.sh --seeds                    regenerate fuzz/corpus/ (make_corpus)
#   tools/fuzz.sh -h                         this help
#
# TARGET: event_decode_fuzz token_parse_fuzz http_handler_fuzz ledger_open_fuzz
#
# 1. Configures build-fuzz with CC=clang-14 CXX=clang++-14 -DPATLEDGER_FUZZ=ON
#    -DCMAKE_BUILD_TYPE=RelWithDebInfo (every library -fsanitize=fuzzer-no-link,
#    address,undefined; the targets -fsanitize=fuzzer,address,undefined) and builds
#    only the fuzz targets. Needs: apt-get install -y clang-14 libclang-rt-14-dev.
# 2. Runs the targets one after the other, each with -max_total_time=SECONDS
#    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1, LeakSanitizer on (with the
#    one false positive in fuzz/lsan.supp suppressed) and UBSan halting at its first
#    report, over a scratch copy of its seeds
#    (build-fuzz/corpus/<target>/, refilled from fuzz/corpus/<target>/ on every run, so
#    the repository's corpus is never written to).
# 3. Prints one line per target — execs, execs/s, coverage (cov: edges, ft: features),
#    corpus size (inputs/bytes), crashes — and fails (exit 1) if any target crashed,
#    leaked, timed out, ran out of memory or reported undefined behaviour. The input
#    that did it is kept under build-fuzz/artifacts/<target>/ (inputs of earlier runs are
#    moved to build-fuzz/artifacts/earlier/ first, so they do not fail this one) and the whole log in
#    build-fuzz/logs/<target>.log; reproduce with
#    build-fuzz/fuzz/<target> build-fuzz/artifacts/<target>/<file>.
#
# Environment: PATLEDGER_FUZZ_DIR (build directory, default build-fuzz in the
# repository), CMAKE_BUILD_PARALLEL_LEVEL (default 2), FUZZ_ARGS (more libFuzzer
# flags, e.g. FUZZ_ARGS=-jobs=2).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
all_targets=(event_decode_fuzz token_parse_fuzz http_handler_fuzz ledger_open_fuzz)
seconds=60
seeds=0
targets=()
for arg in "$@"; do
  case "$arg" in
    -h|--help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0 ;;
    --seeds) seeds=1 ;;
    *[!0-9]*)
      if [[ " ${all_targets[*]} " != *" $arg "* ]]; then
        echo "tools/fuzz.sh: unknown target '$arg' (try -h)" >&2
        exit 2
      fi
      targets+=("$arg") ;;
    *) seconds="$arg" ;;
  esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=("${all_targets[@]}")

dir="${PATLEDGER_FUZZ_DIR:-$root/build-fuzz}"
for tool in clang-14 clang++-14; do
  command -v "$tool" >/dev/null || {
    echo "tools/fuzz.sh: $tool not found; apt-get install -y clang-14 libclang-rt-14-dev" >&2
    exit 2
  }
done

build_start=$SECONDS
CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$dir" -G Ninja -DPATLEDGER_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
if [[ $seeds == 1 ]]; then
  cmake --build "$dir" --target make_corpus -j"${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
  rm -rf "$root/fuzz/corpus"
  "$dir/fuzz/make_corpus" "$root/fuzz/corpus"
  echo "seeds written to fuzz/corpus/ ($(du -sb "$root/fuzz/corpus" | cut -f1) bytes)"
  exit 0
fi
cmake --build "$dir" --target "${targets[@]}" -j"${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
echo "build: $((SECONDS - build_start)) s"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$root/fuzz/lsan.supp}"
mkdir -p "$dir/logs"
failed=0
summary=()
for t in "${targets[@]}"; do
  corpus="$dir/corpus/$t"
  artifacts="$dir/artifacts/$t"
  log="$dir/logs/$t.log"
  rm -rf "$corpus"
  mkdir -p "$corpus" "$artifacts"
  # Inputs kept from an earlier run are not this run's crashes: move them aside.
  if [[ -n "$(find "$artifacts" -maxdepth 1 -type f -print -quit)" ]]; then
    old="$dir/artifacts/earlier/$t-$(date -u +%Y%m%dT%H%M%SZ)"
    mkdir -p "$old"
    find "$artifacts" -maxdepth 1 -type f -exec mv {} "$old/" \;
  fi
  cp "$root/fuzz/corpus/$t/"* "$corpus/"
  seeds_in=$(ls "$corpus" | wc -l)
  set +e
  # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
  "$dir/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} "$corpus" \
    >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
  crashes=$(find "$artifacts" -maxdepth 1 -type f | wc -l)
  state=ok
  if [[ $rc != 0 || $crashes != 0 ]]; then
    state=FAILED
    failed=1
  fi
  summary+=("$(printf '%-18s %-6s execs=%s execs/s=%s cov=%s ft=%s corpus=%s (seeds %s) crashes=%s rc=%s' \
    "$t" "$state" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" \
    "$seeds_in" "$crashes" "$rc")")
  echo "${summary[-1]}"
  if [[ $state != ok ]]; then
    echo "---- $log (last 40 lines)" >&2
    tail -40 "$log" >&2
  fi
done
echo "==== fuzz summary (${seconds} s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"

#!/usr/bin/env bash
# bench/run_all.sh: every benchmark of issue 6 in one command; collects their RESULT
# lines, with the date and the machine, into one results file.
#
#   index_bench    TokenIndex vs other hash tables (1M, 10M digests; 1, 2 threads)
#   auth_bench     Authenticate end to end at --tokens (default 10M) + breakdown
#   replay_bench   start-up replay vs bare RocksDB iteration, 1M and 10M; memory
#   append_bench   durable token creation vs synced RocksDB puts, 1/8/32 callers
#   http_bench.sh  serve vs nginx: wrk max throughput, loadgen fixed-rate latency
#   scaling.sh     lookup and replay vs size -> docs/perf/*.png (reuses the runs above)
#
# Ledgers are generated once into --ledger-dir (default build-c/bench-data; a 10M-token
# ledger takes ~5 GB and a few minutes to generate) and reused afterwards.
#
# usage: bench/run_all.sh [--build DIR] [--ledger-dir DIR] [--tokens N] [--reps R]
#                         [--seconds S] [--duration S] [--skip LIST] [--out FILE]
#                         [--perf-out DIR]
#                         [--smoke] [--help]
#   --tokens N     largest size (default 10000000); the other sizes scale with it
#   --reps R       repetitions everywhere (default 5; replay at the largest size: 3)
#   --seconds S    append_bench duration per run (default 5)
#   --duration S   wrk/loadgen duration (default 10)
#   --skip LIST    comma-separated names above to skip (e.g. index_bench,scaling)
#   --out FILE     results file (default <ledger-dir>/results-<date>.txt)
#   --perf-out DIR where scaling.sh writes its data file and plots (default docs/perf)
set -euo pipefail

BUILD=build-c
LEDGER_DIR=
TOKENS=10000000
REPS=5
SECONDS_PER_RUN=5
DURATION=10
SKIP=
OUT=
PERF_OUT=docs/perf
SMOKE=
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --build) BUILD=$2; shift 2 ;;
    --ledger-dir) LEDGER_DIR=$2; shift 2 ;;
    --tokens) TOKENS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --skip) SKIP=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --perf-out) PERF_OUT=$2; shift 2 ;;
    --smoke) SMOKE=1; TOKENS=20000; REPS=1; SECONDS_PER_RUN=0.3; DURATION=1; shift ;;
    --help|-h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
LEDGER_DIR=${LEDGER_DIR:-$BUILD/bench-data}
mkdir -p "$LEDGER_DIR"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$LEDGER_DIR/results-$STAMP.txt}
LOG=${OUT%.txt}.log
SMALL=$((TOKENS / 10))
B=$BUILD/bench
skip() { [[ ",$SKIP," == *",$1,"* ]]; }
T_START=$(date +%s)

{
  echo "# patledger benchmarks (bench/run_all.sh)"
  echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "# machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') | nproc $(nproc) | $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo) | Linux $(uname -r)"
  echo "# commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (+ local changes)')"
  echo "# options: tokens $TOKENS, reps $REPS, append ${SECONDS_PER_RUN}s, http ${DURATION}s"
} > "$OUT"

step() {  # name command...
  local name=$1; shift
  if skip "$name"; then echo "run_all: skip $name" >&2; return; fi
  local t0; t0=$(date +%s)
  echo "run_all: $name: $*" >&2
  echo "## $name: $*" >> "$LOG"
  set +e
  "$@" 2>>"$LOG" | tee -a "$LOG" | grep '^RESULT' >> "$OUT"
  local rc=${PIPESTATUS[0]}
  set -e
  if [[ $rc != 0 ]]; then
    echo "run_all: $name failed with status $rc (see $LOG)" >&2
    echo "# $name FAILED (status $rc)" >> "$OUT"
  fi
  echo "# $name took $(( $(date +%s) - t0 )) s" >> "$OUT"
}

if [[ -n $SMOKE ]]; then
  step index_bench "$B/index_bench" --smoke
else
  step index_bench "$B/index_bench" --tokens "$SMALL,$TOKENS" --reps "$REPS"
fi
# auth and replay per size, kept for scaling.sh (--results-dir).
RES=$LEDGER_DIR/runs-$STAMP
mkdir -p "$RES"
for n in $SMALL $TOKENS; do
  step auth_bench bash -c "'$B/auth_bench' --tokens $n --reps $REPS --ledger-dir '$LEDGER_DIR' | tee '$RES/auth.$n'"
  r=$REPS; [[ $n == "$TOKENS" && $REPS -gt 3 ]] && r=3
  step replay_bench bash -c "'$B/replay_bench' --tokens $n --reps $r --ledger-dir '$LEDGER_DIR' | tee '$RES/replay.$n'"
done
step append_bench "$B/append_bench" --seconds "$SECONDS_PER_RUN" --reps "$REPS" \
  --dir "$LEDGER_DIR"
step http_bench bench/http_bench.sh --tokens "$TOKENS" --reps "$REPS" \
  --duration "$DURATION" --build "$BUILD" --ledger-dir "$LEDGER_DIR"
if [[ -n $SMOKE ]]; then
  step scaling bench/scaling.sh --smoke --build "$BUILD" --ledger-dir "$LEDGER_DIR"
else
  step scaling bench/scaling.sh --reps 3 --build "$BUILD" --ledger-dir "$LEDGER_DIR" \
    --results-dir "$RES" --out "$PERF_OUT" \
    --sizes "$((TOKENS / 100)) $((TOKENS * 3 / 100)) $SMALL $((TOKENS * 3 / 10)) $TOKENS"
fi
echo "# total $(( $(date +%s) - T_START )) s" >> "$OUT"
echo "run_all: results in $OUT (full output: $LOG)" >&2

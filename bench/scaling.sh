#!/usr/bin/env bash
# bench/scaling.sh: how authentication and replay scale with the number of tokens.
#
# For each size (default 1e5 3e5 1e6 3e6 1e7 tokens), on the generated ledger of that
# size (bench_ledger.h; generated once and cached):
#   - auth_bench: Authenticate ns/call (valid tokens, random order, 1 thread) and its
#     HMAC-alone and lookup-alone parts (lookups overlapped, and one at a time);
#   - replay_bench: TokenService::Open (replay) seconds and the bare RocksDB iteration
#     seconds of the same ledger.
# Writes docs/perf/scaling.dat and two plots, docs/perf/lookup_scaling.png and
# docs/perf/replay_scaling.png (gnuplot; Debian package gnuplot-nox), and prints the
# RESULT lines of every run.
#
# usage: bench/scaling.sh [--sizes "100000 300000 ..."] [--reps R] [--sample M]
#                         [--build DIR] [--ledger-dir DIR] [--out DIR]
#                         [--results-dir DIR] [--smoke] [--help]
# --results-dir DIR: reuse DIR/auth.<n> and DIR/replay.<n> (outputs of auth_bench and
# replay_bench at size n, as bench/run_all.sh keeps them) instead of running them again.
set -euo pipefail

SIZES="100000 300000 1000000 3000000 10000000"
REPS=3
SAMPLE=1000000
BUILD=build-c
LEDGER_DIR=
OUT=docs/perf
RESULTS_DIR=
SMOKE_OUT=
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --sizes) SIZES=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --sample) SAMPLE=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    --ledger-dir) LEDGER_DIR=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --results-dir) RESULTS_DIR=$2; shift 2 ;;
    --smoke) SIZES="10000 20000"; REPS=1; SAMPLE=10000; OUT=$(mktemp -d); SMOKE_OUT=$OUT; shift ;;
    --help|-h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
LEDGER_DIR=${LEDGER_DIR:-$BUILD/bench-data}
command -v gnuplot >/dev/null || { echo "scaling: gnuplot missing (apt-get install -y gnuplot-nox)" >&2; exit 1; }
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP" ${SMOKE_OUT:+"$SMOKE_OUT"}' EXIT

get() {  # file bench name key
  grep "^RESULT bench=$2 name=$3 " "$1" | head -1 | grep -o " $4=[^ ]*" | cut -d= -f2
}

DAT=$OUT/scaling.dat
{
  echo "# patledger scaling: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) hardware threads, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "# made by bench/scaling.sh (auth_bench --reps $REPS --sample $SAMPLE; replay_bench --reps $REPS, warm page cache)"
  echo "# tokens auth_valid_ns lookup_ns hmac_ns replay_s bare_iteration_s events lookup_serial_ns"
} > "$TMP/dat"
for n in $SIZES; do
  echo "scaling: $n tokens" >&2
  if [[ -n $RESULTS_DIR && -s $RESULTS_DIR/auth.$n ]]; then
    cp "$RESULTS_DIR/auth.$n" "$TMP/auth.$n"
  else
    "$BUILD/bench/auth_bench" --tokens "$n" --reps "$REPS" --sample "$SAMPLE" \
      --ledger-dir "$LEDGER_DIR" > "$TMP/auth.$n"
  fi
  if [[ -n $RESULTS_DIR && -s $RESULTS_DIR/replay.$n ]]; then
    cp "$RESULTS_DIR/replay.$n" "$TMP/replay.$n"
  else
    "$BUILD/bench/replay_bench" --tokens "$n" --reps "$REPS" --no-memory \
      --ledger-dir "$LEDGER_DIR" > "$TMP/replay.$n"
  fi
  grep '^RESULT' "$TMP/auth.$n" "$TMP/replay.$n" | cut -d: -f2-
  echo "$n $(get "$TMP/auth.$n" auth valid ours) $(get "$TMP/auth.$n" auth lookup ours)" \
       "$(get "$TMP/auth.$n" auth hmac ours) $(get "$TMP/replay.$n" replay seconds ours)" \
       "$(get "$TMP/replay.$n" replay seconds peer) $(get "$TMP/replay.$n" replay seconds events)" \
       "$(get "$TMP/auth.$n" auth lookup_serial ours)" \
       >> "$TMP/dat"
done
cp "$TMP/dat" "$DAT"

TITLE="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) hw threads"
gnuplot <<EOF
set terminal pngcairo size 900,560 font "sans,11"
set logscale x
set grid
set key top left
set xlabel "tokens in the ledger"
set format x "10^{%L}"

set output "$OUT/lookup_scaling.png"
set title "Authenticate, 1 thread, random valid tokens\n$TITLE"
set ylabel "ns per call"
set yrange [0:*]
plot "$DAT" using 1:2 with linespoints lw 2 title "Authenticate (total)", \
     "$DAT" using 1:4 with linespoints lw 2 title "HMAC alone (precomputed pads)", \
     "$DAT" using 1:3 with linespoints lw 2 title "TokenIndex::Lookup alone (misses overlapped)", \
     "$DAT" using 1:8 with linespoints lw 2 title "TokenIndex::Lookup alone, one at a time"

set output "$OUT/replay_scaling.png"
set title "Start-up replay (TokenService::Open) vs bare RocksDB iteration\n$TITLE"
set ylabel "seconds"
set logscale y
set yrange [*:*]
plot "$DAT" using 1:5 with linespoints lw 2 title "replay (open + verify + apply)", \
     "$DAT" using 1:6 with linespoints lw 2 title "bare RocksDB iteration + XXH3"
EOF
echo "scaling: wrote $DAT, $OUT/lookup_scaling.png, $OUT/replay_scaling.png" >&2

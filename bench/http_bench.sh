#!/usr/bin/env bash
# bench/http_bench.sh: GET /api/v4/auth (forward auth) over HTTP/1.1 on loopback —
# `patledger serve` on a generated ledger of N tokens vs nginx `return 200` (Debian's,
# 1 worker, temporary config) in the same run (issue 6).
#
#  1. Generates (or reuses) the ledger (bench_ledger.h) and a file of tokens valid now
#     (auth_bench --write-tokens: TEST-ONLY secrets, mode 0600, kept in the bench data
#     directory, never printed).
#  2. Starts serve on a copy of the ledger (SST files hard-linked, the rest copied: the
#     cache is never written), waits for readiness; records its replay time and VmRSS,
#     and the VmRSS of serve on an empty ledger (memory per token, whole and delta);
#     then waits until serve is idle (any compaction the open started has finished).
#  3. Starts nginx on another port.
#  4. Max throughput, closed loop: alternates `wrk -t1 -c50 -d<D>s` runs against each
#     (a Lua script rotates Private-Token over the token file; nginx ignores it),
#     --reps times; medians and ratio.
#  5. Latency at fixed rates (bench/loadgen, measured from intended send times): 50%
#     and 80% of our median max, against ours and against nginx at the same rates,
#     --reps runs each, alternating; each figure is the median over the runs (one
#     scheduling stall on this VM moves a single run's p99 by milliseconds).
#
# Fairness on 2 cores: serve --threads 1 (one I/O thread) vs nginx worker_processes 1;
# wrk/loadgen (1 thread). Both log each request: serve to --access-log /dev/null, nginx
# access_log /dev/null. Change with --threads.
# --pin (with 2 or more CPUs): the server under test (every serve thread, once it is
# ready; nginx) on CPU 0 and the load client on CPU 1 (taskset), so neither takes the
# other's core; without it they share the machine.
#
# usage: bench/http_bench.sh [--tokens N] [--reps R] [--duration S] [--threads N]
#                            [--pin] [--build DIR] [--ledger-dir DIR] [--smoke] [--help]
set -euo pipefail

TOKENS=10000000
REPS=5
DURATION=10
THREADS=1
BUILD=build-c
LEDGER_DIR=
PORT=${PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
LG_DURATION=
PIN=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --tokens) TOKENS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --pin) PIN=1; shift ;;
    --build) BUILD=$2; shift 2 ;;
    --ledger-dir) LEDGER_DIR=$2; shift 2 ;;
    --smoke) TOKENS=20000; REPS=1; DURATION=1; LG_DURATION=1; shift ;;
    --help|-h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
LEDGER_DIR=${LEDGER_DIR:-$BUILD/bench-data}
LG_DURATION=${LG_DURATION:-$DURATION}
SERVER_CPU=() CLIENT_CPU=()
if [[ $PIN == 1 ]]; then
  command -v taskset >/dev/null || { echo "http_bench: --pin needs taskset" >&2; exit 1; }
  (( $(nproc) >= 2 )) || { echo "http_bench: --pin needs 2 CPUs" >&2; exit 1; }
  SERVER_CPU=(taskset -c 0) CLIENT_CPU=(taskset -c 1)
fi
for tool in wrk nginx curl; do
  command -v $tool >/dev/null || { echo "http_bench: $tool is not installed" >&2; exit 1; }
done
PATLEDGER=$BUILD/tools/patledger
for b in "$PATLEDGER" "$BUILD/bench/auth_bench" "$BUILD/bench/loadgen"; do
  [[ -x $b ]] || { echo "http_bench: $b not built (cmake --build $BUILD)" >&2; exit 1; }
done
mkdir -p "$LEDGER_DIR"
LEDGER_DIR=$(cd "$LEDGER_DIR" && pwd)

WORK=$(mktemp -d "$LEDGER_DIR/http-run.XXXXXX")
SERVE_PID= NGINX_PID=
cleanup() {
  [[ -n $SERVE_PID ]] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
  [[ -n $NGINX_PID ]] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# 1. The ledger and the tokens.
TOKEN_FILE=$LEDGER_DIR/http-tokens-$TOKENS.txt
if [[ ! -s $TOKEN_FILE || $(find "$TOKEN_FILE" -mmin +720 2>/dev/null) ]]; then
  "$BUILD/bench/auth_bench" --tokens "$TOKENS" --ledger-dir "$LEDGER_DIR" \
    --write-tokens "$TOKEN_FILE" --count 5000 >&2
fi
SRC=$(ls -d "$LEDGER_DIR"/gen-t$TOKENS-u*-s42-* 2>/dev/null | grep -v "\.partial-" | while read -r d; do
  [[ -f $d/bench-complete ]] && echo "$d"; done | tail -1)
[[ -n $SRC ]] || { echo "http_bench: no generated ledger of $TOKENS tokens" >&2; exit 1; }

# 2. serve on a copy.
DATA=$WORK/data
mkdir -p "$DATA/ledger"
for f in "$SRC"/ledger/*; do
  case $f in
    */LOCK) ;;
    *.sst) ln "$f" "$DATA/ledger/" ;;
    *) cp -p "$f" "$DATA/ledger/" ;;
  esac
done
cp -p "$SRC/token.key" "$DATA/token.key"

wait_ready() {  # port pid
  for _ in $(seq 1 6000); do  # up to ~10 min: a 10M-token replay on a busy machine
    kill -0 "$2" 2>/dev/null || return 1
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/-/readiness") == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# The baseline: serve on an empty ledger (it prints the new root token on stdout: discarded).
mkdir -p "$WORK/empty"
"$PATLEDGER" serve --data "$WORK/empty" --listen 127.0.0.1:$PORT --threads "$THREADS" \
  --access-log /dev/null >/dev/null 2>"$WORK/empty.log" &
SERVE_PID=$!
wait_ready $PORT $SERVE_PID || { echo "http_bench: empty serve not ready" >&2; cat "$WORK/empty.log" >&2; exit 1; }
EMPTY_RSS=$(rss_kb $SERVE_PID)
kill $SERVE_PID; wait $SERVE_PID 2>/dev/null || true; SERVE_PID=

T0=$(date +%s.%N)
"$PATLEDGER" serve --data "$DATA" --listen 127.0.0.1:$PORT --threads "$THREADS" \
  --access-log /dev/null >/dev/null 2>"$WORK/serve.log" &
SERVE_PID=$!
wait_ready $PORT $SERVE_PID || { echo "http_bench: serve not ready" >&2; cat "$WORK/serve.log" >&2; exit 1; }
READY_S=$(awk "BEGIN {printf \"%.2f\", $(date +%s.%N) - $T0}")
# Replay ran on every core; from now on the server has CPU 0.
[[ $PIN == 1 ]] && taskset -a -p -c 0 "$SERVE_PID" >/dev/null
SERVE_RSS=$(rss_kb $SERVE_PID)
# Ready is not yet idle: RocksDB may still be compacting what the open found, on the
# cores the measurement needs. Wait (up to 2 min) for a second in which serve used
# under 20 ms of CPU.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
SETTLE_T0=$(date +%s.%N)
PREV=$(cpu_ticks $SERVE_PID)
for _ in $(seq 1 120); do
  sleep 1
  NOW=$(cpu_ticks $SERVE_PID)
  (( NOW - PREV < 2 * $(getconf CLK_TCK) / 100 + 1 )) && break
  PREV=$NOW
done
SETTLED_S=$(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $SETTLE_T0}")
REPLAY_LINE=$(grep -o 'replayed [0-9]* events in [0-9.]* ms' "$WORK/serve.log" || true)

# A token must pass forward auth, or every figure below would be of 401s.
FIRST=$(head -1 "$TOKEN_FILE")
CODE=$(curl -s -o /dev/null -w '%{http_code}' -H "Private-Token: $FIRST" "http://127.0.0.1:$PORT/api/v4/auth")
FIRST=
[[ $CODE == 200 ]] || { echo "http_bench: a token from $TOKEN_FILE got $CODE, not 200" >&2; exit 1; }

# 3. nginx.
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log /dev/null;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { return 200 "ok"; }
  }
}
EOF
${SERVER_CPU[@]+"${SERVER_CPU[@]}"} nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
for _ in $(seq 1 100); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NGINX_PORT/") == 200 ]] && break
  sleep 0.1
done

# 4. wrk, alternating.
cat > "$WORK/tokens.lua" <<'EOF'
local tokens = {}
for line in io.lines(os.getenv("BENCH_TOKEN_FILE")) do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/api/v4/auth", {["Private-Token"] = tokens[i % #tokens + 1]})
end
EOF
wrk_rps() {  # port -> prints req/s; non-2xx counts go to $WORK/non2xx
  local out
  out=$(BENCH_TOKEN_FILE=$TOKEN_FILE ${CLIENT_CPU[@]+"${CLIENT_CPU[@]}"} \
        wrk -t1 -c50 -d"${DURATION}s" -s "$WORK/tokens.lua" "http://127.0.0.1:$1/api/v4/auth")
  echo "$out" | awk '/Non-2xx/ {print $NF}' >> "$WORK/non2xx.$1"
  echo "$out" | awk '/^Requests\/sec/ {print $2}'
}
OURS_RPS=() NGINX_RPS=()
for r in $(seq 1 "$REPS"); do
  OURS_RPS+=("$(wrk_rps $PORT)")
  NGINX_RPS+=("$(wrk_rps $NGINX_PORT)")
  echo "  wrk rep $r: ours ${OURS_RPS[-1]} req/s, nginx ${NGINX_RPS[-1]} req/s" >&2
done
OURS_MAX=$(printf '%s\n' "${OURS_RPS[@]}" | median)
NGINX_MAX=$(printf '%s\n' "${NGINX_RPS[@]}" | median)
OURS_NON2XX=$(awk '{s += $1} END {print s + 0}' "$WORK/non2xx.$PORT" 2>/dev/null || echo 0)

# 5. Fixed rates: 50% and 80% of our max, ours then nginx at the same rate.
run_loadgen() {  # label port rate
  ${CLIENT_CPU[@]+"${CLIENT_CPU[@]}"} "$BUILD/bench/loadgen" --url "http://127.0.0.1:$2/api/v4/auth" --rate "$3" \
    --connections 50 --threads 1 --duration "$LG_DURATION" --warmup 1 \
    --token-file "$TOKEN_FILE" --label "$1" > "$WORK/lg.$1"
}
field() { grep '^RESULT' "$WORK/lg.$1" | grep -o " $2=[^ ]*" | cut -d= -f2; }
# The median over the --reps runs of `label` (ours_80 = ours_80.r1, ours_80.r2, ...).
mfield() { for r in $(seq 1 "$REPS"); do field "$1.r$r" "$2"; done | median; }
rfields() { for r in $(seq 1 "$REPS"); do field "$1.r$r" "$2"; done | paste -sd/; }
calc() { awk "BEGIN {printf \"%.6g\", $1}"; }
result() {  # name params ours peer unit better
  if [[ -n $4 && $4 != NA ]] && awk "BEGIN {exit !($4 > 0)}"; then
    echo "RESULT bench=http name=$1 $2 ours=$3 peer=$4 ratio=$(calc "$3 / $4") unit=$5 better=$6"
  else
    echo "RESULT bench=${7:-http} name=$1 $2 ours=$3 peer=NA ratio=NA unit=$5 better=$6"
  fi
}
PCTS=(50 80)
RATES=()
for pct in "${PCTS[@]}"; do
  rate=$(awk "BEGIN {printf \"%d\", $OURS_MAX * $pct / 100}")
  RATES+=("$rate")
  for r in $(seq 1 "$REPS"); do
    run_loadgen "ours_$pct.r$r" $PORT "$rate"
    run_loadgen "nginx_$pct.r$r" $NGINX_PORT "$rate"
    echo "  loadgen at $rate req/s, rep $r: ours p99 $(field ours_$pct.r$r p99_ms) ms, nginx p99 $(field nginx_$pct.r$r p99_ms) ms" >&2
  done
done

echo "# http_bench"
echo
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') | $(nproc) hardware threads | Linux $(uname -r)"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "ledger: $SRC ($TOKENS tokens, $(wc -l < "$TOKEN_FILE") tokens presented round robin)"
echo "serve --threads $THREADS --access-log /dev/null; nginx: 1 worker, access_log /dev/null, return 200"
echo "cpus: $([[ $PIN == 1 ]] && echo 'pinned: servers on CPU 0, wrk/loadgen on CPU 1' || echo 'shared (not pinned)')"
echo "wrk -t1 -c50 -d${DURATION}s, $REPS runs each, alternating (median); loadgen: 50 connections, 1 thread, ${LG_DURATION}s after 1s warmup, $REPS runs each per rate, alternating (median of each figure)"
echo "serve: ready ${READY_S}s after start (${REPLAY_LINE:-replay time not logged}); VmRSS $((SERVE_RSS / 1024)) MB (empty ledger: $((EMPTY_RSS / 1024)) MB); idle ${SETTLED_S}s after ready"
echo
echo "| max throughput (wrk) | patledger serve | nginx return 200 | ours / nginx |"
echo "|---|---:|---:|---:|"
echo "| req/s, median | $OURS_MAX | $NGINX_MAX | $(calc "$OURS_MAX / $NGINX_MAX")x |"
echo
echo "runs: ours ${OURS_RPS[*]}; nginx ${NGINX_RPS[*]}; non-2xx answers from serve: ${OURS_NON2XX:-0}"
echo
echo "| fixed rate | server | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | non-2xx | p99 ms of each run |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for i in 0 1; do
  for who in ours nginx; do
    l=${who}_${PCTS[$i]}
    echo "| ${RATES[$i]} (${PCTS[$i]}%) | $who | $(mfield $l achieved) | $(mfield $l p50_ms) | $(mfield $l p90_ms) | $(mfield $l p99_ms) | $(mfield $l p999_ms) | $(mfield $l max_ms) | $(mfield $l errors) | $(mfield $l non2xx) | $(rfields $l p99_ms) |"
  done
done
echo
P="tokens=$TOKENS threads=$THREADS pinned=$PIN"
result max_rps "$P" "$OURS_MAX" "$NGINX_MAX" req/s higher
for i in 0 1; do
  for k in p50_ms p99_ms p999_ms; do
    result "${k}_at_${PCTS[$i]}pct" "$P rate=${RATES[$i]}" "$(mfield ours_${PCTS[$i]} $k)" \
      "$(mfield nginx_${PCTS[$i]} $k)" ms lower
  done
done
result serve_ready_s "$P" "$READY_S" NA s lower http
result serve_rss_per_token "tokens=$TOKENS" "$(calc "$SERVE_RSS * 1024 / $TOKENS")" NA B lower memory
result serve_rss_delta_per_token "tokens=$TOKENS" "$(calc "($SERVE_RSS - $EMPTY_RSS) * 1024 / $TOKENS")" NA B lower memory
for f in "$WORK"/lg.*; do grep '^RESULT' "$f"; done

#!/usr/bin/env bash
# tests/gateway_test.sh PATLEDGER — a real gateway in front of patledger (issue 3, "A real
# gateway"). Starts `PATLEDGER serve` on a free port in a temporary data directory, then
# Debian's nginx with `auth_request` to patledger's forward-auth endpoint
# (GET /api/v4/auth), and proves with curl, through nginx:
#   - a valid token passes, and the user it names is forwarded to the application
#     (the upstream answers "hello <username>") and returned in X-User;
#   - the token in `?private_token=` of the original URI passes too (nginx sends the
#     original URI to patledger in X-Original-URI);
#   - a revoked token gets 401 (with WWW-Authenticate error="invalid_token"), an unknown
#     one or none gets 401;
#   - a token lacking the route's scope gets 403, on a route whose scope is sent as the
#     X-Required-Scope header and on one whose scope is in the auth URL's ?scope=;
#   - a token that has the scope (or one implying it) passes those routes.
# nginx and curl are required: if either is missing the test FAILS (it never skips).
# Everything (data, nginx.conf, pid, logs, temp paths) lives in one temporary directory,
# removed on exit together with both servers.
set -euo pipefail

usage="usage: gateway_test.sh PATH/TO/patledger"
patledger="${1:?$usage}"
NGINX="${NGINX:-/usr/sbin/nginx}"

fail() {
  echo "gateway_test: FAIL: $*" >&2
  exit 1
}

[[ -x "$patledger" ]] || fail "$patledger is not an executable; $usage"
if [[ ! -x "$NGINX" ]]; then
  NGINX="$(command -v nginx || true)"
  [[ -n "$NGINX" ]] || fail "nginx is not installed (Debian: apt-get install nginx);" \
    "this test needs it and does not skip"
fi
command -v curl >/dev/null ||
  fail "curl is not installed (Debian: apt-get install curl); this test needs it and does not skip"
"$NGINX" -V 2>&1 | grep -q -- '--with-http_auth_request_module' ||
  fail "$NGINX was built without the auth_request module"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/patledger-gateway-XXXXXX")"
pl_pid=""
nginx_pid=""
cleanup() {
  local code=$?
  if ((code != 0)); then
    echo "--- patledger stderr (last 20 lines)" >&2
    tail -n 20 "$tmp/serve.err" >&2 2>/dev/null || true
    echo "--- nginx error log (last 20 lines)" >&2
    tail -n 20 "$tmp/nginx-error.log" >&2 2>/dev/null || true
  fi
  for pid in $nginx_pid $pl_pid; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $nginx_pid $pl_pid; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
  exit "$code"
}
trap cleanup EXIT
trap 'echo "gateway_test: FAIL: line $LINENO: $BASH_COMMAND exited $?" >&2' ERR
trap 'exit 130' INT TERM

# Direct calls to the servers must not go through a proxy from the environment.
curl_() { curl --noproxy '*' --silent --show-error --max-time 30 "$@"; }

# Waits (up to 60 s, polling) until `$1` succeeds; fails with $2 if it never does.
wait_until() {
  local check="$1" what="$2"
  for _ in $(seq 1 1200); do
    if eval "$check"; then return 0; fi
    sleep 0.05
  done
  fail "timed out waiting for $what"
}

# ---- patledger -----------------------------------------------------------------------

"$patledger" serve --data "$tmp/data" --listen 127.0.0.1:0 --threads 2 \
  --access-log "$tmp/access.log" >"$tmp/serve.out" 2>"$tmp/serve.err" &
pl_pid=$!
wait_until 'grep -q "listening on http://127.0.0.1:" "$tmp/serve.err" ||
            { kill -0 $pl_pid 2>/dev/null || fail "patledger serve exited"; false; }' \
  "patledger to listen"
pl_port="$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$tmp/serve.err")"
[[ -n "$pl_port" ]] || fail "no port in: $(cat "$tmp/serve.err")"
pl="http://127.0.0.1:$pl_port"
wait_until '[[ "$(curl_ -o /dev/null -w "%{http_code}" "$pl/-/readiness" 2>/dev/null)" == 200 ]]' \
  "patledger readiness"
root="$(head -n 1 "$tmp/serve.out")"
[[ "$root" =~ ^glpat-[0-9A-Za-z]{36}$ ]] || fail "no root token on patledger's stdout"

# POST as root; prints the body, fails unless the status is $1.
post() {
  local want="$1" path="$2" body="$3" out code
  out="$(curl_ -w '\n%{http_code}' -H "PRIVATE-TOKEN: $root" \
    -H 'Content-Type: application/json' --data "$body" "$pl/api/v4$path")"
  code="${out##*$'\n'}"
  [[ "$code" == "$want" ]] || fail "POST $path: $code, expected $want: ${out%$'\n'*}"
  printf '%s' "${out%$'\n'*}"
}
json_id() { grep -o '"id":[0-9]*' | head -n 1 | cut -d: -f2; }
json_token() { grep -o '"token":"glpat-[0-9A-Za-z]*"' | cut -d'"' -f4; }

alice="$(post 201 /users '{"username":"alice","name":"Alice","email":"alice@example.com"}' | json_id)"
new_token() {  # name, scopes (JSON array)
  post 201 "/users/$alice/personal_access_tokens" "{\"name\":\"$1\",\"scopes\":$2}" | json_token
}
reader="$(new_token reader '["read_user"]')"       # enough for /app/, not for the others
writer="$(new_token writer '["api"]')"             # api implies read_api
revoked="$(new_token leaked '["api"]')"
revoked_id="$(curl_ -H "PRIVATE-TOKEN: $revoked" "$pl/api/v4/personal_access_tokens/self" | json_id)"
[[ -n "$reader" && -n "$writer" && -n "$revoked" && -n "$revoked_id" ]] ||
  fail "could not create the tokens"
[[ "$(curl_ -o /dev/null -w '%{http_code}' -X DELETE -H "PRIVATE-TOKEN: $root" \
  "$pl/api/v4/personal_access_tokens/$revoked_id")" == 204 ]] || fail "could not revoke"

# ---- nginx ---------------------------------------------------------------------------

# The application behind the gateway is a second nginx server on a Unix socket: it
# answers with the user the gateway forwarded to it in X-Auth-Username.
write_conf() {  # port
  local user_line=""
  # As root, nginx switches its workers to "nobody", which could not reach the sockets
  # in our 0700 temporary directory: keep them root (a test-only instance).
  [[ "$(id -u)" == 0 ]] && user_line="user root;"
  cat >"$tmp/nginx.conf" <<EOF
$user_line
daemon off;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log info;
events { worker_connections 64; }
http {
  access_log $tmp/nginx-access.log;
  client_body_temp_path $tmp/nginx-client-body;
  proxy_temp_path $tmp/nginx-proxy;
  fastcgi_temp_path $tmp/nginx-fastcgi;
  uwsgi_temp_path $tmp/nginx-uwsgi;
  scgi_temp_path $tmp/nginx-scgi;

  server {  # the protected application
    listen unix:$tmp/app.sock;
    location / { return 200 "hello \$http_x_auth_username\n"; }
  }

  server {  # the gateway
    listen 127.0.0.1:$1;
    location = /-/gateway { return 200 "up\n"; }

    # Any valid token.
    location /app/ {
      auth_request /_auth;
      auth_request_set \$user \$upstream_http_x_auth_username;
      auth_request_set \$auth_challenge \$upstream_http_www_authenticate;
      add_header X-User \$user always;
      add_header WWW-Authenticate \$auth_challenge always;
      proxy_set_header X-Auth-Username \$user;
      proxy_pass http://unix:$tmp/app.sock:;
    }
    # Needs scope api, sent in the X-Required-Scope header.
    location /admin/ {
      auth_request /_auth_api;
      auth_request_set \$user \$upstream_http_x_auth_username;
      add_header X-User \$user always;
      proxy_set_header X-Auth-Username \$user;
      proxy_pass http://unix:$tmp/app.sock:;
    }
    # Needs scope read_api, sent as ?scope= of the auth URL.
    location /reports/ {
      auth_request /_auth_read_api;
      auth_request_set \$user \$upstream_http_x_auth_username;
      add_header X-User \$user always;
      proxy_set_header X-Auth-Username \$user;
      proxy_pass http://unix:$tmp/app.sock:;
    }

    location = /_auth {
      internal;
      proxy_pass http://127.0.0.1:$pl_port/api/v4/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI \$request_uri;
      proxy_set_header PRIVATE-TOKEN \$http_private_token;
    }
    location = /_auth_api {
      internal;
      proxy_pass http://127.0.0.1:$pl_port/api/v4/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI \$request_uri;
      proxy_set_header PRIVATE-TOKEN \$http_private_token;
      proxy_set_header X-Required-Scope api;
    }
    location = /_auth_read_api {
      internal;
      proxy_pass http://127.0.0.1:$pl_port/api/v4/auth?scope=read_api;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI \$request_uri;
      proxy_set_header PRIVATE-TOKEN \$http_private_token;
    }
  }
}
EOF
}

# A free port: pick one nobody listens on, start nginx there; if another process took
# it first (nginx: "Address already in use"), try another.
gw=""
for _ in $(seq 1 20); do
  port=$((20000 + RANDOM % 40000))
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi  # in use
  write_conf "$port"
  rm -f "$tmp/app.sock"
  : >"$tmp/nginx-error.log"
  "$NGINX" -c "$tmp/nginx.conf" -p "$tmp" -e "$tmp/nginx-error.log" &
  nginx_pid=$!
  for _ in $(seq 1 1200); do
    if [[ "$(curl_ -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/-/gateway" \
      2>/dev/null)" == 200 ]]; then
      gw="http://127.0.0.1:$port"
      break
    fi
    kill -0 "$nginx_pid" 2>/dev/null || break
    sleep 0.05
  done
  [[ -n "$gw" ]] && break
  kill -TERM "$nginx_pid" 2>/dev/null || true
  wait "$nginx_pid" 2>/dev/null || true
  nginx_pid=""
  grep -q "Address already in use" "$tmp/nginx-error.log" ||
    fail "nginx did not start: $(cat "$tmp/nginx-error.log")"
done
[[ -n "$gw" ]] || fail "found no free port for nginx"

# ---- the checks ----------------------------------------------------------------------

passed=0
# expect STATUS BODY DESCRIPTION CURL-ARGS...: BODY "" means any body. Leaves the response
# headers in $tmp/h.
expect() {
  local want="$1" want_body="$2" what="$3" code body
  shift 3
  body="$(curl_ -D "$tmp/h" -o - -w '\n%{http_code}' "$@")" ||
    fail "$what: curl failed"
  code="${body##*$'\n'}"
  body="${body%$'\n'*}"
  body="${body%$'\n'}"  # the application's body ends with a newline
  if [[ "$code" != "$want" ]]; then
    fail "$what: status $code, expected $want; headers:"$'\n'"$(cat "$tmp/h")"
  fi
  if [[ -n "$want_body" && "$body" != "$want_body" ]]; then
    fail "$what: body '$body', expected '$want_body'"
  fi
  passed=$((passed + 1))
  echo "ok - $what ($code)"
}
header() { grep -i "^$1:" "$tmp/h" | head -n 1 | cut -d: -f2- | tr -d '\r' | sed 's/^ //'; }
expect_header() {  # name value description
  [[ "$(header "$1")" == "$2" ]] || fail "$3: $1 is '$(header "$1")', expected '$2'"
  passed=$((passed + 1))
  echo "ok - $3"
}

expect 200 "hello alice" "a valid token (PRIVATE-TOKEN) passes /app/" \
  -H "PRIVATE-TOKEN: $reader" "$gw/app/page"
expect_header X-User alice "the user is forwarded (X-User: alice)"
expect 200 "hello alice" "a token in ?private_token= of the original URI passes /app/" \
  "$gw/app/page?x=1&private_token=$reader"
expect 200 "hello alice" "a Bearer token passes /app/" \
  -H "Authorization: Bearer $reader" "$gw/app/page"
expect 401 "" "a revoked token gets 401 on /app/" -H "PRIVATE-TOKEN: $revoked" "$gw/app/page"
header WWW-Authenticate | grep -q 'error="invalid_token"' ||
  fail "the 401 for a revoked token lacks WWW-Authenticate error=\"invalid_token\""
[[ -z "$(header X-User)" ]] || fail "a revoked token was named as a user"
passed=$((passed + 1))
echo "ok - the revoked token's 401 carries WWW-Authenticate error=\"invalid_token\""
expect 401 "" "a revoked token in ?private_token= gets 401" \
  "$gw/app/page?private_token=$revoked"
expect 401 "" "no token gets 401" "$gw/app/page"
expect 401 "" "an unknown token gets 401" \
  -H "PRIVATE-TOKEN: glpat-000000000000000000000000000000000000" "$gw/app/page"
expect 403 "" "a token lacking scope api gets 403 on /admin/ (X-Required-Scope)" \
  -H "PRIVATE-TOKEN: $reader" "$gw/admin/panel"
expect 200 "hello alice" "a token with scope api passes /admin/" \
  -H "PRIVATE-TOKEN: $writer" "$gw/admin/panel"
expect 401 "" "a revoked api token gets 401 on /admin/" \
  -H "PRIVATE-TOKEN: $revoked" "$gw/admin/panel"
expect 401 "" "no token gets 401 on /admin/" "$gw/admin/panel"
expect 403 "" "a token lacking scope read_api gets 403 on /reports/ (?scope=)" \
  -H "PRIVATE-TOKEN: $reader" "$gw/reports/q"
expect 200 "hello alice" "an api token (implies read_api) passes /reports/" \
  "$gw/reports/q?private_token=$writer"

# Neither server logged a token (nginx logs the original URI; patledger must not).
for t in "$root" "$reader" "$writer" "$revoked"; do
  if grep -qF "$t" "$tmp/access.log"; then fail "a token is in patledger's access log"; fi
done
passed=$((passed + 1))
echo "ok - no token in patledger's access log"

echo "gateway_test: all $passed checks passed (nginx $("$NGINX" -v 2>&1 | sed 's|.*/||')" \
  "on 127.0.0.1:${gw##*:} -> patledger on 127.0.0.1:$pl_port)"

#!/usr/bin/env bash
# Loopgate benchmark: the gateway against nginx and a bare pingora proxy, and its cost
# per auth mode, as ratios measured in one run.
#
# Starts on loopback, each in its own process so that CPU is counted per server:
#   upstream     nginx (1 worker) answering "ok"; on /app and /api it answers 401
#                unless the request carries one of the Bearer tokens the gateways
#                inject, so every counted 2xx really came through with the right token
#   nginx        nginx as a plain reverse proxy (2 workers, upstream keep-alive)
#   bare         the smallest pingora proxy (examples/bare_proxy.rs, 2 threads) with the
#                allocator and listener buffering Loopgate uses, so Loopgate / bare is
#                Loopgate's own work
#   bare_stock   the same with glibc malloc and pingora's default buffering
#                (examples/bare_proxy_stock.rs): pingora's floor before any tuning
#   the stack    Loopgate (2 threads; emulators in the same process, idle while
#                measured), a second Loopgate keeping sessions in a local redis-server,
#                one whose school issues large tokens (a 3-chunk session cookie) and
#                three whose `public` route sits among 1, 100 and 1 000 routes
# then measures with wrk, interleaved over ROUNDS rounds:
#   direct       the upstream itself (the physical limit)
#   nginx, bare  the baselines
#   public       a `public` route (Loopgate as a plain proxy)
#   login        a `login` route with a valid session cookie (cookie store)
#   login_redis  the same with `session.store = "redis"`
#   api          an `api` route with a cached Bearer token
#   routes_N     `public` with N routes configured (growth: matching is per path
#                segment, not per route)
#   login_big    `login` with a session cookie of three chunks
# For each: req/s, p50/p99, server CPU µs per request (utime + stime of the measured
# process(es) from /proc, over the requests wrk counted) and RSS. Then: `login_redis`
# again with SESSIONS more sessions in Redis (interleaved with `public`); the RSS after
# caching FILL distinct Bearer tokens, and moka's own floor per entry
# (examples/moka_floor.rs); the RSS per idle keep-alive connection with IDLE of them open
# (examples/idle_conns.rs) on Loopgate, bare, bare_stock and nginx. Results go to stdout
# and bench/RESULTS.md, with the command that produced them.
#
# Then curves: throughput and p99 against concurrency (CURVE_CONNS) for nginx, bare
# pingora and each Loopgate mode, CURVE_DURATION each, drawn with gnuplot into
# docs/bench-throughput.svg and docs/bench-p99.svg (data in bench/curves.tsv).
#
# Usage: bench/run.sh            env: ROUNDS=3 DURATION=5s CONNS=32 FILL=100000 THREADS=2
#                                     SESSIONS=100000 IDLE=10000
#                                     CURVE_CONNS="1 8 32 128 512" CURVE_DURATION=3s
# (THREADS: worker threads of Loopgate and of the bare pingora proxy)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-32}
FILL=${FILL:-100000}
SESSIONS=${SESSIONS:-100000}
IDLE=${IDLE:-10000}
THREADS=${THREADS:-2}
CURVE_CONNS=${CURVE_CONNS:-1 8 32 128 512}
CURVE_DURATION=${CURVE_DURATION:-3s}

scripts/ensure-deps build
# 512 connections through a proxy hold over 1 024 descriptors; IDLE idle ones, IDLE.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
need() { # command, Debian package
  command -v "$1" >/dev/null 2>&1 && return
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  else
    echo "bench: $1 is missing; run: sudo apt-get install -y $2" >&2
    exit 1
  fi
}
need wrk wrk
need redis-server redis-server
need nginx nginx
need gnuplot gnuplot-nox

cargo build --release --locked --example bench_stack --example bare_proxy \
  --example bare_proxy_stock --example idle_conns --example moka_floor
bin="${CARGO_TARGET_DIR:-target}/release/examples"
tmp=$(mktemp -d)
pids=()
cleanup() {
  # nginx and redis stop at once on SIGTERM; a pingora server drains for up to its
  # graceful-shutdown timeout (minutes), not worth waiting for once the measurements are
  # taken: what is still running after 2 s gets SIGKILL.
  local pid alive
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 20); do
    alive=
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
port() { echo $(( 20000 + RANDOM % 20000 )); }
wait_port() { # port, what
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
    sleep 0.1
  done
  echo "bench: $2 did not start" >&2
  exit 1
}

# nginx <name> <workers> <server block>: an nginx of its own under $tmp/<name>.
nginx_run() {
  local dir="$tmp/$1"
  mkdir -p "$dir/logs"
  cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes $2;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_requests 1000000;
  # The upstream's map keys are whole Authorization headers (JWTs).
  map_hash_bucket_size 2048;
  $3
}
EOF
  nginx -p "$dir" -c "$dir/nginx.conf" &
  pids+=($!)
}

up_port=$(port)
echo 'map $http_authorization $bearer_ok { default 0; }' >"$tmp/bearers.conf"
nginx_run upstream 1 "
  include $tmp/bearers.conf;
  server {
    listen 127.0.0.1:$up_port;
    location ~ /echo-auth\$ { return 200 \"\$http_authorization\"; }
    location = /app/x { if (\$bearer_ok = 0) { return 401; } return 200 \"ok\n\"; }
    location = /api/x { if (\$bearer_ok = 0) { return 401; } return 200 \"ok\n\"; }
    location / { return 200 \"ok\n\"; }
  }"
up_pid=${pids[-1]}
wait_port "$up_port" "the upstream nginx"

nginx_port=$(port)
nginx_run proxy 2 "
  upstream backend { server 127.0.0.1:$up_port; keepalive 64; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }"
nginx_pid=${pids[-1]}
wait_port "$nginx_port" "the nginx proxy"

bare_port=$(port)
"$bin/bare_proxy" --listen "127.0.0.1:$bare_port" --upstream "127.0.0.1:$up_port" --threads "$THREADS" 2>"$tmp/bare.log" &
pids+=($!)
bare_pid=$!
wait_port "$bare_port" "the bare pingora proxy"

stock_port=$(port)
"$bin/bare_proxy_stock" --listen "127.0.0.1:$stock_port" --upstream "127.0.0.1:$up_port" --threads "$THREADS" 2>"$tmp/stock.log" &
pids+=($!)
stock_pid=$!
wait_port "$stock_port" "the stock pingora proxy"

redis_port=$(port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 &
pids+=($!)
wait_port "$redis_port" "redis-server"

RUST_LOG=warn "$bin/bench_stack" --env "$tmp/env" --redis "redis://127.0.0.1:$redis_port/0" \
  --upstream "127.0.0.1:$up_port" --threads "$THREADS" 2>"$tmp/stack.log" &
pids+=($!)
stack_pid=$!
for _ in $(seq 1 300); do
  [ -s "$tmp/env" ] && break
  kill -0 "$stack_pid" 2>/dev/null || { cat "$tmp/stack.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$tmp/env" ] || { echo "bench: the stack did not start" >&2; cat "$tmp/stack.log" >&2; exit 1; }
# shellcheck disable=SC1091
. "$tmp/env"

# The upstream accepts exactly the Bearer tokens the gateways inject: the session's
# (learned through each gateway) and the API client's.
login_bearer=$(curl -fsS -H "Cookie: $SESSION_COOKIE" "$GATEWAY/app/echo-auth")
redis_bearer=$(curl -fsS -H "Cookie: $REDIS_SESSION_COOKIE" "$GATEWAY_REDIS/app/echo-auth")
big_bearer=$(curl -fsS -H "Cookie: $BIG_SESSION_COOKIE" "$GATEWAY_BIG/app/echo-auth")
{
  echo 'map $http_authorization $bearer_ok {'
  echo '  default 0;'
  for b in "$login_bearer" "$redis_bearer" "Bearer $BEARER"; do
    echo "  \"$b\" 1;"
  done
  # nginx takes no config word over 4 KB: the large token by its signature (an HMAC of
  # the rest, so it names the token as surely).
  echo "  \"~^Bearer [A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.${big_bearer##*.}\$\" 1;"
  echo '}'
} >"$tmp/bearers.conf"
kill -HUP "$up_pid"
checked=
for _ in $(seq 1 100); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $SESSION_COOKIE" "$GATEWAY/app/x")" = 200 ] &&
     [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BEARER" "$GATEWAY/api/x")" = 200 ] &&
     [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $BIG_SESSION_COOKIE" "$GATEWAY_BIG/app/x")" = 200 ]; then
    checked=1
    break
  fi
  sleep 0.1
done
[ -n "$checked" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$up_port/api/x")" = 401 ] \
  || { echo "bench: the upstream's Bearer check is not in place" >&2; cat "$tmp/upstream/logs/error.log" >&2; exit 1; }

CLK_TCK=$(getconf CLK_TCK)
# The process and its children (nginx workers).
family() { echo "$1"; pgrep -P "$1" || true; }
ticks() { # pids...: utime + stime
  local t=0 p f
  for p in "$@"; do
    f=$(cut -d')' -f2 "/proc/$p/stat" 2>/dev/null) || continue
    # After "comm)": field 3 is state, so utime/stime (14, 15) are words 12 and 13.
    t=$(( t + $(echo "$f" | awk '{ print $12 + $13 }') ))
  done
  echo "$t"
}
rss_kib() { # pids...
  local r=0 p
  for p in "$@"; do
    r=$(( r + $(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0) ))
  done
  echo "$r"
}

# wrk once against target $1 (url $2, measured pids in ${procs[$1]}); prints
# "<req/s> <p50 ms> <p99 ms> <non-2xx> <cpu µs/req> <rss KiB>".
measure() {
  local t=$1 url=$2; shift 2
  # shellcheck disable=SC2086
  local who=$(family ${procs[$t]})
  # shellcheck disable=SC2086
  local before=$(ticks $who)
  wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$@" "$url" >"$tmp/wrk.txt"
  # shellcheck disable=SC2086
  local after=$(ticks $who) rss=$(rss_kib $who)
  awk -v dt=$(( after - before )) -v hz="$CLK_TCK" -v rss="$rss" '
    function ms(v,  u) { u = v; sub(/[a-z]+$/, "", v); sub(/^[0-9.]+/, "", u);
                         return (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : v }
    /Requests\/sec:/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    / requests in / { n = $1 }
    /Non-2xx or 3xx responses:/ { bad = $NF }
    END { printf "%s %.3f %.3f %d %.1f %d\n", rps, p50, p99, bad + 0, (n > 0 ? dt / hz * 1e6 / n : 0), rss }' "$tmp/wrk.txt"
}

targets=(direct nginx bare_stock bare public login login_redis api routes_1 routes_100 routes_1000 login_big)
declare -A url=(
  [direct]="http://127.0.0.1:$up_port/x" [nginx]="http://127.0.0.1:$nginx_port/x"
  [bare]="http://127.0.0.1:$bare_port/x" [bare_stock]="http://127.0.0.1:$stock_port/x"
  [public]="$GATEWAY/public/x" [login]="$GATEWAY/app/x"
  [login_redis]="$GATEWAY_REDIS/app/x" [api]="$GATEWAY/api/x"
  [routes_1]="$GATEWAY_ROUTES_1/public/x" [routes_100]="$GATEWAY_ROUTES_100/public/x"
  [routes_1000]="$GATEWAY_ROUTES_1000/public/x" [login_big]="$GATEWAY_BIG/app/x"
  [login_redis_filled]="$GATEWAY_REDIS/app/x"
)
declare -A procs=(
  [direct]="$up_pid" [nginx]="$nginx_pid" [bare]="$bare_pid" [bare_stock]="$stock_pid"
  [public]="$stack_pid" [login]="$stack_pid" [login_redis]="$stack_pid" [api]="$stack_pid"
  [routes_1]="$stack_pid" [routes_100]="$stack_pid" [routes_1000]="$stack_pid"
  [login_big]="$stack_pid" [login_redis_filled]="$stack_pid"
)
declare -A header=(
  [login]="Cookie: $SESSION_COOKIE" [login_redis]="Cookie: $REDIS_SESSION_COOKIE"
  [login_redis_filled]="Cookie: $REDIS_SESSION_COOKIE"
  [api]="Authorization: Bearer $BEARER" [login_big]="Cookie: $BIG_SESSION_COOKIE"
)
run() { # target
  if [ -n "${header[$1]:-}" ]; then measure "$1" "${url[$1]}" -H "${header[$1]}"; else measure "$1" "${url[$1]}"; fi
}
declare -A rps_sum p50_sum p99_sum bad_sum cpu_sum rss_max
for t in "${targets[@]}" login_redis_filled public_filled; do rps_sum[$t]=0; p50_sum[$t]=0; p99_sum[$t]=0; bad_sum[$t]=0; cpu_sum[$t]=0; rss_max[$t]=0; done
# Adds one measurement of target $1 to the sums of $2 (default: $1).
record() {
  local t=$1 as=${2:-$1} rps p50 p99 bad cpu rss
  read -r rps p50 p99 bad cpu rss <<<"$(run "$t")"
  echo "round $round  $as  ${rps} req/s  p50 ${p50} ms  p99 ${p99} ms  ${cpu} µs CPU/req  non-2xx ${bad}"
  rps_sum[$as]=$(awk -v a="${rps_sum[$as]}" -v b="$rps" 'BEGIN { print a + b }')
  p50_sum[$as]=$(awk -v a="${p50_sum[$as]}" -v b="$p50" 'BEGIN { print a + b }')
  p99_sum[$as]=$(awk -v a="${p99_sum[$as]}" -v b="$p99" 'BEGIN { print a + b }')
  cpu_sum[$as]=$(awk -v a="${cpu_sum[$as]}" -v b="$cpu" 'BEGIN { print a + b }')
  bad_sum[$as]=$(( ${bad_sum[$as]} + bad ))
  [ "$rss" -gt "${rss_max[$as]}" ] && rss_max[$as]=$rss
  return 0
}

# Warm-up (connections, caches), not recorded.
for t in nginx bare bare_stock login login_redis api login_big; do run "$t" >/dev/null; done

for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order each round so no target always runs first or last.
  for i in "${!targets[@]}"; do
    record "${targets[$(( (i + round) % ${#targets[@]} ))]}"
  done
done

# Growth: SESSIONS more sessions in Redis (copies of a real one under other ids, with
# its TTL), then `login_redis` again, interleaved with `public` as the reference.
redis_cli() { redis-cli -p "$redis_port" "$@"; }
redis_commands=$(redis_cli info commandstats | awk -F'[=,:]' '/^cmdstat_/ { n += $3 } END { print n + 0 }')
redis_before=$(redis_cli info memory | awk -F: '/^used_memory:/ { print $2 + 0 }')
sample=$(redis_cli --scan --pattern 'bench:session:*' | head -1)
for (( from = 1; from <= SESSIONS; from += 10000 )); do
  to=$(( from + 9999 > SESSIONS ? SESSIONS : from + 9999 ))
  redis_cli eval "local v = redis.call('GET', KEYS[1]) local ttl = redis.call('TTL', KEYS[1])
    for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do redis.call('SET', 'bench:session:filler-' .. i, v, 'EX', ttl) end
    return 1" 1 "$sample" "$from" "$to" >/dev/null
done
redis_keys=$(redis_cli dbsize)
redis_after=$(redis_cli info memory | awk -F: '/^used_memory:/ { print $2 + 0 }')
for round in $(seq 1 "$ROUNDS"); do
  record login_redis login_redis_filled
  record public public_filled
done

fill=$(curl -s -X POST "$CONTROL/fill?n=$FILL")
rss_before=$(printf %s "$fill" | sed -n 's/.*"rss_before_kib":\([0-9]*\).*/\1/p')
rss_after=$(printf %s "$fill" | sed -n 's/.*"rss_after_kib":\([0-9]*\).*/\1/p')
fill_ok=$(printf %s "$fill" | sed -n 's/.*"ok":\([0-9]*\).*/\1/p')
read -r _ moka_floor <<<"$("$bin/moka_floor" "$FILL")"

# Idle keep-alive connections: IDLE of them, each after one answered request, held open
# by a client process of its own; the server's RSS growth per connection.
idle_per_conn() { # pids, host:port, path
  local before after fifo="$tmp/idle.fifo" out="$tmp/idle.out"
  # shellcheck disable=SC2086
  before=$(rss_kib $1)
  rm -f "$fifo" "$out"; mkfifo "$fifo"
  "$bin/idle_conns" --addr "$2" --path "$3" --n "$IDLE" <"$fifo" >"$out" 2>&1 &
  local client=$!
  exec 9>"$fifo"
  for _ in $(seq 1 600); do
    grep -q '^open' "$out" 2>/dev/null && break
    kill -0 "$client" 2>/dev/null || break
    sleep 0.1
  done
  # shellcheck disable=SC2086
  after=$(rss_kib $1)
  grep -q '^open' "$out" || { echo "bench: idle connections to $2 failed: $(cat "$out")" >&2; exec 9>&-; exit 1; }
  exec 9>&-
  wait "$client" 2>/dev/null || true
  echo $(( (after - before) * 1024 / IDLE ))
}
declare -A idle
idle[public]=$(idle_per_conn "$stack_pid" "${GATEWAY#http://}" /public/x)
idle[bare]=$(idle_per_conn "$bare_pid" "127.0.0.1:$bare_port" /x)
idle[bare_stock]=$(idle_per_conn "$stock_pid" "127.0.0.1:$stock_port" /x)
# shellcheck disable=SC2046
idle[nginx]=$(idle_per_conn "$(family "$nginx_pid" | tr '\n' ' ')" "127.0.0.1:$nginx_port" /x)

# (After the fill: the curves' 512 connections would leave the allocator holding memory
# that the fill's RSS difference must not see.)
# Curves: each target at each concurrency (one measurement each, interleaved by target).
curve_targets=(nginx bare public login login_redis api)
printf 'conns' >bench/curves.tsv
for t in "${curve_targets[@]}"; do printf '\t%s_rps\t%s_p99' "$t" "$t" >>bench/curves.tsv; done
echo >>bench/curves.tsv
for c in $CURVE_CONNS; do
  printf '%s' "$c" >>bench/curves.tsv
  for t in "${curve_targets[@]}"; do
    read -r rps _ p99 bad _ _ <<<"$(CONNS=$c DURATION=$CURVE_DURATION run "$t")"
    echo "curve  $c conns  $t  ${rps} req/s  p99 ${p99} ms  non-2xx ${bad}"
    printf '\t%s\t%s' "$rps" "$p99" >>bench/curves.tsv
  done
  echo >>bench/curves.tsv
done
plot() { # file, title, ylabel, column offset (1: req/s, 2: p99)
  local series="" i=0
  for t in "${curve_targets[@]}"; do
    series="$series${series:+, }'bench/curves.tsv' using 1:$(( 2 + 2 * i + $4 - 1 )) with linespoints title '$t'"
    i=$(( i + 1 ))
  done
  gnuplot <<GNUPLOT
set terminal svg size 800,480 dynamic font 'sans,12'
set output '$1'
set title '$2'
set xlabel 'concurrent connections (wrk -t1)'
set ylabel '$3'
set logscale x 2
set key outside right
set grid
plot $series
GNUPLOT
}
plot docs/bench-throughput.svg "Throughput against concurrency ($(nproc) CPUs, loopback)" "requests / s" 1
plot docs/bench-p99.svg "p99 latency against concurrency ($(nproc) CPUs, loopback)" "p99 (ms)" 2


mean() { awk -v s="$1" -v n="$ROUNDS" 'BEGIN { print s / n }'; }
declare -A rps p50 p99 cpu
for t in "${targets[@]}" login_redis_filled public_filled; do
  rps[$t]=$(mean "${rps_sum[$t]}"); p50[$t]=$(mean "${p50_sum[$t]}")
  p99[$t]=$(mean "${p99_sum[$t]}"); cpu[$t]=$(mean "${cpu_sum[$t]}")
done
table="| target | req/s | p50 ms | p99 ms | CPU µs/req | RSS MiB | vs bare: req/s | vs bare: CPU | vs bare: p99 Δ ms | non-2xx |
|---|---|---|---|---|---|---|---|---|---|"
for t in "${targets[@]}"; do
  row=$(awk -v t="$t" -v r="${rps[$t]}" -v a="${p50[$t]}" -v q="${p99[$t]}" -v c="${cpu[$t]}" -v m="${rss_max[$t]}" \
    -v br="${rps[bare]}" -v bc="${cpu[bare]}" -v bq="${p99[bare]}" -v bad="${bad_sum[$t]}" \
    'BEGIN { printf "| %s | %.0f | %.3f | %.3f | %.1f | %.0f | %.3f× | %.3f× | %+.3f | %d |", t, r, a, q, c, m / 1024, r / br, c / bc, q - bq, bad }')
  table="$table
$row"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
f1() { awk -v a="$1" 'BEGIN { printf "%.1f", a }'; }
kib() { awk -v a="$1" 'BEGIN { printf "%.1f", a / 1024 }'; }
ratios="- pingora's floor, lowered: bare (mimalloc, no listener read buffer) / bare_stock: CPU per request $(ratio "${cpu[bare]}" "${cpu[bare_stock]}")×, throughput $(ratio "${rps[bare]}" "${rps[bare_stock]}")×.
- Loopgate \`public\` / bare pingora: CPU per request $(ratio "${cpu[public]}" "${cpu[bare]}")× (target ≤ 1.10×), throughput $(ratio "${rps[public]}" "${rps[bare]}")×.
- Auth modes / \`public\`, CPU per request: \`login\` $(ratio "${cpu[login]}" "${cpu[public]}")×, \`login_redis\` $(ratio "${cpu[login_redis]}" "${cpu[public]}")×, \`api\` $(ratio "${cpu[api]}" "${cpu[public]}")×; vs bare pingora: \`login\` $(ratio "${cpu[login]}" "${cpu[bare]}")×, \`api\` $(ratio "${cpu[api]}" "${cpu[bare]}")× (target ≤ 1.25×).
- Loopgate / nginx throughput: \`public\` $(ratio "${rps[public]}" "${rps[nginx]}")× (moonshot ≥ 0.6×), \`login\` $(ratio "${rps[login]}" "${rps[nginx]}")×, \`api\` $(ratio "${rps[api]}" "${rps[nginx]}")×; bare pingora / nginx $(ratio "${rps[bare]}" "${rps[nginx]}")×.
- Redis store: \`login_redis\` / \`login\` throughput $(ratio "${rps[login_redis]}" "${rps[login]}")× (target ≥ 0.85×); Redis served $redis_commands commands over the rounds (a replica asks Redis about a session it opened at most every 0.5 s, or 30 s while it hears the replicas' announcements; never per request)."
growth="- Routes (\`public\` among N routes), CPU per request: 1 route $(f1 "${cpu[routes_1]}") µs, 100 routes $(f1 "${cpu[routes_100]}") µs ($(ratio "${cpu[routes_100]}" "${cpu[routes_1]}")×), 1 000 routes $(f1 "${cpu[routes_1000]}") µs ($(ratio "${cpu[routes_1000]}" "${cpu[routes_1]}")×).
- A session cookie of 3 chunks (\`login_big\`, the school's access tokens carry $(( ${#big_bearer} / 1000 )) KB): $(f1 "${cpu[login_big]}") µs per request, $(ratio "${cpu[login_big]}" "${cpu[login]}")× \`login\` (the whole token is also injected upstream).
- $SESSIONS more sessions in Redis ($redis_keys keys, +$(( (redis_after - redis_before) / 1048576 )) MiB of Redis memory): \`login_redis\` $(f1 "${cpu[login_redis_filled]}") µs per request, against $(f1 "${cpu[public_filled]}") µs for \`public\` measured alongside ($(ratio "${cpu[login_redis_filled]}" "${cpu[public_filled]}")×; before the fill $(ratio "${cpu[login_redis]}" "${cpu[public]}")×)."
idle_line="RSS per idle keep-alive connection ($IDLE open, each after one answered request): Loopgate $(kib "${idle[public]}") KiB, bare pingora $(kib "${idle[bare]}") KiB, stock pingora $(kib "${idle[bare_stock]}") KiB, nginx $(kib "${idle[nginx]}") KiB (target ≤ 16 KB)."
rss_line="RSS of the stack process (the gateways and emulators): $(( rss_before / 1024 )) MiB before, $(( rss_after / 1024 )) MiB after caching $fill_ok distinct Bearer tokens: +$(( (rss_after - rss_before) / 1024 )) MiB, $(awk -v a="$rss_before" -v b="$rss_after" -v n="$fill_ok" 'BEGIN { printf "%.0f", (b - a) * 1024 / (n > 0 ? n : 1) }') bytes per cached validation (target ≤ 300); moka alone, with nothing cached but a 32-byte key, costs $moka_floor bytes per entry (\`examples/moka_floor.rs\`)."

echo
echo "$table"
echo
echo "$ratios"
echo
echo "$growth"
echo
echo "$rss_line"
echo
echo "$idle_line"

cmd="ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS FILL=$FILL THREADS=$THREADS SESSIONS=$SESSIONS IDLE=$IDLE CURVE_CONNS=\"$CURVE_CONNS\" CURVE_DURATION=$CURVE_DURATION bench/run.sh"
{
  echo "# Benchmark results"
  echo
  echo "Produced by \`$cmd\` on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(uname -sm)),"
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nginx -v 2>&1 | sed 's/^nginx version: //'). wrk: 1 thread, $CONNS connections,"
  echo "$DURATION per measurement; targets interleaved over $ROUNDS rounds (means; RSS: the largest seen);"
  echo "everything on loopback, sharing the same CPUs (load generator, servers, upstream)."
  echo
  echo "$table"
  echo
  echo "$ratios"
  echo
  echo "Growth:"
  echo
  echo "$growth"
  echo
  echo "Memory: $rss_line"
  echo
  echo "$idle_line"
  echo
  echo "Curves (\`CURVE_CONNS=\"$CURVE_CONNS\" CURVE_DURATION=$CURVE_DURATION\`, one measurement per point; data in"
  echo "[\`curves.tsv\`](curves.tsv)):"
  echo
  echo "![throughput against concurrency](../docs/bench-throughput.svg)"
  echo
  echo "![p99 against concurrency](../docs/bench-p99.svg)"
  echo
  echo "How to read it: \`direct\` is the upstream nginx itself, the physical limit; \`nginx\` is"
  echo "nginx as a plain reverse proxy (2 workers, upstream keep-alive) and \`bare\` the smallest"
  echo "pingora proxy (\`examples/bare_proxy.rs\`, same pingora and thread count as Loopgate,"
  echo "$THREADS, and Loopgate's two floor-lowering settings: mimalloc and no listener read"
  echo "buffer): pingora's own floor, so \`public\` / \`bare\` is Loopgate's own work."
  echo "\`bare_stock\` is the same proxy as stock pingora (glibc malloc, pingora's 64 KB read"
  echo "buffer per connection). \`public\` is Loopgate as a plain proxy; \`login\` opens and checks"
  echo "the sealed session cookie (AES-256-GCM) and injects the Bearer and identity headers;"
  echo "\`login_redis\` does the same with the session kept in Redis (the cookie holds an id and"
  echo "a key); \`api\` hashes the client's token (SHA-256) and serves its validation from the"
  echo "moka cache; \`routes_N\` is \`public\` among N routes; \`login_big\` is \`login\` with a"
  echo "session of three cookie chunks. CPU per request is utime + stime of the measured"
  echo "server's processes (for Loopgate the stack process, whose other gateways and emulators"
  echo "are idle meanwhile) over the requests wrk"
  echo "counted. The upstream answers 401 on \`/app\` and \`/api\` without the expected Bearer, so"
  echo "every counted 2xx came through with the right token. A refresh storm across replicas"
  echo "costs one Loopwise call (tests/replicas.rs). The bench stack validates Bearer tokens"
  echo "locally (\`loopwise.jwt_secret\`), so filling the cache with $FILL tokens needs no"
  echo "Loopwise round-trips."
} > bench/RESULTS.md
echo
echo "written to bench/RESULTS.md"

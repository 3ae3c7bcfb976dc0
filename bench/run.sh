#!/usr/bin/env bash
# Loopgate benchmark: the gateway's cost per auth mode, as ratios measured in one run.
#
# Starts the bench stack (emulator + fast upstream + gateway, release build) on loopback,
# then measures with wrk, interleaved over ROUNDS rounds:
#   direct  the upstream itself
#   public  a `public` route (the gateway as a plain proxy: the floor)
#   login   a `login` route with a valid session cookie (cookie store)
#   login_redis  the same with `session.store = "redis"` (a second gateway, on a local
#           redis-server started here)
#   api     an `api` route with a cached Bearer token
# and finally the RSS after caching FILL distinct Bearer tokens.
# Results go to stdout and bench/RESULTS.md (with the command that produced them).
#
# Usage: bench/run.sh            env: ROUNDS=3 DURATION=5s CONNS=32 FILL=100000
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-32}
FILL=${FILL:-100000}

scripts/ensure-deps build
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "bench: wrk is missing; run: sudo apt-get install -y wrk" >&2
    exit 1
  fi
fi

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "bench: redis-server is missing; run: sudo apt-get install -y redis-server" >&2
    exit 1
  fi
fi

cargo build --release --locked --example bench_stack
tmp=$(mktemp -d)
stack_pid=
redis_pid=
cleanup() {
  for pid in $stack_pid $redis_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
redis_port=$(( 20000 + RANDOM % 20000 ))
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$tmp/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 1 100); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
RUST_LOG=warn "${CARGO_TARGET_DIR:-target}"/release/examples/bench_stack --env "$tmp/env" --redis "redis://127.0.0.1:$redis_port/0" 2>"$tmp/stack.log" &
stack_pid=$!
for _ in $(seq 1 300); do
  [ -s "$tmp/env" ] && break
  kill -0 "$stack_pid" 2>/dev/null || { cat "$tmp/stack.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$tmp/env" ] || { echo "bench: the stack did not start" >&2; cat "$tmp/stack.log" >&2; exit 1; }
# shellcheck disable=SC1091
. "$tmp/env"

# wrk once; prints "<req/s> <p99 ms> <non-2xx>".
measure() {
  local url=$1; shift
  wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$@" "$url" >"$tmp/wrk.txt"
  awk '
    /Requests\/sec:/ { rps = $2 }
    /^ +99%/ { v = $2; u = v; sub(/[a-z]+$/, "", v); sub(/^[0-9.]+/, "", u);
               p99 = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : v }
    /Non-2xx or 3xx responses:/ { bad = $NF }
    END { printf "%s %.3f %d\n", rps, p99, bad + 0 }' "$tmp/wrk.txt"
}

targets=(direct public login login_redis api)
declare -A url=( [direct]="$UPSTREAM/x" [public]="$GATEWAY/public/x" [login]="$GATEWAY/app/x" [login_redis]="$GATEWAY_REDIS/app/x" [api]="$GATEWAY/api/x" )
declare -A rps_sum p99_sum bad_sum
for t in "${targets[@]}"; do rps_sum[$t]=0; p99_sum[$t]=0; bad_sum[$t]=0; done

# Warm-up (connections, caches), not recorded.
measure "${url[login]}" -H "Cookie: $SESSION_COOKIE" >/dev/null
measure "${url[login_redis]}" -H "Cookie: $REDIS_SESSION_COOKIE" >/dev/null
measure "${url[api]}" -H "Authorization: Bearer $BEARER" >/dev/null

for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order each round so no target always runs first or last.
  for i in "${!targets[@]}"; do
    t=${targets[$(( (i + round) % ${#targets[@]} ))]}
    case $t in
      login) out=$(measure "${url[$t]}" -H "Cookie: $SESSION_COOKIE") ;;
      login_redis) out=$(measure "${url[$t]}" -H "Cookie: $REDIS_SESSION_COOKIE") ;;
      api) out=$(measure "${url[$t]}" -H "Authorization: Bearer $BEARER") ;;
      *) out=$(measure "${url[$t]}") ;;
    esac
    read -r rps p99 bad <<<"$out"
    echo "round $round  $t  ${rps} req/s  p99 ${p99} ms  non-2xx ${bad}"
    rps_sum[$t]=$(awk -v a="${rps_sum[$t]}" -v b="$rps" 'BEGIN { print a + b }')
    p99_sum[$t]=$(awk -v a="${p99_sum[$t]}" -v b="$p99" 'BEGIN { print a + b }')
    bad_sum[$t]=$(( ${bad_sum[$t]} + bad ))
  done
done

fill=$(curl -s -X POST "$CONTROL/fill?n=$FILL")
rss_before=$(printf %s "$fill" | sed -n 's/.*"rss_before_kib":\([0-9]*\).*/\1/p')
rss_after=$(printf %s "$fill" | sed -n 's/.*"rss_after_kib":\([0-9]*\).*/\1/p')
fill_ok=$(printf %s "$fill" | sed -n 's/.*"ok":\([0-9]*\).*/\1/p')

pub_rps=$(awk -v s="${rps_sum[public]}" -v n="$ROUNDS" 'BEGIN { print s / n }')
pub_p99=$(awk -v s="${p99_sum[public]}" -v n="$ROUNDS" 'BEGIN { print s / n }')
table="| target | req/s (mean of $ROUNDS) | p99 ms (mean) | vs public: throughput | vs public: p99 Δ ms | non-2xx |
|---|---|---|---|---|---|"
for t in "${targets[@]}"; do
  row=$(awk -v s="${rps_sum[$t]}" -v p="${p99_sum[$t]}" -v n="$ROUNDS" -v pr="$pub_rps" -v pp="$pub_p99" -v t="$t" -v bad="${bad_sum[$t]}" \
    'BEGIN { r = s / n; q = p / n; printf "| %s | %.0f | %.3f | %.3f× | %+.3f | %d |", t, r, q, r / pr, q - pp, bad }')
  table="$table
$row"
done
redis_vs_cookie=$(awk -v r="${rps_sum[login_redis]}" -v c="${rps_sum[login]}" 'BEGIN { printf "%.3f", r / c }')
redis_cmds=$(redis-cli -p "$redis_port" info commandstats | awk -F'[=,:]' '/^cmdstat_/ { n += $3 } END { print n + 0 }')
redis_line="Redis store: \`login_redis\` / \`login\` throughput $redis_vs_cookie× (target ≥ 0.85×); Redis served $redis_cmds commands over the whole run (each replica asks Redis about a session at most every 0.5 s, never per request)."
rss_line="RSS of the stack process (gateway + emulator + upstream): $(( rss_before / 1024 )) MiB before, $(( rss_after / 1024 )) MiB after caching $fill_ok distinct Bearer tokens (+$(( (rss_after - rss_before) / 1024 )) MiB)."

echo
echo "$table"
echo
echo "$redis_line"
echo
echo "$rss_line"

cmd="ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS FILL=$FILL bench/run.sh"
{
  echo "# Benchmark results"
  echo
  echo "Produced by \`$cmd\` on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(uname -sm)),"
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown). wrk: 1 thread, $CONNS connections,"
  echo "$DURATION per measurement; targets interleaved over $ROUNDS rounds; everything on loopback,"
  echo "sharing the same CPUs (load generator, gateway, upstream, emulator)."
  echo
  echo "$table"
  echo
  echo "$redis_line"
  echo
  echo "$rss_line"
  echo
  echo "How to read it: \`public\` is the gateway as a plain proxy, the floor for the auth"
  echo "modes; \`login\` opens and checks the sealed session cookie (AES-256-GCM) and injects"
  echo "the Bearer and identity headers; \`login_redis\` does the same with the session kept in"
  echo "Redis (the cookie holds an id and a key; the session opened is kept 0.5 s per replica);"
  echo "a refresh storm across replicas costs one Loopwise call (tests/replicas.rs);"
  echo "\`api\` hashes the client's token (SHA-256) and serves"
  echo "its validation from the moka cache. The gateway runs 2 worker threads. The bench stack"
  echo "validates Bearer tokens locally (\`loopwise.jwt_secret\`), so filling the cache with"
  echo "$FILL tokens needs no Loopwise round-trips; cached entries are the same in every mode."
} > bench/RESULTS.md
echo
echo "written to bench/RESULTS.md"

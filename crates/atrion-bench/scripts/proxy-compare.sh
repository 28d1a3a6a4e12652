#!/usr/bin/env bash
# Proxy mode beside nginx, and `POST /v1/decide` beside its axum floor, over loopback, with
# wrk, in alternating rounds. A benchmark, not a test: `.ci/run` does not run it.
#
#   crates/atrion-bench/scripts/proxy-compare.sh [SECONDS] [ROUNDS] [CONNECTIONS]
#                                                 # defaults: 8 s a run, 3 rounds, 32 connections
#
# It starts, each on a free loopback port:
# - upstream:      nginx (one worker) answering `200 ok` to everything: the bare upstream;
# - nginx:         nginx (one worker) as a reverse proxy to it, upstream keepalive;
# - forward-bare:  Atrion's forwarding (`atrion_server::forwarding_router`) on plain
#                  `axum::serve`: the HTTP path alone, no protection;
# - forward:       the same behind Atrion's front door (`serve_router`: connection caps,
#                  header, keep-alive and send timeouts);
# - atrion:        `atrion serve --upstream ... --path-templates /users/{id}`: the above, plus
#                  path normalization, the decision, the report at the end of the body, bans;
# - atrion-1w:     the same with one runtime worker (`TOKIO_WORKER_THREADS=1`; the default is
#                  one per core), as nginx runs one worker here;
# - decide-floor:  a trivial axum handler answering `POST /v1/decide` with the same JSON fields;
# - decide:        `POST /v1/decide` on the same `atrion serve` (front door, guard, ticket).
# Each round runs `wrk -t1 -cCONNECTIONS -dSECONDS --latency` on every target in turn
# (`GET /users/<n>` for the proxies, a JSON body for decide); the summary is the median of the
# rounds, with ratios against nginx (proxies) and the axum floor (decide). The generator
# shares the machine's cores with the servers: the ratios of one run are the figure.
# Errors are wrk's non-2xx answers and socket errors; Atrion's sheds (503, when the box is so
# loaded that the route's latency rises) are printed apart, from its `/metrics`.
#
# Needs nginx and wrk (Debian: nginx-light, wrk), installed with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/../../.."
secs="${1:-8}"
rounds="${2:-3}"
conns="${3:-32}"

if ! command -v wrk >/dev/null || ! { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; }; then
    echo "installing nginx-light and wrk" >&2
    apt-get update -qq >&2 && apt-get install -y -qq nginx-light wrk >&2
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

# Built one package at a time: together, their features would unify into a third build.
cargo build --release --quiet -p atrion-cli --bin atrion
cargo build --release --quiet -p atrion-bench --bin floors
bin="${CARGO_TARGET_DIR:-target}/release"

tmp="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() { # wait_port PORT: until something listens there (10 s at most)
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    exit 1
}

up_port="$(free_port)"
nginx_port="$(free_port)"
bare_port="$(free_port)"
fwd_port="$(free_port)"
api_port="$(free_port)"
atrion_port="$(free_port)"
api1_port="$(free_port)"
atrion1_port="$(free_port)"
floor_port="$(free_port)"

nginx_conf() { # nginx_conf NAME SERVER_BLOCK_BODY [HTTP_EXTRA]
    mkdir -p "$tmp/$1"
    cat >"$tmp/$1/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $tmp/$1/nginx.pid;
error_log $tmp/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $tmp/$1/body;
    proxy_temp_path $tmp/$1/proxy;
    keepalive_requests 1000000;
    $3
    server {
        listen 127.0.0.1:$4 reuseport;
        $2
    }
}
EOF
}
nginx_conf upstream 'location / { return 200 "ok\n"; }' '' "$up_port"
nginx_conf proxy 'location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }' \
    "upstream up { server 127.0.0.1:$up_port; keepalive 64; keepalive_requests 1000000; }" "$nginx_port"

"$nginx_bin" -p "$tmp/upstream" -c "$tmp/upstream/nginx.conf" & pids+=($!)
"$nginx_bin" -p "$tmp/proxy" -c "$tmp/proxy/nginx.conf" & pids+=($!)
"$bin/floors" forward-bare "127.0.0.1:$bare_port" "http://127.0.0.1:$up_port" & pids+=($!)
"$bin/floors" forward "127.0.0.1:$fwd_port" "http://127.0.0.1:$up_port" & pids+=($!)
"$bin/floors" decide "127.0.0.1:$floor_port" & pids+=($!)
RUST_LOG=warn "$bin/atrion" serve --store memory --listen "127.0.0.1:$api_port" \
    --upstream "http://127.0.0.1:$up_port" --proxy-listen "127.0.0.1:$atrion_port" \
    --path-templates '/users/{id}' >"$tmp/atrion.log" 2>&1 & pids+=($!)
TOKIO_WORKER_THREADS=1 RUST_LOG=warn "$bin/atrion" serve --store memory --listen "127.0.0.1:$api1_port" \
    --upstream "http://127.0.0.1:$up_port" --proxy-listen "127.0.0.1:$atrion1_port" \
    --path-templates '/users/{id}' >"$tmp/atrion1.log" 2>&1 & pids+=($!)
for p in "$up_port" "$nginx_port" "$bare_port" "$fwd_port" "$floor_port" "$api_port" "$atrion_port" "$api1_port" \
    "$atrion1_port"; do
    wait_port "$p"
done

# GET /users/<n>, n cycling per connection: one route for Atrion (/users/{id}), many paths.
cat >"$tmp/users.lua" <<'EOF'
local n = 0
request = function()
    n = (n + 1) % 1000
    return wrk.format("GET", "/users/" .. n)
end
EOF
cat >"$tmp/decide.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"route":"GET /users/{id}"}'
wrk.headers["Content-Type"] = "application/json"
EOF

# Every target answers 200 before the rounds.
check() { # check URL [curl args]
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' "$@")"
    [ "$code" = 200 ] || { echo "$1 answered $code" >&2; cat "$tmp/atrion.log" >&2; exit 1; }
}
for p in "$up_port" "$nginx_port" "$bare_port" "$fwd_port" "$atrion_port" "$atrion1_port"; do check "http://127.0.0.1:$p/users/1"; done
for p in "$floor_port" "$api_port"; do
    check "http://127.0.0.1:$p/v1/decide" -X POST -H 'content-type: application/json' -d '{"route":"GET /users/{id}"}'
done

targets=(upstream nginx forward-bare forward atrion atrion-1w decide-floor decide)
declare -A url=(
    [upstream]="http://127.0.0.1:$up_port" [nginx]="http://127.0.0.1:$nginx_port"
    [forward-bare]="http://127.0.0.1:$bare_port" [forward]="http://127.0.0.1:$fwd_port"
    [atrion]="http://127.0.0.1:$atrion_port" [atrion-1w]="http://127.0.0.1:$atrion1_port"
    [decide-floor]="http://127.0.0.1:$floor_port/v1/decide"
    [decide]="http://127.0.0.1:$api_port/v1/decide"
)
declare -A script=([decide-floor]=decide.lua [decide]=decide.lua)

# One wrk run, as "req/s p50_ms p99_ms errors".
measure() {
    local out
    out="$(wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$tmp/${script[$1]:-users.lua}" "${url[$1]}")"
    echo "$out" | awk '
        function ms(v) {
            if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /[0-9]s$/) return v * 1000
            return v / 60000 # minutes, never expected
        }
        /Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { err += $NF }
        /Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
        END { printf "%.0f %.3f %.3f %d\n", rps, p50, p99, err }'
}

results="$tmp/results"
: >"$results"
echo "wrk -t1 -c$conns -d${secs}s, $rounds rounds, $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq "$rounds"); do
    # Each round starts one target further on: no target always runs first or after another.
    n="${#targets[@]}"
    for i in $(seq 0 $((n - 1))); do
        t="${targets[$(((i + round - 1) % n))]}"
        r="$(measure "$t")"
        echo "round $round $t $r" >&2
        echo "$round $t $r" >>"$results"
    done
done

# Atrion's own refusals: a `503` shed when the route's latency or failures rose (the machine
# overloaded by the generator and the servers), counted among the errors above.
for p in "$api_port" "$api1_port"; do
    curl -s "http://127.0.0.1:$p/metrics" | grep '^atrion_decisions_total' | grep 'verdict="shed"' |
        sed "s/^/sheds (API on $p): /" >&2 || true
done

python3 - "$results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    _, t, rps, p50, p99, err = line.split()
    rows.setdefault(t, []).append((float(rps), float(p50), float(p99), int(err)))
med = {t: tuple(statistics.median(x[i] for x in v) for i in range(3)) + (sum(x[3] for x in v),) for t, v in rows.items()}
base = {"upstream": None, "nginx": "nginx", "forward-bare": "nginx", "forward": "nginx", "atrion": "nginx", "atrion-1w": "nginx",
        "decide-floor": None, "decide": "decide-floor"}
what = {
    "upstream": "direct to the upstream (nginx, return 200)",
    "nginx": "nginx reverse proxy (1 worker, upstream keepalive)",
    "forward-bare": "Atrion's forwarding, plain axum::serve",
    "forward": "the same behind the front door (limits, timeouts)",
    "atrion": "atrion serve --upstream (+ normalization, decision, report)",
    "atrion-1w": "the same, one runtime worker (TOKIO_WORKER_THREADS=1)",
    "decide-floor": "POST /v1/decide floor (trivial axum handler)",
    "decide": "POST /v1/decide on atrion serve",
}
print("| path | req/s | p50 ms | p99 ms | errors | req/s ratio | p99 ratio | vs |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for t in what:
    if t not in med:
        continue
    rps, p50, p99, err = med[t]
    b = base[t]
    if b and b != t and b in med:
        ratio = f"{rps / med[b][0]:.2f}x"
        pr = f"{p99 / med[b][2]:.2f}x"
    else:
        ratio = pr = ""
    print(f"| {what[t]} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {err} | {ratio} | {pr} | {b if b and b != t else ''} |")
print()
print("Per round (req/s, p99 ms):")
for t in what:
    if t in rows:
        print(f"- {t}: " + ", ".join(f"{r:,.0f} / {p:.2f}" for r, _, p, _ in rows[t]))
EOF

#!/usr/bin/env bash
# bench/idle.sh — memory per idle keep-alive client connection, behind
# `make bench-idle`. For each round and each target (holdfast, haproxy,
# nginx; each pinned to PROXY_CPU with one worker, in front of the same
# backend), a fresh proxy is started, bench/idleconns opens N connections
# (INFLIGHT at a time), sends one request on each, reads the answer, lets
# them idle SETTLE, and reports the growth of the proxy's VmRSS divided by
# N, and holdfast's goroutines (go_goroutines from its /metrics) while the
# connections idle. Prints the median over ROUNDS with the spread
# (min..max) per N, side by side, and writes results.jsonl, table.txt and
# the charts idle-bytes.svg and idle-goroutines.svg to OUT.
#
# Knobs: ROUNDS [5] N ["5000 10000"] INFLIGHT [64] OUT [bench/out/idle-<UTC>]
# SETTLE [4s] TARGETS ["holdfast haproxy nginx"] PROXY_CPU [0] LOAD_CPU [1]
# HOLDFAST_BIN [bin/holdfast]. Loopback only; only our own PIDs are stopped.
#
# SPARSE=D (e.g. 15s; bench/sparse.sh, `make bench-sparse`) measures what a
# resume costs instead of memory: the N connections each send one request
# every EVERY [3s] (so each finds its connection idle, parked in holdfast)
# while HOT [8] connections send back to back; for D it reports p50/p99 of
# resumed and of hot requests and the proxy's CPU per request and percent,
# into OUT/sparse.jsonl and OUT/sparse.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUNDS=${ROUNDS:-5}
NS=${N:-5000 10000}
SPARSE=${SPARSE:-}
EVERY=${EVERY:-3s}
HOT=${HOT:-8}
OUT=${OUT:-$ROOT/bench/out/${SPARSE:+sparse}${SPARSE:-idle}-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
INFLIGHT=${INFLIGHT:-64}
SETTLE=${SETTLE:-4s}
TARGETS=${TARGETS:-holdfast haproxy nginx}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
HOLDFAST_BIN=${HOLDFAST_BIN:-$ROOT/bin/holdfast}
PATH=$PATH:/usr/sbin:/sbin

log() { printf '[bench-idle %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# Each connection costs a descriptor in the proxy and one in idleconns:
# raise the soft limit to the hard one, and say so when N cannot fit.
ulimit -n "$(ulimit -Hn)"
for n in $NS; do
	if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((n + 1000)) ]; then
		log "open-files limit $(ulimit -n) is too low for N=$n (raise the hard limit: ulimit -Hn or LimitNOFILE)"
		exit 1
	fi
done
WORK=$(mktemp -d)
PIDS=()
stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
cleanup() { local p; for p in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$p"; done; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$HOLDFAST_BIN" ] || make -s build
go build -o "$WORK/backend" ./bench/backend
go build -o "$WORK/idleconns" ./bench/idleconns
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACKEND_PORT=$(free_port)
taskset -c "$LOAD_CPU" "$WORK/backend" -addr "127.0.0.1:$BACKEND_PORT" >"$WORK/backend.log" 2>&1 &
PIDS+=($!)

start_holdfast() {
	cat >"$WORK/holdfast.yaml" <<YAML
admin: { listen: 127.0.0.1:$ADMIN_PORT }
listeners:
  - { name: bench, listen: 127.0.0.1:$PORT, pool: bench }
pools:
  - { name: bench, backends: [127.0.0.1:$BACKEND_PORT], health: { type: none } }
YAML
	taskset -c "$PROXY_CPU" env GOMAXPROCS=1 "$HOLDFAST_BIN" run -c "$WORK/holdfast.yaml" >"$WORK/holdfast.log" 2>&1 &
	TARGET_PID=$!
	METRICS=http://127.0.0.1:$ADMIN_PORT/metrics
}
# HAProxy sizes its descriptors as 2 per maxconn (client and server side)
# and refuses to start beyond the hard open-files limit: at N=10000 with a
# hard limit of 20000 it gets (limit-100)/2, and the connections beyond fail
# (counted in the "failed" field; bytes/conn is over those that opened).
HAPROXY_MAXCONN=30000
if [ "$(ulimit -Hn)" != unlimited ] && [ $((($(ulimit -Hn) - 100) / 2)) -lt "$HAPROXY_MAXCONN" ]; then
	HAPROXY_MAXCONN=$((($(ulimit -Hn) - 100) / 2))
fi
start_haproxy() {
	cat >"$WORK/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn $HAPROXY_MAXCONN
defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 1s
    timeout client 90s
    timeout server 30s
    timeout http-keep-alive 90s
frontend bench
    bind 127.0.0.1:$PORT
    default_backend bench
backend bench
    server b1 127.0.0.1:$BACKEND_PORT
CFG
	taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
	TARGET_PID=$!
	METRICS=""
}
start_nginx() {
	mkdir -p "$WORK/nginx"
	cat >"$WORK/nginx.conf" <<CFG
worker_processes 1;
worker_rlimit_nofile 30000;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 30000; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_timeout 90s;
    keepalive_requests 1000000;
    upstream bench { server 127.0.0.1:$BACKEND_PORT; keepalive 128; }
    server {
        listen 127.0.0.1:$PORT;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
CFG
	taskset -c "$PROXY_CPU" nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
	TARGET_PID=$!
	METRICS=""
}
wait_ready() {
	local deadline=$((SECONDS + 15))
	while [ "$SECONDS" -lt "$deadline" ]; do
		[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$PORT/" 2>/dev/null)" = 200 ] && return 0
		kill -0 "$TARGET_PID" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

RESULTS=$OUT/results.jsonl
MODE_ARGS=()
if [ -n "$SPARSE" ]; then
	RESULTS=$OUT/sparse.jsonl
	MODE_ARGS=(-sparse "$SPARSE" -every "$EVERY" -hot "$HOT")
fi
: >"$RESULTS"
for n in $NS; do
	for round in $(seq "$ROUNDS"); do
		for t in $TARGETS; do
			PORT=$(free_port) ADMIN_PORT=$(free_port)
			"start_$t"
			PIDS+=("$TARGET_PID")
			if ! wait_ready; then log "$t did not start"; tail -5 "$WORK/$t.log" >&2 || true; stop_pid "$TARGET_PID"; continue; fi
			# warm: a few hundred requests, so pools and the heap are sized
			for _ in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:$PORT/"; done
			taskset -c "$LOAD_CPU" "$WORK/idleconns" -addr "127.0.0.1:$PORT" -pid "$TARGET_PID" -n "$n" \
				-inflight "$INFLIGHT" -settle "$SETTLE" -target "$t" ${METRICS:+-metrics "$METRICS"} "${MODE_ARGS[@]+"${MODE_ARGS[@]}"}" | tee -a "$RESULTS" >&2
			stop_pid "$TARGET_PID"
		done
	done
done

if [ -n "$SPARSE" ]; then
	python3 - "$RESULTS" <<'PY' | tee "$OUT/sparse.txt"
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = []
for r in rows:
    if (r["conns"], r["target"]) not in keys:
        keys.append((r["conns"], r["target"]))
m = lambda rs, k: statistics.median(r[k] for r in rs)
print(f'{"conns":>6} {"target":<10} {"rounds":>6} {"resumed p50":>11} {"resumed p99":>11} {"hot p50":>8} {"hot p99":>8} {"requests":>9} {"CPU us/req":>10} {"CPU %":>6} {"goroutines":>10} {"failed":>6}')
for k in keys:
    rs = [r for r in rows if (r["conns"], r["target"]) == k]
    g = m(rs, "goroutines")
    print(f'{k[0]:>6} {k[1]:<10} {len(rs):>6} {m(rs,"resumed_p50_us"):>9.0f}us {m(rs,"resumed_p99_us"):>9.0f}us {m(rs,"hot_p50_us"):>6.0f}us {m(rs,"hot_p99_us"):>6.0f}us {m(rs,"resumed_requests")+m(rs,"hot_requests"):>9.0f} {m(rs,"cpu_us_per_req"):>10.1f} {m(rs,"cpu_percent"):>6.1f} {g if g >= 0 else "-":>10} {sum(r["failed"] for r in rs):>6}')
PY
	echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg) (above the core count, latencies are mostly scheduling noise)" | tee -a "$OUT/sparse.txt"
	log "results and table in ${OUT#"$ROOT"/}"
	exit 0
fi
python3 - "$RESULTS" <<'PY' | tee "$OUT/table.txt"
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = []
for r in rows:
    k = (r["conns"], r["target"])
    if k not in keys:
        keys.append(k)
print(f'{"conns":>6} {"target":<10} {"rounds":>6} {"bytes/conn median":>18} {"spread (min..max)":>20} {"goroutines idle":>16} {"parked":>8} {"failed":>7}')
for k in keys:
    rs = [r for r in rows if (r["conns"], r["target"]) == k]
    b = [r["bytes_per_conn"] for r in rs]
    g = [r["goroutines"] for r in rs if r["goroutines"] >= 0]
    p = [r["parked"] for r in rs if r["parked"] >= 0]
    gs = f'{statistics.median(g):.0f}' if g else "-"
    ps = f'{statistics.median(p):.0f}' if p else "-"
    fl = sum(r["failed"] for r in rs)
    print(f'{k[0]:>6} {k[1]:<10} {len(rs):>6} {statistics.median(b):>18.0f} {min(b):>9.0f}..{max(b):<9.0f} {gs:>16} {ps:>8} {fl:>7}')
PY
python3 "$ROOT/bench/svg.py" idle "$RESULTS" "$OUT" >&2 || log "charts FAILED"
log "results, table and charts in ${OUT#"$ROOT"/}"

#!/usr/bin/env bash
# bench/h2.sh — the HTTP/2 rows of `make bench`: h2load with prior
# knowledge (h2c) against holdfast, HAProxy (`bind ... proto h2`) and nginx
# (`listen ... http2`), each in front of the same HTTP/1.1 backend
# (bench/backend), pinned like the HTTP/1.1 rows: the proxy (one thread) on
# PROXY_CPU, h2load and the backend on WRK_CPU. Reported: req/s, failed
# requests, mean request time and the proxy's own CPU time per request
# (user+sys from /proc), median over ROUNDS.
#
# Runs on its own (./bench/h2.sh) or from the end of bench/run.sh, as a
# child process with the same OUT (H2=0 skips it there).
# Environment (defaults in brackets):
#   ROUNDS [3] H2_DURATION [5s] H2_CONNS [16] H2_STREAMS [4] (streams per connection: 64 in flight, as the HTTP/1.1 rows)
#   H2_TARGETS ["holdfast haproxy nginx"]
#   PROXY_CPU [0] WRK_CPU [1] HOLDFAST_BIN [bin/holdfast] OUT [bench/out/<UTC>]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
cd "$ROOT"
ROUNDS=${ROUNDS:-3}
H2_DURATION=${H2_DURATION:-5s}
H2_CONNS=${H2_CONNS:-16}
H2_STREAMS=${H2_STREAMS:-4}
H2_TARGETS=${H2_TARGETS:-holdfast haproxy nginx}
PROXY_CPU=${PROXY_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
HOLDFAST_BIN=${HOLDFAST_BIN:-$ROOT/bin/holdfast}
OUT=${OUT:-$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)}
PATH=$PATH:/usr/sbin:/sbin

hlog() { printf '[bench-h2 %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

command -v h2load >/dev/null 2>&1 || { hlog "h2load missing (Debian nghttp2-client; scripts/deps.sh installs it)"; exit 1; }
[ -x "$HOLDFAST_BIN" ] || { hlog "no $HOLDFAST_BIN (make build)"; exit 1; }
mkdir -p "$OUT"

HWORK=$(mktemp -d /tmp/holdfast-bench-h2.XXXXXX)
hcleanup() {
	stop_all
	rm -rf "$HWORK"
}
trap hcleanup EXIT
trap 'exit 130' INT TERM

PIN=0
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then PIN=1; fi

start_h2_holdfast() {
	cat >"$HWORK/holdfast.yaml" <<EOF
admin: { listen: 127.0.0.1:$ADMIN_PORT }
listeners:
  - { name: bench, listen: 127.0.0.1:$PORT, pool: bench }
pools:
  - { name: bench, balance: round_robin, backends: [127.0.0.1:$BACKEND_PORT], health: { type: none } }
EOF
	cp "$HWORK/holdfast.yaml" "$OUT/h2-holdfast.yaml"
	spawn "$PROXY_CPU" "$HWORK/holdfast.log" env GOMAXPROCS=1 "$HOLDFAST_BIN" run -c "$HWORK/holdfast.yaml"
}

start_h2_haproxy() {
	cat >"$HWORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend bench
    bind 127.0.0.1:$PORT proto h2
    default_backend bench
backend bench
    balance roundrobin
    server b1 127.0.0.1:$BACKEND_PORT
EOF
	cp "$HWORK/haproxy.cfg" "$OUT/h2-haproxy.cfg"
	spawn "$PROXY_CPU" "$HWORK/haproxy.log" haproxy -db -f "$HWORK/haproxy.cfg"
}

start_h2_nginx() {
	mkdir -p "$HWORK/nginx/tmp"
	cat >"$HWORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $HWORK/nginx/nginx.pid;
error_log $HWORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $HWORK/nginx/tmp;
    proxy_temp_path $HWORK/nginx/tmp;
    fastcgi_temp_path $HWORK/nginx/tmp;
    uwsgi_temp_path $HWORK/nginx/tmp;
    scgi_temp_path $HWORK/nginx/tmp;
    http2_max_requests 100000000;
    keepalive_requests 100000000;
    upstream bench { server 127.0.0.1:$BACKEND_PORT; keepalive 64; keepalive_requests 100000000; }
    server {
        listen 127.0.0.1:$PORT http2;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$remote_addr;
        }
    }
}
EOF
	cp "$HWORK/nginx/nginx.conf" "$OUT/h2-nginx.conf"
	spawn "$PROXY_CPU" "$HWORK/nginx.log" nginx -p "$HWORK/nginx" -e "$HWORK/nginx/error.log" -c "$HWORK/nginx/nginx.conf" -g 'daemon off;'
}

h2_target() { # h2_target ROUND NAME -> appends a row to $H2_RESULTS
	local round=$1 name=$2 pid deadline t0 t1 raw
	read -r PORT ADMIN_PORT <<<"$(free_ports 2)"
	"start_h2_$name"
	pid=$SPAWNED
	deadline=$((SECONDS + 15))
	until curl -s -o /dev/null --http2-prior-knowledge --max-time 1 "http://127.0.0.1:$PORT/"; do
		if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
			hlog "$name did not start; last log lines:"
			tail -n 20 "$HWORK"/*.log >&2 || true
			stop_pid "$pid"
			return 1
		fi
		sleep 0.1
	done
	raw=$OUT/h2-round$round-$name.txt
	pinned "$WRK_CPU" h2load -c "$H2_CONNS" -m "$H2_STREAMS" -D 1 "http://127.0.0.1:$PORT/" >/dev/null 2>&1 || true # warm-up
	t0=$(proc_ticks "$pid")
	if ! pinned "$WRK_CPU" h2load -c "$H2_CONNS" -m "$H2_STREAMS" -D "${H2_DURATION%s}" "http://127.0.0.1:$PORT/" >"$raw" 2>&1; then
		hlog "$name: h2load failed:"; cat "$raw" >&2
		stop_pid "$pid"
		return 1
	fi
	t1=$(proc_ticks "$pid")
	stop_pid "$pid"
	python3 - "$round" "$name" "$raw" "$((t1 - t0))" "$(getconf CLK_TCK)" >>"$H2_RESULTS" <<'EOF'
import re, sys
round_, name, raw, ticks, tck = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
t = open(raw).read()
rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", t).group(1))
m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", t)
done, failed = int(m.group(2)), int(m.group(4))
mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", t).group(1)
cpu_us = ticks / tck * 1e6 / done if done else 0
print(f"{round_}\t{name}\t{rps:.0f}\t{failed}\t{mean}\t{cpu_us:.1f}")
EOF
}

H2_RESULTS=$OUT/h2-results.tsv
printf 'round\ttarget\treq_s\tfailed\tmean_request_time\tproxy_cpu_us_per_req\n' >"$H2_RESULTS"
hlog "building backend"
go build -o "$HWORK/backend" ./bench/backend
read -r BACKEND_PORT <<<"$(free_ports 1)"
spawn "$WRK_CPU" "$HWORK/backend.log" "$HWORK/backend" -addr "127.0.0.1:$BACKEND_PORT"
for i in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$BACKEND_PORT/" && break; sleep 0.1; done
for round in $(seq "$ROUNDS"); do
	for t in $H2_TARGETS; do
		hlog "round $round/$ROUNDS: $t"
		h2_target "$round" "$t" || hlog "round $round: $t FAILED (no row)"
	done
done
echo "HTTP/2 (h2load -c $H2_CONNS -m $H2_STREAMS, ${H2_DURATION}, h2c prior knowledge to an HTTP/1.1 backend; median of $ROUNDS rounds)"
python3 - "$H2_RESULTS" "$H2_TARGETS" <<'EOF' | tee "$OUT/h2-median.txt"
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
print(f"{'target':<10} {'req/s':>9} {'failed':>7} {'mean':>10} {'proxy CPU µs/req':>17}")
for t in sys.argv[2].split():
    r = [x for x in rows if x[1] == t]
    if not r:
        print(f"{t:<10} {'-':>9}")
        continue
    med = statistics.median(float(x[2]) for x in r)
    cpu = statistics.median(float(x[5]) for x in r)
    fails = sum(int(x[3]) for x in r)
    mean = sorted(r, key=lambda x: float(x[2]))[len(r) // 2][4]
    print(f"{t:<10} {med:>9.0f} {fails:>7} {mean:>10} {cpu:>17.1f}")
EOF

#!/usr/bin/env bash
# bench/tcp.sh — the L4 (TCP) row of `make bench`: holdfast `protocol: tcp`
# against HAProxy `mode tcp`, in the same run, on the same source.
#
# A tcpload source (bench/tcpload) sends zeros as fast as they are taken; for
# each target the proxy is started pinned to PROXY_CPU (one thread), and
# `tcpload run` (pinned to WRK_CPU with the source) reads through it with
# TCP_CONNS connections for TCP_DURATION. Reported: MiB/s and the proxy's own
# CPU time per GiB moved (user+sys from /proc), median over ROUNDS.
#
# Runs on its own (./bench/tcp.sh) or from the end of bench/run.sh, as a
# child process with the same OUT (TCP=0 skips it there).
# Environment (defaults in brackets):
#   ROUNDS [3] TCP_DURATION [5s] TCP_CONNS [4]
#   TCP_TARGETS ["holdfast haproxy haproxy-splice"]
#   PROXY_CPU [0] WRK_CPU [1] HOLDFAST_BIN [bin/holdfast] OUT [bench/out/<UTC>]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
cd "$ROOT"
ROUNDS=${ROUNDS:-3}
TCP_DURATION=${TCP_DURATION:-5s}
TCP_CONNS=${TCP_CONNS:-4}
TCP_TARGETS=${TCP_TARGETS:-holdfast haproxy haproxy-splice}
PROXY_CPU=${PROXY_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
HOLDFAST_BIN=${HOLDFAST_BIN:-$ROOT/bin/holdfast}
OUT=${OUT:-$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)}
PATH=$PATH:/usr/sbin:/sbin

tlog() { printf '[bench-tcp %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

TWORK=$(mktemp -d /tmp/holdfast-bench-tcp.XXXXXX)
tcleanup() {
	stop_all
	rm -rf "$TWORK"
}
trap tcleanup EXIT
trap 'exit 130' INT TERM

PIN=0
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then PIN=1; fi

start_tcp_holdfast() {
	cat >"$TWORK/holdfast.yaml" <<EOF
admin: { listen: 127.0.0.1:$ADMIN_PORT }
listeners:
  - { name: l4, listen: 127.0.0.1:$PORT, protocol: tcp, pool: src }
pools:
  - { name: src, balance: least_conn, backends: [127.0.0.1:$SRC_PORT], health: { type: none } }
EOF
	cp "$TWORK/holdfast.yaml" "$OUT/tcp-holdfast.yaml"
	spawn "$PROXY_CPU" "$TWORK/holdfast.log" env GOMAXPROCS=1 "$HOLDFAST_BIN" run -c "$TWORK/holdfast.yaml"
}

haproxy_tcp_cfg() { # haproxy_tcp_cfg EXTRA-DEFAULTS-LINE
	cat <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode tcp
    timeout connect 1s
    timeout client 90s
    timeout server 90s
$1
frontend l4
    bind 127.0.0.1:$PORT
    default_backend src
backend src
    balance leastconn
    server s1 127.0.0.1:$SRC_PORT
EOF
}

start_tcp_haproxy() {
	haproxy_tcp_cfg "" >"$TWORK/haproxy.cfg"
	cp "$TWORK/haproxy.cfg" "$OUT/tcp-haproxy.cfg"
	spawn "$PROXY_CPU" "$TWORK/haproxy.log" haproxy -db -f "$TWORK/haproxy.cfg"
}

start_tcp_haproxy-splice() {
	haproxy_tcp_cfg "    option splice-auto" >"$TWORK/haproxy-splice.cfg"
	cp "$TWORK/haproxy-splice.cfg" "$OUT/tcp-haproxy-splice.cfg"
	spawn "$PROXY_CPU" "$TWORK/haproxy-splice.log" haproxy -db -f "$TWORK/haproxy-splice.cfg"
}

tcp_target() { # tcp_target ROUND NAME -> appends a row to $TCP_RESULTS
	local round=$1 name=$2 pid deadline t0 t1 res
	read -r PORT ADMIN_PORT <<<"$(free_ports 2)"
	"start_tcp_$name"
	pid=$SPAWNED
	deadline=$((SECONDS + 15))
	until "$TWORK/tcpload" ready -addr "127.0.0.1:$PORT" 2>/dev/null; do
		if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
			tlog "$name did not start; last log lines:"
			tail -n 20 "$TWORK"/*.log >&2 || true
			stop_pid "$pid"
			return 1
		fi
		sleep 0.05
	done
	pinned "$WRK_CPU" "$TWORK/tcpload" run -addr "127.0.0.1:$PORT" -c "$TCP_CONNS" -d 1s >/dev/null # warm-up
	t0=$(proc_ticks "$pid")
	res=$(pinned "$WRK_CPU" "$TWORK/tcpload" run -addr "127.0.0.1:$PORT" -c "$TCP_CONNS" -d "$TCP_DURATION")
	t1=$(proc_ticks "$pid")
	stop_pid "$pid"
	echo "$res" >"$OUT/tcp-round$round-$name.txt"
	printf '%s\t%s\t%s\t%s\n' "$round" "$name" "$res" "$((t1 - t0))" >>"$TCP_RESULTS"
}

tcp_bench() {
	mkdir -p "$OUT"
	command -v haproxy >/dev/null 2>&1 || { tlog "haproxy not installed: skipping the TCP row"; return 0; }
	[ -x "$HOLDFAST_BIN" ] || make build >&2
	go build -o "$TWORK/tcpload" ./bench/tcpload
	read -r SRC_PORT <<<"$(free_ports 1)"
	spawn "$WRK_CPU" "$TWORK/source.log" "$TWORK/tcpload" serve -addr "127.0.0.1:$SRC_PORT"
	local deadline=$((SECONDS + 10))
	until "$TWORK/tcpload" ready -addr "127.0.0.1:$SRC_PORT" 2>/dev/null; do
		[ "$SECONDS" -lt "$deadline" ] || { tlog "source did not start"; return 1; }
		sleep 0.05
	done
	TCP_RESULTS=$OUT/tcp-results.tsv
	: >"$TCP_RESULTS"
	tlog "TCP: pinned=$PIN proxy_cpu=$PROXY_CPU load+source_cpu=$WRK_CPU conns=$TCP_CONNS duration=$TCP_DURATION rounds=$ROUNDS"
	local round t
	for round in $(seq "$ROUNDS"); do
		for t in $TCP_TARGETS; do
			tlog "tcp round $round/$ROUNDS: $t"
			tcp_target "$round" "$t" || tlog "tcp round $round: $t FAILED (no row)"
		done
	done
	python3 - "$TCP_RESULTS" "$(getconf CLK_TCK)" <<'EOF' | tee "$OUT/tcp-median.txt"
import re, statistics, sys
rows = {}
order = []
hz = int(sys.argv[2])
for line in open(sys.argv[1]):
    rnd, name, res, ticks = line.rstrip("\n").split("\t")
    kv = dict(re.findall(r"(\w+)=([\d.]+)", res))
    mib = float(kv["bytes"]) / (1 << 20)
    cpu = int(ticks) / hz
    if name not in rows:
        rows[name] = []
        order.append(name)
    rows[name].append((float(kv["mib_per_s"]), cpu, 1000 * cpu / (mib / 1024) if mib else float("nan")))
print("TCP (L4) throughput, median of %d round(s): one proxy thread pinned to one core" % max(len(v) for v in rows.values()))
print("%-16s %10s %14s %16s" % ("target", "MiB/s", "proxy CPU s", "CPU ms per GiB"))
base = statistics.median(r[2] for r in rows["haproxy"]) if "haproxy" in rows else None
for name in order:
    v = rows[name]
    mibs, cpu, per = (statistics.median(x[i] for x in v) for i in range(3))
    ratio = "  (%.2fx haproxy)" % (per / base) if base else ""
    print("%-16s %10.0f %14.2f %16.1f%s" % (name, mibs, cpu, per, ratio))
EOF
}

tcp_bench

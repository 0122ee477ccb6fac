#!/usr/bin/env bash
# bench/run.sh — the wrk harness behind `make bench`.
#
# Puts each target (direct, holdfast, haproxy, nginx) in front of the same tiny
# fasthttp backend, drives it with wrk and measures throughput, latency and the
# proxy's own CPU time per request. See bench/README.md.
#
# Environment knobs (defaults in brackets):
#   ROUNDS [3]            rounds; the final table is the median across rounds
#   DURATION [10s]        measured wrk run per target
#   WARMUP [2s]           un-measured wrk run just before it
#   CONNECTIONS [64]      wrk -c
#   TARGETS ["direct holdfast haproxy nginx"]   targets (tables keep this order)
#   ROTATE [1]            rotate the run order by one each round (0: always TARGETS order)
#   PAIR [1]              run holdfast and the baseline back to back each round, alternating first
#   HOLDFAST_BIN [bin/holdfast]                 built with `make build` if missing
#   BASE_BIN []           another holdfast build for the holdfast_base target
#   OUT [bench/out/<UTC timestamp>]             raw results, tables and SVG charts
#   PROXY_CPU [0] WRK_CPU [1]                   cores to pin to (backend shares WRK_CPU)
#   RT [0]                1: proxy, wrk and backend run SCHED_FIFO (chrt; root) so a busy shared
#                         machine cannot preempt them; see bench/README.md
#   TCP [1]               then the L4 row, bench/tcp.sh (its knobs: TCP_DURATION, TCP_CONNS, TCP_TARGETS)
#   H2 [1]                then the HTTP/2 rows, bench/h2.sh (its knobs: H2_DURATION, H2_CONNS, H2_STREAMS, H2_TARGETS)
#
# Adding a target: write start_<name> (sets TARGET_PID and TARGET_URL; the
# process must be started through `spawn` so it is pinned and cleaned up) and
# add <name> to TARGETS. Everything else (readiness, warm-up, CPU accounting,
# tables) is shared.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
cd "$ROOT"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}
TARGETS=${TARGETS:-direct holdfast haproxy nginx}
HOLDFAST_BIN=${HOLDFAST_BIN:-$ROOT/bin/holdfast}
PROXY_CPU=${PROXY_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
READY_TIMEOUT=${READY_TIMEOUT:-15}
ROTATE=${ROTATE:-1}
# RT=1: run the proxy, wrk and the backend SCHED_FIFO (chrt, root), so other
# work on a shared machine cannot preempt them mid-measurement.
RT=${RT:-0}
RTCMD=
if [ "$RT" = 1 ]; then RTCMD="chrt -f ${RT_PRIO:-10}"; fi
OUT=${OUT:-$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)}

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# ---------------------------------------------------------------- tools
ensure_tools() {
	local missing=() pair bin pkg
	for pair in haproxy:haproxy nginx:nginx wrk:wrk curl:curl taskset:util-linux python3:python3; do
		bin=${pair%%:*} pkg=${pair##*:}
		command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("$pkg")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		[ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; install them or run as root"
		log "installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >/dev/null
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	PATH=$PATH:/usr/sbin:/sbin
	command -v go >/dev/null 2>&1 || die "go toolchain not found"
}

# ---------------------------------------------------------------- process bookkeeping
WORK=""
cleanup() {
	stop_all
	[ -n "$WORK" ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM




# wait_ready URL PID NAME LOG — poll URL until it answers 200, with a deadline.
wait_ready() {
	local url=$1 pid=$2 name=$3 logf=$4 deadline=$((SECONDS + READY_TIMEOUT))
	while [ "$SECONDS" -lt "$deadline" ]; do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "$name exited during start-up; last log lines:"
			tail -n 20 "$logf" >&2 || true
			return 1
		fi
		if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null)" = 200 ]; then
			return 0
		fi
		sleep 0.05
	done
	log "$name did not answer 200 on $url within ${READY_TIMEOUT}s; last log lines:"
	tail -n 20 "$logf" >&2 || true
	return 1
}


# ---------------------------------------------------------------- targets
# Each start_<name> gets a fresh PORT (and ADMIN_PORT) and the backend at
# 127.0.0.1:$BACKEND_PORT; it writes its config under $WORK/<name>, starts the
# proxy with `spawn "$PROXY_CPU" ...`, and sets TARGET_PID, TARGET_URL, TARGET_LOG.
# TARGET_PID="" means "no proxy" (CPU columns show "-").

start_direct() {
	TARGET_PID=""
	TARGET_URL="http://127.0.0.1:$BACKEND_PORT/"
	TARGET_LOG=$WORK/backend.log
}

start_holdfast() {
	local d=$WORK/${NAME:-holdfast}
	mkdir -p "$d"
	cat >"$d/holdfast.yaml" <<EOF
admin: { listen: 127.0.0.1:$ADMIN_PORT }
listeners:
  - { name: bench, listen: 127.0.0.1:$PORT, pool: bench }
pools:
  - name: bench
    balance: round_robin
    backends: [127.0.0.1:$BACKEND_PORT]
    health: { type: none }
EOF
	cp "$d/holdfast.yaml" "$OUT/${NAME:-holdfast}.yaml"
	TARGET_LOG=$d/holdfast.log
	spawn "$PROXY_CPU" "$TARGET_LOG" env GOMAXPROCS=1 "$HOLDFAST_BIN" run -c "$d/holdfast.yaml"
	TARGET_PID=$SPAWNED
	TARGET_URL="http://127.0.0.1:$PORT/"
}

# holdfast_base: the same config through another holdfast binary (BASE_BIN),
# e.g. the previous release, to compare two builds in one paired run.
start_holdfast_base() {
	HOLDFAST_BIN=${BASE_BIN:?BASE_BIN: the holdfast binary to compare} NAME=holdfast_base start_holdfast
}

start_haproxy() {
	local d=$WORK/haproxy
	mkdir -p "$d"
	# One thread, HTTP mode, keep-alive on both sides with aggressive server
	# connection reuse, no logging, and the request work holdfast does by
	# default: X-Forwarded-For/-Proto/-Host and a generated X-Request-ID.
	cat >"$d/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
    pidfile $d/haproxy.pid

defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 90s

frontend bench
    bind 127.0.0.1:$PORT
    unique-id-format %{+X}o%ci%cp%fp%Ts%rt
    unique-id-header X-Request-ID
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend bench

backend bench
    balance roundrobin
    server b1 127.0.0.1:$BACKEND_PORT
EOF
	cp "$d/haproxy.cfg" "$OUT/haproxy.cfg"
	TARGET_LOG=$d/haproxy.log
	# -db: stay in the foreground, no master process: the PID we hold does the work.
	spawn "$PROXY_CPU" "$TARGET_LOG" haproxy -db -f "$d/haproxy.cfg"
	TARGET_PID=$SPAWNED
	TARGET_URL="http://127.0.0.1:$PORT/"
}

start_nginx() {
	local d=$WORK/nginx
	mkdir -p "$d/tmp"
	# Master + one worker (production shape; CPU is summed over both), upstream
	# keep-alive pool, HTTP/1.1 upstream, X-Forwarded-* and X-Request-ID like
	# holdfast's defaults, no access log.
	# keepalive_requests raised on both sides so nginx does not close keep-alive
	# connections every 1000 requests (haproxy and holdfast do not either).
	cat >"$d/nginx.conf" <<EOF
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 90s;

    upstream bench {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PORT;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Request-ID \$request_id;
        }
    }
}
EOF
	cp "$d/nginx.conf" "$OUT/nginx.conf"
	TARGET_LOG=$d/nginx.log
	spawn "$PROXY_CPU" "$TARGET_LOG" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" -g 'daemon off;'
	TARGET_PID=$SPAWNED
	TARGET_URL="http://127.0.0.1:$PORT/"
}

# ---------------------------------------------------------------- measurement
wrk_run() { # wrk_run DURATION URL OUTFILE
	if [ "$PIN" = 1 ]; then
		$RTCMD taskset -c "$WRK_CPU" wrk -t1 -c"$CONNECTIONS" -d"$1" --latency "$2" >"$3" 2>&1
	else
		wrk -t1 -c"$CONNECTIONS" -d"$1" --latency "$2" >"$3" 2>&1
	fi
}

# bench_target ROUND NAME — start, wait, warm up, measure, stop; append a row.
bench_target() {
	local round=$1 name=$2 raw pticks pu0 ps0 pu1 ps1 bu0 bs0 bu1 bs1
	read -r PORT ADMIN_PORT <<<"$(free_ports 2)"
	TARGET_PID="" TARGET_URL="" TARGET_LOG=""
	"start_$name" || { log "$name: start failed"; return 1; }
	wait_ready "$TARGET_URL" "${TARGET_PID:-$BACKEND_PID}" "$name" "$TARGET_LOG" || {
		[ -n "$TARGET_PID" ] && stop_pid "$TARGET_PID"
		return 1
	}
	raw=$OUT/round$round-$name
	wrk_run "$WARMUP" "$TARGET_URL" "$raw.warmup.txt" || log "$name: warm-up wrk failed"
	read -r bu0 bs0 <<<"$(cpu_ticks "$BACKEND_PID")"
	[ -n "$TARGET_PID" ] && read -r pu0 ps0 <<<"$(cpu_ticks "$TARGET_PID")"
	if ! wrk_run "$DURATION" "$TARGET_URL" "$raw.wrk.txt"; then
		log "$name: wrk failed:"; cat "$raw.wrk.txt" >&2
		[ -n "$TARGET_PID" ] && stop_pid "$TARGET_PID"
		return 1
	fi
	[ -n "$TARGET_PID" ] && read -r pu1 ps1 <<<"$(cpu_ticks "$TARGET_PID")"
	read -r bu1 bs1 <<<"$(cpu_ticks "$BACKEND_PID")"
	if [ -n "$TARGET_PID" ]; then
		if ! kill -0 "$TARGET_PID" 2>/dev/null; then
			log "$name died during the run"
			stop_pid "$TARGET_PID"
			return 1
		fi
		pticks="$((pu1 - pu0)):$((ps1 - ps0))"
		stop_pid "$TARGET_PID"
		[ -f "$TARGET_LOG" ] && cp "$TARGET_LOG" "$raw.log"
		[ -f "$WORK/$name/error.log" ] && cp "$WORK/$name/error.log" "$raw.error.log"
	else
		pticks=-
	fi
	python3 "$ROOT/bench/report.py" row --round "$round" --target "$name" --wrk "$raw.wrk.txt" \
		--proxy-ticks "$pticks" --backend-ticks $((bu1 + bs1 - bu0 - bs0)) --clk-tck "$CLK_TCK" >>"$RESULTS"
}

# ---------------------------------------------------------------- main
main() {
	ensure_tools
	mkdir -p "$OUT"
	WORK=$(mktemp -d /tmp/holdfast-bench.XXXXXX)
	CLK_TCK=$(getconf CLK_TCK)
	RESULTS=$OUT/results.tsv
	python3 "$ROOT/bench/report.py" header >"$RESULTS"
	printf 'round\ttarget\tloadavg_1m_5m_15m\n' >"$OUT/loadavg.tsv"

	local ncpu
	ncpu=$(nproc)
	if [ "$ncpu" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
		PIN=1
	else
		PIN=0
		log "WARNING: $ncpu CPU(s) or no taskset: running unpinned; CPU/req stays valid, req/s does not"
	fi

	log "building backend"
	go build -o "$WORK/backend" ./bench/backend

	local t want_holdfast=0
	for t in $TARGETS; do
		declare -F "start_$t" >/dev/null || die "unknown target '$t' (no start_$t function)"
		[ "$t" = holdfast ] && want_holdfast=1
	done
	if [ "$want_holdfast" = 1 ] && [ ! -x "$HOLDFAST_BIN" ]; then
		log "building holdfast (make build)"
		make build >&2 || {
			log "WARNING: make build failed: skipping the holdfast target"
			TARGETS=$(echo " $TARGETS " | sed 's/ holdfast / /; s/^ *//; s/ *$//')
		}
	fi

	{
		echo "date: $(date -u +%FT%TZ)"
		echo "host: $(uname -srm), $ncpu CPU(s), pinned=$PIN proxy_cpu=$PROXY_CPU wrk+backend_cpu=$WRK_CPU"
		echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
		echo "rounds=$ROUNDS duration=$DURATION warmup=$WARMUP connections=$CONNECTIONS targets=$TARGETS"
		echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo none)"
		echo "go: $(go version)"
		echo "haproxy: $(haproxy -v 2>&1 | head -n1)"
		echo "nginx: $(nginx -v 2>&1)"
		echo "wrk: $(wrk --version 2>&1 | head -n1)"
		case " $TARGETS " in *" holdfast "*) echo "holdfast: $("$HOLDFAST_BIN" version 2>&1 | head -n1)";; esac
	} >"$OUT/env.txt"
	cat "$OUT/env.txt" >&2

	read -r BACKEND_PORT <<<"$(free_ports 1)"
	spawn "$WRK_CPU" "$WORK/backend.log" "$WORK/backend" -addr "127.0.0.1:$BACKEND_PORT"
	BACKEND_PID=$SPAWNED
	wait_ready "http://127.0.0.1:$BACKEND_PORT/" "$BACKEND_PID" backend "$WORK/backend.log" || die "backend did not start"

	local round order i
	local -a targets
	read -r -a targets <<<"$TARGETS"
	for round in $(seq "$ROUNDS"); do
		# Rotate the order each round (ROTATE=0 to disable) so that load drifting
		# on a shared machine does not always hit the same target.
		order=()
		for i in "${!targets[@]}"; do
			if [ "$ROTATE" = 1 ]; then
				order+=("${targets[$(((i + round - 1) % ${#targets[@]}))]}")
			else
				order+=("${targets[$i]}")
			fi
		done
		# PAIR=1 (default): holdfast and the baseline run back to back, the
		# first of them alternating by round, so each round's ratio compares
		# two runs taken under the same machine conditions. On a shared VM the
		# host's speed drifts: the backend's own CPU per request, the same
		# code every run, moved by up to 60% between runs minutes apart.
		local base=${BASELINE:-haproxy}
		if [ "${PAIR:-1}" = 1 ] && [[ " ${order[*]} " == *" holdfast "* ]] && [[ " ${order[*]} " == *" $base "* ]]; then
			local -a rest=() pair=(holdfast "$base")
			if [ $((round % 2)) = 0 ]; then pair=("$base" holdfast); fi
			for t in "${order[@]}"; do
				if [ "$t" != holdfast ] && [ "$t" != "$base" ]; then rest+=("$t"); fi
			done
			order=("${pair[@]}" "${rest[@]}")
		fi
		for t in "${order[@]}"; do
			log "round $round/$ROUNDS: $t"
			printf '%s\t%s\t%s\n' "$round" "$t" "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loadavg.tsv"
			bench_target "$round" "$t" || log "round $round: $t FAILED (no row)"
		done
		TARGETS=$TARGETS python3 "$ROOT/bench/report.py" round "$RESULTS" "$round" | tee "$OUT/round$round.txt"
		echo
	done

	TARGETS=$TARGETS python3 "$ROOT/bench/report.py" median "$RESULTS" | tee "$OUT/median.txt"
	# charts beside the tables: rps.svg, cpu.svg, p99.svg (bench/svg.py)
	TARGETS=$TARGETS python3 "$ROOT/bench/svg.py" http "$RESULTS" "$OUT" >&2 || log "charts FAILED"
	if [ "${TCP:-1}" = 1 ]; then # the L4 row: holdfast protocol: tcp vs HAProxy mode tcp
		echo
		OUT=$OUT ROUNDS=$ROUNDS PROXY_CPU=$PROXY_CPU WRK_CPU=$WRK_CPU HOLDFAST_BIN=$HOLDFAST_BIN \
			"$ROOT/bench/tcp.sh" || log "TCP row FAILED"
	fi
	if [ "${H2:-1}" = 1 ]; then # the HTTP/2 rows: h2load against holdfast, HAProxy and nginx
		echo
		OUT=$OUT ROUNDS=$ROUNDS PROXY_CPU=$PROXY_CPU WRK_CPU=$WRK_CPU HOLDFAST_BIN=$HOLDFAST_BIN \
			"$ROOT/bench/h2.sh" || log "HTTP/2 rows FAILED"
	fi
	echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
	ln -sfn "$(basename "$OUT")" "$(dirname "$OUT")/latest" 2>/dev/null || true
	log "raw results in ${OUT#"$ROOT"/}"
}

main "$@"

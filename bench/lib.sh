# bench/lib.sh — helpers shared by the bench scripts (sourced, not run).
# The sourcing script sets PIN (1: pin with taskset) and may set RTCMD
# (e.g. "chrt -f 10"); every process it starts goes through spawn, so
# stop_pid and the script's cleanup only ever end our own PIDs.

PIDS=()

# spawn CPU LOGFILE CMD... — start CMD pinned to CPU in the background; sets SPAWNED.
spawn() {
	local cpu=$1 logf=$2
	shift 2
	if [ "${PIN:-0}" = 1 ]; then
		${RTCMD:-} taskset -c "$cpu" "$@" >"$logf" 2>&1 &
	else
		"$@" >"$logf" 2>&1 &
	fi
	SPAWNED=$!
	PIDS+=("$SPAWNED")
}

# pinned CPU CMD... — run CMD pinned to CPU in the foreground.
pinned() {
	local cpu=$1
	shift
	if [ "${PIN:-0}" = 1 ]; then taskset -c "$cpu" "$@"; else "$@"; fi
}

# stop_pid PID — SIGTERM, wait up to 5 s, then SIGKILL. Only ever our own PIDs.
stop_pid() {
	local pid=$1 i
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	forget "$pid"
}
forget() {
	local keep=() p
	for p in "${PIDS[@]+"${PIDS[@]}"}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	PIDS=("${keep[@]+"${keep[@]}"}")
}

# stop_all — stop every process spawn started.
stop_all() {
	local p
	for p in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$p"; done
}

# cpu_ticks PID — utime+stime (fields 14, 15 of /proc/PID/stat) of PID and its
# direct children (nginx master + worker), in clock ticks. Prints "USER SYS".
cpu_ticks() {
	local ut=0 st=0 p u s
	for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
		# strip "pid (comm) " first: comm may contain spaces; then utime=$12, stime=$13
		read -r u s < <(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12, $13}') || true
		ut=$((ut + ${u:-0})) st=$((st + ${s:-0}))
	done
	echo "$ut $st"
}

# proc_ticks PID — utime+stime of PID and its direct children, one number.
proc_ticks() {
	local u s
	read -r u s <<<"$(cpu_ticks "$1")"
	echo $((u + s))
}

# free_ports N — N distinct free loopback TCP ports.
free_ports() {
	python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

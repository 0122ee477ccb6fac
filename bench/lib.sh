# bench/lib.sh — helpers shared by the bench scripts (sourced, not run).

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

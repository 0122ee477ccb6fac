#!/usr/bin/env bash
# Installs the Debian packages the tests and the bench need, only when missing,
# so `make test` works on a fresh machine. Safe to run repeatedly.
set -euo pipefail
need=()
for pair in dnsmasq:dnsmasq keepalived:keepalived haproxy:haproxy nginx:nginx wrk:wrk ip:iproute2 curl:curl chromium:chromium etcd:etcd-server h2load:nghttp2-client; do
	bin=${pair%%:*} pkg=${pair##*:}
	command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing ${need[*]}; run as root or install them" >&2
		exit 1
	fi
	echo "deps: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Packaged daemons must not hold ports or start by themselves; tests start
# their own instances.
for svc in dnsmasq nginx haproxy keepalived etcd; do
	if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
done

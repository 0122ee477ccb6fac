#!/usr/bin/env bash
# Checks and unit-tests deploy/prometheus's alert rules with promtool,
# installing Debian's prometheus package (which ships /usr/bin/promtool)
# when it is missing. Kept out of scripts/deps.sh: the package is ~100 MB
# for one check. Run by `make deploy-check`.
set -euo pipefail
cd "$(dirname "$0")/../deploy/prometheus"
if ! command -v promtool >/dev/null 2>&1; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deploy-check: promtool missing; run as root or apt-get install prometheus" >&2
		exit 1
	fi
	echo "deploy-check: installing prometheus (for promtool)" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq --no-install-recommends prometheus >/dev/null
	# The package's server must not run or hold :9090; only promtool is wanted.
	if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
fi
promtool check rules holdfast-alerts.yml
promtool test rules holdfast-alerts.test.yml

#!/bin/sh
# Runs the holdfast image the way the README shows: the config mounted
# read-only, a read-only root, no capabilities, and enough stop time for the
# drain (drain_delay + timeouts.drain of deploy/docker/holdfast.yaml).
#
#   deploy/docker/run.sh [extra `docker run` arguments]
#
# Environment (defaults in brackets):
#   HOLDFAST_IMAGE         [holdfast:latest]
#   HOLDFAST_NAME          [holdfast]
#   HOLDFAST_CONFIG        [$PWD/holdfast.yaml]  host path of the config file
#   HOLDFAST_PORTS         ["8080:8080"]  -p arguments. The admin API listens on
#                          127.0.0.1 in the container; to publish it, give the
#                          config admin.listen 0.0.0.0:9901 and a token_file
#                          (mount it, e.g. -v "$PWD/token:/run/secrets/holdfast-admin-token:ro")
#                          and add 127.0.0.1:9901:9901 here.
#   HOLDFAST_STOP_TIMEOUT  [30]  seconds `docker stop` waits before SIGKILL
set -eu
image=${HOLDFAST_IMAGE:-holdfast:latest}
name=${HOLDFAST_NAME:-holdfast}
config=${HOLDFAST_CONFIG:-$PWD/holdfast.yaml}
ports=${HOLDFAST_PORTS:-8080:8080}
stop=${HOLDFAST_STOP_TIMEOUT:-30}
case $config in /*) ;; *) config=$PWD/$config ;; esac
[ -r "$config" ] || { echo "run.sh: no config at $config (set HOLDFAST_CONFIG)" >&2; exit 1; }

publish=
for p in $ports; do publish="$publish -p $p"; done
# shellcheck disable=SC2086 # $publish is a list of words on purpose
exec docker run -d --name "$name" \
	--restart unless-stopped \
	--read-only --cap-drop ALL --security-opt no-new-privileges \
	--stop-timeout "$stop" \
	$publish \
	-v "$config:/etc/holdfast/holdfast.yaml:ro" \
	"$@" \
	"$image"

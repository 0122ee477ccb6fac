#!/usr/bin/env bash
# bench/sparse.sh — what a resume from the park costs: bench/idle.sh in its
# SPARSE mode (see there). N [2000] connections each send a request every
# EVERY [3s] for SPARSE [15s] beside HOT [8] back-to-back connections, for
# holdfast, HAProxy and nginx pinned one core each; ROUNDS [3].
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
SPARSE=${SPARSE:-15s} N=${N:-2000} ROUNDS=${ROUNDS:-3} exec ./idle.sh

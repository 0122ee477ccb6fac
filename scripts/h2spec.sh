#!/usr/bin/env bash
# scripts/h2spec.sh — behind `make h2spec`: runs the HTTP/2 conformance
# suite h2spec (github.com/summerwind/h2spec, installed from the Go module
# proxy into bin/, never committed) against an h2c (prior knowledge) and a
# TLS (ALPN h2) listener of bin/holdfast, in front of a small backend.
# Prints both summaries; bin/h2spec-{h2c,tls}.txt hold the details.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=$ROOT/bin
H2SPEC=$BIN/h2spec
# h2spec v2.6.0 (146 cases) is not on the module proxy (its module path
# lacks /v2): it is built from a clone of the repository, from
# H2SPEC_REPO (a local clone or mirror) or GitHub. Without either, the
# module proxy's v2.2.1 (145 cases) is used, and the summary says so.
if [ ! -x "$H2SPEC" ]; then
	SRC=$(mktemp -d /tmp/h2spec-src.XXXXXX)
	if git clone -q "${H2SPEC_REPO:-https://github.com/summerwind/h2spec}" "$SRC/h2spec" 2>/dev/null &&
		git -C "$SRC/h2spec" checkout -q v2.6.0 &&
		(cd "$SRC/h2spec" && GOFLAGS=-mod=mod go build -o "$H2SPEC" ./cmd/h2spec); then
		echo v2.6.0 >"$BIN/h2spec.version"
	else
		GOBIN=$BIN GOFLAGS=-mod=mod go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible
		echo v2.2.1 >"$BIN/h2spec.version"
	fi
	rm -rf "$SRC"
fi
W=$(mktemp -d /tmp/holdfast-h2spec.XXXXXX)
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	rm -rf "$W"
}
trap cleanup EXIT
read -r BE PLAIN TLSP ADMIN ONLY < <(python3 -c '
import socket
s=[socket.socket() for _ in range(5)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/k.pem" -out "$W/c.pem" \
	-days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
go build -o "$W/backend" ./bench/backend
"$W/backend" -addr "127.0.0.1:$BE" >"$W/backend.log" 2>&1 &
PIDS+=($!)
cat >"$W/holdfast.yaml" <<EOF
admin: { listen: 127.0.0.1:$ADMIN }
listeners:
  - { name: h2c, listen: 127.0.0.1:$ONLY, pool: p, http2_only: true }
  - { name: shared, listen: 127.0.0.1:$PLAIN, pool: p }
  - { name: tls, listen: 127.0.0.1:$TLSP, pool: p, tls: [ { cert_file: $W/c.pem, key_file: $W/k.pem } ] }
pools:
  - { name: p, backends: [127.0.0.1:$BE], health: { type: none } }
EOF
"$BIN/holdfast" --log-level warn run -c "$W/holdfast.yaml" >"$W/holdfast.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PLAIN/" && break; sleep 0.1; done
"$H2SPEC" -h 127.0.0.1 -p "$ONLY" -o 5 >"$BIN/h2spec-h2c.txt" 2>&1 || true
"$H2SPEC" -h 127.0.0.1 -p "$PLAIN" -o 5 >"$BIN/h2spec-shared.txt" 2>&1 || true
"$H2SPEC" -h 127.0.0.1 -p "$TLSP" -t -k -o 5 >"$BIN/h2spec-tls.txt" 2>&1 || true
echo "h2spec $(cat "$BIN/h2spec.version" 2>/dev/null || echo "(unknown version)")"
echo "h2c: $(tail -n1 "$BIN/h2spec-h2c.txt")"
echo "tls: $(tail -n1 "$BIN/h2spec-tls.txt")"
echo "h2c on a port shared with HTTP/1.1 (an invalid preface that is not PRI gets HTTP/1.1's 400): $(tail -n1 "$BIN/h2spec-shared.txt")"

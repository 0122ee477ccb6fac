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
if [ ! -x "$H2SPEC" ]; then
	GOBIN=$BIN GOFLAGS=-mod=mod go install github.com/summerwind/h2spec/cmd/h2spec@v2.6.0 2>/dev/null ||
		GOBIN=$BIN GOFLAGS=-mod=mod go install github.com/summerwind/h2spec/cmd/h2spec@latest
fi
W=$(mktemp -d /tmp/holdfast-h2spec.XXXXXX)
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	rm -rf "$W"
}
trap cleanup EXIT
read -r BE PLAIN TLSP ADMIN < <(python3 -c '
import socket
s=[socket.socket() for _ in range(4)]
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
  - { name: h2c, listen: 127.0.0.1:$PLAIN, pool: p }
  - { name: tls, listen: 127.0.0.1:$TLSP, pool: p, tls: [ { cert_file: $W/c.pem, key_file: $W/k.pem } ] }
pools:
  - { name: p, backends: [127.0.0.1:$BE], health: { type: none } }
EOF
"$BIN/holdfast" --log-level warn run -c "$W/holdfast.yaml" >"$W/holdfast.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PLAIN/" && break; sleep 0.1; done
"$H2SPEC" -h 127.0.0.1 -p "$PLAIN" -o 5 >"$BIN/h2spec-h2c.txt" 2>&1 || true
"$H2SPEC" -h 127.0.0.1 -p "$TLSP" -t -k -o 5 >"$BIN/h2spec-tls.txt" 2>&1 || true
echo "h2c: $(tail -n1 "$BIN/h2spec-h2c.txt")"
echo "tls: $(tail -n1 "$BIN/h2spec-tls.txt")"

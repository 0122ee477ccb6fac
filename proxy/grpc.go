package proxy

import (
	"net/http"
	"strconv"
	"strings"
)

// gRPC status codes holdfast answers with itself.
const (
	grpcUnavailable       = 14
	grpcDeadlineExceeded  = 4
	grpcResourceExhausted = 8
	grpcUnimplemented     = 12
	grpcInternal          = 13
	grpcInvalidArgument   = 3
)

// isGRPC reports a gRPC content type: application/grpc, optionally with
// a +codec or ;parameters.
func isGRPC(ct string) bool {
	const p = "application/grpc"
	if len(ct) < len(p) || !strings.EqualFold(ct[:len(p)], p) {
		return false
	}
	return len(ct) == len(p) || ct[len(p)] == '+' || ct[len(p)] == ';'
}

// grpcCode maps the status of an answer holdfast made itself to the gRPC
// code a gRPC client understands (grpc's HTTP-to-gRPC mapping, with a
// timeout as DEADLINE_EXCEEDED).
func grpcCode(status int) int {
	switch status {
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return grpcDeadlineExceeded
	case http.StatusTooManyRequests:
		return grpcResourceExhausted
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusRequestHeaderFieldsTooLarge:
		return grpcInternal
	case http.StatusMethodNotAllowed, http.StatusNotFound, http.StatusHTTPVersionNotSupported:
		return grpcUnimplemented
	}
	return grpcUnavailable
}

// grpcAnswer turns an answer holdfast made itself (status, plain text
// naming the pool) into a gRPC error.
func grpcAnswer(w http.ResponseWriter, status int, body []byte) {
	msg := strings.TrimSpace(string(body))
	if msg == "" {
		msg = "holdfast: " + strconv.Itoa(status) + " " + http.StatusText(status)
	}
	grpcError(w, grpcCode(status), msg)
}

// grpcError ends a gRPC call with code and msg and no message: HTTP 200
// and a trailers-only response (one HEADERS frame with END_STREAM).
func grpcError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(code))
	h.Set("Grpc-Message", grpcEncode(msg))
	w.WriteHeader(http.StatusOK)
}

// grpcEncode percent-encodes a grpc-message (gRPC over HTTP/2: bytes
// outside printable ASCII, and '%').
func grpcEncode(s string) string {
	const hexd = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hexd[c>>4])
			b.WriteByte(hexd[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"

	"golang.org/x/net/http2"
)

// GRPCChecker asks a backend's grpc.health.v1.Health/Check about a
// service (empty: the server as a whole) and passes when the answer is
// SERVING. It is a hand-written unary call over HTTP/2: a fresh
// connection per probe (h2c, or TLS with ALPN h2), closed after it.
// Safe for concurrent use.
type GRPCChecker struct {
	service string
	port    string
	scheme  string
	tls     *tls.Config
}

var _ Checker = (*GRPCChecker)(nil)

// GRPCCheck describes a gRPC health check.
type GRPCCheck struct {
	// Service is the HealthCheckRequest's service; empty: the server.
	Service string
	// Port, when not 0, is checked instead of the backend's port.
	Port int
	// TLS, when not nil, checks over TLS (ALPN h2) with these settings.
	TLS *tls.Config
}

// NewGRPCCheck returns a Checker for o.
func NewGRPCCheck(o GRPCCheck) *GRPCChecker {
	c := &GRPCChecker{service: o.Service, scheme: "http"}
	if o.Port > 0 {
		c.port = strconv.Itoa(o.Port)
	}
	if o.TLS != nil {
		c.scheme = "https"
		c.tls = o.TLS.Clone()
		c.tls.NextProtos = []string{http2.NextProtoTLS}
		c.tls.ClientSessionCache = tls.NewLRUClientSessionCache(16)
	}
	return c
}

// Serving statuses of grpc.health.v1.HealthCheckResponse.
const (
	grpcServing    = 1
	grpcNotServing = 2
)

// Check makes one Health/Check call to addr, bounded by ctx.
func (c *GRPCChecker) Check(ctx context.Context, addr string) error {
	if c.port != "" {
		if h, _, err := net.SplitHostPort(addr); err == nil {
			addr = net.JoinHostPort(h, c.port)
		}
	}
	var conns []net.Conn
	tr := &http2.Transport{
		AllowHTTP:          true,
		DisableCompression: true,
		DialTLSContext: func(ctx context.Context, network, a string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, network, a)
			if err != nil {
				return nil, err
			}
			if c.tls != nil {
				cfg := c.tls.Clone()
				if cfg.ServerName == "" {
					cfg.ServerName, _, _ = net.SplitHostPort(a)
				}
				tc := tls.Client(conn, cfg)
				if err := tc.HandshakeContext(ctx); err != nil {
					_ = conn.Close()
					return nil, err
				}
				conn = tc
			}
			conns = append(conns, conn)
			return conn, nil
		},
	}
	defer func() {
		tr.CloseIdleConnections()
		for _, conn := range conns {
			_ = conn.Close()
		}
	}()
	// HealthCheckRequest{service = 1}, in a gRPC message frame.
	var msg []byte
	if c.service != "" {
		msg = append([]byte{0x0a}, binary.AppendUvarint(nil, uint64(len(c.service)))...)
		msg = append(msg, c.service...)
	}
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	frame = append(frame, msg...)
	u := &url.URL{Scheme: c.scheme, Host: addr, Path: "/grpc.health.v1.Health/Check"}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(frame))
	if err != nil {
		return fmt.Errorf("grpc health check %s: %w", u, err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("User-Agent", "holdfast-health")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return probeErr(ctx, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
	_ = resp.Body.Close()
	if err != nil {
		return &probeError{msg: "response cut short: " + probeErr(ctx, err).Error(), err: err}
	}
	if resp.StatusCode != http.StatusOK {
		return &StatusError{Code: resp.StatusCode, Expect: [][2]int{{200, 200}}}
	}
	st := resp.Trailer.Get("Grpc-Status")
	if st == "" {
		st = resp.Header.Get("Grpc-Status") // trailers-only answer
	}
	if st != "0" {
		m := resp.Trailer.Get("Grpc-Message")
		if m == "" {
			m = resp.Header.Get("Grpc-Message")
		}
		if m, err := url.PathUnescape(m); err == nil {
			return &probeError{msg: fmt.Sprintf("grpc-status %s: %s", st, m), err: errGRPCStatus}
		}
		return &probeError{msg: "grpc-status " + st, err: errGRPCStatus}
	}
	status, err := healthStatus(body)
	if err != nil {
		return &probeError{msg: "bad health answer: " + err.Error(), err: err}
	}
	switch status {
	case grpcServing:
		return nil
	case grpcNotServing:
		return &probeError{msg: "NOT_SERVING", err: errNotServing}
	}
	return &probeError{msg: "serving status " + strconv.FormatUint(status, 10) + " (want SERVING)", err: errNotServing}
}

var (
	errGRPCStatus = errors.New("grpc health check failed")
	errNotServing = errors.New("grpc health: not serving")
)

// healthStatus reads HealthCheckResponse.status (field 1, an enum) from
// one gRPC message frame; an absent field is UNKNOWN (0).
func healthStatus(b []byte) (uint64, error) {
	if len(b) < 5 {
		return 0, errors.New("no message")
	}
	if b[0] != 0 {
		return 0, errors.New("compressed message")
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if uint64(n) != uint64(len(b)-5) {
		return 0, errors.New("message length mismatch")
	}
	m := b[5:]
	var status uint64
	for len(m) > 0 {
		key, k := binary.Uvarint(m)
		if k <= 0 {
			return 0, errors.New("bad field key")
		}
		m = m[k:]
		switch key & 7 {
		case 0: // varint
			v, k := binary.Uvarint(m)
			if k <= 0 {
				return 0, errors.New("bad varint")
			}
			m = m[k:]
			if key>>3 == 1 {
				status = v
			}
		case 2: // length-delimited
			l, k := binary.Uvarint(m)
			if k <= 0 || l > uint64(len(m)-k) {
				return 0, errors.New("bad length")
			}
			m = m[k+int(l):]
		case 1:
			if len(m) < 8 {
				return 0, errors.New("short fixed64")
			}
			m = m[8:]
		case 5:
			if len(m) < 4 {
				return 0, errors.New("short fixed32")
			}
			m = m[4:]
		default:
			return 0, errors.New("bad wire type")
		}
	}
	return status, nil
}

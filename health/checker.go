package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Checker probes one backend once. Check returns nil when the backend passes;
// it must give up when ctx ends. Implementations here are safe for concurrent
// use.
type Checker interface {
	Check(ctx context.Context, addr string) error
}

// Interface guards.
var (
	_ Checker = (*HTTPChecker)(nil)
	_ Checker = (*TCPChecker)(nil)
)

// maxProbeBody bounds how much of a health response body is read (and
// discarded) before the connection closes.
const maxProbeBody = 64 << 10

// HTTPChecker passes a backend whose GET Path answers with a status inside one
// of the Expect ranges. Each probe dials its own connection, never the
// proxy's pool, and closes it afterwards; redirects are not followed (a 3xx is
// judged against Expect like any status). Safe for concurrent use.
type HTTPChecker struct {
	path    string
	expect  [][2]int
	host    string
	headers map[string]string
	body    string
	port    string
	scheme  string
	client  *http.Client
}

// HTTPCheck describes an HTTP health check.
type HTTPCheck struct {
	// Path is requested with GET; empty means "/".
	Path string
	// Expect are inclusive status ranges; empty means 200-399.
	Expect [][2]int
	// Host is the Host header; empty means the backend address.
	Host string
	// Headers are extra request headers.
	Headers map[string]string
	// ExpectBody, when set, must occur in the (first 64 KiB of the) body.
	ExpectBody string
	// Port, when not 0, is checked instead of the backend's port.
	Port int
	// TLS, when not nil, checks over TLS with these settings; an empty
	// ServerName verifies the backend's host.
	TLS *tls.Config
}

// NewHTTPChecker returns a Checker that sends GET path to the backend and
// passes when the status lies in one of the inclusive expect ranges (as
// config.ParseStatusRanges returns them; empty means 200-399). host, when set,
// is sent as the Host header; otherwise the backend address is.
func NewHTTPChecker(path string, expect [][2]int, host string) Checker {
	return NewHTTPCheck(HTTPCheck{Path: path, Expect: expect, Host: host})
}

// NewHTTPCheck returns a Checker for o.
func NewHTTPCheck(o HTTPCheck) Checker {
	if o.Path == "" {
		o.Path = "/"
	}
	if len(o.Expect) == 0 {
		o.Expect = [][2]int{{200, 399}}
	}
	dialer := &net.Dialer{}
	c := &HTTPChecker{
		path:    o.Path,
		expect:  o.Expect,
		host:    o.Host,
		headers: o.Headers,
		body:    o.ExpectBody,
		scheme:  "http",
	}
	if o.Port > 0 {
		c.port = strconv.Itoa(o.Port)
	}
	var tc *tls.Config
	if o.TLS != nil {
		c.scheme = "https"
		tc = o.TLS.Clone()
		// A probe per interval: a resumed session keeps the checks cheap.
		tc.ClientSessionCache = tls.NewLRUClientSessionCache(16)
	}
	c.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil, // never HTTP_PROXY from the environment
			DialContext:            dialer.DialContext,
			TLSClientConfig:        tc,
			DisableKeepAlives:      true, // a fresh connection per probe, closed after it
			DisableCompression:     true,
			MaxResponseHeaderBytes: 64 << 10,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c
}

// Check sends one probe to addr ("host:port"), bounded by ctx.
func (c *HTTPChecker) Check(ctx context.Context, addr string) error {
	if c.port != "" {
		if h, _, err := net.SplitHostPort(addr); err == nil {
			addr = net.JoinHostPort(h, c.port)
		}
	}
	u := &url.URL{Scheme: c.scheme, Host: addr}
	target := u.String() + c.path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("bad health check URL %q: %w", target, err)
	}
	if c.host != "" {
		req.Host = c.host
	}
	req.Header.Set("User-Agent", "holdfast-health")
	for k, v := range c.headers {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return probeErr(ctx, err)
	}
	// Read (a bounded part of) the body: a backend that sends good headers
	// and then resets or stops mid-body is failing, not passing. The
	// connection closes either way because keep-alives are off.
	var body []byte
	var bodyErr error
	if c.body != "" {
		body, bodyErr = io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
	} else {
		_, bodyErr = io.Copy(io.Discard, io.LimitReader(resp.Body, maxProbeBody))
	}
	_ = resp.Body.Close()
	for _, r := range c.expect {
		if resp.StatusCode >= r[0] && resp.StatusCode <= r[1] {
			if bodyErr != nil {
				return &probeError{msg: "response cut short: " + probeErr(ctx, bodyErr).Error(), err: bodyErr}
			}
			if c.body != "" && !strings.Contains(string(body), c.body) {
				return &probeError{msg: fmt.Sprintf("body does not contain %q", c.body), err: errBodyMismatch}
			}
			return nil
		}
	}
	return &StatusError{Code: resp.StatusCode, Expect: c.expect}
}

// errBodyMismatch: the check's body lacked expect_body.
var errBodyMismatch = errors.New("unexpected health check body")

// StatusError is an HTTP health check answered with a status outside the
// expected ranges.
type StatusError struct {
	Code   int
	Expect [][2]int
}

// Error reads "status 503 (want 200-399)".
func (e *StatusError) Error() string {
	var b strings.Builder
	b.WriteString("status ")
	b.WriteString(strconv.Itoa(e.Code))
	b.WriteString(" (want ")
	for i, r := range e.Expect {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(r[0]))
		if r[1] != r[0] {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(r[1]))
		}
	}
	b.WriteByte(')')
	return b.String()
}

// TCPChecker passes a backend that accepts a TCP connection; the connection
// is closed at once. Safe for concurrent use.
type TCPChecker struct {
	dialer net.Dialer
	port   string
}

// NewTCPChecker returns a Checker that passes when a TCP connect succeeds.
func NewTCPChecker() Checker { return &TCPChecker{} }

// NewTCPCheck is NewTCPChecker on port instead of the backend's own (0:
// the backend's).
func NewTCPCheck(port int) Checker {
	c := &TCPChecker{}
	if port > 0 {
		c.port = strconv.Itoa(port)
	}
	return c
}

// Check connects to addr ("host:port"), bounded by ctx.
func (c *TCPChecker) Check(ctx context.Context, addr string) error {
	if c.port != "" {
		if h, _, err := net.SplitHostPort(addr); err == nil {
			addr = net.JoinHostPort(h, c.port)
		}
	}
	conn, err := c.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return probeErr(ctx, err)
	}
	return conn.Close()
}

// probeError keeps a failure's cause for errors.Is/As but prints it the way a
// Reason wants it: "connection refused", "timeout", not a full URL error.
type probeError struct {
	msg string
	err error
}

func (e *probeError) Error() string { return e.msg }
func (e *probeError) Unwrap() error { return e.err }

func probeErr(ctx context.Context, err error) error {
	var msg string
	var ne net.Error
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		msg = "timeout"
	case errors.Is(err, context.Canceled):
		msg = "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		msg = "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		msg = "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		msg = "connection closed without a response"
	default:
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // drop `Get "http://…":`, the address is already known
		}
		msg = err.Error()
	}
	return &probeError{msg: msg, err: err}
}

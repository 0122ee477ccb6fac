package admin

import (
	"net/http"
	"time"
)

// Timeouts bound each admin connection, so a client that trickles its
// request or never reads the answer cannot hold a connection (and a
// goroutine) forever. Zero fields take the Default…Timeout constants.
type Timeouts struct {
	// Header is the time to receive a request head.
	Header time.Duration
	// Read is the time to receive a whole request, body included.
	Read time.Duration
	// Write is the time from the end of the request head to the end of
	// the response: longer than a /reload (new pools warm for up to 5s)
	// and a /metrics scrape, and, because net/http/pprof refuses a profile
	// that is not shorter than it, longer than the default 30s CPU profile.
	Write time.Duration
	// Idle is how long a keep-alive connection waits for its next request.
	Idle time.Duration
}

// The admin server's default timeouts (see Timeouts).
const (
	DefaultHeaderTimeout = 5 * time.Second
	DefaultReadTimeout   = 10 * time.Second
	DefaultWriteTimeout  = 60 * time.Second
	DefaultIdleTimeout   = 120 * time.Second
)

// MaxHeaderBytes bounds an admin request head: its requests are small.
const MaxHeaderBytes = 64 << 10

// NewServer returns the admin http.Server for h with t.
func NewServer(h http.Handler, t Timeouts) *http.Server {
	or := func(d, def time.Duration) time.Duration {
		if d > 0 {
			return d
		}
		return def
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: or(t.Header, DefaultHeaderTimeout),
		ReadTimeout:       or(t.Read, DefaultReadTimeout),
		WriteTimeout:      or(t.Write, DefaultWriteTimeout),
		IdleTimeout:       or(t.Idle, DefaultIdleTimeout),
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}

//go:build !linux

package proxy

import (
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// poller is Linux-only (epoll); elsewhere connections are never parked.
type poller struct{ grace time.Duration }

type pollerOptions struct {
	Grace  time.Duration
	Idle   time.Duration
	Resume func(net.Conn)
	Gauge  prometheus.Gauge
	Log    *slog.Logger
}

const parkSupported = false

func newPoller(pollerOptions) (*poller, error) {
	return nil, errors.New("park: epoll is Linux-only")
}

func (*poller) park(*countedConn) bool { return false }
func (*poller) forget(*countedConn)    {}
func (*poller) Parked() int            { return 0 }
func (*poller) Close()                 {}

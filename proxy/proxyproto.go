package proxy

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// NewProxyProtoListener accepts PROXY v1/v2 headers from a fronting
// balancer; the address they carry becomes the connection's RemoteAddr. A
// connection without a valid header within timeout is closed alone.
func NewProxyProtoListener(ln net.Listener, timeout time.Duration, log *slog.Logger) net.Listener {
	if timeout <= 0 || timeout > 10*time.Second {
		timeout = 10 * time.Second
	}
	return &proxyproto.Listener{
		Listener:          ln,
		ReadHeaderTimeout: timeout,
		Policy: func(net.Addr) (proxyproto.Policy, error) {
			return proxyproto.REQUIRE, nil
		},
	}
}

// writeProxyHeader announces the client to a backend.
func writeProxyHeader(c net.Conn, version string, src, dst net.Addr) error {
	v := byte(1)
	if version == "v2" {
		v = 2
	}
	h := proxyproto.HeaderProxyFromAddrs(v, src, dst)
	if _, err := h.WriteTo(c); err != nil {
		return fmt.Errorf("send PROXY %s header: %w", version, err)
	}
	return nil
}

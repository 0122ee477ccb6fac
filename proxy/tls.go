package proxy

import (
	"crypto/tls"
	"fmt"
	"net"

	"github.com/holdfast-lb/holdfast/config"
)

// NewTLSListener terminates TLS on ln. With several certificates the one
// matching the client's SNI is served (the first is the default).
func NewTLSListener(ln net.Listener, certs []config.TLSCert) (net.Listener, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	for _, c := range certs {
		pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load certificate %s: %w", c.CertFile, err)
		}
		cfg.Certificates = append(cfg.Certificates, pair)
	}
	return tls.NewListener(ln, cfg), nil
}

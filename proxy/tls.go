package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"sync/atomic"

	"github.com/holdfast-lb/holdfast/config"
)

// CertSet is a loaded, immutable set of certificates indexed by the names
// they cover. The first certificate is the default, for clients that send
// no SNI or a name no certificate covers.
type CertSet struct {
	exact    map[string]*tls.Certificate // lower-case DNS name
	wildcard map[string]*tls.Certificate // "example.com" for "*.example.com"
	def      *tls.Certificate
}

// LoadCertSet reads every certificate and key pair from disk. It fails
// (naming the file) if any cannot be loaded.
func LoadCertSet(certs []config.TLSCert) (*CertSet, error) {
	if len(certs) == 0 {
		return nil, fmt.Errorf("no certificates")
	}
	s := &CertSet{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	for _, c := range certs {
		pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load certificate %s: %w", c.CertFile, err)
		}
		leaf := pair.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
				return nil, fmt.Errorf("parse certificate %s: %w", c.CertFile, err)
			}
			pair.Leaf = leaf
		}
		cert := &pair
		if s.def == nil {
			s.def = cert
		}
		names := leaf.DNSNames
		if len(names) == 0 && leaf.Subject.CommonName != "" {
			names = []string{leaf.Subject.CommonName}
		}
		for _, n := range names {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			// The first certificate listed for a name wins, as in the config order.
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				if _, dup := s.wildcard[rest]; !dup {
					s.wildcard[rest] = cert
				}
			} else if _, dup := s.exact[n]; !dup {
				s.exact[n] = cert
			}
		}
	}
	return s, nil
}

// pick chooses the certificate for an SNI name: exact, then wildcard one
// label deep, then the default.
func (s *CertSet) pick(name string) *tls.Certificate {
	if name != "" {
		name = strings.ToLower(strings.TrimSuffix(name, "."))
		if c, ok := s.exact[name]; ok {
			return c
		}
		if i := strings.IndexByte(name, '.'); i > 0 {
			if c, ok := s.wildcard[name[i+1:]]; ok {
				return c
			}
		}
	}
	return s.def
}

// Certs serves a listener's certificates by SNI and lets a reload swap
// them without touching the socket: handshakes in progress keep the set
// they started with. Safe for concurrent use.
type Certs struct {
	set atomic.Pointer[CertSet]
}

// NewCerts holds set.
func NewCerts(set *CertSet) *Certs {
	c := &Certs{}
	c.set.Store(set)
	return c
}

// Set replaces the certificates (reload).
func (c *Certs) Set(set *CertSet) { c.set.Store(set) }

// GetCertificate implements tls.Config.GetCertificate.
func (c *Certs) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.set.Load().pick(hello.ServerName), nil
}

// NewTLSListener terminates TLS on ln with the certificates in certs;
// h2Only offers "h2" alone by ALPN.
func NewTLSListener(ln net.Listener, certs *Certs, h2Only bool) net.Listener {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// h2 first: a client offering both gets HTTP/2 (h2server.go).
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: certs.GetCertificate,
	}
	if h2Only {
		cfg.NextProtos = cfg.NextProtos[:1]
	}
	return tls.NewListener(ln, cfg)
}

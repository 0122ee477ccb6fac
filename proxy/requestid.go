package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"sync/atomic"
)

// RequestIDs generates X-Request-ID values: a random per-process prefix
// and a counter, both hex, 32 characters. Unique within the process by
// the counter and across processes by the prefix (64 random bits); no
// lock, no allocation. Safe for concurrent use.
type RequestIDs struct {
	prefix [16]byte
	n      atomic.Uint64
}

// NewRequestIDs draws the prefix from r (crypto/rand.Reader when nil).
func NewRequestIDs(r io.Reader) (*RequestIDs, error) {
	if r == nil {
		r = rand.Reader
	}
	var seed [8]byte
	if _, err := io.ReadFull(r, seed[:]); err != nil {
		return nil, fmt.Errorf("request id prefix: %w", err)
	}
	g := &RequestIDs{}
	hex.Encode(g.prefix[:], seed[:])
	return g, nil
}

// maxRequestID bounds a kept X-Request-ID; a longer one is replaced.
const maxRequestID = 128

// Append appends a new ID to b.
func (g *RequestIDs) Append(b []byte) []byte {
	n := g.n.Add(1)
	b = append(b, g.prefix[:]...)
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[(n>>uint(shift))&0xf])
	}
	return b
}

// validRequestID reports whether a received X-Request-ID may be kept:
// not empty, not too long, visible ASCII only.
func validRequestID(v []byte) bool {
	if len(v) == 0 || len(v) > maxRequestID {
		return false
	}
	for _, c := range v {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

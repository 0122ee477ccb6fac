// Package freeport picks loopback ports for tests that must name a port
// before the process that binds it starts (a child holdfast, dnsmasq,
// etcd).
package freeport

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Port returns a loopback port that was free for both TCP and UDP a
// moment ago. It is picked below the kernel's ephemeral range: a port
// from ":0" comes from that range, and once closed it can be taken as
// the source port of any outgoing connection before the child binds it
// (seen under load as "bind: address already in use"). Outside the range
// only another test picking the same number can collide.
func Port(tb testing.TB) int {
	tb.Helper()
	lo, hi := 10000, ephemeralLow()
	if hi-lo < 1000 {
		lo, hi = 1024, max(hi, 2048)
	}
	for range 200 {
		p := lo + rand.IntN(hi-lo)
		if free(p) {
			return p
		}
	}
	tb.Fatalf("freeport: no free port in [%d, %d) after 200 tries", lo, hi)
	return 0
}

func free(p int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	return pc.Close() == nil
}

// ephemeralLow is the low end of net.ipv4.ip_local_port_range (32768 by
// default).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

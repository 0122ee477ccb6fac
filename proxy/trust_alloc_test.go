//go:build !race

package proxy

import (
	"net"
	"testing"
)

// Matching a connection's peer against trusted_proxies allocates nothing:
// it runs once per accepted connection. (The race detector allocates on
// its own, hence the build tag.)
func TestTrustMatchAllocs(t *testing.T) {
	list, err := ParseTrustList([]string{"10.0.0.0/8", "fd00::/8", "192.168.1.7"})
	if err != nil {
		t.Fatal(err)
	}
	peers := []net.Addr{
		&net.TCPAddr{IP: net.ParseIP("192.168.1.7"), Port: 1}, // 16-byte form: IPv4-mapped
		&net.TCPAddr{IP: net.ParseIP("10.1.2.3").To4(), Port: 1},
		&net.TCPAddr{IP: net.ParseIP("fd00::1"), Port: 1, Zone: "eth0"},
		&net.TCPAddr{IP: net.ParseIP("8.8.8.8"), Port: 1},
	}
	want := []bool{true, true, true, false}
	for i, p := range peers {
		if got := list.Contains(peerAddr(p)); got != want[i] {
			t.Errorf("peer %s: trusted %v, want %v", p, got, want[i])
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		for _, p := range peers {
			_ = list.Contains(peerAddr(p))
		}
	}); n != 0 {
		t.Fatalf("matching %d peers allocates %v times", len(peers), n)
	}
}

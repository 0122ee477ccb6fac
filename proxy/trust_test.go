package proxy_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/holdfast-lb/holdfast/proxy"
)

func TestTrustList(t *testing.T) {
	list, err := proxy.ParseTrustList([]string{"10.0.0.0/8", "192.168.1.7", "fd00::/8", "::ffff:172.16.0.0/112"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		addr string
		want bool
	}{
		{"10.1.2.3", true},
		{"11.0.0.1", false},
		{"192.168.1.7", true},
		{"192.168.1.8", false},
		{"::ffff:10.9.9.9", true}, // an IPv4 peer on a dual-stack socket
		{"fd12::1", true},
		{"fe80::1%eth0", false},
		{"fd12::1%eth0", true}, // the zone does not matter
		{"172.16.5.5", true},   // given as a mapped prefix
		{"172.17.0.1", false},
		{"2001:db8::1", false},
	}
	for _, c := range cases {
		t.Run(c.addr, func(t *testing.T) {
			if got := list.Contains(netip.MustParseAddr(c.addr)); got != c.want {
				t.Errorf("Contains(%s) = %v, want %v", c.addr, got, c.want)
			}
		})
	}
	t.Run("invalid address", func(t *testing.T) {
		if list.Contains(netip.Addr{}) {
			t.Error("the zero Addr is trusted")
		}
	})
	var empty proxy.TrustList
	for _, l := range []proxy.TrustList{empty, must(proxy.ParseTrustList(nil))} {
		if l.Contains(netip.MustParseAddr("127.0.0.1")) || l.Len() != 0 {
			t.Error("an empty list contains something")
		}
	}
}

func must(l proxy.TrustList, err error) proxy.TrustList {
	if err != nil {
		panic(err)
	}
	return l
}

func TestParseTrustListErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		in   []string
		want string
	}{
		{"bad CIDR", []string{"10.0.0.0/8", "10.0.0.0/33"}, "trusted_proxies[1]"},
		{"hostname", []string{"lb.example.com"}, "trusted_proxies[0]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := proxy.ParseTrustList(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ParseTrustList(%q) error %v, want one naming %s", c.in, err, c.want)
			}
		})
	}
}

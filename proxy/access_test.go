package proxy

import (
	"net/netip"
	"testing"
)

func TestAccessList(t *testing.T) {
	cases := []struct {
		name        string
		allow, deny []string
		peer        string
		want        bool
	}{
		{"empty admits", nil, nil, "192.0.2.1", true},
		{"in allow", []string{"10.0.0.0/8"}, nil, "10.1.2.3", true},
		{"outside allow", []string{"10.0.0.0/8"}, nil, "11.0.0.1", false},
		{"deny wins over allow", []string{"10.0.0.0/8"}, []string{"10.1.0.0/16"}, "10.1.2.3", false},
		{"deny only", nil, []string{"192.0.2.0/24"}, "192.0.2.9", false},
		{"deny only, other peer", nil, []string{"192.0.2.0/24"}, "198.51.100.1", true},
		{"ipv6 allow", []string{"2001:db8::/32"}, nil, "2001:db8::1", true},
		{"ipv6 outside allow", []string{"2001:db8::/32"}, nil, "2001:db9::1", false},
		{"ipv6 deny single address", nil, []string{"::1"}, "::1", false},
		{"v4-mapped peer matches v4 deny", nil, []string{"127.0.0.1"}, "::ffff:127.0.0.1", false},
		{"v4 allow does not admit v6", []string{"0.0.0.0/0"}, nil, "::1", false},
		{"unknown peer with a list", nil, []string{"192.0.2.0/24"}, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := ParseAccessList(c.allow, c.deny)
			if err != nil {
				t.Fatal(err)
			}
			var a netip.Addr
			if c.peer != "" {
				a = netip.MustParseAddr(c.peer)
			}
			if got := l.Admits(a); got != c.want {
				t.Errorf("Admits(%s) = %v, want %v", c.peer, got, c.want)
			}
		})
	}
	if _, err := ParseAccessList(nil, []string{"10.0.0.0/40"}); err == nil {
		t.Error("bad deny CIDR accepted")
	}
}

func TestAccessListAllocs(t *testing.T) {
	l, err := ParseAccessList([]string{"10.0.0.0/8", "2001:db8::/32"}, []string{"10.9.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	c := NewAccessControl(l, nil)
	a := netip.MustParseAddr("::ffff:10.9.1.1")
	if n := testing.AllocsPerRun(100, func() { _ = c.admit(a) }); n != 0 {
		t.Errorf("admit allocates %v times", n)
	}
}

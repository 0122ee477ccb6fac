package hostaddr

import (
	"net/netip"
	"slices"
	"testing"
)

func set(addrs ...string) Set {
	s := Set{}
	for _, a := range addrs {
		s[netip.MustParseAddr(a)] = struct{}{}
	}
	return s
}

func addrs(as ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range as {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func TestTracker(t *testing.T) {
	type step struct {
		watched    []string
		set        Set
		left, back []string
	}
	vip, other := "192.0.2.100", "192.0.2.11"
	cases := []struct {
		name  string
		steps []step
	}{
		{name: "held then gone: left once", steps: []step{
			{watched: []string{vip}, set: set(vip, other)},
			{watched: []string{vip}, set: set(other), left: []string{vip}},
			{watched: []string{vip}, set: set()},
		}},
		{name: "gone then back", steps: []step{
			{watched: []string{vip}, set: set(vip)},
			{watched: []string{vip}, set: set(), left: []string{vip}},
			{watched: []string{vip}, set: set(vip), back: []string{vip}},
			{watched: []string{vip}, set: set(vip)},
			{watched: []string{vip}, set: set(), left: []string{vip}},
		}},
		{name: "standby: never held, gaining it is not a return", steps: []step{
			{watched: []string{vip}, set: set(other)},
			{watched: []string{vip}, set: set(other)},
			{watched: []string{vip}, set: set(vip, other)},
			{watched: []string{vip}, set: set(other), left: []string{vip}},
		}},
		{name: "listener added while its address is held", steps: []step{
			{watched: nil, set: set(vip)},
			{watched: []string{vip}, set: set(), left: []string{vip}},
		}},
		{name: "other addresses changing do nothing", steps: []step{
			{watched: []string{vip}, set: set(vip, other)},
			{watched: []string{vip}, set: set(vip)},
			{watched: []string{vip}, set: set(vip, other)},
		}},
		{name: "two listeners on one address: reported once", steps: []step{
			{watched: []string{vip, vip}, set: set(vip)},
			{watched: []string{vip, vip}, set: set(), left: []string{vip}},
		}},
		{name: "v4-mapped listener address", steps: []step{
			{watched: []string{"::ffff:" + vip}, set: set(vip)},
			{watched: []string{"::ffff:" + vip}, set: set(), left: []string{vip}},
		}},
		{name: "unwatched while gone: no return reported", steps: []step{
			{watched: []string{vip}, set: set(vip)},
			{watched: []string{vip}, set: set(), left: []string{vip}},
			{watched: nil, set: set()},
			{watched: []string{vip}, set: set(vip)},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var tr Tracker
			for i, st := range c.steps {
				left, back := tr.Update(addrs(st.watched...), st.set)
				if !slices.Equal(left, addrs(st.left...)) || !slices.Equal(back, addrs(st.back...)) {
					t.Fatalf("step %d: left %v back %v, want left %v back %v", i, left, back, st.left, st.back)
				}
			}
		})
	}
}

func TestWatched(t *testing.T) {
	cases := []struct {
		name, addr string
		want       string
	}{
		{name: "floating v4", addr: "192.0.2.100:80", want: "192.0.2.100"},
		{name: "v6", addr: "[2001:db8::1]:443", want: "2001:db8::1"},
		{name: "loopback is watched but never held", addr: "127.0.0.1:80", want: "127.0.0.1"},
		{name: "wildcard v4", addr: "0.0.0.0:80"},
		{name: "wildcard v6", addr: "[::]:80"},
		{name: "empty host", addr: ":80"},
		{name: "host name", addr: "localhost:80"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ""
			if ip, ok := Watched(c.addr); ok {
				got = ip.String()
			}
			if got != c.want {
				t.Fatalf("Watched(%q) = %q, want %q (empty: not watched)", c.addr, got, c.want)
			}
		})
	}
}

package discovery

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A resolver that fails AAAA queries must not keep an IPv4-only type "a"
// pool from ever starting; once IPv6 addresses were seen, a failing AAAA
// query fails the lookup (the last good set stays) instead of shrinking it.
func TestFailingAAAAQueries(t *testing.T) {
	var aaaa atomic.Int32 // dns.RcodeServerFailure, dns.RcodeRefused or dns.RcodeSuccess
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch q.Qtype {
		case dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30},
				A: net.IPv4(10, 0, 0, 1)})
		case dns.TypeAAAA:
			if rc := int(aaaa.Load()); rc != dns.RcodeSuccess {
				m.Rcode = rc
			} else {
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 30},
					AAAA: net.ParseIP("fd00::1")})
			}
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })

	d := NewDNS(DNSConfig{Type: "a", Name: "api.test.", Port: 8080, Servers: []string{pc.LocalAddr().String()},
		Timeout: 2 * time.Second, Attempts: 1}, nil, nil)
	lookup := func() ([]Backend, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		bs, _, err := d.Lookup(ctx)
		return bs, err
	}
	steps := []struct {
		name    string
		rcode   int
		want    int // backends, or -1 for a failed lookup
		wantRes string
	}{
		{name: "AAAA SERVFAIL before any IPv6 was seen: A alone", rcode: dns.RcodeServerFailure, want: 1},
		{name: "AAAA REFUSED before any IPv6 was seen: A alone", rcode: dns.RcodeRefused, want: 1},
		{name: "AAAA answers: both families", rcode: dns.RcodeSuccess, want: 2},
		{name: "AAAA SERVFAIL after IPv6 was seen: the lookup fails", rcode: dns.RcodeServerFailure, want: -1, wantRes: ResultServfail},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			aaaa.Store(int32(st.rcode))
			bs, err := lookup()
			if st.want < 0 {
				if err == nil || ResultOf(err) != st.wantRes {
					t.Fatalf("got %v, %v; want a %s failure", bs, err, st.wantRes)
				}
				return
			}
			if err != nil || len(bs) != st.want {
				t.Fatalf("got %v, %v; want %d backends", bs, err, st.want)
			}
		})
	}
}

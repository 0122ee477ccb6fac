package discovery

import (
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/holdfast-lb/holdfast/discovery/dnstest"
)

// TestSeedServesThroughServfail: a source seeded with a saved set publishes
// it before its first lookup, marked stale, keeps it through SERVFAIL, and
// guards it with the shrink rule once DNS answers.
func TestSeedServesThroughServfail(t *testing.T) {
	s := dnstest.Start(t)
	srv4(s, svc)
	s.SetFaults(dnstest.Servfail)
	seed := []Backend{{Address: "10.0.0.4:8080", Weight: 5, Priority: 10}, {Address: "10.0.0.1:8080", Weight: 5, Priority: 10},
		{Address: "10.0.0.2:8080", Weight: 5, Priority: 10}, {Address: "10.0.0.3:8080", Weight: 5, Priority: 10}}
	r := newRunner(t, DNSConfig{
		Type: "srv", Name: svc, Servers: []string{s.Addr}, Timeout: answerTimeout,
		MinRefresh: time.Second, MaxRefresh: 30 * time.Second, MaxShrink: 0.5, Confirm: 3,
	}, func(d *DNS) { d.Seed = seed })
	r.lookup()
	if got := addrs(r.last()); !slices.Equal(got, want4) {
		t.Fatalf("after a SERVFAIL: serving %v, want the seed %v", got, want4)
	}
	if len(r.published()) != 1 {
		t.Errorf("%d sets published, want the seed once", len(r.published()))
	}
	if !r.obs.isStale() {
		t.Error("seed not marked stale")
	}
	// DNS back, answering one of four: a destructive answer is held.
	s.SetFaults()
	s.Set(svc, dns.TypeSRV, svc+" 30 IN SRV 10 5 8080 r1.svc.test.")
	r.lookup()
	if got := len(r.last()); got != 4 {
		t.Errorf("first answer removing 3 of 4 seeded backends applied at once: %d backends", got)
	}
	srv4(s, svc)
	r.lookup()
	if r.obs.isStale() {
		t.Error("stale after DNS confirmed the seeded set")
	}
}

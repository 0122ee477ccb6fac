package discovery

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/holdfast-lb/holdfast/discovery/dnstest"
)

const svc = "_http._tcp.api.test."

var want4 = []string{"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.4:8080"}

// TestIncidentReplay replays the incident at unit level: the primary resolver
// answers SERVFAIL to two queries in three, then every resolver fails, then
// DNS answers empty. The published set of four routers never changes, never
// shrinks and never empties.
func TestIncidentReplay(t *testing.T) {
	t.Parallel()
	primary, secondary := dnstest.Start(t), dnstest.Start(t)
	srv4(primary, svc)
	srv4(secondary, svc)
	primary.SetFaults(dnstest.Servfail, dnstest.Servfail, dnstest.OK)

	r := newRunner(t, DNSConfig{
		Type: "srv", Name: svc, Resolver: "default",
		Servers: []string{primary.Addr, secondary.Addr},
		Timeout: timeoutTimeout, Attempts: 2, // phase 2 injects timeouts
		MinRefresh: time.Second, MaxRefresh: 30 * time.Second,
		MaxShrink: 0.5, Confirm: 3,
	})
	check := func(phase string) {
		t.Helper()
		p := r.published()
		if len(p) != 1 {
			t.Fatalf("%s: %d updates published, want exactly 1: %v", phase, len(p), p)
		}
		if got := addrs(p[0]); !slices.Equal(got, want4) {
			t.Fatalf("%s: published %v, want %v", phase, got, want4)
		}
	}

	t.Run("primary fails two queries in three", func(t *testing.T) {
		for range 30 {
			r.lookup()
			check("flaky primary")
		}
		if n := r.obs.result(ResultOK); n != 30 {
			t.Errorf("%d ok lookups, want 30: %v", n, r.obs.results)
		}
		if r.obs.isStale() {
			t.Error("stale while the secondary answers")
		}
		// The primary's failures are visible even though every lookup succeeded.
		r.obs.mu.Lock()
		sf := r.obs.servers[primary.Addr+" "+ResultServfail]
		r.obs.mu.Unlock()
		if sf == 0 {
			t.Error("primary's SERVFAILs not reported to the ServerObserver")
		}
		if n := r.logs.count(`"server":"`+primary.Addr+`"`, "DNS server failing"); n != 1 {
			t.Errorf("primary failing logged %d times, want once", n)
		}
	})

	t.Run("every resolver fails", func(t *testing.T) {
		primary.SetFaults(dnstest.Servfail)
		secondary.SetFaults(dnstest.Servfail, dnstest.Timeout, dnstest.Refused, dnstest.Garbage)
		var waits []time.Duration
		for range 10 {
			waits = append(waits, r.lookup())
			check("all failing")
		}
		if !r.obs.isStale() {
			t.Error("not stale while every resolver fails")
		}
		want := []time.Duration{1, 2, 4, 8, 16, 30, 30, 30, 30, 30}
		for i := range want {
			want[i] *= time.Second
		}
		if !slices.Equal(waits, want) {
			t.Errorf("backoff %v, want %v", waits, want)
		}
		if n := r.logs.count("serving the last good set"); n != 1 {
			t.Errorf("failure logged %d times, want once", n)
		}
	})

	t.Run("empty answers are held and never empty the set", func(t *testing.T) {
		primary.SetFaults(dnstest.Empty)
		secondary.SetFaults()
		for range 10 {
			r.lookup()
			check("empty answers")
		}
		primary.SetFaults(dnstest.NXDomain)
		for range 5 {
			r.lookup()
			check("nxdomain answers")
		}
		if !r.obs.isStale() {
			t.Error("not stale while DNS says there are no backends")
		}
		if n := r.logs.count("DNS confirms no backends"); n != 1 {
			t.Errorf("confirmed-empty logged %d times, want once:\n%s", n, r.logs)
		}
	})

	t.Run("recovery", func(t *testing.T) {
		primary.SetFaults()
		r.lookup()
		check("recovered")
		if r.obs.isStale() {
			t.Error("still stale after DNS answers the served set")
		}
	})
}

// TestStaleFor: after stale_for the set is still served; one error is logged.
func TestStaleFor(t *testing.T) {
	s := dnstest.Start(t)
	srv4(s, svc)
	r := newRunner(t, DNSConfig{
		Type: "srv", Name: svc, Servers: []string{s.Addr}, Timeout: answerTimeout, Attempts: 1,
		MinRefresh: time.Second, MaxRefresh: 4 * time.Second, StaleFor: 20 * time.Second,
		MaxShrink: 0.5, Confirm: 3,
	})
	r.lookup()
	s.SetFaults(dnstest.Servfail)
	for i := range 20 { // 1+2+4+4*17 s ≫ 20 s of failures
		r.lookup()
		if i == 2 && r.logs.count("longer than stale_for") != 0 {
			t.Fatal("stale_for reported too early")
		}
	}
	if got := addrs(r.last()); !slices.Equal(got, want4) {
		t.Fatalf("set %v after stale_for, want %v", got, want4)
	}
	if len(r.published()) != 1 {
		t.Errorf("%d updates, want 1", len(r.published()))
	}
	if n := r.logs.count(`"level":"ERROR"`, "longer than stale_for"); n != 1 {
		t.Errorf("stale_for expiry logged %d times, want once:\n%s", n, r.logs)
	}
	if !r.obs.isStale() {
		t.Error("not stale")
	}
}

// TestShrinkGuard: through Run, a big shrink applies only after confirm
// identical answers; a small one at once.
func TestShrinkGuard(t *testing.T) {
	s := dnstest.Start(t)
	srv4(s, svc)
	r := newRunner(t, DNSConfig{
		Type: "srv", Name: svc, Servers: []string{s.Addr}, Timeout: answerTimeout,
		MinRefresh: time.Second, MaxRefresh: 30 * time.Second, MaxShrink: 0.5, Confirm: 3,
	})
	r.lookup()
	// Remove one of four (25%): at once.
	s.Set(svc, dns.TypeSRV,
		svc+" 30 IN SRV 10 5 8080 r1.svc.test.",
		svc+" 30 IN SRV 10 5 8080 r2.svc.test.",
		svc+" 30 IN SRV 10 5 8080 r3.svc.test.")
	r.lookup()
	if got := len(r.last()); got != 3 {
		t.Fatalf("small shrink: %d backends, want 3", got)
	}
	// Remove two of three (67%): held twice, applied on the third answer.
	s.Set(svc, dns.TypeSRV, svc+" 30 IN SRV 10 5 8080 r1.svc.test.")
	for i := 1; i <= 2; i++ {
		if w := r.lookup(); w != time.Second {
			t.Errorf("held answer %d: next lookup in %v, want min_refresh", i, w)
		}
		if got := len(r.last()); got != 3 {
			t.Fatalf("after %d destructive answers: %d backends, want 3", i, got)
		}
		if !r.obs.isStale() {
			t.Errorf("not stale while holding a destructive answer")
		}
	}
	r.lookup()
	if got := addrs(r.last()); !slices.Equal(got, []string{"10.0.0.1:8080"}) {
		t.Fatalf("after confirm: %v", got)
	}
	if r.obs.isStale() {
		t.Error("stale after the confirmed answer applied")
	}
	// Growth: at once.
	srv4(s, svc)
	r.lookup()
	if got := addrs(r.last()); !slices.Equal(got, want4) {
		t.Fatalf("growth: %v", got)
	}
}

// TestNothingBeforeFirstSuccess: failures and empty answers before the first
// good answer publish nothing.
func TestNothingBeforeFirstSuccess(t *testing.T) {
	s := dnstest.Start(t)
	r := newRunner(t, DNSConfig{Type: "srv", Name: svc, Servers: []string{s.Addr}, Timeout: answerTimeout, Attempts: 1, Confirm: 1})
	r.lookup() // NXDOMAIN: no records
	s.SetFaults(dnstest.Servfail)
	r.lookup()
	s.SetFaults(dnstest.Empty)
	r.lookup()
	if p := r.published(); len(p) != 0 {
		t.Fatalf("published %v before the first success", p)
	}
	s.SetFaults()
	srv4(s, svc)
	r.lookup()
	if got := addrs(r.last()); !slices.Equal(got, want4) {
		t.Fatalf("got %v", got)
	}
}

// TestRefreshClamp: the next lookup follows the answer's smallest TTL,
// clamped to [min_refresh, max_refresh], with ±10% jitter.
func TestRefreshClamp(t *testing.T) {
	cases := []struct {
		name string
		ttl  int
		rand float64
		want time.Duration
	}{
		{"ttl below min", 0, 0.5, 2 * time.Second},
		{"ttl inside", 7, 0.5, 7 * time.Second},
		{"ttl above max", 3600, 0.5, 20 * time.Second},
		{"jitter low", 10, 0, 9 * time.Second},
		{"jitter high", 10, 1, 11 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := dnstest.Start(t)
			s.Add("api.test. " + strconv.Itoa(tc.ttl) + " IN A 10.2.0.1")
			r := newRunner(t, DNSConfig{
				Type: "a", Name: "api.test.", Port: 80, Servers: []string{s.Addr},
				MinRefresh: 2 * time.Second, MaxRefresh: 20 * time.Second,
			}, func(d *DNS) { d.Rand = func() float64 { return tc.rand } })
			if got := r.lookup(); got != tc.want {
				t.Errorf("next lookup in %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSRV: targets resolved (from glue or by follow-up queries), priorities
// and weights carried, weight 0 → 1, "." skipped, IPv6 bracketed.
func TestSRV(t *testing.T) {
	records := []string{
		svc + " 60 IN SRV 10 60 8080 a.api.test.",
		svc + " 60 IN SRV 10 0 8081 b.api.test.",
		svc + " 60 IN SRV 20 5 9090 c.api.test.",
		svc + " 60 IN SRV 30 5 9090 .",
		svc + " 60 IN SRV 10 5 8080 gone.api.test.", // no address: left out
		"a.api.test. 15 IN A 10.3.0.1",
		"b.api.test. 60 IN A 10.3.0.2",
		"b.api.test. 60 IN AAAA 2001:db8::2",
		"c.api.test. 60 IN A 10.3.0.3",
	}
	want := []Backend{
		{Address: "10.3.0.1:8080", Weight: 60, Priority: 10},
		{Address: "10.3.0.2:8081", Weight: 1, Priority: 10},
		{Address: "[2001:db8::2]:8081", Weight: 1, Priority: 10},
		{Address: "10.3.0.3:9090", Weight: 5, Priority: 20},
	}
	for _, glue := range []bool{true, false} {
		name := map[bool]string{true: "glue", false: "follow-up queries"}[glue]
		t.Run(name, func(t *testing.T) {
			s := dnstest.Start(t)
			s.SetGlue(glue)
			s.Add(records...)
			d := NewDNS(DNSConfig{Type: "srv", Name: svc, Servers: []string{s.Addr}}, nil, nil)
			got, ttl, err := d.Lookup(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("got  %v\nwant %v", got, want)
			}
			if ttl != 15*time.Second {
				t.Errorf("ttl %v, want the smallest used, 15s", ttl)
			}
		})
	}
}

// TestSRVTargetFailure: a target whose address query fails fails the lookup
// instead of dropping the target.
func TestSRVTargetFailure(t *testing.T) {
	s := dnstest.Start(t)
	s.SetGlue(false)
	srv4(s, svc)
	// Query 1 is the SRV; query 2+ the targets: fail one.
	s.SetFaults(dnstest.OK, dnstest.OK, dnstest.Servfail, dnstest.OK, dnstest.OK, dnstest.OK, dnstest.OK, dnstest.OK, dnstest.OK)
	d := NewDNS(DNSConfig{Type: "srv", Name: svc, Servers: []string{s.Addr}, Attempts: 1}, nil, nil)
	// Query 3 may be a target's A or its AAAA (they are asked together).
	// A source that has seen IPv6 fails the lookup on either; one that has
	// not tolerates a failing AAAA (TestFailingAAAAQueries), so state it.
	d.seenV6.Store(true)
	_, _, err := d.Lookup(context.Background())
	if got := ResultOf(err); got != ResultServfail {
		t.Fatalf("result %q (%v), want servfail", got, err)
	}
}

func TestA(t *testing.T) {
	cases := []struct {
		name    string
		records []string
		faults  []dnstest.Fault
		want    []string
		result  string
	}{
		{"v4 and v6", []string{"api.test. 30 IN A 10.4.0.1", "api.test. 30 IN A 10.4.0.2", "api.test. 30 IN AAAA ::1"},
			nil, []string{"10.4.0.1:443", "10.4.0.2:443", "[::1]:443"}, ResultOK},
		{"cname", []string{"api.test. 30 IN CNAME real.test.", "real.test. 30 IN A 10.4.0.9"},
			nil, nil, ResultEmpty}, // our test server does not chase CNAMEs; a recursive one would
		{"nxdomain", nil, nil, nil, ResultNXDomain},
		{"empty", []string{"api.test. 30 IN TXT hello"}, nil, nil, ResultEmpty},
		{"servfail", []string{"api.test. 30 IN A 10.4.0.1"}, []dnstest.Fault{dnstest.Servfail}, nil, ResultServfail},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := dnstest.Start(t)
			s.Add(tc.records...)
			s.SetFaults(tc.faults...)
			d := NewDNS(DNSConfig{Type: "a", Name: "api.test", Port: 443, Servers: []string{s.Addr}, Timeout: answerTimeout, Attempts: 1}, nil, nil)
			got, _, err := d.Lookup(context.Background())
			if r := ResultOf(err); r != tc.result {
				t.Fatalf("result %q (%v), want %q", r, err, tc.result)
			}
			for _, b := range got {
				if b.Weight != 1 {
					t.Errorf("%s weight %d, want 1", b.Address, b.Weight)
				}
			}
			if !slices.Equal(addrs(got), tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("got %v, want %v", addrs(got), tc.want)
			}
		})
	}
}

// TestRecordsCNAME: answers through a CNAME chain, as a recursive resolver
// sends them, are followed.
func TestRecordsCNAME(t *testing.T) {
	m := new(dns.Msg)
	for _, r := range []string{"api.test. 30 IN CNAME b.test.", "b.test. 30 IN CNAME c.test.", "c.test. 30 IN A 10.5.0.1", "other.test. 30 IN A 10.9.9.9"} {
		rr, _ := dns.NewRR(r)
		m.Answer = append(m.Answer, rr)
	}
	ips, _ := addrRecords(m, "api.test", dns.TypeA)
	if !slices.Equal(ips, []string{"10.5.0.1"}) {
		t.Errorf("got %v", ips)
	}
}

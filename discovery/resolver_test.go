package discovery

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/holdfast-lb/holdfast/discovery/dnstest"
)

// Timeouts for tests on a loaded CI machine: answerTimeout where a server
// is expected to answer (it costs nothing when it does), timeoutTimeout
// where the server is made not to answer and the timeout is the point (it
// still has to be long enough for the other server to answer in time).
const (
	answerTimeout  = 5 * time.Second
	timeoutTimeout = time.Second
)

// timeoutFor picks the query timeout for a test whose faults are fs.
func timeoutFor(fs ...dnstest.Fault) time.Duration {
	for _, f := range fs {
		if f == dnstest.Timeout {
			return timeoutTimeout
		}
	}
	return answerTimeout
}

// waitQueries polls s until it has counted want queries or the deadline
// passes: a server that timed out may count a query after the client gave up.
func waitQueries(s *dnstest.Server, want int) int {
	deadline := time.Now().Add(waitLimit)
	for s.Queries() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling with a deadline
	}
	return s.Queries()
}

// TestResolverFailover: every failure kind on the first server makes the
// resolver ask the second, which answers.
func TestResolverFailover(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		fault dnstest.Fault
		// wantFirst is the result the first server's query is classified as.
		wantFirst string
	}{
		{"servfail", dnstest.Servfail, ResultServfail},
		{"refused", dnstest.Refused, ResultRefused},
		{"timeout", dnstest.Timeout, ResultTimeout},
		{"garbage", dnstest.Garbage, ResultError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bad, good := dnstest.Start(t), dnstest.Start(t)
			for _, s := range []*dnstest.Server{bad, good} {
				s.Set("api.test.", dns.TypeA, "api.test. 30 IN A 10.1.1.1")
			}
			bad.SetFaults(tc.fault)
			obs := newRecObserver()
			log, logs := newLogger(t)
			r := NewResolver("default", []string{bad.Addr, good.Addr}, timeoutFor(tc.fault), 1, log)
			r.Observer = obs
			reply, err := r.Query(context.Background(), "api.test", dns.TypeA)
			if err != nil {
				t.Fatalf("Query: %v", err)
			}
			if got := len(records(reply, "api.test.", dns.TypeA)); got != 1 {
				t.Fatalf("got %d A records, want 1", got)
			}
			if nb, ng := waitQueries(bad, 1), good.Queries(); nb != 1 || ng != 1 {
				t.Errorf("queries: first %d, second %d; want 1 and 1", nb, ng)
			}
			if n := obs.servers[bad.Addr+" "+tc.wantFirst]; n != 1 {
				t.Errorf("first server results %v, want one %q", obs.servers, tc.wantFirst)
			}
			if n := logs.count(`"server":"`+bad.Addr+`"`, "failing"); n != 1 {
				t.Errorf("want one log line about the failing server, got %d:\n%s", n, logs)
			}
		})
	}
}

// TestResolverAllFail: when every server fails, the lookup fails with the
// last failure's classification.
func TestResolverAllFail(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		faults []dnstest.Fault
		want   string
	}{
		{"servfail", []dnstest.Fault{dnstest.Servfail}, ResultServfail},
		{"refused", []dnstest.Fault{dnstest.Refused}, ResultRefused},
		{"timeout", []dnstest.Fault{dnstest.Timeout}, ResultTimeout},
		{"garbage", []dnstest.Fault{dnstest.Garbage}, ResultError},
		// UDP answers truncated, then the TCP retry gets no answer.
		{"truncated and TCP fails", []dnstest.Fault{dnstest.Truncate, dnstest.Timeout}, ResultTruncated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := dnstest.Start(t), dnstest.Start(t)
			for _, s := range []*dnstest.Server{a, b} {
				s.Set("api.test.", dns.TypeA, "api.test. 30 IN A 10.1.1.1")
				s.SetFaults(tc.faults...)
			}
			r := NewResolver("default", []string{a.Addr, b.Addr}, timeoutFor(tc.faults...), 2, nil)
			_, err := r.Query(context.Background(), "api.test.", dns.TypeA)
			if got := ResultOf(err); got != tc.want {
				t.Fatalf("result %q (%v), want %q", got, err, tc.want)
			}
			// Attempts are rounds over all servers: each asked twice.
			perServer := 2 * len(tc.faults)
			if na, nb := waitQueries(a, perServer), waitQueries(b, perServer); na != perServer || nb != perServer {
				t.Errorf("queries %d and %d, want %d each", na, nb, perServer)
			}
		})
	}
}

// TestResolverFinalAnswers: NXDOMAIN and empty NOERROR are answers, not
// failures: the next server is not asked.
func TestResolverFinalAnswers(t *testing.T) {
	cases := []struct {
		name  string
		fault dnstest.Fault
		want  string
	}{
		{"nxdomain", dnstest.NXDomain, ResultNXDomain},
		{"empty", dnstest.Empty, ResultEmpty},
		{"ok", dnstest.OK, ResultOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := dnstest.Start(t), dnstest.Start(t)
			a.Set("api.test.", dns.TypeA, "api.test. 30 IN A 10.1.1.1")
			a.SetFaults(tc.fault)
			r := NewResolver("default", []string{a.Addr, b.Addr}, answerTimeout, 2, nil)
			q := new(dns.Msg)
			q.SetQuestion("api.test.", dns.TypeA)
			reply, err := r.Query(context.Background(), "api.test.", dns.TypeA)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := classifyReply(q, reply); got != tc.want {
				t.Errorf("classified %q, want %q", got, tc.want)
			}
			if b.Queries() != 0 {
				t.Errorf("second server asked %d times, want 0", b.Queries())
			}
		})
	}
}

// TestResolverTruncatedToTCP: an SRV answer of 300 records (with glue)
// does not fit the 4096-byte EDNS0 buffer; it comes back truncated over
// UDP and whole over TCP.
func TestResolverTruncatedToTCP(t *testing.T) {
	t.Parallel()
	for _, glue := range []bool{true, false} {
		name := "glue"
		if !glue {
			name = "no glue"
		}
		t.Run(name, func(t *testing.T) {
			s := dnstest.Start(t)
			s.SetGlue(glue)
			s.Add(dnstest.SRVRecords("_http._tcp.big.test.", "big.test", 300, 10, 1, 8080)...)
			r := NewResolver("default", []string{s.Addr}, answerTimeout, 1, nil)
			reply, err := r.Query(context.Background(), "_http._tcp.big.test.", dns.TypeSRV)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(records(reply, "_http._tcp.big.test.", dns.TypeSRV)); got != 300 {
				t.Fatalf("got %d SRV records, want 300", got)
			}
			log := s.Log()
			if len(log) != 2 || log[0].Net != "udp" || log[1].Net != "tcp" {
				t.Errorf("queries %+v, want one over UDP then one over TCP", log)
			}

			// And the source turns them into 300 backends.
			d := NewDNS(DNSConfig{Type: "srv", Name: "_http._tcp.big.test.", Servers: []string{s.Addr}, Timeout: answerTimeout}, nil, nil)
			set, _, err := d.Lookup(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(set) != 300 {
				t.Fatalf("got %d backends, want 300", len(set))
			}
		})
	}
}

// TestResolverEveryNth: a server failing every 3rd query never fails a
// lookup when a second server is there.
func TestResolverEveryNth(t *testing.T) {
	a, b := dnstest.Start(t), dnstest.Start(t)
	for _, s := range []*dnstest.Server{a, b} {
		s.Set("api.test.", dns.TypeA, "api.test. 30 IN A 10.1.1.1")
	}
	a.SetFaults(dnstest.EveryNth(3, dnstest.Servfail)...)
	r := NewResolver("default", []string{a.Addr, b.Addr}, answerTimeout, 1, nil)
	for i := range 9 {
		if _, err := r.Query(context.Background(), "api.test.", dns.TypeA); err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
	}
	if a.Queries() != 9 || b.Queries() != 3 {
		t.Errorf("queries %d and %d, want 9 and 3", a.Queries(), b.Queries())
	}
}

func TestResolverContextCancel(t *testing.T) {
	s := dnstest.Start(t)
	s.SetFaults(dnstest.Timeout)
	r := NewResolver("default", []string{s.Addr}, 5*time.Second, 3, nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := r.Query(ctx, "api.test.", dns.TypeA)
		errc <- err
	}()
	// Wait until the query reached the server, then cancel.
	deadline := time.Now().Add(waitLimit)
	for s.Queries() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling with a deadline, not waiting for an outcome
	}
	cancel()
	select {
	case err := <-errc:
		if err != context.Canceled {
			t.Errorf("got %v, want context.Canceled", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Query did not return after cancel")
	}
}

func TestSystemServers(t *testing.T) {
	cases := []struct {
		name    string
		conf    string
		want    []string
		wantErr bool
	}{
		{"two", "nameserver 10.0.0.2\nnameserver 10.0.0.3\n", []string{"10.0.0.2:53", "10.0.0.3:53"}, false},
		{"ipv6", "nameserver ::1\n", []string{"[::1]:53"}, false},
		{"none", "search example.com\n", nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "resolv.conf")
			if err := os.WriteFile(p, []byte(tc.conf), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := serversFromFile(p)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := os.Stat("/etc/resolv.conf"); err == nil {
		if _, err := SystemServers(); err != nil {
			t.Logf("SystemServers on this machine: %v", err)
		}
	}
}

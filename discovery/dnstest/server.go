// Package dnstest runs an in-process DNS server on loopback (UDP and TCP) with
// a mutable record set and deterministic fault injection, for tests of the
// discovery package and for end-to-end tests of other packages.
//
// Faults are chosen by a query counter, like CoreDNS's erratic plugin, so a
// failing test reproduces: with SetFaults(Servfail, Servfail, OK) queries 1 and
// 2 get SERVFAIL, query 3 is answered, query 4 gets SERVFAIL, and so on.
package dnstest

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Fault is what the server does with one query instead of (or on top of)
// answering it from its records.
type Fault int

const (
	// OK answers from the records: NXDOMAIN if the name has no records at
	// all, an empty NOERROR if it has none of the asked type. Over UDP an
	// answer larger than the client's buffer (EDNS0 size, else 512) is
	// truncated with the TC bit set, as a real server does.
	OK Fault = iota
	// Servfail answers SERVFAIL.
	Servfail
	// Refused answers REFUSED.
	Refused
	// NXDomain answers NXDOMAIN whatever the records say.
	NXDomain
	// Empty answers NOERROR with no records.
	Empty
	// Timeout sends nothing, so the client times out.
	Timeout
	// Garbage sends bytes that carry the query's ID but do not parse.
	Garbage
	// Truncate answers over UDP with the TC bit set and no records; over TCP
	// it answers normally.
	Truncate
)

var faultNames = [...]string{"ok", "servfail", "refused", "nxdomain", "empty", "timeout", "garbage", "truncate"}

func (f Fault) String() string {
	if int(f) < len(faultNames) {
		return faultNames[f]
	}
	return fmt.Sprintf("fault(%d)", int(f))
}

// Server is a DNS server on 127.0.0.1 serving the same port over UDP and TCP.
// All methods are safe to call concurrently, also while queries are served.
type Server struct {
	// Addr is host:port, the same for UDP and TCP.
	Addr string

	udp *dns.Server
	tcp *dns.Server

	mu      sync.Mutex
	records []dns.RR
	glue    bool
	faults  []Fault
	queries int
	udpMax  int // 0: the client's buffer size decides
	log     []Query
}

// Query records one query the server received and what it did with it.
type Query struct {
	N     int    // 1-based query counter
	Net   string // "udp" or "tcp"
	Name  string
	Type  uint16
	Fault Fault
}

// Start starts a server on 127.0.0.1:0 and stops it when tb ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := NewServer()
	if err != nil {
		tb.Fatalf("dnstest: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// NewServer starts a server on 127.0.0.1 on a free port (the same for UDP and
// TCP). Close stops it.
func NewServer() (*Server, error) {
	// Bind TCP first on :0, then UDP on the same port; retry a few times in
	// the unlikely case the UDP port is taken.
	var lastErr error
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err != nil {
			ln.Close()
			lastErr = err
			continue
		}
		s := &Server{Addr: ln.Addr().String(), glue: true}
		s.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve)}
		s.tcp = &dns.Server{Listener: ln, Handler: dns.HandlerFunc(s.serve)}
		if err := start(s.udp); err != nil {
			ln.Close()
			pc.Close()
			return nil, err
		}
		if err := start(s.tcp); err != nil {
			s.udp.Shutdown()
			ln.Close()
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("no free port for UDP and TCP: %w", lastErr)
}

func start(srv *dns.Server) error {
	started := make(chan struct{})
	errc := make(chan error, 1)
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { errc <- srv.ActivateAndServe() }()
	select {
	case <-started:
		return nil
	case err := <-errc:
		return err
	}
}

// Close stops the server.
func (s *Server) Close() {
	s.udp.Shutdown()
	s.tcp.Shutdown()
}

// Add adds records in zone-file syntax, e.g.
// "_http._tcp.api.test. 30 IN SRV 10 5 8080 a.api.test.". It panics on a
// record that does not parse (a bug in the test).
func (s *Server) Add(records ...string) {
	rrs := make([]dns.RR, 0, len(records))
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil || rr == nil {
			panic(fmt.Sprintf("dnstest: bad record %q: %v", r, err))
		}
		rrs = append(rrs, rr)
	}
	s.mu.Lock()
	s.records = append(s.records, rrs...)
	s.mu.Unlock()
}

// Set replaces every record of name and type with records (zone-file syntax).
func (s *Server) Set(name string, qtype uint16, records ...string) {
	s.Remove(name, qtype)
	s.Add(records...)
}

// Remove deletes every record of name and type; qtype dns.TypeANY deletes
// every record of name.
func (s *Server) Remove(name string, qtype uint16) {
	name = dns.CanonicalName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.records[:0]
	for _, rr := range s.records {
		h := rr.Header()
		if dns.CanonicalName(h.Name) == name && (qtype == dns.TypeANY || h.Rrtype == qtype) {
			continue
		}
		kept = append(kept, rr)
	}
	clear(s.records[len(kept):])
	s.records = kept
}

// SetGlue chooses whether SRV answers carry the targets' A/AAAA records in
// the Additional section (the default) or leave the client to ask for them.
func (s *Server) SetGlue(on bool) {
	s.mu.Lock()
	s.glue = on
	s.mu.Unlock()
}

// SetFaults sets the fault pattern: query n (counted from 1 since the server
// started, over UDP and TCP together) gets pattern[(n-1) % len(pattern)]. No
// arguments means answer every query normally.
func (s *Server) SetFaults(pattern ...Fault) {
	s.mu.Lock()
	s.faults = append([]Fault(nil), pattern...)
	s.mu.Unlock()
}

// SetUDPLimit caps UDP answers at n bytes whatever buffer the client
// advertises, as a path that drops larger datagrams would (an answer that
// does not fit is truncated with the TC bit set); 0 removes the cap.
func (s *Server) SetUDPLimit(n int) {
	s.mu.Lock()
	s.udpMax = n
	s.mu.Unlock()
}

// EveryNth returns a pattern that applies f to every nth query and answers
// the others normally.
func EveryNth(n int, f Fault) []Fault {
	p := make([]Fault, n)
	p[n-1] = f
	return p
}

// Queries returns how many queries the server has received.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// Log returns every query received so far, in order.
func (s *Server) Log() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Query(nil), s.log...)
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	network := "udp"
	if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	var q dns.Question
	if len(req.Question) > 0 {
		q = req.Question[0]
	}

	s.mu.Lock()
	s.queries++
	fault := OK
	if len(s.faults) > 0 {
		fault = s.faults[(s.queries-1)%len(s.faults)]
	}
	s.log = append(s.log, Query{N: s.queries, Net: network, Name: q.Name, Type: q.Qtype, Fault: fault})
	answer, extra, exists := s.lookup(q)
	udpMax := s.udpMax
	s.mu.Unlock()

	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	switch fault {
	case Timeout:
		return
	case Garbage:
		b := []byte{byte(req.Id >> 8), byte(req.Id), 0x81, 0x80, 0, 1, 0, 5, 0, 0, 0, 0, 0xff, 0xfe, 0x01}
		w.Write(b)
		return
	case Servfail:
		m.Rcode = dns.RcodeServerFailure
	case Refused:
		m.Rcode = dns.RcodeRefused
	case NXDomain:
		m.Rcode = dns.RcodeNameError
	case Empty:
	case Truncate:
		if network == "udp" {
			m.Truncated = true
			break
		}
		fallthrough
	default:
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
		m.Answer = answer
		m.Extra = extra
	}
	size := dns.MaxMsgSize
	if network == "udp" {
		size = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		if udpMax > 0 {
			size = min(size, udpMax)
		}
	}
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
	}
	m.Truncate(size)
	w.WriteMsg(m)
}

// lookup returns copies of the records for q, glue for SRV targets, and
// whether the name exists at all. s.mu must be held.
func (s *Server) lookup(q dns.Question) (answer, extra []dns.RR, exists bool) {
	name := dns.CanonicalName(q.Name)
	for _, rr := range s.records {
		h := rr.Header()
		if dns.CanonicalName(h.Name) != name {
			continue
		}
		exists = true
		if h.Rrtype == q.Qtype {
			answer = append(answer, dns.Copy(rr))
		}
	}
	if q.Qtype != dns.TypeSRV || !s.glue {
		return answer, nil, exists
	}
	// Index the address records once: a 1,000-target answer would
	// otherwise scan every record per target.
	addrs := map[string][]dns.RR{}
	for _, rr := range s.records {
		if h := rr.Header(); h.Rrtype == dns.TypeA || h.Rrtype == dns.TypeAAAA {
			n := dns.CanonicalName(h.Name)
			addrs[n] = append(addrs[n], rr)
		}
	}
	for _, a := range answer {
		for _, rr := range addrs[dns.CanonicalName(a.(*dns.SRV).Target)] {
			extra = append(extra, dns.Copy(rr))
		}
	}
	return answer, extra, exists
}

// SRVRecords returns n SRV records for name, with targets t0..t(n-1) under
// domain, all with the given priority and weight and ports from port, and
// the matching A records 10.x.y.z: handy for large answers.
func SRVRecords(name, domain string, n, priority, weight, port int) []string {
	var out []string
	domain = strings.TrimSuffix(domain, ".")
	for i := range n {
		target := fmt.Sprintf("t%d.%s.", i, domain)
		out = append(out,
			fmt.Sprintf("%s 30 IN SRV %d %d %d %s", name, priority, weight, port, target),
			fmt.Sprintf("%s 30 IN A 10.%d.%d.%d", target, (i>>16)&0xff, (i>>8)&0xff, i&0xff))
	}
	return out
}

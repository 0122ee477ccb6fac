package dnstest

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

func ask(t *testing.T, s *Server, network, name string, qtype uint16) (*dns.Msg, error) {
	return askTimeout(t, s, network, name, qtype, 5*time.Second)
}

func askTimeout(t *testing.T, s *Server, network, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(4096, false)
	c := &dns.Client{Net: network, Timeout: timeout}
	r, _, err := c.Exchange(m, s.Addr)
	return r, err
}

func TestFaults(t *testing.T) {
	cases := []struct {
		name      string
		fault     Fault
		wantRcode int
		wantErr   bool
		wantTC    bool
		answers   int
	}{
		{"ok", OK, dns.RcodeSuccess, false, false, 1},
		{"servfail", Servfail, dns.RcodeServerFailure, false, false, 0},
		{"refused", Refused, dns.RcodeRefused, false, false, 0},
		{"nxdomain", NXDomain, dns.RcodeNameError, false, false, 0},
		{"empty", Empty, dns.RcodeSuccess, false, false, 0},
		{"timeout", Timeout, 0, true, false, 0},
		{"garbage", Garbage, 0, true, false, 0},
		{"truncate", Truncate, dns.RcodeSuccess, false, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := Start(t)
			s.Add("a.test. 30 IN A 10.0.0.1")
			s.SetFaults(tc.fault)
			timeout := 5 * time.Second
			if tc.fault == Timeout {
				timeout = 300 * time.Millisecond
			}
			r, err := askTimeout(t, s, "udp", "a.test.", dns.TypeA, timeout)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if r.Rcode != tc.wantRcode || r.Truncated != tc.wantTC || len(r.Answer) != tc.answers {
				t.Errorf("rcode %d tc %v answers %d; want %d %v %d", r.Rcode, r.Truncated, len(r.Answer), tc.wantRcode, tc.wantTC, tc.answers)
			}
		})
	}
}

func TestPatternAndTruncation(t *testing.T) {
	s := Start(t)
	s.Add(SRVRecords("_x._tcp.big.test.", "big.test", 300, 1, 1, 80)...)
	s.SetFaults(Servfail, Servfail, OK)
	var rcodes []int
	for range 6 {
		r, err := ask(t, s, "tcp", "_x._tcp.big.test.", dns.TypeSRV)
		if err != nil {
			t.Fatal(err)
		}
		rcodes = append(rcodes, r.Rcode)
		if r.Rcode == dns.RcodeSuccess && (len(r.Answer) != 300 || len(r.Extra) < 300) {
			t.Errorf("TCP answer: %d SRV, %d extra; want 300 and 300+", len(r.Answer), len(r.Extra))
		}
	}
	want := []int{2, 2, 0, 2, 2, 0}
	for i := range want {
		if rcodes[i] != want[i] {
			t.Fatalf("rcodes %v, want %v", rcodes, want)
		}
	}
	s.SetFaults()
	r, err := ask(t, s, "udp", "_x._tcp.big.test.", dns.TypeSRV)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated {
		t.Errorf("300 SRV records over UDP not truncated (%d answers)", len(r.Answer))
	}
	if n := s.Queries(); n != 7 {
		t.Errorf("Queries %d, want 7", n)
	}
	s.Remove("_x._tcp.big.test.", dns.TypeSRV)
	r, _ = ask(t, s, "udp", "_x._tcp.big.test.", dns.TypeSRV)
	if r == nil || r.Rcode != dns.RcodeNameError {
		t.Errorf("removed name: %v, want NXDOMAIN", r)
	}
}

// TestUDPLimit: with a 512-byte cap a 40-record answer is truncated over
// UDP though the client advertises 4096, and complete over TCP.
func TestUDPLimit(t *testing.T) {
	s := Start(t)
	s.Add(SRVRecords("_http._tcp.big.test.", "big.test.", 40, 10, 10, 8080)...)
	r, err := ask(t, s, "udp", "_http._tcp.big.test.", dns.TypeSRV)
	if err != nil || r.Truncated {
		t.Fatalf("uncapped udp: truncated=%v err=%v", r != nil && r.Truncated, err)
	}
	s.SetUDPLimit(512)
	r, err = ask(t, s, "udp", "_http._tcp.big.test.", dns.TypeSRV)
	if r != nil {
		r.Compress = true
	}
	if err != nil || !r.Truncated || r.Len() > 512 {
		t.Fatalf("capped udp: want truncated within 512 bytes, got tc=%v len=%d err=%v", r != nil && r.Truncated, r.Len(), err)
	}
	r, err = ask(t, s, "tcp", "_http._tcp.big.test.", dns.TypeSRV)
	if err != nil || r.Truncated || len(r.Answer) != 40 {
		t.Fatalf("tcp: want 40 answers, got err=%v", err)
	}
}

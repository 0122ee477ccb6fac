package discovery

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/miekg/dns"
)

// fuzzSeeds are DNS replies (wire format) that start FuzzAnswer off; the same
// are checked in under testdata/fuzz/FuzzAnswer (regenerate with
// HOLDFAST_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds ./discovery).
func fuzzSeeds(tb testing.TB) map[string][]byte {
	tb.Helper()
	reply := func(qname string, qtype uint16, rcode int, tc bool, answer, extra, ns []string) []byte {
		m := new(dns.Msg)
		m.SetQuestion(qname, qtype)
		m.Id = 0x4242 // stable seeds
		m.Response = true
		m.Rcode = rcode
		m.Truncated = tc
		for _, sec := range []struct {
			in  []string
			out *[]dns.RR
		}{{answer, &m.Answer}, {extra, &m.Extra}, {ns, &m.Ns}} {
			for _, r := range sec.in {
				rr, err := dns.NewRR(r)
				if err != nil {
					tb.Fatalf("seed record %q: %v", r, err)
				}
				*sec.out = append(*sec.out, rr)
			}
		}
		m.SetEdns0(4096, false)
		m.Compress = true
		b, err := m.Pack()
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	srv := "_http._tcp.api.test."
	return map[string][]byte{
		"srv-glue": reply(srv, dns.TypeSRV, dns.RcodeSuccess, false,
			[]string{srv + " 30 IN SRV 10 0 8080 a.api.test.", srv + " 30 IN SRV 20 5 8081 b.api.test.", srv + " 30 IN SRV 0 0 0 ."},
			[]string{"a.api.test. 30 IN A 10.0.0.1", "a.api.test. 30 IN AAAA 2001:db8::1", "x.test. 30 IN A 10.9.9.9"}, nil),
		"srv-noglue": reply(srv, dns.TypeSRV, dns.RcodeSuccess, false,
			[]string{srv + " 30 IN SRV 10 5 8080 a.api.test."}, nil, nil),
		"nxdomain-soa": reply(srv, dns.TypeSRV, dns.RcodeNameError, false, nil, nil,
			[]string{"api.test. 300 IN SOA ns.api.test. host.api.test. 1 3600 600 86400 60"}),
		"empty":     reply("api.test.", dns.TypeA, dns.RcodeSuccess, false, nil, nil, nil),
		"servfail":  reply("api.test.", dns.TypeA, dns.RcodeServerFailure, false, nil, nil, nil),
		"truncated": reply(srv, dns.TypeSRV, dns.RcodeSuccess, true, nil, nil, nil),
		"a-cname": reply("api.test.", dns.TypeA, dns.RcodeSuccess, false,
			[]string{"api.test. 30 IN CNAME b.test.", "b.test. 30 IN CNAME api.test.", "b.test. 30 IN A 10.0.0.2", "api.test. 30 IN AAAA ::1"}, nil, nil),
		"garbage":      {0x12, 0x34, 0x81, 0x80, 0, 1, 0, 5, 0, 0, 0, 0, 0xff, 0xfe, 0x01},
		"pointer-loop": {0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1},
		"short":        {0, 1, 0x81},
	}
}

// FuzzAnswer feeds arbitrary bytes as a DNS reply through the answer path
// (unpack, classify, extract SRV/A records and glue, build backends). It must
// never panic, and every backend built must be valid.
func FuzzAnswer(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		reply := new(dns.Msg)
		if err := reply.Unpack(raw); err != nil {
			return // the resolver classifies this as ResultError
		}
		_ = reply.String()
		name := "_http._tcp.api.test."
		if len(reply.Question) > 0 {
			name = reply.Question[0].Name
		}
		for _, qtype := range []uint16{dns.TypeSRV, dns.TypeA, dns.TypeAAAA} {
			q := new(dns.Msg)
			q.SetQuestion(dns.Fqdn(name), qtype)
			result, _ := classifyReply(q, reply)
			switch result {
			case ResultOK, ResultServfail, ResultRefused, ResultNXDomain, ResultEmpty, ResultTruncated, ResultError:
			default:
				t.Fatalf("unknown result %q", result)
			}
			ips, _ := addrRecords(reply, name, qtype)
			for _, ip := range ips {
				if net.ParseIP(ip) == nil {
					t.Fatalf("address %q is not an IP", ip)
				}
			}
		}
		_ = negativeTTL(reply)
		srvs, glue, _, result := srvAnswer(reply, name)
		if result == ResultOK && len(srvs) == 0 {
			t.Fatal("ok with no SRV records")
		}
		for _, b := range srvBackends(srvs, glue) {
			host, _, err := net.SplitHostPort(b.Address)
			if err != nil || net.ParseIP(host) == nil {
				t.Fatalf("bad backend address %q", b.Address)
			}
			if b.Weight < 1 {
				t.Fatalf("backend %q weight %d", b.Address, b.Weight)
			}
		}
	})
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzAnswer when
// HOLDFAST_WRITE_FUZZ_SEEDS=1; otherwise it checks the seeds are checked in.
func TestWriteFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzAnswer")
	for name, b := range fuzzSeeds(t) {
		p := filepath.Join(dir, "seed-"+name)
		if os.Getenv("HOLDFAST_WRITE_FUZZ_SEEDS") == "1" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := os.Stat(p); err != nil {
			t.Errorf("fuzz seed %s not checked in: %v", p, err)
		}
	}
}

package balancer

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/holdfast-lb/holdfast/discovery"
	"github.com/holdfast-lb/holdfast/discovery/dnstest"
)

// BenchmarkSRVApply1000 applies a 1,000-record SRV answer end to end: a
// miekg/dns server on loopback answers (over TCP: the answer does not fit
// UDP), the DNS source parses and guards it, the pool reconciles 1,000
// endpoints and publishes a new picker. Each op is one lookup, triggered
// by hand, whose answer differs from the last by one record; it ends when
// the picker with the new set is published. Target: < 50 ms an apply.
func BenchmarkSRVApply1000(b *testing.B) {
	const name, n = "_http._tcp.big.holdfast.test.", 1000
	srv := dnstest.Start(b)
	// SRVRecords interleaves each SRV record with its target's A record:
	// the A records of t0..t1000 are added once, the SRV answer swapped.
	all := dnstest.SRVRecords(name, "big.holdfast.test", n+1, 10, 10, 8080)
	var srvs []string
	for i := 0; i < len(all); i += 2 {
		srvs = append(srvs, all[i])
		srv.Add(all[i+1])
	}
	answers := [2][]string{srvs[:n], srvs[1:]} // t0..t999, t1..t1000
	srv.Set(name, dns.TypeSRV, answers[0]...)
	src := discovery.NewDNS(discovery.DNSConfig{Pool: "big", Type: "srv", Name: name, Servers: []string{srv.Addr},
		Timeout: 5 * time.Second, MaxShrink: 0.5, MinRefresh: time.Hour, MaxRefresh: time.Hour}, nil, nil)
	tick := make(chan time.Time)
	src.After = func(time.Duration) <-chan time.Time { return tick }
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := NewPool(&Options{Name: "big", Balance: "round_robin", PanicThreshold: 0.5, Source: src, SourceKey: "dns"}, Hooks{}, nil, log)
	ctx, cancel := context.WithCancel(context.Background())
	go p.Run(ctx)
	b.Cleanup(func() { cancel(); <-p.Done() })
	waitPicker(b, p, nil, n)
	has := func(addr string) bool {
		for _, e := range p.Endpoints() {
			if e.Addr == addr {
				return true
			}
		}
		return false
	}
	i := 0
	b.ResetTimer()
	for b.Loop() {
		i++
		b.StopTimer()
		srv.Set(name, dns.TypeSRV, answers[i%2]...)
		prev := p.Picker()
		b.StartTimer()
		tick <- time.Now()
		waitPicker(b, p, prev, n)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/apply")
	if !has("10.0.3.232:8080") && !has("10.0.0.0:8080") { // t1000 or t0

		b.Fatal("set never changed")
	}
}

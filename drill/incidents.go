package drill

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/discovery/dnstest"
)

// incident is one drill: how long it lasts for a config, and how it is
// injected. inject starts it and returns stop (which ends it and waits
// for whatever inject started) and, optionally, a channel closed when the
// incident has run its course before its length is up.
type incident struct {
	name  string
	about string
	// dns: applies only to configs with a DNS-discovered pool.
	dns bool
	// persistent incidents keep going through the settle window (a killed
	// backend stays dead); the others end before it.
	persistent bool
	length     func(cfg *config.Config) time.Duration
	inject     func(ctx context.Context, d *drill, length time.Duration) (stop func(), done <-chan struct{}, err error)
}

// incidents is every drill, in the order a default run goes through them.
var incidents = []incident{
	{
		name: "servfail", dns: true,
		about: "the primary resolver server answers SERVFAIL to 2 of every 3 queries",
		length: func(cfg *config.Config) time.Duration {
			return clamp(5*maxRefresh(cfg, minRefresh), 3*time.Second, 20*time.Second)
		},
		inject: func(_ context.Context, d *drill, _ time.Duration) (func(), <-chan struct{}, error) {
			for _, ss := range d.w.dns {
				ss[0].SetFaults(dnstest.Servfail, dnstest.Servfail, dnstest.OK)
			}
			return d.w.healDNS, nil, nil
		},
	},
	{
		name: "dns-outage", dns: true,
		about: "every resolver server fails (40 s in real life; here 6 × min_refresh, 4 s to 40 s)",
		length: func(cfg *config.Config) time.Duration {
			return clamp(6*maxRefresh(cfg, minRefresh), 4*time.Second, realOutage)
		},
		inject: func(_ context.Context, d *drill, _ time.Duration) (func(), <-chan struct{}, error) {
			d.w.failDNS(dnstest.Servfail)
			return d.w.healDNS, nil, nil
		},
	},
	{
		name: "empty-answer", dns: true,
		about:  "every resolver server answers NOERROR with no records",
		length: destructiveLength,
		inject: func(_ context.Context, d *drill, _ time.Duration) (func(), <-chan struct{}, error) {
			d.w.failDNS(dnstest.Empty)
			return d.w.healDNS, nil, nil
		},
	},
	{
		name: "nxdomain", dns: true,
		about:  "every resolver server answers NXDOMAIN",
		length: destructiveLength,
		inject: func(_ context.Context, d *drill, _ time.Duration) (func(), <-chan struct{}, error) {
			d.w.failDNS(dnstest.NXDomain)
			return d.w.healDNS, nil, nil
		},
	},
	{
		name: "truncation", dns: true, persistent: true,
		about: "the answer grows to 40 records over a path that carries 512-byte UDP answers at most",
		length: func(cfg *config.Config) time.Duration {
			return clamp(4*maxRefresh(cfg, minRefresh)+2*time.Second, 4*time.Second, 20*time.Second)
		},
		inject: injectTruncation,
	},
	{
		name: "flapping", persistent: true,
		about: "one backend of each pool resets every connection every other second",
		length: func(cfg *config.Config) time.Duration {
			return clamp(2*time.Duration(maxInt(cfg, func(p config.Pool) int { return p.Health.Flap.MaxTransitions })+2)*time.Second,
				6*time.Second, 20*time.Second)
		},
		inject: injectFlapping,
	},
	{
		name:  "bad-reload",
		about: "a reload with an invalid config (it must change nothing), then one with a valid config",
		length: func(*config.Config) time.Duration {
			return 3 * time.Second
		},
		inject: injectBadReload,
	},
	{
		name: "backend-kill", persistent: true,
		about: "one backend of each pool dies: its listener and every connection close, in-flight requests included",
		length: func(cfg *config.Config) time.Duration {
			return clamp(maxDur(cfg, func(p config.Pool) time.Duration {
				if p.Health.Type == "none" {
					return 3 * time.Second
				}
				return p.Health.Interval.D() * time.Duration(p.Health.Fall)
			})+2*time.Second, 3*time.Second, 15*time.Second)
		},
		inject: func(_ context.Context, d *drill, _ time.Duration) (func(), <-chan struct{}, error) {
			for _, sp := range d.w.pools {
				sp.backends[0].kill()
			}
			return func() {}, nil, nil
		},
	},
	{
		name:  "conn-explosion",
		about: "2,000 clients connect at once, each sends a request and holds its connection",
		length: func(*config.Config) time.Duration {
			return 15 * time.Second
		},
		inject: injectConnExplosion,
	},
}

func findIncident(name string) *incident {
	for i := range incidents {
		if incidents[i].name == name {
			return &incidents[i]
		}
	}
	return nil
}

// About returns the one-line description of a drill ("" if unknown).
func About(name string) string {
	if in := findIncident(name); in != nil {
		return in.about
	}
	return ""
}

func clamp(d, lo, hi time.Duration) time.Duration { return min(max(d, lo), hi) }

func minRefresh(p config.Pool) time.Duration {
	if p.Discovery == nil {
		return 0
	}
	return p.Discovery.MinRefresh.D()
}

func maxRefresh(cfg *config.Config, f func(config.Pool) time.Duration) time.Duration {
	return maxDur(cfg, f)
}

func maxDur(cfg *config.Config, f func(config.Pool) time.Duration) time.Duration {
	var m time.Duration
	for _, p := range cfg.Pools {
		m = max(m, f(p))
	}
	return m
}

func maxInt(cfg *config.Config, f func(config.Pool) int) int {
	m := 0
	for _, p := range cfg.Pools {
		m = max(m, f(p))
	}
	return m
}

// destructiveLength lets a destructive answer repeat past confirm.
func destructiveLength(cfg *config.Config) time.Duration {
	return clamp(maxDur(cfg, func(p config.Pool) time.Duration {
		if p.Discovery == nil {
			return 0
		}
		return time.Duration(p.Discovery.Confirm+2) * p.Discovery.MinRefresh.D()
	}), 3*time.Second, 30*time.Second)
}

// failDNS makes every simulated resolver server answer every query with f.
func (w *world) failDNS(f dnstest.Fault) {
	for _, ss := range w.dns {
		for _, s := range ss {
			s.SetFaults(f)
		}
	}
}

// healDNS makes every simulated resolver server answer normally again.
func (w *world) healDNS() {
	for _, ss := range w.dns {
		for _, s := range ss {
			s.SetFaults()
		}
	}
}

// truncatedRecords is how many backends the truncation drill's answer names.
const truncatedRecords = 40

func injectTruncation(ctx context.Context, d *drill, length time.Duration) (func(), <-chan struct{}, error) {
	pools := d.w.dnsPools()
	for _, sp := range pools {
		if err := d.w.grow(sp, truncatedRecords); err != nil {
			return nil, nil, err
		}
	}
	for _, ss := range d.w.dns {
		for _, s := range ss {
			s.SetUDPLimit(512)
		}
	}
	for _, sp := range pools {
		d.w.publish(sp)
	}
	// The drill also checks that the whole answer was applied: a truncated
	// UDP answer must be asked again over TCP.
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(length)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for _, sp := range pools {
			n := 0
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if p := d.app.Pool(sp.name); p != nil {
					if st := p.Status().Discovery; st != nil {
						n = st.Backends
					}
				}
				if n >= truncatedRecords {
					break
				}
				select {
				case <-tick.C:
				case <-ctx.Done():
				}
			}
			if n < truncatedRecords {
				d.note(Advice{Pool: sp.name, Warning: true, Text: fmt.Sprintf(
					"%d of the %d records applied within %s (is TCP to the resolver allowed? a truncated UDP answer is asked again over TCP)",
					n, truncatedRecords, length)})
			}
		}
	}()
	return func() { cancel(); wg.Wait() }, nil, nil
}

// flapPeriod is how long the flapper stays up, then down.
const flapPeriod = time.Second

func injectFlapping(ctx context.Context, d *drill, length time.Duration) (func(), <-chan struct{}, error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(flapPeriod)
		defer tick.Stop()
		down := true
		// Bounded: the drill stops it after length + settle; the count
		// is a backstop.
		for range int((length+d.o.Settle)/flapPeriod) + 2 {
			for _, sp := range d.w.pools {
				sp.backends[0].setDown(down)
			}
			down = !down
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
		for _, sp := range d.w.pools {
			sp.backends[0].setDown(false)
		}
	}, nil, nil
}

// reloadGap is the time between the bad and the good reload.
const reloadGap = time.Second

func injectBadReload(ctx context.Context, d *drill, _ time.Duration) (func(), <-chan struct{}, error) {
	text, err := os.ReadFile(d.path)
	if err != nil {
		return nil, nil, err
	}
	// An operator's typo: the user's own config with one unknown key.
	bad := append(append([]byte{}, text...), []byte("\nholdfast_drill_typo: true\n")...)
	if err := os.WriteFile(d.reloadPath, bad, 0o600); err != nil {
		return nil, nil, err
	}
	good, err := d.freshConfig()
	if err != nil {
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := d.app.Reload(); err == nil {
			d.note(Advice{Text: "the invalid config was accepted by the reload"})
		}
		wait(ctx, reloadGap)
		if _, err := d.app.ReloadConfig(good); err != nil {
			d.note(Advice{Text: fmt.Sprintf("the valid reload failed: %v", err)})
		}
	}()
	return func() { <-done }, done, nil
}

func injectConnExplosion(ctx context.Context, d *drill, length time.Duration) (func(), <-chan struct{}, error) {
	ts := targets(d.app.Config())
	n := d.clients
	ctx, cancel := context.WithTimeout(ctx, length)
	var answered, wg sync.WaitGroup
	answered.Add(n)
	recs := make([]record, n)
	for i := range n {
		t := ts[i%len(ts)]
		addr := d.app.ListenerAddr(t.listener).String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, r := holdClient(ctx, addr, t, d.ids.Add(1))
			recs[i] = r
			answered.Done()
			if c != nil {
				// Hold the connection until every client has its answer
				// (or the drill's time is up), as 2,000 live clients would.
				<-ctx.Done()
				_ = c.Close()
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		answered.Wait()
		cancel()
		wg.Wait()
		d.addRecords(recs)
		close(done)
	}()
	return func() { cancel(); <-done }, done, nil
}

// holdClient opens a connection, sends one request and reads the answer,
// returning the connection still open.
func holdClient(ctx context.Context, addr string, t target, id uint64) (net.Conn, record) {
	r := record{id: id, pool: t.pool, method: "GET", start: time.Now()}
	if t.tcp {
		r.method = "TCP"
	}
	dl, _ := ctx.Deadline()
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		r.err, r.end = err.Error(), time.Now()
		return nil, r
	}
	_ = c.SetDeadline(dl)
	br := bufio.NewReader(c)
	if t.tcp {
		_, err = fmt.Fprintf(c, "drill %d\n", id)
		if err == nil {
			var line string
			line, err = br.ReadString('\n')
			if err == nil && line != fmt.Sprintf("ok %d\n", id) {
				err = fmt.Errorf("echo %q", line)
			}
		}
	} else {
		_, err = fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n%s: %d\r\n\r\n", t.path, t.host, idHeader, id)
		if err == nil {
			var resp *http.Response
			resp, err = http.ReadResponse(br, nil)
			if err == nil {
				r.status = resp.StatusCode
				_ = resp.Body.Close()
			}
		}
	}
	r.end = time.Now()
	if err != nil {
		r.err = err.Error()
		_ = c.Close()
		return nil, r
	}
	return c, r
}

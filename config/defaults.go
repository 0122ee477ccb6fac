package config

import (
	"fmt"
	"time"
)

// Default values, as SPEC.md lists them.
const (
	DefaultAdminListen    = "127.0.0.1:9901"
	DefaultMaxHeaderBytes = 16384
	DefaultBufferBody     = 64 << 10
)

func setDur(w *walker, path string, d *Duration, def time.Duration) {
	if !w.has(path) {
		*d = Duration(def)
	}
}

func setInt(w *walker, path string, v *int, def int) {
	if !w.has(path) {
		*v = def
	}
}

func setPct(w *walker, path string, p *Percent, def float64) {
	if !w.has(path) {
		*p = Percent(def)
	}
}

func setStr(w *walker, path string, s *string, def string) {
	if !w.has(path) || *s == "" {
		*s = def
	}
}

// applyDefaults fills every key the file left out. Keys present in the file
// keep their value, even a zero one.
func applyDefaults(c *Config, w *walker) {
	setStr(w, "admin.listen", &c.Admin.Listen, DefaultAdminListen)
	for i := range c.Resolvers {
		r := &c.Resolvers[i]
		p := fmt.Sprintf("resolvers[%d]", i)
		setDur(w, p+".timeout", &r.Timeout, time.Second)
		setInt(w, p+".attempts", &r.Attempts, 2)
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		p := fmt.Sprintf("listeners[%d]", i)
		setStr(w, p+".protocol", &l.Protocol, "http")
		if !w.has(p + ".max_header_bytes") {
			l.MaxHeaderBytes = DefaultMaxHeaderBytes
		}
		if !w.has(p + ".upgrades") {
			l.Upgrades = []string{"websocket"}
		}
		setStr(w, p+".path.encoded_slash", &l.Path.EncodedSlash, "reject")
		setDur(w, p+".timeouts.header", &l.Timeouts.Header, 10*time.Second)
		setDur(w, p+".timeouts.read", &l.Timeouts.Read, 30*time.Second)
		setDur(w, p+".timeouts.write", &l.Timeouts.Write, 30*time.Second)
		setDur(w, p+".timeouts.idle", &l.Timeouts.Idle, 90*time.Second)
		setDur(w, p+".timeouts.drain", &l.Timeouts.Drain, 30*time.Second)
		setDur(w, p+".timeouts.park", &l.Timeouts.Park, 100*time.Millisecond)
		if !w.has(p + ".request_id") {
			l.RequestID = l.Protocol == "http"
		}
		if l.AccessLog.Format == "" {
			l.AccessLog.Format = "json"
		}
		for j := range l.Routes {
			r := &l.Routes[j]
			rp := fmt.Sprintf("%s.routes[%d]", p, j)
			if r.Redirect != nil {
				setInt(w, rp+".redirect.code", &r.Redirect.Code, 302)
			}
			if rl := r.RateLimit; rl != nil {
				setStr(w, rp+".rate_limit.key", &rl.Key, "client_ip")
				if !w.has(rp + ".rate_limit.burst") {
					rl.Burst = max(1, int(rl.Rate+0.999999))
				}
			}
		}
	}
	for i := range c.Pools {
		pl := &c.Pools[i]
		p := fmt.Sprintf("pools[%d]", i)
		// least_conn suits long-lived L4 connections; HTTP requests are short.
		def := "round_robin"
		if usedOnlyByTCP(c, pl.Name) {
			def = "least_conn"
		}
		setStr(w, p+".balance", &pl.Balance, def)
		setStr(w, p+".hash_key", &pl.HashKey, "client_ip")
		// Backend weights default to 1 in BackendSpec.UnmarshalYAML: the
		// walker does not descend into backends, so it cannot tell an
		// explicit weight: 0 from an absent one.
		if d := pl.Discovery; d != nil {
			dp := p + ".discovery"
			setStr(w, dp+".resolver", &d.Resolver, "default")
			setDur(w, dp+".min_refresh", &d.MinRefresh, time.Second)
			setDur(w, dp+".max_refresh", &d.MaxRefresh, 30*time.Second)
			setPct(w, dp+".max_shrink", &d.MaxShrink, 0.5)
			setInt(w, dp+".confirm", &d.Confirm, 3)
		}
		setStr(w, p+".protocol", &pl.Protocol, "http1")
		h := &pl.Health
		hp := p + ".health"
		// A tcp listener's backends need not speak HTTP at all.
		htype := "http"
		if usedOnlyByTCP(c, pl.Name) {
			htype = "tcp"
		}
		setStr(w, hp+".type", &h.Type, htype)
		setStr(w, hp+".path", &h.Path, "/healthz")
		setStr(w, hp+".expect_status", &h.ExpectStatus, "200-399")
		setDur(w, hp+".interval", &h.Interval, 2*time.Second)
		setDur(w, hp+".timeout", &h.Timeout, time.Second)
		setInt(w, hp+".rise", &h.Rise, 2)
		setInt(w, hp+".fall", &h.Fall, 3)
		setDur(w, hp+".flap.window", &h.Flap.Window, 60*time.Second)
		setInt(w, hp+".flap.max_transitions", &h.Flap.MaxTransitions, 4)
		setDur(w, hp+".flap.hold", &h.Flap.Hold, 30*time.Second)
		setDur(w, hp+".flap.max_hold", &h.Flap.MaxHold, 10*time.Minute)
		op := p + ".outlier"
		setInt(w, op+".consecutive_failures", &pl.Outlier.ConsecutiveFailures, 5)
		setDur(w, op+".ejection", &pl.Outlier.Ejection, 10*time.Second)
		setDur(w, op+".max_ejection", &pl.Outlier.MaxEjection, 5*time.Minute)
		setPct(w, op+".max_ejected", &pl.Outlier.MaxEjected, 0.5)
		setPct(w, p+".panic_threshold", &pl.PanicThreshold, 0.5)
		rp := p + ".retries"
		setInt(w, rp+".attempts", &pl.Retries.Attempts, 2)
		setPct(w, rp+".budget", &pl.Retries.Budget, 0.2)
		if !w.has(rp + ".buffer_body") {
			pl.Retries.BufferBody = DefaultBufferBody
		}
		if !w.has(rp + ".on") {
			pl.Retries.On = []string{"connect_failure", "reset"}
		}
		lp := p + ".limits"
		setInt(w, lp+".max_conns_per_backend", &pl.Limits.MaxConnsPerBackend, 512)
		setInt(w, lp+".max_idle_per_backend", &pl.Limits.MaxIdlePerBackend, 128)
		setDur(w, lp+".queue_timeout", &pl.Limits.QueueTimeout, time.Second)
		tp := p + ".timeouts"
		setDur(w, tp+".connect", &pl.Timeouts.Connect, time.Second)
		setDur(w, tp+".response", &pl.Timeouts.Response, 30*time.Second)
		setDur(w, tp+".idle", &pl.Timeouts.Idle, 60*time.Second)
	}
}

// usedOnlyByTCP reports whether pool is the pool of tcp listeners only.
func usedOnlyByTCP(c *Config, pool string) bool {
	tcp := false
	for _, l := range c.Listeners {
		if l.Pool != pool && !routesTo(l, pool) {
			continue
		}
		if l.Protocol != "tcp" {
			return false
		}
		tcp = true
	}
	return tcp
}

func routesTo(l Listener, pool string) bool {
	for _, r := range l.Routes {
		if r.Pool == pool {
			return true
		}
	}
	return false
}

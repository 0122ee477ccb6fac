package app

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/holdfast-lb/holdfast/balancer"
	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/discovery"
	"github.com/holdfast-lb/holdfast/health"
	"github.com/holdfast-lb/holdfast/proxy"
)

// poolOptions turns a pool's config into balancer options. resolvers maps
// resolver names to their config; the "default" resolver falls back to
// /etc/resolv.conf.
//
// The pool's tls settings are read from disk here (certificates, CA),
// at start and on every reload; the client config is returned for the
// data path.
func poolOptions(c *config.Config, p *config.Pool, obs *balancer.DiscoveryState, log *slog.Logger, dnsHook func(*discovery.DNS)) (*balancer.Options, *tls.Config, error) {
	tlsCfg, err := config.LoadUpstreamTLS(p.TLS)
	if err != nil {
		return nil, nil, fmt.Errorf("pool %q: tls: %w", p.Name, err)
	}
	o := &balancer.Options{
		Name:           p.Name,
		Balance:        p.Balance,
		PanicThreshold: float64(p.PanicThreshold),
		SlowStart:      p.SlowStart.D(),
		MaxEjected:     float64(p.Outlier.MaxEjected),
		Policy: health.Policy{
			Rise: p.Health.Rise, Fall: p.Health.Fall,
			FlapWindow: p.Health.Flap.Window.D(), MaxTransitions: p.Health.Flap.MaxTransitions,
			Hold: p.Health.Flap.Hold.D(), MaxHold: p.Health.Flap.MaxHold.D(),
			ConsecutiveFailures: p.Outlier.ConsecutiveFailures,
			Ejection:            p.Outlier.Ejection.D(), MaxEjection: p.Outlier.MaxEjection.D(),
		},
	}
	switch p.Health.Type {
	case "http":
		ranges, err := config.ParseStatusRanges(p.Health.ExpectStatus)
		if err != nil {
			return nil, nil, fmt.Errorf("pool %q: %w", p.Name, err)
		}
		hc := health.HTTPCheck{Path: p.Health.Path, Expect: ranges, Host: p.Health.Host,
			Headers: p.Health.Headers, ExpectBody: p.Health.ExpectBody, Port: p.Health.Port}
		if p.Health.TLS {
			hc.TLS = tlsCfg
		}
		o.Prober = &health.Prober{Checker: health.NewHTTPCheck(hc),
			Interval: p.Health.Interval.D(), Timeout: p.Health.Timeout.D(), Jitter: 0.1}
	case "grpc":
		gc := health.GRPCCheck{Service: p.Health.Service, Port: p.Health.Port}
		if p.Protocol == "h2" {
			gc.TLS = tlsCfg
		}
		o.Prober = &health.Prober{Checker: health.NewGRPCCheck(gc),
			Interval: p.Health.Interval.D(), Timeout: p.Health.Timeout.D(), Jitter: 0.1}
	case "tcp":
		o.Prober = &health.Prober{Checker: health.NewTCPCheck(p.Health.Port),
			Interval: p.Health.Interval.D(), Timeout: p.Health.Timeout.D(), Jitter: 0.1}
	}
	if d := p.Discovery; d != nil && d.Type == "etcd" {
		obs.SetResolver("etcd")
		o.Source = discovery.NewEtcd(etcdConfig(p), obs, log)
		o.SourceKey = fmt.Sprintf("etcd|%s|%v|%v|%v|%v|%v|%d", d.Name, d.Endpoints,
			d.MinRefresh, d.MaxRefresh, d.StaleFor, d.MaxShrink, d.Confirm)
	} else if d != nil {
		dc, err := dnsConfig(c, p)
		if err != nil {
			return nil, nil, err
		}
		obs.SetResolver(d.Resolver)
		dns := discovery.NewDNS(dc, obs, log)
		if dnsHook != nil {
			dnsHook(dns)
		}
		o.Source = dns
		o.SourceKey = fmt.Sprintf("dns|%s|%s|%d|%v|%v|%v|%v|%v|%v|%v|%d", d.Type, d.Name, d.Port,
			dc.Servers, dc.Timeout, dc.Attempts, d.MinRefresh, d.MaxRefresh, d.StaleFor, d.MaxShrink, d.Confirm)
	} else {
		bs := make([]discovery.Backend, len(p.Backends))
		keys := make([]string, len(p.Backends))
		for i, b := range p.Backends {
			bs[i] = discovery.Backend{Address: b.Address, Weight: b.Weight}
			keys[i] = fmt.Sprintf("%s*%d", b.Address, b.Weight)
		}
		o.Source = &discovery.Static{Backends: bs}
		o.SourceKey = "static|" + strings.Join(keys, ",")
	}
	return o, tlsCfg, nil
}

func etcdConfig(p *config.Pool) discovery.EtcdConfig {
	d := p.Discovery
	return discovery.EtcdConfig{Pool: p.Name, Prefix: d.Name, Endpoints: d.Endpoints,
		MinRefresh: d.MinRefresh.D(), MaxRefresh: d.MaxRefresh.D(), StaleFor: d.StaleFor.D(),
		MaxShrink: float64(d.MaxShrink), Confirm: d.Confirm}
}

func dnsConfig(c *config.Config, p *config.Pool) (discovery.DNSConfig, error) {
	d := p.Discovery
	dc := discovery.DNSConfig{
		Pool: p.Name, Type: d.Type, Name: d.Name, Port: d.Port, Resolver: d.Resolver,
		MinRefresh: d.MinRefresh.D(), MaxRefresh: d.MaxRefresh.D(), StaleFor: d.StaleFor.D(),
		MaxShrink: float64(d.MaxShrink), Confirm: d.Confirm,
		Timeout: time.Second, Attempts: 2,
	}
	for _, r := range c.Resolvers {
		if r.Name == d.Resolver {
			dc.Timeout, dc.Attempts = r.Timeout.D(), r.Attempts
			for _, s := range r.Servers {
				if !strings.Contains(s, ":") || strings.HasSuffix(s, "]") {
					s += ":53"
				}
				dc.Servers = append(dc.Servers, s)
			}
		}
	}
	if len(dc.Servers) == 0 {
		s, err := discovery.SystemServers()
		if err != nil {
			return dc, fmt.Errorf("pool %q: no resolvers configured and /etc/resolv.conf unusable: %w", p.Name, err)
		}
		dc.Servers = s
	}
	return dc, nil
}

func upstreamConfig(p *config.Pool) proxy.UpstreamConfig {
	return proxy.UpstreamConfig{
		MaxConns:        p.Limits.MaxConnsPerBackend,
		MaxIdle:         p.Limits.MaxIdlePerBackend,
		QueueTimeout:    p.Limits.QueueTimeout.D(),
		ConnectTimeout:  p.Timeouts.Connect.D(),
		ResponseTimeout: p.Timeouts.Response.D(),
		IdleTimeout:     p.Timeouts.Idle.D(),
		SendProxy:       p.SendProxyProtocol,
		Protocol:        p.Protocol,
	}
}

func targetConfig(p *config.Pool) *proxy.TargetConfig {
	tc := &proxy.TargetConfig{Retry: proxy.RetryPolicy{Attempts: p.Retries.Attempts, Budget: float64(p.Retries.Budget),
		PerTryTimeout: p.Retries.PerTryTimeout.D()},
		BufferBody: int(p.Retries.BufferBody),
		H2:         p.Protocol == "h2" || p.Protocol == "h2c"}
	for _, on := range p.Retries.On {
		switch on {
		case "connect_failure":
			tc.Retry.OnConnectFailure = true
		case "reset":
			tc.Retry.OnReset = true
		default:
			if code, ok := config.RetryStatus(on); ok {
				tc.Retry.OnStatus = append(tc.Retry.OnStatus, code)
			}
		}
	}
	if p.Balance == "consistent_hash" || p.Balance == "maglev" {
		switch k := p.HashKey; {
		case strings.HasPrefix(k, "header:"):
			tc.HashKind, tc.HashName = proxy.HashHeader, strings.TrimPrefix(k, "header:")
		case strings.HasPrefix(k, "cookie:"):
			tc.HashKind, tc.HashName = proxy.HashCookie, strings.TrimPrefix(k, "cookie:")
		default:
			tc.HashKind = proxy.HashClientIP
		}
	}
	return tc
}

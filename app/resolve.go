package app

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/holdfast-lb/holdfast/balancer"
	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/discovery"
)

// ResolvedBackend is one backend found by Resolve.
type ResolvedBackend struct {
	discovery.Backend
	// Health is "pass", "fail: reason" or "unchecked".
	Health string
}

// PoolReport is what Resolve found for one pool.
type PoolReport struct {
	Pool     string
	Source   string
	Backends []ResolvedBackend
	Healthy  int
	// Skipped are registry values that could not be used ("key: reason").
	Skipped []string
	Err     error
}

// Resolve looks each pool's backends up once and probes each once, as
// `holdfast check --resolve` shows them. A pool with no healthy backend
// would start empty.
func Resolve(ctx context.Context, cfg *config.Config, log *slog.Logger) []PoolReport {
	out := make([]PoolReport, len(cfg.Pools))
	var wg sync.WaitGroup
	for i := range cfg.Pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = resolvePool(ctx, cfg, &cfg.Pools[i], log)
		}()
	}
	wg.Wait()
	return out
}

func resolvePool(ctx context.Context, cfg *config.Config, p *config.Pool, log *slog.Logger) PoolReport {
	r := PoolReport{Pool: p.Name, Source: "static"}
	o, _, err := poolOptions(cfg, p, &balancer.DiscoveryState{}, log, nil)
	if err != nil {
		r.Err = err
		return r
	}
	var bs []discovery.Backend
	switch src := o.Source.(type) {
	case *discovery.DNS:
		r.Source = "dns " + p.Discovery.Type + " " + p.Discovery.Name
		bs, _, err = src.Lookup(ctx)
	case *discovery.Etcd:
		r.Source = "etcd " + p.Discovery.Name
		bs, r.Skipped, err = src.Lookup(ctx)
	case *discovery.Static:
		bs = src.Backends
	default:
		err = fmt.Errorf("pool %q: unknown discovery source %T", p.Name, src)
	}
	if err != nil {
		r.Err = err
		return r
	}
	discovery.SortBackends(bs)
	r.Backends = make([]ResolvedBackend, len(bs))
	var wg sync.WaitGroup
	for i, b := range bs {
		r.Backends[i].Backend = b
		if o.Prober == nil {
			r.Backends[i].Health = "unchecked"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, o.Prober.Timeout)
			defer cancel()
			if err := o.Prober.Checker.Check(cctx, b.Address); err != nil {
				r.Backends[i].Health = "fail: " + err.Error()
			} else {
				r.Backends[i].Health = "pass"
			}
		}()
	}
	wg.Wait()
	for _, b := range r.Backends {
		if b.Health == "pass" || b.Health == "unchecked" {
			r.Healthy++
		}
	}
	return r
}

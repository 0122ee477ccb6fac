package balancer

import (
	"context"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/discovery"
)

// lookupSource reports lookups to its observer as a DNS source does; each
// result sent on results is one lookup, an ok one with set.
type lookupSource struct {
	obs     *DiscoveryState
	results chan string
	set     []discovery.Backend
}

func (s *lookupSource) Observer() discovery.Observer { return s.obs }

func (s *lookupSource) Run(ctx context.Context, update func([]discovery.Backend)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-s.results:
			s.obs.Lookup(r)
			if r == discovery.ResultOK {
				update(s.set)
			}
		}
	}
}

func TestPoolWarmed(t *testing.T) {
	cases := []struct {
		name      string
		results   []string // lookups, in order
		wantWarm  bool
		wantReady bool
	}{
		{name: "first set: warmed and ready", results: []string{discovery.ResultOK}, wantWarm: true, wantReady: true},
		{name: "failed lookup: warmed, not ready", results: []string{discovery.ResultServfail}, wantWarm: true},
		{name: "timeout: warmed, not ready", results: []string{discovery.ResultTimeout}, wantWarm: true},
		{name: "failure then a set: ready", results: []string{discovery.ResultServfail, discovery.ResultOK}, wantWarm: true, wantReady: true},
		{name: "no answer yet: not warmed", results: nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := &lookupSource{obs: &DiscoveryState{}, results: make(chan string), set: []discovery.Backend{be("a:1", 1, 0)}}
			p := NewPool(&Options{Name: "api", Balance: "round_robin", Source: src}, Hooks{}, nil, quietLog())
			runPool(t, p)
			for _, r := range c.results {
				select {
				case src.results <- r:
				case <-time.After(5 * time.Second):
					t.Fatal("source not running")
				}
			}
			if !c.wantWarm {
				// The source took every lookup; nothing may have closed it.
				select {
				case <-p.Warmed():
					t.Fatal("Warmed closed without a set or a failed lookup")
				default:
				}
				return
			}
			select {
			case <-p.Warmed():
			case <-time.After(5 * time.Second):
				t.Fatal("Warmed not closed")
			}
			if c.wantReady {
				waitFor(t, 2*time.Second, "pool ready", p.Ready)
			} else if p.Ready() {
				t.Error("ready without a set")
			}
		})
	}
}

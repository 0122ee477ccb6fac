package discovery

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/internal/etcdtest"
)

func TestParseEtcdValue(t *testing.T) {
	cases := []struct {
		name, value string
		want        Backend
		err         string
	}{
		{"plain", "10.0.0.1:80", Backend{Address: "10.0.0.1:80", Weight: 1}, ""},
		{"plain with spaces", " 10.0.0.1:80\n", Backend{Address: "10.0.0.1:80", Weight: 1}, ""},
		{"json", `{"address":"10.0.0.2:8080","weight":3}`, Backend{Address: "10.0.0.2:8080", Weight: 3}, ""},
		{"json no weight", `{"address":"10.0.0.2:8080"}`, Backend{Address: "10.0.0.2:8080", Weight: 1}, ""},
		{"ipv6", `[::1]:80`, Backend{Address: "[::1]:80", Weight: 1}, ""},
		{"hostname", "api.internal:80", Backend{}, "IP literal"},
		{"no port", "10.0.0.1", Backend{}, "want host:port"},
		{"port zero", "10.0.0.1:0", Backend{}, "bad port"},
		{"weight zero", `{"address":"10.0.0.2:8080","weight":0}`, Backend{}, "out of range"},
		{"weight huge", `{"address":"10.0.0.2:8080","weight":5000}`, Backend{}, "out of range"},
		{"json typo", `{"adress":"10.0.0.2:8080"}`, Backend{}, "bad JSON"},
		{"json broken", `{"address":`, Backend{}, "bad JSON"},
		{"empty", "", Backend{}, "want host:port"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := ParseEtcdValue([]byte(c.value))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("ParseEtcdValue(%q) = %+v, %v; want error with %q", c.value, b, err, c.err)
				}
				return
			}
			if err != nil || b != c.want {
				t.Fatalf("ParseEtcdValue(%q) = %+v, %v; want %+v", c.value, b, err, c.want)
			}
		})
	}
}

// etcdRunner runs an Etcd source against a real etcd and records its sets.
type etcdRunner struct {
	obs  *recObserver
	logs *logBuf
	mu   sync.Mutex
	sets [][]Backend
}

func startEtcdSource(t *testing.T, srv *etcdtest.Server, prefix string, seed []Backend) *etcdRunner {
	t.Helper()
	log, lb := newLogger(t)
	r := &etcdRunner{obs: newRecObserver(), logs: lb}
	e := NewEtcd(EtcdConfig{Pool: "api", Prefix: prefix, Endpoints: []string{srv.Endpoint},
		Timeout: 300 * time.Millisecond, MinRefresh: 100 * time.Millisecond, MaxRefresh: 400 * time.Millisecond,
		MaxShrink: 0.5, Confirm: 3}, r.obs, log)
	e.Seed = seed
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.Run(ctx, func(bs []Backend) {
			if len(bs) == 0 {
				t.Errorf("update called with an empty set")
			}
			r.mu.Lock()
			r.sets = append(r.sets, bs)
			r.mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Run did not return after cancel")
		}
	})
	return r
}

func (r *etcdRunner) last() []Backend {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.sets) == 0 {
		return nil
	}
	return r.sets[len(r.sets)-1]
}

func (r *etcdRunner) count() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.sets) }

// waitSet polls until the last published set has exactly want's addresses,
// and returns how long that took.
func (r *etcdRunner) waitSet(t *testing.T, limit time.Duration, want ...string) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !slices.Equal(addrs(r.last()), want) {
		if time.Since(start) > limit {
			t.Fatalf("set %v after %v, want %v\nlogs:\n%s", addrs(r.last()), limit, want, r.logs)
		}
		<-tick.C
	}
	return time.Since(start)
}

func waitCond(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		<-tick.C
	}
}

// TestEtcdSourceFollowsPrefix: the source lists the prefix, follows puts
// and deletes within a second, skips bad values with a log line naming the
// key, holds a bulk delete for confirmation, and through an etcd outage keeps
// the last set (stale), then lists and watches again after etcd returns.
func TestEtcdSourceFollowsPrefix(t *testing.T) {
	srv := etcdtest.Start(t)
	const p = "/services/api/"
	srv.Put(p+"a", "10.0.0.1:80")
	srv.Put(p+"b", `{"address":"10.0.0.2:80","weight":3}`)
	srv.Put(p+"bad", "not-an-address")
	srv.Put("/services/other/x", "10.9.9.9:80") // outside the prefix
	r := startEtcdSource(t, srv, p, nil)
	r.waitSet(t, 5*time.Second, "10.0.0.1:80", "10.0.0.2:80")
	if w := r.last()[1].Weight; w != 3 {
		t.Errorf("weight of the JSON value: %d, want 3", w)
	}
	waitCond(t, 2*time.Second, "a log line naming the bad key", func() bool {
		return r.logs.count("etcd value ignored", p+"bad") == 1
	})

	srv.Put(p+"c", "10.0.0.3:80")
	if d := r.waitSet(t, time.Second, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"); d > time.Second {
		t.Errorf("put applied after %v, want within 1s", d)
	}
	srv.Put(p+"d", "10.0.0.4:80")
	r.waitSet(t, time.Second, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80")
	srv.Delete(p+"d", false) // 1 of 4: within max_shrink, at once
	r.waitSet(t, time.Second, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")

	// Two single deletes: each applies (or, if both land in one watch
	// answer, is confirmed); either way the set follows.
	srv.Delete(p+"b", false)
	srv.Delete(p+"c", false)
	r.waitSet(t, 2*time.Second, "10.0.0.1:80")

	// A bulk delete of 3 of 4 in one revision is beyond max_shrink 50%: it
	// applies only after 3 confirmations (MinRefresh apart), stale meanwhile.
	for i, a := range []string{"10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"} {
		srv.Put(p+"n"+string(rune('0'+i)), a)
	}
	r.waitSet(t, time.Second, "10.0.0.1:80", "10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80")
	n := r.count()
	start := time.Now()
	srv.Delete(p+"n", true) // 3 of 4 in one revision
	waitCond(t, time.Second, "the bulk delete held (stale)", r.obs.isStale)
	if r.count() != n {
		t.Fatalf("bulk delete applied at once: %v", addrs(r.last()))
	}
	r.waitSet(t, 3*time.Second, "10.0.0.1:80")
	// Confirm 3: two more offers, at least one MinRefresh (±10%) apart.
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Errorf("bulk delete applied after %v: not held for confirmation", d)
	}
	if r.logs.count("waiting for confirmation") != 1 {
		t.Errorf("want one log line for the held delete:\n%s", r.logs)
	}
	waitCond(t, time.Second, "not stale after the confirmed delete", func() bool { return !r.obs.isStale() })

	// Deleting the last key never empties the set.
	srv.Delete(p+"a", false)
	waitCond(t, time.Second, "stale while the prefix is empty", r.obs.isStale)
	srv.Put(p+"a", "10.0.0.1:80")
	srv.Put(p+"e", "10.0.0.5:80")
	r.waitSet(t, time.Second, "10.0.0.1:80", "10.0.0.5:80")
	waitCond(t, time.Second, "fresh again", func() bool { return !r.obs.isStale() })

	// etcd killed: the set stays, stale, lookups fail.
	srv.Kill()
	waitCond(t, 3*time.Second, "stale after etcd died", r.obs.isStale)
	if got := addrs(r.last()); !slices.Equal(got, []string{"10.0.0.1:80", "10.0.0.5:80"}) {
		t.Errorf("set after etcd died: %v", got)
	}
	waitCond(t, 3*time.Second, "failed lookups counted", func() bool {
		return r.obs.result(ResultTimeout)+r.obs.result(ResultError) > 0
	})
	srv.Restart()
	waitCond(t, 5*time.Second, "fresh after etcd came back", func() bool { return !r.obs.isStale() })
	srv.Put(p+"f", "10.0.0.6:80")
	r.waitSet(t, time.Second, "10.0.0.1:80", "10.0.0.5:80", "10.0.0.6:80")
	if r.logs.count("etcd reachable again") == 0 {
		t.Errorf("no log line for etcd coming back:\n%s", r.logs)
	}
}

// TestEtcdSourceSeed: a saved set serves at once (stale) while etcd is
// down; once etcd answers the source lists and watches the prefix.
func TestEtcdSourceSeed(t *testing.T) {
	srv := etcdtest.Start(t)
	const p = "/services/api/"
	srv.Put(p+"a", "10.0.0.1:80")
	srv.Put(p+"b", "10.0.0.2:80")
	srv.Kill()
	r := startEtcdSource(t, srv, p, []Backend{{Address: "10.0.0.1:80", Weight: 1}, {Address: "10.0.0.2:80", Weight: 1}})
	r.waitSet(t, time.Second, "10.0.0.1:80", "10.0.0.2:80")
	if !r.obs.isStale() {
		t.Errorf("the saved set is not marked stale")
	}
	waitCond(t, 3*time.Second, "a failed lookup with etcd down", func() bool {
		return r.obs.result(ResultTimeout)+r.obs.result(ResultError) > 0
	})
	srv.Restart()
	waitCond(t, 5*time.Second, "fresh once etcd answers", func() bool { return !r.obs.isStale() })
	srv.Put(p+"c", "10.0.0.3:80")
	r.waitSet(t, time.Second, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
}

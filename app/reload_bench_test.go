package app_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// bigConfig is 1,000 static pools, each behind a host route of one
// listener; weight varies the backends' weight so a reload changes every
// pool.
func bigConfig(backend string, pools, weight int) string {
	var b strings.Builder
	b.WriteString("admin: { listen: 127.0.0.1:0 }\nlisteners:\n  - name: web\n    listen: 127.0.0.1:0\n    pool: p0\n    routes:\n")
	for i := range pools {
		fmt.Fprintf(&b, "      - { host: p%d.example.test, pool: p%d }\n", i, i)
	}
	b.WriteString("pools:\n")
	for i := range pools {
		fmt.Fprintf(&b, "  - { name: p%d, health: { type: none }, backends: [{ address: %q, weight: %d }] }\n", i, backend, weight)
	}
	return b.String()
}

// BenchmarkReload1000Pools is App.ReloadConfig of a config with 1,000
// pools and 1,000 routes in which every pool's backend weight changed:
// pools updated in place, routes rebuilt, listener swapped. ms/reload is
// the call; ms/parse is config.Load of the same file, reported apart.
func BenchmarkReload1000Pools(b *testing.B) {
	const pools = 1000
	be := testkit.StartBackend(b, "b")
	a := testkit.StartApp(b, bigConfig(be.Addr, pools, 1))
	testkit.WaitFor(b, 30*time.Second, "1,000 pools ready", a.Ready)
	cfgs := make([]*config.Config, 2)
	var parse time.Duration
	for w := range cfgs {
		path := testkit.WriteConfig(b, bigConfig(be.Addr, pools, w+2))
		start := time.Now()
		c, err := config.Load(path)
		if err != nil {
			b.Fatal(err)
		}
		parse += time.Since(start)
		cfgs[w] = c
	}
	i := 0
	for b.Loop() {
		if _, err := a.ReloadConfig(cfgs[i%2]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/reload")
	b.ReportMetric(float64(parse.Microseconds())/1000/2, "ms/parse")
	if code, _, err := testkit.Get(a.URL("web", "/")); err != nil || code != 200 {
		b.Fatalf("after reloads: %d %v", code, err)
	}
}

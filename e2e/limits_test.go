package e2e

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// countingListener counts a backend's open connections and remembers the
// most it ever had open at once (exact, not sampled: checked at accept).
type countingListener struct {
	net.Listener
	open, peak atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	n := l.open.Add(1)
	for {
		p := l.peak.Load()
		if n <= p || l.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return &countedConn{Conn: c, l: l}, nil
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// raiseFileLimit lifts the soft open-files limit to at least n (up to the
// hard limit), for tests that hold thousands of sockets.
func raiseFileLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	lim.Cur = min(n, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < n {
		t.Skipf("open-files hard limit %d is below the %d this test needs", lim.Max, n)
	}
}

// TestConnectionLimitUnder2000Clients: 2,000 client connections, all open
// at once, each sending a few requests, against a pool limited to 50
// connections per backend. No backend ever has more than 50 open, and no
// request fails: the rest wait in the queue.
func TestConnectionLimitUnder2000Clients(t *testing.T) {
	const (
		clients  = 2000
		perConn  = 3
		maxConns = 50
	)
	raiseFileLimit(t, 3*clients+1024)
	var lns []*countingListener
	var addrs []any
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cl := &countingListener{Listener: ln}
		b := testkit.ServeBackend(t, fmt.Sprintf("b%d", i), cl)
		b.SetHandler(func(ctx *fasthttp.RequestCtx) {
			time.Sleep(time.Millisecond) // simulated work, so connections are all busy
			ctx.SetBodyString("ok\n")
		})
		lns = append(lns, cl)
		addrs = append(addrs, b.Addr)
	}
	// No active health checks: their connections would count too. A long
	// connect timeout: on a loaded machine a dial abandoned after 1 s may
	// still complete in the backend's accept queue, and the backend would
	// count it beside its replacement although holdfast held one slot. The
	// queue may hold a request for a while when the machine is busy (the
	// race detector, other test packages): 2,000 requests wait for 150
	// connections, and a 503 after queue_timeout would be a failure.
	a := testkit.StartApp(t, fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: api }
pools:
  - name: api
    balance: least_conn
    backends: [%s, %s, %s]
    health: { type: none }
    limits: { max_conns_per_backend: %d, max_idle_per_backend: %d, queue_timeout: 15s }
    timeouts: { connect: 10s }
`, append(addrs, maxConns, maxConns)...))
	testkit.WaitFor(t, 10*time.Second, "pool ready", func() bool { return a.Pool("api").Routable() == 3 })
	addr := a.ListenerAddr("web").String()

	// Sample holdfast's own count too, as an operator would see it.
	stopSampling := make(chan struct{})
	sampled := make(chan int64)
	go func() {
		var peak int64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			mfs, _ := a.Registry().Gather()
			for _, mf := range mfs {
				if mf.GetName() != "holdfast_backend_connections" {
					continue
				}
				for _, m := range mf.GetMetric() {
					peak = max(peak, int64(m.GetGauge().GetValue()))
				}
			}
			select {
			case <-stopSampling:
				sampled <- peak
				return
			case <-tick.C:
			}
		}
	}()

	var failed, okCount atomic.Int64
	var errMu sync.Mutex
	errs := map[string]int{}
	fail := func(err string) {
		failed.Add(1)
		errMu.Lock()
		errs[err]++
		errMu.Unlock()
	}
	conns := make([]net.Conn, clients)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				fail("dial: " + err.Error())
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	start := make(chan struct{})
	began := time.Now()
	for _, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			<-start
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			br := bufio.NewReader(c)
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseResponse(resp)
			for range perConn {
				if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: test\r\n\r\n")); err != nil {
					fail("write: " + err.Error())
					return
				}
				if err := resp.Read(br); err != nil {
					fail("read: " + err.Error())
					return
				}
				if resp.StatusCode() != 200 {
					fail(fmt.Sprintf("status %d: %s", resp.StatusCode(), resp.Body()))
					continue
				}
				okCount.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(stopSampling)
	holdfastPeak := <-sampled

	var peaks []int64
	for i, l := range lns {
		peaks = append(peaks, l.peak.Load())
		if p := l.peak.Load(); p > maxConns {
			t.Errorf("backend %d had %d connections open at once; the limit is %d", i, p, maxConns)
		}
	}
	t.Logf("%d clients × %d requests in %s: ok %d, failed %d; peak open connections per backend %v (holdfast sampled %d)",
		clients, perConn, time.Since(began).Round(time.Millisecond), okCount.Load(), failed.Load(), peaks, holdfastPeak)
	if failed.Load() > 0 {
		t.Errorf("%d requests failed: %v", failed.Load(), errs)
	}
	if okCount.Load() != clients*perConn {
		t.Errorf("%d requests answered 200, want %d", okCount.Load(), clients*perConn)
	}
	if holdfastPeak > maxConns {
		t.Errorf("holdfast counted %d connections to one backend; the limit is %d", holdfastPeak, maxConns)
	}
}

package drill

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/holdfast-lb/holdfast/config"
)

// target is one way into a pool through a listener: the listener's
// default pool, or one of its routes.
type target struct {
	listener string
	tcp      bool
	pool     string
	host     string
	path     string
}

// targets lists, per listener, one request shape for each pool the
// listener reaches (routes matched as holdfast matches them: first match
// wins), so the load reaches every pool behind every listener.
func targets(cfg *config.Config) []target {
	var out []target
	for _, l := range cfg.Listeners {
		if l.Protocol == "tcp" {
			out = append(out, target{listener: l.Name, tcp: true, pool: l.Pool})
			continue
		}
		cands := []target{{host: "drill.invalid", path: "/holdfast-drill"}}
		for _, r := range l.Routes {
			host := r.Host
			if host == "" {
				host = "drill.invalid"
			} else if s, ok := strings.CutPrefix(host, "*."); ok {
				host = "drill." + s
			}
			prefix := r.PathPrefix
			if prefix == "" {
				prefix = "/"
			}
			if !strings.HasSuffix(prefix, "/") {
				prefix += "/"
			}
			cands = append(cands, target{host: host, path: prefix + "holdfast-drill"})
		}
		seen := map[string]bool{}
		for _, c := range cands {
			pool := routeOf(l, c.host, c.path)
			if pool == "" || seen[pool] {
				continue
			}
			seen[pool] = true
			c.listener, c.pool = l.Name, pool
			out = append(out, c)
		}
	}
	return out
}

// routeOf is the pool a request for host and path goes to through l ("":
// a redirect, or no pool).
func routeOf(l config.Listener, host, path string) string {
	for _, r := range l.Routes {
		if r.Host != "" {
			if s, ok := strings.CutPrefix(r.Host, "*."); ok {
				if !strings.HasSuffix(host, "."+s) {
					continue
				}
			} else if !strings.EqualFold(r.Host, host) {
				continue
			}
		}
		if r.PathPrefix != "" && !strings.HasPrefix(path, r.PathPrefix) {
			continue
		}
		if r.Redirect != nil {
			return ""
		}
		return r.Pool
	}
	return l.Pool
}

// record is what a client saw of one request.
type record struct {
	id         uint64
	pool       string
	method     string // GET, POST, or TCP (a connection carrying one exchange)
	start, end time.Time
	status     int    // HTTP status; 0 for a transport error or TCP
	err        string // transport error, or a TCP exchange that did not complete
}

// failed reports whether a client would count the request as failed: a
// transport error or a 5xx.
func (r record) failed() bool { return r.err != "" || r.status >= 500 }

// idempotent reports whether a proxy may resend the request after a
// backend read it.
func (r record) idempotent() bool { return r.method == "GET" }

// loadGen drives steady load through targets until stopped.
type loadGen struct {
	ids     *atomic.Uint64
	mu      sync.Mutex
	records []record
	wg      sync.WaitGroup
	cancel  context.CancelFunc
}

// loadWorkers per target, and the pause between one worker's requests.
const (
	loadWorkers  = 2
	loadInterval = 10 * time.Millisecond
	// clientTimeout bounds every request of the drill's clients.
	clientTimeout = 5 * time.Second
	// maxRequestsPerWorker bounds a worker however long a drill runs.
	maxRequestsPerWorker = 20_000
)

func startLoad(ids *atomic.Uint64, ts []target, addr func(listener string) string) *loadGen {
	ctx, cancel := context.WithCancel(context.Background())
	g := &loadGen{ids: ids, cancel: cancel}
	for _, t := range ts {
		a := addr(t.listener)
		var hc *fasthttp.HostClient
		if !t.tcp {
			hc = &fasthttp.HostClient{Addr: a, MaxConns: loadWorkers * 2, ReadTimeout: clientTimeout, WriteTimeout: clientTimeout,
				MaxIdemponentCallAttempts: 1, RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) { return false, false }}
		}
		for w := range loadWorkers {
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				tick := time.NewTicker(loadInterval)
				defer tick.Stop()
				for n := range maxRequestsPerWorker {
					var r record
					if t.tcp {
						r = tcpExchange(a, ids.Add(1), t.pool)
					} else {
						method := "GET"
						if (n+w)%2 == 1 {
							method = "POST"
						}
						r = httpExchange(hc, t, method, ids.Add(1))
					}
					g.add(r)
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
					}
				}
			}()
		}
	}
	return g
}

func (g *loadGen) add(r record) {
	g.mu.Lock()
	g.records = append(g.records, r)
	g.mu.Unlock()
}

// stop ends the load, waits for the requests in flight (each bounded by
// clientTimeout) and returns every record.
func (g *loadGen) stop() []record {
	g.cancel()
	g.wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.records
}

var postBody = []byte(strings.Repeat("holdfast drill ", 16))

func httpExchange(hc *fasthttp.HostClient, t target, method string, id uint64) record {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + t.host + t.path)
	req.Header.SetMethod(method)
	req.Header.Set(idHeader, strconv.FormatUint(id, 10))
	if method == "POST" {
		req.SetBody(postBody)
	}
	r := record{id: id, pool: t.pool, method: method, start: time.Now()}
	err := hc.DoTimeout(req, resp, clientTimeout)
	r.end = time.Now()
	if err != nil {
		r.err = err.Error()
	} else {
		r.status = resp.StatusCode()
	}
	return r
}

// tcpExchange opens a connection through a tcp listener, sends one line
// and expects the backend's echo of its id.
func tcpExchange(addr string, id uint64, pool string) record {
	r := record{id: id, pool: pool, method: "TCP", start: time.Now()}
	c, err := net.DialTimeout("tcp", addr, clientTimeout)
	if err != nil {
		r.err = err.Error()
		r.end = time.Now()
		return r
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(clientTimeout))
	if _, err := fmt.Fprintf(c, "drill %d\n", id); err != nil {
		r.err = err.Error()
		r.end = time.Now()
		return r
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if want := fmt.Sprintf("ok %d\n", id); err != nil || line != want {
		r.err = fmt.Sprintf("echo %q: %v", line, err)
	}
	r.end = time.Now()
	return r
}

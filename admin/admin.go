// Package admin serves holdfast's operator endpoints: /healthz, /readyz,
// /metrics, /status, /status.json, /reload and, when enabled,
// /debug/pprof/. They live on their own listener, never on a traffic
// listener, behind an optional bearer token and a cross-origin guard.
package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/holdfast-lb/holdfast/balancer"
	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/proxy"
)

// Runtime is what the endpoints need from the running process.
type Runtime interface {
	// NotReady says why the process is not ready, or "" when it is.
	NotReady() string
	// PoolNotReady says why one pool cannot route, or "" when it can;
	// known is false for a pool the process does not have.
	PoolNotReady(pool string) (why string, known bool)
	Draining() bool
	Status() []balancer.PoolStatus
	ListenerStatus() []proxy.ListenerStatus
	Reload() (string, error)
}

// Operator is what the runtime-control endpoints need: an override
// applied to one backend, returning once the pool routes by it. Unknown
// pools and backends are balancer.ErrUnknownPool and ErrUnknownBackend.
type Operator interface {
	SetOverride(ctx context.Context, pool, addr, action string, weight int) (balancer.Override, error)
}

// Settings are the admin endpoints' reloadable settings.
type Settings struct {
	// Token, when not empty, is required as "Authorization: Bearer TOKEN"
	// by every endpoint but GET /healthz and GET /readyz.
	Token string
	// Pprof serves /debug/pprof/.
	Pprof bool
}

// Handler serves the admin endpoints. Every non-GET/HEAD request that a
// browser sends cross-origin is refused (403) before the token is even
// looked at, so a web page the operator visits cannot drive the API
// through the operator's browser. Safe for concurrent use, Set included.
type Handler struct {
	rt  Runtime
	g   prometheus.Gatherer
	cop *http.CrossOriginProtection
	cur atomic.Pointer[handlerState]
}

// handlerState is one Settings, ready to serve.
type handlerState struct {
	auth bool
	// sum is the token's SHA-256: comparing digests in constant time also
	// hides the token's length.
	sum [sha256.Size]byte
	mux *http.ServeMux
}

var _ http.Handler = (*Handler)(nil)

// New returns the admin handler for rt, with the metrics of g.
func New(rt Runtime, g prometheus.Gatherer, s Settings) *Handler {
	h := &Handler{rt: rt, g: g, cop: http.NewCrossOriginProtection()}
	h.Set(s)
	return h
}

// Set applies s to every request from now on (a reload).
func (h *Handler) Set(s Settings) {
	st := &handlerState{auth: s.Token != "", mux: h.mux(s.Pprof)}
	if st.auth {
		st.sum = sha256.Sum256([]byte(s.Token))
	}
	h.cur.Store(st)
}

// ServeHTTP refuses cross-origin browser requests, then requests without
// the token, then serves.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h.cop.Check(r); err != nil {
		plain(w, http.StatusForbidden, "cross-origin request refused: call the admin API from a script or the CLI, not from a web page\n")
		return
	}
	st := h.cur.Load()
	if st.auth && !open(r) && !st.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="holdfast admin"`)
		if r.Method == http.MethodGet && r.URL.Path == "/status" {
			// A browser cannot send a bearer token on navigation: the
			// answer is still 401, but its body is the dashboard without
			// data, which asks for the token and sends it with each
			// /status.json poll.
			writeDashboard(w, http.StatusUnauthorized, nil)
			return
		}
		plain(w, http.StatusUnauthorized, "unauthorized: send Authorization: Bearer <token> (admin.token_file)\n")
		return
	}
	st.mux.ServeHTTP(w, r)
}

// open reports whether r is a probe that needs no token: liveness and
// readiness checkers (Docker, Kubernetes, keepalived) rarely carry one,
// and the answers reveal nothing.
func open(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	return r.URL.Path == "/healthz" || r.URL.Path == "/readyz"
}

func (st *handlerState) authorized(r *http.Request) bool {
	v := r.Header.Get("Authorization")
	const scheme = "Bearer "
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(v[len(scheme):])))
	return subtle.ConstantTimeCompare(sum[:], st.sum[:]) == 1
}

func plain(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg)
}

// mux routes the endpoints; /debug/pprof/ only when pprof is on.
func (h *Handler) mux(pprofOn bool) *http.ServeMux {
	rt := h.rt
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if q := r.URL.Query(); q.Has("pool") {
			name := q.Get("pool")
			switch why, known := rt.PoolNotReady(name); {
			case !known:
				w.WriteHeader(http.StatusNotFound)
				_, _ = w.Write([]byte("unknown pool " + strconv.Quote(name) + "\n"))
			case why != "":
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte("not ready: " + why + "\n"))
			default:
				_, _ = w.Write([]byte("ready\n"))
			}
			return
		}
		switch why := rt.NotReady(); {
		case rt.Draining():
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("draining\n"))
		case why != "":
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + why + "\n"))
		default:
			_, _ = w.Write([]byte("ready\n"))
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(newStatusDoc(rt))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		doc := newStatusDoc(rt)
		writeDashboard(w, http.StatusOK, &doc)
	})
	if pprofOn {
		// Index serves the named profiles (heap, goroutine, ...) too.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /backends", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(backendsDoc(rt.Status()))
	})
	if op, ok := rt.(Operator); ok {
		mux.HandleFunc("POST /backends/{pool}/{address}/{action}", func(w http.ResponseWriter, r *http.Request) {
			serveOverride(w, r, op)
		})
	}
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, _ *http.Request) {
		sum, err := rt.Reload()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			if fes := config.Errors(err); len(fes) > 0 {
				for _, fe := range fes {
					_, _ = w.Write([]byte(fe.Error() + "\n"))
				}
				return
			}
			_, _ = w.Write([]byte(err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("reloaded: " + sum + "\n"))
	})
	return mux
}

// overrideTimeout bounds the wait for a pool to route by a new override.
const overrideTimeout = 5 * time.Second

// serveOverride is POST /backends/{pool}/{address}/{drain|disable|enable|weight}.
func serveOverride(w http.ResponseWriter, r *http.Request, op Operator) {
	pool, addr, action := r.PathValue("pool"), r.PathValue("address"), r.PathValue("action")
	weight := 0
	if action == "weight" {
		v := r.URL.Query().Get("value")
		n, err := strconv.Atoi(v)
		if err != nil {
			plain(w, http.StatusBadRequest, "weight needs ?value=N (0..1000; 0 drains), got "+strconv.Quote(v)+"\n")
			return
		}
		weight = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), overrideTimeout)
	defer cancel()
	o, err := op.SetOverride(ctx, pool, addr, action, weight)
	switch {
	case errors.Is(err, balancer.ErrUnknownPool), errors.Is(err, balancer.ErrUnknownBackend):
		plain(w, http.StatusNotFound, err.Error()+"\n")
		return
	case err != nil:
		plain(w, http.StatusBadRequest, err.Error()+"\n")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Pool     string            `json:"pool"`
		Address  string            `json:"address"`
		Action   string            `json:"action"`
		Override balancer.Override `json:"override"`
	}{pool, addr, action, o})
}

// backendEntry is one backend as GET /backends lists it.
type backendEntry struct {
	Pool     string             `json:"pool"`
	Address  string             `json:"address"`
	State    string             `json:"state"`
	Routable bool               `json:"routable"`
	Weight   int                `json:"weight"`
	Override *balancer.Override `json:"override,omitempty"`
	Inflight int64              `json:"inflight"`
	Conns    int64              `json:"connections"`
	Reason   string             `json:"reason,omitempty"`
}

func backendsDoc(pools []balancer.PoolStatus) []backendEntry {
	out := []backendEntry{}
	for _, p := range pools {
		for _, b := range p.Backends {
			out = append(out, backendEntry{Pool: p.Name, Address: b.Address, State: b.State, Routable: b.Routable,
				Weight: b.Weight, Override: b.Override, Inflight: b.Inflight, Conns: b.Connections, Reason: b.Reason})
		}
	}
	return out
}

type statusDoc struct {
	Time      time.Time              `json:"time"`
	Ready     bool                   `json:"ready"`
	NotReady  string                 `json:"not_ready,omitempty"`
	Draining  bool                   `json:"draining"`
	Listeners []proxy.ListenerStatus `json:"listeners"`
	Pools     []balancer.PoolStatus  `json:"pools"`
}

func newStatusDoc(rt Runtime) statusDoc {
	why := rt.NotReady()
	return statusDoc{Time: time.Now().UTC(), Ready: why == "", NotReady: why, Draining: rt.Draining(),
		Listeners: rt.ListenerStatus(), Pools: rt.Status()}
}

// noscript is the status as plain tables, for a browser without
// JavaScript (the dashboard's own rendering replaces it).
var noscript = template.Must(template.New("status").Parse(`<noscript><style>table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.healthy{background:#d9f7d9}.unhealthy{background:#f9d6d6}
.held_down{background:#ffe7b3}.ejected{background:#f3d1f5}.draining{background:#e5e5e5}.disabled{background:#cfcfcf}</style>
<p>Without JavaScript this page does not refresh itself; reload it. <a href="status.json">status.json</a></p><p>{{.Time.Format "2006-01-02 15:04:05 MST"}} · ready: <b>{{.Ready}}</b>{{with .NotReady}} ({{.}}){{end}}{{if .Draining}} · <b>draining</b>{{end}}</p>
<h2>listeners</h2><table><tr><th>listener</th><th>address</th><th>protocol</th><th>conns</th><th>max</th><th>process cap</th><th>accepting</th><th>accept errors</th><th>refused</th></tr>
{{range .Listeners}}<tr class="{{if .Accepting}}healthy{{else}}unhealthy{{end}}"><td>{{.Name}}</td><td>{{.Address}}</td><td>{{.Protocol}}</td><td>{{.Connections}}</td><td>{{.MaxConnections}}</td><td>{{.ProcessCap}}</td><td>{{if .Accepting}}yes{{else}}<b>paused {{.PausedFor}}</b>: {{.AcceptError}}{{end}}</td><td>{{.AcceptErrors}}</td><td>{{.Refused}}</td></tr>
{{end}}</table>
{{range .Pools}}<h2>pool {{.Name}} <small>({{.Balance}}, {{.Routable}}/{{.Total}} routable{{if .Panic}}, PANIC MODE{{end}})</small></h2>
{{with .Discovery}}<p>discovery: {{.Backends}} backends, last success {{.Age}} ago, last result {{.LastResult}}{{if .Stale}}, <b>serving last good set (stale)</b>{{end}}</p>{{end}}
<table><tr><th>backend</th><th>prio</th><th>weight</th><th>state</th><th>reason</th><th>transitions</th><th>hold left</th><th>in flight</th><th>conns</th><th>latency</th></tr>
{{range .Backends}}<tr class="{{.State}}"><td>{{.Address}}</td><td>{{.Priority}}</td><td>{{.Weight}}{{with .Override}}{{if .Weight}} (operator){{end}}{{end}}</td><td>{{.State}}</td><td>{{.Reason}}</td><td>{{.Transitions}}</td><td>{{.HoldRemaining}}</td><td>{{.Inflight}}</td><td>{{.Connections}}</td><td>{{.LatencyEWMA}}</td></tr>
{{end}}</table>{{end}}</noscript>
`))

// dashboardHTML is the live dashboard: one page, its script and styles
// inline, nothing fetched but /status.json.
//
//go:embed dashboard.html
var dashboardHTML string

// The dashboard's placeholders: the status as JSON, rendered at once
// (no wait for the first poll), and the same as tables for a browser
// without JavaScript.
const (
	initialMark  = "<!--INITIAL-->"
	noscriptMark = "<!--NOSCRIPT-->"
)

// writeDashboard answers the dashboard with doc filled in; nil: the page
// without data (no token yet).
func writeDashboard(w http.ResponseWriter, code int, doc *statusDoc) {
	var initial, tables []byte
	if doc != nil {
		// json.Marshal escapes <, > and &, so the data cannot end the
		// script element it sits in.
		js, err := json.Marshal(doc)
		if err == nil {
			initial = js
		}
		var buf bytes.Buffer
		if err := noscript.Execute(&buf, doc); err == nil {
			tables = buf.Bytes()
		}
	}
	page := strings.Replace(dashboardHTML, initialMark, string(initial), 1)
	page = strings.Replace(page, noscriptMark, string(tables), 1)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	// Nothing but this page's own script and styles, and fetches to its
	// own origin.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, page)
}

// Package admin serves holdfast's operator endpoints: /healthz, /readyz,
// /metrics, /status, /status.json and /reload. They live on their own
// listener, never on a traffic listener.
package admin

import (
	"encoding/json"
	"html/template"
	"net/http"
	"net/http/pprof"
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
	Draining() bool
	Status() []balancer.PoolStatus
	ListenerStatus() []proxy.ListenerStatus
	Reload() (string, error)
}

// Handler returns the admin mux. Safe for concurrent use.
func Handler(rt Runtime, g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
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
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(newStatusDoc(rt))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = page.Execute(w, newStatusDoc(rt))
	})
	// Profiling for operators; the admin listener is loopback by default.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
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

var page = template.Must(template.New("status").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>holdfast status</title>
<meta http-equiv="refresh" content="2">
<style>body{font:14px system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.healthy{background:#d9f7d9}.unhealthy{background:#f9d6d6}
.held_down{background:#ffe7b3}.ejected{background:#f3d1f5}.draining{background:#e5e5e5}</style></head><body>
<h1>holdfast</h1><p>{{.Time.Format "2006-01-02 15:04:05 MST"}} · ready: <b>{{.Ready}}</b>{{with .NotReady}} ({{.}}){{end}}{{if .Draining}} · <b>draining</b>{{end}}</p>
<h2>listeners</h2><table><tr><th>listener</th><th>address</th><th>protocol</th><th>conns</th><th>max</th><th>process cap</th><th>accepting</th><th>accept errors</th><th>refused</th></tr>
{{range .Listeners}}<tr class="{{if .Accepting}}healthy{{else}}unhealthy{{end}}"><td>{{.Name}}</td><td>{{.Address}}</td><td>{{.Protocol}}</td><td>{{.Connections}}</td><td>{{.MaxConnections}}</td><td>{{.ProcessCap}}</td><td>{{if .Accepting}}yes{{else}}<b>paused {{.PausedFor}}</b>: {{.AcceptError}}{{end}}</td><td>{{.AcceptErrors}}</td><td>{{.Refused}}</td></tr>
{{end}}</table>
{{range .Pools}}<h2>pool {{.Name}} <small>({{.Balance}}, {{.Routable}}/{{.Total}} routable{{if .Panic}}, PANIC MODE{{end}})</small></h2>
{{with .Discovery}}<p>discovery: {{.Backends}} backends, last success {{.Age}} ago, last result {{.LastResult}}{{if .Stale}}, <b>serving last good set (stale)</b>{{end}}</p>{{end}}
<table><tr><th>backend</th><th>prio</th><th>weight</th><th>state</th><th>reason</th><th>transitions</th><th>hold left</th><th>in flight</th><th>conns</th><th>latency</th></tr>
{{range .Backends}}<tr class="{{.State}}"><td>{{.Address}}</td><td>{{.Priority}}</td><td>{{.Weight}}</td><td>{{.State}}</td><td>{{.Reason}}</td><td>{{.Transitions}}</td><td>{{.HoldRemaining}}</td><td>{{.Inflight}}</td><td>{{.Connections}}</td><td>{{.LatencyEWMA}}</td></tr>
{{end}}</table>{{end}}</body></html>
`))

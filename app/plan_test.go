package app

import (
	"reflect"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/config"
)

func TestPlan(t *testing.T) {
	web := config.Listener{Name: "web", Listen: "127.0.0.1:8080", Protocol: "http", Pool: "app"}
	db := config.Listener{Name: "db", Listen: "127.0.0.1:5432", Protocol: "tcp", Pool: "pg"}
	cfg := func(ls []config.Listener, pools ...string) *config.Config {
		c := &config.Config{Listeners: ls}
		for _, p := range pools {
			c.Pools = append(c.Pools, config.Pool{Name: p})
		}
		return c
	}
	with := func(l config.Listener, edit func(*config.Listener)) config.Listener {
		l.Routes = append([]config.Route(nil), l.Routes...)
		edit(&l)
		return l
	}
	cases := []struct {
		name      string
		old, next *config.Config
		want      Plan
	}{
		{name: "first start: everything starts and binds",
			old: nil, next: cfg([]config.Listener{web, db}, "app", "pg"),
			want: Plan{StartPools: []string{"app", "pg"}, Bind: []string{"web", "db"}}},
		{name: "same config: pools update, listeners retarget",
			old: cfg([]config.Listener{web, db}, "app", "pg"), next: cfg([]config.Listener{web, db}, "app", "pg"),
			want: Plan{UpdatePools: []string{"app", "pg"}, Retarget: []string{"web", "db"}}},
		{name: "pool added behind a new route",
			old: cfg([]config.Listener{web}, "app"),
			next: cfg([]config.Listener{with(web, func(l *config.Listener) {
				l.Routes = append(l.Routes, config.Route{PathPrefix: "/new/", Pool: "fresh"})
			})}, "app", "fresh"),
			want: Plan{StartPools: []string{"fresh"}, UpdatePools: []string{"app"}, Retarget: []string{"web"}}},
		{name: "pool and listener removed",
			old: cfg([]config.Listener{web, db}, "app", "pg"), next: cfg([]config.Listener{web}, "app"),
			want: Plan{UpdatePools: []string{"app"}, StopPools: []string{"pg"}, Retarget: []string{"web"}, Drain: []string{"db"}}},
		{name: "listener moved to another address rebinds",
			old:  cfg([]config.Listener{web}, "app"),
			next: cfg([]config.Listener{with(web, func(l *config.Listener) { l.Listen = "127.0.0.1:8081" })}, "app"),
			want: Plan{UpdatePools: []string{"app"}, Rebind: []string{"web"}}},
		{name: "timeouts change rebinds",
			old: cfg([]config.Listener{web}, "app"),
			next: cfg([]config.Listener{with(web, func(l *config.Listener) {
				l.Timeouts.Idle = config.Duration(time.Minute)
			})}, "app"),
			want: Plan{UpdatePools: []string{"app"}, Rebind: []string{"web"}}},
		{name: "TLS turned on rebinds",
			old: cfg([]config.Listener{web}, "app"),
			next: cfg([]config.Listener{with(web, func(l *config.Listener) {
				l.TLS = []config.TLSCert{{CertFile: "a.pem", KeyFile: "a.key"}}
			})}, "app"),
			want: Plan{UpdatePools: []string{"app"}, Rebind: []string{"web"}}},
		{name: "other certificates on a TLS listener retarget",
			old: cfg([]config.Listener{with(web, func(l *config.Listener) {
				l.TLS = []config.TLSCert{{CertFile: "a.pem", KeyFile: "a.key"}}
			})}, "app"),
			next: cfg([]config.Listener{with(web, func(l *config.Listener) {
				l.TLS = []config.TLSCert{{CertFile: "b.pem", KeyFile: "b.key"}}
			})}, "app"),
			want: Plan{UpdatePools: []string{"app"}, Retarget: []string{"web"}}},
		{name: "default pool switched in place",
			old:  cfg([]config.Listener{web}, "app", "next"),
			next: cfg([]config.Listener{with(web, func(l *config.Listener) { l.Pool = "next" })}, "next"),
			want: Plan{UpdatePools: []string{"next"}, StopPools: []string{"app"}, Retarget: []string{"web"}}},
		{name: "renamed listener: the old drains, the new binds",
			old:  cfg([]config.Listener{web}, "app"),
			next: cfg([]config.Listener{with(web, func(l *config.Listener) { l.Name = "www" })}, "app"),
			want: Plan{UpdatePools: []string{"app"}, Bind: []string{"www"}, Drain: []string{"web"}}},
		{name: "protocol change rebinds",
			old:  cfg([]config.Listener{db}, "pg"),
			next: cfg([]config.Listener{with(db, func(l *config.Listener) { l.Protocol = "http" })}, "pg"),
			want: Plan{UpdatePools: []string{"pg"}, Rebind: []string{"db"}}},
		{name: "empty to empty",
			old: cfg(nil), next: cfg(nil),
			want: Plan{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := plan(c.old, c.next); !reflect.DeepEqual(got, c.want) {
				t.Errorf("plan =\n  %+v\nwant\n  %+v", got, c.want)
			}
		})
	}
}

package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/config"
)

func TestListenerParkTimeout(t *testing.T) {
	doc := func(proto, timeouts string) string {
		return "listeners:\n  - { name: web, listen: 127.0.0.1:8080, pool: p, protocol: " + proto + timeouts + " }\n" +
			"pools:\n  - { name: p, backends: [127.0.0.1:9001] }\n"
	}
	cases := []struct {
		name    string
		doc     string
		want    time.Duration
		wantErr string
	}{
		{name: "default 100ms", doc: doc("http", ""), want: 100 * time.Millisecond},
		{name: "explicit", doc: doc("http", ", timeouts: { park: 250ms }"), want: 250 * time.Millisecond},
		{name: "zero never parks", doc: doc("http", ", timeouts: { park: 0s }"), want: 0},
		{name: "negative", doc: doc("http", ", timeouts: { park: -1s }"), wantErr: "must not be negative"},
		{name: "tcp listener", doc: doc("tcp", ", timeouts: { park: 1s }"), wantErr: "http listeners only"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(c.doc))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), "listeners[0].timeouts.park") || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want listeners[0].timeouts.park: %s", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if got := cfg.Listeners[0].Timeouts.Park.D(); got != c.want {
				t.Errorf("park = %v, want %v", got, c.want)
			}
		})
	}
}

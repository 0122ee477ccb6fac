package health

import (
	"fmt"
	"testing"
	"time"

	"github.com/holdfast-lb/holdfast/config"
)

func TestPolicyFrom(t *testing.T) {
	h := config.Health{Rise: 2, Fall: 3, Flap: config.Flap{
		Window: config.Duration(time.Minute), MaxTransitions: 4,
		Hold: config.Duration(30 * time.Second), MaxHold: config.Duration(10 * time.Minute),
	}}
	o := config.Outlier{ConsecutiveFailures: 5, Ejection: config.Duration(10 * time.Second), MaxEjection: config.Duration(5 * time.Minute)}
	want := Policy{Rise: 2, Fall: 3, FlapWindow: time.Minute, MaxTransitions: 4, Hold: 30 * time.Second, MaxHold: 10 * time.Minute,
		ConsecutiveFailures: 5, Ejection: 10 * time.Second, MaxEjection: 5 * time.Minute}
	if got := PolicyFrom(h, o); got != want {
		t.Errorf("PolicyFrom = %+v, want %+v", got, want)
	}
}

func TestCheckerFrom(t *testing.T) {
	tests := []struct {
		name    string
		h       config.Health
		want    string // %T of the checker; "" = nil
		wantErr bool
	}{
		{name: "http", h: config.Health{Type: "http", Path: "/healthz", ExpectStatus: "200-399"}, want: "*health.HTTPChecker"},
		{name: "http bad status", h: config.Health{Type: "http", Path: "/", ExpectStatus: "2xx"}, wantErr: true},
		{name: "tcp", h: config.Health{Type: "tcp"}, want: "*health.TCPChecker"},
		{name: "none", h: config.Health{Type: "none"}},
		{name: "grpc", h: config.Health{Type: "grpc", Service: "svc"}, want: "*health.GRPCChecker"},
		{name: "unknown", h: config.Health{Type: "udp"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := CheckerFrom(tc.h, "")
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tc.wantErr)
			}
			got := ""
			if c != nil {
				got = fmt.Sprintf("%T", c)
			}
			if got != tc.want {
				t.Errorf("checker %s, want %s", got, tc.want)
			}
		})
	}
}

package health_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	ghealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/holdfast-lb/holdfast/health"
)

func TestGRPCChecker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := ghealth.NewServer()
	hs.SetServingStatus("users", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("orders", healthpb.HealthCheckResponse_NOT_SERVING)
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close()
	tests := []struct {
		name, service, addr, wantErr string
	}{
		{name: "server serving", addr: ln.Addr().String()},
		{name: "service serving", service: "users", addr: ln.Addr().String()},
		{name: "service not serving", service: "orders", addr: ln.Addr().String(), wantErr: "NOT_SERVING"},
		{name: "unknown service", service: "nope", addr: ln.Addr().String(), wantErr: "grpc-status 5"},
		{name: "nothing listening", addr: deadAddr, wantErr: "refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := health.NewGRPCCheck(health.GRPCCheck{Service: tc.service}).Check(ctx, tc.addr)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("check failed: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
	// Going NOT_SERVING at run time is seen by the next check.
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := health.NewGRPCCheck(health.GRPCCheck{}).Check(ctx, ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "NOT_SERVING") {
		t.Fatalf("after NOT_SERVING: %v", err)
	}
}

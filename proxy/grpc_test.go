package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/holdfast-lb/holdfast/config"
	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// grpcBackend is a gRPC server with a test.Echo service: Who answers the
// backend's name (or fails as the request says), Chat echoes each message
// prefixed with it; grpc.health.v1 is served too.
type grpcBackend struct {
	name   string
	addr   string
	health *health.Server
	hold   chan struct{} // Who with "hold" waits on it
}

func startGRPCBackend(t *testing.T, name string) *grpcBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &grpcBackend{name: name, addr: ln.Addr().String(), health: health.NewServer(), hold: make(chan struct{})}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, b.health)
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "test.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Who", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			switch in.Value {
			case "fail":
				_ = grpc.SetTrailer(ctx, metadata.Pairs("x-why", "asked"))
				return nil, status.Error(codes.NotFound, "nope from "+name)
			case "hold":
				select {
				case <-b.hold:
				case <-ctx.Done():
				}
			}
			return wrapperspb.String(name), nil
		}}},
		Streams: []grpc.StreamDesc{{StreamName: "Chat", ServerStreams: true, ClientStreams: true, Handler: func(_ any, st grpc.ServerStream) error {
			for {
				in := new(wrapperspb.StringValue)
				if err := st.RecvMsg(in); err == io.EOF {
					return nil
				} else if err != nil {
					return err
				}
				if err := st.SendMsg(wrapperspb.String(name + ":" + in.Value)); err != nil {
					return err
				}
			}
		}}},
	}, struct{}{})
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { close(b.hold); s.Stop() })
	return b
}

func grpcDial(t *testing.T, addr string) *grpc.ClientConn {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func who(ctx context.Context, cc *grpc.ClientConn, arg string, opts ...grpc.CallOption) (string, error) {
	out := new(wrapperspb.StringValue)
	err := cc.Invoke(ctx, "/test.Echo/Who", wrapperspb.String(arg), out, opts...)
	return out.Value, err
}

func grpcConfig(extraPool string, backends ...*grpcBackend) string {
	addrs := make([]string, len(backends))
	for i, b := range backends {
		addrs[i] = b.addr
	}
	return fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: g }
pools:
  - name: g
    protocol: h2c
    backends: [%s]
    health: { type: grpc, interval: 100ms, timeout: 1s, rise: 1, fall: 1 }
%s`, strings.Join(addrs, ", "), extraPool)
}

// TestGRPCBalancedPerCall: 300 unary calls on one client connection are
// spread over the three backends, each call on its own.
func TestGRPCBalancedPerCall(t *testing.T) {
	bs := []*grpcBackend{startGRPCBackend(t, "a"), startGRPCBackend(t, "b"), startGRPCBackend(t, "c")}
	a := startL4(t, grpcConfig("", bs...))
	cc := grpcDial(t, a.ListenerAddr("web").String())
	counts := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 300 {
		name, err := who(ctx, cc, "")
		if err != nil {
			t.Fatal(err)
		}
		counts[name]++
	}
	for _, b := range bs {
		if n := counts[b.name]; n < 60 || n > 141 {
			t.Errorf("backend %s answered %d of 300 calls (want 20%%-47%%); all: %v", b.name, n, counts)
		}
	}
	if n := testkit.Metric(t, a.Registry(), "holdfast_requests_total", map[string]string{"listener": "web", "code": "2xx"}); n != 300 {
		t.Errorf("holdfast_requests_total{code=2xx} = %v, want 300", n)
	}
	// Trailers (grpc-status, grpc-message and the backend's own) pass.
	var tr metadata.MD
	_, err := who(ctx, cc, "fail", grpc.Trailer(&tr))
	if st, _ := status.FromError(err); st.Code() != codes.NotFound || !strings.HasPrefix(st.Message(), "nope from ") {
		t.Errorf("error call: %v", err)
	}
	if v := tr.Get("x-why"); len(v) != 1 || v[0] != "asked" {
		t.Errorf("trailer x-why = %v", v)
	}
}

// TestGRPCStreamSurvivesReload: a bidirectional stream keeps going
// across a reload, and a drain lets it finish.
func TestGRPCStreamSurvivesReload(t *testing.T) {
	b := startGRPCBackend(t, "a")
	a := startL4(t, grpcConfig("", b))
	cc := grpcDial(t, a.ListenerAddr("web").String())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/test.Echo/Chat")
	if err != nil {
		t.Fatal(err)
	}
	say := func(msg string) {
		t.Helper()
		if err := st.SendMsg(wrapperspb.String(msg)); err != nil {
			t.Fatalf("send %s: %v", msg, err)
		}
		in := new(wrapperspb.StringValue)
		if err := st.RecvMsg(in); err != nil {
			t.Fatalf("recv after %s: %v", msg, err)
		}
		if in.Value != "a:"+msg {
			t.Fatalf("got %q, want a:%s", in.Value, msg)
		}
	}
	say("one")
	cfg, err := config.Load(testkit.WriteConfig(t, "admin: { listen: 127.0.0.1:0 }\n"+grpcConfig(`    retries: { attempts: 2 }
`, b)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReloadConfig(cfg); err != nil {
		t.Fatal(err)
	}
	say("two")
	if _, err := who(ctx, cc, ""); err != nil {
		t.Fatalf("unary call after reload: %v", err)
	}
	// Shutdown in the background: GOAWAY, and the stream may finish.
	done := make(chan struct{})
	go func() {
		defer close(done)
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		a.Shutdown(sctx)
	}()
	testkit.WaitFor(t, 5*time.Second, "draining", a.Draining)
	say("three")
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := st.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
		t.Fatalf("end of stream: %v, want EOF", err)
	}
	<-done
}

// TestGRPCNotServingGetsNoCalls: a backend whose grpc.health.v1 says
// NOT_SERVING is taken out; every call goes to the other.
func TestGRPCNotServingGetsNoCalls(t *testing.T) {
	good, bad := startGRPCBackend(t, "good"), startGRPCBackend(t, "bad")
	bad.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	a := startL4(t, grpcConfig("", good, bad))
	testkit.WaitFor(t, 5*time.Second, "bad backend down", func() bool {
		return testkit.Metric(t, a.Registry(), "holdfast_backend_up", map[string]string{"pool": "g", "backend": bad.addr}) == 0 &&
			testkit.Metric(t, a.Registry(), "holdfast_backend_up", map[string]string{"pool": "g", "backend": good.addr}) == 1
	})
	cc := grpcDial(t, a.ListenerAddr("web").String())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 50 {
		name, err := who(ctx, cc, "")
		if err != nil || name != "good" {
			t.Fatalf("call %d: %q %v", i, name, err)
		}
	}
}

// TestGRPCHoldfastErrors: when holdfast answers a call itself, the answer
// is a gRPC status naming the pool, not a plain-text body.
func TestGRPCHoldfastErrors(t *testing.T) {
	b := startGRPCBackend(t, "a")
	a := startL4(t, fmt.Sprintf(`
listeners:
  - name: web
    listen: 127.0.0.1:0
    pool: g
    routes:
      - { path_prefix: /test.Echo/, pool: slow }
      - { path_prefix: /down.Svc/, pool: down }
      - { path_prefix: /h1.Svc/, pool: plain }
pools:
  - { name: g, protocol: h2c, backends: [%[1]s], health: { type: none } }
  - { name: slow, protocol: h2c, backends: [%[1]s], health: { type: none }, timeouts: { response: 300ms } }
  - { name: down, protocol: h2c, backends: [127.0.0.1:1], health: { type: none } }
  - { name: plain, backends: [%[1]s], health: { type: none } }
`, b.addr))
	cc := grpcDial(t, a.ListenerAddr("web").String())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tests := []struct {
		name, method, arg string
		code              codes.Code
		msg               string
	}{
		{name: "upstream failed", method: "/down.Svc/Who", code: codes.Unavailable, msg: "pool down"},
		{name: "timeout", method: "/test.Echo/Who", arg: "hold", code: codes.DeadlineExceeded, msg: "pool slow"},
		{name: "not an h2 pool", method: "/h1.Svc/Who", code: codes.Unimplemented, msg: "pool plain"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := cc.Invoke(ctx, tc.method, wrapperspb.String(tc.arg), new(wrapperspb.StringValue))
			st, _ := status.FromError(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("got %v %q, want %v naming %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
		})
	}
}

package proxy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/holdfast-lb/holdfast/internal/testkit"
)

// floodApp is holdfast in front of a backend that holds /slow until the
// test ends and answers everything else at once.
func floodApp(t *testing.T) (*testkit.App, *testkit.Backend) {
	be := testkit.StartBackend(t, "b")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	be.SetHandler(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
		}
		ctx.SetBodyString("ok\n")
	})
	// Cleanups run last-in first-out: release the backend before holdfast
	// drains.
	a := startL4(t, fmt.Sprintf(`
listeners:
  - { name: web, listen: 127.0.0.1:0, pool: p, timeouts: { drain: 2s } }
pools:
  - { name: p, backends: [%s], health: { type: none } }
`, be.Addr))
	return a, be
}

// rawH2 is a client speaking raw frames; closed reports when holdfast
// ended the connection (GOAWAY or EOF) and with which GOAWAY code.
type rawH2 struct {
	c      net.Conn
	fr     *http2.Framer
	closed chan struct{}
	code   atomic.Value // http2.ErrCode of a GOAWAY
}

func dialRawH2(t *testing.T, addr string) *rawH2 {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	r := &rawH2{c: c, fr: http2.NewFramer(c, c), closed: make(chan struct{})}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(r.closed)
		rd := http2.NewFramer(io.Discard, c)
		for {
			f, err := rd.ReadFrame()
			if err != nil {
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				r.code.Store(g.ErrCode)
			}
		}
	}()
	return r
}

func headerBlock(path string) []byte {
	var b bytes.Buffer
	e := hpack.NewEncoder(&b)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", path}} {
		_ = e.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return b.Bytes()
}

// servedMeanwhile checks that another client is answered while the flood
// runs.
func servedMeanwhile(t *testing.T, a *testkit.App) {
	t.Helper()
	resp, err := h2cClient().Get(a.URL("web", "/fast"))
	if err != nil {
		t.Fatalf("other client: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("other client got %d", resp.StatusCode)
	}
}

// TestH2RapidResetCutOff: a client opening and resetting streams at once
// (CVE-2023-44487) while their handlers still run is cut off with
// ENHANCE_YOUR_CALM after a bounded number of streams; other clients are
// served all along.
func TestH2RapidResetCutOff(t *testing.T) {
	a, be := floodApp(t)
	r := dialRawH2(t, a.ListenerAddr("web").String())
	block := headerBlock("/slow")
	sent := 0
	var werr error
	deadline := time.Now().Add(15 * time.Second)
	const flood = 20000 // more than the kernel's socket buffers take at once
	for id := uint32(1); sent < flood && time.Now().Before(deadline); id += 2 {
		if werr = r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}); werr != nil {
			break
		}
		if werr = r.fr.WriteRSTStream(id, http2.ErrCodeCancel); werr != nil {
			break
		}
		sent++
		if sent == 300 {
			servedMeanwhile(t, a)
		}
		select {
		case <-r.closed:
			werr = errors.New("closed by holdfast")
		default:
		}
		if werr != nil {
			break
		}
	}
	select {
	case <-r.closed:
	case <-time.After(10 * time.Second):
		t.Fatalf("connection still open after %d reset streams (write error %v)", sent, werr)
	}
	// The work holdfast did for the flood is bounded: the streams
	// x/net/http2 runs at once plus the ones it queues before it gives up.
	if n := be.Requests(); n > 5*250 {
		t.Errorf("backend got %d requests from %d reset streams", n, sent)
	}
	code, _ := r.code.Load().(http2.ErrCode)
	t.Logf("cut off after %d reset streams sent, %d reached the backend, GOAWAY %v", sent, be.Requests(), code)
	servedMeanwhile(t, a)
}

// TestH2ContinuationFloodCutOff: a header block that never ends
// (CVE-2024-27316) is cut off once it passes the header list limit,
// without holdfast buffering it; other clients are served.
func TestH2ContinuationFloodCutOff(t *testing.T) {
	a, _ := floodApp(t)
	r := dialRawH2(t, a.ListenerAddr("web").String())
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: headerBlock("/fast"), EndHeaders: false}); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	e := hpack.NewEncoder(&b)
	for i := 0; b.Len() < 8<<10; i++ {
		_ = e.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-flood-%d", i), Value: string(bytes.Repeat([]byte("v"), 100))})
	}
	frag := b.Bytes()
	var once sync.Once
	total := 0
	deadline := time.Now().Add(15 * time.Second)
	for total < 64<<20 && time.Now().Before(deadline) {
		_ = r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := r.fr.WriteContinuation(1, false, frag); err != nil {
			break
		}
		total += len(frag)
		if total > 256<<10 {
			once.Do(func() { servedMeanwhile(t, a) })
		}
		select {
		case <-r.closed:
			total = 1 << 30
		default:
		}
	}
	select {
	case <-r.closed:
	case <-time.After(10 * time.Second):
		t.Fatalf("connection still open after %d bytes of CONTINUATION", total)
	}
	servedMeanwhile(t, a)
}

// TestH2PingFloodBounded: a client that sends PINGs and never reads the
// acks (CVE-2019-9512) cannot make holdfast queue acks without bound:
// either x/net cuts the connection once 10,000 control frames are queued
// for it, or it stops reading the client (TCP back-pressure, nothing more
// is queued); other clients are served either way.
func TestH2PingFloodBounded(t *testing.T) {
	a, _ := floodApp(t)
	c, err := net.DialTimeout("tcp", a.ListenerAddr("web").String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.(*net.TCPConn).SetReadBuffer(4096) // the acks pile up on holdfast's side
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	// PING frames written 1,024 at a time.
	var batch bytes.Buffer
	pf := http2.NewFramer(&batch, nil)
	for range 1024 {
		_ = pf.WritePing(false, [8]byte{})
	}
	sent, outcome := 0, ""
	deadline := time.Now().Add(40 * time.Second)
	for sent < 4_000_000 && time.Now().Before(deadline) && outcome == "" {
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(batch.Bytes()); err != nil {
			outcome = "cut off"
			if errors.Is(err, os.ErrDeadlineExceeded) {
				outcome = "no longer read (back-pressure)"
			}
			break
		}
		sent += 1024
		if sent == 20*1024 {
			servedMeanwhile(t, a)
		}
	}
	if outcome == "" {
		t.Fatalf("holdfast took %d unread PINGs and still reads", sent)
	}
	t.Logf("after %d PINGs: %s", sent, outcome)
	servedMeanwhile(t, a)
}

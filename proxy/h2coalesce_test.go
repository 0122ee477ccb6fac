package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Writes from several goroutines all arrive, each whole and in the order
// of its own writer, and what is pending when Close is called still goes
// out before the connection closes.
func TestH2CoalesceDeliversEverythingThenCloses(t *testing.T) {
	c, peer := loopbackPair(t)
	w := newH2Coalesce(c)
	const writers, each = 4, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := w.Write(fmt.Appendf(nil, "<%d:%04d>", g, i)); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	next := make([]int, writers)
	for len(got) > 0 {
		var g, i int
		if _, err := fmt.Sscanf(string(got[:8]), "<%d:%04d>", &g, &i); err != nil || g < 0 || g >= writers || i != next[g] {
			t.Fatalf("out of order or torn at %q (want writer %d's %d)", got[:8], g, next[max(0, min(g, writers-1))])
		}
		next[g]++
		got = got[8:]
	}
	for g, n := range next {
		if n != each {
			t.Fatalf("writer %d: %d of %d writes arrived", g, n, each)
		}
	}
	if _, err := w.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v, want net.ErrClosed", err)
	}
}

// A send that fails (the peer reset the connection) fails the writes
// after it instead of piling them up.
func TestH2CoalesceFailsAfterSendError(t *testing.T) {
	c, peer := loopbackPair(t)
	_ = peer.(*net.TCPConn).SetLinger(0)
	_ = peer.Close() // RST
	w := newH2Coalesce(c)
	defer w.Close()
	chunk := bytes.Repeat([]byte("x"), 4096)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
	t.Fatal("writes kept succeeding on a reset connection")
}

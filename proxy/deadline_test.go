package proxy

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// acceptedPair gives a client connection as LimitListener accepts it
// (countedConn, direct socket calls, lazy deadlines) and its peer.
func acceptedPair(t *testing.T) (*countedConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ll := NewLimitListener(ln, LimitOptions{})
	t.Cleanup(func() { _ = ll.Close() })
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peer.Close() })
	c, err := ll.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	cc := c.(*countedConn)
	if !cc.direct || cc.io.dl == nil {
		t.Fatal("accepted TCP connection does not use direct socket calls with lazy deadlines")
	}
	return cc, peer
}

func readTimesOut(t *testing.T, c net.Conn) time.Time {
	t.Helper()
	var b [16]byte
	_, err := c.Read(b[:])
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want a deadline error", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read error %v is not a net.Error timeout", err)
	}
	return time.Now()
}

// A deadline moved later than the armed one is kept (the socket fires
// early, the read re-arms and goes on), so the read times out at the later
// deadline, never at the earlier one.
func TestLazyDeadlineMovedLaterIsNotEarly(t *testing.T) {
	c, _ := acceptedPair(t)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	later := time.Now().Add(300 * time.Millisecond)
	_ = c.SetReadDeadline(later)
	if at := readTimesOut(t, c); at.Before(later) {
		t.Fatalf("read timed out %v before its deadline", later.Sub(at))
	}
}

// A deadline moved earlier than the armed one moves the socket's.
func TestLazyDeadlineMovedEarlierFires(t *testing.T) {
	c, _ := acceptedPair(t)
	_ = c.SetReadDeadline(time.Now().Add(time.Hour))
	soon := time.Now().Add(50 * time.Millisecond)
	_ = c.SetReadDeadline(soon)
	at := readTimesOut(t, c)
	if at.Before(soon) || at.Sub(soon) > 10*time.Second {
		t.Fatalf("read timed out at %v, deadline %v", at, soon)
	}
}

// A cleared deadline does not fire: the read waits for the bytes the peer
// sends after the old deadline has passed.
func TestLazyDeadlineCleared(t *testing.T) {
	c, peer := acceptedPair(t)
	old := 20 * time.Millisecond
	_ = c.SetReadDeadline(time.Now().Add(old))
	_ = c.SetReadDeadline(time.Time{})
	send := time.AfterFunc(10*old, func() { _, _ = peer.Write([]byte("hi")) })
	defer send.Stop()
	var b [16]byte
	n, err := c.Read(b[:])
	if err != nil || string(b[:n]) != "hi" {
		t.Fatalf("read %q, %v; want the peer's bytes", b[:n], err)
	}
}

// Another goroutine can still cut a blocked read short with a deadline in
// the past, as with any net.Conn.
func TestLazyDeadlineInterruptsBlockedRead(t *testing.T) {
	c, _ := acceptedPair(t)
	_ = c.SetReadDeadline(time.Now().Add(time.Hour))
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		var b [16]byte
		_, err := c.Read(b[:])
		done <- err
	}()
	<-started
	_ = c.SetReadDeadline(time.Now())
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %v, want a deadline error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocked read not interrupted")
	}
}

// A write that blocks (the peer reads nothing) is cut at its deadline, also
// after the deadline was first set earlier and then moved later; what it
// wrote before is counted.
func TestLazyWriteDeadline(t *testing.T) {
	c, _ := acceptedPair(t)
	_ = c.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	later := time.Now().Add(300 * time.Millisecond)
	_ = c.SetWriteDeadline(later)
	buf := make([]byte, 64<<20) // more than the socket buffers hold
	n, err := c.Write(buf)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n == len(buf) {
		t.Fatalf("write: %d bytes, %v; want some bytes and a deadline error", n, err)
	}
	if now := time.Now(); now.Before(later) {
		t.Fatalf("write timed out %v before its deadline", later.Sub(now))
	}
}

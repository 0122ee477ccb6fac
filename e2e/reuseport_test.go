package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestTakeoverSocketChoice is the kernel behaviour behind holdfast's choice
// of takeover: the old process hands its listening socket to the new one
// instead of both binding their own with SO_REUSEPORT.
//
// With SO_REUSEPORT every process has its own socket and its own accept
// queue; the kernel spreads new connections over them. Connections that
// sit in the closing process's queue when it closes its socket are reset,
// though the client saw its connect succeed. With a handed-over socket there
// is one queue, shared: the old process closing its descriptor closes
// nothing, and the new process accepts every queued connection.
func TestTakeoverSocketChoice(t *testing.T) {
	const conns = 32

	t.Run("SO_REUSEPORT resets the closing socket's queue", func(t *testing.T) {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}}
		oldLn, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		newLn, err := lc.Listen(context.Background(), "tcp", oldLn.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer newLn.Close()
		clients := dialQueued(t, oldLn.Addr().String(), conns)
		_ = oldLn.Close() // the old process stops accepting
		accepted := acceptAll(t, newLn, conns)
		reset := countReset(t, clients)
		t.Logf("SO_REUSEPORT: %d of %d connected clients accepted by the new socket, %d reset", accepted, conns, reset)
		if reset == 0 {
			t.Skip("the kernel put every connection in the new socket's queue this time; nothing to show")
		}
		if accepted+reset != conns {
			t.Errorf("accepted %d + reset %d != %d", accepted, reset, conns)
		}
	})

	t.Run("a handed-over socket loses nothing", func(t *testing.T) {
		oldLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		// What SCM_RIGHTS gives the new process: another descriptor for the
		// same socket.
		f, err := oldLn.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		newLn, err := net.FileListener(f)
		_ = f.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer newLn.Close()
		clients := dialQueued(t, oldLn.Addr().String(), conns)
		_ = oldLn.Close()
		accepted := acceptAll(t, newLn, conns)
		reset := countReset(t, clients)
		t.Logf("handed-over socket: %d of %d accepted, %d reset", accepted, conns, reset)
		if accepted != conns || reset != 0 {
			t.Errorf("accepted %d, reset %d; want all %d accepted", accepted, reset, conns)
		}
	})
}

// dialQueued connects n clients that nobody accepts yet: the kernel
// completes the handshakes and queues them.
func dialQueued(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		cs = append(cs, c)
	}
	return cs
}

// acceptAll accepts until n connections or until nothing more is queued,
// and answers each with one byte.
func acceptAll(t *testing.T, ln net.Listener, n int) int {
	t.Helper()
	got := 0
	for got < n {
		_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(300 * time.Millisecond))
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			t.Fatal(err)
		}
		_, _ = c.Write([]byte{'x'})
		t.Cleanup(func() { _ = c.Close() })
		got++
	}
	return got
}

// countReset reads one byte from each client: a reset connection fails.
func countReset(t *testing.T, cs []net.Conn) int {
	t.Helper()
	reset := 0
	for _, c := range cs {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil {
			if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) {
				reset++
				continue
			}
			t.Fatalf("client read: %v", err)
		}
	}
	return reset
}

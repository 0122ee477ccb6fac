package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// loopbackPair gives a dialled TCP connection and the accepted peer.
func loopbackPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peer.Close() })
	return c, peer
}

// tcpPair gives a connection with direct socket calls (as an upstream
// connection has) and its peer.
func tcpPair(t *testing.T) (*net.TCPConn, *sockIO, net.Conn) {
	t.Helper()
	c, peer := loopbackPair(t)
	tc := c.(*net.TCPConn)
	var s sockIO
	if !s.init(tc) {
		t.Fatal("sockIO.init failed on a TCP connection")
	}
	_ = tc.SetDeadline(time.Now().Add(30 * time.Second))
	return tc, &s, peer
}

// answer reads want bytes from peer, then writes reply.
func answer(peer net.Conn, want int, reply string) chan error {
	done := make(chan error, 1)
	go func() {
		got := make([]byte, want)
		if _, err := io.ReadFull(peer, got); err != nil {
			done <- err
			return
		}
		_, err := peer.Write([]byte(reply))
		done <- err
	}()
	return done
}

// A request sent by sendRead reaches the peer whole, and its answer is read.
func TestSendRead(t *testing.T) {
	_, s, peer := tcpPair(t)
	req := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	done := answer(peer, len(req), "HTTP/1.1 200 OK\r\n\r\n")
	buf := make([]byte, 64)
	sent, n, err := s.sendRead(req, buf)
	if err != nil || sent != len(req) || string(buf[:n]) != "HTTP/1.1 200 OK\r\n\r\n" {
		t.Fatalf("sendRead: sent %d of %d, read %q, %v", sent, len(req), buf[:n], err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// What does not fit the send buffer at once is written the ordinary way
// (waiting for room) before the read: all of it arrives, in order.
func TestSendReadSendBufferFull(t *testing.T) {
	tc, s, peer := tcpPair(t)
	// Fixed small buffers (no autotuning): 1 MiB cannot go out at once.
	_ = tc.SetWriteBuffer(4096)
	_ = peer.(*net.TCPConn).SetReadBuffer(64 << 10)
	req := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	done := make(chan error, 1)
	go func() {
		got := make([]byte, len(req))
		if _, err := io.ReadFull(peer, got); err != nil {
			done <- err
			return
		}
		if !bytes.Equal(got, req) {
			done <- io.ErrUnexpectedEOF
			return
		}
		_, err := peer.Write([]byte("ok"))
		done <- err
	}()
	buf := make([]byte, 8)
	sent, n, err := s.sendRead(req, buf)
	if err != nil || sent != len(req) || string(buf[:n]) != "ok" {
		t.Fatalf("sendRead: sent %d of %d, read %q, %v", sent, len(req), buf[:n], err)
	}
	if err := <-done; err != nil {
		t.Fatalf("peer: %v", err)
	}
}

// A peer that closed without answering gives an error (EOF or a reset),
// never an answer.
func TestSendReadPeerGone(t *testing.T) {
	_, s, peer := tcpPair(t)
	_ = peer.Close()
	buf := make([]byte, 8)
	_, n, err := s.sendRead([]byte("GET / HTTP/1.1\r\n\r\n"), buf)
	if err == nil || n != 0 {
		t.Fatalf("sendRead to a closed peer: %d bytes, %v", n, err)
	}
}

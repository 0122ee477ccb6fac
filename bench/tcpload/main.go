// Command tcpload is the L4 half of the bench harness (bench/tcp.sh).
//
//	tcpload serve -addr A        a source: every connection is sent zeros as fast
//	                             as the peer takes them (what it sends is discarded)
//	tcpload run -addr A -c N -d D  N connections read for D; prints one line
//	                             "bytes=B seconds=S mib_per_s=M conns=N"
//	tcpload ready -addr A        exit 0 once a connection to A delivers a byte
//
// Both ends are as cheap as Go allows (1 MiB buffers, no per-byte work), so
// the proxy in the middle is what the bench measures.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: tcpload serve|run|ready -addr HOST:PORT [-c N] [-d DURATION]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:9100", "address to serve on or connect to")
	conns := fs.Int("c", 4, "run: concurrent connections")
	dur := fs.Duration("d", 10*time.Second, "run: how long to read")
	_ = fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "serve":
		serve(*addr)
	case "run":
		run(*addr, *conns, *dur)
	case "ready":
		ready(*addr)
	default:
		log.Fatalf("unknown mode %q", os.Args[1])
	}
}

func serve(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	log.Printf("tcpload source on %s", addr)
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			go func() { _, _ = io.Copy(io.Discard, c) }()
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
}

func run(addr string, n int, d time.Duration) {
	var total atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			log.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = c.SetReadDeadline(deadline)
			buf := make([]byte, 1<<20)
			for {
				k, err := c.Read(buf)
				total.Add(int64(k))
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	b := total.Load()
	fmt.Printf("bytes=%d seconds=%.3f mib_per_s=%.1f conns=%d\n", b, el, float64(b)/el/(1<<20), n)
}

func ready(addr string) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		os.Exit(1)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		os.Exit(1)
	}
}

// Command backend is the upstream the bench harness (bench/run.sh) puts behind
// every proxy: a minimal fasthttp server that answers every request with 200
// and a fixed 13-byte body over keep-alive connections. It is deliberately as
// cheap as possible so the proxy, not the backend, is what the bench measures.
package main

import (
	"flag"
	"log"
	"time"

	"github.com/valyala/fasthttp"
)

var body = []byte("hello, world\n")

func main() {
	addr := flag.String("addr", "127.0.0.1:9001", "listen address")
	flag.Parse()

	s := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetStatusCode(fasthttp.StatusOK)
			ctx.SetContentType("text/plain")
			ctx.SetBody(body)
		},
		Name:        "bench-backend",
		IdleTimeout: 120 * time.Second,
		Concurrency: 1 << 16,
	}
	log.Printf("bench backend listening on %s", *addr)
	if err := s.ListenAndServe(*addr); err != nil {
		log.Fatal(err)
	}
}

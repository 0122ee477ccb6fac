package proxy

import (
	"bufio"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestFramingOK(t *testing.T) {
	cases := []struct {
		name string
		raw  string
		ok   bool
	}{
		{"plain", "Host: x\r\nContent-Length: 5\r\n\r\n", true},
		{"chunked", "Host: x\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"chunked any case", "host: x\r\ntransfer-encoding: ChunKed\r\n\r\n", true},
		{"CL and TE", "Host: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"TE then lower-case CL", "Host: x\r\ntransfer-encoding: chunked\r\ncontent-length: 0\r\n\r\n", false},
		{"TE gzip, chunked", "Host: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false},
		{"TE identity", "Host: x\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\n", false},
		{"TE xchunked", "Host: x\r\nTransfer-Encoding: xchunked\r\n\r\n", false},
		{"two TE", "Host: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"obs-fold", "Host: x\r\nX-A: 1\r\n  folded\r\n\r\n", false},
		{"space in name", "Host: x\r\nTransfer Encoding: chunked\r\n\r\n", false},
		{"bare LF lines", "Host: x\nContent-Length: 1\n\n", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := framingOK([]byte(c.raw)); got != c.ok {
				t.Errorf("framingOK = %v, want %v", got, c.ok)
			}
		})
	}
}

func TestChunkedDecoder(t *testing.T) {
	cases := []struct {
		name, in, body, trailer string
		bad                     bool
	}{
		{name: "two chunks", in: "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", body: "hello world"},
		{name: "extension", in: "5;name=x\r\nhello\r\n0\r\n\r\n", body: "hello"},
		{name: "trailers", in: "2\r\nhi\r\n0\r\nX-Checksum: abc\r\n\r\n", body: "hi", trailer: "abc"},
		{name: "upper-case hex", in: "A\r\n0123456789\r\n0\r\n\r\n", body: "0123456789"},
		{name: "0x prefix", in: "0x5\r\nhello\r\n0\r\n\r\n", bad: true},
		{name: "no size", in: ";x\r\nhello\r\n0\r\n\r\n", bad: true},
		{name: "missing CRLF after data", in: "5\r\nhelloX0\r\n\r\n", bad: true},
		{name: "bare LF", in: "5\nhello\r\n0\r\n\r\n", bad: true},
		{name: "overflow", in: "ffffffffffffffffff\r\n", bad: true},
		{name: "truncated", in: "5\r\nhel", bad: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var resp fasthttp.Response
			s := &bodyStream{mode: modeChunked, br: bufio.NewReader(strings.NewReader(c.in)), resp: &resp,
				u: &Upstream{}}
			var got []byte
			buf := make([]byte, 3)
			var err error
			for i := 0; i < 1000; i++ {
				var n int
				n, err = s.read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					break
				}
			}
			if c.bad {
				if err == nil || s.done {
					t.Fatalf("accepted: %q", got)
				}
				return
			}
			if !s.done || string(got) != c.body {
				t.Fatalf("body %q (done %v, err %v), want %q", got, s.done, err, c.body)
			}
			if c.trailer != "" {
				if v := resp.Header.Peek("X-Checksum"); string(v) != c.trailer {
					t.Errorf("trailer %q, want %q", v, c.trailer)
				}
			}
		})
	}
}

package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// bytesConn is a net.Conn that reads from a fixed input.
type bytesConn struct {
	net.Conn
	r io.Reader
}

func (c bytesConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// FuzzH2Fix feeds any bytes to the h2 corrections: they never panic,
// never hold more than a frame, and whatever is not a header block or a
// SETTINGS frame with repeated settings reaches x/net byte for byte.
func FuzzH2Fix(f *testing.F) {
	var seed bytes.Buffer
	seed.WriteString(h2Preface)
	fr := http2.NewFramer(&seed, nil)
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
	_ = enc.WriteField(hpack.HeaderField{Name: "connection", Value: "close"})
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes()[:3], EndHeaders: false, PadLength: 3})
	_ = fr.WriteContinuation(1, true, hb.Bytes()[3:])
	_ = fr.WriteData(1, true, []byte("body"))
	_ = fr.WritePing(false, [8]byte{1})
	f.Add(seed.Bytes())
	f.Add([]byte(h2Preface + "\x00\x00\x05\x01\x2d\x00\x00\x00\x01\xff\xff\xff\xff\xff"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := wrapH2Fix(bytesConn{r: bytes.NewReader(in)}, false)
		var out []byte
		buf := make([]byte, 7) // small reads: every boundary is crossed
		for range 4 * (len(in) + 64) {
			n, err := c.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				break
			}
		}
		// Only a malformed header block grows (by one 14-byte frame) and
		// only a SETTINGS frame shrinks.
		if len(out) > len(in)+14*(len(in)/9+1) {
			t.Fatalf("%d bytes in, %d out", len(in), len(out))
		}
		if !bytes.Contains(in, []byte{0x01}) && !bytes.Contains(in, []byte{0x04}) && !bytes.Contains(in, []byte{0x09}) && !bytes.Equal(in, out) {
			t.Fatalf("no frame to correct, yet the bytes changed:\n in %q\nout %q", in, out)
		}
	})
}

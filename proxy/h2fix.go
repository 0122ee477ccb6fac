package proxy

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"slices"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2fixConn sits between a client's HTTP/2 connection and x/net/http2's
// server and corrects two of x/net's answers that RFC 9113 does not allow:
//
//   - A request carrying a connection-specific header field (Connection,
//     Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade) or a TE
//     other than "trailers" is malformed and MUST be reset with
//     PROTOCOL_ERROR (§8.2.2); x/net answers it 400 instead, a response
//     the client may take for the server's. The header block is decoded
//     here too (a second HPACK decoder fed the same bytes keeps the same
//     dynamic table), and a malformed one gets one more field appended in
//     a CONTINUATION frame of its own: a pseudo-header after the regular
//     ones, which x/net resets with PROTOCOL_ERROR as the RFC wants. The
//     block's own bytes reach x/net unchanged, so its dynamic table stays
//     in step with the client's.
//   - A SETTINGS frame naming one setting twice is legal (the values apply
//     in order, §6.5.3); x/net closes the connection. Such a frame is
//     passed on with only the last value of each setting, which has the
//     same effect as applying them in order.
//
// Only HEADERS, CONTINUATION and SETTINGS frames are held until whole
// (at most one frame, MaxReadFrameSize); every other frame's payload
// streams through. Bytes that do not parse as frames are passed on
// untouched from then on: x/net rejects them itself.
type h2fixConn struct {
	net.Conn
	br *bufio.Reader
	// out holds bytes ready for x/net; pass counts payload bytes of the
	// current frame that go through as they are.
	out  []byte
	pass int
	// preface bytes still to pass before the first frame header.
	preface int
	raw     bool // stopped parsing: everything passes as it is
	dec     *hpack.Decoder
	inBlock bool // a header block is open (HEADERS without END_HEADERS)
	bad     bool // the open header block is malformed (see above)
	te      int  // TE fields seen in the open block
	hold    []byte
	// w coalesces the server's writes (h2coalesce).
	w *h2coalesce
}

// Write hands the server's bytes to the coalescing writer.
func (c *h2fixConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// Close sends what is pending and closes the connection.
func (c *h2fixConn) Close() error { return c.w.Close() }

// h2fixTLSConn is h2fixConn on a TLS connection: x/net's server reads the
// TLS state through ConnectionState.
type h2fixTLSConn struct {
	*h2fixConn
	tc *tls.Conn
}

func (c h2fixTLSConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// h2MaxFrame is the largest frame payload the h2 server accepts
// (http2.Server.MaxReadFrameSize in newH2Side).
const h2MaxFrame = 16 << 10

// wrapH2Fix puts the corrections in front of a client connection that
// starts with (or, sawPreface, has already sent) the client preface.
func wrapH2Fix(c net.Conn, sawPreface bool) net.Conn {
	f := &h2fixConn{Conn: c, br: bufio.NewReaderSize(c, 4<<10), w: newH2Coalesce(c)}
	if !sawPreface {
		f.preface = len(h2Preface)
	}
	// The same table size x/net's own decoder has (its default; the
	// server never advertises another).
	f.dec = hpack.NewDecoder(4096, f.field)
	if tc, ok := c.(*tls.Conn); ok {
		return h2fixTLSConn{h2fixConn: f, tc: tc}
	}
	return f
}

// Unwrap gives the connection underneath.
func (c *h2fixConn) Unwrap() net.Conn { return c.Conn }

func (c *h2fixConn) Read(p []byte) (int, error) {
	for {
		switch {
		case len(c.out) > 0:
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		case c.raw:
			return c.br.Read(p)
		case c.preface > 0:
			n, err := c.br.Read(p[:min(len(p), c.preface)])
			c.preface -= n
			return n, err
		case c.pass > 0:
			n, err := c.br.Read(p[:min(len(p), c.pass)])
			c.pass -= n
			return n, err
		}
		if err := c.next(); err != nil {
			return 0, err
		}
	}
}

// next reads the next frame header and either queues the whole frame
// (corrected where needed) in out or lets its payload pass.
func (c *h2fixConn) next() error {
	if cap(c.hold) > 8<<10 {
		c.hold = nil // a big header block's buffer is not kept while idle
	}
	c.hold = c.hold[:0]
	var hdr [9]byte
	if n, err := io.ReadFull(c.br, hdr[:]); err != nil {
		if n == 0 {
			return err
		}
		// A partial header still reaches x/net, which reports it.
		c.out = append(c.hold, hdr[:n]...)
		c.raw = true
		return nil
	}
	length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
	typ, flags := http2.FrameType(hdr[3]), http2.Flags(hdr[4])
	stream := binary.BigEndian.Uint32(hdr[5:]) & (1<<31 - 1)
	held := typ == http2.FrameHeaders || typ == http2.FrameContinuation ||
		(typ == http2.FrameSettings && flags&http2.FlagSettingsAck == 0)
	if !held || length > h2MaxFrame {
		if length > h2MaxFrame {
			c.raw = true // x/net ends the connection on it
		}
		c.out = append(c.hold, hdr[:]...)
		c.pass = length
		return nil
	}
	c.hold = append(c.hold, hdr[:]...)
	c.hold = slices.Grow(c.hold, length)[:9+length]
	if n, err := io.ReadFull(c.br, c.hold[9:]); err != nil {
		c.out = c.hold[:9+n]
		c.raw = true
		return nil // x/net gets what arrived, then the error
	}
	c.out = c.hold
	switch typ {
	case http2.FrameSettings:
		c.dedupSettings()
	case http2.FrameHeaders:
		c.headers(flags, stream)
	case http2.FrameContinuation:
		if !c.inBlock {
			c.raw = true // out of order: x/net ends the connection
			return nil
		}
		c.fragment(c.hold[9:], flags, stream)
	}
	return nil
}

// headers feeds a HEADERS frame's fragment (without padding and priority)
// to the decoder.
func (c *h2fixConn) headers(flags http2.Flags, stream uint32) {
	p := c.hold[9:]
	pad := 0
	if flags&http2.FlagHeadersPadded != 0 {
		if len(p) < 1 {
			c.raw = true
			return
		}
		pad, p = int(p[0]), p[1:]
	}
	if flags&http2.FlagHeadersPriority != 0 {
		if len(p) < 5 {
			c.raw = true
			return
		}
		p = p[5:]
	}
	if pad > len(p) {
		c.raw = true
		return
	}
	c.inBlock, c.bad, c.te = true, false, 0
	c.fragment(p[:len(p)-pad], flags, stream)
}

// fragment decodes one piece of a header block; at its end, a malformed
// block gets the field x/net resets.
func (c *h2fixConn) fragment(p []byte, flags http2.Flags, stream uint32) {
	if _, err := c.dec.Write(p); err != nil {
		c.raw = true // x/net's decoder fails on the same bytes
		return
	}
	if flags&http2.FlagHeadersEndHeaders == 0 {
		return
	}
	c.inBlock = false
	if err := c.dec.Close(); err != nil {
		c.raw = true
		return
	}
	if !c.bad {
		return
	}
	c.hold[4] &^= byte(http2.FlagHeadersEndHeaders)
	// A literal field without indexing (so no table changes), name ":x",
	// empty value: a pseudo-header no request may carry.
	suffix := [...]byte{0x00, 0x02, ':', 'x', 0x00}
	var h [9]byte
	h[2] = byte(len(suffix))
	h[3] = byte(http2.FrameContinuation)
	h[4] = byte(http2.FlagContinuationEndHeaders)
	binary.BigEndian.PutUint32(h[5:], stream)
	c.hold = append(append(c.hold, h[:]...), suffix[:]...)
	c.out = c.hold
}

// field checks one decoded request field (RFC 9113 §8.2.2).
func (c *h2fixConn) field(f hpack.HeaderField) {
	switch f.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		c.bad = true
	case "te":
		c.te++
		if c.te > 1 || f.Value != "trailers" {
			c.bad = true
		}
	}
}

// dedupSettings keeps only the last value of a setting named more than
// once in the held SETTINGS frame. A frame with a value x/net refuses is
// left as it is, so the error it gets is still about that value.
func (c *h2fixConn) dedupSettings() {
	p := c.hold[9:]
	if len(p)%6 != 0 {
		return // FRAME_SIZE_ERROR from x/net
	}
	n := len(p) / 6
	dup := false
	for i := 0; i < n && !dup; i++ {
		s := setting(p, i)
		if s.Valid() != nil {
			return
		}
		for j := i + 1; j < n; j++ {
			if setting(p, j).ID == s.ID {
				dup = true
				break
			}
		}
	}
	if !dup {
		return
	}
	kept := make([]byte, 0, len(p))
	for i := 0; i < n; i++ {
		s := setting(p, i)
		later := false
		for j := i + 1; j < n; j++ {
			if setting(p, j).ID == s.ID {
				later = true
				break
			}
		}
		if s.Valid() != nil {
			return
		}
		if !later {
			kept = append(kept, p[6*i:6*i+6]...)
		}
	}
	h := c.hold[:9]
	h[0], h[1], h[2] = byte(len(kept)>>16), byte(len(kept)>>8), byte(len(kept))
	c.hold = append(h, kept...)
	c.out = c.hold
}

func setting(p []byte, i int) http2.Setting {
	b := p[6*i:]
	return http2.Setting{ID: http2.SettingID(binary.BigEndian.Uint16(b)), Val: binary.BigEndian.Uint32(b[2:])}
}

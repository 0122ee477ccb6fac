package proxy

import (
	"bytes"
	"net"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// Header names arrive in any case. The listener's parser normalises them
// (fasthttp's canonical form: "x-forwarded-proto" is "X-Forwarded-Proto"),
// so every lookup, removal and replacement below matches whatever case a
// client, a front proxy (Envoy sends lower case) or a backend used.

var (
	textPlain  = []byte("text/plain; charset=utf-8")
	strHTTP    = []byte("http")
	strHTTPS   = []byte("https")
	strHTTP11  = []byte("HTTP/1.1")
	strHTTP10  = []byte("HTTP/1.0")
	strTrailer = []byte("trailers")
)

const (
	hdrXFF         = "X-Forwarded-For"
	hdrXFProto     = "X-Forwarded-Proto"
	hdrXFHost      = "X-Forwarded-Host"
	hdrConnection  = "Connection"
	hdrTE          = "Te"
	hdrExpect      = "Expect"
	hdrUpgrade     = "Upgrade"
	hdrKeepAlive   = "Keep-Alive"
	hdrProxyConn   = "Proxy-Connection"
	hdrTrailerName = "Trailer"
	hdrRequestID   = "X-Request-ID"
)

// hopHeaders are removed in both directions (RFC 9110 §7.6.1), beside
// those the Connection header names. TE is handled apart (trailers stays).
var hopHeaders = [...]string{hdrConnection, hdrKeepAlive, hdrProxyConn, hdrTrailerName, hdrUpgrade}

// connTokens are the Connection tokens holdfast acts on.
type connTokens struct {
	close   bool // "close" was among the Connection tokens
	upgrade bool // "upgrade" was
}

// forEachToken calls f for each token of a comma-separated list.
func forEachToken(v []byte, f func(tok []byte)) {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) > 0 {
			f(tok)
		}
	}
}

// stripRequestHop removes the request's hop-by-hop headers, and Expect
// (holdfast answered 100 Continue itself), and reports the Connection
// tokens that matter to holdfast. Every Connection header line
// counts (a client may send several).
func stripRequestHop(hdr *fasthttp.RequestHeader) connTokens {
	var ct connTokens
	hasHop := false
	for k := range hdr.All() {
		if isHop(k) || (len(k) == 6 && asciiEqualFoldStr(k, hdrExpect)) {
			hasHop = true
			break
		}
	}
	if !hasHop {
		return ct
	}
	hdr.Del(hdrExpect)
	for _, v := range hdr.PeekAll(hdrConnection) {
		forEachToken(v, func(tok []byte) {
			switch {
			case asciiEqualFoldStr(tok, "close") && len(tok) == 5:
				ct.close = true
			case asciiEqualFoldStr(tok, "upgrade") && len(tok) == 7:
				ct.upgrade = true
			case protected(tok):
				// A Connection header cannot unframe a message or drop its Host.
			default:
				hdr.DelBytes(tok)
			}
		})
	}
	for _, k := range hopHeaders {
		hdr.Del(k)
	}
	if te := hdr.Peek(hdrTE); len(te) > 0 {
		keep := false
		forEachToken(te, func(tok []byte) {
			if len(tok) >= 8 && asciiEqualFoldStr(tok[:8], "trailers") && (len(tok) == 8 || tok[8] == ';' || tok[8] == ' ') {
				keep = true
			}
		})
		if keep {
			hdr.SetBytesV(hdrTE, strTrailer)
		} else {
			hdr.Del(hdrTE)
		}
	}
	return ct
}

// stripResponseHop is stripRequestHop for the response header. It is
// written out twice on purpose: a shared helper over both header types
// (generic, or taking their methods as func values) costs heap allocations
// per request, which TestProxyRequestPathAllocs forbids.
func stripResponseHop(hdr *fasthttp.ResponseHeader) {
	hasHop := false
	for k := range hdr.All() {
		if isHop(k) {
			hasHop = true
			break
		}
	}
	if !hasHop {
		return
	}
	for _, v := range hdr.PeekAll(hdrConnection) {
		forEachToken(v, func(tok []byte) {
			if !(len(tok) == 5 && asciiEqualFoldStr(tok, "close")) && !protected(tok) {
				hdr.DelBytes(tok)
			}
		})
	}
	for _, k := range hopHeaders {
		hdr.Del(k)
	}
	hdr.Del(hdrTE)
}

// protected reports whether a Connection token names a header that frames
// the message or routes it: those stay whatever Connection says.
func protected(tok []byte) bool {
	switch len(tok) {
	case 4:
		return asciiEqualFoldStr(tok, "Host")
	case 14:
		return asciiEqualFoldStr(tok, "Content-Length")
	case 17:
		return asciiEqualFoldStr(tok, "Transfer-Encoding")
	}
	return false
}

// isHop reports whether k is a hop-by-hop header name, in any case.
func isHop(k []byte) bool {
	switch len(k) {
	case 2:
		return asciiEqualFoldStr(k, "TE")
	case 7:
		return asciiEqualFoldStr(k, "Upgrade") || asciiEqualFoldStr(k, "Trailer")
	case 10:
		return asciiEqualFoldStr(k, "Connection") || asciiEqualFoldStr(k, "Keep-Alive")
	case 16:
		return asciiEqualFoldStr(k, "Proxy-Connection")
	}
	return false
}

// asciiEqualFoldStr reports whether a starts with b, ignoring case; b is a
// header name or token (letters, digits and '-', where |0x20 folds right).
func asciiEqualFoldStr(a []byte, b string) bool {
	if len(a) < len(b) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if a[i]|0x20 != b[i]|0x20 {
			return false
		}
	}
	return true
}

// asciiEqualFold compares a with the lower-case b, folding only letters.
func asciiEqualFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		c := a[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != b[i] {
			return false
		}
	}
	return true
}

// setForwarded appends the peer to X-Forwarded-For (every X-Forwarded-For
// line the client sent is joined, in order, so the last entry is always the
// real peer) and sets X-Forwarded-Proto and X-Forwarded-Host to what
// holdfast saw, unless the peer is trusted and sent its own.
func setForwarded(hdr *fasthttp.RequestHeader, peer net.IP, tls, trusted bool, host []byte) {
	var buf [256]byte
	b := buf[:0]
	for _, v := range hdr.PeekAll(hdrXFF) {
		if v = bytes.TrimSpace(v); len(v) > 0 {
			b = append(b, v...)
			b = append(b, ", "...)
		}
	}
	b = appendIP(b, peer)
	hdr.Del(hdrXFF)
	hdr.SetBytesV(hdrXFF, b)
	if !trusted || len(hdr.Peek(hdrXFProto)) == 0 {
		hdr.Del(hdrXFProto)
		if tls {
			hdr.SetBytesV(hdrXFProto, strHTTPS)
		} else {
			hdr.SetBytesV(hdrXFProto, strHTTP)
		}
	}
	if !trusted || len(hdr.Peek(hdrXFHost)) == 0 {
		hdr.Del(hdrXFHost)
		if len(host) > 0 {
			hdr.SetBytesV(hdrXFHost, host)
		}
	}
}

func appendIP(b []byte, ip net.IP) []byte {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return append(b, "unknown"...)
	}
	return a.Unmap().AppendTo(b)
}

// ipAddr converts a client IP for trust checks.
func ipAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

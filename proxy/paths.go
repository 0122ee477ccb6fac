package proxy

// Request targets are normalised once, before routing, and forwarded in
// the normalised form, so a route and the backend behind it never disagree
// about which path a request names (/public/../admin/ is /admin/ for both).

// pathVerdict says what normalisation found.
type pathVerdict uint8

const (
	pathOK         pathVerdict = iota
	pathBad                    // malformed percent-encoding or not a path: 400
	pathEncodedSep             // %2F or %5C (or a raw \) with encoded_slash: reject: 400
)

// normalizePath returns the normalised form of the path p (no query), in
// dst's storage when it had to change, else p itself. It decodes percent-
// encoded unreserved characters (RFC 3986 §2.3), upper-cases the hex of
// the escapes it keeps, merges repeated slashes, and removes dot segments
// (§5.2.4), including ones that were percent-encoded. keepSlash keeps %2F
// and %5C as they are; otherwise they, and a raw backslash, are refused.
func normalizePath(dst, p []byte, keepSlash bool) ([]byte, pathVerdict) {
	if len(p) == 0 || p[0] != '/' {
		return p, pathBad
	}
	if clean(p) {
		return p, pathOK
	}
	// First pass: percent-decoding of unreserved characters.
	out := dst[:0]
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return p, pathBad
			}
			v := unhex(p[i+1])<<4 | unhex(p[i+2])
			switch {
			case isUnreserved(v):
				out = append(out, v)
			case v == '/' || v == '\\':
				if !keepSlash {
					return p, pathEncodedSep
				}
				out = append(out, '%', upperHex(p[i+1]), upperHex(p[i+2]))
			case v == 0:
				return p, pathBad
			default:
				out = append(out, '%', upperHex(p[i+1]), upperHex(p[i+2]))
			}
			i += 2
		case c == '\\':
			if !keepSlash {
				return p, pathEncodedSep
			}
			out = append(out, c)
		default:
			out = append(out, c)
		}
	}
	return removeDots(out), pathOK
}

// clean reports whether p needs no work: no escapes, no backslash, no
// empty or dot segments. The common case costs one pass and no copy.
func clean(p []byte) bool {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%', '\\':
			return false
		case '/':
			if i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '.') {
				return false
			}
		}
	}
	return true
}

// removeDots removes "." and ".." segments and merges empty ones in place.
func removeDots(p []byte) []byte {
	out := p[:0]
	i := 0
	for i < len(p) {
		// p[i] is '/': the segment runs to the next '/'.
		j := i + 1
		for j < len(p) && p[j] != '/' {
			j++
		}
		seg := p[i+1 : j]
		last := j == len(p)
		switch {
		case len(seg) == 0 && !last:
			// "//": merged.
		case len(seg) == 1 && seg[0] == '.':
			if last {
				out = append(out, '/')
			}
		case len(seg) == 2 && seg[0] == '.' && seg[1] == '.':
			k := len(out) - 1
			for k >= 0 && out[k] != '/' {
				k--
			}
			if k < 0 {
				k = 0
			}
			out = out[:k]
			if last {
				out = append(out, '/')
			}
		default:
			// out never overtakes p: it only shrinks what it copies.
			out = append(out, '/')
			out = append(out, seg...)
		}
		i = j
	}
	if len(out) == 0 {
		out = append(out, '/')
	}
	return out
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

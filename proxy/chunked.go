package proxy

import (
	"bufio"
	"bytes"
	"errors"

	"github.com/valyala/fasthttp"
)

// A chunked upstream body is decoded here, strictly (RFC 9112 §7.1), to its
// very end — last chunk, trailer section and final CRLF — so the
// connection can go back to the pool, and the trailers reach the client.

var (
	errChunkSize = errors.New("malformed chunk size")
	errChunkCRLF = errors.New("chunk not followed by CRLF")
	errTrailers  = errors.New("malformed or oversized trailer section")
)

const (
	maxChunkLine    = 4096
	maxTrailerBytes = 16 << 10
	maxTrailers     = 64
)

// readLine reads one line ending in CRLF (a bare LF is refused) of at most
// maxChunkLine bytes, without the CRLF. The slice is valid until the next
// read of br.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(line) > maxChunkLine {
		return nil, errChunkSize
	}
	if err != nil {
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, errChunkSize
	}
	return line[:len(line)-2], nil
}

// readChunkSize reads a chunk-size line: hex digits, then optional
// extensions (ignored) after ';'.
func readChunkSize(br *bufio.Reader) (int64, error) {
	line, err := readLine(br)
	if err != nil {
		return 0, err
	}
	var n int64
	digits := 0
	for _, c := range line {
		if !isHex(c) {
			break
		}
		if n > 1<<56 {
			return 0, errChunkSize
		}
		n = n<<4 | int64(unhex(c))
		digits++
	}
	if digits == 0 {
		return 0, errChunkSize
	}
	rest := bytes.TrimLeft(line[digits:], " \t")
	if len(rest) > 0 && rest[0] != ';' {
		return 0, errChunkSize
	}
	return n, nil
}

func readCRLF(br *bufio.Reader) error {
	var b [2]byte
	if _, err := br.Read(b[:1]); err != nil {
		return err
	}
	if _, err := br.Read(b[1:]); err != nil {
		return err
	}
	if b[0] != '\r' || b[1] != '\n' {
		return errChunkCRLF
	}
	return nil
}

// readTrailers reads the trailer section after the last chunk into hdr as
// trailers (names a trailer may not carry, such as Content-Length, are
// dropped), up to the blank line that ends the body.
func readTrailers(br *bufio.Reader, hdr *fasthttp.ResponseHeader) error {
	total := 0
	for i := 0; ; i++ {
		line, err := readLine(br)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return nil
		}
		total += len(line)
		if i >= maxTrailers || total > maxTrailerBytes || line[0] == ' ' || line[0] == '\t' {
			return errTrailers
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return errTrailers
		}
		name, value := line[:colon], bytes.Trim(line[colon+1:], " \t")
		for _, c := range name {
			if !isTokenChar(c) {
				return errTrailers
			}
		}
		if isHop(name) || hdr.AddTrailerBytes(name) != nil {
			continue
		}
		hdr.AddBytesKV(name, value)
	}
}

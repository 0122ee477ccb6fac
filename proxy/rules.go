package proxy

import (
	"sort"
	"strings"

	"github.com/valyala/fasthttp"
)

// HeaderRules edit a message's headers: Remove first, then Set (every
// value of the name replaced by one), then Add (one more value). Names are
// case-insensitive. Values may use {client_ip}, {request_id}, {host} and
// {scheme}.
type HeaderRules struct {
	Set    map[string]string
	Add    map[string]string
	Remove []string
}

// headerOps are HeaderRules compiled for the request path: names and
// literal values are kept as bytes, placeholders parsed once. Immutable;
// safe for concurrent use. A nil *headerOps does nothing.
type headerOps struct {
	remove []string
	set    []headerOp
	add    []headerOp
}

type headerOp struct {
	name  string
	value []byte      // the whole value when it has no placeholder
	parts []valuePart // nil: value is literal
}

type placeholder uint8

const (
	phNone placeholder = iota
	phClientIP
	phRequestID
	phHost
	phScheme
)

var placeholderNames = map[string]placeholder{
	"{client_ip}": phClientIP, "{request_id}": phRequestID, "{host}": phHost, "{scheme}": phScheme,
}

// valuePart is a literal, or a placeholder when ph is set.
type valuePart struct {
	lit []byte
	ph  placeholder
}

// compileHeaderRules turns rules into ops; nil when they change nothing.
// Unknown placeholders stay literal (config validation refuses them).
func compileHeaderRules(r HeaderRules) *headerOps {
	if len(r.Set) == 0 && len(r.Add) == 0 && len(r.Remove) == 0 {
		return nil
	}
	o := &headerOps{remove: append([]string(nil), r.Remove...)}
	o.set = compileOps(r.Set)
	o.add = compileOps(r.Add)
	return o
}

func compileOps(m map[string]string) []headerOp {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make([]headerOp, 0, len(m))
	for _, k := range names {
		out = append(out, compileOp(k, m[k]))
	}
	return out
}

func compileOp(name, v string) headerOp {
	op := headerOp{name: name, value: []byte(v)}
	rest := v
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			break
		}
		ph, ok := placeholderNames[rest[i:i+j+1]]
		if !ok {
			op.parts = append(op.parts, valuePart{lit: []byte(rest[:i+1])})
			rest = rest[i+1:]
			continue
		}
		if i > 0 {
			op.parts = append(op.parts, valuePart{lit: []byte(rest[:i])})
		}
		op.parts = append(op.parts, valuePart{ph: ph})
		rest = rest[i+j+1:]
	}
	if op.parts == nil {
		return op // literal
	}
	if rest != "" {
		op.parts = append(op.parts, valuePart{lit: []byte(rest)})
	}
	return op
}

// expand appends op's value for ctx's request, whose ID is id, to b.
// valueFor is op's value for this request: the literal as it is, or the
// placeholders expanded into b.
func (op *headerOp) valueFor(b []byte, ctx *fasthttp.RequestCtx, id []byte) []byte {
	if op.parts == nil {
		return op.value
	}
	return op.expand(b, ctx, id)
}

func (op *headerOp) expand(b []byte, ctx *fasthttp.RequestCtx, id []byte) []byte {
	if op.parts == nil {
		return append(b, op.value...)
	}
	for _, p := range op.parts {
		switch p.ph {
		case phNone:
			b = append(b, p.lit...)
		case phClientIP:
			b = appendIP(b, ctx.RemoteIP())
		case phRequestID:
			b = append(b, id...)
		case phHost:
			b = append(b, ctx.Request.Header.Host()...)
		case phScheme:
			if ctx.IsTLS() {
				b = append(b, strHTTPS...)
			} else {
				b = append(b, strHTTP...)
			}
		}
	}
	return b
}

// applyRequest edits the request header. It is written out twice, with
// applyResponse, for the reason stripResponseHop gives.
func (o *headerOps) applyRequest(ctx *fasthttp.RequestCtx, id []byte) {
	if o == nil {
		return
	}
	hdr := &ctx.Request.Header
	for _, k := range o.remove {
		hdr.Del(k)
	}
	var vbuf [256]byte
	for i := range o.set {
		op := &o.set[i]
		hdr.Del(op.name)
		hdr.SetBytesV(op.name, op.valueFor(vbuf[:0], ctx, id))
	}
	for i := range o.add {
		op := &o.add[i]
		hdr.AddBytesV(op.name, op.valueFor(vbuf[:0], ctx, id))
	}
}

// applyResponse edits the response header.
func (o *headerOps) applyResponse(ctx *fasthttp.RequestCtx, id []byte) {
	if o == nil {
		return
	}
	hdr := &ctx.Response.Header
	for _, k := range o.remove {
		hdr.Del(k)
	}
	var vbuf [256]byte
	for i := range o.set {
		op := &o.set[i]
		hdr.Del(op.name)
		hdr.SetBytesV(op.name, op.valueFor(vbuf[:0], ctx, id))
	}
	for i := range o.add {
		op := &o.add[i]
		hdr.AddBytesV(op.name, op.valueFor(vbuf[:0], ctx, id))
	}
}

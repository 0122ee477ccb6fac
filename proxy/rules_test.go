package proxy

import (
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestHeaderOpExpand(t *testing.T) {
	var ctx fasthttp.RequestCtx
	var req fasthttp.Request
	ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 1}, nil)
	ctx.Request.Header.SetHost("api.example.com")
	cases := []struct{ name, value, want string }{
		{"literal", "max-age=31536000", "max-age=31536000"},
		{"client ip", "{client_ip}", "2001:db8::7"},
		{"mixed", "id={request_id}; at {scheme}://{host}/", "id=abc123; at http://api.example.com/"},
		{"unknown stays literal", "{user}-{host}", "{user}-api.example.com"},
		{"unclosed stays literal", "a{host", "a{host"},
		{"adjacent", "{scheme}{scheme}", "httphttp"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			op := compileOp("X", c.value)
			if got := string(op.expand(nil, &ctx, []byte("abc123"))); got != c.want {
				t.Errorf("expand(%q) = %q, want %q", c.value, got, c.want)
			}
		})
	}
	if compileHeaderRules(HeaderRules{Set: map[string]string{}}) != nil {
		t.Error("empty rules compiled to ops")
	}
}

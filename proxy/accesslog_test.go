package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"regexp"
	"testing"

	"github.com/valyala/fasthttp"
)

// Every SPEC.md access-log key is present in the JSON line, with the
// values of the request.
func TestAccessLogJSONFields(t *testing.T) {
	r := newRig(t, rigOptions{policy: Policy{RequestID: true}})
	var buf bytes.Buffer
	q := testQueue(t, r, &buf)
	r.h.SetAccessLog(true)
	ctx := newCtx()
	r.get(t, ctx, nil)
	q.Flush()
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%q: %v", buf.String(), err)
	}
	want := map[string]any{
		"listener": "web", "route": "*.example.com/v1/", "pool": "api", "method": "GET",
		"host": "api.example.com", "path": "/v1/users?id=7", "proto": "HTTP/1.1", "status": float64(200),
		"client": "192.0.2.10", "tls": "", "user_agent": "bench/1.0", "attempts": float64(1),
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %v, want %v", k, line[k], v)
		}
	}
	for _, k := range []string{"time", "backend", "bytes_in", "bytes_out", "duration_ms", "upstream_ms", "retry_reasons", "request_id", "flags"} {
		if _, ok := line[k]; !ok {
			t.Errorf("key %s missing", k)
		}
	}
	if b, _ := line["backend"].(string); !regexp.MustCompile(`^127\.0\.0\.1:\d+$`).MatchString(b) {
		t.Errorf("backend %q", b)
	}
}

func TestAccessLogCombined(t *testing.T) {
	r := newRig(t, rigOptions{})
	var buf bytes.Buffer
	q := testQueue(t, r, &buf)
	r.h.SetAccessLog(true)
	r.h.SetAccessLogCombined(true)
	ctx := newCtx()
	r.get(t, ctx, func(req *fasthttp.Request) {
		req.Header.Set("Referer", "https://ref.example/")
		req.Header.Set("User-Agent", `evil "ua"`)
	})
	q.Flush()
	re := regexp.MustCompile(`^192\.0\.2\.10 - - \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "GET /v1/users\?id=7 HTTP/1\.1" 200 26 "https://ref\.example/" "evil \\x22ua\\x22"\n$`)
	if !re.MatchString(buf.String()) {
		t.Errorf("combined line %q does not match %s", buf.String(), re)
	}
}

// testQueue makes r's listener log to w through a queue of its own.
func testQueue(t *testing.T, r *rig, w io.Writer) *LogQueue {
	q := NewLogQueue(w, 0, nil)
	t.Cleanup(q.Close)
	r.h.opts.AccessLogQueue = q
	return q
}

package proxy

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestRequestIDsUniqueAndShaped(t *testing.T) {
	g, err := NewRequestIDs(strings.NewReader("\x01\x02\x03\x04\x05\x06\x07\x08"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(g.Append(nil)); got != "01020304050607080000000000000001" {
		t.Errorf("first id %q", got)
	}
	const workers, each = 8, 2000
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]string, 0, each)
			for range each {
				local = append(local, string(g.Append(nil)))
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range local {
				if seen[id] {
					t.Errorf("duplicate id %s", id)
				}
				seen[id] = true
			}
		}()
	}
	wg.Wait()
	if len(seen) != workers*each {
		t.Errorf("%d ids, want %d", len(seen), workers*each)
	}
	if _, err := NewRequestIDs(strings.NewReader("")); err == nil {
		t.Error("an empty random source gave a prefix")
	}
}

func TestValidRequestID(t *testing.T) {
	for _, c := range []struct {
		v    string
		want bool
	}{
		{"abc-123", true}, {"", false}, {"has space", false}, {strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false}, {"tab\there", false}, {"é", false},
	} {
		if got := validRequestID([]byte(c.v)); got != c.want {
			t.Errorf("validRequestID(%q) = %v, want %v", c.v, got, c.want)
		}
	}
}

// The access log carries the request's ID, which is also what the backend
// and the {request_id} placeholder saw; an untrusted client's own ID is
// replaced.
func TestRequestIDInAccessLog(t *testing.T) {
	r := newRig(t, rigOptions{policy: Policy{RequestID: true,
		ResponseHeaders: HeaderRules{Set: map[string]string{"X-Request-ID": "{request_id}"}}}})
	var buf bytes.Buffer
	q := testQueue(t, r, &buf)
	r.h.SetAccessLog(true)
	ctx := newCtx()
	r.get(t, ctx, func(req *fasthttp.Request) { req.Header.Set("x-request-id", "client-chosen") })
	q.Flush()
	if ctx.Response.StatusCode() != 200 {
		t.Fatalf("status %d", ctx.Response.StatusCode())
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("access log %q: %v", buf.String(), err)
	}
	id, _ := line["request_id"].(string)
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
		t.Errorf("request_id %q: want a generated 32-hex id (the untrusted client's was replaced)", id)
	}
	if got := string(ctx.Response.Header.Peek("X-Request-ID")); got != id {
		t.Errorf("response X-Request-ID %q, log %q", got, id)
	}
	if got := string(ctx.Request.Header.Peek("X-Request-ID")); got != id {
		t.Errorf("request sent upstream with X-Request-ID %q, log %q", got, id)
	}
}

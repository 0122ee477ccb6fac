package proxy

import "testing"

func TestNormalizePath(t *testing.T) {
	cases := []struct {
		name, in, want string
		keep           bool
		verdict        pathVerdict
	}{
		{name: "clean", in: "/v1/users", want: "/v1/users"},
		{name: "root", in: "/", want: "/"},
		{name: "dot segment", in: "/a/./b", want: "/a/b"},
		{name: "dot-dot", in: "/a/../b", want: "/b"},
		{name: "dot-dot above root", in: "/../../etc/passwd", want: "/etc/passwd"},
		{name: "trailing dot-dot", in: "/a/b/..", want: "/a/"},
		{name: "trailing dot", in: "/a/.", want: "/a/"},
		{name: "bypass a route", in: "/public/../admin/", want: "/admin/"},
		{name: "encoded dot-dot", in: "/public/%2e%2E/admin/x", want: "/admin/x"},
		{name: "encoded unreserved", in: "/%7euser/%61dmin", want: "/~user/admin"},
		{name: "other escapes kept, upper-cased", in: "/a%20b%3f", want: "/a%20b%3F"},
		{name: "merged slashes", in: "//admin//x", want: "/admin/x"},
		{name: "dots inside names stay", in: "/a..b/.c/..d", want: "/a..b/.c/..d"},
		{name: "encoded slash refused", in: "/x%2Fy", verdict: pathEncodedSep},
		{name: "encoded backslash refused", in: "/x%5cy", verdict: pathEncodedSep},
		{name: "raw backslash refused", in: "/x\\..\\admin", verdict: pathEncodedSep},
		{name: "encoded slash kept", in: "/x%2fy", keep: true, want: "/x%2Fy"},
		{name: "encoded slash is no separator", in: "/x%2F..%2Fadmin", keep: true, want: "/x%2F..%2Fadmin"},
		{name: "truncated escape", in: "/a%4", verdict: pathBad},
		{name: "bad hex", in: "/a%zz", verdict: pathBad},
		{name: "NUL", in: "/a%00", verdict: pathBad},
		{name: "not a path", in: "a/b", verdict: pathBad},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, v := normalizePath(nil, []byte(c.in), c.keep)
			if v != c.verdict {
				t.Fatalf("verdict %d, want %d (path %q)", v, c.verdict, got)
			}
			if v == pathOK && string(got) != c.want {
				t.Errorf("normalizePath(%q) = %q, want %q", c.in, got, c.want)
			}
		})
	}
}

func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/%2e%2e/x", "//a//b/", "/x%2Fy", "/a/./b/.."} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, in string, keep bool) {
		got, v := normalizePath(nil, []byte(in), keep)
		if v != pathOK {
			return
		}
		// Normalising is idempotent, and the result has no dot or empty
		// segment and starts with a slash.
		again, v2 := normalizePath(nil, got, keep)
		if v2 != pathOK || string(again) != string(got) {
			t.Fatalf("not idempotent: %q -> %q -> %q (%d)", in, got, again, v2)
		}
		if len(got) == 0 || got[0] != '/' {
			t.Fatalf("%q -> %q: not absolute", in, got)
		}
	})
}

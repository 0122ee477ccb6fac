package state

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: no input makes Parse panic, and whatever it accepts writes,
// reads back and encodes the same.
func FuzzParse(f *testing.F) {
	good, _ := json.Marshal(sample())
	f.Add(good)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"pools":{"api":{"set":[{"address":"[::1]:80","weight":1}]}}}`))
	f.Add([]byte(`{"version":1,"pools":{"api":{"health":{"10.0.0.1:80":{"checks_passing":false,"held_until":"2026-12-02T16:00:00Z","hold_for":"30s"}}}}}`))
	f.Add([]byte(`{"version":1,"overrides":{"api":{"10.0.0.1:80":{"drain":true,"weight":3}}}}`))
	f.Add([]byte(``))
	f.Add([]byte(`null`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Parse(b)
		if err != nil {
			return
		}
		path := filepath.Join(dir, "state.json")
		if err := Write(path, got); err != nil {
			t.Fatal(err)
		}
		back, err := Read(path)
		if err != nil {
			raw, _ := os.ReadFile(path)
			t.Fatalf("accepted %q, wrote %q, read back: %v", b, raw, err)
		}
		// Empty and nil maps both write as nothing, so compare encodings.
		a, _ := json.Marshal(got)
		z, _ := json.Marshal(back)
		if string(a) != string(z) {
			t.Fatalf("round trip changed %s into %s", a, z)
		}
	})
}

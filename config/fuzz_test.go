package config_test

import (
	"os"
	"strings"
	"testing"

	"github.com/holdfast-lb/holdfast/config"
)

// FuzzParse: no input makes Parse panic, and its answer is always either a
// config or a non-empty list of located errors. Seeds live in
// testdata/fuzz/FuzzParse; run `go test -fuzz FuzzParse ./config` to explore.
func FuzzParse(f *testing.F) {
	f.Add([]byte(specExample))
	f.Add([]byte(badDoc))
	if b, err := os.ReadFile("../cmd/holdfast/demo.yaml"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse(data)
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config without an error")
			}
			if len(cfg.Listeners) == 0 {
				t.Fatal("a config without listeners was accepted")
			}
			return
		}
		if cfg != nil {
			t.Fatal("a config returned with an error")
		}
		fes := config.Errors(err)
		if len(fes) == 0 {
			t.Fatalf("error carries no FieldError: %v", err)
		}
		for _, fe := range fes {
			if fe.Path == "" || fe.Message == "" || strings.Contains(fe.Message, "\n") {
				t.Fatalf("malformed error %#v", fe)
			}
		}
	})
}

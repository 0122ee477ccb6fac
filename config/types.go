package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a Go duration written as a string ("250ms", "2s").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr("want a duration such as 2s")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return typeErr("bad duration %q (want e.g. 250ms, 2s)", n.Value)
	}
	if v < 0 {
		return typeErr("duration %q must not be negative", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration back as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Percent is a share written as "50%"; the value is a fraction in [0, 1].
type Percent float64

// UnmarshalYAML parses "N%" with N in [0, 100].
func (p *Percent) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || !strings.HasSuffix(n.Value, "%") {
		return typeErr("bad percentage %q (want e.g. \"50%%\")", n.Value)
	}
	v, err := strconv.ParseFloat(strings.TrimSuffix(n.Value, "%"), 64)
	if err != nil || v < 0 || v > 100 {
		return typeErr("bad percentage %q (want 0%%..100%%)", n.Value)
	}
	*p = Percent(v / 100)
	return nil
}

// MarshalYAML writes the share back as "N%".
func (p Percent) MarshalYAML() (any, error) {
	return strconv.FormatFloat(float64(p)*100, 'f', -1, 64) + "%", nil
}

// Size is a byte count written "64KiB", "1MiB", "2GiB" or a plain number.
type Size int64

// UnmarshalYAML parses a byte size.
func (z *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr("want a size such as 64KiB or 1048576")
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return typeErr("%v", err)
	}
	*z = Size(v)
	return nil
}

// MarshalYAML writes the size as a plain number of bytes.
func (z Size) MarshalYAML() (any, error) { return int64(z), nil }

// ParseSize parses "64KiB", "1MiB", "1GiB", "10KB" (decimal) or a plain
// number of bytes.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.m
			break
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q (want e.g. 64KiB, 1MiB or a number of bytes)", s)
	}
	return v * mult, nil
}

// BackendSpec is a static pool member: either "host:port" or
// {address: host:port, weight: N}.
type BackendSpec struct {
	Address string `yaml:"address"`
	Weight  int    `yaml:"weight"`
	line    int
}

// UnmarshalYAML accepts the scalar or the mapping form.
func (b *BackendSpec) UnmarshalYAML(n *yaml.Node) error {
	b.line = n.Line
	switch n.Kind {
	case yaml.ScalarNode:
		b.Address, b.Weight = n.Value, 1
		return nil
	case yaml.MappingNode:
		type plain BackendSpec
		// An absent weight is 1; an explicit one (even 0) is validated as given.
		p := plain{Weight: 1}
		for i := 0; i+1 < len(n.Content); i += 2 {
			switch k := n.Content[i].Value; k {
			case "address", "weight":
			default:
				return typeErr("unknown key %q (want address, weight)", k)
			}
		}
		if err := n.Decode(&p); err != nil {
			return typeErr("want {address: host:port, weight: N}")
		}
		b.Address, b.Weight = p.Address, p.Weight
		return nil
	}
	return typeErr("want \"host:port\" or {address, weight}")
}

// typeErr is returned by the unmarshalers so the YAML decoder collects it and
// carries on, instead of stopping at the first bad value.
func typeErr(format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf(format, args...)}}
}

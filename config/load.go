package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/go-multierror"
	"go.yaml.in/yaml/v3"
)

// FieldError is one problem in a config file, located by YAML path and line.
type FieldError struct {
	Path    string
	Message string
	Line    int
}

func (e *FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s: %s (line %d)", e.Path, e.Message, e.Line)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Message)
}

// Errors returns every FieldError inside err (a *multierror.Error from Parse
// or Load), in file order.
func Errors(err error) []*FieldError {
	var out []*FieldError
	var me *multierror.Error
	if errors.As(err, &me) {
		for _, e := range me.Errors {
			var fe *FieldError
			if errors.As(e, &fe) {
				out = append(out, fe)
			}
		}
	}
	return out
}

// Load reads, decodes, defaults and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data)
}

// Parse decodes, defaults and validates a config document. On failure the
// error is a *multierror.Error holding one *FieldError per problem.
func Parse(data []byte) (*Config, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if err.Error() == "EOF" {
			return nil, multierror.Append(nil, &FieldError{Path: "(document)", Message: "empty config"})
		}
		return nil, multierror.Append(nil, syntaxError(err))
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	w := &walker{lines: map[string]int{}}
	w.walk(root, reflect.TypeOf(Config{}), "")
	// Decode even after schema errors (bad scalars decode as zero values), so
	// validation below can report the remaining problems in the same run.
	var cfg Config
	if err := root.Decode(&cfg); err != nil && w.errs == nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, multierror.Append(nil, syntaxError(err))
		}
	}
	w.bad = map[string]bool{}
	if w.errs != nil {
		for _, e := range w.errs.Errors {
			w.bad[e.(*FieldError).Path] = true
		}
	}
	applyDefaults(&cfg, w)
	validate(&cfg, w)
	if w.errs != nil {
		return nil, w.sorted()
	}
	for i := range cfg.Listeners {
		cfg.Listeners[i].TLS = slices.DeleteFunc(cfg.Listeners[i].TLS, func(t TLSCert) bool {
			return t.CertFile == "" && t.KeyFile == ""
		})
	}
	return &cfg, nil
}

var lineRE = regexp.MustCompile(`line (\d+): `)

func syntaxError(err error) *FieldError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = lineRE.ReplaceAllString(msg, "")
	}
	msg = strings.TrimSpace(strings.TrimPrefix(msg, "unmarshal errors:"))
	return &FieldError{Path: "(document)", Message: msg, Line: line}
}

// walker checks a YAML tree against the schema before decoding, so unknown
// keys and bad scalars are all reported with their paths, and records where
// each path is so validation errors can name a line.
type walker struct {
	lines map[string]int
	errs  *multierror.Error
	bad   map[string]bool // paths already reported by the schema walk
}

func (w *walker) add(path string, line int, format string, args ...any) {
	if path == "" {
		path = "(document)" // the root itself, e.g. a scalar instead of a mapping
	}
	w.errs = multierror.Append(w.errs, &FieldError{Path: path, Message: fmt.Sprintf(format, args...), Line: line})
}

// errorf reports a validation problem at path, using the line of the nearest
// present ancestor.
func (w *walker) errorf(path, format string, args ...any) {
	for p := path; p != ""; {
		if w.bad[p] {
			return
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	w.add(path, w.lineOf(path), format, args...)
}

func (w *walker) has(path string) bool { _, ok := w.lines[path]; return ok }

func (w *walker) lineOf(path string) int {
	for p := path; p != ""; {
		if l, ok := w.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

func (w *walker) sorted() error {
	sort.SliceStable(w.errs.Errors, func(i, j int) bool {
		a, b := w.errs.Errors[i].(*FieldError), w.errs.Errors[j].(*FieldError)
		return a.Line < b.Line
	})
	w.errs.ErrorFormat = func(es []error) string {
		s := make([]string, len(es))
		for i, e := range es {
			s[i] = e.Error()
		}
		return strings.Join(s, "\n")
	}
	return w.errs
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if path != "" {
		if _, ok := w.lines[path]; !ok {
			w.lines[path] = n.Line
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		v := reflect.New(t)
		if err := n.Decode(v.Interface()); err != nil {
			w.add(path, n.Line, "%s", cleanMsg(err))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.add(path, n.Line, "want a mapping")
			return
		}
		fields := map[string]reflect.StructField{}
		var names []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = f
			names = append(names, tag)
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			f, ok := fields[k.Value]
			if !ok {
				w.add(p, k.Line, "unknown key (want one of %s)", strings.Join(names, ", "))
				continue
			}
			if seen[k.Value] {
				w.add(p, k.Line, "key given twice")
				continue
			}
			seen[k.Value] = true
			w.lines[p] = k.Line
			w.walk(v, f.Type, p)
		}
	case reflect.Map:
		// Free-form keys (health.headers): each value is checked.
		if n.Kind != yaml.MappingNode {
			w.add(path, n.Line, "want a mapping")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			w.lines[p] = k.Line
			w.walk(v, t.Elem(), p)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.add(path, n.Line, "want a list")
			return
		}
		for i, c := range n.Content {
			w.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		if n.Kind != yaml.ScalarNode {
			w.add(path, n.Line, "want a %s value", kindName(t.Kind()))
			return
		}
		v := reflect.New(t)
		if err := n.Decode(v.Interface()); err != nil {
			w.add(path, n.Line, "want a %s value, got %q", kindName(t.Kind()), n.Value)
		}
	}
}

func kindName(k reflect.Kind) string {
	switch k {
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "whole number"
	case reflect.Bool:
		return "true/false"
	case reflect.String:
		return "string"
	}
	return k.String()
}

func cleanMsg(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		return lineRE.ReplaceAllString(te.Errors[0], "")
	}
	return lineRE.ReplaceAllString(strings.TrimPrefix(err.Error(), "yaml: "), "")
}

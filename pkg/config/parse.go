package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
)

// ParseOptions tune Parse and Load.
type ParseOptions struct {
	// Strict makes unknown and duplicate keys errors (mosnlite validate --strict). Without
	// it they are warnings, and the config loads as MOSN would load it.
	Strict bool
}

// Load reads the file at path and parses it (see Parse). A read failure is returned wrapped;
// every other error is a Problems value.
func Load(path string, o ParseOptions) (*Config, []Problem, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: read %w", err)
	}
	return Parse(data, o)
}

// Parse decodes a MOSN v2 JSON config. Keys match case-insensitively; the returned
// warnings name unknown and duplicate keys by their JSON path (errors under o.Strict).
// A syntax error (with its line and column), a value of the wrong JSON type, a bad
// duration or use_original_dst is an error naming its path; all of them are returned
// together as a Problems value, and the Config is then nil. Inside filter_chains[].filters
// and listener_filters, the configs of the built-in types (proxy, tcp_proxy, udp_proxy,
// original_dst) are checked the same way. Parse does not apply defaults or validate the
// meaning of values: call ApplyDefaults, then Validate.
func Parse(data []byte, o ParseOptions) (*Config, []Problem, error) {
	var c Config
	warnings, err := decode(data, &c, RootPath, o.Strict, true)
	if err != nil {
		return nil, warnings, err
	}
	return &c, warnings, nil
}

// decode is Parse for any target: parse the tree, walk it against v's type, then decode the
// normalized document with json-iterator. base prefixes every path.
func decode(data []byte, v any, base string, strict, unknown bool) ([]Problem, error) {
	tree, err := parseTree(data)
	if err != nil {
		var se *syntaxError
		if !errors.As(err, &se) {
			return nil, Problems{{base, err.Error()}}
		}
		line, col := lineCol(data, se.off)
		return nil, Problems{{base, fmt.Sprintf("syntax error at line %d, column %d: %s", line, col, se.msg)}}
	}
	w := &walker{data: data, strict: strict, unknown: unknown, out: make([]byte, 0, len(data))}
	w.walk(tree, reflect.TypeOf(v).Elem(), base, nil)
	if len(w.rep.errors) > 0 {
		return w.rep.warnings, w.rep.errors
	}
	if err := decodeNormalized(w.out, v); err != nil {
		// The walk admits only what the decoder accepts; reaching this is a bug, but a
		// config error is still the right way to report it.
		return w.rep.warnings, Problems{{base, "decode: " + err.Error()}}
	}
	return w.rep.warnings, nil
}

package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// walk.go checks a parsed tree against the config structs by reflection, before anything is
// decoded: it finds unknown keys, duplicate keys and values of the wrong JSON type, and names
// each by its JSON path. Keys match the json tags case-insensitively, with encoding/json's
// folding (MOSN's loader is encoding/json, and MOSN's own examples write "Name"). While it
// walks, it writes the document back out with every key in its canonical spelling and unknown
// keys dropped; that normalized document is what json-iterator decodes, so the decoder and
// this walk can never disagree about which key fills which field.

type unmarshaler interface{ UnmarshalJSON([]byte) error }

var (
	unmarshalerType = reflect.TypeFor[unmarshaler]()
	rawMessageType  = reflect.TypeFor[RawMessage]()
	typedConfigType = reflect.TypeFor[TypedConfig]()
	configType      = reflect.TypeFor[Config]()
)

// typedSchemas says which lists of TypedConfig hold built-in types whose config this package
// knows: for those, Parse also checks the inside of "config" (unknown keys, JSON types).
var typedSchemas = map[reflect.Type]map[string]map[string]reflect.Type{
	reflect.TypeFor[FilterChain](): {"filters": networkFilterConfigTypes},
	reflect.TypeFor[Listener]():    {"listener_filters": listenerFilterConfigTypes, "stream_filters": streamFilterConfigTypes},
	// A route's per_filter_config maps a stream filter's type to a config of that filter.
	reflect.TypeFor[Route]():  {"per_filter_config": streamFilterConfigTypes},
	reflect.TypeFor[Config](): {"extends": extendConfigTypes},
}

// A KeyProblem is a key that a section check (RegisterSectionCheck) reports.
type KeyProblem struct {
	Path string // the key's full JSON path
	// Ignored is empty for a key the section's schema does not have; Parse reports it as
	// it reports unknown keys elsewhere (a warning, an error under strict), with Suggest,
	// when not empty, as its "did you mean". For a key the schema has but mosnlite does not
	// read, Ignored says so, and Parse reports it as a warning, strict or not.
	Ignored string
	Suggest string
}

// sectionChecks are the checks RegisterSectionCheck adds, by top-level key.
var sectionChecks = map[string]func(raw []byte, path string) []KeyProblem{}

// RegisterSectionCheck gives Parse a check for the inside of a top-level section that this
// package keeps as raw JSON for another package to decode (dynamic_resources and
// static_resources, which are Envoy's protobuf JSON, read by the xDS client). fn gets the
// section's JSON and its path, and returns the keys to report, with paths built from path
// by FieldPath and IndexPath. Packages call it from init.
func RegisterSectionCheck(key string, fn func(raw []byte, path string) []KeyProblem) {
	sectionChecks[key] = fn
}

// FieldPath and IndexPath build JSON paths as Parse writes them: FieldPath("a", "b") is
// "a.b" (a key that is not a plain identifier is quoted in brackets), IndexPath("a", 2)
// is "a[2]".
func FieldPath(parent, key string) string { return field(parent, key) }

// IndexPath: see FieldPath.
func IndexPath(parent string, i int) string { return index(parent, i) }

// Suggest returns the one of names closest to key (by edit distance over lower-case
// letters and digits, at most 2 edits, and only for keys longer than 3), or "".
func Suggest(key string, names []string) string {
	k := squash(key)
	best, bestD := "", 3
	for _, n := range names {
		d := editDistance(k, squash(n))
		if d < bestD && (d == 0 || len(k) > 3) {
			best, bestD = n, d
		}
	}
	return best
}

// streamFilterConfigTypes and extendConfigTypes are filled by RegisterStreamFilterConfig
// and RegisterExtendConfig: the stream filters and the extends live in their own
// packages, which this one cannot import.
var (
	streamFilterConfigTypes = map[string]reflect.Type{}
	extendConfigTypes       = map[string]reflect.Type{}
)

// RegisterExtendConfig is RegisterStreamFilterConfig for an extends[] entry's "config"
// (dubbo_registry).
func RegisterExtendConfig(typ string, cfg any) {
	extendConfigTypes[typ] = reflect.TypeOf(cfg)
}

// RegisterStreamFilterConfig tells Parse the type a stream filter's "config" decodes into
// (cfg is a zero value of it), so that unknown keys and wrong JSON types inside
// stream_filters[].config and a route's per_filter_config entry for it are reported with
// their JSON path, as everywhere else in the file. Filter packages call it from init.
func RegisterStreamFilterConfig(name string, cfg any) {
	streamFilterConfigTypes[name] = reflect.TypeOf(cfg)
}

var networkFilterConfigTypes = map[string]reflect.Type{
	FilterProxy:    reflect.TypeFor[ProxyConfig](),
	FilterTCPProxy: reflect.TypeFor[TCPProxyConfig](),
	FilterUDPProxy: reflect.TypeFor[UDPProxyConfig](),
}

var listenerFilterConfigTypes = map[string]reflect.Type{
	ListenerFilterOriginalDst: reflect.TypeFor[OriginalDstFilterConfig](),
}

// walker walks one tree. Problems go to rep; the normalized document to out.
type walker struct {
	data    []byte
	strict  bool // unknown and duplicate keys are errors, not warnings
	unknown bool // report unknown keys at all
	rep     report
	out     []byte
}

func (w *walker) raw(n *node) []byte { return w.data[n.start:n.end] }

func (w *walker) copyRaw(n *node) { w.out = append(w.out, w.raw(n)...) }

// note reports a problem that is a warning, or an error under strict.
func (w *walker) note(path, msg string) {
	if w.strict {
		w.rep.fail(path, msg)
	} else {
		w.rep.warn(path, msg)
	}
}

// unknownKey reports a key the schema does not have, with suggest as its "did you mean".
func (w *walker) unknownKey(path, suggest string) {
	msg := "unknown field, ignored"
	if w.strict {
		msg = "unknown field"
	}
	if suggest != "" {
		msg += " (did you mean " + suggest + "?)"
	}
	w.note(path, msg)
}

func (w *walker) mismatch(n *node, path, want string) {
	w.rep.fail(path, fmt.Sprintf("expected %s, got %s", want, w.describe(n)))
	w.out = append(w.out, "null"...)
}

// describe names a value for an error message: its JSON type and, when short, its text.
func (w *walker) describe(n *node) string {
	switch n.kind {
	case kindNumber, kindBool:
		return fmt.Sprintf("%s %s", n.kind, w.raw(n))
	case kindString:
		s := n.str
		if utf8.RuneCountInString(s) > 40 {
			s = string([]rune(s)[:40]) + "..."
		}
		return fmt.Sprintf("string %q", s)
	default:
		return n.kind.String()
	}
}

// walk checks n against t and writes its normalized form. typed is the schema of built-in
// TypedConfig types when n is (or holds) such a list.
func (w *walker) walk(n *node, t reflect.Type, path string, typed map[string]reflect.Type) {
	if n.kind == kindNull {
		w.out = append(w.out, "null"...)
		return
	}
	if t == rawMessageType {
		w.checkAny(n, path) // json-iterator refuses numbers beyond float64 even here
		w.copyRaw(n)
		return
	}
	if t.Kind() == reflect.Pointer {
		w.walk(n, t.Elem(), path, typed)
		return
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		if err := reflect.New(t).Interface().(unmarshaler).UnmarshalJSON(w.raw(n)); err != nil {
			w.rep.fail(path, err.Error())
		}
		w.copyRaw(n)
		return
	}
	switch t.Kind() {
	case reflect.Interface:
		w.checkAny(n, path)
		w.copyRaw(n)
	case reflect.Struct:
		if n.kind != kindObject {
			w.mismatch(n, path, "an object")
			return
		}
		w.walkStruct(n, t, path, typed)
	case reflect.Map:
		if n.kind != kindObject {
			w.mismatch(n, path, "an object")
			return
		}
		if t.Key().Kind() != reflect.String {
			w.copyRaw(n) // no such field in this package; let the decoder judge
			return
		}
		w.out = append(w.out, '{')
		seen := make(map[string]bool, len(n.members))
		for i, m := range n.members {
			p := field(path, m.key)
			if seen[m.key] {
				w.note(p, "duplicate key; the last one wins")
			}
			seen[m.key] = true
			if i > 0 {
				w.out = append(w.out, ',')
			}
			w.out = appendString(w.out, m.key)
			w.out = append(w.out, ':')
			w.walk(m.val, t.Elem(), p, nil)
			if ct, ok := typed[m.key]; ok && t.Elem() == rawMessageType {
				// A map from a filter type to its config: check the config as that type
				// (problems only; the raw config is kept as written).
				sub := &walker{data: w.data, strict: w.strict, unknown: w.unknown}
				sub.walk(m.val, ct, p, nil)
				w.rep.merge(sub.rep)
			}
		}
		w.out = append(w.out, '}')
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 { // []byte is a base64 string
			if n.kind != kindString {
				w.mismatch(n, path, "a base64 string")
				return
			}
			w.copyRaw(n)
			return
		}
		if n.kind != kindArray {
			w.mismatch(n, path, "an array")
			return
		}
		if t.Kind() == reflect.Array && len(n.elems) > t.Len() {
			w.rep.fail(path, fmt.Sprintf("expected at most %d elements, got %d", t.Len(), len(n.elems)))
		}
		w.out = append(w.out, '[')
		for i, e := range n.elems {
			if i > 0 {
				w.out = append(w.out, ',')
			}
			w.walk(e, t.Elem(), index(path, i), typed)
		}
		w.out = append(w.out, ']')
	case reflect.String:
		if n.kind != kindString {
			w.mismatch(n, path, "a string")
			return
		}
		w.out = appendString(w.out, n.str) // decoded once, here: invalid UTF-8 is U+FFFD for every decoder
	case reflect.Bool:
		if n.kind != kindBool {
			w.mismatch(n, path, "true or false")
			return
		}
		w.copyRaw(n)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.kind != kindNumber || isFractional(w.raw(n)) {
			w.mismatch(n, path, "an integer")
			return
		}
		if _, err := strconv.ParseInt(string(w.raw(n)), 10, t.Bits()); err != nil {
			w.rep.fail(path, fmt.Sprintf("number %s is out of range for %s", w.raw(n), t.Kind()))
			w.out = append(w.out, "null"...)
			return
		}
		w.copyRaw(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if n.kind != kindNumber || isFractional(w.raw(n)) || w.raw(n)[0] == '-' {
			w.mismatch(n, path, "a non-negative integer")
			return
		}
		if _, err := strconv.ParseUint(string(w.raw(n)), 10, t.Bits()); err != nil {
			w.rep.fail(path, fmt.Sprintf("number %s is out of range for %s", w.raw(n), t.Kind()))
			w.out = append(w.out, "null"...)
			return
		}
		w.copyRaw(n)
	case reflect.Float32, reflect.Float64:
		if n.kind != kindNumber {
			w.mismatch(n, path, "a number")
			return
		}
		if _, err := strconv.ParseFloat(string(w.raw(n)), t.Bits()); err != nil {
			w.rep.fail(path, fmt.Sprintf("number %s is out of range for %s", w.raw(n), t.Kind()))
			w.out = append(w.out, "null"...)
			return
		}
		w.copyRaw(n)
	default:
		// Channels, funcs, complex numbers: no config field has them.
		w.rep.fail(path, fmt.Sprintf("cannot decode into %s", t))
		w.out = append(w.out, "null"...)
	}
}

// checkAny checks a free-form value (an interface or a RawMessage): its numbers must fit a
// float64, as both JSON decoders require of an interface (and MOSN, which decodes filter
// configs into map[string]interface{}).
func (w *walker) checkAny(n *node, path string) {
	switch n.kind {
	case kindNumber:
		if _, err := strconv.ParseFloat(string(w.raw(n)), 64); err != nil {
			w.rep.fail(path, fmt.Sprintf("number %s is out of range for float64", w.raw(n)))
		}
	case kindObject:
		for _, m := range n.members {
			w.checkAny(m.val, field(path, m.key))
		}
	case kindArray:
		for i, e := range n.elems {
			w.checkAny(e, index(path, i))
		}
	}
}

func isFractional(lit []byte) bool {
	for _, c := range lit {
		if c == '.' || c == 'e' || c == 'E' {
			return true
		}
	}
	return false
}

func (w *walker) walkStruct(n *node, t reflect.Type, path string, typed map[string]reflect.Type) {
	fs := fieldsOf(t)
	schemas := typedSchemas[t]
	seen := make([]bool, len(fs.list))
	w.out = append(w.out, '{')
	first := true
	var typeName string
	var configNode *node
	for _, m := range n.members {
		i := fs.lookup(m.key)
		if i < 0 {
			if w.unknown {
				w.unknownKey(field(path, m.key), fs.suggest(m.key))
			}
			continue
		}
		f := &fs.list[i]
		p := field(path, f.name)
		if seen[i] {
			w.note(p, "duplicate key; the last one wins")
		}
		seen[i] = true
		if m.val.kind == kindNull {
			continue // null leaves a field as it is: on a fresh struct, absent
		}
		if !first {
			w.out = append(w.out, ',')
		}
		first = false
		w.out = appendString(w.out, f.name)
		w.out = append(w.out, ':')
		w.walk(m.val, f.typ, p, schemas[f.name])
		if t == configType && w.unknown && m.val.kind == kindObject {
			if check := sectionChecks[f.name]; check != nil {
				for _, k := range check(w.raw(m.val), p) {
					if k.Ignored != "" {
						w.rep.warn(k.Path, k.Ignored)
					} else {
						w.unknownKey(k.Path, k.Suggest)
					}
				}
			}
		}
		if t == typedConfigType {
			switch f.name {
			case "type":
				if m.val.kind == kindString {
					typeName = m.val.str
				}
			case "config":
				configNode = m.val
			}
		}
	}
	w.out = append(w.out, '}')
	if t == typedConfigType && typed != nil && configNode != nil {
		if ct, ok := typed[typeName]; ok {
			sub := &walker{data: w.data, strict: w.strict, unknown: w.unknown}
			sub.walk(configNode, ct, field(path, "config"), nil)
			w.rep.merge(sub.rep)
		}
	}
}

// structFields is the decoding view of a struct type: its JSON keys in field order.
type structFields struct {
	list   []fieldInfo
	exact  map[string]int
	folded map[string]int
}

type fieldInfo struct {
	name string // canonical key from the json tag
	typ  reflect.Type
}

var fieldCache sync.Map // reflect.Type → *structFields

func fieldsOf(t reflect.Type) *structFields {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.(*structFields)
	}
	fs := &structFields{exact: map[string]int{}, folded: map[string]int{}}
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = sf.Name
		}
		if _, dup := fs.exact[name]; dup {
			continue
		}
		fs.exact[name] = len(fs.list)
		if _, dup := fs.folded[foldKey(name)]; !dup {
			fs.folded[foldKey(name)] = len(fs.list)
		}
		fs.list = append(fs.list, fieldInfo{name: name, typ: sf.Type})
	}
	v, _ := fieldCache.LoadOrStore(t, fs)
	return v.(*structFields)
}

// lookup finds the field for a key: an exact match first, then a case-insensitive one.
func (fs *structFields) lookup(key string) int {
	if i, ok := fs.exact[key]; ok {
		return i
	}
	if i, ok := fs.folded[foldKey(key)]; ok {
		return i
	}
	return -1
}

// suggest returns a known key close to an unknown one (camelCase, a typo), or "".
func (fs *structFields) suggest(key string) string {
	names := make([]string, len(fs.list))
	for i, f := range fs.list {
		names[i] = f.name
	}
	return Suggest(key, names)
}

// foldKey folds case as encoding/json matches keys: ASCII to upper case, other letters to
// the upper case of their lower case (so the Kelvin sign matches k, as encoding/json does).
func foldKey(s string) string {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r < utf8.RuneSelf {
			if 'a' <= r && r <= 'z' {
				r -= 'a' - 'A'
			}
			b = append(b, byte(r))
			continue
		}
		b = utf8.AppendRune(b, unicode.ToUpper(unicode.ToLower(r)))
	}
	return string(b)
}

// squash drops separators and case: "lbType", "LB_TYPE" and "lb-type" all become "LBTYPE".
func squash(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '-' {
			return -1
		}
		return r
	}, foldKey(s))
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

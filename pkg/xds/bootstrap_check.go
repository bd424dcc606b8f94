package xds

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// The config file's dynamic_resources and static_resources are Envoy's protobuf JSON, which
// ParseBootstrap decodes discarding unknown keys (a control plane's bootstrap may carry
// fields of newer Envoys). These checks give validate and start the same report for them as
// for the rest of the file: a misspelt key is named with its path and a "did you mean", and
// a key mosnlite does not read is a warning.
func init() {
	config.RegisterSectionCheck("dynamic_resources", checkDynamicResources)
	config.RegisterSectionCheck("static_resources", checkStaticResources)
}

var (
	dynamicResources = section{
		md:   (&bootstrapv3.Bootstrap_DynamicResources{}).ProtoReflect().Descriptor(),
		read: []string{"ads_config", "lds_config", "cds_config"},
		why:  "not supported, ignored (mosnlite reads ads_config, lds_config and cds_config)",
	}
	staticResources = section{
		md:   (&bootstrapv3.Bootstrap_StaticResources{}).ProtoReflect().Descriptor(),
		read: []string{"clusters"},
		why:  "not supported, ignored (only clusters is read, to find the ADS cluster)",
	}
)

func checkDynamicResources(raw []byte, path string) []config.KeyProblem {
	return dynamicResources.check(raw, path)
}

func checkStaticResources(raw []byte, path string) []config.KeyProblem {
	return staticResources.check(raw, path)
}

// section is a top-level section of Envoy's Bootstrap message: its message, the fields
// ParseBootstrap reads from it, and what a field it does not read is told.
type section struct {
	md   protoreflect.MessageDescriptor
	read []string
	why  string
}

// check reports the section's unknown keys (at any depth) and the fields of its own that
// mosnlite does not read. A section that is not an object is left to ParseBootstrap.
func (sec section) check(raw []byte, path string) []config.KeyProblem {
	obj, ok := decodeObject(raw)
	if !ok {
		return nil
	}
	var out []config.KeyProblem
	for _, k := range sortedKeys(obj) {
		if fd := fieldByJSONKey(sec.md, k); fd != nil && !slices.Contains(sec.read, string(fd.Name())) {
			out = append(out, config.KeyProblem{Path: config.FieldPath(path, k), Ignored: sec.why})
			continue
		}
		out = checkKey(out, sec.md, obj, k, path)
	}
	return out
}

// decodeObject decodes a JSON object with numbers kept as text.
func decodeObject(raw []byte) (map[string]any, bool) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var obj map[string]any
	if d.Decode(&obj) != nil || obj == nil {
		return nil, false
	}
	return obj, true
}

// fieldByJSONKey finds the field protojson would fill from key: its JSON (lowerCamelCase)
// name or its proto name.
func fieldByJSONKey(md protoreflect.MessageDescriptor, key string) protoreflect.FieldDescriptor {
	fs := md.Fields()
	if fd := fs.ByJSONName(key); fd != nil {
		return fd
	}
	return fs.ByTextName(key)
}

// checkKey checks obj[k] against md: an unknown key is reported, a known one is walked into.
func checkKey(out []config.KeyProblem, md protoreflect.MessageDescriptor, obj map[string]any, k, path string) []config.KeyProblem {
	p := config.FieldPath(path, k)
	fd := fieldByJSONKey(md, k)
	if fd == nil {
		fs := md.Fields()
		names := make([]string, fs.Len())
		for i := range names {
			names[i] = string(fs.Get(i).Name())
		}
		return append(out, config.KeyProblem{Path: p, Suggest: config.Suggest(k, names)})
	}
	v := obj[k]
	switch {
	case fd.IsMap():
		m, _ := v.(map[string]any)
		if fd.MapValue().Kind() != protoreflect.MessageKind {
			return out
		}
		for _, mk := range sortedKeys(m) {
			out = checkMessage(out, fd.MapValue().Message(), m[mk], config.FieldPath(p, mk))
		}
	case fd.IsList():
		l, _ := v.([]any)
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return out
		}
		for i, e := range l {
			out = checkMessage(out, fd.Message(), e, config.IndexPath(p, i))
		}
	case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
		out = checkMessage(out, fd.Message(), v, p)
	}
	return out
}

// checkMessage checks a JSON value that protojson decodes into a message of type md.
// Well-known types with a JSON form of their own (durations, wrappers, Struct, ...) are
// left to protojson; an Any is checked against the type its @type names, when that type is
// linked in.
func checkMessage(out []config.KeyProblem, md protoreflect.MessageDescriptor, v any, path string) []config.KeyProblem {
	obj, ok := v.(map[string]any)
	if !ok {
		return out // null, or a type mismatch protojson reports
	}
	name := string(md.FullName())
	if name == "google.protobuf.Any" {
		url, _ := obj["@type"].(string)
		mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
		if err != nil {
			return out
		}
		md = mt.Descriptor()
		if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
			return out // a well-known type inside an Any sits under "value"
		}
		for _, k := range sortedKeys(obj) {
			if k != "@type" {
				out = checkKey(out, md, obj, k, path)
			}
		}
		return out
	}
	if strings.HasPrefix(name, "google.protobuf.") {
		return out
	}
	for _, k := range sortedKeys(obj) {
		out = checkKey(out, md, obj, k, path)
	}
	return out
}

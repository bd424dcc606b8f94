// Package stream holds the protocol-neutral interfaces of the L7 layer: protocol names,
// the protocol registry (registry.go: one registration per protocol with its matcher,
// server factory, pool mode and local-reply statuses; Auto sniffs in registration order),
// the server- and client-side connection interfaces (conn.go), a header interface, and
// request views that the router matches on without allocating.
//
// docs/l7-plan.md lists what comes next (the body piece interface).
package stream

import (
	"unsafe"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
)

// Protocol names a wire protocol. The values are the configuration's names
// (downstream_protocol / upstream_protocol).
type Protocol string

// Protocol names, identical to the configuration catalogue's.
const (
	HTTP1  Protocol = config.ProtocolHTTP1
	HTTP2  Protocol = config.ProtocolHTTP2
	Auto   Protocol = config.ProtocolAuto
	Bolt   Protocol = config.ProtocolBolt
	BoltV2 Protocol = config.ProtocolBoltV2
	Dubbo  Protocol = config.ProtocolDubbo
)

// Headers is a protocol's header map in that protocol's own representation. Names are
// matched as the protocol defines (ASCII case-insensitive for HTTP). Conversion between
// protocols goes through Range.
type Headers interface {
	// Get returns the first value of name.
	Get(name string) (string, bool)
	// Set replaces every value of name with value.
	Set(name, value string)
	// Add appends a value of name.
	Add(name, value string)
	// Del removes every value of name.
	Del(name string)
	// Range calls fn for each field in order until fn returns false.
	Range(fn func(name, value string) bool)
}

// bstr views b as a string without copying. The string is only valid while b is neither
// modified nor reused; views hand such strings to callers that must not keep them past
// the request (the router does not).
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// HTTP1Headers adapts a parsed HTTP/1 field list to Headers. Get and Range do not
// allocate; Set and Add copy their arguments (the field list may alias a read buffer
// that is reused).
type HTTP1Headers struct{ H *http1.Headers }

var _ Headers = HTTP1Headers{}

// Get implements Headers.
func (h HTTP1Headers) Get(name string) (string, bool) {
	v, ok := h.H.Get(name)
	return bstr(v), ok
}

// Set implements Headers.
func (h HTTP1Headers) Set(name, value string) {
	h.Del(name)
	h.Add(name, value)
}

// Add implements Headers.
func (h HTTP1Headers) Add(name, value string) {
	*h.H = append(*h.H, http1.Header{Name: []byte(name), Value: []byte(value)})
}

// Del implements Headers.
func (h HTTP1Headers) Del(name string) {
	hs := *h.H
	out := hs[:0]
	for _, f := range hs {
		if !http1.EqualFold(f.Name, name) {
			out = append(out, f)
		}
	}
	clear(hs[len(out):])
	*h.H = out
}

// Range implements Headers.
func (h HTTP1Headers) Range(fn func(name, value string) bool) {
	for _, f := range *h.H {
		if !fn(bstr(f.Name), bstr(f.Value)) {
			return
		}
	}
}

// HTTP1Request is a router.Request over a parsed HTTP/1 request head. It does not
// allocate: the strings it returns alias the head's bytes and are valid until the read
// buffer the head was parsed from is reused. Keep it as a value inside a per-connection
// struct and point it at each new head.
type HTTP1Request struct{ Head *http1.RequestHead }

var _ router.Request = HTTP1Request{}

// Host implements router.Request: the Host field (or absolute-form authority).
func (r HTTP1Request) Host() string { return bstr(r.Head.Host) }

// Path implements router.Request: the request target with its query.
func (r HTTP1Request) Path() string { return bstr(r.Head.Target) }

// Method implements router.Request.
func (r HTTP1Request) Method() string { return bstr(r.Head.Method) }

// Header implements router.Request: first value, case-insensitive name.
func (r HTTP1Request) Header(name string) (string, bool) {
	v, ok := r.Head.Headers.Get(name)
	return bstr(v), ok
}

// Variable implements router.Request. The HTTP/1 view knows the request line's parts
// under MOSN's variable names (x-mosn-method, x-mosn-host, x-mosn-path without the query,
// x-mosn-querystring); others are absent.
func (r HTTP1Request) Variable(name string) (string, bool) {
	switch name {
	case "x-mosn-method":
		return bstr(r.Head.Method), true
	case "x-mosn-host":
		return bstr(r.Head.Host), true
	case "x-mosn-path":
		p, _ := splitQuery(r.Head.Target)
		return bstr(p), true
	case "x-mosn-querystring":
		_, q := splitQuery(r.Head.Target)
		return bstr(q), true
	}
	return "", false
}

// splitQuery splits a request target at its first '?'.
func splitQuery(t []byte) (path, query []byte) {
	for i, c := range t {
		if c == '?' {
			return t[:i], t[i+1:]
		}
	}
	return t, nil
}

// SniffHTTP1 reports whether peek starts like an HTTP/1 request line: a method token
// followed by a space. more is true when peek is a valid prefix but too short to tell.
func SniffHTTP1(peek []byte) (ok, more bool) {
	const maxMethod = 24
	for i, c := range peek {
		if c == ' ' {
			return i > 0, false
		}
		if i >= maxMethod || !isTchar(c) {
			return false, false
		}
	}
	return false, true
}

func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

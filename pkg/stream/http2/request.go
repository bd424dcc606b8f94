package http2

import (
	"net/http"
	"net/textproto"
	"strings"

	"github.com/mosnlite/mosnlite/pkg/router"
)

// Request is a router.Request over a request read by http2.Server: Host is :authority,
// Path is :path (query included), Method is :method. Header names are matched
// case-insensitively; a name already in canonical form (as router configs usually give
// it, or any lower-case one-word name) is looked up without allocating.
type Request struct{ R *http.Request }

var _ router.Request = Request{}

// Host implements router.Request.
func (r Request) Host() string { return r.R.Host }

// Path implements router.Request.
func (r Request) Path() string { return r.R.RequestURI }

// Method implements router.Request.
func (r Request) Method() string { return r.R.Method }

// Header implements router.Request.
func (r Request) Header(name string) (string, bool) { return HeaderGet(r.R.Header, name) }

// Variable implements router.Request: x-mosn-method, x-mosn-host, x-mosn-path (without
// the query) and x-mosn-querystring, as for HTTP/1.
func (r Request) Variable(name string) (string, bool) {
	return Variable(name, r.R.Method, r.R.Host, r.R.RequestURI)
}

// Variable answers MOSN's request variables from a request's method, host and target
// (path with query): x-mosn-method, x-mosn-host, x-mosn-path (without the query) and
// x-mosn-querystring; others are absent.
func Variable(name, method, host, target string) (string, bool) {
	switch name {
	case "x-mosn-method":
		return method, true
	case "x-mosn-host":
		return host, true
	case "x-mosn-path":
		p, _, _ := strings.Cut(target, "?")
		return p, true
	case "x-mosn-querystring":
		_, q, _ := strings.Cut(target, "?")
		return q, true
	}
	return "", false
}

// HeaderGet returns the first value of name in h, case-insensitively.
func HeaderGet(h http.Header, name string) (string, bool) {
	if vs, ok := h[name]; ok && len(vs) > 0 {
		return vs[0], true
	}
	if len(name) <= 64 {
		// Canonical form in a stack buffer; m[string(b)] does not allocate.
		var buf [64]byte
		k := buf[:len(name)]
		upper := true
		for i := 0; i < len(name); i++ {
			c := name[i]
			switch {
			case upper && 'a' <= c && c <= 'z':
				c -= 'a' - 'A'
			case !upper && 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			}
			k[i] = c
			upper = c == '-'
		}
		if vs, ok := h[string(k)]; ok && len(vs) > 0 {
			return vs[0], true
		}
		return "", false
	}
	if vs, ok := h[textproto.CanonicalMIMEHeaderKey(name)]; ok && len(vs) > 0 {
		return vs[0], true
	}
	return "", false
}

// HopByHop reports whether a canonical header name is connection-specific (RFC 9110
// §7.6.1, RFC 9113 §8.2.2) and so is never forwarded to the next hop. TE is handled by
// the caller: "TE: trailers" crosses into HTTP/2 (gRPC needs it).
func HopByHop(name string) bool {
	switch name {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade",
		"Te", "Trailer", "Proxy-Authenticate", "Proxy-Authorization", "Http2-Settings":
		return true
	}
	return false
}

// CopyHeaders copies the end-to-end fields of src into dst: hop-by-hop fields, and those
// the Connection field names, are left out. Value slices are shared, not copied. It
// reports whether src asked for trailers (TE: trailers).
func CopyHeaders(dst, src http.Header) (teTrailers bool) {
	conn := src["Connection"]
	for k, vs := range src {
		if HopByHop(k) {
			if k == "Te" {
				for _, v := range vs {
					if strings.EqualFold(strings.TrimSpace(v), "trailers") {
						teTrailers = true
					}
				}
			}
			continue
		}
		if len(conn) > 0 && namedIn(conn, k) {
			continue
		}
		dst[k] = vs
	}
	return teTrailers
}

// namedIn reports whether a Connection field lists name.
func namedIn(conn []string, name string) bool {
	for _, v := range conn {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(tok), name) {
				return true
			}
		}
	}
	return false
}

// Mutator applies route header mutations to an http.Header.
type Mutator struct{ H http.Header }

var _ router.HeaderMutator = Mutator{}

// Set implements router.HeaderMutator.
func (m Mutator) Set(k, v string) { m.H.Set(k, v) }

// Add implements router.HeaderMutator.
func (m Mutator) Add(k, v string) { m.H.Add(k, v) }

// Del implements router.HeaderMutator.
func (m Mutator) Del(k string) { m.H.Del(k) }

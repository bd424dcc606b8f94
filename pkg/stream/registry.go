package stream

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/dubbo"
)

// ErrUnknownProtocol is wrapped by Lookup for a protocol nobody registered.
var ErrUnknownProtocol = errors.New("stream: protocol not registered")

// PoolMode is how a protocol's upstream connections carry requests; it chooses the
// connection pool.
type PoolMode uint8

// Pool modes.
const (
	// PingPong: one request at a time per connection, reused when its response ended
	// (HTTP/1 keep-alive).
	PingPong PoolMode = iota + 1
	// Multiplex: many concurrent streams per connection, answers matched by stream or
	// request id (HTTP/2, bolt, dubbo).
	Multiplex
)

func (m PoolMode) String() string {
	switch m {
	case PingPong:
		return "ping-pong"
	case Multiplex:
		return "multiplex"
	}
	return fmt.Sprintf("PoolMode(%d)", uint8(m))
}

// Cause is why the proxy answers a request itself (a local reply).
type Cause uint8

// Local-reply causes.
const (
	CauseNoRoute           Cause = iota + 1 // no route matched the request
	CauseNoHealthyUpstream                  // no cluster, no healthy host, or the connect failed
	CauseOverflow                           // a circuit breaker is open or too many requests are in flight
	CauseTimeout                            // the request's deadline passed before the response
	CauseUpstreamReset                      // the upstream connection ended before the response
	CauseCodecError                         // the request could not be decoded
	numCauses
)

// Causes lists every local-reply cause.
var Causes = [...]Cause{CauseNoRoute, CauseNoHealthyUpstream, CauseOverflow, CauseTimeout, CauseUpstreamReset, CauseCodecError}

var causeNames = [numCauses]string{
	CauseNoRoute:           "no_route",
	CauseNoHealthyUpstream: "no_healthy_upstream",
	CauseOverflow:          "overflow",
	CauseTimeout:           "timeout",
	CauseUpstreamReset:     "upstream_reset",
	CauseCodecError:        "codec_error",
}

func (c Cause) String() string {
	if c < numCauses && causeNames[c] != "" {
		return causeNames[c]
	}
	return fmt.Sprintf("Cause(%d)", uint8(c))
}

// StatusMap gives the status a protocol's local reply carries for a cause, in the
// protocol's own codes (HTTP status, bolt response status, dubbo status byte).
type StatusMap func(Cause) int

// httpStatus is what pkg/proxy answers HTTP/1 and HTTP/2 requests with today
// (session.go localDone, h2stream.go errLocal); a request it cannot parse gets the parse
// error's own 4xx (http1.StatusCode), 400 unless more specific.
var httpStatus = [numCauses]int{
	CauseNoRoute:           http.StatusNotFound,
	CauseNoHealthyUpstream: http.StatusServiceUnavailable,
	CauseOverflow:          http.StatusServiceUnavailable,
	CauseTimeout:           http.StatusGatewayTimeout,
	CauseUpstreamReset:     http.StatusBadGateway,
	CauseCodecError:        http.StatusBadRequest,
}

// HTTPStatus is the StatusMap of HTTP/1 and HTTP/2; 500 for a cause it does not know.
func HTTPStatus(c Cause) int {
	if c < numCauses && httpStatus[c] != 0 {
		return httpStatus[c]
	}
	return http.StatusInternalServerError
}

// RPCCause is the codec contract's hijack cause for c: the xprotocol codecs map those
// to their statuses (Codec.Hijack).
func RPCCause(c Cause) xprotocol.Cause {
	switch c {
	case CauseNoRoute:
		return xprotocol.CauseNoRoute
	case CauseNoHealthyUpstream:
		return xprotocol.CauseNoHealthyUpstream
	case CauseOverflow:
		return xprotocol.CauseOverflow
	case CauseTimeout:
		return xprotocol.CauseTimeout
	case CauseUpstreamReset:
		return xprotocol.CauseConnectionClosed
	case CauseCodecError:
		return xprotocol.CauseCodecError
	}
	return 0
}

// BoltStatus is the StatusMap of bolt and bolt v2: the codec's hijack status.
func BoltStatus(c Cause) int { return int(bolt.StatusOf(RPCCause(c))) }

// DubboStatus is the StatusMap of dubbo: the codec's hijack status.
func DubboStatus(c Cause) int { return int(dubbo.CauseStatus(RPCCause(c))) }

// Matcher tells from a connection's first bytes whether it speaks a protocol. more is
// true when peek is a prefix of the protocol's signature and more bytes are needed to
// decide. It must not block, allocate or keep peek.
type Matcher func(peek []byte) (ok, more bool)

// ServerFactory builds the server of downstream connections for the protocol r
// registers, from what the caller (the proxy filter) gives it as P.
type ServerFactory[P any] func(p P, r *Registration[P]) (ServerConnection, error)

// Registration is one protocol's plug-in: how it is sniffed, how its downstream server is
// built, how its upstream connections are pooled and which status its local replies
// carry. P is what the registry's user builds servers from; pkg/stream does not know it.
type Registration[P any] struct {
	Name     Protocol
	Match    Matcher
	Factory  ServerFactory[P]
	PoolMode PoolMode
	Status   StatusMap
}

// Registry is the ordered list of protocol registrations. Auto sniffs in registration
// order. It is filled before serving and read-only afterwards, so it needs no lock.
type Registry[P any] struct {
	order   []*Registration[P]
	byName  map[Protocol]*Registration[P]
	matches []matchEntry // order's matchers, for sniff
}

// NewRegistry returns an empty registry.
func NewRegistry[P any]() *Registry[P] {
	return &Registry[P]{byName: map[Protocol]*Registration[P]{}}
}

// Register appends reg. Every field is required; Auto and duplicate names are refused.
func (r *Registry[P]) Register(reg Registration[P]) error {
	switch {
	case reg.Name == "" || reg.Name == Auto:
		return fmt.Errorf("stream: register protocol %q: not a protocol name", reg.Name)
	case r.byName[reg.Name] != nil:
		return fmt.Errorf("stream: register protocol %q: already registered", reg.Name)
	case reg.Match == nil, reg.Factory == nil, reg.Status == nil:
		return fmt.Errorf("stream: register protocol %q: matcher, factory and status mapping are required", reg.Name)
	case reg.PoolMode != PingPong && reg.PoolMode != Multiplex:
		return fmt.Errorf("stream: register protocol %q: unknown pool mode %v", reg.Name, reg.PoolMode)
	}
	p := &reg
	r.byName[reg.Name] = p
	r.order = append(r.order, p)
	r.matches = append(r.matches, matchEntry{reg.Name, reg.Match})
	return nil
}

// Lookup returns the registration of name, or an error wrapping ErrUnknownProtocol that
// lists the registered ones.
func (r *Registry[P]) Lookup(name Protocol) (*Registration[P], error) {
	if p := r.byName[name]; p != nil {
		return p, nil
	}
	known := make([]string, len(r.order))
	for i, p := range r.order {
		known[i] = string(p.Name)
	}
	return nil, fmt.Errorf("%w: %q (known: %s)", ErrUnknownProtocol, name, strings.Join(known, ", "))
}

// Registrations returns the registrations in registration order.
func (r *Registry[P]) Registrations() []*Registration[P] {
	return append([]*Registration[P](nil), r.order...)
}

// Names returns the registered protocols in registration order.
func (r *Registry[P]) Names() []Protocol {
	out := make([]Protocol, len(r.order))
	for i, p := range r.order {
		out[i] = p.Name
	}
	return out
}

// Sniff identifies the protocol of a connection from its first bytes, trying the
// registrations in order; only protocols in allowed are considered (nil or empty: all).
// A registration that needs more bytes holds back the later ones (HTTP/2's "PRI " is
// also an HTTP/1 request line): more is true and p is "" until it decides. p is "" and
// more false when nothing allowed matches.
func (r *Registry[P]) Sniff(peek []byte, allowed []Protocol) (p Protocol, more bool) {
	return sniff(r.matches, peek, allowed)
}

// Servers are the server factories of the built-in protocols.
type Servers[P any] struct {
	HTTP1, HTTP2, Bolt, BoltV2, Dubbo ServerFactory[P]
}

// builtin is a built-in protocol's registration less its server factory.
type builtin struct {
	name   Protocol
	match  Matcher
	pool   PoolMode
	status StatusMap
}

// builtins are mosnlite's protocols in Auto's fixed order: the HTTP/2 preface, bolt v1
// (0x01), bolt v2 (0x02), dubbo's magic (0xdabb), then an HTTP/1 request line.
var builtins = [...]builtin{
	{HTTP2, MatchHTTP2, Multiplex, HTTPStatus},
	{Bolt, MatchBolt, Multiplex, BoltStatus},
	{BoltV2, MatchBoltV2, Multiplex, BoltStatus},
	{Dubbo, MatchDubbo, Multiplex, DubboStatus},
	{HTTP1, SniffHTTP1, PingPong, HTTPStatus},
}

// builtinMatches are builtins' matchers, for Sniff.
var builtinMatches = func() []matchEntry {
	out := make([]matchEntry, len(builtins))
	for i, b := range builtins {
		out[i] = matchEntry{b.name, b.match}
	}
	return out
}()

// RegisterBuiltins registers the built-in protocols in Auto's fixed order with s's
// factories. A protocol whose factory is nil is refused, so a build serves them all.
func RegisterBuiltins[P any](r *Registry[P], s Servers[P]) error {
	factory := map[Protocol]ServerFactory[P]{HTTP1: s.HTTP1, HTTP2: s.HTTP2, Bolt: s.Bolt, BoltV2: s.BoltV2, Dubbo: s.Dubbo}
	var errs []error
	for _, b := range builtins {
		errs = append(errs, r.Register(Registration[P]{
			Name: b.name, Match: b.match, Factory: factory[b.name], PoolMode: b.pool, Status: b.status,
		}))
	}
	return errors.Join(errs...)
}

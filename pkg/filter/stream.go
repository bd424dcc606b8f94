package filter

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// Stream filters run per request inside the proxy, in two phases:
//
//   - receive (request): OnRequestHeaders, then OnRequestData for each body piece, then
//     OnRequestTrailers when the protocol carries trailers;
//   - send (response): OnResponseHeaders, OnResponseData, OnResponseTrailers.
//
// Filters run in configuration order in both phases. A filter that returns Stop has
// answered the request itself with StreamHandler.SendLocalReply (fault abort, 403 from
// ip_access, 413 from payload_limit); the engine writes that answer instead of forwarding,
// and the later filters of the phase do not run.
//
// The interfaces are protocol-neutral: headers are a stream.Headers in the protocol's own
// representation, body pieces are byte slices that alias the engine's read buffers (valid
// only during the call), and a local reply is an HTTP status that each engine maps to its
// protocol:
//
//   - HTTP/1 (pkg/proxy, today): everything runs on the connection's goroutine. Receive
//     filters run after the route is matched (Route may be nil: no route) and before the
//     cluster is picked; send filters run on the parsed upstream response head before it is
//     written downstream. A Stop while the request body is being forwarded, or in the
//     response body phase, resets the exchange (the upstream connection and the downstream
//     one are closed after the local answer, when one can still be written).
//   - HTTP/2 (a goroutine per stream, synchronous like HTTP/1) calls the same chain on the
//     stream's goroutine with its own Headers view; SendLocalReply becomes a response
//     HEADERS (+DATA) frame on the stream.
//   - xprotocol (bolt, dubbo; event driven): the downstream goroutine calls the receive
//     phase with a view over the frame's header map before routing, and the upstream
//     connection's reader calls the send phase before it restores the request id and
//     writes the response; SendLocalReply maps the status to the codec's hijack response.
//     Delay there parks the request on the connection's timer wheel instead of waiting.
type Status uint8

// Filter results.
const (
	Continue Status = iota // go on with the next filter, then forward
	Stop                   // the filter answered with SendLocalReply; do not forward
)

// Header is one header of a local reply.
type Header struct{ Name, Value string }

// StreamHandler is the engine's side of one request, given to its filters.
type StreamHandler interface {
	// Protocol is the downstream protocol.
	Protocol() stream.Protocol
	// Route is the matched route, nil when none matched. Its PerFilterConfig carries
	// route-level overrides of a filter's config (see RouteConfigs).
	Route() *router.Route
	// Request is the request as the router sees it (host, path, method, headers).
	Request() router.Request
	// RemoteAddr is the downstream peer's address.
	RemoteAddr() netip.AddrPort
	// Rand is the connection's cheap random source (not for secrets).
	Rand() uint64
	// SendLocalReply answers the request with status, extra headers and body; the filter
	// then returns Stop. headers and body must stay valid until the filter returns.
	SendLocalReply(status int, headers []Header, body string)
	// Delay holds the request for d before the next filter runs. The HTTP/1 and HTTP/2
	// engines wait on the connection's (stream's) own goroutine, which is idle anyway in
	// ping-pong; no goroutine is started. The wait ends early when the connection closes.
	Delay(d time.Duration)
	// SetResponseFlag records why the request was answered locally, for the access log.
	SetResponseFlag(f accesslog.Flag)
}

// StreamFilter is the per-request instance. The engine calls OnDestroy exactly once when
// the request ends, after which the instance may be reused (pooled) by its factory.
type StreamFilter interface {
	OnRequestHeaders(h stream.Headers, endStream bool) Status
	OnRequestData(p []byte, endStream bool) Status
	OnRequestTrailers(t stream.Headers) Status
	OnResponseHeaders(status int, h stream.Headers, endStream bool) Status
	OnResponseData(p []byte, endStream bool) Status
	OnResponseTrailers(t stream.Headers) Status
	OnDestroy()
}

// StreamFilterFactory makes per-request filters. It is built once per config generation
// and used concurrently by every connection of a listener; NewStreamFilter must be cheap
// (take the instance from a pool).
type StreamFilterFactory interface {
	NewStreamFilter(h StreamHandler) StreamFilter
}

// StreamFactory decodes a stream filter's config ("config" of a stream_filters entry)
// and builds its factory. It is registered under the filter's type in
// extension.Set.StreamFilters. A bad config is an error naming the field.
type StreamFactory func(cfg config.RawMessage) (StreamFilterFactory, error)

// StreamRegistry looks factories up by type (extension.Set.StreamFilters).
type StreamRegistry interface {
	Get(name string) (StreamFactory, error)
	Names() []string
}

// Passthrough implements every StreamFilter method with Continue; embed it and override
// the phases a filter needs.
type Passthrough struct{}

func (Passthrough) OnRequestHeaders(stream.Headers, bool) Status       { return Continue }
func (Passthrough) OnRequestData([]byte, bool) Status                  { return Continue }
func (Passthrough) OnRequestTrailers(stream.Headers) Status            { return Continue }
func (Passthrough) OnResponseHeaders(int, stream.Headers, bool) Status { return Continue }
func (Passthrough) OnResponseData([]byte, bool) Status                 { return Continue }
func (Passthrough) OnResponseTrailers(stream.Headers) Status           { return Continue }

// StreamChain is a listener's stream filters, in order. A nil or empty chain runs nothing.
type StreamChain struct {
	Types     []string
	Factories []StreamFilterFactory
}

// Len is the number of filters.
func (c *StreamChain) Len() int {
	if c == nil {
		return 0
	}
	return len(c.Factories)
}

// HeadersOnly is implemented by a factory whose filters act on heads alone: they use
// OnRequestHeaders and OnResponseHeaders (reading the request through Request only in
// the first), never call Delay, return Continue from every body and trailer phase, and
// are pure, so that running the chain again on the same request (an engine that hands
// the request to another) gives the same result. An engine that cannot call the body
// phases or wait (the HTTP/1 event loop) serves a chain of such filters.
type HeadersOnly interface {
	HeadersOnly()
}

// HeadersOnly reports whether every filter of the chain is HeadersOnly (true for an
// empty chain).
func (c *StreamChain) HeadersOnly() bool {
	if c == nil {
		return true
	}
	for _, f := range c.Factories {
		if _, ok := f.(HeadersOnly); !ok {
			return false
		}
	}
	return true
}

// SizedBodiesOnly is implemented by a factory whose filters act on heads alone, as
// HeadersOnly says, for every request whose head declares its body's length
// (Content-Length, or no body), and use the body phase only for a body of undeclared
// length (chunked): payload_limit refuses a declared length over its limit from the head
// and has to count a chunked body. An engine that cannot call body phases serves the
// first kind of request and hands a chunked one to an engine that can.
type SizedBodiesOnly interface {
	SizedBodiesOnly()
}

// LoopDelay is implemented by a factory whose filters act on heads alone as HeadersOnly
// says, except that OnRequestHeaders may call Delay and that they are not pure: their
// decisions are drawn at random (Percent), so an engine runs them once per request and
// never again on the same request (the HTTP/1 event loop hands such a request to a
// goroutine only before its filters ran). An engine that cannot block waits the delays
// without blocking: the event loop records them and holds the request on its timer once
// the receive phase is over, before the cluster is picked (an abort then follows the
// delay, as it does on an engine that waits in Delay). fault is one.
type LoopDelay interface {
	LoopDelay()
}

// OnHeads reports whether every filter of the chain is HeadersOnly, SizedBodiesOnly or
// LoopDelay (true for an empty chain): an engine that cannot call the body phases serves
// the chain for a request whose body length is declared, waiting the delays of its
// LoopDelay filters without blocking; and every request when HeadsOnly holds too.
func (c *StreamChain) OnHeads() bool {
	if c == nil {
		return true
	}
	for _, f := range c.Factories {
		_, h := f.(HeadersOnly)
		_, s := f.(SizedBodiesOnly)
		_, d := f.(LoopDelay)
		if !h && !s && !d {
			return false
		}
	}
	return true
}

// HeadsOnly reports whether every filter of the chain is HeadersOnly or LoopDelay (true for
// an empty chain): no filter needs a body phase, whatever the body's framing.
func (c *StreamChain) HeadsOnly() bool {
	if c == nil {
		return true
	}
	for _, f := range c.Factories {
		_, h := f.(HeadersOnly)
		_, d := f.(LoopDelay)
		if !h && !d {
			return false
		}
	}
	return true
}

// Pure reports whether no filter of the chain is LoopDelay (true for an empty chain):
// running the chain again on a request gives the same result.
func (c *StreamChain) Pure() bool {
	if c == nil {
		return true
	}
	for _, f := range c.Factories {
		if _, d := f.(LoopDelay); d {
			return false
		}
	}
	return true
}

// BuildStreamChain builds the chain from a listener's stream_filters. Types MOSN has
// retired (config.RetiredStreamFilterTypes) are skipped (validation warned); a type the
// registry does not have is an error naming the entry and the known types.
func BuildStreamChain(reg StreamRegistry, cfgs []config.TypedConfig) (*StreamChain, error) {
	c := &StreamChain{}
	for i, tc := range cfgs {
		if retired(tc.Type) {
			continue
		}
		if reg == nil {
			return nil, fmt.Errorf("stream_filters[%d].type: %q: no stream filters in this build", i, tc.Type)
		}
		mk, err := reg.Get(tc.Type)
		if err != nil {
			return nil, fmt.Errorf("stream_filters[%d].type: %w", i, err)
		}
		f, err := mk(tc.Config)
		if err != nil {
			return nil, fmt.Errorf("stream_filters[%d].config (%s): %w", i, tc.Type, err)
		}
		c.Types = append(c.Types, tc.Type)
		c.Factories = append(c.Factories, f)
	}
	return c, nil
}

func retired(t string) bool {
	for _, r := range config.RetiredStreamFilterTypes {
		if r == t {
			return true
		}
	}
	return false
}

// RouteConfigs caches a filter's parsed per_filter_config per distinct raw config, so a
// route-level override is decoded once, not per request. Lookups take no lock and do not
// allocate; a miss decodes and publishes a new map (copy on write, bounded).
type RouteConfigs[T any] struct {
	Name  string                                  // the filter's type: the per_filter_config key
	Parse func(raw config.RawMessage) (*T, error) // decodes one override

	mu sync.Mutex
	m  atomic.Pointer[map[string]*T]
}

const maxRouteConfigs = 4096

// Get returns the route's override, or nil when the route has none (or it does not
// decode: validation is the place to report that; the listener's config applies).
func (rc *RouteConfigs[T]) Get(rt *router.Route) *T {
	if rt == nil {
		return nil
	}
	raw, ok := rt.PerFilterConfig(rc.Name)
	if !ok {
		return nil
	}
	if m := rc.m.Load(); m != nil {
		if v, ok := (*m)[string(raw)]; ok {
			return v
		}
	}
	v, err := rc.Parse(raw)
	if err != nil {
		v = nil
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	old := rc.m.Load()
	n := 1
	if old != nil {
		n += len(*old)
	}
	if n > maxRouteConfigs {
		return v
	}
	nm := make(map[string]*T, n)
	if old != nil {
		for k, x := range *old {
			nm[k] = x
		}
	}
	nm[string(raw)] = v
	rc.m.Store(&nm)
	return v
}

// Percent reports whether a draw from h's random source falls under percent (0..100).
func Percent(h StreamHandler, percent uint32) bool {
	switch {
	case percent == 0:
		return false
	case percent >= 100:
		return true
	}
	return h.Rand()%100 < uint64(percent)
}

// NewRand returns a seeded PCG for a connection's StreamHandler.Rand.
func NewRand() rand.PCG {
	return *rand.NewPCG(rand.Uint64(), rand.Uint64())
}

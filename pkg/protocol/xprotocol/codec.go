// Package xprotocol is the contract between the multiplexed RPC stream engine
// (pkg/stream/xprotocol) and the RPC codecs (bolt, dubbo), plus their registry.
//
// Codecs are pure: no I/O, no goroutines, no clocks. They decode from bytes the engine
// already read and encode into buffers the engine writes, which makes them fuzzable. A
// forwarded frame is never re-encoded: the engine patches the request id in place (SetID)
// and writes Frame.Raw as it came.
package xprotocol

import (
	"errors"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

// Errors shared by codecs.
var (
	// ErrNeedMore is returned by Match when the peeked bytes are too few to decide.
	ErrNeedMore = errors.New("xprotocol: need more bytes")
	// ErrNoMatch is returned by Match when the bytes are not this protocol.
	ErrNoMatch = errors.New("xprotocol: not this protocol")
	// ErrFrameTooLarge is returned by Decode when a header declares a frame over the limit;
	// it is detected from the fixed header alone, before the body is buffered.
	ErrFrameTooLarge = errors.New("xprotocol: frame too large")
	// ErrUnsupported is returned for an operation the protocol has no frame for.
	ErrUnsupported = errors.New("xprotocol: not supported by this protocol")
)

// Kind is what a frame is, as far as the engine cares.
type Kind uint8

// Frame kinds.
const (
	KindRequest        Kind = iota + 1 // expects a response
	KindOneway                         // a request with no response
	KindResponse                       // answers a request by id
	KindHeartbeat                      // keepalive request: answered locally, never forwarded
	KindHeartbeatReply                 // keepalive response
	KindGoAway                         // peer asks us to stop sending new requests on this connection
)

// Cause is why the proxy answers a request itself (hijack).
type Cause uint8

// Hijack causes; each codec maps them to its own status (PROTOCOLS.md).
const (
	CauseNoRoute Cause = iota + 1
	CauseNoHealthyUpstream
	CauseOverflow // circuit breaker open, too many requests in flight
	CauseTimeout  // the proxy's own deadline for the request passed
	CauseUpstreamTimeout
	CauseCodecError
	CauseForbidden
	CauseConnectionClosed // the upstream connection closed with the request pending
)

// Header is one routing-relevant key/value pair. Both slices alias Frame.Raw (or memory the
// codec owns for the frame's lifetime); copy them to keep them longer.
type Header struct{ Key, Value []byte }

// Frame is one decoded frame. The engine owns Frame values and reuses them (Reset) so that
// decoding allocates nothing in steady state; codecs fill them.
type Frame struct {
	Kind    Kind
	ID      uint64        // request id as on the wire (bolt: u32, dubbo: u64)
	Raw     []byte        // the whole frame, aliasing the bytes given to Decode
	Timeout time.Duration // the request's own timeout from the frame (0: none)
	Status  uint16        // response status in the protocol's own codes
	Version byte          // protocol sub-version (bolt 1 or 2; dubbo 2)
	// Headers holds the routing keys: bolt's header map; dubbo's service, method,
	// version, group (and attachments when the codec extracted them).
	Headers []Header
	// Service is the routing key the router matches as the "service" header.
	Service []byte
	// Method, when the protocol carries one.
	Method []byte
	// Proto is codec-private state (offsets, flags) so the codec can patch Raw in place.
	Proto [4]uint32
}

// Reset clears f for reuse, keeping the Headers backing array.
func (f *Frame) Reset() {
	h := f.Headers[:0]
	*f = Frame{Headers: h}
}

// Header returns the value of the first header named key, without allocating.
func (f *Frame) Header(key string) ([]byte, bool) {
	for i := range f.Headers {
		if string(f.Headers[i].Key) == key {
			return f.Headers[i].Value, true
		}
	}
	return nil, false
}

// Codec is one RPC protocol.
type Codec interface {
	// Name is the protocol's name in the config ("bolt", "boltv2", "dubbo").
	Name() string
	// Match sniffs the first bytes of a connection: nil, ErrNeedMore or ErrNoMatch.
	Match(peek []byte) error
	// Decode parses one frame from the front of b into f (which the caller has Reset).
	// It returns the frame's length; 0 and nil when b does not yet hold a whole frame;
	// or an error for bytes that can never become a valid frame, after which the
	// connection is closed. It never panics, whatever b holds.
	Decode(b []byte, f *Frame) (n int, err error)
	// SetID rewrites the request id inside f.Raw (and f.ID) in place.
	SetID(f *Frame, id uint64)
	// Encode writes f to dst: f.Raw when the frame was decoded, else a frame built from
	// f's fields (used by tests and by frames the proxy makes).
	Encode(dst *buffer.IoBuffer, f *Frame) error
	// HeartbeatReply writes the answer to the heartbeat req.
	HeartbeatReply(dst *buffer.IoBuffer, req *Frame) error
	// Heartbeat writes a keepalive request with id (the engine's upstream keepalive).
	Heartbeat(dst *buffer.IoBuffer, id uint64) error
	// GoAway writes a go-away frame, or returns ErrUnsupported.
	GoAway(dst *buffer.IoBuffer, id uint64) error
	// Hijack writes the error response the proxy sends for req because of cause.
	Hijack(dst *buffer.IoBuffer, req *Frame, cause Cause, msg string) error
	// HTTPStatus maps a response's protocol status to an HTTP-class code (stats, retries).
	HTTPStatus(f *Frame) int
	// MaxFrameSize is the largest frame Decode accepts.
	MaxFrameSize() int
}

// CodecFactory builds a codec with its default options. The extension set's Codecs
// registry maps protocol names (bolt, boltv2, dubbo) to them; the proxy filter looks a
// listener's protocol up there, so a build (or a test) chooses its codecs in one list.
type CodecFactory func() Codec

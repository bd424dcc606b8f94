// Package dubbo is the Dubbo 2.x codec (magic DA BB, hessian2 bodies) for the xprotocol
// stream engine. It is pure: no I/O, no goroutines, no clocks.
//
// Decode reads the 16-byte header and, for requests, the leading hessian2 strings of the
// body (framework version, service path, service version, method) with an allocation-free
// reader; Frame.Service, Frame.Method and the "service", "method" and "version" headers
// alias Frame.Raw. Group and the timeout live in the attachments, after the arguments, and
// cost a real decode: DecodeAttachments (lazy, the default) or Options.EagerAttachments
// adds them. Arguments are skipped by a bounded structural walker; the attachments map is
// decoded by github.com/apache/dubbo-go-hessian2, the codec Dubbo and dubbo-go use, under
// recover. A body that cannot be read never fails Decode or the connection: the frame is
// marked and FrameError reports it, so the engine fails just that request (CauseCodecError).
//
// Flag handling (robustness row 23): the status byte of a request is ignored (Dubbo does the
// same); a response with the two-way bit set is a response; an event request whose body is
// the hessian2 string "R" is Dubbo's readonly event (KindGoAway); any other event request is
// a heartbeat, answered only when its two-way bit is set; an event response is a heartbeat
// reply. Only a wrong magic or an oversized body is a connection error.
package dubbo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
)

// Name is the protocol's name in the config.
const Name = "dubbo"

// Wire constants.
const (
	HeaderLen       = 16      // fixed header
	DefaultMaxBody  = 8 << 20 // Dubbo's own default payload limit (body bytes)
	DefaultMaxDepth = 64      // hessian2 nesting the attachment extraction accepts

	magicHigh = 0xda
	magicLow  = 0xbb

	flagRequest   = 0x80
	flagTwoWay    = 0x40
	flagEvent     = 0x20
	serialMask    = 0x1f
	serialHessian = 2
)

// Response statuses (byte 3 of a response header).
const (
	StatusOK                  = 20
	StatusClientTimeout       = 30
	StatusServerTimeout       = 31
	StatusChannelInactive     = 35 // Dubbo's own status for requests pending on a closed channel
	StatusBadRequest          = 40
	StatusBadResponse         = 50
	StatusServiceNotFound     = 60
	StatusServiceError        = 70
	StatusServerError         = 80
	StatusClientError         = 90
	StatusThreadpoolExhausted = 100
)

// Errors.
var (
	// ErrBadMagic is a connection error: the bytes are not Dubbo.
	ErrBadMagic = errors.New("dubbo: bad magic")
	// ErrBody marks a frame whose body cannot be read; it fails the request, not the
	// connection. FrameError and DecodeAttachments return errors wrapping it.
	ErrBody = errors.New("dubbo: unreadable body")
	// ErrDecoderPanic is wrapped (with ErrBody) when dubbo-go-hessian2 panicked on a body
	// (the panic was recovered); the engine may count it.
	ErrDecoderPanic = errors.New("dubbo: hessian2 decoder panicked")
)

// Options configures a Codec. Zero values take the defaults.
type Options struct {
	// MaxFrameSize is the largest body accepted (bytes after the 16-byte header); default
	// DefaultMaxBody. A header declaring more is rejected with xprotocol.ErrFrameTooLarge.
	MaxFrameSize int
	// MaxDepth bounds hessian2 nesting in the arguments and attachments when the
	// attachments are extracted (deeper bodies fail the request); default DefaultMaxDepth.
	MaxDepth int
	// EagerAttachments makes Decode extract the attachments of every hessian2 request
	// (group, timeout, ...), which allocates; by default the engine calls DecodeAttachments
	// when it needs them.
	EagerAttachments bool
}

// Codec implements xprotocol.Codec for Dubbo 2.x. The zero Codec uses the defaults. It is
// safe for concurrent use.
type Codec struct {
	maxBody  int
	maxDepth int
	eager    bool
}

var _ xprotocol.Codec = (*Codec)(nil)

// New returns a codec.
func New(o Options) *Codec {
	c := &Codec{maxBody: o.MaxFrameSize, maxDepth: o.MaxDepth, eager: o.EagerAttachments}
	if c.maxBody > math.MaxUint32-HeaderLen { // offsets in Frame.Proto are uint32
		c.maxBody = math.MaxUint32 - HeaderLen
	}
	return c
}

func (c *Codec) bodyLimit() int {
	if c.maxBody <= 0 {
		return DefaultMaxBody
	}
	return c.maxBody
}

func (c *Codec) depthLimit() int {
	if c.maxDepth <= 0 {
		return DefaultMaxDepth
	}
	return c.maxDepth
}

// Name returns "dubbo".
func (c *Codec) Name() string { return Name }

// MaxFrameSize is the largest whole frame Decode accepts: header plus body limit.
func (c *Codec) MaxFrameSize() int { return HeaderLen + c.bodyLimit() }

// Match sniffs the magic DA BB.
func (c *Codec) Match(peek []byte) error {
	if len(peek) == 0 {
		return xprotocol.ErrNeedMore
	}
	if peek[0] != magicHigh {
		return xprotocol.ErrNoMatch
	}
	if len(peek) == 1 {
		return xprotocol.ErrNeedMore
	}
	if peek[1] != magicLow {
		return xprotocol.ErrNoMatch
	}
	return nil
}

// Frame.Proto layout.
const (
	protoFlags  = 0 // bit set below
	protoDesc   = 1 // offset in Raw of the parameter descriptor (requests)
	protoResult = 2 // response result flag + 1 (0: not read)
	protoReason = 3 // why the body is unreadable (reason*)
)

const (
	pfBadBody     = 1 << iota // body unreadable: FrameError reports protoReason
	pfAttachments             // attachments extracted (headers appended)
	pfOnewayEvent             // event request without the two-way bit: no reply
)

// Reasons a body is unreadable (Proto[protoReason]).
const (
	reasonNone = iota
	reasonSerialization
	reasonStrings
	reasonArguments
	reasonAttachments
	reasonPanic
)

var reasonErrs = [...]error{
	reasonNone:          nil,
	reasonSerialization: fmt.Errorf("%w: serialization is not hessian2", ErrBody),
	reasonStrings:       fmt.Errorf("%w: bad leading strings", ErrBody),
	reasonArguments:     fmt.Errorf("%w: bad parameter descriptor or arguments", ErrBody),
	reasonAttachments:   fmt.Errorf("%w: bad attachments", ErrBody),
	reasonPanic:         fmt.Errorf("%w: %w", ErrBody, ErrDecoderPanic),
}

func markBad(f *xprotocol.Frame, reason uint32) {
	f.Proto[protoFlags] |= pfBadBody
	f.Proto[protoReason] = reason
}

// FrameError reports whether Decode (or DecodeAttachments) found f's body unreadable; the
// error wraps ErrBody (and ErrDecoderPanic for a recovered decoder panic). The engine
// answers such a request with CauseCodecError instead of routing it.
func (c *Codec) FrameError(f *xprotocol.Frame) error {
	if f.Proto[protoFlags]&pfBadBody == 0 {
		return nil
	}
	if r := f.Proto[protoReason]; r < uint32(len(reasonErrs)) && r != reasonNone {
		return reasonErrs[r]
	}
	return ErrBody
}

// Header keys (shared, never written).
var (
	keyService = []byte("service")
	keyMethod  = []byte("method")
	keyVersion = []byte("version")
)

// Decode parses one frame from the front of b into f (see the package comment).
func (c *Codec) Decode(b []byte, f *xprotocol.Frame) (int, error) {
	if len(b) > 0 && b[0] != magicHigh || len(b) > 1 && b[1] != magicLow {
		return 0, ErrBadMagic
	}
	if len(b) < HeaderLen {
		return 0, nil
	}
	bodyLen := binary.BigEndian.Uint32(b[12:16])
	if uint64(bodyLen) > uint64(c.bodyLimit()) {
		return 0, fmt.Errorf("dubbo: body of %d bytes, limit %d: %w", bodyLen, c.bodyLimit(), xprotocol.ErrFrameTooLarge)
	}
	n := HeaderLen + int(bodyLen)
	if len(b) < n {
		return 0, nil
	}
	raw := b[:n:n]
	flag := raw[2]
	hessian2 := flag&serialMask == serialHessian
	f.Raw = raw
	f.ID = binary.BigEndian.Uint64(raw[4:12])
	f.Version = 2
	switch {
	case flag&flagRequest != 0 && flag&flagEvent != 0:
		if hessian2 && n >= HeaderLen+2 && raw[16] == 0x01 && raw[17] == 'R' {
			f.Kind = xprotocol.KindGoAway // readonly event: stop sending new requests here
			break
		}
		f.Kind = xprotocol.KindHeartbeat
		if flag&flagTwoWay == 0 {
			f.Proto[protoFlags] |= pfOnewayEvent
		}
	case flag&flagRequest != 0:
		f.Kind = xprotocol.KindRequest
		if flag&flagTwoWay == 0 {
			f.Kind = xprotocol.KindOneway
		}
		if !hessian2 {
			markBad(f, reasonSerialization)
			break
		}
		c.decodeRequestStrings(f)
		if c.eager && f.Proto[protoFlags]&pfBadBody == 0 {
			_ = c.DecodeAttachments(f) // a failure is recorded in f for FrameError
		}
	case flag&flagEvent != 0:
		f.Kind = xprotocol.KindHeartbeatReply
		f.Status = uint16(raw[3])
	default:
		f.Kind = xprotocol.KindResponse
		f.Status = uint16(raw[3])
		if hessian2 && raw[3] == StatusOK {
			if v, _, err := intAt(raw, HeaderLen); err == nil && v >= 0 && v <= 5 && raw[HeaderLen] != tagNull {
				f.Proto[protoResult] = uint32(v) + 1
			}
		}
	}
	return n, nil
}

// decodeRequestStrings reads framework version, service path, service version and method.
func (c *Codec) decodeRequestStrings(f *xprotocol.Frame) {
	raw := f.Raw
	_, i, _, err := readString(raw, HeaderLen) // framework version
	if err != nil {
		markBad(f, reasonStrings)
		return
	}
	svc, i, _, err := readString(raw, i)
	if err != nil {
		markBad(f, reasonStrings)
		return
	}
	ver, i, _, err := readString(raw, i)
	if err != nil {
		markBad(f, reasonStrings)
		return
	}
	method, i, _, err := readString(raw, i)
	if err != nil {
		markBad(f, reasonStrings)
		return
	}
	f.Service, f.Method = svc, method
	f.Headers = append(f.Headers,
		xprotocol.Header{Key: keyService, Value: svc},
		xprotocol.Header{Key: keyMethod, Value: method},
		xprotocol.Header{Key: keyVersion, Value: ver},
	)
	f.Proto[protoDesc] = uint32(i)
}

// SetID rewrites the request id (bytes 4..11) in place.
func (c *Codec) SetID(f *xprotocol.Frame, id uint64) {
	if len(f.Raw) >= HeaderLen {
		binary.BigEndian.PutUint64(f.Raw[4:12], id)
	}
	f.ID = id
}

// Encode writes f.Raw for a decoded frame; otherwise it builds the frame from f's fields
// (see encodeBuilt).
func (c *Codec) Encode(dst *buffer.IoBuffer, f *xprotocol.Frame) error {
	if f.Raw != nil {
		_, err := dst.Write(f.Raw)
		return err
	}
	return c.encodeBuilt(dst, f)
}

// ResultFlag is the first value of an OK response body.
type ResultFlag uint8

// Result flags (Dubbo's RESPONSE_* constants).
const (
	ResultException ResultFlag = iota
	ResultValue
	ResultNull
	ResultExceptionWithAttachments
	ResultValueWithAttachments
	ResultNullWithAttachments
)

// Result returns the result flag of a decoded OK hessian2 response.
func Result(f *xprotocol.Frame) (ResultFlag, bool) {
	if f.Kind != xprotocol.KindResponse || f.Proto[protoResult] == 0 {
		return 0, false
	}
	return ResultFlag(f.Proto[protoResult] - 1), true
}

// HTTPStatus maps a response status to an HTTP-class code. An OK response carrying a
// business exception (result flag 0 or 3) is 200: the service answered. Frames other than
// responses and heartbeat replies return 0.
func (c *Codec) HTTPStatus(f *xprotocol.Frame) int {
	if f.Kind != xprotocol.KindResponse && f.Kind != xprotocol.KindHeartbeatReply {
		return 0
	}
	switch f.Status {
	case StatusOK:
		return 200
	case StatusClientTimeout, StatusServerTimeout:
		return 504
	case StatusChannelInactive:
		return 502
	case StatusBadRequest, StatusClientError:
		return 400
	case StatusServiceNotFound:
		return 404
	case StatusThreadpoolExhausted:
		return 503
	case StatusBadResponse:
		return 502
	default: // 70 service error, 80 server error, unknown
		return 500
	}
}

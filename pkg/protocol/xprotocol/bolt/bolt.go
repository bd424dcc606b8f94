// Package bolt is the SOFA bolt codec (bolt v1, protocol byte 0x01, and bolt v2, protocol
// byte 0x02) for the xprotocol stream engine. It is pure: no I/O, no goroutines, no clocks.
//
// # Versions
//
// New returns the "bolt" codec and NewV2 the "boltv2" codec. Both decode both versions,
// choosing per frame by the protocol byte, so one connection may carry v1 and v2 frames
// mixed. The two differ only in their name, in what Match accepts (0x01 or 0x02) and in the
// version of the frames they originate themselves (Heartbeat, GoAway, Encode of a built
// frame without a Version). Replies to a decoded frame (HeartbeatReply, Hijack) always use
// the version of that frame, and for v2 its ver1, switch, codec and command version bytes.
//
// # Decoding decisions
//
//   - Frame length = fixed header (v1: 22 request / 20 response; v2: 24 / 22) + classLen +
//     headerLen + contentLen, plus 4 for the CRC32 trailer of a v2 frame whose ver1 is 2 and
//     whose switch has the CRC bit (0x01) set. The trailer is the IEEE CRC32 of every byte
//     of the frame before it; a mismatch is an error (MOSN ignores the trailer and
//     mis-frames the stream).
//   - The length limit (Options.MaxFrameSize) is checked as soon as the fixed header is
//     buffered, before the body arrives: ErrFrameTooLarge.
//   - Accepted (type, cmdcode) pairs: (1, 1) request, (2, 1) one-way, (0, 2) response,
//     (1, 0) heartbeat, (0, 0) heartbeat reply, (1, 100) go-away. Any other type or
//     cmdcode, or another combination, is an error; so is a v2 ver1 other than 1 or 2.
//   - Heartbeats, heartbeat replies and go-aways carry nothing: a non-zero classLen,
//     headerLen or contentLen on them is an error (ErrControlBody), not silently skipped.
//   - The codec byte (serializer) and the command version (ver2) are opaque and not checked.
//   - Header map: [u32 keyLen][key][u32 valueLen][value] until headerLen is used up;
//     0xFFFFFFFF is a null. Pairs whose key or value is null are dropped. A length that
//     overruns headerLen, or a length field cut by the end of the map, is an error.
//     Headers alias Frame.Raw (capacity-capped) and are appended to the Frame's reused
//     Headers array: no allocation in steady state.
//   - Service is the first "service" header, else the first "sofa_head_target_service";
//     Method is the first "sofa_head_method_name".
//   - Timeout: the request's i32 milliseconds; -1 and any value <= 0 mean none (0); values
//     above MaxTimeout are clamped to it.
package bolt

import (
	"time"

	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
)

// Codec names as written in the config.
const (
	Name   = "bolt"
	NameV2 = "boltv2"
)

// Protocol bytes (offset 0).
const (
	ProtoV1 byte = 0x01
	ProtoV2 byte = 0x02
)

// Command types.
const (
	TypeResponse byte = 0
	TypeRequest  byte = 1
	TypeOneway   byte = 2
)

// Command codes.
const (
	CmdHeartbeat uint16 = 0
	CmdRequest   uint16 = 1
	CmdResponse  uint16 = 2
	CmdGoAway    uint16 = 100 // MOSN extension
)

// Fixed header lengths.
const (
	RequestHeaderLen    = 22
	ResponseHeaderLen   = 20
	RequestHeaderLenV2  = 24
	ResponseHeaderLenV2 = 22
	crcLen              = 4
)

// SwitchCRC is the bit of the v2 switch byte that appends a CRC32 (when ver1 is 2).
const SwitchCRC byte = 0x01

// CodecHessian2 is the serializer byte the proxy writes in frames it originates.
const CodecHessian2 byte = 1

// Response statuses.
const (
	StatusSuccess                 uint16 = 0x00
	StatusError                   uint16 = 0x01
	StatusServerException         uint16 = 0x02
	StatusUnknown                 uint16 = 0x03
	StatusServerThreadpoolBusy    uint16 = 0x04
	StatusErrorComm               uint16 = 0x05
	StatusNoProcessor             uint16 = 0x06
	StatusTimeout                 uint16 = 0x07
	StatusClientSendError         uint16 = 0x08
	StatusCodecException          uint16 = 0x09
	StatusConnectionClosed        uint16 = 0x10
	StatusServerSerialException   uint16 = 0x11
	StatusServerDeserialException uint16 = 0x12
)

// Header keys the codec reads.
const (
	HeaderService       = "service"
	HeaderTargetService = "sofa_head_target_service"
	HeaderMethod        = "sofa_head_method_name"
)

// DefaultMaxFrameSize is the frame limit when Options.MaxFrameSize is not set.
const DefaultMaxFrameSize = 16 << 20

// MaxTimeout caps a request's own timeout (an i32 of milliseconds allows 24 days, which
// would pin per-request state; the route timeout normally applies well before).
const MaxTimeout = time.Hour

// Options configures a Codec.
type Options struct {
	// MaxFrameSize is the largest frame (fixed header, payload and CRC) Decode accepts
	// and the encoders produce; <= 0 means DefaultMaxFrameSize.
	MaxFrameSize int
}

// Codec is bolt v1 or v2. It is stateless and safe for concurrent use.
type Codec struct {
	name    string
	version byte // 1 or 2: frames this codec originates
	max     int
}

var _ xprotocol.Codec = (*Codec)(nil)

// New returns the bolt v1 codec ("bolt"). It decodes v2 frames too.
func New(o Options) *Codec { return newCodec(Name, 1, o) }

// NewV2 returns the bolt v2 codec ("boltv2"). It decodes v1 frames too; the frames it
// originates are v2 with ver1 1 and switch 0 (no CRC).
func NewV2(o Options) *Codec { return newCodec(NameV2, 2, o) }

func newCodec(name string, v byte, o Options) *Codec {
	m := o.MaxFrameSize
	if m <= 0 {
		m = DefaultMaxFrameSize
	}
	return &Codec{name: name, version: v, max: m}
}

// Name returns "bolt" or "boltv2".
func (c *Codec) Name() string { return c.name }

// MaxFrameSize returns the frame limit.
func (c *Codec) MaxFrameSize() int { return c.max }

// Version returns 1 or 2: the version of the frames this codec originates.
func (c *Codec) Version() byte { return c.version }

// Match sniffs the first bytes of a connection. The bolt codec matches protocol byte 0x01
// and boltv2 0x02 (so Auto tells them apart), followed by a known type byte (v2: a ver1 of
// 1 or 2 first). When the command code is already in peek it must fit the type.
func (c *Codec) Match(peek []byte) error {
	if len(peek) == 0 {
		return xprotocol.ErrNeedMore
	}
	want := ProtoV1
	if c.version == 2 {
		want = ProtoV2
	}
	if peek[0] != want {
		return xprotocol.ErrNoMatch
	}
	off := 1 // offset of the type byte
	if want == ProtoV2 {
		if len(peek) < 2 {
			return xprotocol.ErrNeedMore
		}
		if peek[1] != 1 && peek[1] != 2 {
			return xprotocol.ErrNoMatch
		}
		off = 2
	}
	if len(peek) <= off {
		return xprotocol.ErrNeedMore
	}
	typ := peek[off]
	if typ > TypeOneway {
		return xprotocol.ErrNoMatch
	}
	if len(peek) >= off+3 {
		if _, err := kindOf(typ, uint16(peek[off+1])<<8|uint16(peek[off+2])); err != nil {
			return xprotocol.ErrNoMatch
		}
	}
	return nil
}

// HTTPStatus maps f.Status (bolt response status) to an HTTP-class code: 200 success,
// 503 thread pool busy, 504 timeout, 502 connection closed, 500 for every other status.
// It reads Status whatever the Kind (requests carry 0, so 200).
func (c *Codec) HTTPStatus(f *xprotocol.Frame) int {
	switch f.Status {
	case StatusSuccess:
		return 200
	case StatusServerThreadpoolBusy:
		return 503
	case StatusTimeout:
		return 504
	case StatusConnectionClosed:
		return 502
	default:
		return 500
	}
}

// StatusOf returns the bolt status the proxy answers with for cause (PROTOCOLS.md);
// StatusUnknown for a cause it does not know.
func StatusOf(cause xprotocol.Cause) uint16 {
	switch cause {
	case xprotocol.CauseNoRoute, xprotocol.CauseNoHealthyUpstream:
		return StatusNoProcessor
	case xprotocol.CauseOverflow:
		return StatusServerThreadpoolBusy
	case xprotocol.CauseTimeout, xprotocol.CauseUpstreamTimeout:
		return StatusTimeout
	case xprotocol.CauseCodecError:
		return StatusCodecException
	case xprotocol.CauseForbidden:
		return StatusServerException
	case xprotocol.CauseConnectionClosed:
		return StatusConnectionClosed
	default:
		return StatusUnknown
	}
}

package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"time"

	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
)

// Decode errors. Each is returned wrapped with the offending value; test with errors.Is.
// After any of them (and xprotocol.ErrFrameTooLarge) the connection must be closed.
var (
	ErrProtocol    = errors.New("bolt: unknown protocol byte")
	ErrVersion     = errors.New("bolt: unknown bolt v2 protocol version (ver1)")
	ErrType        = errors.New("bolt: unknown command type")
	ErrCmdCode     = errors.New("bolt: unknown command code for this type")
	ErrControlBody = errors.New("bolt: heartbeat or go-away with a body")
	ErrHeaderMap   = errors.New("bolt: malformed header map")
	ErrCRC         = errors.New("bolt: CRC32 mismatch")
)

// Frame.Proto layout (codec-private):
//
//	Proto[0]: cmdcode | type<<16 | flags<<24
//	Proto[1]: codec | ver2<<8 | ver1<<16 | switch<<24   (ver1 and switch 0 for v1)
//	Proto[2]: classLen | headerLen<<16
//	Proto[3]: contentLen
const flagCRC = 0x01

// fixed is a parsed fixed header.
type fixed struct {
	version    byte // 1 or 2
	ver1, sw   byte // v2 only
	typ        byte
	cmd        uint16
	ver2       byte
	id         uint32
	codec      byte
	timeout    int32 // requests
	status     uint16
	classLen   int
	headerLen  int
	contentLen uint32
	hdr        int // fixed header length
	crc        bool
	kind       xprotocol.Kind
}

// kindOf maps a (type, cmdcode) pair to a Kind; anything else is an error.
func kindOf(typ byte, cmd uint16) (xprotocol.Kind, error) {
	switch typ {
	case TypeRequest:
		switch cmd {
		case CmdRequest:
			return xprotocol.KindRequest, nil
		case CmdHeartbeat:
			return xprotocol.KindHeartbeat, nil
		case CmdGoAway:
			return xprotocol.KindGoAway, nil
		}
	case TypeOneway:
		if cmd == CmdRequest {
			return xprotocol.KindOneway, nil
		}
	case TypeResponse:
		switch cmd {
		case CmdResponse:
			return xprotocol.KindResponse, nil
		case CmdHeartbeat:
			return xprotocol.KindHeartbeatReply, nil
		}
	default:
		return 0, fmt.Errorf("%w %d", ErrType, typ)
	}
	return 0, fmt.Errorf("%w: cmdcode %d with type %d", ErrCmdCode, cmd, typ)
}

// parseFixed reads the fixed header at the front of b. ok is false when b is too short
// to hold it (but what is there is valid so far).
func parseFixed(b []byte) (h fixed, ok bool, err error) {
	if len(b) == 0 {
		return h, false, nil
	}
	var t int // offset of the type byte
	switch b[0] {
	case ProtoV1:
		h.version, t = 1, 1
	case ProtoV2:
		h.version, t = 2, 2
		if len(b) < 2 {
			return h, false, nil
		}
		h.ver1 = b[1]
		if h.ver1 != 1 && h.ver1 != 2 {
			return h, false, fmt.Errorf("%w %d", ErrVersion, h.ver1)
		}
	default:
		return h, false, fmt.Errorf("%w 0x%02x", ErrProtocol, b[0])
	}
	if len(b) <= t {
		return h, false, nil
	}
	h.typ = b[t]
	if h.typ > TypeOneway {
		return h, false, fmt.Errorf("%w %d", ErrType, h.typ)
	}
	req := h.typ != TypeResponse
	switch {
	case h.version == 1 && req:
		h.hdr = RequestHeaderLen
	case h.version == 1:
		h.hdr = ResponseHeaderLen
	case req:
		h.hdr = RequestHeaderLenV2
	default:
		h.hdr = ResponseHeaderLenV2
	}
	if len(b) < h.hdr {
		return h, false, nil
	}
	be := binary.BigEndian
	p := b[t+1 : h.hdr] // cmdcode onwards
	h.cmd = be.Uint16(p)
	h.ver2 = p[2]
	h.id = be.Uint32(p[3:])
	h.codec = p[7]
	p = p[8:]
	if h.version == 2 {
		h.sw = p[0]
		p = p[1:]
		h.crc = h.ver1 == 2 && h.sw&SwitchCRC != 0
	}
	if req {
		h.timeout = int32(be.Uint32(p))
		p = p[4:]
	} else {
		h.status = be.Uint16(p)
		p = p[2:]
	}
	h.classLen = int(be.Uint16(p))
	h.headerLen = int(be.Uint16(p[2:]))
	h.contentLen = be.Uint32(p[4:])
	if h.kind, err = kindOf(h.typ, h.cmd); err != nil {
		return h, false, err
	}
	if h.cmd == CmdHeartbeat || h.cmd == CmdGoAway {
		if h.classLen != 0 || h.headerLen != 0 || h.contentLen != 0 {
			return h, false, fmt.Errorf("%w (cmdcode %d: class %d, header %d, content %d bytes)",
				ErrControlBody, h.cmd, h.classLen, h.headerLen, h.contentLen)
		}
	}
	return h, true, nil
}

// total is the frame length the header declares, in uint64 so no platform overflows.
func (h *fixed) total() uint64 {
	n := uint64(h.hdr) + uint64(h.classLen) + uint64(h.headerLen) + uint64(h.contentLen)
	if h.crc {
		n += crcLen
	}
	return n
}

// Decode parses one bolt v1 or v2 frame from the front of b into f (see the package
// documentation for the rules). It returns (0, nil) while b holds less than the fixed
// header or the declared length.
func (c *Codec) Decode(b []byte, f *xprotocol.Frame) (int, error) {
	h, ok, err := parseFixed(b)
	if err != nil || !ok {
		return 0, err
	}
	total := h.total()
	if total > uint64(c.max) {
		return 0, fmt.Errorf("%w: bolt frame of %d bytes, limit %d", xprotocol.ErrFrameTooLarge, total, c.max)
	}
	n := int(total)
	if len(b) < n {
		return 0, nil
	}
	raw := b[:n:n]
	if h.crc {
		want := binary.BigEndian.Uint32(raw[n-crcLen:])
		if got := crc32.ChecksumIEEE(raw[:n-crcLen]); got != want {
			return 0, fmt.Errorf("%w: frame says %08x, computed %08x", ErrCRC, want, got)
		}
	}
	hs := f.Headers[:0]
	*f = xprotocol.Frame{
		Kind:    h.kind,
		ID:      uint64(h.id),
		Raw:     raw,
		Version: h.version,
		Status:  h.status,
		Timeout: timeoutOf(h.timeout),
	}
	var flags uint32
	if h.crc {
		flags |= flagCRC
	}
	f.Proto = [4]uint32{
		uint32(h.cmd) | uint32(h.typ)<<16 | flags<<24,
		uint32(h.codec) | uint32(h.ver2)<<8 | uint32(h.ver1)<<16 | uint32(h.sw)<<24,
		uint32(h.classLen) | uint32(h.headerLen)<<16,
		h.contentLen,
	}
	if h.headerLen > 0 {
		off := h.hdr + h.classLen
		if err := parseHeaders(raw[off:off+h.headerLen], hs, f); err != nil {
			f.Headers = hs
			return 0, err
		}
	} else {
		f.Headers = hs
	}
	return n, nil
}

// timeoutOf converts the wire timeout (ms) to a Duration: <= 0 is none, capped at MaxTimeout.
func timeoutOf(ms int32) time.Duration {
	if ms <= 0 {
		return 0
	}
	return min(time.Duration(ms)*time.Millisecond, MaxTimeout)
}

// lenField reads one [u32 len][bytes] field. null reports 0xFFFFFFFF; ok is false when
// the length field or the bytes overrun p.
func lenField(p []byte) (v, rest []byte, null, ok bool) {
	if len(p) < 4 {
		return nil, nil, false, false
	}
	n := binary.BigEndian.Uint32(p)
	p = p[4:]
	if n == math.MaxUint32 {
		return nil, p, true, true
	}
	if uint64(n) > uint64(len(p)) {
		return nil, nil, false, false
	}
	return p[:n:n], p[n:], false, true
}

// parseHeaders parses the header map p, appending to hs and setting f.Headers, f.Service
// and f.Method.
func parseHeaders(p []byte, hs []xprotocol.Header, f *xprotocol.Frame) error {
	size := len(p)
	var target []byte
	for len(p) > 0 {
		at := size - len(p)
		k, rest, knull, ok := lenField(p)
		if !ok {
			return fmt.Errorf("%w: key at offset %d overruns headerLen %d", ErrHeaderMap, at, size)
		}
		at = size - len(rest)
		v, rest, vnull, ok := lenField(rest)
		if !ok {
			return fmt.Errorf("%w: value at offset %d overruns headerLen %d", ErrHeaderMap, at, size)
		}
		p = rest
		if knull || vnull {
			continue
		}
		hs = append(hs, xprotocol.Header{Key: k, Value: v})
		switch string(k) {
		case HeaderService:
			if f.Service == nil {
				f.Service = v
			}
		case HeaderTargetService:
			if target == nil {
				target = v
			}
		case HeaderMethod:
			if f.Method == nil {
				f.Method = v
			}
		}
	}
	if f.Service == nil {
		f.Service = target
	}
	f.Headers = hs
	return nil
}

// SetID rewrites the request id in f.Raw in place (bytes 5..8 for v1, 6..9 for v2) and
// f.ID; bolt ids are u32, so id is truncated to 32 bits. A v2 frame with a CRC32 trailer
// gets its CRC recomputed. A built frame (Raw nil) only has f.ID set.
func (c *Codec) SetID(f *xprotocol.Frame, id uint64) {
	f.ID = uint64(uint32(id))
	off := 5
	if f.Version == 2 {
		off = 6
	}
	if len(f.Raw) < off+4 {
		return
	}
	binary.BigEndian.PutUint32(f.Raw[off:], uint32(id))
	if f.Proto[0]>>24&flagCRC != 0 && len(f.Raw) >= off+4+crcLen {
		n := len(f.Raw) - crcLen
		binary.BigEndian.PutUint32(f.Raw[n:], crc32.ChecksumIEEE(f.Raw[:n]))
	}
}

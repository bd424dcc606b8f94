package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
)

// ErrFieldTooLong is returned by the encoders for a class name or header map over 65535
// bytes or content over 4 GiB - 1 (the widths of the length fields).
var ErrFieldTooLong = errors.New("bolt: field too long for its length field")

// Message is a bolt frame spelled out field by field: the builder behind Encode of built
// frames, and the full view of a decoded frame (MessageOf). Every wire field is here, so a
// Message re-encodes byte-identical to the frame it came from (unless that frame's header
// map held null-valued pairs, which decoding drops).
type Message struct {
	Kind    xprotocol.Kind // sets type and cmdcode
	Version byte           // 1 or 2; 0 means the codec's own version
	Ver1    byte           // v2 protocol version, 1 or 2 (0 means 1); ignored for v1
	Switch  byte           // v2 switch byte; with Ver1 2, SwitchCRC appends a CRC32; ignored for v1
	Ver2    byte           // command version (the proxy writes 1)
	ID      uint32
	Codec   byte   // serializer (CodecHessian2)
	Timeout int32  // requests, heartbeats, go-aways: milliseconds, -1 none
	Status  uint16 // responses and heartbeat replies
	Class   []byte
	Headers []xprotocol.Header // encoded in order; nil Key or Value are written as empty, not null
	Content []byte
}

// wireKind maps a Kind to its (type, cmdcode).
func wireKind(k xprotocol.Kind) (byte, uint16, error) {
	switch k {
	case xprotocol.KindRequest:
		return TypeRequest, CmdRequest, nil
	case xprotocol.KindOneway:
		return TypeOneway, CmdRequest, nil
	case xprotocol.KindResponse:
		return TypeResponse, CmdResponse, nil
	case xprotocol.KindHeartbeat:
		return TypeRequest, CmdHeartbeat, nil
	case xprotocol.KindHeartbeatReply:
		return TypeResponse, CmdHeartbeat, nil
	case xprotocol.KindGoAway:
		return TypeRequest, CmdGoAway, nil
	}
	return 0, 0, fmt.Errorf("bolt: cannot encode frame kind %d", k)
}

// MessageOf returns the Message view of f. For a decoded frame every slice aliases f.Raw
// (Headers is f.Headers, without the null pairs decoding dropped). For a built frame
// (Raw nil) it returns what Encode would write.
func MessageOf(f *xprotocol.Frame) Message {
	m := Message{
		Kind:    f.Kind,
		Version: f.Version,
		ID:      uint32(f.ID),
		Status:  f.Status,
		Headers: f.Headers,
	}
	if f.Raw == nil {
		m.Ver1, m.Switch, m.Ver2, m.Codec = 1, 0, 1, CodecHessian2
		if f.Proto[1] != 0 {
			m.Codec, m.Ver2, m.Ver1, m.Switch = unpack(f.Proto[1])
		}
		m.Timeout = timeoutMillis(f.Timeout)
		return m
	}
	m.Codec, m.Ver2, m.Ver1, m.Switch = unpack(f.Proto[1])
	typ := byte(f.Proto[0] >> 16)
	hdr := ResponseHeaderLen
	if typ != TypeResponse {
		hdr = RequestHeaderLen
	}
	if f.Version == 2 {
		hdr += 2
	}
	if typ != TypeResponse && len(f.Raw) >= hdr {
		m.Timeout = int32(binary.BigEndian.Uint32(f.Raw[hdr-12:]))
	}
	classLen := int(f.Proto[2] & 0xffff)
	headerLen := int(f.Proto[2] >> 16)
	contentLen := int(f.Proto[3])
	if hdr+classLen+headerLen+contentLen <= len(f.Raw) {
		m.Class = f.Raw[hdr : hdr+classLen : hdr+classLen]
		off := hdr + classLen + headerLen
		m.Content = f.Raw[off : off+contentLen : off+contentLen]
	}
	return m
}

func unpack(p uint32) (codec, ver2, ver1, sw byte) {
	return byte(p), byte(p >> 8), byte(p >> 16), byte(p >> 24)
}

// timeoutMillis converts a Duration to the wire value: 0 (none) is -1; a positive value
// under a millisecond rounds up to 1; values over the i32 range are capped.
func timeoutMillis(d time.Duration) int32 {
	if d <= 0 {
		return -1
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return int32(min(ms, math.MaxInt32))
}

// EncodeMessage appends m to dst. It refuses what Decode would refuse: a heartbeat or
// go-away with a class, headers or content, fields longer than their length field, and a
// frame over MaxFrameSize.
func (c *Codec) EncodeMessage(dst *buffer.IoBuffer, m *Message) error {
	typ, cmd, err := wireKind(m.Kind)
	if err != nil {
		return err
	}
	ver := m.Version
	if ver == 0 {
		ver = c.version
	}
	if ver != 1 && ver != 2 {
		return fmt.Errorf("bolt: cannot encode version %d", ver)
	}
	if (cmd == CmdHeartbeat || cmd == CmdGoAway) && (len(m.Class) > 0 || len(m.Headers) > 0 || len(m.Content) > 0) {
		return ErrControlBody
	}
	headerLen := 0
	for i := range m.Headers {
		headerLen += 8 + len(m.Headers[i].Key) + len(m.Headers[i].Value)
		if headerLen > math.MaxUint16 {
			break
		}
	}
	if len(m.Class) > math.MaxUint16 || headerLen > math.MaxUint16 || uint64(len(m.Content)) > math.MaxUint32 {
		return fmt.Errorf("%w (class %d, header map %d, content %d bytes)", ErrFieldTooLong,
			len(m.Class), headerLen, len(m.Content))
	}
	req := typ != TypeResponse
	var hdr int
	switch {
	case ver == 1 && req:
		hdr = RequestHeaderLen
	case ver == 1:
		hdr = ResponseHeaderLen
	case req:
		hdr = RequestHeaderLenV2
	default:
		hdr = ResponseHeaderLenV2
	}
	ver1 := m.Ver1
	if ver1 == 0 {
		ver1 = 1
	}
	if ver == 2 && ver1 != 1 && ver1 != 2 {
		return fmt.Errorf("%w %d", ErrVersion, ver1)
	}
	crc := ver == 2 && ver1 == 2 && m.Switch&SwitchCRC != 0
	total := uint64(hdr) + uint64(len(m.Class)) + uint64(headerLen) + uint64(len(m.Content))
	if crc {
		total += crcLen
	}
	if total > uint64(c.max) {
		return fmt.Errorf("%w: bolt frame of %d bytes, limit %d", xprotocol.ErrFrameTooLarge, total, c.max)
	}
	p := dst.Alloc(int(total))
	be := binary.BigEndian
	i := 0
	if ver == 1 {
		p[0], p[1] = ProtoV1, typ
		i = 2
	} else {
		p[0], p[1], p[2] = ProtoV2, ver1, typ
		i = 3
	}
	be.PutUint16(p[i:], cmd)
	p[i+2] = m.Ver2
	be.PutUint32(p[i+3:], m.ID)
	p[i+7] = m.Codec
	i += 8
	if ver == 2 {
		p[i] = m.Switch
		i++
	}
	if req {
		be.PutUint32(p[i:], uint32(m.Timeout))
		i += 4
	} else {
		be.PutUint16(p[i:], m.Status)
		i += 2
	}
	be.PutUint16(p[i:], uint16(len(m.Class)))
	be.PutUint16(p[i+2:], uint16(headerLen))
	be.PutUint32(p[i+4:], uint32(len(m.Content)))
	i += 8
	i += copy(p[i:], m.Class)
	for _, h := range m.Headers {
		be.PutUint32(p[i:], uint32(len(h.Key)))
		i += 4 + copy(p[i+4:], h.Key)
		be.PutUint32(p[i:], uint32(len(h.Value)))
		i += 4 + copy(p[i+4:], h.Value)
	}
	i += copy(p[i:], m.Content)
	if crc {
		be.PutUint32(p[i:], crc32.ChecksumIEEE(p[:i]))
	}
	return nil
}

// Encode writes f.Raw when f was decoded (the forwarded bytes, ids patched by SetID).
// For a built frame (Raw nil) it serializes Kind, ID, Version (0: the codec's), Timeout,
// Status and Headers, with no class or content, command version 1 and codec hessian2;
// Service and Method are not written on their own (put them in Headers). Use
// EncodeMessage to control every field.
func (c *Codec) Encode(dst *buffer.IoBuffer, f *xprotocol.Frame) error {
	if f.Raw != nil {
		_, err := dst.Write(f.Raw)
		return err
	}
	m := MessageOf(f)
	return c.EncodeMessage(dst, &m)
}

// replyTo returns the version bytes a reply to req carries: req's own for a decoded
// frame (or a copy of one that kept Version and Proto but not Raw, as the engine keeps for
// requests in flight), the codec's defaults otherwise.
func (c *Codec) replyTo(req *xprotocol.Frame) (ver, ver1, sw, ver2, codec byte) {
	ver, ver1, ver2, codec = req.Version, 1, 1, CodecHessian2
	if ver != 1 && ver != 2 {
		ver = c.version
	}
	if req.Raw != nil || req.Proto[1] != 0 {
		codec, ver2, ver1, sw = unpack(req.Proto[1])
		if ver == 1 {
			ver1, sw = 0, 0
		}
	}
	return ver, ver1, sw, ver2, codec
}

// HeartbeatReply writes the answer to the heartbeat req: for v1 exactly
// 01 00 0000 01 <id> 01 0000 0000 0000 00000000; for v2 the same fields with req's ver1 and
// switch (and a CRC32 when those ask for one).
func (c *Codec) HeartbeatReply(dst *buffer.IoBuffer, req *xprotocol.Frame) error {
	ver, ver1, sw, _, _ := c.replyTo(req)
	m := Message{Kind: xprotocol.KindHeartbeatReply, Version: ver, Ver1: ver1, Switch: sw,
		Ver2: 1, ID: uint32(req.ID), Codec: CodecHessian2}
	return c.EncodeMessage(dst, &m)
}

// Heartbeat writes a keepalive request in the codec's version; v1 is exactly
// 01 01 0000 01 <id> 01 FFFFFFFF 0000 0000 00000000.
func (c *Codec) Heartbeat(dst *buffer.IoBuffer, id uint64) error {
	m := Message{Kind: xprotocol.KindHeartbeat, Version: c.version, Ver1: 1, Ver2: 1,
		ID: uint32(id), Codec: CodecHessian2, Timeout: -1}
	return c.EncodeMessage(dst, &m)
}

// GoAway writes a go-away (type 1, cmdcode 100, no body, timeout -1) in the codec's
// version. The peer does not answer it.
func (c *Codec) GoAway(dst *buffer.IoBuffer, id uint64) error {
	m := Message{Kind: xprotocol.KindGoAway, Version: c.version, Ver1: 1, Ver2: 1,
		ID: uint32(id), Codec: CodecHessian2, Timeout: -1}
	return c.EncodeMessage(dst, &m)
}

// Hijack writes the response the proxy sends for req: cmdcode 2, status StatusOf(cause),
// req's id, version, codec and command version (v2: also ver1 and switch, CRC included),
// and no class, header map or content. msg is not sent: bolt has no text field outside
// the serialized content. A one-way request gets no response: nothing is written.
func (c *Codec) Hijack(dst *buffer.IoBuffer, req *xprotocol.Frame, cause xprotocol.Cause, msg string) error {
	if req.Kind == xprotocol.KindOneway {
		return nil
	}
	ver, ver1, sw, ver2, codec := c.replyTo(req)
	m := Message{Kind: xprotocol.KindResponse, Version: ver, Ver1: ver1, Switch: sw,
		Ver2: ver2, ID: uint32(req.ID), Codec: codec, Status: StatusOf(cause)}
	return c.EncodeMessage(dst, &m)
}

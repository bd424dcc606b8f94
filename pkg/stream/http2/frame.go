package http2

import (
	"encoding/binary"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

// Frame types (RFC 9113 §6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9
)

// Frame flags.
const (
	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20
)

// Settings identifiers (RFC 9113 §6.5.2).
const (
	settingHeaderTableSize      = 0x1
	settingEnablePush           = 0x2
	settingMaxConcurrentStreams = 0x3
	settingInitialWindowSize    = 0x4
	settingMaxFrameSize         = 0x5
	settingMaxHeaderListSize    = 0x6
)

// Protocol limits.
const (
	frameHeaderLen     = 9
	defaultWindow      = 65535
	maxWindow          = 1<<31 - 1
	minMaxFrameSize    = 1 << 14
	maxMaxFrameSize    = 1<<24 - 1
	defaultMaxFrameLen = minMaxFrameSize
)

// frameHeader is a parsed 9-byte frame header.
type frameHeader struct {
	length   uint32
	typ      uint8
	flags    uint8
	streamID uint32
}

func (h frameHeader) has(f uint8) bool { return h.flags&f != 0 }

func parseFrameHeader(b []byte) frameHeader {
	return frameHeader{
		length:   uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]),
		typ:      b[3],
		flags:    b[4],
		streamID: binary.BigEndian.Uint32(b[5:9]) & (1<<31 - 1),
	}
}

// appendFrameHeader writes a frame header to dst.
func appendFrameHeader(dst *buffer.IoBuffer, length int, typ, flags uint8, streamID uint32) {
	p := dst.Alloc(frameHeaderLen)
	p[0], p[1], p[2] = byte(length>>16), byte(length>>8), byte(length)
	p[3], p[4] = typ, flags
	binary.BigEndian.PutUint32(p[5:], streamID)
}

func appendRSTStream(dst *buffer.IoBuffer, id uint32, code uint32) {
	appendFrameHeader(dst, 4, frameRSTStream, 0, id)
	dst.WriteUint32(code)
}

func appendWindowUpdate(dst *buffer.IoBuffer, id uint32, incr uint32) {
	appendFrameHeader(dst, 4, frameWindowUpdate, 0, id)
	dst.WriteUint32(incr)
}

func appendGoAway(dst *buffer.IoBuffer, lastID uint32, code uint32, debug string) {
	appendFrameHeader(dst, 8+len(debug), frameGoAway, 0, 0)
	dst.WriteUint32(lastID)
	dst.WriteUint32(code)
	_, _ = dst.WriteString(debug)
}

// setting is one SETTINGS parameter.
type setting struct {
	id  uint16
	val uint32
}

func appendSettings(dst *buffer.IoBuffer, s []setting) {
	appendFrameHeader(dst, 6*len(s), frameSettings, 0, 0)
	for _, x := range s {
		dst.WriteUint16(x.id)
		dst.WriteUint32(x.val)
	}
}

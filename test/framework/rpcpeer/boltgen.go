package rpcpeer

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strconv"
)

// BoltVector is the 45-byte bolt v1 request of PROTOCOLS.md: id 1, codec hessian2, no
// timeout, header map {"service": "test"}, content "null".
var BoltVector = []byte{
	0x01, 0x01, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01, 0xff, 0xff, 0xff, 0xff,
	0x00, 0x00, 0x00, 0x13, 0x00, 0x00, 0x00, 0x04,
	0x00, 0x00, 0x00, 0x07, 's', 'e', 'r', 'v', 'i', 'c', 'e', 0x00, 0x00, 0x00, 0x04, 't', 'e', 's', 't',
	'n', 'u', 'l', 'l',
}

// SOFA RPC's class names.
const (
	SofaRequestClass  = "com.alipay.sofa.rpc.core.request.SofaRequest"
	SofaResponseClass = "com.alipay.sofa.rpc.core.response.SofaResponse"
)

// Bolt header keys the peers use.
const (
	BoltHeaderService = "service"
	BoltHeaderMethod  = "sofa_head_method_name"
	BoltHeaderServer  = "server"  // set by BoltServer on its echo responses
	BoltHeaderSeq     = "gen-seq" // set by the generator: the frame's index
)

// BoltHeader is one header map pair; NullKey / NullValue write the 0xFFFFFFFF null length
// instead of the bytes (Java's null).
type BoltHeader struct {
	Key, Value         []byte
	NullKey, NullValue bool
}

// BoltSpec is every wire field of one bolt frame. Bytes writes it by hand, without
// mosnlite's codec, so tests can check the codec and the proxy against it.
type BoltSpec struct {
	Version byte   // 1 or 2
	Ver1    byte   // v2 protocol version: 1 or 2
	Switch  byte   // v2 switch; with Ver1 2, bit 0x01 appends a CRC32
	Type    byte   // 0 response, 1 request, 2 one-way
	Cmd     uint16 // 0 heartbeat, 1 request, 2 response, 100 go-away
	Ver2    byte   // command version
	ID      uint32
	Codec   byte
	Timeout int32  // requests
	Status  uint16 // responses
	Class   []byte
	Headers []BoltHeader
	Content []byte
}

// IsRequest is true for requests, one-ways and heartbeats (type ≠ 0).
func (s *BoltSpec) IsRequest() bool { return s.Type != 0 }

// HasCRC reports whether the frame carries a CRC32 trailer.
func (s *BoltSpec) HasCRC() bool { return s.Version == 2 && s.Ver1 == 2 && s.Switch&0x01 != 0 }

// Bytes is the frame on the wire.
func (s *BoltSpec) Bytes() []byte {
	var hm []byte
	for _, h := range s.Headers {
		hm = appendLenField(hm, h.Key, h.NullKey)
		hm = appendLenField(hm, h.Value, h.NullValue)
	}
	b := make([]byte, 0, 32+len(s.Class)+len(hm)+len(s.Content))
	be := binary.BigEndian
	if s.Version == 2 {
		b = append(b, 0x02, s.Ver1)
	} else {
		b = append(b, 0x01)
	}
	b = append(b, s.Type)
	b = be.AppendUint16(b, s.Cmd)
	b = append(b, s.Ver2)
	b = be.AppendUint32(b, s.ID)
	b = append(b, s.Codec)
	if s.Version == 2 {
		b = append(b, s.Switch)
	}
	if s.IsRequest() {
		b = be.AppendUint32(b, uint32(s.Timeout))
	} else {
		b = be.AppendUint16(b, s.Status)
	}
	b = be.AppendUint16(b, uint16(len(s.Class)))
	b = be.AppendUint16(b, uint16(len(hm)))
	b = be.AppendUint32(b, uint32(len(s.Content)))
	b = append(b, s.Class...)
	b = append(b, hm...)
	b = append(b, s.Content...)
	if s.HasCRC() {
		b = be.AppendUint32(b, crc32.ChecksumIEEE(b))
	}
	return b
}

func appendLenField(b, v []byte, null bool) []byte {
	if null {
		return binary.BigEndian.AppendUint32(b, 0xffffffff)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// BoltIDOffset is where the request id sits in a frame: 5 for v1, 6 for v2.
func BoltIDOffset(raw []byte) int {
	if len(raw) > 0 && raw[0] == 0x02 {
		return 6
	}
	return 5
}

// BoltID reads the request id of a frame.
func BoltID(raw []byte) uint32 {
	return binary.BigEndian.Uint32(raw[BoltIDOffset(raw):])
}

// BoltHasCRC reports whether a whole frame carries a CRC32 trailer (v2, ver1 2, switch bit).
func BoltHasCRC(raw []byte) bool {
	return len(raw) >= 13 && raw[0] == 0x02 && raw[1] == 2 && raw[11]&0x01 != 0
}

// BoltCRCValid reports whether a frame's CRC32 trailer (when it has one) matches.
func BoltCRCValid(raw []byte) bool {
	if !BoltHasCRC(raw) {
		return true
	}
	n := len(raw) - 4
	return n >= 0 && binary.BigEndian.Uint32(raw[n:]) == crc32.ChecksumIEEE(raw[:n])
}

// SetBoltID writes id into a whole frame in place, recomputing the CRC32 trailer when the
// frame has one.
func SetBoltID(raw []byte, id uint32) {
	binary.BigEndian.PutUint32(raw[BoltIDOffset(raw):], id)
	if BoltHasCRC(raw) {
		n := len(raw) - 4
		binary.BigEndian.PutUint32(raw[n:], crc32.ChecksumIEEE(raw[:n]))
	}
}

// SameBoltFrame reports whether got is want except for the request id (and the CRC32 that
// covers it), and that got's CRC32 is valid. It explains the first difference.
func SameBoltFrame(want, got []byte) error {
	if len(want) != len(got) {
		return fmt.Errorf("length %d, want %d", len(got), len(want))
	}
	if !BoltCRCValid(got) {
		return fmt.Errorf("CRC32 trailer does not match the frame")
	}
	norm := append([]byte(nil), got...)
	SetBoltID(norm, BoltID(want))
	for i := range want {
		if norm[i] != want[i] {
			return fmt.Errorf("byte %d is %#02x, want %#02x (id field at %d..%d)", i, norm[i], want[i],
				BoltIDOffset(want), BoltIDOffset(want)+3)
		}
	}
	return nil
}

// BoltGen generates bolt frames covering every field: versions 1 and 2, v2 ver1 1 and 2,
// switch bytes with and without the CRC bit, requests, one-ways, responses and heartbeats,
// codec and command-version bytes, timeouts (none, zero, negative, large), class names
// (none, SOFA's, long), header maps (empty values, null values and keys, duplicate keys,
// non-UTF-8 bytes, trace keys, many pairs) and content of several sizes. It is
// deterministic for a seed.
type BoltGen struct {
	r *rand.Rand
}

// NewBoltGen returns a generator.
func NewBoltGen(seed uint64) *BoltGen {
	return &BoltGen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

var (
	genCodecs   = []byte{1, 3, 11, 0}
	genVer2s    = []byte{1, 0, 7}
	genTimeouts = []int32{-1, 0, 5000, 60000, -7, 0x7fffffff}
	genStatuses = []uint16{0x00, 0x01, 0x02, 0x04, 0x07, 0x10, 0x12}
)

func (g *BoltGen) pick(n int) int { return g.r.IntN(n) }

func (g *BoltGen) bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.r.Uint32())
	}
	return b
}

func (g *BoltGen) class(i int, request bool) []byte {
	switch i % 3 {
	case 0:
		return nil
	case 1:
		if request {
			return []byte(SofaRequestClass)
		}
		return []byte(SofaResponseClass)
	}
	c := make([]byte, 300)
	for j := range c {
		c[j] = "abcdefghijklmnopqrstuvwxyz."[g.pick(27)]
	}
	return c
}

func (g *BoltGen) content(i int) []byte {
	switch i % 5 {
	case 0:
		return nil
	case 1:
		return []byte("null")
	case 2:
		return g.bytes(1 + g.pick(64))
	case 3:
		return g.bytes(1024)
	}
	return g.bytes(70_000 + g.pick(1000))
}

// headers returns header map variant i; service, when not empty, is always one pair and
// seq is always the BoltHeaderSeq pair.
func (g *BoltGen) headers(i int, service, method string, seq int) []BoltHeader {
	hs := []BoltHeader{{Key: []byte(BoltHeaderSeq), Value: []byte(strconv.Itoa(seq))}}
	add := func(k, v string) { hs = append(hs, BoltHeader{Key: []byte(k), Value: []byte(v)}) }
	switch i % 7 {
	case 1:
		add("rpc_trace_context.sofaTraceId", "0a0fe8b11569225658047100116123")
		add("rpc_trace_context.sofaRpcId", "0.1")
		add("rpc_trace_context.sofaCallerApp", "rpcpeer")
		add("rpc_trace_context.sofaCallerIp", "127.0.0.1")
		add("rpc_trace_context.sofaCallerZone", "GZ00A")
	case 2:
		hs = append(hs, BoltHeader{Key: []byte("nullvalue"), NullValue: true},
			BoltHeader{NullKey: true, Value: []byte("nullkey")})
	case 3:
		add("empty", "")
		add("", "emptykey")
	case 4:
		hs = append(hs, BoltHeader{Key: g.bytes(9), Value: g.bytes(33)})
		add("dup", "first")
		add("dup", "second")
	case 5:
		for j := 0; j < 40; j++ {
			add("k"+strconv.Itoa(j), string(g.bytes(g.pick(20))))
		}
	case 6:
		add("sofa_head_target_service", service)
	}
	if method != "" {
		add(BoltHeaderMethod, method)
	}
	if service != "" {
		// Put the routing key somewhere other than first in some variants.
		at := g.pick(len(hs) + 1)
		hs = append(hs[:at], append([]BoltHeader{{Key: []byte(BoltHeaderService), Value: []byte(service)}}, hs[at:]...)...)
	}
	return hs
}

// version returns the (version, ver1, switch) of variant i: v1; v2 ver1 1 with switch 0 or
// 1 (no CRC: the bit only counts with ver1 2); v2 ver1 2 with switch 0, 1 (CRC) and 0x81.
func versionOf(i int) (v, ver1, sw byte) {
	switch i % 6 {
	case 0:
		return 1, 0, 0
	case 1:
		return 2, 1, 0
	case 2:
		return 2, 1, 1
	case 3:
		return 2, 2, 0
	case 4:
		return 2, 2, 1
	}
	return 2, 2, 0x81
}

// Request returns the seq'th request (type 1) or, when oneway, one-way (type 2) frame for
// service with the given method ("" for none).
func (g *BoltGen) Request(seq int, service, method string, oneway bool) BoltSpec {
	v, ver1, sw := versionOf(seq)
	typ := byte(1)
	if oneway {
		typ = 2
	}
	return BoltSpec{
		Version: v, Ver1: ver1, Switch: sw, Type: typ, Cmd: 1,
		Ver2:    genVer2s[seq%len(genVer2s)],
		ID:      g.r.Uint32(),
		Codec:   genCodecs[seq%len(genCodecs)],
		Timeout: genTimeouts[seq%len(genTimeouts)],
		Class:   g.class(seq, true),
		Headers: g.headers(seq/2, service, method, seq),
		Content: g.content(seq / 3),
	}
}

// Response returns a response to req for variant seq: same id and version; ver1, switch,
// status, class, headers and content varied.
func (g *BoltGen) Response(seq int, req *BoltSpec) BoltSpec {
	v, ver1, sw := req.Version, req.Ver1, req.Switch
	if v == 2 && seq%2 == 1 {
		_, ver1, sw = versionOf(seq/2%5 + 1)
	}
	return BoltSpec{
		Version: v, Ver1: ver1, Switch: sw, Type: 0, Cmd: 2,
		Ver2:    req.Ver2,
		ID:      req.ID,
		Codec:   req.Codec,
		Status:  genStatuses[seq%len(genStatuses)],
		Class:   g.class(seq+1, false),
		Headers: g.headers(seq+3, "", "", seq),
		Content: g.content(seq + 2),
	}
}

// Heartbeat returns heartbeat request variant seq (every version, ver1 and switch byte).
func (g *BoltGen) Heartbeat(seq int) BoltSpec {
	v, ver1, sw := versionOf(seq)
	return BoltSpec{Version: v, Ver1: ver1, Switch: sw, Type: 1, Cmd: 0, Ver2: 1, ID: g.r.Uint32(),
		Codec: genCodecs[seq%len(genCodecs)], Timeout: -1}
}

// Requests returns n requests covering the variants; when withOneway, every version
// variant also comes as one-way (frames 6..11 of every 18).
func (g *BoltGen) Requests(n int, service string, withOneway bool) []BoltSpec {
	out := make([]BoltSpec, n)
	for i := range out {
		out[i] = g.Request(i, service, "", withOneway && (i/6)%3 == 1)
	}
	return out
}

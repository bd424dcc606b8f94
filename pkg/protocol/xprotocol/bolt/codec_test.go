package bolt_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
)

func hdr(k, v string) xprotocol.Header { return xprotocol.Header{Key: []byte(k), Value: []byte(v)} }

// sample frames used across tests.
func v1Request() bolt.Message {
	return bolt.Message{Kind: xprotocol.KindRequest, Version: 1, Ver2: 1, ID: 42, Codec: 1, Timeout: 3000,
		Class: []byte("com.alipay.sofa.rpc.core.request.SofaRequest"),
		Headers: []xprotocol.Header{hdr("service", "com.example.Echo:1.0"), hdr("sofa_head_method_name", "echo"),
			hdr("rpc_trace_context.sofaTraceId", "0a0b0c")},
		Content: []byte("hessian-body")}
}

func v2CRCRequest() bolt.Message {
	m := v1Request()
	m.Version, m.Ver1, m.Switch, m.ID = 2, 2, bolt.SwitchCRC, 43
	return m
}

func v2Response() bolt.Message {
	return bolt.Message{Kind: xprotocol.KindResponse, Version: 2, Ver1: 1, Ver2: 1, ID: 44, Codec: 1,
		Status: bolt.StatusServerException, Class: []byte("com.alipay.sofa.rpc.core.response.SofaResponse"),
		Content: []byte("err")}
}

func TestTestVector(t *testing.T) {
	t.Parallel()
	c := bolt.New(bolt.Options{})
	f := decode(t, c, testVector)
	if f.Kind != xprotocol.KindRequest || f.ID != 1 || f.Version != 1 || f.Timeout != 0 || f.Status != 0 {
		t.Fatalf("fixed fields: %+v", f)
	}
	if string(f.Service) != "test" || f.Method != nil || len(f.Headers) != 1 ||
		string(f.Headers[0].Key) != "service" || string(f.Headers[0].Value) != "test" {
		t.Fatalf("headers: service %q method %q headers %q", f.Service, f.Method, f.Headers)
	}
	want := bolt.Message{Kind: xprotocol.KindRequest, Version: 1, Ver2: 1, ID: 1, Codec: 1, Timeout: -1,
		Headers: []xprotocol.Header{hdr("service", "test")}, Content: []byte("null")}
	if got := bolt.MessageOf(f); !equalMessage(got, want) {
		t.Fatalf("MessageOf = %+v; want %+v", got, want)
	}
	if got := encodeMsg(t, c, want); !bytes.Equal(got, testVector) {
		t.Fatalf("EncodeMessage = % x; want % x", got, testVector)
	}
	var out buffer.IoBuffer
	if err := c.Encode(&out, f); err != nil || !bytes.Equal(out.Bytes(), testVector) {
		t.Fatalf("Encode(decoded) = % x, %v", out.Bytes(), err)
	}
}

func TestCapturedFrames(t *testing.T) {
	t.Parallel()
	reqs, resps := capturedFrames(t)
	if len(reqs) != 3 || len(resps) != 3 {
		t.Fatalf("%d requests, %d responses; want 3, 3", len(reqs), len(resps))
	}
	c := bolt.New(bolt.Options{})
	check := func(raw []byte, kind xprotocol.Kind, id uint64, class string) *xprotocol.Frame {
		t.Helper()
		f := decode(t, c, raw)
		m := bolt.MessageOf(f)
		if f.Kind != kind || f.ID != id || f.Version != 1 || string(m.Class) != class || m.Codec != 1 {
			t.Fatalf("frame %d: kind %d id %#x version %d class %q codec %d", id, f.Kind, f.ID, f.Version, m.Class, m.Codec)
		}
		if got := encodeMsg(t, c, m); !bytes.Equal(got, raw) {
			t.Fatalf("frame %#x: EncodeMessage(MessageOf) differs:\n got % x\nwant % x", id, got, raw)
		}
		var out buffer.IoBuffer
		if err := c.Encode(&out, f); err != nil || !bytes.Equal(out.Bytes(), raw) {
			t.Fatalf("frame %#x: Encode: %v", id, err)
		}
		return f
	}
	for i, raw := range reqs {
		f := check(raw, xprotocol.KindRequest, 0x31584db2+uint64(i), "com.alipay.sofa.rpc.core.request.SofaRequest")
		if string(f.Service) != "com.example.EchoService:1.0" || f.Timeout != 5*time.Second || len(raw) != 376 {
			t.Fatalf("request %d: service %q timeout %v len %d", i, f.Service, f.Timeout, len(raw))
		}
	}
	for i, raw := range resps {
		f := check(raw, xprotocol.KindResponse, 0x31584db2+uint64(i), "com.alipay.sofa.rpc.core.response.SofaResponse")
		if f.Status != bolt.StatusSuccess || c.HTTPStatus(f) != 200 || len(raw) != 233 {
			t.Fatalf("response %d: status %d len %d", i, f.Status, len(raw))
		}
	}
}

// TestCaptureAsRead feeds the capture one TCP read at a time, as the engine would.
func TestCaptureAsRead(t *testing.T) {
	t.Parallel()
	cp := readCapture(t)
	c := bolt.New(bolt.Options{})
	for _, stream := range [][]byte{cp.c2s, cp.s2c} {
		var buf []byte
		frames := 0
		// Split into 7-byte reads: every frame is seen incomplete many times.
		for off := 0; off < len(stream); off += 7 {
			buf = append(buf, stream[off:min(off+7, len(stream))]...)
			for {
				var f xprotocol.Frame
				n, err := c.Decode(buf, &f)
				if err != nil {
					t.Fatalf("after %d frames: %v", frames, err)
				}
				if n == 0 {
					break
				}
				frames++
				buf = buf[n:]
			}
		}
		if frames != 3 || len(buf) != 0 {
			t.Fatalf("%d frames, %d bytes left; want 3, 0", frames, len(buf))
		}
	}
}

// framesForTruncation returns well-formed frames of every shape.
func framesForTruncation(t *testing.T) [][]byte {
	c1, c2 := bolt.New(bolt.Options{}), bolt.NewV2(bolt.Options{})
	reqs, resps := capturedFrames(t)
	var hb, hb2, ga buffer.IoBuffer
	_ = c1.Heartbeat(&hb, 9)
	_ = c2.Heartbeat(&hb2, 9)
	_ = c2.GoAway(&ga, 9)
	return [][]byte{testVector, reqs[0], resps[0], encodeMsg(t, c1, v1Request()), encodeMsg(t, c1, v2CRCRequest()),
		encodeMsg(t, c1, v2Response()), hb.Bytes(), hb2.Bytes(), ga.Bytes()}
}

// TestTruncatedFrames is ROBUSTNESS row 20: every proper prefix of a frame waits.
func TestTruncatedFrames(t *testing.T) {
	t.Parallel()
	for _, c := range []*bolt.Codec{bolt.New(bolt.Options{}), bolt.NewV2(bolt.Options{})} {
		for fi, fr := range framesForTruncation(t) {
			for i := 0; i < len(fr); i++ {
				var f xprotocol.Frame
				if n, err := c.Decode(fr[:i], &f); n != 0 || err != nil {
					t.Fatalf("%s frame %d cut at %d of %d: Decode = %d, %v; want 0, nil", c.Name(), fi, i, len(fr), n, err)
				}
			}
			if n, err := c.Decode(fr, new(xprotocol.Frame)); n != len(fr) || err != nil {
				t.Fatalf("%s frame %d whole: %d, %v", c.Name(), fi, n, err)
			}
		}
	}
}

// TestOversizedFrame is ROBUSTNESS row 21: the limit applies to the fixed header alone.
func TestOversizedFrame(t *testing.T) {
	t.Parallel()
	c := bolt.New(bolt.Options{})
	if c.MaxFrameSize() != 16<<20 {
		t.Fatalf("default MaxFrameSize = %d", c.MaxFrameSize())
	}
	for _, tc := range []struct{ name, hex string }{
		{"v1 request", "01 01 0001 01 00000001 01 FFFFFFFF FFFF FFFF FFFFFFFF"},
		{"v1 request content only", "01 01 0001 01 00000001 01 FFFFFFFF 0000 0000 01000000"},
		{"v1 response", "01 00 0002 01 00000001 01 0000 FFFF FFFF FFFFFFFF"},
		{"v2 request", "02 01 01 0001 01 00000001 01 00 FFFFFFFF FFFF FFFF FFFFFFFF"},
		{"v2 response crc", "02 02 00 0002 01 00000001 01 01 0000 0000 0000 00FFFFFC"}, // 22+0xFFFFFC+4 > 16 MiB
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f xprotocol.Frame
			n, err := c.Decode(mustHex(tc.hex), &f)
			if n != 0 || !errors.Is(err, xprotocol.ErrFrameTooLarge) {
				t.Fatalf("Decode = %d, %v; want ErrFrameTooLarge", n, err)
			}
		})
	}
	// The boundary, CRC included.
	small := bolt.New(bolt.Options{MaxFrameSize: 100})
	m := bolt.Message{Kind: xprotocol.KindRequest, Version: 2, Ver1: 2, Switch: bolt.SwitchCRC, Ver2: 1, Codec: 1,
		Content: make([]byte, 100-24-4)}
	full := encodeMsg(t, small, m)
	if len(full) != 100 {
		t.Fatalf("len %d", len(full))
	}
	decode(t, small, full)
	m.Content = append(m.Content, 0)
	var dst buffer.IoBuffer
	if err := small.EncodeMessage(&dst, &m); !errors.Is(err, xprotocol.ErrFrameTooLarge) {
		t.Fatalf("EncodeMessage over the limit: %v", err)
	}
	over := encodeMsg(t, c, m)
	if n, err := small.Decode(over[:24], new(xprotocol.Frame)); n != 0 || !errors.Is(err, xprotocol.ErrFrameTooLarge) {
		t.Fatalf("101-byte frame from its header: %d, %v", n, err)
	}
}

// patch returns b with the bytes at off replaced.
func patch(b []byte, off int, p ...byte) []byte {
	b = bytes.Clone(b)
	copy(b[off:], p)
	return b
}

// TestBadFields is ROBUSTNESS row 22.
func TestBadFields(t *testing.T) {
	t.Parallel()
	c := bolt.New(bolt.Options{})
	req := encodeMsg(t, c, v1Request())
	crcReq := encodeMsg(t, c, v2CRCRequest())
	hb := mustHex("01 01 0000 01 00000005 01 FFFFFFFF 0000 0000 00000000")
	hbr := mustHex("01 00 0000 01 00000005 01 0000 0000 0000 00000000")
	ga := mustHex("01 01 0064 01 00000005 01 FFFFFFFF 0000 0000 00000000")
	// header map of the test vector starts at 22 and is 19 bytes long.
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"proto 0x00", []byte{0x00}, bolt.ErrProtocol},
		{"proto 0x03", []byte{0x03, 0x01}, bolt.ErrProtocol},
		{"proto 0xff", bytes.Repeat([]byte{0xff}, 30), bolt.ErrProtocol},
		{"proto http", []byte("GET / HTTP/1.1\r\n\r\n"), bolt.ErrProtocol},
		{"v1 type 3", []byte{0x01, 0x03}, bolt.ErrType},
		{"v1 type 0xff", patch(req, 1, 0xff), bolt.ErrType},
		{"v2 ver1 0", []byte{0x02, 0x00}, bolt.ErrVersion},
		{"v2 ver1 3", []byte{0x02, 0x03, 0x01}, bolt.ErrVersion},
		{"v2 type 5", []byte{0x02, 0x01, 0x05}, bolt.ErrType},
		{"cmdcode 3", patch(req, 2, 0, 3), bolt.ErrCmdCode},
		{"cmdcode 99", patch(req, 2, 0, 99), bolt.ErrCmdCode},
		{"cmdcode 101", patch(req, 2, 0, 101), bolt.ErrCmdCode},
		{"cmdcode 0xffff", patch(req, 2, 0xff, 0xff), bolt.ErrCmdCode},
		{"request type with response cmdcode", patch(req, 2, 0, 2), bolt.ErrCmdCode},
		{"response type with request cmdcode", mustHex("01 00 0001 01 00000001 01 0000 0000 0000 00000000"), bolt.ErrCmdCode},
		{"response type with go-away", mustHex("01 00 0064 01 00000001 01 0000 0000 0000 00000000"), bolt.ErrCmdCode},
		{"one-way heartbeat", patch(hb, 1, 2), bolt.ErrCmdCode},
		{"one-way go-away", patch(ga, 1, 2), bolt.ErrCmdCode},
		{"v2 cmdcode 7", patch(crcReq, 3, 0, 7), bolt.ErrCmdCode},
		{"heartbeat with content", patch(hb, 18, 0, 0, 0, 1), bolt.ErrControlBody}, // header alone suffices
		{"heartbeat with class", append(patch(hb, 14, 0, 1), 'x'), bolt.ErrControlBody},
		{"heartbeat reply with headers", patch(hbr, 14, 0, 8), bolt.ErrControlBody},
		{"go-away with content", patch(ga, 18, 0, 0, 0, 4), bolt.ErrControlBody},
		{"key length overruns", patch(testVector, 22, 0, 0, 0, 20), bolt.ErrHeaderMap},
		{"key length huge", patch(testVector, 22, 0x7f, 0xff, 0xff, 0xff), bolt.ErrHeaderMap},
		{"value length overruns", patch(testVector, 33, 0, 0, 0, 5), bolt.ErrHeaderMap},
		{"value length cut", mustHex("01 01 0001 01 00000001 01 FFFFFFFF 0000 0007 00000000 00000001 61 0000"), bolt.ErrHeaderMap},
		{"trailing 3 bytes", mustHex("01 01 0001 01 00000001 01 FFFFFFFF 0000 0003 00000000 000000"), bolt.ErrHeaderMap},
		{"crc of content flipped", patch(crcReq, len(crcReq)-5, crcReq[len(crcReq)-5]^1), bolt.ErrCRC},
		{"crc trailer flipped", patch(crcReq, len(crcReq)-1, crcReq[len(crcReq)-1]^0x80), bolt.ErrCRC},
		{"crc id changed without recompute", patch(crcReq, 9, crcReq[9]+1), bolt.ErrCRC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f xprotocol.Frame
			n, err := c.Decode(tc.b, &f)
			if n != 0 || !errors.Is(err, tc.want) {
				t.Fatalf("Decode(% x) = %d, %v; want %v", tc.b, n, err, tc.want)
			}
			if bolt.NewV2(bolt.Options{}).Match(tc.b) == nil && bolt.New(bolt.Options{}).Match(tc.b) == nil {
				t.Fatalf("both codecs Match a bad frame")
			}
		})
	}
}

func TestTimeoutField(t *testing.T) {
	t.Parallel()
	c := bolt.New(bolt.Options{})
	for _, tc := range []struct {
		ms   int32
		want time.Duration
	}{
		{-1, 0}, {0, 0}, {-5000, 0}, {math.MinInt32, 0}, {1, time.Millisecond}, {5000, 5 * time.Second},
		{3_600_000, time.Hour}, {3_600_001, bolt.MaxTimeout}, {math.MaxInt32, bolt.MaxTimeout},
	} {
		m := v1Request()
		m.Timeout = tc.ms
		if f := decode(t, c, encodeMsg(t, c, m)); f.Timeout != tc.want {
			t.Errorf("timeout %d ms: %v; want %v", tc.ms, f.Timeout, tc.want)
		}
	}
}

func TestHeaderMap(t *testing.T) {
	t.Parallel()
	c := bolt.New(bolt.Options{})
	// [key][value] pairs: null value dropped, null key dropped, empty value kept, the first
	// service wins over a later one and over sofa_head_target_service.
	hm := mustHex("00000001 61 FFFFFFFF" + // a = null: dropped
		"FFFFFFFF 00000001 62" + // null = b: dropped
		"00000001 63 00000000" + // c = "": kept
		"00000018" + hexOf("sofa_head_target_service") + "00000003" + hexOf("old") +
		"00000007" + hexOf("service") + "00000003" + hexOf("new") +
		"00000007" + hexOf("service") + "00000005" + hexOf("later") +
		"00000015" + hexOf("sofa_head_method_name") + "00000004" + hexOf("echo"))
	b := mustHex("01 01 0001 01 00000001 01 FFFFFFFF 0000")
	b = binary.BigEndian.AppendUint16(b, uint16(len(hm)))
	b = append(b, 0, 0, 0, 0)
	b = append(b, hm...)
	f := decode(t, c, b)
	var keys []string
	for _, h := range f.Headers {
		keys = append(keys, string(h.Key)+"="+string(h.Value))
	}
	if got := strings.Join(keys, ","); got != "c=,sofa_head_target_service=old,service=new,service=later,sofa_head_method_name=echo" {
		t.Fatalf("headers %s", got)
	}
	if string(f.Service) != "new" || string(f.Method) != "echo" {
		t.Fatalf("service %q method %q", f.Service, f.Method)
	}
	if v, ok := f.Header("c"); !ok || v == nil || len(v) != 0 {
		t.Fatalf("empty value: %q %v", v, ok)
	}
	// Fallback to the old spelling; header values cannot grow into Raw.
	m := v1Request()
	m.Headers = []xprotocol.Header{hdr("sofa_head_target_service", "svc"), hdr("x", "y")}
	f = decode(t, c, encodeMsg(t, c, m))
	if string(f.Service) != "svc" || f.Method != nil || cap(f.Service) != 3 || cap(f.Headers[1].Key) != 1 {
		t.Fatalf("service %q cap %d method %q", f.Service, cap(f.Service), f.Method)
	}
}

// TestHeadersReuse checks decoding reuses the Frame's Headers array and allocates nothing.
func TestHeadersReuse(t *testing.T) {
	reqs, _ := capturedFrames(t)
	c := bolt.New(bolt.Options{})
	in := encodeMsg(t, c, v1Request())
	var f xprotocol.Frame
	decode(t, c, in)
	if _, err := c.Decode(in, &f); err != nil {
		t.Fatal(err)
	}
	first := &f.Headers[:1][0]
	f.Reset()
	if _, err := c.Decode(reqs[0], &f); err != nil || &f.Headers[:1][0] != first {
		t.Fatalf("Headers array not reused (err %v)", err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		f.Reset()
		if _, err := c.Decode(in, &f); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Decode allocates %v times", allocs)
	}
}

func TestMixedVersionsOneStream(t *testing.T) {
	t.Parallel()
	c1, c2 := bolt.New(bolt.Options{}), bolt.NewV2(bolt.Options{})
	reqs, resps := capturedFrames(t)
	var hb, ga buffer.IoBuffer
	_ = c1.Heartbeat(&hb, 7)
	_ = c2.GoAway(&ga, 8)
	parts := [][]byte{reqs[0], encodeMsg(t, c1, v2CRCRequest()), hb.Bytes(), encodeMsg(t, c1, v2Response()), resps[1],
		testVector, ga.Bytes()}
	want := []struct {
		kind xprotocol.Kind
		ver  byte
		id   uint64
	}{
		{xprotocol.KindRequest, 1, 0x31584db2}, {xprotocol.KindRequest, 2, 43}, {xprotocol.KindHeartbeat, 1, 7},
		{xprotocol.KindResponse, 2, 44}, {xprotocol.KindResponse, 1, 0x31584db3}, {xprotocol.KindRequest, 1, 1},
		{xprotocol.KindGoAway, 2, 8},
	}
	stream := bytes.Join(parts, nil)
	for _, c := range []*bolt.Codec{c1, c2} {
		got := split(t, c, stream)
		if len(got) != len(want) {
			t.Fatalf("%s: %d frames", c.Name(), len(got))
		}
		for i, fr := range got {
			f := decode(t, c, fr)
			if f.Kind != want[i].kind || f.Version != want[i].ver || f.ID != want[i].id || !bytes.Equal(fr, parts[i]) {
				t.Fatalf("%s frame %d: kind %d version %d id %d", c.Name(), i, f.Kind, f.Version, f.ID)
			}
		}
	}
}

func TestSetID(t *testing.T) { // not parallel: AllocsPerRun
	c := bolt.New(bolt.Options{})
	for _, tc := range []struct {
		name string
		m    bolt.Message
		off  int
	}{
		{"v1", v1Request(), 5},
		{"v2", func() bolt.Message { m := v2CRCRequest(); m.Switch = 0; return m }(), 6},
		{"v2 crc switch with ver1 1 (no crc)", func() bolt.Message { m := v2CRCRequest(); m.Ver1 = 1; return m }(), 6},
		{"v2 crc", v2CRCRequest(), 6},
		{"v2 crc response", func() bolt.Message { m := v2Response(); m.Ver1, m.Switch = 2, 0xff; return m }(), 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := encodeMsg(t, c, tc.m)
			f := decode(t, c, raw)
			c.SetID(f, 0x1_A1B2C3D4) // truncated to 32 bits
			if f.ID != 0xA1B2C3D4 || !bytes.Equal(raw[tc.off:tc.off+4], []byte{0xa1, 0xb2, 0xc3, 0xd4}) {
				t.Fatalf("after SetID: ID %#x raw % x", f.ID, raw[:tc.off+4])
			}
			m := tc.m
			m.ID = 0xA1B2C3D4
			if want := encodeMsg(t, c, m); !bytes.Equal(raw, want) {
				t.Fatalf("patched frame differs from one built with the id:\n got % x\nwant % x", raw, want)
			}
			if g := decode(t, c, raw); g.ID != 0xA1B2C3D4 {
				t.Fatalf("re-decoded id %#x", g.ID)
			}
			if a := testing.AllocsPerRun(50, func() { c.SetID(f, 7) }); a != 0 {
				t.Fatalf("SetID allocates %v", a)
			}
		})
	}
	// A built frame has no Raw: only the field changes.
	f := &xprotocol.Frame{Kind: xprotocol.KindRequest}
	c.SetID(f, 9)
	if f.ID != 9 || f.Raw != nil {
		t.Fatalf("built frame: %+v", f)
	}
}

func TestHeartbeatAndGoAway(t *testing.T) {
	t.Parallel()
	c1, c2 := bolt.New(bolt.Options{}), bolt.NewV2(bolt.Options{})
	for _, tc := range []struct {
		name  string
		write func(*buffer.IoBuffer) error
		want  string
		kind  xprotocol.Kind
	}{
		{"v1 heartbeat", func(b *buffer.IoBuffer) error { return c1.Heartbeat(b, 0x01020304) },
			"01 01 0000 01 01020304 01 FFFFFFFF 0000 0000 00000000", xprotocol.KindHeartbeat},
		{"v1 heartbeat reply", func(b *buffer.IoBuffer) error {
			return c1.HeartbeatReply(b, decode(t, c1, mustHex("01 01 0000 01 01020304 01 FFFFFFFF 0000 0000 00000000")))
		}, "01 00 0000 01 01020304 01 0000 0000 0000 00000000", xprotocol.KindHeartbeatReply},
		{"v1 go-away", func(b *buffer.IoBuffer) error { return c1.GoAway(b, 5) },
			"01 01 0064 01 00000005 01 FFFFFFFF 0000 0000 00000000", xprotocol.KindGoAway},
		{"v2 heartbeat", func(b *buffer.IoBuffer) error { return c2.Heartbeat(b, 6) },
			"02 01 01 0000 01 00000006 01 00 FFFFFFFF 0000 0000 00000000", xprotocol.KindHeartbeat},
		{"v2 go-away", func(b *buffer.IoBuffer) error { return c2.GoAway(b, 6) },
			"02 01 01 0064 01 00000006 01 00 FFFFFFFF 0000 0000 00000000", xprotocol.KindGoAway},
		{"v2 heartbeat reply keeps ver1 and switch", func(b *buffer.IoBuffer) error {
			return c1.HeartbeatReply(b, decode(t, c1, mustHex("02 01 01 0000 01 00000006 01 00 FFFFFFFF 0000 0000 00000000")))
		}, "02 01 00 0000 01 00000006 01 00 0000 0000 0000 00000000", xprotocol.KindHeartbeatReply},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b buffer.IoBuffer
			if err := tc.write(&b); err != nil {
				t.Fatal(err)
			}
			if want := mustHex(tc.want); !bytes.Equal(b.Bytes(), want) {
				t.Fatalf("got  % x\nwant % x", b.Bytes(), want)
			}
			if f := decode(t, c1, b.Bytes()); f.Kind != tc.kind {
				t.Fatalf("kind %d", f.Kind)
			}
		})
	}
	// A v2 heartbeat with CRC gets a reply with a valid CRC.
	hb := encodeMsg(t, c1, bolt.Message{Kind: xprotocol.KindHeartbeat, Version: 2, Ver1: 2, Switch: bolt.SwitchCRC,
		Ver2: 1, ID: 77, Codec: 1, Timeout: -1})
	var b buffer.IoBuffer
	if err := c2.HeartbeatReply(&b, decode(t, c2, hb)); err != nil {
		t.Fatal(err)
	}
	r := decode(t, c1, b.Bytes())
	m := bolt.MessageOf(r)
	if r.Kind != xprotocol.KindHeartbeatReply || r.ID != 77 || len(r.Raw) != 26 || m.Ver1 != 2 || m.Switch != bolt.SwitchCRC {
		t.Fatalf("reply % x", r.Raw)
	}
}

func TestHijack(t *testing.T) {
	t.Parallel()
	c := bolt.New(bolt.Options{})
	v1 := decode(t, c, encodeMsg(t, c, v1Request()))
	crcMsg := v2CRCRequest()
	crcMsg.Codec = 3 // fury: mirrored into the response
	v2 := decode(t, c, encodeMsg(t, c, crcMsg))
	for _, tc := range []struct {
		cause  xprotocol.Cause
		status uint16
		http   int
	}{
		{xprotocol.CauseNoRoute, 0x06, 500},
		{xprotocol.CauseNoHealthyUpstream, 0x06, 500},
		{xprotocol.CauseOverflow, 0x04, 503},
		{xprotocol.CauseTimeout, 0x07, 504},
		{xprotocol.CauseUpstreamTimeout, 0x07, 504},
		{xprotocol.CauseCodecError, 0x09, 500},
		{xprotocol.CauseForbidden, 0x02, 500},
		{xprotocol.CauseConnectionClosed, 0x10, 502},
		{xprotocol.Cause(200), bolt.StatusUnknown, 500},
	} {
		var b buffer.IoBuffer
		if err := c.Hijack(&b, v1, tc.cause, "ignored"); err != nil {
			t.Fatal(err)
		}
		want := mustHex("01 00 0002 01 0000002a 01")
		want = binary.BigEndian.AppendUint16(want, tc.status)
		want = append(want, 0, 0, 0, 0, 0, 0, 0, 0)
		if !bytes.Equal(b.Bytes(), want) {
			t.Fatalf("cause %d: got % x\nwant % x", tc.cause, b.Bytes(), want)
		}
		if f := decode(t, c, b.Bytes()); f.Kind != xprotocol.KindResponse || f.Status != tc.status || f.ID != 42 || c.HTTPStatus(f) != tc.http {
			t.Fatalf("cause %d: decoded %+v http %d", tc.cause, f, c.HTTPStatus(f))
		}
		b.Reset()
		if err := c.Hijack(&b, v2, tc.cause, ""); err != nil {
			t.Fatal(err)
		}
		f := decode(t, c, b.Bytes())
		m := bolt.MessageOf(f)
		if len(f.Raw) != 26 || f.Version != 2 || m.Ver1 != 2 || m.Switch != bolt.SwitchCRC || m.Codec != 3 ||
			f.Status != tc.status || f.ID != 43 {
			t.Fatalf("cause %d v2: % x", tc.cause, f.Raw)
		}
		if crc32.ChecksumIEEE(f.Raw[:22]) != binary.BigEndian.Uint32(f.Raw[22:]) {
			t.Fatal("bad crc")
		}
	}
	ow := v1Request()
	ow.Kind = xprotocol.KindOneway
	var b buffer.IoBuffer
	if err := c.Hijack(&b, decode(t, c, encodeMsg(t, c, ow)), xprotocol.CauseNoRoute, ""); err != nil || b.Len() != 0 {
		t.Fatalf("one-way hijack wrote % x, %v", b.Bytes(), err)
	}
}

func TestHTTPStatus(t *testing.T) {
	t.Parallel()
	c := bolt.New(bolt.Options{})
	want := map[uint16]int{0x00: 200, 0x01: 500, 0x02: 500, 0x03: 500, 0x04: 503, 0x05: 500, 0x06: 500, 0x07: 504,
		0x08: 500, 0x09: 500, 0x10: 502, 0x11: 500, 0x12: 500, 0xffff: 500}
	for s, h := range want {
		if got := c.HTTPStatus(&xprotocol.Frame{Kind: xprotocol.KindResponse, Status: s}); got != h {
			t.Errorf("status %#x: %d; want %d", s, got, h)
		}
	}
}

func TestMatch(t *testing.T) {
	t.Parallel()
	c1, c2 := bolt.New(bolt.Options{}), bolt.NewV2(bolt.Options{})
	if c1.Name() != "bolt" || c2.Name() != "boltv2" || c1.Version() != 1 || c2.Version() != 2 {
		t.Fatal("names")
	}
	for _, tc := range []struct {
		name   string
		b      []byte
		v1, v2 error
	}{
		{"empty", nil, xprotocol.ErrNeedMore, xprotocol.ErrNeedMore},
		{"v1 proto only", []byte{1}, xprotocol.ErrNeedMore, xprotocol.ErrNoMatch},
		{"v1 request", []byte{1, 1}, nil, xprotocol.ErrNoMatch},
		{"v1 one-way", []byte{1, 2, 0}, nil, xprotocol.ErrNoMatch},
		{"v1 response", []byte{1, 0, 0, 2}, nil, xprotocol.ErrNoMatch},
		{"v1 bad type", []byte{1, 3}, xprotocol.ErrNoMatch, xprotocol.ErrNoMatch},
		{"v1 bad cmdcode", []byte{1, 1, 0, 2}, xprotocol.ErrNoMatch, xprotocol.ErrNoMatch},
		{"v2 proto only", []byte{2}, xprotocol.ErrNoMatch, xprotocol.ErrNeedMore},
		{"v2 ver1 only", []byte{2, 1}, xprotocol.ErrNoMatch, xprotocol.ErrNeedMore},
		{"v2 request", []byte{2, 2, 1}, xprotocol.ErrNoMatch, nil},
		{"v2 bad ver1", []byte{2, 3, 1}, xprotocol.ErrNoMatch, xprotocol.ErrNoMatch},
		{"v2 bad type", []byte{2, 1, 9}, xprotocol.ErrNoMatch, xprotocol.ErrNoMatch},
		{"v2 heartbeat", []byte{2, 1, 1, 0, 0}, xprotocol.ErrNoMatch, nil},
		{"v2 bad cmdcode", []byte{2, 1, 1, 0, 5}, xprotocol.ErrNoMatch, xprotocol.ErrNoMatch},
		{"dubbo", []byte{0xda, 0xbb}, xprotocol.ErrNoMatch, xprotocol.ErrNoMatch},
		{"http", []byte("GET /"), xprotocol.ErrNoMatch, xprotocol.ErrNoMatch},
		{"test vector", testVector, nil, xprotocol.ErrNoMatch},
	} {
		if err := c1.Match(tc.b); err != tc.v1 { //nolint:errorlint // sentinel identity
			t.Errorf("%s: bolt Match = %v; want %v", tc.name, err, tc.v1)
		}
		if err := c2.Match(tc.b); err != tc.v2 { //nolint:errorlint // sentinel identity
			t.Errorf("%s: boltv2 Match = %v; want %v", tc.name, err, tc.v2)
		}
	}
}

func TestEncodeBuiltFrame(t *testing.T) {
	t.Parallel()
	c1, c2 := bolt.New(bolt.Options{}), bolt.NewV2(bolt.Options{})
	in := &xprotocol.Frame{Kind: xprotocol.KindRequest, ID: 7, Timeout: 1500 * time.Microsecond,
		Headers: []xprotocol.Header{hdr("service", "s"), hdr("sofa_head_method_name", "m")}}
	for _, tc := range []struct {
		c   *bolt.Codec
		ver byte
	}{{c1, 1}, {c2, 2}} {
		var b buffer.IoBuffer
		if err := tc.c.Encode(&b, in); err != nil {
			t.Fatal(err)
		}
		f := decode(t, c1, b.Bytes())
		if f.Version != tc.ver || f.ID != 7 || f.Timeout != 2*time.Millisecond || string(f.Service) != "s" ||
			string(f.Method) != "m" || !equalHeaders(f.Headers, in.Headers) {
			t.Fatalf("%s: %+v", tc.c.Name(), f)
		}
		if m := bolt.MessageOf(f); m.Codec != bolt.CodecHessian2 || m.Ver2 != 1 || len(m.Class) != 0 || len(m.Content) != 0 {
			t.Fatalf("%s: %+v", tc.c.Name(), m)
		}
	}
	resp := &xprotocol.Frame{Kind: xprotocol.KindResponse, ID: 8, Version: 2, Status: bolt.StatusTimeout}
	var b buffer.IoBuffer
	if err := c1.Encode(&b, resp); err != nil {
		t.Fatal(err)
	}
	if want := mustHex("02 01 00 0002 01 00000008 01 00 0007 0000 0000 00000000"); !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("built response % x", b.Bytes())
	}
	for _, tc := range []struct {
		name string
		f    *xprotocol.Frame
		m    *bolt.Message
	}{
		{"unknown kind", &xprotocol.Frame{Kind: 99}, nil},
		{"heartbeat with headers", &xprotocol.Frame{Kind: xprotocol.KindHeartbeat, Headers: in.Headers}, nil},
		{"bad version", &xprotocol.Frame{Kind: xprotocol.KindRequest, Version: 3}, nil},
		{"class too long", nil, &bolt.Message{Kind: xprotocol.KindRequest, Class: make([]byte, 65536)}},
		{"header map too long", nil, &bolt.Message{Kind: xprotocol.KindRequest,
			Headers: []xprotocol.Header{{Key: make([]byte, 40000), Value: make([]byte, 40000)}}}},
		{"bad ver1", nil, &bolt.Message{Kind: xprotocol.KindRequest, Version: 2, Ver1: 3}},
		{"go-away with class", nil, &bolt.Message{Kind: xprotocol.KindGoAway, Class: []byte("x")}},
	} {
		var b buffer.IoBuffer
		var err error
		if tc.f != nil {
			err = c1.Encode(&b, tc.f)
		} else {
			err = c1.EncodeMessage(&b, tc.m)
		}
		if err == nil || b.Len() != 0 {
			t.Errorf("%s: Encode = %v, wrote %d bytes; want an error and nothing written", tc.name, err, b.Len())
		}
	}
}

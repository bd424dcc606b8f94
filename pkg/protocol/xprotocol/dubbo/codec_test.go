package dubbo

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
)

func TestCapturesDecodeAndReencode(t *testing.T) {
	c := New(Options{})
	frames := captures(t)
	if len(frames) != 8 {
		t.Fatalf("%d frames in the capture, want 8", len(frames))
	}
	wantIDs := []uint64{0xdcb3e0e39b, 0xdcb3e0e39c, 0xdcb3e0e39d, 0x46486ad4a4}
	for i, cf := range frames {
		f := decodeOne(t, c, cf.raw)
		if want := wantIDs[i/2]; f.ID != want {
			t.Errorf("frame %d: id %#x, want %#x", i, f.ID, want)
		}
		if got := encodeFrame(t, c, f); !bytes.Equal(got, cf.raw) {
			t.Errorf("frame %d: Encode is not byte-identical", i)
		}
		if err := c.FrameError(f); err != nil {
			t.Errorf("frame %d: FrameError = %v", i, err)
		}
		fail := i >= 6
		if cf.dir == "S>C" {
			wantFlag := ResultValueWithAttachments
			if fail {
				wantFlag = ResultExceptionWithAttachments
			}
			if rf, ok := Result(f); f.Kind != xprotocol.KindResponse || f.Status != StatusOK || !ok || rf != wantFlag {
				t.Errorf("frame %d: kind %d status %d result %d,%v; want response 20 flag %d", i, f.Kind, f.Status, rf, ok, wantFlag)
			}
			if c.HTTPStatus(f) != 200 {
				t.Errorf("frame %d: HTTPStatus %d", i, c.HTTPStatus(f))
			}
			continue
		}
		method, version, group := "echo", "1.0.0", "g1"
		if fail {
			method, version, group = "fail", "", ""
		}
		if f.Kind != xprotocol.KindRequest || string(f.Service) != "com.example.EchoService" || string(f.Method) != method ||
			header(f, "service") != "com.example.EchoService" || header(f, "method") != method || header(f, "version") != version {
			t.Errorf("frame %d: kind %d service %q method %q headers %q", i, f.Kind, f.Service, f.Method, f.Headers)
		}
		if _, ok := f.Header("group"); ok || f.Timeout != 0 {
			t.Errorf("frame %d: group or timeout before DecodeAttachments", i)
		}
		if err := c.DecodeAttachments(f); err != nil {
			t.Fatalf("frame %d: DecodeAttachments: %v", i, err)
		}
		if header(f, "group") != group || f.Timeout != 5*time.Second || header(f, "interface") != "com.example.EchoService" {
			t.Errorf("frame %d: group %q timeout %v headers %q", i, header(f, "group"), f.Timeout, f.Headers)
		}
		want := libAttachments(t, cf.raw)
		delete(want, "dubbo") // the library adds the framework version
		got, err := c.Attachments(f)
		if err != nil || !equalMaps(got, want) {
			t.Errorf("frame %d: Attachments = %v, %v; library says %v", i, got, err, want)
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestCapturesStreamedByteByByte(t *testing.T) {
	c := New(Options{})
	var stream []byte
	for _, cf := range captures(t) {
		if cf.dir == "C>S" {
			stream = append(stream, cf.raw...)
		}
	}
	// Feed the client stream one byte at a time, as the engine's buffer would grow.
	var got []uint64
	start := 0
	for end := 1; end <= len(stream); end++ {
		f := &xprotocol.Frame{}
		n, err := c.Decode(stream[start:end], f)
		if err != nil {
			t.Fatalf("Decode at %d..%d: %v", start, end, err)
		}
		if n > 0 {
			got = append(got, f.ID)
			start += n
		}
	}
	if len(got) != 4 || start != len(stream) {
		t.Fatalf("decoded %d frames, consumed %d of %d", len(got), start, len(stream))
	}
}

func TestRequestsBuiltByLibrary(t *testing.T) {
	c := New(Options{})
	long := strings.Repeat("x", 5000) // over the library's 4096-char chunk: 'R' chunks
	for _, tc := range []struct {
		name string
		req  Request
	}{
		{"no args", Request{ID: 1, Service: "com.example.A", Method: "ping"}},
		{"string arg", Request{ID: 2, Service: "com.example.A", Version: "2.0", Group: "blue", Method: "echo", Timeout: 3 * time.Second, Args: []any{"hi"}}},
		{"ints and bytes", Request{ID: 3, Service: "s", Method: "m", Args: []any{int32(7), int64(1 << 40), []byte("raw"), true, 1.5}}},
		{"pojo and collections", Request{ID: 4, Service: "com.example.UserService", Group: "g", Method: "save", Args: []any{
			&user{Name: "ann", Age: 30, Tags: []string{"a", "b"}}, []any{"x", int32(1)}, map[any]any{"k": "v", "n": int32(2)}, time.Unix(1700000000, 0)}}},
		{"same pojo twice (refs)", func() Request {
			u := &user{Name: "bob"}
			return Request{ID: 5, Service: "s", Method: "m", Group: "g2", Args: []any{u, u}}
		}()},
		{"cjk service", Request{ID: 6, Service: "com.例子.服务", Method: "回声", Version: "版本", Group: "组"}},
		{"supplementary chars", Request{ID: 7, Service: "com.example.😀Service", Method: "m𝄞", Group: "🎸"}},
		{"chunked strings", Request{ID: 8, Service: "com.example." + long, Method: "m", Group: long, Args: []any{long}}},
		{"extra attachments", Request{ID: 9, Service: "s", Method: "m", Attachments: map[string]string{"traceid": "abc", "zone": "z1"}}},
		{"huge timeout", Request{ID: 10, Service: "s", Method: "m", Timeout: 1000 * time.Hour}},
		{"one-way", Request{ID: 11, OneWay: true, Service: "s", Method: "notify", Args: []any{"x"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := must(t)(tc.req.Bytes())
			f := decodeOne(t, c, raw)
			wantKind := xprotocol.KindRequest
			if tc.req.OneWay {
				wantKind = xprotocol.KindOneway
			}
			if f.Kind != wantKind || f.ID != tc.req.ID || string(f.Service) != tc.req.Service || string(f.Method) != tc.req.Method ||
				header(f, "version") != tc.req.Version {
				t.Fatalf("kind %d id %d service %q method %q version %q", f.Kind, f.ID, f.Service, f.Method, header(f, "version"))
			}
			if err := c.DecodeAttachments(f); err != nil {
				t.Fatalf("DecodeAttachments: %v", err)
			}
			if header(f, "group") != tc.req.Group {
				t.Errorf("group %q, want %q", header(f, "group"), tc.req.Group)
			}
			wantTimeout := min(tc.req.Timeout, MaxTimeout)
			if f.Timeout != wantTimeout {
				t.Errorf("timeout %v, want %v", f.Timeout, wantTimeout)
			}
			for k, v := range tc.req.Attachments {
				if header(f, k) != v {
					t.Errorf("attachment %s = %q, want %q", k, header(f, k), v)
				}
			}
			want := libAttachments(t, raw)
			delete(want, "dubbo")
			if got, err := c.Attachments(f); err != nil || !equalMaps(got, want) {
				t.Errorf("Attachments = %v, %v; library says %v", got, err, want)
			}
			if got := encodeFrame(t, c, f); !bytes.Equal(got, raw) {
				t.Error("Encode is not byte-identical")
			}
		})
	}
}

func TestEagerAttachments(t *testing.T) {
	raw := must(t)((&Request{ID: 1, Service: "s", Method: "m", Group: "g", Timeout: time.Second}).Bytes())
	f := decodeOne(t, New(Options{EagerAttachments: true}), raw)
	if header(f, "group") != "g" || f.Timeout != time.Second {
		t.Fatalf("eager decode: group %q timeout %v", header(f, "group"), f.Timeout)
	}
	// Headers stay in a stable order: body strings first, then attachments sorted.
	var keys []string
	for _, h := range f.Headers {
		keys = append(keys, string(h.Key))
	}
	if got := strings.Join(keys, ","); got != "service,method,version,group,interface,path,timeout" {
		t.Errorf("header order %s", got)
	}
}

func TestResponses(t *testing.T) {
	c := New(Options{})
	atts := map[string]string{"k": "v"}
	for _, tc := range []struct {
		name   string
		resp   Response
		status uint16
		flag   ResultFlag
		noFlag bool
		http   int
	}{
		{"value", Response{ID: 1, Value: "hello"}, 20, ResultValue, false, 200},
		{"null", Response{ID: 2}, 20, ResultNull, false, 200},
		{"exception", Response{ID: 3, Exception: errors.New("boom")}, 20, ResultException, false, 200},
		{"value with attachments", Response{ID: 4, Value: int32(5), Attachments: atts}, 20, ResultValueWithAttachments, false, 200},
		{"null with attachments", Response{ID: 5, Attachments: atts}, 20, ResultNullWithAttachments, false, 200},
		{"exception with attachments", Response{ID: 6, Exception: errors.New("boom"), Attachments: atts}, 20, ResultExceptionWithAttachments, false, 200},
		{"service not found", Response{ID: 7, Status: StatusServiceNotFound, ErrorMessage: "no provider"}, 60, 0, true, 404},
		{"server timeout", Response{ID: 8, Status: StatusServerTimeout, ErrorMessage: "slow"}, 31, 0, true, 504},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := must(t)(tc.resp.Bytes())
			f := decodeOne(t, c, raw)
			flag, ok := Result(f)
			if f.Kind != xprotocol.KindResponse || f.ID != tc.resp.ID || f.Status != tc.status || ok == tc.noFlag || (ok && flag != tc.flag) {
				t.Fatalf("kind %d id %d status %d flag %d,%v", f.Kind, f.ID, f.Status, flag, ok)
			}
			if got := c.HTTPStatus(f); got != tc.http {
				t.Errorf("HTTPStatus %d, want %d", got, tc.http)
			}
			if !bytes.Equal(encodeFrame(t, c, f), raw) {
				t.Error("Encode is not byte-identical")
			}
			if _, resp, err := libResponse(t, raw); tc.status == 20 && (err != nil || tc.resp.Value != nil && resp.RspObj != tc.resp.Value) {
				t.Errorf("library reads %+v, %v", resp, err)
			}
		})
	}
}

func TestHeartbeatRoundTrip(t *testing.T) {
	c := New(Options{})
	var hb buffer.IoBuffer
	if err := c.Heartbeat(&hb, 42); err != nil {
		t.Fatal(err)
	}
	// Byte-identical to the library's own heartbeat request.
	lib := must(t)(hessian.NewHessianCodec(nil).Write(hessian.Service{},
		hessian.DubboHeader{SerialID: serialHessian, Type: hessian.PackageHeartbeat, ID: 42}, []any{}))
	if !bytes.Equal(hb.Bytes(), lib) {
		t.Fatalf("Heartbeat % x, library % x", hb.Bytes(), lib)
	}
	req := decodeOne(t, c, hb.Bytes())
	if req.Kind != xprotocol.KindHeartbeat || req.ID != 42 {
		t.Fatalf("kind %d id %d", req.Kind, req.ID)
	}
	var reply buffer.IoBuffer
	if err := c.HeartbeatReply(&reply, req); err != nil {
		t.Fatal(err)
	}
	want := []byte{0xda, 0xbb, 0x22, 20, 0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 1, 'N'}
	if !bytes.Equal(reply.Bytes(), want) {
		t.Fatalf("HeartbeatReply % x, want % x", reply.Bytes(), want)
	}
	rf := decodeOne(t, c, reply.Bytes())
	if rf.Kind != xprotocol.KindHeartbeatReply || rf.ID != 42 || rf.Status != StatusOK {
		t.Fatalf("reply kind %d id %d status %d", rf.Kind, rf.ID, rf.Status)
	}
	if h, _, err := libResponse(t, reply.Bytes()); err != nil || h.Type&hessian.PackageHeartbeat == 0 || h.ID != 42 {
		t.Fatalf("library reads the reply as %+v, %v", h, err)
	}
}

func TestOnewayHeartbeatGetsNoReply(t *testing.T) {
	c := New(Options{})
	raw := []byte{0xda, 0xbb, 0xa2, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1, 'N'}
	f := decodeOne(t, c, raw)
	if f.Kind != xprotocol.KindHeartbeat {
		t.Fatalf("kind %d", f.Kind)
	}
	var dst buffer.IoBuffer
	if err := c.HeartbeatReply(&dst, f); err != nil || dst.Len() != 0 {
		t.Fatalf("HeartbeatReply wrote %d bytes, %v", dst.Len(), err)
	}
}

func TestGoAwayIsReadonlyEvent(t *testing.T) {
	c := New(Options{})
	var dst buffer.IoBuffer
	if err := c.GoAway(&dst, 7); err != nil {
		t.Fatal(err)
	}
	want := []byte{0xda, 0xbb, 0xa2, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 2, 0x01, 'R'}
	if !bytes.Equal(dst.Bytes(), want) {
		t.Fatalf("GoAway % x", dst.Bytes())
	}
	if body := hessianBytes(t, "R"); !bytes.Equal(body, want[HeaderLen:]) {
		t.Fatalf("library encodes \"R\" as % x", body)
	}
	if f := decodeOne(t, c, dst.Bytes()); f.Kind != xprotocol.KindGoAway || f.ID != 7 {
		t.Fatalf("kind %d id %d", f.Kind, f.ID)
	}
}

func TestOnewayRequestDetected(t *testing.T) {
	c := New(Options{})
	raw := must(t)((&Request{ID: 3, OneWay: true, Service: "s", Method: "m"}).Bytes())
	if raw[2] != 0x82 {
		t.Fatalf("flag %#x", raw[2])
	}
	f := decodeOne(t, c, raw)
	if f.Kind != xprotocol.KindOneway {
		t.Fatalf("kind %d", f.Kind)
	}
	var dst buffer.IoBuffer
	if err := c.Hijack(&dst, f, xprotocol.CauseNoRoute, "x"); !errors.Is(err, xprotocol.ErrUnsupported) || dst.Len() != 0 {
		t.Fatalf("Hijack of one-way: %v, %d bytes", err, dst.Len())
	}
}

// Robustness row 23: flag combinations and bad magic.
func TestHeaderFlags(t *testing.T) {
	c := New(Options{})
	body := requestBody(t, "svc", "m", "", 'H', 'Z')
	frame := func(flag, status byte, body []byte) []byte {
		b := make([]byte, HeaderLen, HeaderLen+len(body))
		putHeader(b, flag, status, 5, len(body))
		return append(b, body...)
	}
	for _, tc := range []struct {
		name    string
		raw     []byte
		kind    xprotocol.Kind
		status  uint16
		bodyErr bool
	}{
		{"request", frame(0xc2, 0, body), xprotocol.KindRequest, 0, false},
		{"status byte on a request is ignored", frame(0xc2, 70, body), xprotocol.KindRequest, 0, false},
		{"one-way request", frame(0x82, 0, body), xprotocol.KindOneway, 0, false},
		{"request in another serialization", frame(0xc6, 0, body), xprotocol.KindRequest, 0, true},
		{"request with serialization 0", frame(0xc0, 0, body), xprotocol.KindRequest, 0, true},
		{"heartbeat", frame(0xe2, 0, []byte{'N'}), xprotocol.KindHeartbeat, 0, false},
		{"heartbeat with empty body", frame(0xe2, 0, nil), xprotocol.KindHeartbeat, 0, false},
		{"fastjson heartbeat", frame(0xe6, 0, []byte("null")), xprotocol.KindHeartbeat, 0, false},
		{"readonly event", frame(0xa2, 0, []byte{0x01, 'R'}), xprotocol.KindGoAway, 0, false},
		{"heartbeat reply", frame(0x22, 20, []byte{'N'}), xprotocol.KindHeartbeatReply, 20, false},
		{"event response with two-way bit", frame(0x62, 20, []byte{'N'}), xprotocol.KindHeartbeatReply, 20, false},
		{"response with two-way bit", frame(0x42, 20, []byte{0x92}), xprotocol.KindResponse, 20, false},
		{"response with bogus status", frame(0x02, 255, []byte{0x01, 'x'}), xprotocol.KindResponse, 255, false},
		{"request with garbage body", frame(0xc2, 0, []byte{0xff, 0xff}), xprotocol.KindRequest, 0, true},
		{"request with empty body", frame(0xc2, 0, nil), xprotocol.KindRequest, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := decodeOne(t, c, tc.raw)
			if f.Kind != tc.kind || f.Status != tc.status || f.ID != 5 {
				t.Fatalf("kind %d status %d id %d; want %d %d 5", f.Kind, f.Status, f.ID, tc.kind, tc.status)
			}
			if err := c.FrameError(f); (err != nil) != tc.bodyErr || err != nil && !errors.Is(err, ErrBody) {
				t.Fatalf("FrameError = %v, want error %v", err, tc.bodyErr)
			}
			if tc.bodyErr {
				if err := c.DecodeAttachments(f); !errors.Is(err, ErrBody) {
					t.Fatalf("DecodeAttachments = %v", err)
				}
			}
		})
	}
	for _, bad := range [][]byte{{0xdb}, {0xda, 0xbc}, {0xca, 0xfe, 0xba, 0xbe}, append([]byte{0xbb, 0xda}, make([]byte, 20)...)} {
		if n, err := c.Decode(bad, &xprotocol.Frame{}); !errors.Is(err, ErrBadMagic) || n != 0 {
			t.Errorf("Decode(% x) = %d, %v; want ErrBadMagic", bad, n, err)
		}
	}
}

func TestTruncationNeverErrors(t *testing.T) {
	c := New(Options{})
	var frames [][]byte
	for _, cf := range captures(t) {
		frames = append(frames, cf.raw)
	}
	frames = append(frames, must(t)((&Request{ID: 1, Service: "com.例子.😀", Method: "m", Args: []any{&user{Name: "x"}}}).Bytes()))
	for _, raw := range frames {
		for i := range len(raw) {
			f := &xprotocol.Frame{}
			if n, err := c.Decode(raw[:i], f); n != 0 || err != nil {
				t.Fatalf("Decode of %d of %d bytes = %d, %v", i, len(raw), n, err)
			}
		}
		// Truncating the body while fixing the length up never panics either.
		for i := HeaderLen; i < len(raw); i++ {
			b := bytes.Clone(raw[:i])
			putHeader(b, b[2], b[3], 1, i-HeaderLen)
			f := &xprotocol.Frame{}
			if n, err := c.Decode(b, f); n != i || err != nil {
				t.Fatalf("Decode of body cut at %d = %d, %v", i, n, err)
			}
			_ = c.DecodeAttachments(f)
		}
	}
}

func TestOversizedRejectedFromHeader(t *testing.T) {
	for _, tc := range []struct {
		name    string
		max     int
		bodyLen uint32
		tooBig  bool
	}{
		{"default limit", 0, DefaultMaxBody, false},
		{"9 MiB", 0, 9 << 20, true},
		{"4 GiB", 0, 0xffffffff, true},
		{"custom limit", 100, 101, true},
		{"custom limit exact", 100, 100, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Options{MaxFrameSize: tc.max})
			h := make([]byte, HeaderLen)
			putHeader(h, 0xc2, 0, 1, 0)
			h[12], h[13], h[14], h[15] = byte(tc.bodyLen>>24), byte(tc.bodyLen>>16), byte(tc.bodyLen>>8), byte(tc.bodyLen)
			n, err := c.Decode(h, &xprotocol.Frame{})
			if tc.tooBig != errors.Is(err, xprotocol.ErrFrameTooLarge) || n != 0 || !tc.tooBig && err != nil {
				t.Fatalf("Decode = %d, %v", n, err)
			}
		})
	}
	if got := New(Options{}).MaxFrameSize(); got != HeaderLen+DefaultMaxBody {
		t.Fatalf("MaxFrameSize %d", got)
	}
}

func TestSetIDPatchesInPlace(t *testing.T) {
	c := New(Options{})
	raw := captures(t)[0].raw
	f := decodeOne(t, c, bytes.Clone(raw))
	c.SetID(f, 0x0102030405060708)
	out := encodeFrame(t, c, f)
	if f.ID != 0x0102030405060708 || !bytes.Equal(out[4:12], []byte{1, 2, 3, 4, 5, 6, 7, 8}) ||
		!bytes.Equal(out[:4], raw[:4]) || !bytes.Equal(out[12:], raw[12:]) {
		t.Fatalf("SetID: % x", out[:16])
	}
	g := decodeOne(t, c, out)
	if g.ID != f.ID || string(g.Service) != string(f.Service) {
		t.Fatal("re-decode after SetID differs")
	}
}

func TestHijack(t *testing.T) {
	c := New(Options{})
	req := decodeOne(t, c, captures(t)[0].raw)
	for _, tc := range []struct {
		cause  xprotocol.Cause
		status byte
		http   int
	}{
		{xprotocol.CauseNoRoute, 60, 404},
		{xprotocol.CauseNoHealthyUpstream, 60, 404},
		{xprotocol.CauseOverflow, 100, 503},
		{xprotocol.CauseTimeout, 30, 504},
		{xprotocol.CauseUpstreamTimeout, 31, 504},
		{xprotocol.CauseCodecError, 70, 500},
		{xprotocol.CauseForbidden, 80, 500},
		{xprotocol.CauseConnectionClosed, 35, 502},
		{xprotocol.Cause(200), 80, 500},
	} {
		var dst buffer.IoBuffer
		msg := "no route for 服务 😀"
		if err := c.Hijack(&dst, req, tc.cause, msg); err != nil {
			t.Fatal(err)
		}
		raw := dst.Bytes()
		f := decodeOne(t, c, raw)
		if f.Kind != xprotocol.KindResponse || f.ID != req.ID || f.Status != uint16(tc.status) || raw[2] != 0x02 || c.HTTPStatus(f) != tc.http {
			t.Errorf("cause %d: kind %d id %#x status %d flag %#x http %d", tc.cause, f.Kind, f.ID, f.Status, raw[2], c.HTTPStatus(f))
		}
		// The body is one hessian2 string: Dubbo reads it as the error message.
		if s, next, _, err := readString(raw, HeaderLen); err != nil || string(s) != msg || next != len(raw) {
			t.Errorf("cause %d: body %q, %v", tc.cause, s, err)
		}
		if _, resp, err := libResponse(t, raw); err != nil || resp.Exception == nil || !strings.Contains(resp.Exception.Error(), msg) {
			t.Errorf("cause %d: library reads %v, %v", tc.cause, resp.Exception, err)
		}
	}
}

func TestMatch(t *testing.T) {
	c := New(Options{})
	for _, tc := range []struct {
		in   []byte
		want error
	}{
		{nil, xprotocol.ErrNeedMore},
		{[]byte{0xda}, xprotocol.ErrNeedMore},
		{[]byte{0xda, 0xbb}, nil},
		{[]byte{0xda, 0xbb, 0xc2}, nil},
		{[]byte{0xda, 0x00}, xprotocol.ErrNoMatch},
		{[]byte{0x01}, xprotocol.ErrNoMatch},
		{[]byte("GET /"), xprotocol.ErrNoMatch},
	} {
		if err := c.Match(tc.in); err != tc.want {
			t.Errorf("Match(% x) = %v, want %v", tc.in, err, tc.want)
		}
	}
	if c.Name() != "dubbo" {
		t.Error(c.Name())
	}
}

func TestEncodeBuiltFrames(t *testing.T) {
	c := &Codec{} // the zero Codec works
	for _, in := range []xprotocol.Frame{
		{Kind: xprotocol.KindRequest, ID: 1, Service: []byte("com.example.S"), Method: []byte("m"), Timeout: 2 * time.Second,
			Headers: []xprotocol.Header{{Key: []byte("version"), Value: []byte("1.0")}, {Key: []byte("group"), Value: []byte("g")}, {Key: []byte("x"), Value: []byte("y")}}},
		{Kind: xprotocol.KindOneway, ID: 2, Service: []byte("s"), Method: []byte("m")},
		{Kind: xprotocol.KindResponse, ID: 3, Status: StatusOK},
		{Kind: xprotocol.KindResponse, ID: 4, Status: StatusServiceNotFound},
		{Kind: xprotocol.KindHeartbeat, ID: 5},
		{Kind: xprotocol.KindHeartbeatReply, ID: 6},
		{Kind: xprotocol.KindGoAway, ID: 7},
	} {
		raw := encodeFrame(t, c, &in)
		f := decodeOne(t, c, raw)
		if err := c.DecodeAttachments(f); err != nil {
			t.Fatal(err)
		}
		if f.Kind != in.Kind || f.ID != in.ID || string(f.Service) != string(in.Service) || string(f.Method) != string(in.Method) ||
			f.Timeout != in.Timeout || (in.Kind == xprotocol.KindResponse && f.Status != in.Status) {
			t.Errorf("built %+v decodes to %+v", in, f)
		}
		for _, h := range in.Headers {
			if header(f, string(h.Key)) != string(h.Value) {
				t.Errorf("header %s = %q", h.Key, header(f, string(h.Key)))
			}
		}
	}
	if err := c.Encode(&buffer.IoBuffer{}, &xprotocol.Frame{}); err == nil {
		t.Error("Encode of an empty frame succeeded")
	}
}

func TestParseTimeout(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"":                         0,
		"0":                        0,
		"5000":                     5 * time.Second,
		"-1":                       0,
		"1e3":                      0,
		" 5":                       0,
		"86400000":                 MaxTimeout,
		"86400001":                 MaxTimeout,
		"2147483647":               MaxTimeout,
		"99999999999999999999999":  MaxTimeout,
		"000000000000000000000010": 10 * time.Millisecond,
	} {
		if got := parseTimeout(in); got != want {
			t.Errorf("parseTimeout(%q) = %v, want %v", in, got, want)
		}
	}
}

package rpcpeer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"
	"go.uber.org/goleak"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/dubbo"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func startDubbo(t *testing.T, o DubboServerOptions) *DubboServer {
	t.Helper()
	s, err := StartDubboServer(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func dialDubbo(t *testing.T, addr string) *DubboClient {
	t.Helper()
	c, err := DialDubbo(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var echoSvc = hessian.Service{Path: "com.example.EchoService", Interface: "com.example.EchoService",
	Group: "g1", Version: "1.0.0", Method: "echo", Timeout: 3 * time.Second}

// TestBoltVector checks the PROTOCOLS.md vector against the codec and the generator's
// hand-written encoding.
func TestBoltVector(t *testing.T) {
	var f xprotocol.Frame
	n, err := bolt.New(bolt.Options{}).Decode(BoltVector, &f)
	if err != nil || n != 45 || len(BoltVector) != 45 {
		t.Fatalf("decode: n=%d len=%d err=%v", n, len(BoltVector), err)
	}
	m := bolt.MessageOf(&f)
	if f.Kind != xprotocol.KindRequest || f.ID != 1 || string(f.Service) != "test" || string(m.Content) != "null" || m.Timeout != -1 {
		t.Fatalf("decoded %+v / %+v", f, m)
	}
	spec := BoltSpec{Version: 1, Type: 1, Cmd: 1, Ver2: 1, ID: 1, Codec: 1, Timeout: -1,
		Headers: []BoltHeader{{Key: []byte("service"), Value: []byte("test")}}, Content: []byte("null")}
	if got := spec.Bytes(); !bytes.Equal(got, BoltVector) {
		t.Fatalf("generator writes\n% x\nwant\n% x", got, BoltVector)
	}
}

// TestBoltGenAgainstCodec decodes every generated frame with mosnlite's codec, checks
// the fields, and re-encodes it (frames without null pairs) byte for byte.
func TestBoltGenAgainstCodec(t *testing.T) {
	g := NewBoltGen(1)
	codec := bolt.New(bolt.Options{})
	var specs []BoltSpec
	for i := 0; i < 84; i++ {
		req := g.Request(i, "svc", "m", (i/6)%2 == 1)
		specs = append(specs, req, g.Response(i, &req), g.Heartbeat(i))
	}
	seen := map[string]bool{}
	for i, s := range specs {
		raw := s.Bytes()
		var f xprotocol.Frame
		n, err := codec.Decode(raw, &f)
		if err != nil || n != len(raw) {
			t.Fatalf("spec %d: decode n=%d/%d err=%v", i, n, len(raw), err)
		}
		m := bolt.MessageOf(&f)
		if uint32(f.ID) != s.ID || f.Version != s.Version || m.Codec != s.Codec || m.Ver2 != s.Ver2 ||
			!bytes.Equal(m.Class, s.Class) || !bytes.Equal(m.Content, s.Content) {
			t.Fatalf("spec %d: decoded %+v, spec %+v", i, m, s)
		}
		if s.Version == 2 && (m.Ver1 != s.Ver1 || m.Switch != s.Switch) {
			t.Fatalf("spec %d: ver1/switch %d/%d, want %d/%d", i, m.Ver1, m.Switch, s.Ver1, s.Switch)
		}
		if s.IsRequest() && m.Timeout != s.Timeout || !s.IsRequest() && m.Status != s.Status {
			t.Fatalf("spec %d: timeout/status %d/%d", i, m.Timeout, m.Status)
		}
		nulls := false
		for _, h := range s.Headers {
			nulls = nulls || h.NullKey || h.NullValue
		}
		if !nulls {
			out := buffer.NewPool().NewBuffer(len(raw))
			if err := codec.EncodeMessage(out, &m); err != nil || !bytes.Equal(out.Bytes(), raw) {
				t.Fatalf("spec %d: re-encode err=%v\n% x\nwant\n% x", i, err, out.Bytes(), raw)
			}
			out.Release()
		}
		seen[fmt.Sprintf("v%d/%d/%#x/crc=%v/kind=%d", s.Version, s.Ver1, s.Switch, s.HasCRC(), f.Kind)] = true
	}
	for _, want := range []string{"v1/0/0x0/crc=false/kind=1", "v1/0/0x0/crc=false/kind=2", "v1/0/0x0/crc=false/kind=3",
		"v1/0/0x0/crc=false/kind=4", "v2/2/0x1/crc=true/kind=1", "v2/2/0x1/crc=true/kind=2", "v2/2/0x1/crc=true/kind=3",
		"v2/2/0x1/crc=true/kind=4", "v2/1/0x1/crc=false/kind=1", "v2/2/0x81/crc=true/kind=1"} {
		if !seen[want] {
			t.Errorf("generator never produced %s (got %v)", want, seen)
		}
	}
}

// TestDubboLibraryFramesAgainstCodec: frames the library encodes are what mosnlite's
// dubbo codec expects (service, method, version, group, timeout, kinds).
func TestDubboLibraryFramesAgainstCodec(t *testing.T) {
	codec := dubbo.New(dubbo.Options{})
	raw, err := EncodeDubboRequest(77, echoSvc, []any{"hi", int32(7), []byte{1, 2}}, map[string]string{"k": "v"}, true)
	if err != nil {
		t.Fatal(err)
	}
	var f xprotocol.Frame
	if n, err := codec.Decode(raw, &f); err != nil || n != len(raw) {
		t.Fatalf("decode n=%d/%d err=%v", n, len(raw), err)
	}
	if err := codec.DecodeAttachments(&f); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"service": echoSvc.Path, "method": "echo", "version": "1.0.0", "group": "g1", "k": "v"} {
		if v, _ := f.Header(k); string(v) != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}
	if f.Kind != xprotocol.KindRequest || f.ID != 77 || f.Timeout != 3*time.Second {
		t.Errorf("kind %d id %d timeout %v", f.Kind, f.ID, f.Timeout)
	}
	ow, _ := EncodeDubboRequest(78, echoSvc, nil, nil, false)
	hb, _ := EncodeDubboHeartbeat(79)
	hr, _ := EncodeDubboHeartbeatReply(79)
	resp, _ := EncodeDubboResponse(77, hessian.Response_OK, "x", map[string]string{})
	for _, c := range []struct {
		raw  []byte
		kind xprotocol.Kind
	}{{ow, xprotocol.KindOneway}, {hb, xprotocol.KindHeartbeat}, {hr, xprotocol.KindHeartbeatReply}, {resp, xprotocol.KindResponse}} {
		f.Reset()
		if _, err := codec.Decode(c.raw, &f); err != nil || f.Kind != c.kind {
			t.Errorf("% x: kind %d err %v, want kind %d", c.raw[:4], f.Kind, err, c.kind)
		}
	}
}

// TestDubboPeers: client and server directly, 200 calls in flight on one connection.
func TestDubboPeers(t *testing.T) {
	s := startDubbo(t, DubboServerOptions{Name: "a", Record: true, SlowDelay: 300 * time.Millisecond})
	c := dialDubbo(t, s.Addr())
	ctx := ctxT(t, 20*time.Second)

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			arg := "payload-" + strconv.Itoa(i) + strings.Repeat("x", i)
			res, err := c.Call(ctx, echoSvc, []any{arg}, map[string]string{"seq": strconv.Itoa(i)})
			if err != nil {
				errs <- err
				return
			}
			if res.Status != hessian.Response_OK || res.Value != arg || res.Attachments[AttServer] != "a" ||
				res.Attachments["seq"] != strconv.Itoa(i) || res.Attachments["group"] != "g1" || res.Exception != nil {
				errs <- fmt.Errorf("call %d: %+v", i, res)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s.Requests.Load() != n || c.Unmatched.Load() != 0 {
		t.Fatalf("server saw %d requests, client %d unmatched", s.Requests.Load(), c.Unmatched.Load())
	}

	// Arguments of several types come back as the library decodes them.
	res, err := c.Call(ctx, echoSvc, []any{"s", int32(5), []byte{9, 8}}, nil)
	if err != nil || res.Status != hessian.Response_OK {
		t.Fatalf("multi-arg: %+v %v", res, err)
	}
	if l, ok := res.Value.([]any); !ok || len(l) != 3 || l[0] != "s" || l[1] != int32(5) || !bytes.Equal(l[2].([]byte), []byte{9, 8}) {
		t.Fatalf("multi-arg value %#v", res.Value)
	}

	// One-way, heartbeat, exception, error status.
	for i := 0; i < 5; i++ {
		if err := c.Oneway(echoSvc, []any{"ow"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	hb, err := c.Heartbeat(ctx)
	if err != nil || !hb.Heartbeat || hb.Status != hessian.Response_OK {
		t.Fatalf("heartbeat: %+v %v", hb, err)
	}
	testutil.Eventually(t, 10*time.Second, "5 one-ways", func() bool { return s.Oneways.Load() == 5 })
	fail := echoSvc
	fail.Method = MethodFail
	if res, err := c.Call(ctx, fail, []any{"x"}, nil); err != nil || res.Status != hessian.Response_OK || res.Exception == nil {
		t.Fatalf("fail: %+v %v", res, err)
	}
	fail.Method = MethodError
	if res, err := c.Call(ctx, fail, []any{"x"}, nil); err != nil || res.Status != hessian.Response_SERVICE_ERROR ||
		res.Exception == nil || !strings.Contains(res.Exception.Error(), "error requested") {
		t.Fatalf("error: %+v %v", res, err)
	}
	rec := s.Recorded()
	if len(rec) < n || rec[0].Path != echoSvc.Path || rec[0].Version != "1.0.0" || rec[0].Attachments["group"] != "g1" {
		t.Fatalf("recorded %d, first %+v", len(rec), rec[0])
	}

	// A slow call outlives a short context; then close answers nothing and fails every
	// pending call on the connection.
	slow := echoSvc
	slow.Method = MethodSlow
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = c.Call(short, slow, nil, nil)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow: %v", err)
	}
	pending := make(chan error, 10)
	for i := 0; i < 10; i++ {
		go func() { _, err := c.Call(ctx, slow, nil, nil); pending <- err }()
	}
	testutil.Eventually(t, 10*time.Second, "10 slow requests", func() bool { return s.Requests.Load() >= n+4+10 })
	closer := echoSvc
	closer.Method = MethodClose
	if _, err := c.Call(ctx, closer, nil, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("close: %v", err)
	}
	for i := 0; i < 10; i++ {
		if err := <-pending; !errors.Is(err, ErrClosed) {
			t.Fatalf("pending call: %v", err)
		}
	}
}

func TestDubboFastServer(t *testing.T) {
	s := startDubbo(t, DubboServerOptions{Name: "f", Fast: true, FastValue: "ok"})
	c := dialDubbo(t, s.Addr())
	ctx := ctxT(t, 10*time.Second)
	for i := 0; i < 3; i++ {
		res, err := c.Call(ctx, echoSvc, []any{"x"}, nil)
		if err != nil || res.Value != "ok" || res.Attachments[AttServer] != "f" {
			t.Fatalf("%+v %v", res, err)
		}
	}
	if hb, err := c.Heartbeat(ctx); err != nil || !hb.Heartbeat {
		t.Fatalf("heartbeat %+v %v", hb, err)
	}
}

func startBolt(t *testing.T, o BoltServerOptions) *BoltServer {
	t.Helper()
	s, err := StartBoltServer(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func dialBolt(t *testing.T, addr string) *BoltClient {
	t.Helper()
	c, err := DialBolt(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// GenResponder answers generated requests (found by their BoltHeaderSeq header) with the
// generated responses, id set to the request's.
func genResponder(resps map[int][]byte) func(raw []byte, f *xprotocol.Frame) ([]byte, bool) {
	return func(raw []byte, f *xprotocol.Frame) ([]byte, bool) {
		v, ok := f.Header(BoltHeaderSeq)
		if !ok {
			return nil, false
		}
		seq, _ := strconv.Atoi(string(v))
		r, ok := resps[seq]
		if !ok {
			return nil, false
		}
		out := append([]byte(nil), r...)
		SetBoltID(out, uint32(f.ID))
		return out, true
	}
}

// TestBoltPeers: v1 and v2 mixed on one connection, 200 in flight; generated frames both
// ways; one-way, heartbeat, slow, close.
func TestBoltPeers(t *testing.T) {
	g := NewBoltGen(7)
	reqs := g.Requests(60, "svc", true)
	resps := map[int][]byte{}
	for i := range reqs {
		r := g.Response(i, &reqs[i])
		resps[i] = r.Bytes()
	}
	s := startBolt(t, BoltServerOptions{Name: "b", Record: true, SlowDelay: 300 * time.Millisecond, Handler: genResponder(resps)})
	c := dialBolt(t, s.Addr())
	ctx := ctxT(t, 20*time.Second)

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			content := []byte("content-" + strconv.Itoa(i))
			r, err := c.Call(ctx, BoltRequest(byte(1+i%2), "svc", "echo", content))
			if err != nil {
				errs <- err
				return
			}
			m := r.Message()
			if srv, _ := r.Header(BoltHeaderServer); m.Status != 0 || !bytes.Equal(m.Content, content) ||
				srv != "b" || r.Frame.Version != byte(1+i%2) || string(m.Class) != SofaResponseClass {
				errs <- fmt.Errorf("call %d: %+v", i, m)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	oneways := 0
	for i := range reqs {
		raw := reqs[i].Bytes()
		if reqs[i].Type == 2 {
			oneways++
			if _, err := c.Send(raw); err != nil {
				t.Fatal(err)
			}
			continue
		}
		r, _, err := c.RoundTrip(ctx, raw)
		if err != nil {
			t.Fatalf("gen %d: %v", i, err)
		}
		if err := SameBoltFrame(resps[i], r.Raw); err != nil {
			t.Fatalf("gen %d response: %v", i, err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "one-ways", func() bool { return s.Oneways.Load() == int64(oneways) })
	// The server received the generated frames as they were sent (ids aside).
	got := map[string][]byte{}
	for _, raw := range s.Recorded() {
		var f xprotocol.Frame
		if _, err := bolt.New(bolt.Options{}).Decode(raw, &f); err == nil {
			if v, ok := f.Header(BoltHeaderSeq); ok {
				got[string(v)] = raw
			}
		}
	}
	for i := range reqs {
		if err := SameBoltFrame(reqs[i].Bytes(), got[strconv.Itoa(i)]); err != nil {
			t.Fatalf("gen request %d at the server: %v", i, err)
		}
	}

	for i := 0; i < 6; i++ {
		hb := g.Heartbeat(i)
		r, id, err := c.RoundTrip(ctx, hb.Bytes())
		if err != nil || r.Frame.Kind != xprotocol.KindHeartbeatReply || uint32(r.Frame.ID) != id || r.Frame.Version != hb.Version {
			t.Fatalf("heartbeat %d: %+v %v", i, r, err)
		}
	}
	if c.Unmatched.Load() != 0 {
		t.Fatalf("%d unmatched responses", c.Unmatched.Load())
	}
	slow, closeReq := BoltRequest(1, "svc", MethodSlow, nil), BoltRequest(2, "svc", MethodClose, nil)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err := c.Call(short, slow)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow: %v", err)
	}
	if _, err := c.Call(ctx, closeReq); !errors.Is(err, ErrClosed) {
		t.Fatalf("close: %v", err)
	}
}

// TestBoltClientGoAway: a go-away (mosnlite's codec, id 0) closes GoAway; the response
// that follows it still answers the request in flight, and nothing counts as unmatched.
func TestBoltClientGoAway(t *testing.T) {
	codec := bolt.New(bolt.Options{})
	s := startBolt(t, BoltServerOptions{Handler: func(raw []byte, f *xprotocol.Frame) ([]byte, bool) {
		m := bolt.MessageOf(f)
		b := buffer.NewPool().NewBuffer(256)
		defer b.Release()
		if err := codec.GoAway(b, 0); err != nil {
			return nil, false
		}
		resp := bolt.Message{Kind: xprotocol.KindResponse, Version: m.Version, Ver1: m.Ver1, Ver2: m.Ver2,
			ID: m.ID, Codec: m.Codec, Class: []byte(SofaResponseClass), Content: m.Content}
		if err := codec.EncodeMessage(b, &resp); err != nil {
			return nil, false
		}
		return append([]byte(nil), b.Bytes()...), true
	}})
	c := dialBolt(t, s.Addr())
	select {
	case <-c.GoAway():
		t.Fatal("GoAway closed before any go-away")
	default:
	}
	r, err := c.Call(ctxT(t, 10*time.Second), BoltRequest(1, "svc", "echo", []byte("in flight")))
	if err != nil || string(r.Message().Content) != "in flight" {
		t.Fatalf("call: %+v %v", r, err)
	}
	select {
	case <-c.GoAway():
	case <-time.After(10 * time.Second):
		t.Fatal("GoAway not closed after the go-away")
	}
	if u := c.Unmatched.Load(); u != 0 {
		t.Fatalf("%d unmatched frames", u)
	}
}

// TestDubboClientReadonly: the readonly event mosnlite's dubbo codec writes is what the
// library decodes as "R"; it closes GoAway, is not counted as undecodable, and the
// response after it still answers the request in flight. A heartbeat is no readonly event.
func TestDubboClientReadonly(t *testing.T) {
	ro := buffer.NewPool().NewBuffer(64)
	defer ro.Release()
	if err := dubbo.New(dubbo.Options{}).GoAway(ro, 0); err != nil {
		t.Fatal(err)
	}
	readonly := append([]byte(nil), ro.Bytes()...)
	hb, err := EncodeDubboHeartbeat(3)
	if err != nil {
		t.Fatal(err)
	}
	if !IsDubboReadonly(readonly) || IsDubboReadonly(hb) || IsDubboReadonly(readonly[:DubboHeaderLen]) {
		t.Fatal("IsDubboReadonly: wrong answer for the readonly event, a heartbeat or an empty body")
	}
	srv := testutil.StartTCP(t, func(nc *net.TCPConn) {
		frame, err := ReadDubboFrame(bufio.NewReader(nc), DubboMaxBody)
		if err != nil {
			return
		}
		_, req, err := DecodeDubboRequest(frame)
		if err != nil {
			return
		}
		resp, err := EncodeDubboResponse(req.ID, hessian.Response_OK, req.Args[0], nil)
		if err != nil {
			return
		}
		_, _ = nc.Write(append(append([]byte(nil), readonly...), resp...))
		_, _ = io.Copy(io.Discard, nc)
	})
	c := dialDubbo(t, srv.Addr())
	res, err := c.Call(ctxT(t, 10*time.Second), echoSvc, []any{"in flight"}, nil)
	if err != nil || res.Status != hessian.Response_OK || res.Value != "in flight" {
		t.Fatalf("call: %+v %v", res, err)
	}
	select {
	case <-c.GoAway():
	case <-time.After(10 * time.Second):
		t.Fatal("GoAway not closed after the readonly event")
	}
	if c.Undecodable.Load() != 0 || c.Unmatched.Load() != 0 {
		t.Fatalf("%d undecodable, %d unmatched frames", c.Undecodable.Load(), c.Unmatched.Load())
	}
}

package xprotocol_test

import (
	"bytes"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	xproto "github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/dubbo"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// dubboServer answers every request but service "hang" with the value "ok:<method>".
type dubboServer struct {
	*testutil.TCPServer
	reqs atomic.Int64
}

func startDubboServer(t testing.TB) *dubboServer {
	t.Helper()
	s := &dubboServer{}
	s.TCPServer = testutil.StartTCP(t, func(c *net.TCPConn) { s.serveConn(c) })
	return s
}

func (s *dubboServer) serveConn(c net.Conn) {
	xp := dubbo.New(dubbo.Options{})
	r := newFrameReader(c, xp)
	for {
		f, err := r.next()
		if err != nil {
			return
		}
		var out []byte
		switch f.Kind {
		case xproto.KindHeartbeat:
			b := buffer.NewPool().NewBuffer(64)
			_ = xp.HeartbeatReply(b, f)
			out = bytes.Clone(b.Bytes())
			b.Release()
		case xproto.KindRequest:
			s.reqs.Add(1)
			if string(f.Service) == "hang" {
				continue
			}
			out, err = (&dubbo.Response{ID: f.ID, Value: "ok:" + string(f.Method)}).Bytes()
			if err != nil {
				panic(err)
			}
		case xproto.KindOneway:
			s.reqs.Add(1)
			continue
		default:
			continue
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

func dubboReq(t testing.TB, r dubbo.Request) []byte {
	t.Helper()
	b, err := r.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dubboRoundTrip(t *testing.T, c net.Conn, r *frameReader, raw []byte, id uint64) *xproto.Frame {
	t.Helper()
	if _, err := c.Write(raw); err != nil {
		t.Fatal(err)
	}
	f, err := r.next()
	if err != nil {
		t.Fatal(err)
	}
	if f.ID != id {
		t.Fatalf("response id %d, want %d", f.ID, id)
	}
	return f
}

// TestDubbo: routing on service and group (from the attachments), the request's timeout
// attachment, heartbeats, one-way requests and a body the decoder cannot read (answered
// with status 70; the connection keeps serving).
func TestDubbo(t *testing.T) {
	up := startDubboServer(t)
	v := startEnv(t, dubbo.New(dubbo.Options{}), up.Addr(), nil)
	c := dial(t, v.addr)
	r := newFrameReader(c, dubbo.New(dubbo.Options{}))

	// Many in flight: ids restored.
	var all []byte
	for i := uint64(1); i <= 50; i++ {
		all = append(all, dubboReq(t, dubbo.Request{ID: 1<<40 + i, Service: "echo.svc", Method: "m", Args: []any{"x"}})...)
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for len(seen) < 50 {
		f, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		if f.Status != dubbo.StatusOK || f.ID>>40 != 1 || seen[f.ID] {
			t.Fatalf("id %#x status %d", f.ID, f.Status)
		}
		seen[f.ID] = true
	}

	// Group routing: g1 goes to the live cluster, no group to the dead one (status 60).
	f := dubboRoundTrip(t, c, r, dubboReq(t, dubbo.Request{ID: 100, Service: "grouped", Group: "g1", Method: "m"}), 100)
	if f.Status != dubbo.StatusOK {
		t.Fatalf("group g1: status %d", f.Status)
	}
	f = dubboRoundTrip(t, c, r, dubboReq(t, dubbo.Request{ID: 101, Service: "grouped", Method: "m"}), 101)
	if f.Status != dubbo.StatusServiceNotFound {
		t.Fatalf("no group: status %d", f.Status)
	}

	// The timeout attachment bounds the wait: client timeout 30.
	f = dubboRoundTrip(t, c, r, dubboReq(t, dubbo.Request{ID: 102, Service: "hang", Method: "m", Timeout: 100 * time.Millisecond}), 102)
	if f.Status != dubbo.StatusClientTimeout {
		t.Fatalf("timeout: status %d", f.Status)
	}

	// Heartbeat answered locally.
	hb := buffer.NewPool().NewBuffer(64)
	_ = dubbo.New(dubbo.Options{}).Heartbeat(hb, 103)
	f = dubboRoundTrip(t, c, r, bytes.Clone(hb.Bytes()), 103)
	hb.Release()
	if f.Kind != xproto.KindHeartbeatReply {
		t.Fatalf("heartbeat answered with kind %d", f.Kind)
	}

	// Unreadable arguments: status 70, connection alive.
	bad := dubboReq(t, dubbo.Request{ID: 104, Service: "echo.svc", Method: "m", Args: []any{"abcdef"}})
	i := bytes.Index(bad, []byte("\x06abcdef"))
	if i < 0 {
		t.Fatal("argument not found in the request")
	}
	bad[i] = 'Z' // a list/map end where a string should be
	f = dubboRoundTrip(t, c, r, bad, 104)
	if f.Status != dubbo.StatusServiceError {
		t.Fatalf("bad body: status %d", f.Status)
	}
	if v.failuresOf("dubbo", "codec_error") != 1 {
		t.Fatal("codec error not counted")
	}

	// One-way: forwarded, not answered.
	before := up.reqs.Load()
	if _, err := c.Write(dubboReq(t, dubbo.Request{ID: 105, OneWay: true, Service: "echo.svc", Method: "m"})); err != nil {
		t.Fatal(err)
	}
	f = dubboRoundTrip(t, c, r, dubboReq(t, dubbo.Request{ID: 106, Service: "echo.svc", Method: "m"}), 106)
	if f.Status != dubbo.StatusOK || up.reqs.Load() != before+2 {
		t.Fatalf("after one-way: status %d, upstream requests %d", f.Status, up.reqs.Load()-before)
	}
}

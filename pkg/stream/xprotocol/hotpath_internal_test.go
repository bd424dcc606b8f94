package xprotocol

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network"
	xproto "github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/dubbo"
	"github.com/mosnlite/mosnlite/pkg/proxy/proxytest"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// sink is a net.Conn that discards writes; reads are never made on it here.
type sink struct{ net.Conn }

func (sink) Write(p []byte) (int, error)      { return len(p), nil }
func (sink) Close() error                     { return nil }
func (sink) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (sink) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} }
func (sink) SetDeadline(time.Time) error      { return nil }
func (sink) SetReadDeadline(time.Time) error  { return nil }
func (sink) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkHotPath measures the engine's forwarding work for one request and its
// response, without sockets: downstream decode → route → pick → id swap → enqueue and
// write upstream; upstream response decode → pending lookup → id restore → write
// downstream. bolt must report 0 allocs/op; dubbo pays for decoding the attachments
// (group and timeout live after the arguments) with dubbo-go-hessian2.
func BenchmarkHotPath(b *testing.B) {
	b.Run("bolt", func(b *testing.B) {
		xp := bolt.New(bolt.Options{})
		enc := func(msg bolt.Message) []byte {
			buf := buffer.NewPool().NewBuffer(256)
			if err := xp.EncodeMessage(buf, &msg); err != nil {
				b.Fatal(err)
			}
			return append([]byte(nil), buf.Bytes()...)
		}
		req := enc(bolt.Message{Kind: xproto.KindRequest, Version: 1, Ver2: 1, Codec: 1, ID: 7, Timeout: 3000,
			Class: []byte("com.alipay.sofa.rpc.core.request.SofaRequest"),
			Headers: []xproto.Header{
				{Key: []byte("service"), Value: []byte("com.example.Echo")},
				{Key: []byte("sofa_head_method_name"), Value: []byte("echo")},
				{Key: []byte("rpc_trace_context.sofaTraceId"), Value: []byte("0a0fe8ec1592365000000100014528")},
			},
			Content: make([]byte, 256)})
		resp := enc(bolt.Message{Kind: xproto.KindResponse, Version: 1, Ver2: 1, Codec: 1, ID: 0,
			Class: []byte("com.alipay.sofa.rpc.core.response.SofaResponse"), Content: make([]byte, 256)})
		benchHotPath(b, xp, req, resp)
	})
	b.Run("dubbo", func(b *testing.B) {
		req, err := (&dubbo.Request{ID: 7, Service: "com.example.Echo", Version: "1.0.0", Group: "g", Method: "echo",
			Timeout: 3 * time.Second, Args: []any{"hello"}}).Bytes()
		if err != nil {
			b.Fatal(err)
		}
		resp, err := (&dubbo.Response{ID: 7, Value: "hello"}).Bytes()
		if err != nil {
			b.Fatal(err)
		}
		benchHotPath(b, dubbo.New(dubbo.Options{}), req, resp)
	})
}

func benchHotPath(b *testing.B, xp xproto.Codec, req, resp []byte) {
	rts := proxytest.Routers(b, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],
		"routers":[{"match":{"headers":[{"name":"service","value":"com.example.Echo"}]},"route":{"cluster_name":"c"}}]}]}`)
	m := metrics.New()
	mgr := proxytest.Clusters(b, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"127.0.0.1:9"}]}]`, m)
	pool := buffer.NewPool()
	e := New(Config{Listener: "l", Codec: xp, Routers: rts, RouterName: "r", Clusters: mgr, Pool: pool, Metrics: m})

	// One upstream connection, installed by hand (no goroutines).
	cl, _ := mgr.Get("c")
	host := cl.Hosts()[0]
	hp := e.clusterPool("c").host(host.Addr())
	up := &upConn{e: e, hp: hp, cl: cl, host: host, done: func(lb.DoneInfo) {}, pending: map[uint64]pending{}}
	up.c = network.NewConn(sink{}, network.ConnOptions{Pool: pool})
	up.wheel.tick = int64(time.Second)
	up.wheel.cur = monoNow() / up.wheel.tick
	up.rdOut.e, up.tkOut.e = e, e
	hp.size.Store(1)
	hp.mu.Lock()
	hp.setLocked([]*upConn{up})
	hp.mu.Unlock()

	s := &session{e: e, ctx: context.Background(), c: network.NewConn(sink{}, network.ConnOptions{Pool: pool})}
	s.view.f = &s.f
	s.wsig, s.wroom, s.wdone = make(chan struct{}, 1), make(chan struct{}, 1), make(chan struct{})
	go s.writer()
	defer func() { s.c.Close(""); <-s.wdone }()

	in := pool.NewBuffer(4096)
	out := pool.NewBuffer(4096)
	var f xproto.Frame // the test's own view of the response, to patch its id
	run := func() {
		in.Reset()
		_, _ = in.Write(req)
		if err := s.onData(in); err != nil || in.Len() != 0 {
			b.Fatal("request not consumed", err)
		}
		out.Reset()
		_, _ = out.Write(resp)
		f.Reset()
		if _, err := xp.Decode(out.Bytes(), &f); err != nil {
			b.Fatal(err)
		}
		xp.SetID(&f, uint64(up.nextID)) // the id the engine gave the request
		if err := up.onData(out); err != nil || out.Len() != 0 {
			b.Fatal("response not consumed", err)
		}
	}
	for range 100 { // warm the pools and maps
		run()
	}
	if s.inflight.Load() != 0 || len(up.pending) != 0 {
		b.Fatalf("in flight %d, pending %d", s.inflight.Load(), len(up.pending))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		run()
	}
	b.StopTimer()
	if s.inflight.Load() != 0 || len(up.pending) != 0 {
		b.Fatalf("in flight %d, pending %d", s.inflight.Load(), len(up.pending))
	}
	in.Release()
	out.Release()
}

package xprotocol

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/pkg/proxy/proxytest"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// TestClientConnection drives an upstream connection through stream.ClientConnection:
// a go-away from the proxy takes it out of its pool at once and closes it once its last
// pending request is gone.
func TestClientConnection(t *testing.T) {
	up := testutil.StartPeer(t)
	m := metrics.New()
	mgr := proxytest.Clusters(t, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+up.Addr+`"}]}]`, m)
	pool := buffer.NewPool()
	e := New(Config{Listener: "l", Codec: bolt.New(bolt.Options{}), Routers: new(router.Tables), RouterName: "r",
		Clusters: mgr, Pool: pool, Metrics: m, Tick: 10 * time.Millisecond, HeartbeatInterval: -1})
	defer e.Close()
	cl, _ := mgr.Get("c")
	host := cl.Hosts()[0]
	raw, err := net.DialTimeout("tcp", host.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	up.Accept(t, 5*time.Second) // the upstream's side, closed at cleanup
	hp := e.clusterPool("c").host(host.Addr())
	u, err := e.newUpConn(hp, cl, host, raw, func(lb.DoneInfo) {})
	if err != nil {
		t.Fatal(err)
	}
	hp.mu.Lock()
	hp.setLocked([]*upConn{u})
	hp.mu.Unlock()
	var cc stream.ClientConnection = u
	if cc.Protocol() != stream.Bolt || !cc.Available() || cc.ActiveStreams() != 0 {
		t.Fatalf("new connection: %s available=%v active=%d", cc.Protocol(), cc.Available(), cc.ActiveStreams())
	}

	s := &session{e: e, ctx: context.Background(), c: network.NewConn(sink{}, network.ConnOptions{Pool: pool})}
	s.wsig, s.wroom, s.wdone = make(chan struct{}, 1), make(chan struct{}, 1), make(chan struct{})
	go s.writer()
	defer func() { s.c.Close(""); <-s.wdone }()
	p := pending{s: s, start: monoNow(), deadline: monoNow() + int64(time.Minute), pickDone: func(lb.DoneInfo) {}, cl: cl}
	id, ok := u.register(&p, true)
	if !ok || cc.ActiveStreams() != 1 {
		t.Fatalf("register: %v, active %d", ok, cc.ActiveStreams())
	}

	cc.GoAway()
	if cc.Available() || slices.Contains(*hp.conns.Load(), u) {
		t.Fatal("after GoAway the connection is still offered for new requests")
	}
	if _, ok := u.register(&p, true); ok {
		t.Fatal("a draining connection took a new request")
	}
	select {
	case <-u.c.Done():
		t.Fatal("closed with a request pending")
	case <-time.After(50 * time.Millisecond): // several ticks
	}
	if _, ok := u.take(id); !ok {
		t.Fatal("pending request lost")
	}
	s.inflight.Add(-1)
	select {
	case <-u.c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("an idle draining connection was not closed")
	}
	if err := cc.Close(); err != nil {
		t.Fatal(err)
	}
}

package connpool_test

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/connpool"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// clusterConn is a connection dialled through a cluster, as the proxy's are: closing it
// releases the cluster's max_connections unit.
type clusterConn struct {
	raw    net.Conn
	host   *cluster.Host
	done   func(lb.DoneInfo)
	closed atomic.Bool
}

func (c *clusterConn) NetConn() net.Conn { return c.raw }

// Close closes the socket and gives the unit back; closed is set last, so a test that
// saw it also sees the unit returned.
func (c *clusterConn) Close() error {
	err := c.raw.Close()
	c.done(lb.DoneInfo{})
	c.closed.Store(true)
	return err
}

// hostGone is the Stale a proxy gives its pool: the connection's host left its cluster
// or is down.
func hostGone(c connpool.Conn) bool {
	h := c.(*clusterConn).host
	return h.Removed() || !h.Healthy()
}

// TestPingPongClosesGoneHostsAtOnce: with the cluster manager's HostsChanged, the idle
// connections to a host that an update removed, or that is marked down, are closed as
// the change happens (the sweeper, an hour-long idle timeout's, would wait 30 minutes),
// and their max_connections units come back.
func TestPingPongClosesGoneHostsAtOnce(t *testing.T) {
	a, b := newPeer(t), newPeer(t)
	m := cluster.NewManager(cluster.Options{})
	cfg := func(addrs ...string) []config.Cluster {
		c := config.Cluster{Name: "c"}
		for _, addr := range addrs {
			c.Hosts = append(c.Hosts, config.Host{Address: addr})
		}
		return []config.Cluster{c}
	}
	if err := m.Apply(cfg(a.addr, b.addr)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Remove("c") })
	cl, _ := m.Get("c")
	p := newPingPongOf[*clusterConn](t, connpool.PingPongOptions{IdleTimeout: time.Hour, Stale: hostGone, HostsChanged: m.HostsChanged})
	now := time.Now()
	conns := map[string]*clusterConn{}
	for _, h := range cl.Hosts() {
		raw, got, done, err := cl.DialHost(t.Context(), nil, h)
		if err != nil {
			t.Fatal(err)
		}
		c := &clusterConn{raw: raw, host: got, done: done}
		conns[got.Addr()] = c
		p.Put(got.Addr(), c, now)
	}
	if n, _ := cl.Usage(cluster.MaxConnections); n != 2 {
		t.Fatalf("connections in use = %d; want 2", n)
	}

	if err := m.Apply(cfg(a.addr)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, testTimeout, "the removed host's idle connection to close", conns[b.addr].closed.Load)
	if _, ok := p.Get(b.addr, now); ok || conns[a.addr].closed.Load() {
		t.Fatalf("after removing %s: Get found a connection %v, the other host's closed %v", b.addr, ok, conns[a.addr].closed.Load())
	}
	if n, _ := cl.Usage(cluster.MaxConnections); n != 1 {
		t.Fatalf("connections in use = %d; want 1", n)
	}

	cl.SetHostHealth(a.addr, false)
	testutil.Eventually(t, testTimeout, "the down host's idle connection to close", conns[a.addr].closed.Load)
	if n, _ := cl.Usage(cluster.MaxConnections); n != 0 || p.Len(a.addr) != 0 {
		t.Fatalf("connections in use %d, pooled %d; want 0, 0", n, p.Len(a.addr))
	}
}

// TestPingPongCloseEndsWatcher: Close ends the HostsChanged watcher (goleak checks it)
// also when no change ever came, and a Put after Close starts none.
func TestPingPongCloseEndsWatcher(t *testing.T) {
	srv := newPeer(t)
	never := make(chan struct{})
	var asked atomic.Int32
	p := connpool.NewPingPong[*testConn](connpool.PingPongOptions{Stale: staleConn,
		HostsChanged: func() <-chan struct{} { asked.Add(1); return never }})
	c, _ := srv.dial(t)
	p.Put(srv.addr, c, time.Now())
	if asked.Load() != 1 {
		t.Fatalf("HostsChanged asked %d times; want 1", asked.Load())
	}
	_ = p.Close()
	if !c.closed() {
		t.Fatal("Close left an idle connection open")
	}
	q := connpool.NewPingPong[*testConn](connpool.PingPongOptions{Stale: staleConn,
		HostsChanged: func() <-chan struct{} { asked.Add(1); return never }})
	_ = q.Close()
	d, _ := srv.dial(t)
	q.Put(srv.addr, d, time.Now())
	if asked.Load() != 1 || !d.closed() {
		t.Fatalf("Put after Close: watcher asked %d times, connection closed %v", asked.Load(), d.closed())
	}
}

func newPingPongOf[C connpool.Conn](t *testing.T, o connpool.PingPongOptions) *connpool.PingPong[C] {
	t.Helper()
	p := connpool.NewPingPong[C](o)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

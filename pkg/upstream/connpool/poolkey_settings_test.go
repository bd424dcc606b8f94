package connpool_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/network/tlstest"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/connpool"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// sniffEcho is an echo upstream that speaks plain TCP or TLS on one address, as the
// client's first byte says, and records how each connection came (testutil.PlainOrTLS).
type sniffEcho struct {
	addr string
	*testutil.PlainOrTLS
}

func startSniffEcho(t *testing.T, cert tls.Certificate) *sniffEcho {
	t.Helper()
	p := testutil.NewPlainOrTLS(&tls.Config{Certificates: []tls.Certificate{cert}})
	srv := testutil.StartTCP(t, func(c *net.TCPConn) {
		wc, err := p.Wrap(c, testTimeout)
		if err != nil {
			return
		}
		_, _ = io.Copy(wc, wc)
	})
	return &sniffEcho{addr: srv.Addr(), PlainOrTLS: p}
}

// keyedConn is a cluster connection with the pool key of the host it was dialled to, as
// the proxy's upstream connections carry (they are Put back under it).
type keyedConn struct {
	clusterConn
	key string
}

// roundTrip sends one request on raw and reads its echo: the connection works.
func roundTrip(t *testing.T, raw net.Conn) {
	t.Helper()
	_ = raw.SetDeadline(time.Now().Add(testTimeout))
	defer func() { _ = raw.SetDeadline(time.Time{}) }()
	if _, err := raw.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(raw, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q, %v", buf, err)
	}
}

// isTLS reports whether raw was made with upstream TLS.
func isTLS(raw net.Conn) bool {
	_, ok := raw.(*tls.Conn)
	return ok
}

// poolKeyCluster applies cluster "c" with one host, addr, with the upstream TLS tc (nil:
// plain), and returns it.
func poolKeyCluster(t *testing.T, m *cluster.Manager, addr string, tc *config.TLSConfig) *cluster.Cluster {
	t.Helper()
	cfg := config.Cluster{Name: "c", Hosts: []config.Host{{Address: addr}}, TLSContext: tc}
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	cl, _ := m.Get("c")
	return cl
}

// TestPingPongNewTLSSettingsNotServedOldConnections: the proxy's HTTP/1 way of using a
// PingPong pool (Get by the picked host's PoolKey, else dial through the cluster; Put
// back under the key dialled; Stale: the connection's host removed or down). After the
// cluster is updated from plain to TLS on the same address, and then to another TLS
// server name, the next request goes out on a new connection made with the new settings;
// the idle connection of the old settings is closed at the update, and one in use
// finishes its request and is closed when put back. An update that changes nothing
// connection-related (a weight) leaves the idle connection to be reused.
func TestPingPongNewTLSSettingsNotServedOldConnections(t *testing.T) {
	ca := tlstest.NewCA(t)
	up := startSniffEcho(t, ca.Leaf(t, "127.0.0.1", "one.test", "two.test").TLS(t))
	m := cluster.NewManager(cluster.Options{})
	t.Cleanup(func() { _ = m.Remove("c") })
	cl := poolKeyCluster(t, m, up.addr, nil)
	p := newPingPongOf[*keyedConn](t, connpool.PingPongOptions{IdleTimeout: time.Hour,
		Stale: func(c connpool.Conn) bool {
			h := c.(*keyedConn).host
			return h.Removed() || !h.Healthy()
		},
		HostsChanged: m.HostsChanged})
	take := func(cl *cluster.Cluster) *keyedConn {
		t.Helper()
		h, done, err := cl.Pick(t.Context(), &lb.Request{})
		if err != nil {
			t.Fatal(err)
		}
		done(lb.DoneInfo{})
		if c, ok := p.Get(h.PoolKey(), time.Now()); ok {
			return c
		}
		raw, got, done, err := cl.DialHost(t.Context(), &lb.Request{}, h)
		if err != nil {
			t.Fatal(err)
		}
		return &keyedConn{clusterConn: clusterConn{raw: raw, host: got, done: done}, key: got.PoolKey()}
	}

	idle, busy := take(cl), take(cl)
	roundTrip(t, idle.raw)
	p.Put(idle.key, idle, time.Now())
	if err := m.Apply([]config.Cluster{{Name: "c", Hosts: []config.Host{{Address: up.addr, Weight: 3}}}}); err != nil {
		t.Fatal(err)
	}
	if c := take(cl); c != idle {
		t.Fatal("after a weight update the idle connection was not reused")
	} else {
		p.Put(c.key, c, time.Now())
	}

	cl = poolKeyCluster(t, m, up.addr, &config.TLSConfig{Status: true, CACert: ca.PEM, ServerName: "one.test"})
	c := take(cl)
	if !isTLS(c.raw) || up.Last() != "tls one.test" {
		t.Fatalf("after the update to TLS: request on TLS %v, the upstream last saw %q; want TLS one.test", isTLS(c.raw), up.Last())
	}
	testutil.Eventually(t, testTimeout, "the idle plain connection to close", idle.closed.Load)
	roundTrip(t, c.raw)
	roundTrip(t, busy.raw) // the request in flight under the old settings finishes
	p.Put(busy.key, busy, time.Now())
	if !busy.closed.Load() {
		t.Fatal("the plain connection in use was kept when put back")
	}
	p.Put(c.key, c, time.Now())

	cl = poolKeyCluster(t, m, up.addr, &config.TLSConfig{Status: true, CACert: ca.PEM, ServerName: "two.test"})
	d := take(cl)
	if d == c || up.Last() != "tls two.test" {
		t.Fatalf("after the server_name update: reused %v, the upstream last saw %q; want a new connection to two.test", d == c, up.Last())
	}
	testutil.Eventually(t, testTimeout, "the idle one.test connection to close", c.closed.Load)
	roundTrip(t, d.raw)
	_ = d.Close()
	if n, _ := cl.Usage(cluster.MaxConnections); n != 0 {
		t.Fatalf("connections in use = %d; want 0", n)
	}
}

// TestMultiplexNewTLSSettingsNotServedOldConnections: the HTTP/2 upstream pool's way of
// using a Multiplex pool (Acquire by the picked host's PoolKey, dial through the cluster,
// Stale: Manager.PoolKeyStale). After the cluster is updated from plain to TLS on the
// same address, a new stream goes out on a TLS connection; the idle plain connection is
// closed at the update and the busy one drained: its open stream finishes, then it closes.
func TestMultiplexNewTLSSettingsNotServedOldConnections(t *testing.T) {
	ca := tlstest.NewCA(t)
	up := startSniffEcho(t, ca.Leaf(t, "127.0.0.1", "one.test").TLS(t))
	m := cluster.NewManager(cluster.Options{})
	t.Cleanup(func() { _ = m.Remove("c") })
	cl := poolKeyCluster(t, m, up.addr, nil)
	p := newMultiplex(t, connpool.MultiplexOptions{IdleTimeout: time.Hour, Stale: m.PoolKeyStale, HostsChanged: m.HostsChanged})
	acq := func(cl *cluster.Cluster) *muxConn {
		t.Helper()
		h, done, err := cl.Pick(t.Context(), &lb.Request{})
		if err != nil {
			t.Fatal(err)
		}
		done(lb.DoneInfo{})
		c, pooled, err := p.Acquire(t.Context(), h.PoolKey(), func(ctx context.Context) (*muxConn, string, error) {
			raw, got, done, err := cl.DialHost(ctx, &lb.Request{}, h)
			if err != nil {
				return nil, "", err
			}
			t.Cleanup(func() { done(lb.DoneInfo{}) })
			return &muxConn{raw: raw, addr: got.Addr(), max: 1}, got.PoolKey(), nil
		})
		if err != nil || !pooled {
			t.Fatalf("Acquire = %v, pooled %v", err, pooled)
		}
		return c
	}

	busy := acq(cl)
	idle := acq(cl) // busy has its one stream open
	roundTrip(t, idle.raw)
	idle.end()

	cl = poolKeyCluster(t, m, up.addr, &config.TLSConfig{Status: true, CACert: ca.PEM, ServerName: "one.test"})
	c := acq(cl)
	if !isTLS(c.raw) || up.Last() != "tls one.test" {
		t.Fatalf("after the update to TLS: stream on TLS %v, the upstream last saw %q; want TLS one.test", isTLS(c.raw), up.Last())
	}
	testutil.Eventually(t, testTimeout, "the idle plain connection to close", idle.closed)
	roundTrip(t, c.raw)
	c.end()
	if busy.closed() {
		t.Fatal("the plain connection with an open stream was closed, not drained")
	}
	roundTrip(t, busy.raw) // its stream finishes
	busy.end()
	if !busy.closed() {
		t.Fatal("the drained plain connection stayed open after its last stream")
	}
}

package xprotocol_test

import (
	"crypto/tls"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/network/tlstest"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/dubbo"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// upOpen returns the connections s has accepted and not yet seen closed.
func upOpen(s *boltServer) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// simpleCluster is a round-robin cluster of addrs; maxConns > 0 sets max_connections.
func simpleCluster(name string, maxConns uint32, addrs ...string) config.Cluster {
	c := config.Cluster{Name: name, Type: "SIMPLE", LBType: "LB_ROUNDROBIN"}
	for _, a := range addrs {
		c.Hosts = append(c.Hosts, config.Host{Address: a})
	}
	if maxConns > 0 {
		c.CircuitBreakers = []config.CircuitBreaker{{MaxConnections: &maxConns}}
	}
	return c
}

func applyClusters(t *testing.T, v *env, cfgs ...config.Cluster) {
	t.Helper()
	if err := v.clusters.Apply(cfgs); err != nil {
		t.Fatal(err)
	}
}

func maxConnsInUse(cl *cluster.Cluster) int64 {
	n, _ := cl.Usage(cluster.MaxConnections)
	return n
}

// TestRemovedHostConnectionsDrain: when hosts leave cluster "c" and no request comes for
// them any more, the engine's connection to the idle one closes and gives back its
// max_connections unit; the one with a request in flight answers it, then closes; the
// host that stays keeps its connection, and a host added gets one within the limit.
func TestRemovedHostConnectionsDrain(t *testing.T) {
	ups := []*boltServer{startBoltServer(t), startBoltServer(t), startBoltServer(t)}
	add := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), ups[0].addr(), nil)
	applyClusters(t, v, simpleCluster("c", 3, ups[0].addr(), ups[1].addr(), ups[2].addr()))
	cl, _ := v.clusters.Get("c")
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))

	id := uint32(1)
	connected := func() bool {
		for _, u := range ups {
			if u.conns.Load() != 1 {
				return false
			}
		}
		return true
	}
	for ; id <= 9 && !connected(); id++ {
		if f := roundTrip(t, c, r, bolt.Message{ID: id, Headers: hdrs("service", "echo")}); f.Status != 0 {
			t.Fatalf("request %d: status %d", id, f.Status)
		}
	}
	if !connected() || v.e.UpstreamStats().Conns != 3 || maxConnsInUse(cl) != 3 {
		t.Fatalf("not one connection per host: engine %+v, max_connections in use %d", v.e.UpstreamStats(), maxConnsInUse(cl))
	}

	// A request held upstream on one host (busy), another host idle, the third kept.
	var before [3]int64
	for i, u := range ups {
		before[i] = u.reqs.Load()
	}
	if _, err := c.Write(boltReq(t, bolt.Message{ID: 100, Headers: hdrs("service", "gated")})); err != nil {
		t.Fatal(err)
	}
	busy := -1
	testutil.Eventually(t, testTimeout, "the gated request upstream", func() bool {
		for i, u := range ups {
			if u.reqs.Load() > before[i] {
				busy = i
				return true
			}
		}
		return false
	})
	idle, kept := ups[(busy+1)%3], ups[(busy+2)%3]
	held := ups[busy]

	applyClusters(t, v, simpleCluster("c", 3, kept.addr(), add.addr()))
	testutil.Eventually(t, testTimeout, "the idle removed host's connection to close", func() bool {
		return upOpen(idle) == 0 && v.e.UpstreamStats().Conns == 2 && maxConnsInUse(cl) == 2
	})
	if upOpen(held) != 1 || upOpen(kept) != 1 {
		t.Fatalf("open upstream connections: busy removed host %d, kept host %d; want 1 and 1", upOpen(held), upOpen(kept))
	}

	// New requests go to the kept host, on its connection, and to the added one.
	for id = 200; id < 206 && add.conns.Load() == 0; id++ {
		if f := roundTrip(t, c, r, bolt.Message{ID: id, Headers: hdrs("service", "echo")}); f.Status != 0 {
			t.Fatalf("request %d after the update: status %d", id, f.Status)
		}
	}
	if add.conns.Load() != 1 || kept.conns.Load() != 1 || idle.conns.Load() != 1 || held.conns.Load() != 1 {
		t.Fatalf("connections accepted: added host %d, kept %d, removed %d and %d; want 1 each",
			add.conns.Load(), kept.conns.Load(), idle.conns.Load(), held.conns.Load())
	}

	held.release()
	f, err := r.next()
	if err != nil || f.ID != 100 || f.Status != 0 {
		t.Fatalf("the request in flight on the removed host: %v %+v; want its upstream's answer", err, f)
	}
	if _, ok := f.Header("up-id"); !ok {
		t.Fatalf("the request in flight was answered by the proxy, not the upstream: %+v", f)
	}
	testutil.Eventually(t, testTimeout, "the busy removed host's connection to close", func() bool {
		return upOpen(held) == 0 && v.e.UpstreamStats().Conns == 2 && maxConnsInUse(cl) == 2
	})
	if upOpen(kept) != 1 || kept.conns.Load() != 1 {
		t.Fatalf("the kept host's connection: open %d, accepted %d; want 1 and 1", upOpen(kept), kept.conns.Load())
	}
}

// TestRemovedClusterConnectionsDrain: when cluster "c" is removed, its idle connection
// closes at once and its busy one once the request in flight is answered, giving back
// every max_connections unit; another cluster's connection stays.
func TestRemovedClusterConnectionsDrain(t *testing.T) {
	a, b, k := startBoltServer(t), startBoltServer(t), startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), a.addr(), nil)
	applyClusters(t, v, simpleCluster("c", 0, a.addr(), b.addr()), simpleCluster("pool3", 0, k.addr()))
	cl, _ := v.clusters.Get("c")
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	for id := uint32(1); id <= 2; id++ {
		if f := roundTrip(t, c, r, bolt.Message{ID: id, Headers: hdrs("service", "echo")}); f.Status != 0 {
			t.Fatalf("request %d: status %d", id, f.Status)
		}
	}
	if f := roundTrip(t, c, r, bolt.Message{ID: 3, Headers: hdrs("service", "pooled")}); f.Status != 0 {
		t.Fatalf("request to pool3: status %d", f.Status)
	}
	if a.conns.Load() != 1 || b.conns.Load() != 1 || k.conns.Load() != 1 || maxConnsInUse(cl) != 2 {
		t.Fatalf("connections: %d %d %d, max_connections in use %d", a.conns.Load(), b.conns.Load(), k.conns.Load(), maxConnsInUse(cl))
	}
	ra, rb := a.reqs.Load(), b.reqs.Load()
	if _, err := c.Write(boltReq(t, bolt.Message{ID: 100, Headers: hdrs("service", "gated")})); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, testTimeout, "the gated request upstream", func() bool { return a.reqs.Load()+b.reqs.Load() == ra+rb+1 })
	held, idle := a, b
	if b.reqs.Load() > rb {
		held, idle = b, a
	}

	applyClusters(t, v, simpleCluster("pool3", 0, k.addr()))
	testutil.Eventually(t, testTimeout, "the removed cluster's idle connection to close", func() bool {
		return upOpen(idle) == 0 && v.e.UpstreamStats().Conns == 2 && maxConnsInUse(cl) == 1
	})
	if upOpen(held) != 1 {
		t.Fatal("the connection with a request in flight closed before answering it")
	}
	held.release()
	f, err := r.next()
	if err != nil || f.ID != 100 || f.Status != 0 {
		t.Fatalf("the request in flight on the removed cluster: %v %+v; want its upstream's answer", err, f)
	}
	testutil.Eventually(t, testTimeout, "the removed cluster's busy connection to close", func() bool {
		return upOpen(held) == 0 && v.e.UpstreamStats().Conns == 1 && maxConnsInUse(cl) == 0
	})
	if f := roundTrip(t, c, r, bolt.Message{ID: 4, Headers: hdrs("service", "pooled")}); f.Status != 0 {
		t.Fatalf("request to pool3 after the removal: status %d", f.Status)
	}
	if k.conns.Load() != 1 || upOpen(k) != 1 {
		t.Fatalf("pool3's host: %d connections accepted, %d open; want its one connection kept", k.conns.Load(), upOpen(k))
	}
}

// TestRemovedHostsDubbo: with dubbo, a host that leaves its cluster and then the cluster
// itself have their idle connections closed and their max_connections units released;
// another cluster's connection stays.
func TestRemovedHostsDubbo(t *testing.T) {
	start := func() (*dubboServer, *atomic.Int64) {
		s, ended := &dubboServer{}, new(atomic.Int64)
		s.TCPServer = testutil.StartTCP(t, func(c *net.TCPConn) { s.serveConn(c); ended.Add(1) })
		return s, ended
	}
	a, aEnded := start()
	b, bEnded := start()
	k, kEnded := start()
	v := startEnv(t, dubbo.New(dubbo.Options{}), a.Addr(), nil)
	applyClusters(t, v, simpleCluster("c", 0, a.Addr(), b.Addr()), simpleCluster("pool3", 0, k.Addr()))
	cl, _ := v.clusters.Get("c")
	c := dial(t, v.addr)
	r := newFrameReader(c, dubbo.New(dubbo.Options{}))
	id := uint64(1)
	call := func(service string) {
		t.Helper()
		if f := dubboRoundTrip(t, c, r, dubboReq(t, dubbo.Request{ID: id, Service: service, Method: "m"}), id); f.Status != dubbo.StatusOK {
			t.Fatalf("%s: status %d", service, f.Status)
		}
		id++
	}
	call("echo.svc")
	call("echo.svc")
	call("pooled")
	if a.Conns.Load() != 1 || b.Conns.Load() != 1 || k.Conns.Load() != 1 || maxConnsInUse(cl) != 2 {
		t.Fatalf("connections: %d %d %d, max_connections in use %d", a.Conns.Load(), b.Conns.Load(), k.Conns.Load(), maxConnsInUse(cl))
	}

	applyClusters(t, v, simpleCluster("c", 0, b.Addr()), simpleCluster("pool3", 0, k.Addr()))
	testutil.Eventually(t, testTimeout, "the removed host's connection to close", func() bool {
		return aEnded.Load() == 1 && v.e.UpstreamStats().Conns == 2 && maxConnsInUse(cl) == 1
	})
	call("echo.svc")
	if b.Conns.Load() != 1 || bEnded.Load() != 0 {
		t.Fatalf("the kept host: %d connections accepted, %d ended; want its one connection kept", b.Conns.Load(), bEnded.Load())
	}

	applyClusters(t, v, simpleCluster("pool3", 0, k.Addr()))
	testutil.Eventually(t, testTimeout, "the removed cluster's connection to close", func() bool {
		return bEnded.Load() == 1 && v.e.UpstreamStats().Conns == 1 && maxConnsInUse(cl) == 0
	})
	call("pooled")
	if k.Conns.Load() != 1 || kEnded.Load() != 0 {
		t.Fatalf("pool3's host: %d connections accepted, %d ended; want its one connection kept", k.Conns.Load(), kEnded.Load())
	}
}

// holdListener serves TLS on the connections it accepts, and reads nothing from them
// (so the client's handshake waits) until hold is closed.
type holdListener struct {
	net.Listener
	cert     tls.Certificate
	hold     chan struct{}
	accepted atomic.Int64
}

func (l *holdListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.accepted.Add(1)
	return tls.Server(&holdConn{Conn: c, hold: l.hold}, &tls.Config{Certificates: []tls.Certificate{l.cert}}), nil
}

type holdConn struct {
	net.Conn
	hold chan struct{}
}

func (c *holdConn) Read(b []byte) (int, error) {
	select {
	case <-c.hold:
	case <-time.After(testTimeout):
	}
	return c.Conn.Read(b)
}

// TestRemovedDuringDial: a request whose connection is still being made (TLS handshake)
// when its cluster is removed is answered on it, and the connection then closes and gives
// back its max_connections unit, although no change of the hosts comes after it.
func TestRemovedDuringDial(t *testing.T) {
	ca := tlstest.NewCA(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl := &holdListener{Listener: ln, cert: ca.Leaf(t, "127.0.0.1", "one.test").TLS(t), hold: make(chan struct{})}
	up := &boltServer{ln: hl, xp: bolt.New(bolt.Options{}), open: map[net.Conn]struct{}{}, gate: make(chan struct{})}
	up.wg.Add(1)
	go up.serve()
	t.Cleanup(up.close)
	k := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), k.addr(), nil)
	tlsCluster := simpleCluster("c", 0, up.addr())
	tlsCluster.TLSContext = &config.TLSConfig{Status: true, CACert: ca.PEM, ServerName: "one.test"}
	applyClusters(t, v, tlsCluster, simpleCluster("pool3", 0, k.addr()))
	cl, _ := v.clusters.Get("c")
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	if f := roundTrip(t, c, r, bolt.Message{ID: 1, Headers: hdrs("service", "pooled")}); f.Status != 0 {
		t.Fatalf("request to pool3: status %d", f.Status)
	}

	if _, err := c.Write(boltReq(t, bolt.Message{ID: 2, Headers: hdrs("service", "echo")})); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, testTimeout, "the dial to start", func() bool { return hl.accepted.Load() == 1 })
	applyClusters(t, v, simpleCluster("pool3", 0, k.addr()))
	time.Sleep(50 * time.Millisecond) // a few ticks with the dial still held
	close(hl.hold)
	f, err := r.next()
	if err != nil || f.ID != 2 || f.Status != 0 {
		t.Fatalf("the request dialling during the removal: %v %+v; want its upstream's answer", err, f)
	}
	if _, ok := f.Header("up-id"); !ok {
		t.Fatalf("answered by the proxy, not the upstream: %+v", f)
	}
	testutil.Eventually(t, testTimeout, "the connection made after the removal to close", func() bool {
		return upOpen(up) == 0 && v.e.UpstreamStats().Conns == 1 && maxConnsInUse(cl) == 0
	})
	if k.conns.Load() != 1 || upOpen(k) != 1 {
		t.Fatalf("pool3's host: %d connections accepted, %d open; want its one connection kept", k.conns.Load(), upOpen(k))
	}
}

package connpool_test

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/connpool"
)

func newPingPong(t *testing.T, o connpool.PingPongOptions) *connpool.PingPong[*testConn] {
	t.Helper()
	p := connpool.NewPingPong[*testConn](o)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestPingPongReusesNewestFirst(t *testing.T) {
	srv := newPeer(t)
	p := newPingPong(t, connpool.PingPongOptions{})
	now := time.Now()
	a, _ := srv.dial(t)
	b, _ := srv.dial(t)
	if _, ok := p.Get(srv.addr, now); ok {
		t.Fatal("empty pool returned a connection")
	}
	p.Put(srv.addr, a, now)
	p.Put(srv.addr, b, now.Add(time.Millisecond))
	for i, want := range []*testConn{b, a} {
		got, ok := p.Get(srv.addr, now.Add(2*time.Millisecond))
		if !ok || got != want {
			t.Fatalf("get %d = %p, %v; want %p", i, got, ok, want)
		}
	}
	if _, ok := p.Get(srv.addr, now); ok {
		t.Fatal("a connection was handed out twice")
	}
	if a.closed() || b.closed() {
		t.Fatal("a reused connection was closed")
	}
}

func TestPingPongIdleExpiry(t *testing.T) {
	srv := newPeer(t)
	p := newPingPong(t, connpool.PingPongOptions{IdleTimeout: time.Hour})
	now := time.Now()
	old, _ := srv.dial(t)
	newer, _ := srv.dial(t)
	p.Put(srv.addr, old, now)
	p.Put(srv.addr, newer, now.Add(time.Minute))
	// Both are past the idle timeout: neither is returned, both are closed.
	if c, ok := p.Get(srv.addr, now.Add(2*time.Hour)); ok {
		t.Fatalf("Get returned expired %p", c)
	}
	if !old.closed() || !newer.closed() || p.Len(srv.addr) != 0 {
		t.Fatalf("expired connections: closed %v %v, pooled %d", old.closed(), newer.closed(), p.Len(srv.addr))
	}
}

// TestPingPongStale: an idle connection whose host left its cluster or went down
// (Stale) is never handed out: Get closes it and returns the next one, CloseStale closes
// every stale one at once, and the sweeper closes them at its next pass even when they
// are far from their idle timeout.
func TestPingPongStale(t *testing.T) {
	srv := newPeer(t)
	const idle = 4 * time.Second // sweeps every 2s
	p := newPingPong(t, connpool.PingPongOptions{IdleTimeout: idle, Stale: staleConn})
	conns := make([]*testConn, 4)
	for i := range conns {
		conns[i], _ = srv.dial(t)
	}
	a, b, c, d := conns[0], conns[1], conns[2], conns[3]
	put := time.Now()
	for _, x := range conns {
		p.Put(srv.addr, x, put)
	}
	d.stale.Store(true)
	if got, ok := p.Get(srv.addr, put); !ok || got != c {
		t.Fatalf("Get = %p, %v; want %p (the newest one not stale)", got, ok, c)
	}
	if !d.closed() {
		t.Fatal("Get left the stale connection open")
	}
	p.Put(srv.addr, c, put)

	b.stale.Store(true)
	p.CloseStale()
	if !b.closed() || a.closed() || c.closed() || p.Len(srv.addr) != 2 {
		t.Fatalf("after CloseStale: closed a %v b %v c %v, pooled %d; want only b closed, 2 pooled",
			a.closed(), b.closed(), c.closed(), p.Len(srv.addr))
	}

	c.stale.Store(true)
	testutil.Eventually(t, testTimeout, "the sweeper to close the stale connection", c.closed)
	if time.Since(put) < idle && (a.closed() || p.Len(srv.addr) != 1) {
		t.Fatalf("the sweep closed a live connection: a closed %v, pooled %d", a.closed(), p.Len(srv.addr))
	}
	if got, ok := p.Get(srv.addr, put); ok && got != a {
		t.Fatalf("Get = %p; want %p", got, a)
	}

	// A connection already stale when it is put back is closed, not pooled: a host
	// change handled before the Put would otherwise leave it idle until a sweep.
	e, _ := srv.dial(t)
	e.stale.Store(true)
	n := p.Len(srv.addr)
	p.Put(srv.addr, e, time.Now())
	if !e.closed() || p.Len(srv.addr) != n {
		t.Fatalf("Put of a stale connection: closed %v, pooled %d (was %d)", e.closed(), p.Len(srv.addr), n)
	}
}

func TestPingPongPutDropsExpiredOldest(t *testing.T) {
	srv := newPeer(t)
	p := newPingPong(t, connpool.PingPongOptions{IdleTimeout: time.Minute})
	now := time.Now()
	old, _ := srv.dial(t)
	fresh, _ := srv.dial(t)
	p.Put(srv.addr, old, now)
	p.Put(srv.addr, fresh, now.Add(2*time.Minute))
	if !old.closed() || p.Len(srv.addr) != 1 {
		t.Fatalf("oldest expired: closed %v, pooled %d; want closed, 1", old.closed(), p.Len(srv.addr))
	}
}

func TestPingPongSweeperClosesIdle(t *testing.T) {
	srv := newPeer(t)
	p := newPingPong(t, connpool.PingPongOptions{IdleTimeout: 60 * time.Millisecond})
	c, peerSide := srv.dial(t)
	p.Put(srv.addr, c, time.Now())
	testutil.Eventually(t, testTimeout, "the sweeper closed the idle connection", c.closed)
	if p.Len(srv.addr) != 0 {
		t.Fatalf("pooled %d after the sweep", p.Len(srv.addr))
	}
	// The peer sees the close.
	_ = peerSide.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := peerSide.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("peer read after sweep = %v; want EOF", err)
	}
	// The host's list may have been forgotten: a later Put starts a new one.
	testutil.Eventually(t, testTimeout, "the host is swept", func() bool { return p.Len(srv.addr) == 0 })
	d, _ := srv.dial(t)
	p.Put(srv.addr, d, time.Now())
	if got, ok := p.Get(srv.addr, time.Now()); !ok || got != d {
		t.Fatalf("after a sweep Get = %p, %v; want %p", got, ok, d)
	}
}

// TestPingPongSweeperProbesIdle: an idle connection whose peer closed it is closed by the
// sweeper's probe, without waiting for a Get or for IdleTimeout (no socket left in
// CLOSE_WAIT); a live idle connection is kept.
func TestPingPongSweeperProbesIdle(t *testing.T) {
	srv := newPeer(t)
	p := newPingPong(t, connpool.PingPongOptions{IdleTimeout: time.Hour, AliveCheckAfter: 50 * time.Millisecond,
		ProbeIdleEvery: 50 * time.Millisecond})
	dead, deadPeer := srv.dial(t)
	live, _ := srv.dial(t)
	now := time.Now()
	p.Put(srv.addr, dead, now)
	p.Put(srv.addr, live, now)
	_ = deadPeer.Close()
	testutil.Eventually(t, testTimeout, "the sweeper closed the connection its peer closed", dead.closed)
	if live.closed() || p.Len(srv.addr) != 1 {
		t.Fatalf("live connection closed %v, pooled %d; want kept, 1", live.closed(), p.Len(srv.addr))
	}
	if got, ok := p.Get(srv.addr, time.Now()); !ok || got != live {
		t.Fatalf("Get = %p, %v; want the live connection", got, ok)
	}
}

func TestPingPongMaxIdlePerHost(t *testing.T) {
	srv := newPeer(t)
	p := newPingPong(t, connpool.PingPongOptions{MaxIdlePerHost: 2})
	now := time.Now()
	var cs []*testConn
	for i := range 3 {
		c, _ := srv.dial(t)
		cs = append(cs, c)
		p.Put(srv.addr, c, now.Add(time.Duration(i)*time.Millisecond))
	}
	if p.Len(srv.addr) != 2 || !cs[0].closed() || cs[1].closed() || cs[2].closed() {
		t.Fatalf("pooled %d, closed %v %v %v; want 2 kept, the oldest closed",
			p.Len(srv.addr), cs[0].closed(), cs[1].closed(), cs[2].closed())
	}
}

// TestPingPongProbeCatchesBrokenConn: a connection idle past AliveCheckAfter whose peer
// closed it, or sent bytes nobody asked for (the rest of an unfinished response), is
// closed rather than reused.
func TestPingPongProbeCatchesBrokenConn(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIt func(peerSide net.Conn)
	}{
		{"peer closed", func(s net.Conn) { _ = s.Close() }},
		{"stray bytes", func(s net.Conn) { _, _ = s.Write([]byte("HTTP/1.1 200 OK\r\n")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newPeer(t)
			p := newPingPong(t, connpool.PingPongOptions{AliveCheckAfter: time.Second})
			c, peerSide := srv.dial(t)
			tc.breakIt(peerSide)
			now := time.Now()
			// Idle less than AliveCheckAfter: not probed, handed out as is.
			p.Put(srv.addr, c, now)
			if got, ok := p.Get(srv.addr, now); !ok || got != c {
				t.Fatalf("fresh Get = %p, %v; want %p unprobed", got, ok, c)
			}
			// Idle longer: probed. The peer's FIN or bytes may take a moment to arrive.
			testutil.Eventually(t, testTimeout, "the probe rejected the connection", func() bool {
				p.Put(srv.addr, c, now)
				_, ok := p.Get(srv.addr, now.Add(2*time.Second))
				return !ok
			})
			if !c.closed() || p.Len(srv.addr) != 0 {
				t.Fatalf("broken connection: closed %v, pooled %d", c.closed(), p.Len(srv.addr))
			}
		})
	}
}

func TestPingPongProbeKeepsLiveConn(t *testing.T) {
	srv := newPeer(t)
	p := newPingPong(t, connpool.PingPongOptions{})
	c, peerSide := srv.dial(t)
	now := time.Now()
	p.Put(srv.addr, c, now)
	got, ok := p.Get(srv.addr, now.Add(time.Minute))
	if !ok || got != c {
		t.Fatalf("live idle connection: Get = %p, %v", got, ok)
	}
	// The probe cleared its read deadline: the connection still reads.
	if _, err := peerSide.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(testTimeout, func() { _ = c.raw.Close() })
	var b [1]byte
	if _, err := io.ReadFull(c.raw, b[:]); err != nil || b[0] != 'x' {
		t.Fatalf("read after probe: %q, %v", b[:], err)
	}
}

// proberConn answers the pool's probe itself (connpool.Prober).
type proberConn struct {
	*testConn
	probes int
	alive  bool
}

func (c *proberConn) Probe() bool {
	c.probes++
	return c.alive
}

// TestPingPongUsesProber: a connection with its own Probe is probed by it, not by Alive on
// its socket, which here is open and would pass.
func TestPingPongUsesProber(t *testing.T) {
	srv := newPeer(t)
	p := connpool.NewPingPong[*proberConn](connpool.PingPongOptions{AliveCheckAfter: time.Second})
	t.Cleanup(func() { _ = p.Close() })
	tc, _ := srv.dial(t)
	c := &proberConn{testConn: tc, alive: true}
	now := time.Now()
	p.Put(srv.addr, c, now)
	if got, ok := p.Get(srv.addr, now.Add(2*time.Second)); !ok || got != c || c.probes != 1 {
		t.Fatalf("Get = %p, %v after %d probes; want the connection after one", got, ok, c.probes)
	}
	c.alive = false
	p.Put(srv.addr, c, now)
	if _, ok := p.Get(srv.addr, now.Add(2*time.Second)); ok || c.probes != 2 || !c.closed() {
		t.Fatalf("a connection whose Probe failed: handed out %v, probes %d, closed %v", ok, c.probes, c.closed())
	}
}

func TestPingPongPerHost(t *testing.T) {
	a, b := newPeer(t), newPeer(t)
	p := newPingPong(t, connpool.PingPongOptions{IdleTimeout: time.Minute})
	now := time.Now()
	ca, _ := a.dial(t)
	cb, _ := b.dial(t)
	p.Put(a.addr, ca, now)
	p.Put(b.addr, cb, now.Add(time.Hour))
	// Expiring a's connection leaves b's alone.
	if _, ok := p.Get(a.addr, now.Add(2*time.Minute)); ok || !ca.closed() {
		t.Fatalf("a: expired connection not closed")
	}
	if got, ok := p.Get(b.addr, now.Add(time.Hour)); !ok || got != cb || cb.closed() {
		t.Fatalf("b: Get = %p, %v; want %p", got, ok, cb)
	}
}

func TestPingPongClose(t *testing.T) {
	srv := newPeer(t)
	p := connpool.NewPingPong[*testConn](connpool.PingPongOptions{})
	now := time.Now()
	idle, _ := srv.dial(t)
	late, _ := srv.dial(t)
	p.Put(srv.addr, idle, now)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !idle.closed() {
		t.Fatal("Close left an idle connection open")
	}
	p.Put(srv.addr, late, now)
	if !late.closed() || p.Len(srv.addr) != 0 {
		t.Fatal("a Put after Close pooled its connection")
	}
	if _, ok := p.Get(srv.addr, now); ok {
		t.Fatal("Get after Close returned a connection")
	}
	if err := p.Close(); err != nil || idle.closes.Load() != 1 {
		t.Fatalf("second Close: %v, closes %d", err, idle.closes.Load())
	}
}

// TestPingPongConcurrent: no connection is handed to two users, under the race detector.
func TestPingPongConcurrent(t *testing.T) {
	srvs := []*peer{newPeer(t), newPeer(t)}
	p := newPingPong(t, connpool.PingPongOptions{MaxIdlePerHost: 4, IdleTimeout: time.Minute})
	var conns [2][]*testConn
	for i, s := range srvs {
		for range 4 {
			c, _ := s.dial(t)
			conns[i] = append(conns[i], c)
			p.Put(s.addr, c, time.Now())
		}
	}
	var inUse sync.Map
	concurrently(t, 8, func(g int) error {
		s := srvs[g%2]
		for range 500 {
			c, ok := p.Get(s.addr, time.Now())
			if !ok {
				continue
			}
			if c.addr != s.addr {
				return fmt.Errorf("got a connection to %s from %s's list", c.addr, s.addr)
			}
			if _, dup := inUse.LoadOrStore(c, true); dup {
				return fmt.Errorf("connection %p handed out twice", c)
			}
			inUse.Delete(c)
			p.Put(s.addr, c, time.Now())
		}
		return nil
	})
	for i := range conns {
		for _, c := range conns[i] {
			if c.closed() {
				t.Fatalf("connection %p closed though never over the limit", c)
			}
		}
	}
}

// TestPingPongSweeperRace: the sweeper expiring connections never closes one that Get
// handed out.
func TestPingPongSweeperRace(t *testing.T) {
	srv := newPeer(t)
	p := newPingPong(t, connpool.PingPongOptions{IdleTimeout: 50 * time.Millisecond})
	for range 4 {
		c, _ := srv.dial(t)
		p.Put(srv.addr, c, time.Now())
	}
	concurrently(t, 4, func(int) error {
		deadline := time.Now().Add(300 * time.Millisecond)
		for time.Now().Before(deadline) {
			c, ok := p.Get(srv.addr, time.Now())
			if !ok {
				time.Sleep(time.Millisecond)
				continue
			}
			if c.closed() {
				return fmt.Errorf("Get returned closed connection %p", c)
			}
			time.Sleep(2 * time.Millisecond) // in use
			if c.closed() {
				return fmt.Errorf("connection %p closed while in use", c)
			}
			p.Put(srv.addr, c, time.Now())
		}
		return nil
	})
	testutil.Eventually(t, testTimeout, "the sweeper closed every idle connection", func() bool { return p.Len(srv.addr) == 0 })
}

func TestPingPongGetPutDoNotAllocate(t *testing.T) {
	srv := newPeer(t)
	never := make(chan struct{})
	for _, o := range []connpool.PingPongOptions{{}, {Stale: staleConn, HostsChanged: func() <-chan struct{} { return never }}} {
		p := newPingPong(t, o)
		c, _ := srv.dial(t)
		now := time.Now()
		p.Put(srv.addr, c, now)
		allocs := testing.AllocsPerRun(1000, func() {
			got, ok := p.Get(srv.addr, now)
			if !ok {
				panic("pool lost the connection")
			}
			p.Put(srv.addr, got, now)
		})
		if allocs != 0 {
			t.Fatalf("Get+Put (stale check %v) allocates %.1f times; want 0", o.Stale != nil, allocs)
		}
	}
}

func BenchmarkPingPongGetPut(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchGetPut(b, connpool.PingPongOptions{}) })
	b.Run("stale-check", func(b *testing.B) { benchGetPut(b, connpool.PingPongOptions{Stale: staleConn}) })
}

func benchGetPut(b *testing.B, o connpool.PingPongOptions) {
	srv := newPeer(b)
	p := connpool.NewPingPong[*testConn](o)
	defer p.Close()
	for range 4 {
		c, _ := srv.dial(b)
		p.Put(srv.addr, c, time.Now())
	}
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if c, ok := p.Get(srv.addr, now); ok {
				p.Put(srv.addr, c, now)
			}
		}
	})
}

package connpool_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/connpool"
)

// muxConn is a multiplexed connection over a real loopback socket with a stream limit,
// as an HTTP/2 client connection has from the peer's SETTINGS_MAX_CONCURRENT_STREAMS.
type muxConn struct {
	raw      net.Conn
	addr     string
	max      int
	mu       sync.Mutex
	streams  int
	goaway   bool
	draining bool
	closes   int
	// cutStreams: closed by the pool while a stream it handed out was open.
	cutStreams bool
}

func (c *muxConn) Reserve() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goaway || c.draining || c.closes > 0 || c.streams >= c.max {
		return false
	}
	c.streams++
	return true
}

func (c *muxConn) Streams() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams
}

func (c *muxConn) Dead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.goaway || c.draining || c.closes > 0
}

func (c *muxConn) Drain() {
	c.mu.Lock()
	c.draining = true
	idle := c.streams == 0
	c.mu.Unlock()
	if idle {
		_ = c.Close()
	}
}

func (c *muxConn) Close() error {
	c.mu.Lock()
	c.closes++
	if c.streams > 0 && !c.draining && !c.goaway {
		c.cutStreams = true
	}
	c.mu.Unlock()
	return c.raw.Close()
}

// end ends one stream; a draining connection closes after its last one.
func (c *muxConn) end() {
	c.mu.Lock()
	c.streams--
	closeNow := c.draining && c.streams == 0 && c.closes == 0
	c.mu.Unlock()
	if closeNow {
		_ = c.Close()
	}
}

func (c *muxConn) closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closes > 0
}

// muxDialer dials the peer with a stream limit and counts the dials.
type muxDialer struct {
	t     testing.TB
	srv   *peer
	max   int
	dials atomic.Int32
	gate  chan struct{} // when set, each dial waits for it
}

func (d *muxDialer) dial(ctx context.Context) (*muxConn, string, error) {
	d.dials.Add(1)
	if d.gate != nil {
		select {
		case <-d.gate:
		case <-ctx.Done():
			return nil, "", ctx.Err()
		}
	}
	var nd net.Dialer
	raw, err := nd.DialContext(ctx, "tcp", d.srv.addr)
	if err != nil {
		return nil, "", err
	}
	d.t.Cleanup(func() { _ = raw.Close() })
	return &muxConn{raw: raw, addr: d.srv.addr, max: d.max}, d.srv.addr, nil
}

func newMultiplex(t *testing.T, o connpool.MultiplexOptions) *connpool.Multiplex[*muxConn] {
	t.Helper()
	p := connpool.NewMultiplex[*muxConn](o)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func acquire(t *testing.T, p *connpool.Multiplex[*muxConn], d *muxDialer) *muxConn {
	t.Helper()
	c, pooled, err := p.Acquire(t.Context(), d.srv.addr, d.dial)
	if err != nil || !pooled {
		t.Fatalf("Acquire = %v, pooled %v", err, pooled)
	}
	return c
}

func TestMultiplexFillsThenDials(t *testing.T) {
	d := &muxDialer{t: t, srv: newPeer(t), max: 2}
	p := newMultiplex(t, connpool.MultiplexOptions{})
	a1, a2 := acquire(t, p, d), acquire(t, p, d)
	if a1 != a2 || d.dials.Load() != 1 {
		t.Fatalf("two streams: conns %p %p, dials %d; want one connection", a1, a2, d.dials.Load())
	}
	b := acquire(t, p, d)
	if b == a1 || d.dials.Load() != 2 || p.Len(d.srv.addr) != 2 {
		t.Fatalf("third stream: dials %d, pooled %d; want a second connection", d.dials.Load(), p.Len(d.srv.addr))
	}
	// A stream ends on the first connection: the next stream goes there, no dial.
	a1.end()
	if c := acquire(t, p, d); c != a1 || d.dials.Load() != 2 {
		t.Fatalf("after a stream ended: got %p, dials %d; want %p, 2", c, d.dials.Load(), a1)
	}
	if a1.Streams() != 2 || b.Streams() != 1 {
		t.Fatalf("streams %d %d; want 2 1", a1.Streams(), b.Streams())
	}
}

func TestMultiplexDropsDraining(t *testing.T) {
	d := &muxDialer{t: t, srv: newPeer(t), max: 10}
	p := newMultiplex(t, connpool.MultiplexOptions{IdleTimeout: time.Hour})
	a := acquire(t, p, d)
	a.mu.Lock()
	a.goaway = true // the peer sent GOAWAY; one stream is still open
	a.mu.Unlock()
	b := acquire(t, p, d)
	if b == a || d.dials.Load() != 2 {
		t.Fatalf("after GOAWAY: same conn %v, dials %d; want a new connection", b == a, d.dials.Load())
	}
	// The sweeper drops the draining connection and drains it, without cutting its stream.
	testutil.Eventually(t, testTimeout, "the draining connection is dropped", func() bool { return p.Len(d.srv.addr) == 1 })
	a.mu.Lock()
	drained := a.draining
	a.mu.Unlock()
	if !drained || a.closed() {
		t.Fatalf("dropped connection: drained %v, closed %v; want drained, open", drained, a.closed())
	}
	a.end()
	if !a.closed() {
		t.Fatal("the dropped connection stayed open after its last stream")
	}
	// A closed connection is never handed out.
	b.end()
	_ = b.Close()
	if c := acquire(t, p, d); c == b || d.dials.Load() != 3 {
		t.Fatal("a closed connection was handed out")
	}
}

// TestMultiplexDeadDropsAtOnce: a connection its owner reports dead leaves the pool in
// the Dead call, not at the next sweep (an hour-long idle timeout sweeps once a second):
// it is no longer counted, never handed out, and drained without cutting its stream.
func TestMultiplexDeadDropsAtOnce(t *testing.T) {
	d := &muxDialer{t: t, srv: newPeer(t), max: 10}
	p := newMultiplex(t, connpool.MultiplexOptions{MaxConnsPerHost: 1, IdleTimeout: time.Hour})
	a := acquire(t, p, d)
	idle := acquire(t, p, d) // the same connection: a second stream on it
	idle.end()
	a.mu.Lock()
	a.goaway = true // GOAWAY received with a stream still open
	a.mu.Unlock()
	p.Dead(d.srv.addr, a)
	if n := p.Len(d.srv.addr); n != 0 {
		t.Fatalf("pooled after Dead = %d; want 0", n)
	}
	if c, ok := p.Get(d.srv.addr); ok {
		t.Fatalf("Get after Dead = %p; want none", c)
	}
	a.mu.Lock()
	drained := a.draining
	a.mu.Unlock()
	if !drained || a.closed() {
		t.Fatalf("dead connection: drained %v, closed %v; want drained, open until its stream ends", drained, a.closed())
	}
	// The host's one slot is free for a new connection.
	if b := acquire(t, p, d); b == a || d.dials.Load() != 2 || p.Len(d.srv.addr) != 1 {
		t.Fatalf("after Dead: dials %d, pooled %d; want a new connection", d.dials.Load(), p.Len(d.srv.addr))
	}
	a.end()
	if !a.closed() {
		t.Fatal("the dead connection stayed open after its last stream")
	}
	// Reporting it again, or reporting a connection the pool never had, changes nothing.
	p.Dead(d.srv.addr, a)
	p.Dead("127.0.0.1:1", a)
	if n := p.Len(d.srv.addr); n != 1 {
		t.Fatalf("pooled = %d; want 1", n)
	}
}

func TestMultiplexOneDialForABurst(t *testing.T) {
	d := &muxDialer{t: t, srv: newPeer(t), max: 100, gate: make(chan struct{})}
	p := newMultiplex(t, connpool.MultiplexOptions{})
	const n = 20
	got := make(chan *muxConn, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			c, _, err := p.Acquire(t.Context(), d.srv.addr, d.dial)
			if err != nil {
				errs <- err
				return
			}
			got <- c
		}()
	}
	testutil.Eventually(t, testTimeout, "the first dial started", func() bool { return d.dials.Load() == 1 })
	close(d.gate)
	var first *muxConn
	for range n {
		select {
		case c := <-got:
			if first == nil {
				first = c
			}
			if c != first {
				t.Fatal("a burst to a cold host opened more than one connection")
			}
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(testTimeout):
			t.Fatal("Acquire did not return")
		}
	}
	if d.dials.Load() != 1 || first.Streams() != n {
		t.Fatalf("dials %d, streams %d; want 1, %d", d.dials.Load(), first.Streams(), n)
	}
}

func TestMultiplexMaxConnsPerHost(t *testing.T) {
	d := &muxDialer{t: t, srv: newPeer(t), max: 1}
	p := newMultiplex(t, connpool.MultiplexOptions{MaxConnsPerHost: 2, IdleTimeout: time.Hour})
	a := acquire(t, p, d)
	acquire(t, p, d)
	if _, _, err := p.Acquire(t.Context(), d.srv.addr, d.dial); !errors.Is(err, connpool.ErrFull) || d.dials.Load() != 2 {
		t.Fatalf("third stream over two full connections: %v, dials %d; want ErrFull, 2", err, d.dials.Load())
	}
	// A dead connection does not count against the bound.
	a.mu.Lock()
	a.goaway = true
	a.mu.Unlock()
	if c := acquire(t, p, d); c == a || d.dials.Load() != 3 || p.Len(d.srv.addr) != 2 {
		t.Fatalf("with one dead connection: dials %d, pooled %d; want a new one in its place", d.dials.Load(), p.Len(d.srv.addr))
	}
}

func TestMultiplexErrors(t *testing.T) {
	srv := newPeer(t)
	p := newMultiplex(t, connpool.MultiplexOptions{})
	errDial := errors.New("dial failed")
	_, _, err := p.Acquire(t.Context(), srv.addr, func(context.Context) (*muxConn, string, error) { return nil, "", errDial })
	if !errors.Is(err, errDial) {
		t.Fatalf("dial error: %v; want it returned as is", err)
	}
	// A waiter gives up with its context while another caller dials.
	d := &muxDialer{t: t, srv: srv, max: 1, gate: make(chan struct{})}
	go func() { _, _, _ = p.Acquire(t.Context(), srv.addr, d.dial) }()
	testutil.Eventually(t, testTimeout, "the dial started", func() bool { return d.dials.Load() == 1 })
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := p.Acquire(ctx, srv.addr, d.dial); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting Acquire = %v; want its context's error", err)
	}
	close(d.gate)
	testutil.Eventually(t, testTimeout, "the dialled connection is pooled", func() bool { return p.Len(srv.addr) == 1 })
	// A new connection that refuses its first stream is closed.
	full := &muxConn{raw: mustDial(t, srv), max: 0}
	if pooled, err := p.Add(srv.addr, full); err == nil || pooled || !full.closed() {
		t.Fatalf("Add of a full connection = %v, %v; want an error and the connection closed", pooled, err)
	}
}

func mustDial(t *testing.T, srv *peer) net.Conn {
	t.Helper()
	c, _ := srv.dial(t)
	return c.raw
}

func TestMultiplexIdleExpiry(t *testing.T) {
	d := &muxDialer{t: t, srv: newPeer(t), max: 10}
	p := newMultiplex(t, connpool.MultiplexOptions{IdleTimeout: 80 * time.Millisecond})
	idle := acquire(t, p, d)
	busy, pooled, err := p.Acquire(t.Context(), "other", func(ctx context.Context) (*muxConn, string, error) {
		c, _, err := d.dial(ctx)
		return c, "other", err
	})
	if err != nil || !pooled {
		t.Fatal(err, pooled)
	}
	idle.end()
	testutil.Eventually(t, testTimeout, "the idle connection is closed", idle.closed)
	if p.Len(d.srv.addr) != 0 {
		t.Fatalf("pooled %d after expiry", p.Len(d.srv.addr))
	}
	// Another host's busy connection outlived several idle timeouts.
	if busy.closed() || p.Len("other") != 1 {
		t.Fatal("a connection with an open stream was expired")
	}
	// The expired host's list is forgotten and rebuilt on the next stream.
	if c := acquire(t, p, d); c == idle || d.dials.Load() != 3 {
		t.Fatal("an expired connection was handed out")
	}
}

func TestMultiplexClose(t *testing.T) {
	d := &muxDialer{t: t, srv: newPeer(t), max: 1}
	p := connpool.NewMultiplex[*muxConn](connpool.MultiplexOptions{})
	busy := acquire(t, p, d)
	idle := acquire(t, p, d)
	idle.end()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !idle.closed() || busy.closed() {
		t.Fatalf("Close: idle closed %v, busy closed %v; want true, false", idle.closed(), busy.closed())
	}
	busy.end()
	if !busy.closed() {
		t.Fatal("a connection busy at Close stayed open after its last stream")
	}
	// After Close a new connection serves the caller's stream but is not pooled.
	c, pooled, err := p.Acquire(t.Context(), d.srv.addr, d.dial)
	if err != nil || pooled || c.Streams() != 1 || p.Len(d.srv.addr) != 0 {
		t.Fatalf("Acquire after Close: pooled %v, %v", pooled, err)
	}
	c.end()
	c.Drain()
	if !c.closed() {
		t.Fatal("unpooled connection not closed by Drain")
	}
}

// TestMultiplexConcurrentWithSweeper: streams come and go on several hosts while the
// sweeper expires idle connections; no connection is closed under an open stream and no
// stream lands on a closed connection.
func TestMultiplexConcurrentWithSweeper(t *testing.T) {
	srv := newPeer(t)
	d := &muxDialer{t: t, srv: srv, max: 3}
	p := newMultiplex(t, connpool.MultiplexOptions{IdleTimeout: 50 * time.Millisecond})
	hosts := []string{"h1", "h2"}
	var all sync.Map
	concurrently(t, 8, func(g int) error {
		host := hosts[(g/2)%2]
		dial := func(ctx context.Context) (*muxConn, string, error) {
			c, _, err := d.dial(ctx)
			return c, host, err
		}
		for i := range 200 {
			c, _, err := p.Acquire(t.Context(), host, dial)
			if err != nil {
				return err
			}
			all.Store(c, true)
			if c.closed() {
				return errors.New("a stream was given a closed connection")
			}
			if i%50 == 49 {
				// Pause so the sweeper expires idle connections: on h1 the
				// streams stay open meanwhile, on h2 they do not.
				if host == "h2" {
					c.end()
				}
				time.Sleep(150 * time.Millisecond)
				if host == "h2" {
					continue
				}
			}
			c.end()
		}
		return nil
	})
	t.Logf("dials: %d", d.dials.Load())
	// Every stream ended: every connection expires. The sweeper closes a connection after
	// it leaves the pool, so wait for the closes too.
	testutil.Eventually(t, testTimeout, "all connections expired and closed", func() bool {
		if p.Len("h1")+p.Len("h2") != 0 {
			return false
		}
		closed := true
		all.Range(func(k, _ any) bool {
			c := k.(*muxConn)
			c.mu.Lock()
			defer c.mu.Unlock()
			closed = c.closes > 0
			return closed
		})
		return closed
	})
	all.Range(func(k, _ any) bool {
		c := k.(*muxConn)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.cutStreams || c.streams != 0 || c.closes != 1 {
			t.Errorf("connection %p: cut streams %v, streams left %d, closes %d; want false, 0, 1",
				c, c.cutStreams, c.streams, c.closes)
		}
		return true
	})
}

func BenchmarkMultiplexAcquire(b *testing.B) {
	srv := newPeer(b)
	d := &muxDialer{t: b, srv: srv, max: 1 << 30}
	p := connpool.NewMultiplex[*muxConn](connpool.MultiplexOptions{})
	defer p.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c, _, err := p.Acquire(ctx, srv.addr, d.dial)
		if err != nil {
			b.Fatal(err)
		}
		c.end()
	}
}

// A host that Stale reports has its connections drained when HostsChanged signals: the
// idle one closes at once, the busy one after its stream, and neither is handed out
// again; another host's connection stays. Without a signal, the sweeper does the same.
func TestMultiplexDrainsStaleHosts(t *testing.T) {
	srvA, srvB := newPeer(t), newPeer(t)
	var staleA, staleB atomic.Bool
	var mu sync.Mutex
	changed := make(chan struct{})
	hostsChanged := func() <-chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		return changed
	}
	signal := func() {
		mu.Lock()
		close(changed)
		changed = make(chan struct{})
		mu.Unlock()
	}
	p := newMultiplex(t, connpool.MultiplexOptions{
		IdleTimeout: time.Minute, // sweeps every second
		Stale: func(addr string) bool {
			return addr == srvA.addr && staleA.Load() || addr == srvB.addr && staleB.Load()
		},
		HostsChanged: hostsChanged,
	})
	da := &muxDialer{t: t, srv: srvA, max: 1}
	db := &muxDialer{t: t, srv: srvB, max: 1}
	idle := acquire(t, p, da)
	idle.end()
	busy := acquire(t, p, da)
	if busy != idle {
		t.Fatalf("second Acquire dialled (%d dials); want the idle connection reused", da.dials.Load())
	}
	busy2 := acquire(t, p, da) // busy holds the only stream: a second connection
	busy.end()
	other := acquire(t, p, db)
	other.end()
	if p.Len(srvA.addr) != 2 || p.Len(srvB.addr) != 1 {
		t.Fatalf("pooled %d + %d; want 2 + 1", p.Len(srvA.addr), p.Len(srvB.addr))
	}

	staleA.Store(true)
	signal()
	testutil.Eventually(t, testTimeout, "the idle connection to the stale host to close", idle.closed)
	if busy2.closed() {
		t.Fatal("the connection with an open stream was closed, not drained")
	}
	if p.Len(srvA.addr) != 0 || other.closed() || p.Len(srvB.addr) != 1 {
		t.Fatalf("after the change: pooled %d to the stale host, %d to the other (closed %v); want 0, 1, open",
			p.Len(srvA.addr), p.Len(srvB.addr), other.closed())
	}
	if c, ok := p.Get(srvA.addr); ok {
		t.Fatalf("Get handed out %p after its host went stale", c)
	}
	busy2.end()
	if !busy2.closed() {
		t.Fatal("the drained connection stayed open after its last stream")
	}

	// No signal: the sweeper finds the stale host within a sweep period.
	staleB.Store(true)
	testutil.Eventually(t, testTimeout, "the sweeper to drain the stale host", other.closed)
}

package connpool

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// Mux is a connection a Multiplex pool shares between streams. The pool calls Reserve
// under a host's lock, so it must not block; the other methods are called without any
// pool lock held. A Multiplex compares its connections with == (Dead finds one so): the
// type is a pointer or a small struct of pointers.
type Mux interface {
	// Reserve reserves a stream for the caller's next request, or reports false when the
	// connection cannot take one now (at the peer's stream limit, draining, closed).
	Reserve() bool
	// Streams returns the number of streams open or reserved; 0 means idle.
	Streams() int
	// Dead reports a connection that must not be given out again: closed, or draining
	// (GOAWAY sent or received).
	Dead() bool
	// Drain makes the connection take no new stream and close once its open streams end,
	// at once when it has none.
	Drain()
	// Close closes the connection now, failing its open streams.
	Close() error
}

// PooledMux is the type constraint of a Multiplex's connections: a comparable Mux.
type PooledMux interface {
	Mux
	comparable
}

// MultiplexOptions configures a Multiplex pool.
type MultiplexOptions struct {
	// IdleTimeout closes a connection that carried no stream for that long (observed by
	// the sweeper, so up to a sweep period more). 0: DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxConnsPerHost bounds the pooled connections per host: when all are busy, Acquire
	// fails with ErrFull instead of dialling. 0: no bound but the cluster's
	// max_connections.
	MaxConnsPerHost int
	// Stale reports a host address whose connections must carry no new stream: its host
	// left its cluster (config, xDS/EDS update), is down, or its cluster's connection
	// settings changed (cluster.Manager.PoolKeyStale). The sweeper drains such a
	// host's connections (idle ones close at once, busy ones when their streams end), and
	// DrainStale does at once. It is asked outside the pool's locks, once per host per
	// pass, never on the request path. nil: no host is stale.
	Stale func(addr string) bool
	// HostsChanged, with Stale, returns a channel closed at the next change of the hosts'
	// membership or health (cluster.Manager.HostsChanged): the pool then runs DrainStale
	// and asks for the next channel, on one goroutine started by the first pooled
	// connection and ended by Close. nil: stale hosts wait for the sweeper.
	HostsChanged func() <-chan struct{}
}

// Multiplex keeps multiplexed connections per host address. Acquire hands out a pooled
// connection with a stream reserved, the first one that can take a stream; when none can,
// one caller dials a new connection while the others wait for it, so a burst of streams
// to a cold host opens one connection, not one per stream. A sweeper timer, started with
// the first connection, drops dead and draining connections (draining them) and closes
// the ones without streams for IdleTimeout. A connection's owner that learns it died (GOAWAY
// received, read error, closed) calls Dead, which drops it at once instead of at the next
// sweep. Close drains every pooled connection.
//
// Each host has its own lock, found through a sync.Map, and only Reserve runs under it:
// taking a stream on a pooled connection does not allocate, and a connection whose
// Streams or Dead blocks (a stalled write) holds up the sweeper, not other streams.
type Multiplex[C PooledMux] struct {
	o      MultiplexOptions
	hosts  hostMap[muxHost[C], *muxHost[C]]
	closed atomic.Bool

	sweeper sweeper
	checks  []muxCheck[C] // the sweeper's scratch list (one sweep runs at a time)
	watch   hostsWatch    // runs DrainStale at each HostsChanged signal
}

// muxHost is a host's pooled connections; last is when the latest one was added.
type muxHost[C PooledMux] struct {
	hostCore
	conns   []*muxEntry[C]
	dialing chan struct{} // closed when the dial in progress for this host ends
}

// muxEntry is a pooled connection; its fields other than c are under muxHost.mu.
type muxEntry[C PooledMux] struct {
	c         C
	taken     uint64    // streams reserved through the pool so far
	idleSince time.Time // when a sweep first saw it without streams; zero when busy
}

// muxCheck is one connection's state as seen by a check outside the host's lock.
type muxCheck[C PooledMux] struct {
	e     *muxEntry[C]
	taken uint64 // e.taken when the check started
	dead  bool
	idle  bool
	act   muxAct
}

type muxAct uint8

const (
	actNone  muxAct = iota
	actDrain        // dead or draining: dropped and drained
	actClose        // idle for IdleTimeout: dropped and closed
)

// errNoStream is returned when a new connection refuses its first stream.
var errNoStream = errors.New("connpool: new connection cannot take a stream")

// NewMultiplex returns an empty pool.
func NewMultiplex[C PooledMux](o MultiplexOptions) *Multiplex[C] {
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	p := &Multiplex[C]{o: o}
	p.sweeper.every, p.sweeper.sweep = sweepEveryMux(o.IdleTimeout), p.sweepIdle
	p.watch.changed, p.watch.pass = o.HostsChanged, p.DrainStale
	return p
}

// Get returns a pooled connection to addr with a stream reserved for the caller, or
// reports false when none can take one.
func (p *Multiplex[C]) Get(addr string) (c C, ok bool) {
	h, found := p.hosts.load(addr)
	if !found {
		return c, false
	}
	h.mu.Lock()
	c, ok = h.reserveLocked()
	h.mu.Unlock()
	return c, ok
}

// reserveLocked reserves a stream on the first connection that can take one.
func (h *muxHost[C]) reserveLocked() (c C, ok bool) {
	for _, e := range h.conns {
		if e.c.Reserve() {
			e.taken++
			e.idleSince = time.Time{}
			return e.c, true
		}
	}
	return c, false
}

// Acquire returns a connection to addr with a stream reserved for the caller. A pooled
// one is preferred; when none can take a stream, Acquire calls dial, or waits for the
// dial another caller started, bounded by ctx. dial returns a new connection and the
// address it actually reached (a cluster may pick another host); its errors are returned
// as they are. When every connection is busy and the host has MaxConnsPerHost live ones,
// Acquire fails with ErrFull.
//
// pooled is false for a connection dialled after Close, or beyond MaxConnsPerHost by
// a concurrent Add: it serves the caller's stream only, and the caller Drains it when
// that stream is done.
func (p *Multiplex[C]) Acquire(ctx context.Context, addr string, dial func(context.Context) (C, string, error)) (c C, pooled bool, err error) {
	pruned := false
	for {
		if p.closed.Load() {
			return p.dialUnpooled(ctx, dial)
		}
		h := p.hosts.lock(addr, &p.closed)
		if h.gone {
			h.mu.Unlock()
			continue // closed meanwhile
		}
		if c, ok := h.reserveLocked(); ok {
			h.mu.Unlock()
			return c, true, nil
		}
		if wait := h.dialing; wait != nil {
			h.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return c, false, ctx.Err()
			}
		}
		if p.o.MaxConnsPerHost > 0 && len(h.conns) >= p.o.MaxConnsPerHost {
			h.mu.Unlock()
			if !pruned {
				// Dead connections may still count until the next sweep: drop them first.
				pruned = true
				p.check(h, time.Time{}, nil)
				continue
			}
			return c, false, ErrFull
		}
		ch := make(chan struct{})
		h.dialing = ch
		h.mu.Unlock()

		var at string
		c, at, err = dial(ctx)
		if err == nil {
			pooled, err = p.Add(at, c)
		}
		h.mu.Lock()
		h.dialing = nil
		h.mu.Unlock()
		close(ch)
		return c, pooled, err
	}
}

func (p *Multiplex[C]) dialUnpooled(ctx context.Context, dial func(context.Context) (C, string, error)) (c C, pooled bool, err error) {
	c, _, err = dial(ctx)
	if err != nil {
		return c, false, err
	}
	if !c.Reserve() {
		_ = c.Close()
		var zero C
		return zero, false, errNoStream
	}
	return c, false, nil
}

// Add reserves a stream on c, a new connection to addr, for the caller and pools it. When
// c cannot take a stream it is closed and Add fails. After Close, or when the host has
// MaxConnsPerHost connections, c is not pooled (pooled is false): it serves the caller's
// stream only, and the caller Drains it when that stream is done.
func (p *Multiplex[C]) Add(addr string, c C) (pooled bool, err error) {
	if !c.Reserve() {
		_ = c.Close()
		return false, errNoStream
	}
	if p.closed.Load() {
		return false, nil
	}
	p.sweeper.start()
	if p.o.Stale != nil && p.o.HostsChanged != nil {
		p.watch.start()
	}
	e := &muxEntry[C]{c: c, taken: 1}
	h := p.hosts.lock(addr, &p.closed)
	if p.closed.Load() || p.o.MaxConnsPerHost > 0 && len(h.conns) >= p.o.MaxConnsPerHost {
		h.mu.Unlock()
		return false, nil
	}
	h.conns = append(h.conns, e)
	h.last = time.Now()
	h.mu.Unlock()
	return true, nil
}

// Dead drops c, a connection to addr, from the pool at once and drains it: it is no
// longer counted against MaxConnsPerHost nor by Len, and never handed out again. Its
// owner calls it when it learns c died (GOAWAY received, read error, closed by either
// side), so that the pool does not wait for its sweeper to notice. It does nothing when
// c is not pooled (not pooled at all, or already dropped); it may be called more than
// once and from any goroutine, but not under a lock that Drain takes.
func (p *Multiplex[C]) Dead(addr string, c C) {
	h, ok := p.hosts.load(addr)
	if !ok {
		return
	}
	h.mu.Lock()
	found := false
	for _, e := range h.conns {
		if e.c == c {
			found = h.removeLocked(e)
			break
		}
	}
	h.mu.Unlock()
	if found {
		c.Drain()
	}
}

// Len returns the number of pooled connections to addr. A dead connection its owner did
// not report with Dead is counted until a sweep (or an Acquire at MaxConnsPerHost) finds
// it.
func (p *Multiplex[C]) Len(addr string) int {
	return p.hosts.size(addr, func(h *muxHost[C]) int { return len(h.conns) })
}

// Close stops pooling: every pooled connection is drained (idle ones close now, busy
// ones when their last stream ends), and later connections are not pooled.
func (p *Multiplex[C]) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.sweeper.stop()
	p.watch.stop()
	closeHosts(&p.hosts,
		func(h *muxHost[C]) []*muxEntry[C] {
			conns := h.conns
			h.conns = nil
			return conns
		},
		func(e *muxEntry[C]) { e.c.Drain() })
	return nil
}

// sweepEveryMux is the sweeper's period: idleness and death are observed, not notified,
// so it runs four times per IdleTimeout, and at least every second.
func sweepEveryMux(d time.Duration) time.Duration { return min(max(d/4, minSweep), time.Second) }

// sweepIdle, run by the pool's sweeper, checks every host's connections and forgets
// hosts left without connections and without a new one for IdleTimeout.
func (p *Multiplex[C]) sweepIdle() {
	now := time.Now()
	p.hosts.each(func(addr any, h *muxHost[C]) bool {
		if p.closed.Load() {
			return false
		}
		p.drainIfStale(addr.(string), h)
		p.checks = p.check(h, now, p.checks)
		h.mu.Lock()
		if len(h.conns) == 0 && h.dialing == nil && now.Sub(h.last) >= p.o.IdleTimeout {
			p.hosts.forgetLocked(addr, h)
		}
		h.mu.Unlock()
		return true
	})
	p.sweeper.rearm()
}

// DrainStale drains the pooled connections of every host that Stale reports now, rather
// than at the sweeper's next pass: call it when the hosts' membership or health changed.
func (p *Multiplex[C]) DrainStale() {
	p.hosts.each(func(addr any, h *muxHost[C]) bool {
		if p.closed.Load() {
			return false
		}
		p.drainIfStale(addr.(string), h)
		return true
	})
}

// drainIfStale drops and drains h's connections when Stale reports addr, h's address.
func (p *Multiplex[C]) drainIfStale(addr string, h *muxHost[C]) {
	if p.o.Stale == nil || !p.o.Stale(addr) {
		return
	}
	h.mu.Lock()
	conns := h.conns
	h.conns = nil
	h.mu.Unlock()
	for _, e := range conns {
		e.c.Drain()
	}
}

// check drops h's dead connections and drains them; with a non-zero now it also closes
// the ones without streams for IdleTimeout. Dead and Streams run outside h's lock on a
// snapshot; a connection that took a stream through the pool meanwhile is not counted
// idle. cs is scratch space, returned for reuse.
func (p *Multiplex[C]) check(h *muxHost[C], now time.Time, cs []muxCheck[C]) []muxCheck[C] {
	cs = cs[:0]
	h.mu.Lock()
	for _, e := range h.conns {
		cs = append(cs, muxCheck[C]{e: e, taken: e.taken})
	}
	h.mu.Unlock()
	if len(cs) == 0 {
		return cs
	}
	for i := range cs {
		c := &cs[i]
		c.dead = c.e.c.Dead()
		c.idle = !c.dead && !now.IsZero() && c.e.c.Streams() == 0
	}
	h.mu.Lock()
	for i := range cs {
		c := &cs[i]
		e := c.e
		switch {
		case c.dead:
			c.act = actDrain
		case !c.idle || e.taken != c.taken:
			if !now.IsZero() {
				e.idleSince = time.Time{}
			}
			continue
		case e.idleSince.IsZero():
			e.idleSince = now
			continue
		case now.Sub(e.idleSince) >= p.o.IdleTimeout:
			c.act = actClose // no stream meanwhile: nobody holds it
		default:
			continue
		}
		if !h.removeLocked(e) {
			c.act = actNone // a concurrent check or Close took it
		}
	}
	h.mu.Unlock()
	for i := range cs {
		switch cs[i].act {
		case actDrain:
			cs[i].e.c.Drain()
		case actClose:
			_ = cs[i].e.c.Close()
		}
		cs[i] = muxCheck[C]{}
	}
	return cs
}

// removeLocked removes e from h's list and reports whether it was there.
func (h *muxHost[C]) removeLocked(e *muxEntry[C]) bool {
	for i, x := range h.conns {
		if x == e {
			last := len(h.conns) - 1
			h.conns[i] = h.conns[last]
			h.conns[last] = nil
			h.conns = h.conns[:last]
			return true
		}
	}
	return false
}

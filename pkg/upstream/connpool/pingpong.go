package connpool

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is a connection a PingPong pool keeps idle.
type Conn interface {
	// NetConn returns the connection's socket, probed for liveness before reuse.
	NetConn() net.Conn
	// Close closes the socket and releases what the connection holds (its cluster's
	// max_connections unit). The pool calls it once, for a connection it closes.
	Close() error
}

// Prober is implemented by a Conn that probes its own liveness (a connection that keeps
// deadlines on its socket lifts a passed one first, so that the probe does not fail on
// it); the pool calls Probe instead of Alive(NetConn()).
type Prober interface {
	Probe() bool
}

// probe reports whether the idle connection c is still usable.
func probe(c Conn) bool {
	if pr, ok := c.(Prober); ok {
		return pr.Probe()
	}
	return Alive(c.NetConn())
}

// PingPongOptions configures a PingPong pool.
type PingPongOptions struct {
	// MaxIdlePerHost bounds the idle connections kept per host; a Put beyond it closes
	// the oldest idle one. 0: DefaultMaxIdlePerHost.
	MaxIdlePerHost int
	// IdleTimeout closes a connection idle for that long. 0: DefaultIdleTimeout.
	IdleTimeout time.Duration
	// AliveCheckAfter: Get probes a connection idle at least this long (Alive) and
	// closes it instead of returning it when the peer closed it. 0:
	// DefaultAliveCheckAfter; negative: never probe.
	AliveCheckAfter time.Duration
	// ProbeIdleEvery is how often the sweeper probes the idle connections (those idle for
	// AliveCheckAfter or more) and closes the ones whose peer closed them, so that an
	// upstream that closes an idle connection does not leave its socket in CLOSE_WAIT
	// until the connection is next taken or expires. Each probe is a syscall. 0:
	// DefaultProbeIdleEvery; negative, or AliveCheckAfter negative: never.
	ProbeIdleEvery time.Duration
	// Stale reports an idle connection that must not be reused although it is alive:
	// its host left its cluster (config, xDS/EDS update), is down, or its cluster's
	// connection settings changed (cluster.Host.Removed). Get closes such a
	// connection instead of returning it, and the sweeper closes every stale idle one at
	// its next pass (CloseStale at once). It runs under the host's lock, on every Get
	// that finds a connection, so it must be cheap and must not block (an atomic load).
	// nil: no connection is stale.
	Stale func(Conn) bool
	// HostsChanged, with Stale, returns a channel closed at the next change of the hosts'
	// membership or health (cluster.Manager.HostsChanged): the pool then runs CloseStale
	// and asks for the next channel. The pool waits on it on one goroutine, started by
	// the first Put and ended by Close. nil: stale connections wait for the sweeper.
	HostsChanged func() <-chan struct{}
}

// PingPong keeps idle connections that carry one request at a time, per host address,
// newest last: Get takes the newest (the likeliest to be alive), the idle sweeper closes
// the oldest. The caller Puts a connection back only after a request ended cleanly on it
// (the whole response read, nothing unread after it, no error); a connection that saw an
// error or an unfinished response is closed instead, never Put. After Close the idle
// connections are closed and a Put closes its connection.
//
// Each host has its own lock, found through a sync.Map; Get and Put do not allocate once
// a host's list has grown. The sweeper is a timer started by the first Put.
type PingPong[C Conn] struct {
	o      PingPongOptions
	hosts  hostMap[ppHost[C], *ppHost[C]]
	closed atomic.Bool

	sweeper sweeper
	sweepMu sync.Mutex // held by a sweep, so that Close waits for one in progress
	swept   []C        // the sweeper's scratch list, under sweepMu

	watch hostsWatch // runs CloseStale at each HostsChanged signal
}

// ppHost is a host's idle connections; last is its last Put.
type ppHost[C Conn] struct {
	hostCore
	idle []idleConn[C] // newest last
}

type idleConn[C Conn] struct {
	c     C
	since time.Time // when it went idle
}

// NewPingPong returns an empty pool.
func NewPingPong[C Conn](o PingPongOptions) *PingPong[C] {
	if o.MaxIdlePerHost <= 0 {
		o.MaxIdlePerHost = DefaultMaxIdlePerHost
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.AliveCheckAfter == 0 {
		o.AliveCheckAfter = DefaultAliveCheckAfter
	}
	if o.ProbeIdleEvery == 0 {
		o.ProbeIdleEvery = DefaultProbeIdleEvery
	}
	if o.AliveCheckAfter < 0 {
		o.ProbeIdleEvery = -1
	}
	p := &PingPong[C]{o: o}
	p.watch.changed, p.watch.pass = o.HostsChanged, p.CloseStale
	p.sweeper.every, p.sweeper.sweep = sweepEvery(o.IdleTimeout), p.sweepIdle
	if o.ProbeIdleEvery > 0 {
		p.sweeper.every = min(p.sweeper.every, max(o.ProbeIdleEvery, minSweep))
	}
	return p
}

// startWatch starts the HostsChanged watcher once, unless Close came first.
func (p *PingPong[C]) startWatch() {
	if p.o.Stale != nil && p.o.HostsChanged != nil {
		p.watch.start()
	}
}

// Get takes an idle connection to addr, or reports false when there is none. now is the
// caller's clock reading: expired connections are closed rather than returned, and one
// idle for AliveCheckAfter or more is probed first.
func (p *PingPong[C]) Get(addr string, now time.Time) (c C, ok bool) {
	h, found := p.hosts.load(addr)
	if !found {
		return c, false
	}
	for {
		h.mu.Lock()
		n := len(h.idle)
		if n == 0 {
			h.mu.Unlock()
			return c, false
		}
		e := h.idle[n-1]
		h.idle[n-1] = idleConn[C]{}
		h.idle = h.idle[:n-1]
		if p.o.Stale != nil && p.o.Stale(e.c) {
			h.mu.Unlock()
			_ = e.c.Close()
			continue
		}
		idle := now.Sub(e.since)
		if idle >= p.o.IdleTimeout {
			// The newest expired, so did every older one.
			old := h.idle
			h.idle = nil
			h.mu.Unlock()
			_ = e.c.Close()
			for _, o := range old {
				_ = o.c.Close()
			}
			return c, false
		}
		h.mu.Unlock()
		if p.o.AliveCheckAfter >= 0 && idle >= p.o.AliveCheckAfter && !probe(e.c) {
			_ = e.c.Close()
			continue
		}
		return e.c, true
	}
}

// Put keeps c, a connection to addr that just finished a request cleanly, for reuse. It
// closes c after Close or when Stale reports it, and closes the host's oldest idle connection when the host
// already has MaxIdlePerHost of them or the oldest expired.
func (p *PingPong[C]) Put(addr string, c C, now time.Time) {
	if p.closed.Load() {
		_ = c.Close()
		return
	}
	p.sweeper.start()
	p.startWatch()
	h := p.hosts.lock(addr, &p.closed)
	// Stale is asked under h's lock: a change that CloseStale handled before this sees
	// the new state here, and one after this finds c in h.idle.
	if p.closed.Load() || p.o.Stale != nil && p.o.Stale(c) {
		h.mu.Unlock()
		_ = c.Close()
		return
	}
	var old C
	evict := len(h.idle) > 0 &&
		(len(h.idle) >= p.o.MaxIdlePerHost || now.Sub(h.idle[0].since) >= p.o.IdleTimeout)
	if evict {
		old = h.idle[0].c
		n := copy(h.idle, h.idle[1:])
		h.idle[n] = idleConn[C]{}
		h.idle = h.idle[:n]
	}
	h.idle = append(h.idle, idleConn[C]{c: c, since: now})
	h.last = now
	h.mu.Unlock()
	if evict {
		_ = old.Close()
	}
}

// Len returns the number of idle connections to addr.
func (p *PingPong[C]) Len(addr string) int {
	return p.hosts.size(addr, func(h *ppHost[C]) int { return len(h.idle) })
}

// Close closes the idle connections and stops pooling: a later Put closes its connection.
// Connections in use are closed by their users.
func (p *PingPong[C]) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.sweeper.stop()
	// A CloseStale in progress sees closed once it has sweepMu, and returns.
	p.watch.stop()
	// After a sweep in progress, which closes the connections it took before Close returns.
	p.sweepMu.Lock()
	defer p.sweepMu.Unlock()
	closeHosts(&p.hosts,
		func(h *ppHost[C]) []idleConn[C] {
			idle := h.idle
			h.idle = nil
			return idle
		},
		func(e idleConn[C]) { _ = e.c.Close() })
	return nil
}

// CloseStale closes every idle connection that Stale reports now, rather than at the
// sweeper's next pass: call it when the hosts' membership or health changed.
func (p *PingPong[C]) CloseStale() {
	if p.o.Stale == nil {
		return
	}
	p.sweepMu.Lock()
	defer p.sweepMu.Unlock()
	if p.closed.Load() {
		return
	}
	p.hosts.each(func(_ any, h *ppHost[C]) bool {
		h.mu.Lock()
		p.takeStaleLocked(h)
		h.mu.Unlock()
		return true
	})
	p.closeSwept()
}

// sweepIdle, run by the pool's sweeper, closes the idle connections older than
// IdleTimeout, so they do not wait for the host to be used again, and the stale ones, and
// forgets the hosts that had no idle connection and no Put for IdleTimeout.
func (p *PingPong[C]) sweepIdle() {
	p.sweepMu.Lock()
	defer p.sweepMu.Unlock()
	if p.closed.Load() {
		return
	}
	now := time.Now()
	p.hosts.each(func(addr any, h *ppHost[C]) bool {
		h.mu.Lock()
		n := 0
		for n < len(h.idle) && now.Sub(h.idle[n].since) >= p.o.IdleTimeout {
			p.swept = append(p.swept, h.idle[n].c)
			n++
		}
		if n > 0 {
			rest := copy(h.idle, h.idle[n:])
			clear(h.idle[rest:])
			h.idle = h.idle[:rest]
		}
		p.takeStaleLocked(h)
		if p.o.ProbeIdleEvery > 0 {
			p.takeDeadLocked(h, now)
		}
		if len(h.idle) == 0 && now.Sub(h.last) >= p.o.IdleTimeout {
			p.hosts.forgetLocked(addr, h)
		}
		h.mu.Unlock()
		return true
	})
	p.closeSwept()
	p.sweeper.rearm()
}

// takeStaleLocked moves h's stale idle connections to the sweep's list, keeping the
// others in order; h's lock and sweepMu are held.
func (p *PingPong[C]) takeStaleLocked(h *ppHost[C]) {
	if p.o.Stale == nil {
		return
	}
	kept := h.idle[:0]
	for _, e := range h.idle {
		if p.o.Stale(e.c) {
			p.swept = append(p.swept, e.c)
			continue
		}
		kept = append(kept, e)
	}
	clear(h.idle[len(kept):])
	h.idle = kept
}

// takeDeadLocked moves h's idle connections that fail their probe (the peer closed them,
// or sent bytes nobody asked for) to the sweep's list; only those idle for
// AliveCheckAfter or more are probed. h's lock and sweepMu are held.
func (p *PingPong[C]) takeDeadLocked(h *ppHost[C], now time.Time) {
	kept := h.idle[:0]
	for _, e := range h.idle {
		if now.Sub(e.since) >= p.o.AliveCheckAfter && !probe(e.c) {
			p.swept = append(p.swept, e.c)
			continue
		}
		kept = append(kept, e)
	}
	clear(h.idle[len(kept):])
	h.idle = kept
}

// closeSwept closes the connections a sweep took, outside every host's lock; sweepMu is
// held.
func (p *PingPong[C]) closeSwept() {
	for _, c := range p.swept {
		_ = c.Close()
	}
	clear(p.swept)
	p.swept = p.swept[:0]
}

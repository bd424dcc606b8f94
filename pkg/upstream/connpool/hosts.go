package connpool

import (
	"sync"
	"sync/atomic"
	"time"
)

// hostCore is the part of a pool's per-host state that every pool has; the pool's host
// type embeds it.
type hostCore struct {
	mu   sync.Mutex // guards the embedding host's fields
	last time.Time  // when the pool last took a connection for this host
	gone bool       // removed from the pool's map: never used again
}

func (h *hostCore) core() *hostCore { return h }

// hostPtr is a pointer to a pool's host type H, which embeds hostCore.
type hostPtr[H any] interface {
	*H
	core() *hostCore
}

// hostMap keeps a pool's hosts by address, each with its own lock, found through a
// sync.Map so that the request path takes no lock shared across hosts. A host is added by
// its first use and removed, marked gone under its lock, by the sweeper or Close; a user
// that finds it gone takes the address's new host.
type hostMap[H any, P hostPtr[H]] struct {
	m sync.Map // address → P
}

// load returns addr's host, if any.
func (m *hostMap[H, P]) load(addr string) (P, bool) {
	v, ok := m.m.Load(addr)
	if !ok {
		return nil, false
	}
	return v.(P), true
}

// lock returns addr's host, added when missing, with its lock held. The host is gone only
// after the pool's Close (closed set): the caller then gives up on pooling.
func (m *hostMap[H, P]) lock(addr string, closed *atomic.Bool) P {
	for {
		h, ok := m.load(addr)
		if !ok {
			v, _ := m.m.LoadOrStore(addr, P(new(H)))
			h = v.(P)
		}
		c := h.core()
		c.mu.Lock()
		if c.gone && !closed.Load() {
			c.mu.Unlock()
			continue // the sweeper dropped it: take the host's new one
		}
		return h
	}
}

// forgetLocked removes h, addr's host, from the map for good; h's lock is held.
func (m *hostMap[H, P]) forgetLocked(addr any, h P) {
	h.core().gone = true
	m.m.CompareAndDelete(addr, h)
}

// size returns n(h) for addr's host, under its lock, or 0 when there is none.
func (m *hostMap[H, P]) size(addr string, n func(P) int) int {
	h, ok := m.load(addr)
	if !ok {
		return 0
	}
	c := h.core()
	c.mu.Lock()
	defer c.mu.Unlock()
	return n(h)
}

// each calls f for every host, without its lock, until f returns false.
func (m *hostMap[H, P]) each(f func(addr any, h P) bool) {
	m.m.Range(func(k, v any) bool { return f(k, v.(P)) })
}

// closeHosts forgets every host of m. take runs under a host's lock and detaches its
// connections; release then runs on each of them without the lock.
func closeHosts[H any, P hostPtr[H], E any](m *hostMap[H, P], take func(P) []E, release func(E)) {
	m.each(func(addr any, h P) bool {
		c := h.core()
		c.mu.Lock()
		es := take(h)
		m.forgetLocked(addr, h)
		c.mu.Unlock()
		for _, e := range es {
			release(e)
		}
		return true
	})
}

// hostsWatch runs a pool's pass at every signal of a HostsChanged option, on one
// goroutine, from its first start until stop. changed and pass are set when the pool is
// made: changed returns the channel closed at the next change; pass runs after each.
type hostsWatch struct {
	changed func() <-chan struct{}
	pass    func()

	once    sync.Once
	mu      sync.Mutex // orders start with stop
	stopped bool
	quit    chan struct{} // closed by stop
	done    chan struct{} // closed when the goroutine has ended
}

// start starts the watcher the first time it is called, unless stop came first. It does
// not allocate.
func (w *hostsWatch) start() { w.once.Do(w.begin) }

func (w *hostsWatch) begin() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	quit, done := make(chan struct{}), make(chan struct{})
	w.quit, w.done = quit, done
	go func(ch <-chan struct{}) {
		defer close(done)
		for {
			select {
			case <-ch:
			case <-quit:
				return
			}
			ch = w.changed() // before the pass, so that no change is missed
			w.pass()
		}
	}(w.changed())
}

// stop ends the watcher and waits for a pass in progress; a pass must therefore not
// wait for stop's caller.
func (w *hostsWatch) stop() {
	w.mu.Lock()
	w.stopped = true
	quit, done := w.quit, w.done
	w.quit = nil
	w.mu.Unlock()
	if quit != nil {
		close(quit)
		<-done
	}
}

// sweeper runs a pool's sweep on one coarse timer per pool, not one per connection. The
// timer is armed by the pool's first connection (start) and re-armed by the sweep when it
// ends (rearm), so sweeps never overlap; after stop it is never armed again.
type sweeper struct {
	every time.Duration // the period
	sweep func()

	once    sync.Once
	mu      sync.Mutex
	timer   *time.Timer // nil until start; under mu
	stopped bool        // under mu
}

// start arms the timer the first time it is called, unless stop came first. It does not
// allocate.
func (s *sweeper) start() { s.once.Do(s.arm) }

func (s *sweeper) arm() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.timer = time.AfterFunc(s.every, s.sweep)
	}
}

// rearm schedules the next sweep; the sweep calls it last.
func (s *sweeper) rearm() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.timer.Reset(s.every)
	}
}

// stop stops the timer for good. A sweep already running is not waited for.
func (s *sweeper) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.timer != nil {
		s.timer.Stop()
	}
}

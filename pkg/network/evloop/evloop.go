// Package evloop runs sockets on event loops: an edge-triggered epoll set per loop, one
// goroutine per loop, handlers called on that goroutine for the readiness of the
// descriptors they registered, coarse timers, and a queue for work posted from other
// goroutines.
//
// It is for paths where Go's net costs more than the work itself, such as tcp_proxy's
// short connections: there each connection would otherwise take a goroutine (two for a
// proxied pair), a runtime poll descriptor per socket, a read that returns EAGAIN before
// every wait, and an epoll_ctl(DEL) before every close. On a loop a socket costs one
// epoll_ctl(ADD), its reads and writes, and its close.
//
// A loop does not block a thread: its epoll descriptor is itself registered with Go's
// poller, so the loop's goroutine parks in the runtime like any network goroutine, is
// woken when one of its descriptors is ready, and shares its P fairly with the rest of
// the process. Timers use the same wait, as a read deadline on the epoll descriptor.
//
// Everything a loop owns (handlers, timers, the scratch buffer) is used only on its
// goroutine; Post is the one way in from elsewhere.
package evloop

import (
	"errors"
	"time"
)

// Readiness bits passed to Handler.OnEvents (the epoll values on Linux).
const (
	In    uint32 = 0x1    // readable (data, or EOF)
	Out   uint32 = 0x4    // writable, or a connect finished
	Err   uint32 = 0x8    // an error is pending (read SO_ERROR, or let the next call fail)
	Hup   uint32 = 0x10   // both directions are shut
	RdHup uint32 = 0x2000 // the peer shut down its writing side (FIN received)
)

// Handler receives readiness for a registered descriptor, on the loop's goroutine. It is
// edge-triggered: the loop reports a change once, and the handler must then read (or
// write) until the kernel says EAGAIN or a short count shows the socket drained (or full).
type Handler interface {
	OnEvents(ev uint32)
}

// Closer is implemented by handlers that own resources to release when their loop's
// group is closed while they are still registered (their owner had no chance to drain
// them).
type Closer interface {
	LoopClosed()
}

// TimerHandler is called when a Timer expires.
type TimerHandler interface {
	OnTimer()
}

// ErrUnsupported is returned by NewGroup where event loops are not available (not
// Linux, or the runtime poller refused the epoll descriptor); callers fall back to
// goroutines over net.
var ErrUnsupported = errors.New("evloop: event loops are not supported here")

// ErrClosed is returned for registrations on a closed loop.
var ErrClosed = errors.New("evloop: loop closed")

// Token identifies a registration: a slot in the loop's table and its generation, so a
// stale event for a descriptor closed earlier in the same batch is dropped.
type Token uint64

// Timer is a one-shot timer on a loop, embedded in its owner (no allocation). The zero
// value is an unscheduled timer; set H before scheduling.
type Timer struct {
	H    TimerHandler
	when int64 // loop clock, ns
	idx  int   // heap index + 1; 0: not scheduled
}

// Scheduled reports whether t is waiting to fire.
func (t *Timer) Scheduled() bool { return t.idx != 0 }

// epoch anchors the loops' monotonic clock.
var epoch = time.Now()

// Mono is the loops' clock: monotonic nanoseconds since process start.
func Mono() int64 { return int64(time.Since(epoch)) }

// timerHeap is a binary min-heap on when; each Timer knows its index, so a timer is
// moved or removed in O(log n) without stale entries.
type timerHeap []*Timer

func (h timerHeap) less(i, j int) bool { return h[i].when < h[j].when }

func (h timerHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i + 1
	h[j].idx = j + 1
}

func (h timerHeap) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

func (h timerHeap) down(i int) bool {
	i0, n := i, len(h)
	for {
		j := 2*i + 1
		if j >= n {
			break
		}
		if r := j + 1; r < n && h.less(r, j) {
			j = r
		}
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}

func (h *timerHeap) push(t *Timer) {
	*h = append(*h, t)
	t.idx = len(*h)
	h.up(len(*h) - 1)
}

func (h *timerHeap) remove(t *Timer) {
	i := t.idx - 1
	n := len(*h) - 1
	if i != n {
		h.swap(i, n)
	}
	(*h)[n] = nil
	*h = (*h)[:n]
	if i != n && !h.down(i) {
		h.up(i)
	}
	t.idx = 0
}

func (h timerHeap) fix(t *Timer) {
	i := t.idx - 1
	if !h.down(i) {
		h.up(i)
	}
}

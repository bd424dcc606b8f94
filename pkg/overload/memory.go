// Package overload keeps the proxy under its memory limit the way an overload manager
// does: when the memory the Go runtime counts against its limit (GOMEMLIMIT) nears the
// limit, listeners stop accepting new connections, so that the connections already open
// can finish instead of the process being OOM-killed; accepting resumes once use falls
// back. Pending connections wait in the kernel's accept backlog meanwhile. While paused,
// the heap is collected and its free pages returned to the OS every ShrinkEvery (Envoy's
// shrink_heap action), so that use can fall back at all.
package overload

import (
	"context"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

const (
	// PauseAt and ResumeAt are the shares of the limit at which accepting stops and
	// starts again; the gap keeps a process near the limit from flapping.
	PauseAt  = 0.95
	ResumeAt = 0.85
	// Interval is how often memory is sampled while use is below WatchAt: coarse, as
	// reading the runtime's metrics is not free and memory far from the limit does not
	// reach it in a quarter second under connection backpressure.
	Interval = 250 * time.Millisecond
	// WatchAt is the share of the limit from which memory is sampled every
	// WatchInterval, and so it is while paused: arrivals fast enough to climb from
	// WatchAt past the limit within one Interval would otherwise overshoot it before
	// accepting stops (GOMEMLIMIT is soft), and a paused proxy resumes sooner.
	WatchAt       = 0.80
	WatchInterval = 25 * time.Millisecond
	// ShrinkEvery is how often, while paused above ResumeAt, the heap is collected and
	// its free pages returned to the OS (debug.FreeOSMemory). On its own the runtime
	// does neither soon enough for use to fall to ResumeAt: a paused proxy whose
	// connections closed allocates little, so the next collection may be minutes away
	// (the forced one every two minutes), and until then the buffer pools and the
	// garbage keep what those connections held; and once collected, free pages go back
	// to the OS at the runtime's pace and only down to its own targets (95 % of the
	// limit, or 10 % over the next heap goal), which can stay above ResumeAt.
	ShrinkEvery = time.Second
)

// Limit returns the process's memory limit (GOMEMLIMIT or debug.SetMemoryLimit), or 0
// when there is none.
func Limit() uint64 {
	l := debug.SetMemoryLimit(-1)
	if l <= 0 || l == math.MaxInt64 {
		return 0
	}
	return uint64(l)
}

// Memory watches memory use against a limit. Its methods may be called from any
// goroutine; Check and Run must not run concurrently with each other.
type Memory struct {
	limit             uint64
	pauseAt, resumeAt uint64
	watchAt           uint64
	over              atomic.Bool
	samples           []metrics.Sample
	log               *zap.Logger
	gauge             prometheus.Gauge // 1 while overloaded; nil: none
	shrink            func()           // debug.FreeOSMemory; tests replace it
	shrunk            time.Time        // the last shrink; zero: none yet
}

// NewMemory watches memory against limit (bytes, > 0). gauge, when set, reads 1 while
// accepting is paused.
func NewMemory(limit uint64, log *zap.Logger, gauge prometheus.Gauge) *Memory {
	if log == nil {
		log = zap.NewNop()
	}
	return &Memory{
		limit:    limit,
		pauseAt:  uint64(float64(limit) * PauseAt),
		resumeAt: uint64(float64(limit) * ResumeAt),
		watchAt:  uint64(float64(limit) * WatchAt),
		samples:  []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}},
		log:      log,
		gauge:    gauge,
		shrink:   debug.FreeOSMemory,
	}
}

// Overloaded reports whether listeners should not accept now. A nil Memory never is.
func (m *Memory) Overloaded() bool { return m != nil && m.over.Load() }

// Used returns the memory the runtime counts against its limit: everything it has mapped
// less what it returned to the OS.
func (m *Memory) Used() uint64 {
	metrics.Read(m.samples)
	total, released := m.samples[0].Value.Uint64(), m.samples[1].Value.Uint64()
	if released > total {
		return 0
	}
	return total - released
}

// Check samples memory once, updates the state and returns it. While paused above
// ResumeAt it first shrinks the heap, at most once every ShrinkEvery.
func (m *Memory) Check() bool {
	over, _ := m.check()
	return over
}

// check is Check, also returning the use it sampled.
func (m *Memory) check() (bool, uint64) {
	used := m.Used()
	was := m.over.Load()
	if was && used > m.resumeAt {
		if t := time.Now(); t.Sub(m.shrunk) >= ShrinkEvery {
			m.shrunk = t
			m.shrink()
			after := m.Used()
			m.log.Debug("memory over its resume mark while paused: heap collected and free pages returned",
				zap.Uint64("used_bytes_before", used), zap.Uint64("used_bytes", after), zap.Uint64("limit_bytes", m.limit))
			used = after
		}
	}
	now := was
	switch {
	case !was && used >= m.pauseAt:
		now = true
		m.log.Warn("memory near its limit: listeners stop accepting new connections",
			zap.Uint64("used_bytes", used), zap.Uint64("limit_bytes", m.limit))
	case was && used <= m.resumeAt:
		now = false
		m.log.Info("memory back under its limit: listeners accept again",
			zap.Uint64("used_bytes", used), zap.Uint64("limit_bytes", m.limit))
	}
	if now != was {
		m.over.Store(now)
		if m.gauge != nil {
			v := 0.0
			if now {
				v = 1
			}
			m.gauge.Set(v)
		}
	}
	return now, used
}

// interval is the wait before the next sample after one that read used (over: paused).
func (m *Memory) interval(over bool, used uint64) time.Duration {
	if over || used >= m.watchAt {
		return WatchInterval
	}
	return Interval
}

// Run checks until ctx ends: every Interval, every WatchInterval from WatchAt and while
// paused.
func (m *Memory) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		t.Reset(m.interval(m.check()))
	}
}

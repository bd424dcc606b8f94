// Package lbtest holds fakes for testing balancers and their callers: a Host, a
// deterministic random source and a manual clock.
package lbtest

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// Host is a minimal lb.Host.
type Host struct {
	A string
	W uint32
	S lb.HostStats
}

// Addr returns A.
func (h *Host) Addr() string { return h.A }

// Weight returns W.
func (h *Host) Weight() uint32 { return h.W }

// Stats returns &S.
func (h *Host) Stats() *lb.HostStats { return &h.S }

// String returns A, so failures print the address.
func (h *Host) String() string { return h.A }

// Hosts returns one *Host of weight 1 per address.
func Hosts(addrs ...string) []lb.Host {
	out := make([]lb.Host, len(addrs))
	for i, a := range addrs {
		out[i] = &Host{A: a, W: 1}
	}
	return out
}

// Weighted returns hosts with the given weights, named by addrs.
func Weighted(addrs []string, weights []uint32) []lb.Host {
	out := make([]lb.Host, len(addrs))
	for i, a := range addrs {
		out[i] = &Host{A: a, W: weights[i]}
	}
	return out
}

// FixedRand returns a Rand that always returns v.
func FixedRand(v uint64) func() uint64 { return func() uint64 { return v } }

// SeededRand returns a deterministic Rand, safe for concurrent use.
func SeededRand(seed uint64) func() uint64 {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func() uint64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Uint64()
	}
}

// Clock is a manual clock for Options.Now, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

package network

import (
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Index maps listener addresses to listeners (virtual ones included) for original_dst
// hand-off. Lookups are lock-free reads of an immutable map; Add and Remove copy it.
type Index struct {
	mu sync.Mutex // writers
	m  atomic.Pointer[map[netip.AddrPort]*Listener]
}

// NewIndex returns an empty index.
func NewIndex() *Index { return &Index{} }

// Add indexes l under its address (a bound tcp listener's actual address, or a virtual
// listener's configured one). Listeners without one (udp, unix) are ignored. Two
// listeners on one address are an error.
func (x *Index) Add(l *Listener) error {
	if !l.hasKey {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	var next map[netip.AddrPort]*Listener
	if cur := x.m.Load(); cur != nil {
		if other, dup := (*cur)[l.key]; dup {
			if other == l {
				return nil
			}
			return fmt.Errorf("address %s is already indexed by listener %q", l.key, other.Name())
		}
		next = maps.Clone(*cur)
	} else {
		next = map[netip.AddrPort]*Listener{}
	}
	next[l.key] = l
	x.m.Store(&next)
	return nil
}

// Remove drops l from the index.
func (x *Index) Remove(l *Listener) {
	if !l.hasKey {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	cur := x.m.Load()
	if cur == nil || (*cur)[l.key] != l {
		return
	}
	next := maps.Clone(*cur)
	delete(next, l.key)
	x.m.Store(&next)
}

// Lookup finds the listener for ap: the exact ip:port, else 0.0.0.0:port (for IPv4),
// else [::]:port.
func (x *Index) Lookup(ap netip.AddrPort) (*Listener, bool) { return x.lookup(ap, nil) }

// lookup is Lookup skipping self at every step.
func (x *Index) lookup(ap netip.AddrPort, self *Listener) (*Listener, bool) {
	if x == nil {
		return nil, false
	}
	mp := x.m.Load()
	if mp == nil {
		return nil, false
	}
	m := *mp
	ap = normalize(ap)
	if l, ok := m[ap]; ok && l != self {
		return l, true
	}
	if ap.Addr().Is4() {
		if l, ok := m[netip.AddrPortFrom(netip.IPv4Unspecified(), ap.Port())]; ok && l != self {
			return l, true
		}
	}
	if l, ok := m[netip.AddrPortFrom(netip.IPv6Unspecified(), ap.Port())]; ok && l != self {
		return l, true
	}
	return nil, false
}

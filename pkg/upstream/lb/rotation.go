package lb

import (
	"container/heap"
	"context"
	"math/bits"
	"slices"
	"sync/atomic"
)

// NewRoundRobin returns LB_ROUNDROBIN: hosts in turn, in the order given, from a random
// start (Options.Rand) so that many proxies do not all begin with the first host.
func NewRoundRobin(hosts []Host, o Options) Picker {
	if len(hosts) == 0 {
		return noHost{}
	}
	o = o.withDefaults()
	p := &roundRobin{es: newEntries(hosts, nil)}
	p.next.Store(uint64(randN(o.Rand, len(hosts))))
	return p
}

type roundRobin struct {
	es   []*entry
	next atomic.Uint64
}

func (p *roundRobin) Pick(context.Context, *Request) (Host, func(DoneInfo), error) {
	i := p.next.Add(1) - 1
	return p.es[i%uint64(len(p.es))].take()
}

// NewRandom returns LB_RANDOM: a uniformly random host (weights ignored, as in MOSN).
func NewRandom(hosts []Host, o Options) Picker {
	if len(hosts) == 0 {
		return noHost{}
	}
	o = o.withDefaults()
	return &random{es: newEntries(hosts, nil), rand: o.Rand}
}

type random struct {
	es   []*entry
	rand func() uint64
}

func (p *random) Pick(context.Context, *Request) (Host, func(DoneInfo), error) {
	return p.es[randN(p.rand, len(p.es))].take()
}

// scheduleCap bounds the precomputed weighted schedule (entries of 4 bytes). Above it, the
// picker computes each position with a golden-ratio stride instead.
const scheduleCap = 1 << 14

// NewWeightedRoundRobin returns LB_WEIGHTED_ROUNDROBIN: exact proportions per cycle with
// smooth interleaving. Weights are reduced by their gcd; if the cycle (sum of the reduced
// weights) fits scheduleCap, the cycle is precomputed at build time by earliest-deadline
// first with half-period offsets (host i's k-th turn is due at (k+½)/wᵢ, ties by order),
// so weights 5:1:1 give a a a b c a a. Larger cycles map the pick number k through the
// permutation k → k·s mod total, with s near total/φ and coprime to total, onto the
// cumulative weights: still exact over each cycle, well spread, and O(log n) per pick
// with no table. Either way Pick is one atomic add.
func NewWeightedRoundRobin(hosts []Host, o Options) Picker {
	if len(hosts) == 0 {
		return noHost{}
	}
	o = o.withDefaults()
	es := newEntries(hosts, nil)
	g := uint64(0)
	for _, e := range es {
		g = gcd(g, uint64(e.weight))
	}
	w := make([]uint64, len(es))
	var total uint64
	for i, e := range es {
		w[i] = uint64(e.weight) / g
		total += w[i]
	}
	p := &weighted{es: es, total: total}
	if total <= scheduleCap {
		p.sched = edfSchedule(w, total)
	} else {
		p.cum = make([]uint64, len(w))
		var c uint64
		for i, x := range w {
			c += x
			p.cum[i] = c
		}
		p.stride = goldenStride(total)
	}
	p.next.Store(o.Rand() % total)
	return p
}

type weighted struct {
	es    []*entry
	total uint64
	next  atomic.Uint64
	// Either a precomputed cycle ...
	sched []uint32
	// ... or cumulative weights walked by a coprime stride.
	cum    []uint64
	stride uint64
}

func (p *weighted) Pick(context.Context, *Request) (Host, func(DoneInfo), error) {
	k := (p.next.Add(1) - 1) % p.total
	if p.sched != nil {
		return p.es[p.sched[k]].take()
	}
	hi, lo := bits.Mul64(k, p.stride)
	pos := bits.Rem64(hi, lo, p.total)
	i, _ := slices.BinarySearch(p.cum, pos+1) // first i with cum[i] > pos
	return p.es[i].take()
}

// edfSchedule lays out one cycle of len total: host i appears w[i] times.
func edfSchedule(w []uint64, total uint64) []uint32 {
	h := make(edfHeap, len(w))
	for i, x := range w {
		h[i] = edfItem{idx: uint32(i), w: x}
	}
	heap.Init(&h)
	out := make([]uint32, 0, total)
	for uint64(len(out)) < total {
		it := &h[0]
		out = append(out, it.idx)
		it.k++
		if it.k == it.w {
			heap.Pop(&h)
		} else {
			heap.Fix(&h, 0)
		}
	}
	return out
}

type edfItem struct {
	idx  uint32
	k, w uint64 // turns taken, weight; next turn due at (2k+1)/(2w)
}

type edfHeap []edfItem

func (h edfHeap) Len() int { return len(h) }
func (h edfHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	// (2ka+1)/wa < (2kb+1)/wb; the products stay below 2^64 because weights here are
	// at most scheduleCap.
	l, r := (2*a.k+1)*b.w, (2*b.k+1)*a.w
	if l != r {
		return l < r
	}
	return a.idx < b.idx
}
func (h edfHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *edfHeap) Push(x any)   { *h = append(*h, x.(edfItem)) }
func (h *edfHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// goldenStride returns s coprime to total, near total/φ.
func goldenStride(total uint64) uint64 {
	s := uint64(float64(total) * 0.6180339887498949)
	if s == 0 {
		s = 1
	}
	for gcd(s, total) != 1 {
		s++
	}
	return s
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

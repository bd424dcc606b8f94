package lb

import (
	"context"
	"math"
	"slices"
	"time"
)

// NewLeastRequest returns LB_LEAST_REQUEST: among ChoiceCount distinct random hosts (all
// hosts when there are no more than ChoiceCount), the one with the fewest in-flight
// requests. With unequal weights the cost is (active+1)^bias / weight (Envoy's
// active_request_bias, default 1). Ties go to the first random choice.
func NewLeastRequest(hosts []Host, o Options) Picker {
	return newP2C(hosts, o, costActive, nil)
}

// NewLeastConnection returns LB_LEAST_CONNECTION: as LB_LEAST_REQUEST over open
// connections (HostStats.ConnOpened/ConnClosed; cluster.Dial maintains them), weighted as
// (conns+1) / weight when weights differ.
func NewLeastConnection(hosts []Host, o Options) Picker {
	return newP2C(hosts, o, costConns, nil)
}

// NewPeakEWMA returns LB_PEAK_EWMA, linkerd2-proxy's balancer: among ChoiceCount distinct
// random hosts, the lowest cost = peakEWMA(latency) × (active+1) / weight.
//
// The estimate is peak-sensitive: a sample above it replaces it at once; a sample below
// blends in with weight 1−exp(−Δt/Decay), Δt being the time since the last update. When
// read for a pick it is decayed toward zero by exp(−Δt/Decay), as linkerd does, so a host
// that stopped getting traffic because it was slow is eventually tried again. Before any
// sample a host's estimate is a prior, set when the first LB_PEAK_EWMA picker over the
// host is built and decaying from then: the median of the current estimates of the
// picker's hosts that have samples, or DefaultRTT when none has. The first sample replaces
// the prior outright, so a fast host is known as fast from its first answer rather than
// after several decay periods of blending down from the prior. A host that comes back up
// (HostStats.ResetPeakEWMA, called by the cluster) starts again from such a prior rather
// than from the estimate it had when it went down. Samples are DoneInfo.Latency.
//
// The estimate and its time stamp share one 64-bit word updated by compare-and-swap: a
// float32 nanosecond value and a 32-bit millisecond clock that wraps every 49.7 days, so
// an estimate not updated for more than 24.8 days is read as fresh.
func NewPeakEWMA(hosts []Host, o Options) Picker {
	o = o.withDefaults()
	ew := &ewmaParams{now: o.Now, decay: float64(o.Decay), def: float64(o.DefaultRTT)}
	p := newP2C(hosts, o, costEWMA, ew)
	if p, ok := p.(*p2c); ok {
		now := ew.millis()
		prior := ew.prior(p.es, now)
		for _, e := range p.es {
			e.st.ewma.CompareAndSwap(0, packEWMA(-prior, now)) // negative: prior
		}
	}
	return p
}

// prior is the estimate given to a host without one: the median of the current estimates
// of the hosts in es that have samples (lower middle for an even count), so that a host
// joining a warm set neither waits out a DefaultRTT above every other host's nor takes
// all the traffic; DefaultRTT when no host has a sample.
func (p *ewmaParams) prior(es []*entry, now uint32) float64 {
	var est []float64
	for _, e := range es {
		if v, _ := unpackEWMA(e.st.ewma.Load()); v > 0 {
			est = append(est, p.estimate(e.st, now))
		}
	}
	if len(est) == 0 {
		return p.def
	}
	slices.Sort(est)
	return est[(len(est)-1)/2]
}

type costKind uint8

const (
	costActive costKind = iota
	costConns
	costEWMA
)

type p2c struct {
	es      []*entry
	rand    func() uint64
	k       int
	kind    costKind
	uniform bool // all weights equal: compare counts alone
	bias    float64
	ew      *ewmaParams
}

func newP2C(hosts []Host, o Options, kind costKind, ew *ewmaParams) Picker {
	if len(hosts) == 0 {
		return noHost{}
	}
	o = o.withDefaults()
	p := &p2c{es: newEntries(hosts, ew), rand: o.Rand, k: o.ChoiceCount, kind: kind, bias: o.ActiveRequestBias, ew: ew, uniform: true}
	for _, e := range p.es {
		if e.weight != p.es[0].weight {
			p.uniform = false
		}
	}
	return p
}

func (p *p2c) cost(e *entry, now uint32) float64 {
	switch p.kind {
	case costActive:
		a := float64(e.st.active.Load())
		if p.uniform {
			return a
		}
		if p.bias == 1 {
			return (a + 1) / float64(e.weight)
		}
		return math.Pow(a+1, p.bias) / float64(e.weight)
	case costConns:
		c := float64(e.st.conns.Load())
		if p.uniform {
			return c
		}
		return (c + 1) / float64(e.weight)
	default:
		a := float64(e.st.active.Load())
		return p.ew.estimate(e.st, now) * (a + 1) / float64(e.weight)
	}
}

func (p *p2c) Pick(context.Context, *Request) (Host, func(DoneInfo), error) {
	return p.choose().take()
}

func (p *p2c) choose() *entry {
	n := len(p.es)
	if n == 1 {
		return p.es[0]
	}
	var now uint32
	if p.ew != nil {
		now = p.ew.millis()
	}
	if n <= p.k { // compare every host, from a random start so ties spread
		start := randN(p.rand, n)
		best, bestCost := p.es[start], p.cost(p.es[start], now)
		for j := 1; j < n; j++ {
			e := p.es[(start+j)%n]
			if c := p.cost(e, now); c < bestCost {
				best, bestCost = e, c
			}
		}
		return best
	}
	if p.k == 2 {
		i := randN(p.rand, n)
		j := randN(p.rand, n-1)
		if j >= i {
			j++
		}
		if p.cost(p.es[j], now) < p.cost(p.es[i], now) {
			return p.es[j]
		}
		return p.es[i]
	}
	// k distinct random hosts by rejection; k < n here and k ≤ MaxChoiceCount.
	var chosen [MaxChoiceCount]int
	var best *entry
	var bestCost float64
	for m := 0; m < p.k; {
		i := randN(p.rand, n)
		dup := false
		for _, c := range chosen[:m] {
			if c == i {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		chosen[m] = i
		m++
		if c := p.cost(p.es[i], now); best == nil || c < bestCost {
			best, bestCost = p.es[i], c
		}
	}
	return best
}

// epoch anchors the millisecond clock; time.Time.Sub uses the monotonic reading when both
// sides have one, and wall time for injected clocks.
var epoch = time.Now()

type ewmaParams struct {
	now   func() time.Time
	decay float64 // ns
	def   float64 // ns
}

func (p *ewmaParams) millis() uint32 { return uint32(p.now().Sub(epoch).Milliseconds()) }

// elapsed is the time from stamp t to now in ns; a clock that went back gives 0.
func elapsed(now, t uint32) float64 {
	d := int32(now - t)
	if d < 0 {
		return 0
	}
	return float64(d) * 1e6
}

func (p *ewmaParams) estimate(st *HostStats, now uint32) float64 {
	w := st.ewma.Load()
	if w == 0 {
		return p.def
	}
	v, t := unpackEWMA(w)
	return math.Abs(v) * math.Exp(-elapsed(now, t)/p.decay)
}

func (p *ewmaParams) observe(st *HostStats, lat time.Duration) {
	now := p.millis()
	rtt := float64(lat)
	for {
		old := st.ewma.Load()
		next := rtt
		if cur, t := unpackEWMA(old); cur > 0 { // unset or prior: the sample replaces it
			if rtt < cur {
				w := math.Exp(-elapsed(now, t) / p.decay)
				next = cur*w + rtt*(1-w)
			}
		}
		if st.ewma.CompareAndSwap(old, packEWMA(next, now)) {
			return
		}
	}
}

func packEWMA(v float64, ms uint32) uint64 {
	return uint64(math.Float32bits(float32(v)))<<32 | uint64(ms)
}

func unpackEWMA(w uint64) (v float64, ms uint32) {
	return float64(math.Float32frombits(uint32(w >> 32))), uint32(w)
}

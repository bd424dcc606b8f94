// Package lb holds mosnlite's load balancers under MOSN's names. A Picker is an immutable
// snapshot built over the hosts that are up; the cluster rebuilds it whenever hosts or their
// health change. Pick never blocks and takes no lock: rotation counters, in-flight counts
// and the peak-EWMA state are atomics, and the per-host state (HostStats) lives with the
// host, so it survives rebuilds.
//
// Every Pick that returns a host also returns a done func that the caller must call exactly
// once when the request (or, for L4, the connection) is finished; it decrements the host's
// in-flight count and, for LB_PEAK_EWMA, feeds DoneInfo.Latency into the estimate. done
// does not allocate: it is a method value built once per host when the picker is built.
package lb

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// Balancer names (MOSN's lb_type values).
const (
	RoundRobin         = "LB_ROUNDROBIN"
	Random             = "LB_RANDOM"
	WeightedRoundRobin = "LB_WEIGHTED_ROUNDROBIN"
	LeastRequest       = "LB_LEAST_REQUEST"
	LeastConnection    = "LB_LEAST_CONNECTION"
	PeakEWMA           = "LB_PEAK_EWMA"
	Maglev             = "LB_MAGLEV"
	OriginalDst        = "LB_ORIGINAL_DST"
)

// Defaults used when the matching Options field is zero (the documented config defaults).
const (
	DefaultChoiceCount = config.DefaultChoiceCount     // 2
	DefaultTableSize   = config.DefaultMaglevTableSize // 65537, prime
	DefaultDecay       = config.DefaultEWMADecay       // 10s
	DefaultRTT         = config.DefaultEWMADefaultRTT  // 30ms
	// MaxChoiceCount caps ChoiceCount; with at most this many hosts every host is compared.
	MaxChoiceCount = 16
)

// ErrNoHost is returned by a picker with no host to give: the healthy set is empty, or
// (LB_ORIGINAL_DST) no host has the request's original destination. The cluster then waits
// for a change, bounded by its pick timeout.
var ErrNoHost = errors.New("lb: no host")

// Host is what a balancer needs to know about an upstream host.
type Host interface {
	Addr() string
	Weight() uint32 // 0 counts as 1
	// Stats is the live per-host state. The same *HostStats must be returned for the
	// lifetime of the host (across picker rebuilds); it is how in-flight counts survive.
	Stats() *HostStats
}

// HostStats is the per-host state shared by every picker built over the host: in-flight
// requests (picks whose done has not run), open connections (maintained by whoever opens
// them, see ConnOpened) and the peak-EWMA latency estimate. The zero value is ready; it
// must not be copied after first use.
type HostStats struct {
	active atomic.Int64
	conns  atomic.Int64
	// ewma packs the peak-EWMA estimate: high 32 bits float32 nanoseconds, negative while
	// it is the DefaultRTT prior (no sample yet); low 32 bits the update time in
	// milliseconds on a wrapping scale. 0 means unset.
	ewma atomic.Uint64
	_    [40]byte // keep hot counters of neighbouring hosts off one cache line
}

// Active returns the number of in-flight requests (picks not yet done).
func (s *HostStats) Active() int64 { return s.active.Load() }

// Conns returns the number of open connections recorded with ConnOpened/ConnClosed.
func (s *HostStats) Conns() int64 { return s.conns.Load() }

// ConnOpened records a new open connection to the host (LB_LEAST_CONNECTION reads it).
func (s *HostStats) ConnOpened() { s.conns.Add(1) }

// ConnClosed records that a connection recorded with ConnOpened closed.
func (s *HostStats) ConnClosed() { s.conns.Add(-1) }

// PeakEWMA returns the last stored latency estimate (before decay) and whether it comes
// from samples; before the first sample it is the DefaultRTT prior set by the first
// LB_PEAK_EWMA picker built over the host (0 if there was none).
func (s *HostStats) PeakEWMA() (est time.Duration, sampled bool) {
	v, _ := unpackEWMA(s.ewma.Load())
	return time.Duration(math.Abs(v)), v > 0
}

// ResetPeakEWMA forgets the peak-EWMA estimate: the next LB_PEAK_EWMA picker built over
// the host gives it a fresh prior (see NewPeakEWMA). The cluster calls it when the host
// comes back up, whose old estimate (from when it was slow, failing or ejected) no longer
// says anything about it.
func (s *HostStats) ResetPeakEWMA() { s.ewma.Store(0) }

// Request carries what a balancer may use to choose.
type Request struct {
	HashKey uint64 // LB_MAGLEV: the consistent-hash key, when HasHash
	HasHash bool
	// Attempt is 0 for the first try of a request and is incremented for each retry;
	// pickers that are deterministic per key (LB_MAGLEV) perturb the key by it.
	Attempt int
	// OriginalDst is the connection's original destination (LB_ORIGINAL_DST).
	OriginalDst netip.AddrPort
}

// DoneInfo reports how a picked request ended.
type DoneInfo struct {
	Err error
	// Latency is the request's latency sample (for L4, time to the upstream's first byte);
	// 0 means no sample.
	Latency time.Duration
}

// Picker chooses a host for a request.
type Picker interface {
	// Pick never blocks. The returned done MUST be called exactly once; calling it twice
	// corrupts the host's in-flight count.
	Pick(ctx context.Context, r *Request) (Host, func(DoneInfo), error)
}

// Options tune balancers; the zero value gives the defaults.
type Options struct {
	// Rand returns uniformly random 64-bit values; it must be safe for concurrent use.
	// nil: math/rand/v2. A fixed Rand makes rotation start offsets and random choices
	// deterministic in tests.
	Rand func() uint64
	// Now is the clock for peak EWMA; nil: time.Now.
	Now func() time.Time
	// ChoiceCount is the number of random hosts compared by LB_LEAST_REQUEST,
	// LB_LEAST_CONNECTION and LB_PEAK_EWMA (default 2, at most MaxChoiceCount).
	ChoiceCount int
	// TableSize is LB_MAGLEV's lookup table size, a prime (default 65537). Validate
	// refuses a non-prime; config validation also caps it at config.MaxMaglevTableSize.
	TableSize uint64
	// Decay is the peak-EWMA decay time constant (default 10s); DefaultRTT the estimate of
	// a host before its first sample (default 30ms).
	Decay, DefaultRTT time.Duration
	// ActiveRequestBias is Envoy's active_request_bias for weighted LB_LEAST_REQUEST:
	// cost = (active+1)^bias / weight. 0 means the default 1.0.
	ActiveRequestBias float64
}

// Validate reports options a factory would have to correct.
func (o Options) Validate() error {
	var errs []error
	if o.ChoiceCount < 0 || o.ChoiceCount == 1 || o.ChoiceCount > MaxChoiceCount {
		errs = append(errs, fmt.Errorf("choice_count %d: want 2..%d (0 for the default %d)", o.ChoiceCount, MaxChoiceCount, DefaultChoiceCount))
	}
	if o.TableSize != 0 && !isPrime(o.TableSize) {
		errs = append(errs, fmt.Errorf("maglev_table_size %d is not prime (default %d)", o.TableSize, DefaultTableSize))
	}
	if o.TableSize > 1<<24 {
		errs = append(errs, fmt.Errorf("maglev_table_size %d: larger than %d", o.TableSize, 1<<24))
	}
	if o.Decay < 0 {
		errs = append(errs, fmt.Errorf("ewma_decay %v: negative", o.Decay))
	}
	if o.DefaultRTT < 0 {
		errs = append(errs, fmt.Errorf("ewma_default_rtt %v: negative", o.DefaultRTT))
	}
	if o.ActiveRequestBias < 0 {
		errs = append(errs, fmt.Errorf("active_request_bias %v: negative", o.ActiveRequestBias))
	}
	return errors.Join(errs...)
}

func (o Options) withDefaults() Options {
	if o.Rand == nil {
		o.Rand = rand.Uint64
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ChoiceCount < 2 {
		o.ChoiceCount = DefaultChoiceCount
	}
	if o.ChoiceCount > MaxChoiceCount {
		o.ChoiceCount = MaxChoiceCount
	}
	if o.TableSize == 0 {
		o.TableSize = DefaultTableSize
	}
	if o.TableSize > 1<<24 {
		o.TableSize = 1 << 24
	}
	if o.Decay <= 0 {
		o.Decay = DefaultDecay
	}
	if o.DefaultRTT <= 0 {
		o.DefaultRTT = DefaultRTT
	}
	if o.ActiveRequestBias <= 0 {
		o.ActiveRequestBias = 1
	}
	return o
}

// Factory builds a picker over the hosts that are up. It keeps no reference to the slice.
type Factory func(healthy []Host, o Options) Picker

// Named is a factory with its lb_type name.
type Named struct {
	Name    string
	Factory Factory
}

// Builtins lists every built-in balancer under its MOSN name (pkg/extension/builtin
// registers them).
func Builtins() []Named {
	return []Named{
		{RoundRobin, NewRoundRobin},
		{Random, NewRandom},
		{WeightedRoundRobin, NewWeightedRoundRobin},
		{LeastRequest, NewLeastRequest},
		{LeastConnection, NewLeastConnection},
		{PeakEWMA, NewPeakEWMA},
		{Maglev, NewMaglev},
		{OriginalDst, NewOriginalDst},
	}
}

// entry is a picker's per-host record, preallocated at build time so that Pick returns a
// done func without allocating.
type entry struct {
	h      Host
	st     *HostStats
	weight uint32
	ewma   *ewmaParams // LB_PEAK_EWMA only: done feeds the estimate
	doneFn func(DoneInfo)
}

func newEntries(hosts []Host, ew *ewmaParams) []*entry {
	es := make([]*entry, len(hosts))
	for i, h := range hosts {
		e := &entry{h: h, st: h.Stats(), weight: max(h.Weight(), 1), ewma: ew}
		e.doneFn = e.done // bound once: returning it later does not allocate
		es[i] = e
	}
	return es
}

// take marks a request in flight on e and returns what Pick returns.
func (e *entry) take() (Host, func(DoneInfo), error) {
	e.st.active.Add(1)
	return e.h, e.doneFn, nil
}

func (e *entry) done(di DoneInfo) {
	e.st.active.Add(-1)
	if e.ewma != nil && di.Latency > 0 {
		e.ewma.observe(e.st, di.Latency)
	}
}

// noHost is the picker of an empty host set.
type noHost struct{}

func (noHost) Pick(context.Context, *Request) (Host, func(DoneInfo), error) {
	return nil, nil, ErrNoHost
}

// randN returns a uniform value in [0, n) from r (Lemire's multiply-shift; the bias for
// n far below 2^64 is negligible).
func randN(r func() uint64, n int) int {
	hi, _ := bits.Mul64(r(), uint64(n))
	return int(hi)
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	if n%2 == 0 {
		return n == 2
	}
	for d := uint64(3); d*d <= n; d += 2 {
		if n%d == 0 {
			return false
		}
	}
	return true
}

func nextPrime(n uint64) uint64 {
	for !isPrime(n) {
		n++
	}
	return n
}

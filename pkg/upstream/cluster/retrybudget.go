package cluster

import (
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// The retry budget (retry_budget, Linkerd's rate-based budget). Each request the L7
// proxies send to the cluster deposits (TryAcquire(MaxRequests)) and each retry withdraws
// (TryAcquireRetry). A retry is allowed while the retries of the last ttl stay below
// ratio × the requests of the last ttl + min_retries_per_second × ttl, so a failing
// upstream is sent at most that many extra tries: no retry storm whatever num_retries is.
// A refused retry counts upstream_overflow_total{breaker="retry_budget"}.
//
// The window is budgetSlots slots of ttl/budgetSlots each; the current slot and the
// budgetSlots-1 before it count, so the window spans 0.9 to 1 ttl. Each slot is two atomic
// words, one for deposits and one for withdrawals, each holding the slot's epoch (the
// number of slots elapsed since the cluster was made) in its high 32 bits and its count in
// the low 32: a word found holding an older epoch is restarted at the current one, so no
// lock and no sweep is needed, and a count can never go negative.
//
// Reading the clock costs more than the rest of a deposit, so a deposit counts in the slot
// of the budget's latest reading, and every depositRefresh-th deposit of a slot (and every
// withdrawal) reads it again. A deposit may thus be counted in an earlier slot than its
// own, by at most depositRefresh deposits' time: it leaves the window early, which can
// only make the budget smaller (after an idle spell, by at most depositRefresh × ratio
// retries), never larger. Withdrawals read the clock each time and are exact.
//
// Its counts survive cluster updates: a changed ratio or reserve applies to the window as
// it is; a changed ttl changes the slots' length, so the window restarts empty.

const (
	// budgetSlots is the number of slots in a retry budget's window.
	budgetSlots = 10
	// depositRefresh: every depositRefresh-th deposit of a slot reads the clock.
	depositRefresh = 16
)

// budgetParams is a cluster's retry_budget, resolved; immutable once published.
type budgetParams struct {
	ratio   float64 // retries allowed per request
	reserve float64 // retries allowed per window whatever the traffic: min per second × ttl
	slot    int64   // nanoseconds per slot: ttl / budgetSlots
}

// newBudget resolves cfg; nil cfg is the default budget, a disabled one is nil.
func newBudget(cfg *config.RetryBudget) (*budgetParams, error) {
	if cfg == nil {
		cfg = &config.RetryBudget{}
	}
	if errs, _ := cfg.Check(); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = "retry_budget." + e.Error()
		}
		return nil, errors.New(strings.Join(msgs, "; "))
	}
	if cfg.Disabled {
		return nil, nil
	}
	ttl := cfg.TTL.Or(config.DefaultRetryBudgetTTL)
	p := &budgetParams{ratio: config.DefaultRetryBudgetRatio, reserve: config.DefaultRetryBudgetMinPerSecond * ttl.Seconds(), slot: int64(ttl / budgetSlots)}
	if cfg.RetryRatio != nil {
		p.ratio = *cfg.RetryRatio
	}
	if cfg.MinRetriesPerSecond != nil {
		p.reserve = float64(*cfg.MinRetriesPerSecond) * ttl.Seconds()
	}
	return p, nil
}

// retryBudget is a cluster's budget state. Its hot words are written by every request:
// they sit on their own cache lines, away from the read-mostly fields.
type retryBudget struct {
	params  atomic.Pointer[budgetParams] // nil: no budget
	cur     atomic.Uint32                // epoch of the latest clock reading
	elapsed func() time.Duration         // since epoch 0
	refused prometheus.Counter
	_       [64]byte
	dep     [budgetSlots]atomic.Uint64 // deposits: epoch<<32 | count
	_       [64]byte
	wd      [budgetSlots]atomic.Uint64 // withdrawals: epoch<<32 | count
}

// init sets the budget's clock (Options.Now) and its refusal counter. With the real clock
// it reads only the monotonic one, which costs half as much as time.Now.
func (b *retryBudget) init(now func() time.Time, refused prometheus.Counter) {
	base := now()
	b.elapsed = func() time.Duration { return now().Sub(base) }
	if reflect.ValueOf(now).Pointer() == reflect.ValueOf(time.Now).Pointer() {
		b.elapsed = func() time.Duration { return time.Since(base) }
	}
	b.refused = refused
}

// configure installs p (nil: no budget). The window is kept unless the slots' length
// changes or the budget was off (its counts are stale then).
func (b *retryBudget) configure(p *budgetParams) {
	old := b.params.Swap(p)
	if p != nil && (old == nil || old.slot != p.slot) {
		for i := range budgetSlots {
			b.dep[i].Store(0)
			b.wd[i].Store(0)
		}
	}
	if p != nil {
		b.cur.Store(b.epoch(p))
	}
}

// epoch returns the current slot's number.
func (b *retryBudget) epoch(p *budgetParams) uint32 {
	return uint32(int64(b.elapsed()) / p.slot)
}

// deposit counts a request. It does not allocate, and reads the clock only every
// depositRefresh deposits.
func (b *retryBudget) deposit() {
	if p := b.params.Load(); p != nil {
		e := b.cur.Load()
		if bump(&b.dep[e%budgetSlots], e)%depositRefresh == 0 {
			b.cur.Store(b.epoch(p))
		}
	}
}

// withdraw counts a retry if the budget allows it. It returns the epoch the retry was
// counted in, for refund, or -1 when there is no budget (every retry is allowed).
func (b *retryBudget) withdraw() (e int64, ok bool) {
	p := b.params.Load()
	if p == nil {
		return -1, true
	}
	now := b.epoch(p)
	b.cur.Store(now)
	w := &b.wd[now%budgetSlots]
	bump(w, now) // count first: concurrent withdrawals see each other
	var deps, wds uint64
	for i := range budgetSlots {
		deps += windowCount(b.dep[i].Load(), now)
		wds += windowCount(b.wd[i].Load(), now)
	}
	// wds includes this retry: allowed when the ones before it are below the budget.
	if float64(wds-1) < p.ratio*float64(deps)+p.reserve {
		return int64(now), true
	}
	unbump(w, now)
	b.refused.Inc()
	return -1, false
}

// refund takes back a withdrawal counted in epoch e (the retry did not happen after all).
// Once its slot has moved on there is nothing to take back.
func (b *retryBudget) refund(e int64) {
	if e >= 0 {
		unbump(&b.wd[e%budgetSlots], uint32(e))
	}
}

// bump adds one to the count of word w for epoch e, restarting w if it holds an older
// epoch, and returns the count. A word already at a newer epoch (this caller's reading of
// the clock is older) keeps the count there.
func bump(w *atomic.Uint64, e uint32) uint32 {
	v := w.Add(1)
	if int32(uint32(v>>32)-e) >= 0 {
		return uint32(v)
	}
	for {
		if w.CompareAndSwap(v, uint64(e)<<32|1) {
			return 1
		}
		v = w.Load()
		if int32(uint32(v>>32)-e) >= 0 { // restarted by another caller, without our count
			return uint32(w.Add(1))
		}
	}
}

// unbump takes one from the count of w if w still holds epoch e and the count is positive.
func unbump(w *atomic.Uint64, e uint32) {
	for {
		v := w.Load()
		if uint32(v>>32) != e || uint32(v) == 0 {
			return
		}
		if w.CompareAndSwap(v, v-1) {
			return
		}
	}
}

// windowCount returns the count of word v if its epoch is within the window ending at e.
func windowCount(v uint64, e uint32) uint64 {
	if e-uint32(v>>32) < budgetSlots {
		return uint64(uint32(v))
	}
	return 0
}

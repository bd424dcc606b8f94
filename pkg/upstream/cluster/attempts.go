package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// ErrNotRaw is StartAttempts' refusal of a cluster whose connections a raw socket connect
// cannot make: it has upstream TLS, its Manager has a custom Options.Dial, or a host is
// given by name (resolved by the dialer). Callers then use Dial on a goroutine. Next wraps
// it when such a change is applied between StartAttempts and a pick.
var ErrNotRaw = errors.New("cluster needs its dialer: upstream TLS, custom Options.Dial or a host given by name")

// Attempts is one dial made by a caller that connects sockets itself, without blocking (an
// event loop): the policy is Dial's, the connects are the caller's. The caller embeds an
// Attempts by value and runs
//
//	StartAttempts, then per attempt: Next, connect to the address within ConnectTimeout,
//	then Failed (and Next again) or Connected; Abandon when it stops without a connection.
//
// When Next fails, the caller gives up (Abandon) unless CanWait allows WaitPick on another
// goroutine. StartAttempts, Next, Connected and the done func do not allocate (connect
// failures do). An Attempts is not safe for concurrent use, except WaitPick as documented.
type Attempts struct {
	c       *Cluster
	s       *snapshot // at the start: connect_timeout, max_connect_attempts, tls
	r       *lb.Request
	retry   *lb.Request       // a copy of r for the picks after a failure (they bump Attempt)
	h       *Host             // the current attempt's host
	done    func(lb.DoneInfo) // h's pick's done; nil when no pick is outstanding
	pending bool              // h is picked (WaitPick, DialHost) and not yet returned by next
	tried   []*Host
	errs    []error
	noMore  bool // no untried healthy host was left
	wait    bool // a pick found no host and pick_timeout allows WaitPick
	slot    bool // a max_connections unit is held
	max     int  // attempts allowed; 0: the cluster's max_connect_attempts
}

// StartAttempts begins a dial for request r (kept by pointer; it must outlive a). It
// returns ErrNotRaw (nothing acquired) or the max_connections overflow error (wrapping
// ErrOverflow, as DialHost); nil means a max_connections unit is held until Connected's
// done func runs or Abandon. a must not be in use (Connected or Abandon ends a use).
func (c *Cluster) StartAttempts(a *Attempts, r *lb.Request) error {
	if a.slot || a.done != nil {
		panic(fmt.Sprintf("cluster %q: StartAttempts on Attempts in use", c.name))
	}
	s := c.snap.Load()
	if !c.fastDial || s.set.tls != nil || s.named {
		return ErrNotRaw
	}
	if !c.TryAcquire(MaxConnections) {
		return c.overflowError(MaxConnections)
	}
	a.init(c, s, r)
	a.slot = true
	return nil
}

// RawDial reports whether StartAttempts takes the cluster now (it does not answer
// ErrNotRaw).
func (c *Cluster) RawDial() bool {
	s := c.snap.Load()
	return c.fastDial && s.set.tls == nil && !s.named
}

// StartAttemptsHost is StartAttempts whose first attempt goes to host, which the caller
// already picked for a request (its pick accounts for the request, as with DialHost); the
// later attempts pick other hosts.
func (c *Cluster) StartAttemptsHost(a *Attempts, r *lb.Request, host *Host) error {
	if err := c.StartAttempts(a, r); err != nil {
		return err
	}
	a.h, a.done, a.pending = host, noDone, true
	return nil
}

func noDone(lb.DoneInfo) {}

func (a *Attempts) init(c *Cluster, s *snapshot, r *lb.Request) {
	*a = Attempts{c: c, s: s, r: r}
}

// Next picks the host of the next attempt, without waiting, and returns it with its
// address. When no attempt is left it fails: for the first pick, with an error wrapping
// ErrNoHealthyUpstream when no host is up (see CanWait); after failures, with the
// *DialError of the attempts (max_connect_attempts reached, or no untried healthy host:
// NoMoreHosts). It fails with an error wrapping ErrNotRaw if a host given by name was
// picked (the cluster changed since StartAttempts): Abandon and use Dial.
func (a *Attempts) Next() (*Host, netip.AddrPort, error) {
	h, err := a.next(context.Background(), false)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	if !h.ap.IsValid() {
		a.done(lb.DoneInfo{})
		a.h, a.done = nil, nil
		return nil, netip.AddrPort{}, fmt.Errorf("cluster %q: host %s: %w", a.c.name, h.addr, ErrNotRaw)
	}
	return h, h.ap, nil
}

// Limit caps the attempts of this dial at n instead of the cluster's max_connect_attempts
// (tcp_proxy's own max_connect_attempts); n <= 0 keeps the cluster's. Call it before the
// first Next.
func (a *Attempts) Limit(n int) {
	if n > 0 {
		a.max = min(n, maxAttemptsCap)
	}
}

func (a *Attempts) limit() int {
	if a.max > 0 {
		return a.max
	}
	return a.s.set.maxAttempts
}

// next picks the host of the next attempt: Dial's policy. The first pick waits as Pick does
// if block is set; otherwise, when Pick would wait, it fails and sets a.wait. A later pick
// that finds no untried healthy host while an untried host is down waits likewise
// (waitUntried) for one to come up, or fails with the attempts' error and sets a.wait.
func (a *Attempts) next(ctx context.Context, block bool) (*Host, error) {
	c := a.c
	switch {
	case c == nil:
		panic("cluster: Attempts used before StartAttempts")
	case a.pending:
		a.pending = false
		return a.h, nil
	case a.done != nil:
		panic(fmt.Sprintf("cluster %q: Attempts.Next before the previous attempt's Failed or Connected", c.name))
	case a.noMore || len(a.tried) >= a.limit():
		return nil, a.Err()
	}
	var (
		h    *Host
		done func(lb.DoneInfo)
		err  error
	)
	switch {
	case len(a.tried) == 0 && block:
		if h, done, err = c.Pick(ctx, a.r); err != nil {
			return nil, err
		}
	case len(a.tried) == 0:
		if h, done, err = a.pickNow(ctx); err != nil {
			return nil, err
		}
	default:
		if a.retry == nil {
			cp := *a.r
			a.retry = &cp
		}
		if h, done = c.pickUntried(ctx, a.retry, a.tried); h == nil {
			switch {
			case block:
				h, done = c.waitUntried(ctx, a.retry, a.tried)
			case c.mayWaitUntried(c.snap.Load(), a.tried):
				a.wait = true
				return nil, &DialError{Cluster: c.name, Attempts: a.errs, NoMoreHosts: true}
			}
			if h == nil {
				a.noMore = true
				return nil, a.Err()
			}
		}
	}
	a.h, a.done = h, done
	return h, nil
}

// pickNow is the first pick without Pick's wait for a host to come up.
func (a *Attempts) pickNow(ctx context.Context) (*Host, func(lb.DoneInfo), error) {
	c := a.c
	s := c.snap.Load()
	lh, done, err := s.picker.Pick(ctx, a.r)
	if err == nil {
		return c.own(lh, done)
	}
	if err := c.pickFailed(s, err, s.set.pickTimeout); err != nil {
		return nil, nil, err
	}
	a.wait = true // WaitPick counts upstream_no_healthy_host_total if it fails too
	return nil, nil, fmt.Errorf("cluster %q: %w (%d hosts, %d healthy; pick_timeout %v allows WaitPick)",
		c.name, ErrNoHealthyUpstream, len(s.hosts), len(s.healthy), s.set.pickTimeout)
}

// CanWait reports whether Next's last failure was a pick that may wait while the
// cluster's pick_timeout is positive: the first pick found no host up, or a later one found
// no untried host up while an untried host is down. WaitPick, on a goroutine other than
// the caller's loop, may then wait for a host (a caller that fails instead need not call
// it).
func (a *Attempts) CanWait() bool { return a.wait }

// WaitPick is the pick CanWait allows, as Dial makes it: the first pick as Pick makes it,
// waiting up to pick_timeout and ctx's end for a host to come up; a later pick waiting as
// long for an untried host to come up. It blocks, so it runs on a goroutine other than the
// caller's loop, which must not use a meanwhile. On nil the next Next returns that host;
// otherwise the error is Pick's (wrapping ErrNoHealthyUpstream) or, for a later pick, the
// attempts' *DialError, and the caller Abandons.
func (a *Attempts) WaitPick(ctx context.Context) error {
	if a.c == nil || a.done != nil || (len(a.tried) > 0 && !a.wait) {
		return errors.New("cluster: WaitPick without a pick that may wait (CanWait)")
	}
	if len(a.tried) > 0 {
		a.wait = false
		h, done := a.c.waitUntried(ctx, a.retry, a.tried)
		if h == nil {
			a.noMore = true
			return a.Err()
		}
		a.h, a.done, a.pending = h, done, true
		return nil
	}
	h, done, err := a.c.Pick(ctx, a.r)
	if err != nil {
		return err
	}
	a.h, a.done, a.pending, a.wait = h, done, true, false
	return nil
}

// PickWait is a WaitPick running on its own goroutine for a caller on an event loop
// (GoWaitPick), which does not use the attempts until the wait is over. The caller either
// takes the delivered result or, when it ends during the wait, drops the wait (Drop); the
// one of the two that comes last abandons the attempts, exactly once.
type PickWait struct {
	a      *Attempts
	cancel context.CancelFunc
	state  atomic.Int32 // pwWaiting, then pwReturned (by the goroutine) or pwDropped (Drop)
}

const (
	pwWaiting  int32 = iota
	pwReturned       // WaitPick returned: the goroutine no longer uses the attempts
	pwDropped        // the caller ended during the wait: it no longer uses them
)

// GoWaitPick runs WaitPick on a new goroutine, which then calls deliver with its result,
// unless the caller dropped the wait meanwhile (the goroutine then abandons a). deliver
// usually posts the result to the caller's loop; a loop that stops may drop it unrun, and
// the caller's Drop, as its connection ends, abandons a then.
func (a *Attempts) GoWaitPick(deliver func(w *PickWait, err error)) *PickWait {
	ctx, cancel := context.WithCancel(context.Background())
	w := &PickWait{a: a, cancel: cancel}
	go func() {
		err := a.WaitPick(ctx)
		if w.state.Swap(pwReturned) == pwDropped {
			a.Abandon()
			return
		}
		deliver(w, err)
	}()
	return w
}

// Cancel ends the wait early (WaitPick returns ctx's error, delivered as usual); after
// the caller took the result, it releases the wait's context.
func (w *PickWait) Cancel() { w.cancel() }

// Drop ends the wait of a caller that ends during it: the attempts are abandoned now if
// WaitPick returned already (its delivered result is then to be ignored), else by the
// goroutine when it returns.
func (w *PickWait) Drop() {
	w.cancel()
	if w.state.Swap(pwDropped) == pwReturned {
		w.a.Abandon()
	}
}

// mayWaitUntried reports whether a pick that found no untried healthy host in s may wait
// for one: pick_timeout is positive, the cluster is not removed and some host not yet
// tried is down (a host that could come up). With every host tried there is nothing to
// wait for, and the dial fails at once as before.
func (c *Cluster) mayWaitUntried(s *snapshot, tried []*Host) bool {
	if s.set.pickTimeout <= 0 || s.removed {
		return false
	}
	for _, h := range s.hosts {
		if !h.Healthy() && !slices.ContainsFunc(tried, func(t *Host) bool { return t.addr == h.addr }) {
			return true
		}
	}
	return false
}

// waitUntried is a later pick of a dial that found no untried healthy host: while
// mayWaitUntried holds it waits, up to pick_timeout and ctx's end, for the host set to
// change and picks again; nil when no untried host came up. As a first pick's wait, it
// holds a max_pending_requests unit meanwhile (none free: no wait).
func (c *Cluster) waitUntried(ctx context.Context, req *lb.Request, tried []*Host) (*Host, func(lb.DoneInfo)) {
	s := c.snap.Load()
	if !c.mayWaitUntried(s, tried) || ctx.Err() != nil || !c.TryAcquire(MaxPendingRequests) {
		return nil, nil
	}
	defer c.Release(MaxPendingRequests)
	t := time.NewTimer(s.set.pickTimeout)
	defer t.Stop()
	for {
		// s is loaded before the pick: a change after it closes s.changed.
		if h, done := c.pickUntried(ctx, req, tried); h != nil {
			return h, done
		}
		if !c.mayWaitUntried(s, tried) {
			return nil, nil
		}
		select {
		case <-s.changed:
		case <-t.C:
			return nil, nil
		case <-ctx.Done():
			return nil, nil
		}
		s = c.snap.Load()
	}
}

// ConnectTimeout is the cluster's connect_timeout when the attempts started: the caller
// gives each connect that long.
func (a *Attempts) ConnectTimeout() time.Duration { return a.s.set.connectTimeout }

// Failed records that the connect to the host Next returned failed: err is the socket
// error, timedOut that connect_timeout expired (err may then be nil). The failure is
// counted (upstream_connect_failures_total) and logged as Dial's are, and counts against
// the host for outlier detection unless callerGaveUp (the caller's own deadline or
// shutdown, which says nothing about the host).
func (a *Attempts) Failed(err error, timedOut, callerGaveUp bool) {
	if a.done == nil || a.pending {
		panic("cluster: Attempts.Failed without an attempt from Next")
	}
	a.failed(connectError(a.h, a.s.set.connectTimeout, err, timedOut), callerGaveUp)
}

// failed records the failure err (naming the host) of the current attempt.
func (a *Attempts) failed(err error, gaveUp bool) {
	c, h := a.c, a.h
	a.done(lb.DoneInfo{Err: err})
	a.h, a.done = nil, nil
	c.connectFailed(h, err)
	if !gaveUp {
		c.recordResult(h.st, false)
	}
	a.tried = append(a.tried, h)
	a.errs = append(a.errs, err)
}

// Connected records that the connect to the host Next returned succeeded and returns the
// host and the connection's done func: call done exactly once, when the connection is
// finished; it ends the connection's accounting (upstream_connections_active, the host's
// Conns) and releases the max_connections unit. The Attempts is then free for reuse.
func (a *Attempts) Connected() (*Host, func(lb.DoneInfo)) {
	if !a.slot {
		panic("cluster: Attempts.Connected without StartAttempts' max_connections unit")
	}
	h, done := a.connected()
	a.slot = false
	a.c.connOpened(h)
	t := getConnEnd()
	t.c, t.h, t.done = a.c, h, done
	return h, t.fn
}

// connected ends the attempts with the current one's success and returns its host and
// pick's done. A connect is not a success for outlier detection: the answers on the
// connection are (Host.ReportResult), so that a host that accepts connections and fails
// every answer is ejected even when each answer closes its connection; tcp_proxy, whose
// connect is its final result, reports it itself (Envoy's LocalOriginConnectSuccessFinal).
func (a *Attempts) connected() (*Host, func(lb.DoneInfo)) {
	h, done := a.h, a.done
	if done == nil || a.pending {
		panic("cluster: Attempts.Connected without an attempt from Next")
	}
	a.h, a.done = nil, nil
	return h, done
}

// Abandon ends the attempts without a connection: an outstanding pick's done runs and the
// max_connections unit is released. It is idempotent, and a no-op after Connected.
func (a *Attempts) Abandon() {
	if a.done != nil {
		a.done(lb.DoneInfo{})
		a.h, a.done, a.pending = nil, nil, false
	}
	if a.slot {
		a.slot = false
		a.c.Release(MaxConnections)
	}
}

// Err is the *DialError of the attempts that failed so far; nil when none did.
func (a *Attempts) Err() error {
	if len(a.errs) == 0 {
		return nil
	}
	return &DialError{Cluster: a.c.name, Attempts: a.errs, NoMoreHosts: a.noMore}
}

// connEnd is the done func of a connection made with Attempts. They are pooled, with fn
// bound once, so that Connected does not allocate; hence done must run exactly once (a
// later call could end another connection's accounting).
type connEnd struct {
	c    *Cluster
	h    *Host
	done func(lb.DoneInfo)
	fn   func(lb.DoneInfo)
}

var connEnds sync.Pool // of *connEnd

func getConnEnd() *connEnd {
	if t, ok := connEnds.Get().(*connEnd); ok {
		return t
	}
	t := &connEnd{}
	t.fn = t.end
	return t
}

func (t *connEnd) end(di lb.DoneInfo) {
	c, h, done := t.c, t.h, t.done
	if c == nil {
		return // a second call before the pool reused t
	}
	t.c, t.h, t.done = nil, nil, nil
	connEnds.Put(t)
	c.connClosed(h, done, di)
}

package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// sessExt is the per-request state of retries, the upgrade tunnel and the request header
// timeout (retry.go, upgrade.go, timeout.go). It lives in the session, so it costs no
// allocation.
type sessExt struct {
	attempt   int  // retries made for the current request
	retrySlot bool // a max_retries breaker slot is held for the try in flight
	tryStart  time.Time
	// recvAt is when the request was received in full (its head, for a bodiless one):
	// the route timeout, and the first try's per-try timeout, run from then, as in MOSN
	// and Envoy. Zero while the body is still arriving.
	recvAt    time.Time
	headArmed bool // the read deadline bounds a partial request head
	upgrade   bool // the current request asks for a protocol upgrade
	tunnel    *tunnel
	mirror    mirrorJob // a request with a body being copied for the mirror cluster (mirror.go)
}

var errRetried = errors.New("proxy: try failed, retried")

// beginTries resets the retry state for a new request.
func (s *session) beginTries() {
	s.retryDone()
	s.x.attempt = 0
	s.x.tryStart = s.start
	s.x.recvAt = time.Time{}
}

// received notes that the request has been received in full at now: its route timeout
// starts, and so does the per-try timeout of its first try.
func (s *session) received(now time.Time) {
	s.x.recvAt = now
	if s.x.attempt == 0 {
		s.x.tryStart = now
	}
}

// retryDone releases the max_retries slot held by the try that just ended.
func (s *session) retryDone() {
	if s.x.retrySlot {
		s.x.retrySlot = false
		if s.cl != nil {
			s.cl.ReleaseRetry()
		}
	}
}

// tryDeadline is the upstream bound of the try in flight. Once the request is in
// (received), it is the route timeout from then, tightened by the retry policy's
// per-try timeout. While the body still arrives, the route timeout has not started: the
// upload's writes are bounded by the request body timeout from now (the time of its
// latest progress; zero: the clock), as the client's reads are (bodyPartial), so an
// upstream that stops reading the body cannot hold the request forever.
func (s *session) tryDeadline(now time.Time) time.Time {
	if s.x.recvAt.IsZero() {
		return s.p.uploadBound(now)
	}
	return s.routeDeadline(s.route)
}

// routeDeadline is tryDeadline of a request that is in, on route rt (zero: none).
func (s *session) routeDeadline(rt *router.Route) time.Time {
	var d time.Time
	if t := rt.Timeout(); t > 0 {
		d = s.x.recvAt.Add(t)
	}
	if pt := rt.Retry().PerTryTimeout(); pt > 0 {
		if td := s.x.tryStart.Add(pt); d.IsZero() || td.Before(d) {
			d = td
		}
	}
	return d
}

// tryCtx is the context of the waits for a host (pick_timeout) and the connects of the
// try on route rt that started at s.x.tryStart: s.ctx, ended at the try's deadline
// (routeDeadline) once the request is in. While a body still arrives the route timeout
// has not started, and pick_timeout alone bounds the wait, as before.
func (s *session) tryCtx(rt *router.Route) (context.Context, context.CancelFunc) {
	if !s.x.recvAt.IsZero() {
		if d := s.routeDeadline(rt); !d.IsZero() {
			return context.WithDeadline(s.ctx, d)
		}
	}
	return s.ctx, func() {}
}

// tryTimedOut reports whether ctx, from tryCtx, ended with the try's deadline rather than
// with s.ctx.
func (s *session) tryTimedOut(ctx context.Context) bool {
	return ctx.Err() != nil && s.ctx.Err() == nil
}

// timedOutErr marks err, a pick or dial that the try's deadline ended, as errTimeout
// (504), as the event loop answers when a bound passes during its wait for a host.
func timedOutErr(err error) error { return fmt.Errorf("%w: %w", errTimeout, err) }

// retryTry is called when a try ended before anything of its response was written
// downstream: status is the upstream's status, or 0 for no response (connect failure,
// reset, per-try timeout). When the route's retry policy, the request (replayable: its
// head is still in s.hb and it has no body), the time left and the cluster's max_retries
// breaker allow it, the failed upstream connection is closed and the request is written
// to a fresh connection, preferably on another host; it reports whether it did. When it
// reports false nothing changed, so the caller answers with what it has.
func (s *session) retryTry(status int) bool {
	s.retryDone()
	rt, cl := s.route, s.cl
	if rt == nil || cl == nil || !s.replay || s.h2 != nil || s.x.upgrade {
		return false
	}
	pol := rt.Retry()
	if pol == nil {
		return false
	}
	now := time.Now()
	if t := rt.Timeout(); t > 0 && now.Sub(s.x.recvAt) >= t {
		return false
	}
	if !pol.ShouldRetry(s.x.attempt, status, false, cl) {
		return false
	}
	s.x.retrySlot = true
	s.x.attempt++
	cl.CountRetry()
	s.x.tryStart = now // nextTry's wait for a host is within the retry's time
	up, pickDone, ok := s.nextTry(cl, now)
	if !ok {
		s.retryDone()
		return false
	}
	// End the failed try: its connection cannot be reused (its response is unread).
	if s.up != nil {
		s.up.close()
	}
	if s.pickDone != nil {
		s.pickDone(lb.DoneInfo{Err: errRetried})
	}
	s.up, s.pickDone = up, pickDone
	s.noteUpstream(up.host, cl, up) // the retry's host, for the access log
	s.reused = up.since != (time.Time{})
	s.upFailed, s.upTimeout = false, false
	up.deadline(s.tryDeadline(now)) // before the write, as for the first try
	_ = s.writeUp(s.hb.Bytes())
	if s.upFailed {
		// The read that follows fails at once and decides about the next retry.
		_ = up.raw.Close()
	}
	return true
}

// nextTry picks a host for a retry, avoiding the failed one when the cluster has another,
// and takes an idle connection to it or dials one. A wait for a host ends with the
// retry's deadline (tryCtx).
func (s *session) nextTry(cl *cluster.Cluster, now time.Time) (*upConn, func(lb.DoneInfo), bool) {
	prev := ""
	if s.up != nil {
		prev = s.up.addr
	}
	ctx, cancel := s.tryCtx(s.route)
	defer cancel()
	var host *cluster.Host
	var pickDone func(lb.DoneInfo)
	for i := 0; i < 3; i++ {
		s.lr.Attempt++
		h, done, err := cl.Pick(ctx, &s.lr)
		if err != nil {
			if host != nil {
				break
			}
			return nil, nil, false
		}
		if host != nil {
			pickDone(lb.DoneInfo{})
		}
		host, pickDone = h, done
		if h.Addr() != prev {
			break
		}
	}
	up := s.p.get(host, now)
	for up != nil && now.Sub(up.since) >= aliveCheckAfter && !s.alive(up) {
		up.close()
		up = s.p.get(host, now)
	}
	if up == nil {
		raw, h, done, err := cl.DialHost(ctx, &s.lr, host)
		if err != nil {
			pickDone(lb.DoneInfo{Err: err})
			return nil, nil, false
		}
		up = newUpConn(raw, h, done)
	}
	return up, pickDone, true
}

// pick picks the host of the first try. A pick that waits for a host to come up
// (pick_timeout) waits within the try's deadline (tryCtx); a try that ends so is retried
// as dial's are, and the last one's error wraps errTimeout.
func (s *session) pick(rt *router.Route, cl *cluster.Cluster) (*cluster.Host, func(lb.DoneInfo), error) {
	h, done, err := cl.PickNow(&s.lr)
	if !errors.Is(err, cluster.ErrWouldWait) {
		return h, done, err
	}
	for retry := false; ; retry = true {
		ctx, cancel := s.tryCtx(rt)
		h, done, err = cl.Pick(ctx, &s.lr)
		timedOut := err != nil && s.tryTimedOut(ctx)
		cancel()
		if retry {
			cl.ReleaseRetry()
		}
		if !timedOut {
			return h, done, err
		}
		if !s.retryConnect(rt, cl) {
			return nil, nil, timedOutErr(err)
		}
		s.lr.Attempt++
	}
}

// retryConnect reports whether a try of a bodiless request that got no connection (every
// connect failed, or no host in its time) is followed by another: the route timeout,
// num_retries and the max_retries breaker allow it. The retry is counted and its time
// starts; the caller gives back the breaker unit once its attempt is over.
func (s *session) retryConnect(rt *router.Route, cl *cluster.Cluster) bool {
	if t := rt.Timeout(); t > 0 && time.Since(s.x.recvAt) >= t {
		return false
	}
	if !rt.Retry().ShouldRetry(s.x.attempt, 0, false, cl) {
		return false
	}
	s.x.attempt++
	s.x.tryStart = time.Now()
	cl.CountRetry()
	return true
}

// dial connects to the picked host for the first try. DialHost itself moves on to other hosts
// (max_connect_attempts); when every attempt failed, a bodiless request on a route with
// a retry policy is dialled again, each round counted as a retry and bounded by
// num_retries, the route timeout and the max_retries breaker. Each round's waits for a
// host end with its try's deadline (tryCtx); when the last round ended so, its error wraps
// errTimeout.
func (s *session) dial(rt *router.Route, cl *cluster.Cluster, host *cluster.Host, hasBody bool) (net.Conn, *cluster.Host, func(lb.DoneInfo), error) {
	ctx, cancel := s.tryCtx(rt)
	raw, h, done, err := cl.DialHost(ctx, &s.lr, host)
	timedOut := err != nil && s.tryTimedOut(ctx)
	cancel()
	for err != nil && !hasBody && !errors.Is(err, cluster.ErrOverflow) {
		if !s.retryConnect(rt, cl) {
			break
		}
		s.lr.Attempt++
		ctx, cancel = s.tryCtx(rt)
		raw, h, done, err = cl.Dial(ctx, &s.lr)
		timedOut = err != nil && s.tryTimedOut(ctx)
		cancel()
		cl.ReleaseRetry()
	}
	if timedOut {
		err = timedOutErr(err)
	}
	return raw, h, done, err
}

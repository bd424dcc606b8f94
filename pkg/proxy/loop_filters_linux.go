package proxy

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/network/evloop"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// loopFilters runs a listener's stream filters on the event loop. Only a chain of
// filter.HeadersOnly and filter.LoopDelay filters is served there (rawOK), or of
// filter.SizedBodiesOnly ones for requests without a chunked body (the others are handed
// off): the receive phase runs on the request head after routing and before the cluster
// is picked, the send phase on the upstream's response head before it is queued for the
// client. Header changes become head edits, as on the goroutine path (h1Headers). A
// request handed to the goroutine path after its filters ran is filtered again there,
// which HeadersOnly filters allow; a chain with LoopDelay filters (impure) is handed off
// only before they run (loopConn.request).
//
// A delay the filters ask for (Delay) is waited once the receive phase is over: the
// request is parked (park) on the connection's timer, with the client not read meanwhile
// (its head and body stay in `in`, the bytes after them in the socket), then goes on
// where it stopped (unpark): the filter's answer, or the pick, connect and forward. A
// client that closes during the wait ends the request before any upstream is picked.
type loopFilters struct {
	h1Chain
	c     *loopConn
	delay time.Duration // the delays asked for by the request's filters
	park  loopPark
}

// loopPark is a request held for its filters' delay, and where it goes on from.
type loopPark struct {
	at        int64 // loop clock at the end of the delay; 0: no request is parked
	rt        *router.Route
	cl        *cluster.Cluster
	n, total  int  // the head's length, and the head's and (whole) body's
	streaming bool // the body streams (pumpBody) once the request is sent
	continued bool // "100 Continue" was sent already
	stopped   bool // a filter answered: its answer is written after the delay
}

var _ filter.StreamHandler = (*loopFilters)(nil)

// Protocol implements filter.StreamHandler.
func (lf *loopFilters) Protocol() stream.Protocol { return stream.HTTP1 }

// Route implements filter.StreamHandler.
func (lf *loopFilters) Route() *router.Route { return lf.route }

// Request implements filter.StreamHandler (valid in the receive phase: the head's bytes
// are in the connection's input until the request is encoded).
func (lf *loopFilters) Request() router.Request { return stream.HTTP1Request{Head: &lf.c.head} }

// RemoteAddr implements filter.StreamHandler.
func (lf *loopFilters) RemoteAddr() netip.AddrPort { return lf.c.rc.Remote }

// Delay implements filter.StreamHandler: the delay is recorded, and waited without
// blocking once the receive phase is over (park). Only LoopDelay filters call it.
func (lf *loopFilters) Delay(d time.Duration) {
	if d > 0 {
		lf.delay += d
	}
}

// SetResponseFlag implements filter.StreamHandler.
func (lf *loopFilters) SetResponseFlag(f accesslog.Flag) { lf.c.info.Flags |= f }

// requestFilters runs the receive phase on the request head with route rt; true: a filter
// stopped the request (lf.local holds the answer). c.edits must be reset: header changes
// become head edits.
func (c *loopConn) requestFilters(rt *router.Route) (stopped bool) {
	lf := &c.lf
	lf.c, lf.delay = c, 0
	lf.begin(c.p.cfg.StreamFilters, lf, rt)
	return lf.requestHead(&c.head.Headers, &c.edits, c.head.Body == http1.BodyNone)
}

// responseFilters runs the send phase on the response head (c.rhead, edits c.redits);
// true: a filter stopped it.
func (c *loopConn) responseFilters() (stopped bool) {
	return c.lf.responseHead(c.rhead.Status, &c.rhead.Headers, &c.redits, c.rhead.Body == http1.BodyNone)
}

// endFilters ends the request's filter instances (OnDestroy, once); a no-op when none run.
func (c *loopConn) endFilters() {
	if len(c.lf.filters) > 0 {
		c.lf.end()
	}
}

// filterAnswer writes the answer a filter asked for, ending the request: like localDone,
// the connection closes after it when the request's body was not read.
func (c *loopConn) filterAnswer() bool {
	a := c.lf.local
	closeConn := !c.keepAlive
	ob := localAnswerBuffer(c.p.cfg.Pool, &a, closeConn, c.isHead)
	c.endFilters()
	if c.logged {
		c.logLocal(a.status, a.body, ob.Len())
	}
	c.out = append(c.out, ob)
	if closeConn {
		c.closing = true
	}
	c.flush()
	return !c.closed && !c.closing && len(c.out) == 0
}

// park holds the request whose filters asked for a delay until it is over; the rest of
// request (from the pick on, or the filter's answer when stopped) runs then (unpark).
// The end is taken from the monotonic clock now, not from the loop's clock of the batch
// (which may be behind), so that the wait is never shorter than the delay; the loop's
// timers fire at or after their time.
func (c *loopConn) park(rt *router.Route, cl *cluster.Cluster, n, total int, streaming, continued, stopped bool) {
	c.lf.park = loopPark{at: evloop.Mono() + int64(c.lf.delay), rt: rt, cl: cl, n: n, total: total,
		streaming: streaming, continued: continued, stopped: stopped}
	c.rearm()
	if h := parkedHook.Load(); h != nil {
		(*h)()
	}
}

// parkedHook, set by tests only, runs on the loop once a request is parked.
var parkedHook atomic.Pointer[func()]

// unpark goes on with the parked request once its delay is over (OnTimer).
func (c *loopConn) unpark() {
	pk := c.lf.park
	c.lf.park = loopPark{}
	// The route timeout and the upstream latency count from after the delay, as on the
	// goroutine path (filterState.Delay); the access log keeps the arrival time. The
	// client was not read meanwhile: its body timeout starts again too.
	now := c.loop.Now()
	c.start, c.tryStart, c.upSent, c.last = now, now, now, now
	if !pk.streaming {
		c.recvAt = now
	}
	var more bool
	if pk.stopped {
		c.in.Drain(pk.total)
		more = c.filterAnswer()
	} else {
		more = c.send(pk.rt, pk.cl, pk.n, pk.total, pk.streaming, pk.continued)
	}
	if more {
		c.serve()
	}
}

// parkedEvents is the client socket's readiness while its request is parked: nothing is
// read (the request's head is in `in`; later bytes wait in the socket, and readable
// remembers them). A client that closes or resets ends the request, which has no upstream
// yet; one that half-closed before the request was parked (eof) is still answered.
func (c *loopConn) parkedEvents(ev uint32) {
	if ev&(evloop.Err|evloop.Hup) != 0 || (ev&evloop.RdHup != 0 && !c.eof) {
		c.close(network.CloseRemote, false)
	}
}

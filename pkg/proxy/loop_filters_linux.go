package proxy

import (
	"net/netip"
	"time"

	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
)

// loopFilters runs a listener's stream filters on the event loop. Only a chain of
// filter.HeadersOnly filters is served there (rawOK), or of filter.SizedBodiesOnly ones
// for requests without a chunked body (the others are handed off): the receive phase runs on the
// request head after routing and before the cluster is picked, the send phase on the
// upstream's response head before it is queued for the client. Header changes become head
// edits, as on the goroutine path (h1Headers). A request handed to the goroutine path
// after its filters ran is filtered again there, which HeadersOnly filters allow.
type loopFilters struct {
	h1Chain
	c *loopConn
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

// Delay implements filter.StreamHandler. HeadersOnly filters never call it, and the loop
// cannot wait: it is ignored here.
func (lf *loopFilters) Delay(time.Duration) {}

// SetResponseFlag implements filter.StreamHandler.
func (lf *loopFilters) SetResponseFlag(f accesslog.Flag) { lf.c.info.Flags |= f }

// requestFilters runs the receive phase on the request head with route rt; true: a filter
// stopped the request (lf.local holds the answer). c.edits must be reset: header changes
// become head edits.
func (c *loopConn) requestFilters(rt *router.Route) (stopped bool) {
	lf := &c.lf
	lf.c = c
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

package proxy

import (
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/network/evloop"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// The HTTP/1 event-loop path (network.RawHandler). A listener with event loops hands each
// accepted socket to ServeRaw on the loop that accepted it, and the connection then lives
// on that loop with no goroutine of its own: requests are parsed from the bytes the loop
// reads, routed and balanced as on the goroutine path (session.go), and written to
// upstream HTTP/1 connections that are themselves sockets on the same loop, kept idle per
// loop and per host. Responses stream back as they are read, a read buffer at a time;
// when the client cannot take more, the upstream is not read until it can.
//
// Why: on the goroutine path every request cost reads that returned EAGAIN (Go's poller
// reads before it waits: once on the downstream after each response, and often on the
// upstream), a park and a wake-up of the connection's goroutine, and the scheduler's work
// around them. Here a socket is read when epoll says so, and a short read means it is
// drained.
//
// The loop serves HTTP/1.1 and 1.0 requests without Upgrade or CONNECT, on routes to an
// HTTP/1 cluster whose hosts are addresses, with no upstream TLS and no mirror. A body of
// at most loopBodyMax bytes (Content-Length) is read whole before the request goes out,
// so any try can be replayed (retry policies, a kept-alive connection found closed); a
// chunked or larger body streams to the upstream as it arrives (pumpBody) and is never
// replayed. "100 Continue" is sent when the client expects one. Route timeouts and
// retry policies apply as on the goroutine path. Any other request hands the connection
// over to the goroutine path (network.RawConn.Handoff) between two requests, with the
// bytes not yet consumed: that path then serves this and every later request of the
// connection. So do a route that answers locally (no route, direct_response, redirect)
// and a first pick that must wait for a healthy host (pick_timeout); a later pick's wait
// (the host picked first refused) runs on a goroutine while the request stays on the
// loop (waitPick). Listeners whose stream filters need more than the heads are not
// served on loops at all (ServeRaw declines; see rawOK and loop_filters_linux.go);
// access logs are written from the loop (loop_log_linux.go).

const (
	loopBodyMax = 48 << 10 // largest request body read whole before forwarding; larger ones stream
	loopInMax   = 96 << 10 // downstream bytes held unparsed; a head that needs more is handed off
	loopIovMax  = 64       // buffers per writev
)

// rawOK reports whether this proxy's connections may be served on event loops.
func (p *Proxy) rawOK() bool {
	return p.cfg.Downstream == stream.HTTP1 && p.cfg.StreamFilters.OnHeads()
}

// LoopCapable reports whether ServeRaw may take this proxy's connections: HTTP/1
// downstream, and stream filters (if any) that act on heads alone (filter.HeadersOnly,
// or filter.LoopDelay: their delays are waited on the loop's timer), or do so for every
// request whose body length is declared (filter.SizedBodiesOnly: a chunked request is
// then handed to a goroutine, reason "filter_body"). The listener gives a proxy that is
// not capable only goroutines.
func (p *Proxy) LoopCapable() bool { return evloop.Supported && p.rawOK() }

// ServeRaw implements network.RawHandler.
func (p *Proxy) ServeRaw(a network.Accepted) bool { return p.ServeRawSniff(a, nil, 0) }

// ServeRawSniff is ServeRaw for a listener that serves other protocols too (Auto): the
// connection's first bytes are given to sniff until it decides, within timeout (or the
// connection is closed); one that is not HTTP/1 is handed to the listener's goroutine
// path, which sniffs again from the same bytes.
func (p *Proxy) ServeRawSniff(a network.Accepted, sniff func(peek []byte) (http1, more bool), timeout time.Duration) bool {
	if !p.rawOK() {
		return false
	}
	c := &loopConn{p: p, loop: a.Loop, fd: a.FD, pool: p.loopPool(a.Loop), sniff: sniff}
	if sniff != nil {
		c.sniffBy = a.Loop.Now() + int64(timeout)
	}
	c.rc.Init(a, c)
	c.impure = !p.cfg.StreamFilters.Pure()
	c.chunkedOff = p.chunkedOff && !p.cfg.StreamFilters.HeadsOnly()
	c.dr.fd = a.FD
	c.timer.H = c
	if c.logging = p.cfg.AccessLog.Enabled(); c.logging {
		c.local = a.Local()
	}
	c.idle = a.IdleTimeout()
	c.inMax = min(loopInMax, a.BufferLimit())
	c.last = a.Loop.Now()
	if ip := a.Remote.Addr().Unmap(); ip.IsValid() {
		c.rip = ip
		c.xff = ip.AppendTo(c.xff)
	}
	var err error
	if c.tok, err = a.Loop.Add(a.FD, c); err != nil {
		p.cfg.Log.Warn("proxy: event loop refused the socket", zap.Error(err))
		c.rc.Close(network.CloseError, false)
		return true
	}
	c.in = p.cfg.Pool.NewBuffer(readSize)
	c.rearm()
	return true
}

// fdReader reads a non-blocking socket with raw system calls: io.EOF at the end, the errno
// (EAGAIN when drained) otherwise.
type fdReader struct{ fd int }

func (r *fdReader) Read(b []byte) (int, error) {
	n, err := evloop.Recv(r.fd, b)
	if err == nil && n == 0 && len(b) > 0 {
		return 0, io.EOF
	}
	return n, err
}

// loopConn is one downstream HTTP/1 connection on a loop. Its methods run on the loop.
type loopConn struct {
	p    *Proxy
	rc   network.RawConn
	loop *evloop.Loop
	pool *loopPool
	tok  evloop.Token
	fd   int
	dr   fdReader

	in       *buffer.IoBuffer   // bytes read from the client and not yet consumed
	inMax    int                // most bytes `in` holds: loopInMax, or the listener's smaller buffer limit
	out      []*buffer.IoBuffer // bytes to write to the client, in order
	iov      []syscall.Iovec
	readable bool // an input edge was seen and the socket not drained
	rdhup    bool // the client's FIN is on its way: read to the EOF
	eof      bool // the client's EOF (or a read error) was read
	blocked  bool // the client's socket said EAGAIN; waiting for Out
	closing  bool // close once out is written
	closed   bool // closed or handed off
	// lingering: the answer that ended the connection is out and the write side shut;
	// what the client still sends is read and dropped until it closes or lingerAt
	// (closeAfterAnswer).
	lingering bool
	lingerAt  int64

	timer   evloop.Timer
	timerAt int64 // when timer is scheduled; 0: not
	idle    int64 // the listener's connection idle timeout, ns; 0: none
	last    int64 // loop clock of the last client activity
	headAt  int64 // when the partial request head (or body) in `in` started; 0: none
	// continued: "100 Continue" went to the client for the request waiting for its body.
	continued bool
	sniffBy   int64 // the end of the wait for bytes that tell the protocol (sniff)
	sniff     func(peek []byte) (http1, more bool)
	inBody    bool // the partial request has its head: the body timeout bounds the wait

	// impure: the stream filters include filter.LoopDelay ones, which must run once per
	// request: a request is handed off only before they run.
	impure bool
	// chunkedOff: a stream filter needs the body phase of a chunked request body (it is
	// handed off, reason "filter_body").
	chunkedOff bool

	rip netip.Addr
	xff []byte
	rid [32]byte

	// The access log (loop_log_linux.go).
	logging bool           // the listener has access logs
	logged  bool           // a request began and its line is not written yet
	local   netip.AddrPort // the connection's local address
	info    accesslog.Info

	// The request in flight.
	busy      bool
	head      http1.RequestHead
	hdrs      http1.Headers
	edits     http1.Edits
	hb        *buffer.IoBuffer // the upstream request: head and body
	hbOff     int              // bytes of hb written to the upstream
	keepAlive bool
	isHead    bool
	minor     uint8
	route     *router.Route
	cl        *cluster.Cluster
	host      *cluster.Host
	pickDone  func(lb.DoneInfo)
	lr        lb.Request
	att       cluster.Attempts
	pw        *cluster.PickWait // a goroutine owns att, waiting for a host (waitPick); nil: none
	pwTimer   bool              // a bound passed during that wait: it applies once the wait is over
	up        *loopUp
	reused    bool  // up came from the idle pool (a failure before any response byte may be retried once)
	idem      bool  // the method is idempotent (only such a request is retried so)
	start     int64 // loop clock at the request's start
	recvAt    int64 // loop clock when the request was in full (route timeout's start); 0: its body is arriving
	served    bool  // a request began on the connection: between requests, a drain closes it
	tryStart  int64 // loop clock at the start of the try in flight (retry_policy)
	attempt   int   // retries made for the request
	retrySlot bool  // a max_retries unit is held for the try in flight
	connAt    int64 // loop clock when the connect in flight started

	// A request body streamed to the upstream as it arrives (pumpBody).
	streamed  bool  // the request's body streams (it is not in hb: no try can replay it)
	reqBody   bool  // body bytes are still to come from the client or to go upstream
	bodyDone  bool  // the body's end has been read (reqBody until it is written)
	bodyCut   bool  // an early answer ended the request before its body's end was read
	bodyReady int   // body bytes at the start of `in`, framed and not yet written
	upSent    int64 // loop clock of the upload's latest progress upstream (its write-stall bound)
	reqRemain int64 // Content-Length bytes not yet framed
	reqChunk  bool
	rcr       http1.ChunkedReader

	// The response.
	rb       *buffer.IoBuffer // bytes read from the upstream and not yet forwarded
	rhead    http1.ResponseHead
	rhdrs    http1.Headers
	redits   http1.Edits
	started  bool // the response head went to the client
	upLast   int64
	body     http1.Body
	remain   int64
	cr       http1.ChunkedReader
	closeOut bool // the client connection closes after this response

	lf loopFilters // the request's stream filters (loop_filters_linux.go)
}

// loopUp is an upstream HTTP/1 connection on a loop: owned by a loopConn while a request
// uses it, otherwise idle in its loopPool.
type loopUp struct {
	fd         int
	tok        evloop.Token
	dr         fdReader
	pool       *loopPool
	key        string
	host       *cluster.Host
	done       func(lb.DoneInfo) // the connection's accounting (Attempts.Connected)
	owner      *loopConn
	connecting bool
	readable   bool
	rdhup      bool
	blocked    bool
	since      int64 // loop clock when it went idle
	timer      evloop.Timer
	local      netip.AddrPort // the socket's local address, read for the access log
}

// loopPool is a proxy's idle upstream connections on one loop, per host (LIFO).
type loopPool struct {
	p      *Proxy
	loop   *evloop.Loop
	idle   map[string][]*loopUp
	closed bool // the proxy closed: connections are not kept idle any more
}

// loopPool returns the proxy's pool for loop, made on first use (which also starts the
// watcher of the clusters' hosts).
func (p *Proxy) loopPool(l *evloop.Loop) *loopPool {
	if v, ok := p.loops.Load(l); ok {
		return v.(*loopPool)
	}
	v, loaded := p.loops.LoadOrStore(l, &loopPool{p: p, loop: l, idle: make(map[string][]*loopUp)})
	if !loaded && p.cfg.Clusters != nil {
		p.loopWatch.Do(func() {
			p.loopStop, p.loopDone = make(chan struct{}), make(chan struct{})
			go p.watchLoopHosts(p.cfg.Clusters.HostsChanged())
		})
	}
	return v.(*loopPool)
}

// watchLoopHosts closes, at each change of the clusters' hosts, the idle loop
// connections to hosts that left their cluster or went down (the goroutine path's pool
// does the same), so they do not wait for their idle timeout holding a max_connections
// unit.
func (p *Proxy) watchLoopHosts(changed <-chan struct{}) {
	defer close(p.loopDone)
	for {
		select {
		case <-changed:
		case <-p.loopStop:
			return
		}
		changed = p.cfg.Clusters.HostsChanged() // before the pass: no change is missed
		p.loops.Range(func(_, v any) bool {
			lp := v.(*loopPool)
			lp.loop.Post(lp.closeStale)
			return true
		})
	}
}

// closeStale closes the idle connections whose host was removed or is down.
func (lp *loopPool) closeStale() {
	for k, l := range lp.idle {
		kept := l[:0]
		for _, u := range l {
			if u.host.Removed() || !u.host.Healthy() {
				u.close()
				continue
			}
			kept = append(kept, u)
		}
		clear(l[len(kept):])
		if len(kept) == 0 {
			delete(lp.idle, k)
		} else {
			lp.idle[k] = kept
		}
	}
}

// closeLoopPools closes the idle upstream connections on every loop (Proxy.Close).
func (p *Proxy) closeLoopPools() {
	p.loopWatch.Do(func() {}) // no watcher starts after this
	p.loopStopOnce.Do(func() {
		if p.loopStop != nil {
			close(p.loopStop)
			<-p.loopDone
		}
	})
	var wg sync.WaitGroup
	p.loops.Range(func(k, v any) bool {
		lp := v.(*loopPool)
		wg.Add(1)
		if !lp.loop.Post(func() { lp.closeAll(); wg.Done() }) {
			wg.Done() // the loop is gone, and closed its sockets (LoopClosed)
		}
		return true
	})
	wg.Wait()
}

// get takes an idle connection to key, skipping (and closing) connections to hosts that
// left their cluster or are down.
func (lp *loopPool) get(key string) *loopUp {
	l := lp.idle[key]
	for len(l) > 0 {
		u := l[len(l)-1]
		l[len(l)-1] = nil
		l = l[:len(l)-1]
		if u.host.Removed() || !u.host.Healthy() {
			u.close()
			continue
		}
		lp.idle[key] = l
		return u
	}
	if l != nil {
		lp.idle[key] = l
	}
	return nil
}

// put keeps u idle, or closes it when its host has maxIdle idle connections already, has
// left its cluster or is down (the hosts watcher's pass, which ran while u was busy, did
// not see it).
func (lp *loopPool) put(u *loopUp) {
	l := lp.idle[u.key]
	if lp.closed || len(l) >= lp.p.cfg.MaxIdlePerHost || u.host.Removed() || !u.host.Healthy() {
		u.close()
		return
	}
	u.owner = nil
	u.since = lp.loop.Now()
	if !u.timer.Scheduled() {
		lp.loop.Schedule(&u.timer, u.since+int64(lp.p.cfg.IdleTimeout))
	}
	lp.idle[u.key] = append(l, u)
}

// remove drops u from the idle lists.
func (lp *loopPool) remove(u *loopUp) {
	l := lp.idle[u.key]
	for i, x := range l {
		if x == u {
			copy(l[i:], l[i+1:])
			l[len(l)-1] = nil
			lp.idle[u.key] = l[:len(l)-1]
			return
		}
	}
}

func (lp *loopPool) closeAll() {
	lp.closed = true
	for k, l := range lp.idle {
		for _, u := range l {
			u.close()
		}
		delete(lp.idle, k)
	}
}

// close closes the socket and ends the connection's accounting.
func (u *loopUp) close() {
	if u.fd < 0 {
		return
	}
	u.pool.loop.Forget(u.tok)
	u.pool.loop.Cancel(&u.timer)
	evloop.Close(u.fd, false)
	u.fd = -1
	if u.done != nil {
		u.done(lb.DoneInfo{})
		u.done = nil
	}
}

// OnTimer expires an idle connection; one in use is looked at again later.
func (u *loopUp) OnTimer() {
	lp := u.pool
	if u.owner != nil {
		lp.loop.Schedule(&u.timer, lp.loop.Now()+int64(lp.p.cfg.IdleTimeout))
		return
	}
	if exp := u.since + int64(lp.p.cfg.IdleTimeout); lp.loop.Now() < exp {
		lp.loop.Schedule(&u.timer, exp)
		return
	}
	lp.remove(u)
	u.close()
}

// LoopClosed implements evloop.Closer.
func (u *loopUp) LoopClosed() {
	if c := u.owner; c != nil {
		c.close(network.CloseDrain, false)
		return
	}
	u.pool.remove(u)
	u.close()
}

// OnEvents is the upstream socket's readiness.
func (u *loopUp) OnEvents(ev uint32) {
	c := u.owner
	if c == nil { // idle: the upstream closed it, or spoke out of turn
		if ev&(evloop.In|evloop.RdHup|evloop.Err|evloop.Hup) != 0 {
			u.pool.remove(u)
			u.close()
		}
		return
	}
	if u.connecting {
		if ev&(evloop.Err|evloop.Hup) != 0 {
			err := evloop.SocketError(u.fd)
			if err == nil {
				err = syscall.ECONNREFUSED
			}
			c.connectFailed(err, false)
			return
		}
		if ev&evloop.Out == 0 {
			return
		}
		c.connected()
		if c.closed || c.up != u {
			return
		}
	}
	if ev&(evloop.In|evloop.RdHup|evloop.Err|evloop.Hup) != 0 {
		u.readable = true
		u.rdhup = u.rdhup || ev&evloop.RdHup != 0
	}
	if ev&(evloop.Out|evloop.Err|evloop.Hup) != 0 && u.blocked {
		u.blocked = false
		c.writeUp()
		if c.closed || c.up != u {
			return
		}
	}
	c.readUp()
}

// OnEvents is the client socket's readiness.
func (c *loopConn) OnEvents(ev uint32) {
	if c.closed {
		return
	}
	if ev&(evloop.In|evloop.RdHup|evloop.Err|evloop.Hup) != 0 {
		c.readable = true
		c.rdhup = c.rdhup || ev&evloop.RdHup != 0
	}
	if c.lingering {
		c.linger()
		return
	}
	if c.lf.park.at != 0 {
		c.parkedEvents(ev)
		return
	}
	if ev&(evloop.Out|evloop.Err|evloop.Hup) != 0 && c.blocked {
		c.blocked = false
		if !c.flush() {
			return
		}
		if c.up != nil && c.up.readable {
			c.readUp() // the client took what was queued: forward more
			if c.closed {
				return
			}
		}
	}
	c.readDown()
	if c.reqBody && !c.closed {
		c.pumpBody()
	}
	if !c.closed {
		c.serve()
	}
}

// ForceClose implements network.RawOwner (the listener's drain time ran out).
func (c *loopConn) ForceClose(r network.CloseReason) { c.close(r, false) }

// CloseIfIdle implements network.RawIdleCloser: the connection closes when it is between
// requests, with nothing read and unanswered and nothing left to write. A connection that
// has not begun a request yet is left to serve the one its client is likely about to send.
func (c *loopConn) CloseIfIdle(r network.CloseReason) {
	if c.served && !c.closed && !c.busy && !c.closing && len(c.out) == 0 && c.in.Len() == 0 && !c.readable {
		c.close(r, false)
	}
}

// LoopClosed implements evloop.Closer.
func (c *loopConn) LoopClosed() { c.close(network.CloseDrain, false) }

// readDown reads what the client sent, up to inMax held bytes.
func (c *loopConn) readDown() {
	for c.readable && !c.eof {
		if c.in.Len() >= c.inMax {
			return // kept readable: read again once the held bytes are consumed
		}
		if c.in.Available() < 4<<10 {
			c.in.Grow(min(readSize, c.inMax-c.in.Len()))
		}
		space := c.in.Available()
		n, err := c.in.ReadOnce(&c.dr)
		if n > 0 {
			c.last = c.loop.Now()
			if n < space && !c.rdhup {
				c.readable = false // a short read: drained
			}
		}
		switch {
		case err == nil:
		case err == syscall.EAGAIN:
			c.readable = false
		case err == syscall.EINTR:
		default: // EOF, or a reset
			c.readable, c.eof = false, true
			if err != io.EOF {
				c.close(downstreamErrReason(err), false)
				return
			}
			if c.busy && !c.started {
				// The client left while its request waits for the response head: drop
				// the upstream request, as nginx, Envoy and Go's server do (see
				// clientWatch). A FIN read with the request, before it was sent, is a
				// half-close: that request is still served.
				c.close(network.CloseRemote, false)
				return
			}
		}
	}
}

// serve handles the requests in `in`, one at a time: the next is parsed once the response
// to the last one is read and written.
func (c *loopConn) serve() {
	for !c.closed && !c.busy && !c.closing && len(c.out) == 0 && c.lf.park.at == 0 {
		if c.readable && !c.eof && c.in.Len() < c.inMax {
			// Bytes left in the socket when `in` was full (a pipeline behind a streamed
			// body, say): no new edge will tell of them.
			c.readDown()
			if c.closed {
				return
			}
		}
		if c.in.Len() == 0 {
			c.headAt, c.inBody = 0, false
			if c.eof {
				c.close("", false)
				return
			}
			if c.served && !c.readable && c.p.draining.Load() {
				c.close(network.CloseDrain, false) // between requests while draining
				return
			}
			// An idle keep-alive connection holds no buffer: the next request takes them
			// from the pool again (no allocation in steady state).
			c.in.Shrink(0)
			if c.hb != nil {
				c.hb.Reset()
				c.hb.Shrink(0)
			}
			c.rearm()
			return
		}
		if c.sniff != nil {
			h1, more := c.sniff(c.in.Bytes())
			switch {
			case more && c.eof:
				c.close("", false)
				return
			case more:
				c.rearm()
				return
			case !h1:
				c.handoff(handoffProtocol)
				return
			}
			c.sniff = nil
		}
		c.head.Headers = c.hdrs[:0]
		n, err := http1.ParseRequestHead(c.in.Bytes(), c.p.cfg.Limits, &c.head)
		if cap(c.head.Headers) > cap(c.hdrs) {
			c.hdrs = c.head.Headers[:0]
		}
		if err != nil {
			c.p.protocolError(string(stream.HTTP1))
			c.isHead = false
			c.logBadRequest(c.in.Len())
			c.localReply(http1.StatusCode(err), err.Error(), true)
			return
		}
		if n == 0 {
			if c.partial(c.in.Len() >= c.inMax, false) {
				c.handoff(handoffLargeHead)
			}
			return
		}
		if !c.request(n) {
			return
		}
	}
}

// partial notes a request that is not complete in `in`: the bytes wait for more within
// the request header timeout (the body timeout once the head is complete: inBody). full:
// no more can be held.
func (c *loopConn) partial(full, inBody bool) (handoff bool) {
	if full && !c.eof {
		return true
	}
	if c.eof {
		if inBody && c.logging {
			c.logLeftBody()
		}
		c.close("", false) // the client left halfway through a request
		return false
	}
	if c.headAt == 0 || inBody != c.inBody {
		c.headAt = c.loop.Now()
	}
	if inBody {
		c.headAt = c.last // the body timeout bounds the gap between reads
	}
	c.inBody = inBody
	c.rearm()
	return false
}

// request serves the parsed head of n bytes at the start of `in`; it reports whether the
// connection stays on the loop for the next one.
func (c *loopConn) request(n int) bool {
	h := &c.head
	total := n
	view := stream.HTTP1Request{Head: h}
	streaming := false
	switch {
	case h.Upgrade || string(h.Method) == "CONNECT":
		c.handoff(handoffUpgrade)
		return false
	case h.Body == http1.BodyChunked && c.chunkedOff:
		c.handoff(handoffFilterBody) // a stream filter counts the chunked body (OnRequestData)
		return false
	case h.Body == http1.BodyChunked || h.ContentLength > loopBodyMax || n+int(h.ContentLength) > c.inMax:
		// The body streams to the upstream as it arrives (pumpBody); it is not replayed.
		streaming = true
	case h.Body == http1.BodyLength:
		total += int(h.ContentLength)
		if c.in.Len() < total {
			if h.Expect100 && !c.continued {
				// The client waits for a go-ahead before its body, once the request is
				// known to be forwarded from here.
				_, cl, why := c.routeFor(view)
				if why == noHandoff && !cl.RawDial() {
					why = handoffClusterDialer // decided now: the goroutine path sends the 100
				}
				if why != noHandoff {
					c.handoff(why)
					return false
				}
				c.continued = true
				c.out = append(c.out, continueBuffer(c.p.cfg.Pool))
				if !c.flush() {
					return false
				}
			}
			c.partial(false, true)
			return false
		}
	}
	rt, cl, why := c.routeFor(view)
	if why == noHandoff && c.impure {
		// The goroutine path would run the filters again and draw their decisions anew:
		// what makes it take the request after them is looked at before they run.
		switch {
		case !cl.RawDial():
			why = handoffClusterDialer
		case cl.HealthyHosts() == 0:
			why = handoffPickWait
		}
	}
	if why != noHandoff {
		c.handoff(why)
		return false
	}
	continued := c.continued
	c.continued = false
	c.headAt, c.inBody = 0, false
	c.start, c.served = c.loop.Now(), true
	c.tryStart, c.attempt = c.start, 0
	// The route timeout starts once the request is in: now, unless its body streams
	// (then at the body's end, frameBody).
	c.recvAt, c.upSent = c.start, c.start
	if streaming {
		c.recvAt = 0
	}
	// A local answer to a request whose body was not read closes the connection, so that
	// no body byte is taken for a request.
	c.keepAlive, c.isHead, c.minor = h.KeepAlive && !streaming && !c.p.draining.Load(), string(h.Method) == "HEAD", h.ProtoMinor
	// Until the body streams (startBody), a local answer leaves it unread while the
	// client may still be sending it (unless it waits for a 100 Continue):
	// closeAfterAnswer then reads until the client closes.
	c.bodyCut = streaming && (!h.Expect100 || continued)
	c.idem = idempotent(bstr(h.Method))
	if c.logging {
		c.logBegin(view, rt, total)
	}
	c.lr = lb.Request{}
	if k, ok := rt.HashKey(view, c.rip); ok {
		c.lr.HashKey, c.lr.HasHash = k, true
	}
	if c.p.overloaded() {
		c.in.Drain(total)
		c.keepAlive = false // a body still unread is not taken; the connection's buffers go
		return c.localDone(http.StatusServiceUnavailable, msgOverloaded)
	}
	c.resetEdits()
	if c.p.cfg.StreamFilters.Len() > 0 {
		stopped := c.requestFilters(rt)
		if c.lf.delay > 0 {
			c.park(rt, cl, n, total, streaming, continued, stopped)
			return false
		}
		if stopped {
			c.in.Drain(total)
			return c.filterAnswer()
		}
	}
	return c.send(rt, cl, n, total, streaming, continued)
}

// send picks a host for the routed request whose head of n bytes (total with its body,
// when whole) starts `in`, and sends it on an idle or a new upstream connection; it
// reports whether the connection stays on the loop for the next request (request).
func (c *loopConn) send(rt *router.Route, cl *cluster.Cluster, n, total int, streaming, continued bool) bool {
	h := &c.head
	if !cl.TryAcquire(cluster.MaxRequests) {
		c.in.Drain(total)
		return c.localDone(statusOverflow, "upstream overflow")
	}
	host, done, err := cl.PickNow(&c.lr)
	if err != nil {
		cl.Release(cluster.MaxRequests)
		if errors.Is(err, cluster.ErrWouldWait) && !c.impure {
			c.handoff(handoffPickWait) // the goroutine path waits for a host (pick_timeout)
			return false
		}
		// An impure chain ran (request looked before it did; the hosts went down since):
		// answered as a pick that may not wait.
		c.in.Drain(total)
		le := pickError(err)
		return c.localDone(le.status, le.body)
	}
	up := c.pool.get(host.PoolKey())
	for (streaming || !c.idem) && up != nil && !evloop.Alive(up.fd) {
		// A streamed body or a non-idempotent request cannot be sent again if the
		// connection turns out closed, so look first: the upstream's FIN may be queued
		// behind this request's event.
		up.close()
		up = c.pool.get(host.PoolKey())
	}
	if up == nil {
		if err := cl.StartAttemptsHost(&c.att, &c.lr, host); err != nil {
			done(lb.DoneInfo{})
			cl.Release(cluster.MaxRequests)
			if errors.Is(err, cluster.ErrNotRaw) && !c.impure {
				c.handoff(handoffClusterDialer)
				return false
			}
			c.in.Drain(total)
			le := dialError(err)
			return c.localDone(le.status, le.body)
		}
	}
	c.busy, c.route, c.cl, c.host, c.pickDone = true, rt, cl, host, done
	if !c.encode(h, rt, n, total) {
		c.in.Drain(total)
		if up != nil {
			c.pool.put(up)
		} else {
			c.att.Abandon()
		}
		c.finish(false, errors.New("bad request edit"))
		return c.localDone(http.StatusBadRequest, "bad request edit")
	}
	c.in.Drain(total)
	c.streamed = streaming
	if streaming {
		c.keepAlive = h.KeepAlive // the body is read: the connection may carry more
		c.startBody(h)
		if h.Expect100 && !continued {
			c.out = append(c.out, continueBuffer(c.p.cfg.Pool))
			if !c.flush() {
				return false
			}
		}
	}
	c.rearm()
	if up != nil {
		c.reused = true
		c.attach(up)
		c.writeUp()
		return !c.closed
	}
	c.reused = false
	c.connectNext()
	return !c.closed
}

// routeFor routes the request: its route and cluster, or why the loop cannot serve it
// (a handoff reason).
func (c *loopConn) routeFor(view stream.HTTP1Request) (*router.Route, *cluster.Cluster, handoffReason) {
	p := c.p
	tbl, ok := p.table()
	var rt *router.Route
	if ok {
		rt, ok = tbl.Match(view)
	}
	if !ok {
		return nil, nil, handoffNoRoute
	}
	if why := c.loopRoute(rt); why != noHandoff {
		return nil, nil, why
	}
	cl, ok := p.cfg.Clusters.Get(rt.ClusterFor(view, rand.Uint64()))
	if !ok {
		return nil, nil, handoffNoCluster
	}
	return rt, cl, noHandoff
}

// loopRoute is why the loop cannot serve a request on rt (see the file comment);
// noHandoff: it can.
func (c *loopConn) loopRoute(rt *router.Route) handoffReason {
	if _, ok := rt.DirectResponse(); ok {
		return handoffLocalAnswer
	}
	if _, ok := rt.Redirect(); ok {
		return handoffLocalAnswer
	}
	if _, ok := rt.Mirror(); ok {
		return handoffMirror
	}
	if c.p.upstreamProtocol(rt, stream.HTTP1) != stream.HTTP1 {
		return handoffUpstreamProtocol
	}
	return noHandoff
}

// resetEdits starts the request head's edits; the stream filters add theirs first.
func (c *loopConn) resetEdits() { freshEdits(&c.edits, c.xff) }

// encode writes the upstream request into hb: the head of n bytes with the proxy's edits
// (as session.request makes them), then the body up to total.
func (c *loopConn) encode(h *http1.RequestHead, rt *router.Route, n, total int) bool {
	e := &c.edits // reset by resetEdits, then edited by the stream filters
	fillRequestID(&c.rid)
	e.RequestID = c.rid[:]
	if h.Expect100 {
		e.Remove = append(e.Remove, "Expect") // answered here (or moot: the body is here)
	}
	routeEdits(e, rt, h)
	if c.hb == nil {
		c.hb = c.p.cfg.Pool.NewBuffer(1024)
	}
	c.hb.Reset()
	c.hbOff = 0
	if err := http1.AppendRequestHead(c.hb, h, e); err != nil {
		return false
	}
	if total > n {
		_, _ = c.hb.Write(c.in.Bytes()[n:total])
	}
	return true
}

// connectNext connects to the next host of the attempts, waits for one (waitPick), or
// answers 503 when none is left.
func (c *loopConn) connectNext() {
	for {
		host, ap, err := c.att.Next()
		if err != nil {
			if c.att.CanWait() {
				c.waitPick()
				return
			}
			c.noConnect(err)
			return
		}
		fd, err := evloop.ConnectTCP(ap)
		if err != nil {
			c.att.Failed(err, false, false)
			continue
		}
		u := &loopUp{fd: fd, pool: c.pool, key: host.PoolKey(), host: host, owner: c, connecting: true}
		u.dr.fd = fd
		u.timer.H = u
		if u.tok, err = c.loop.Add(fd, u); err != nil {
			evloop.Close(fd, false)
			c.att.Failed(err, false, false)
			continue
		}
		c.up = u
		c.connAt = c.loop.Now()
		c.rearm()
		return
	}
}

// noConnect ends the attempts that found no host to connect to (err): the request is
// retried if its policy allows, or answered 503.
func (c *loopConn) noConnect(err error) {
	c.att.Abandon()
	if c.retry(0) {
		return
	}
	c.p.cfg.Log.Debug("proxy: upstream connect failed", zap.String("cluster", c.cl.Name()), zap.Error(err))
	if c.logged {
		c.info.UpstreamCluster = c.cl.Name() // the cluster that failed, as on HTTP/2
	}
	c.finish(false, err)
	c.answer(statusNoHealthy, "upstream connect failed")
}

// waitPick waits for a host on a goroutine, as the goroutine path's dial does: a later
// pick found no untried host up while one is down, and the cluster's pick_timeout allows
// the wait (Attempts.CanWait). The loop does not touch att meanwhile: a bound that passes
// (OnTimer) cancels the wait and applies once it is over (picked); the request's end (the
// client left, a forced close, a drain's end) cancels it too (endWait).
func (c *loopConn) waitPick() {
	c.pw = c.att.GoWaitPick(func(w *cluster.PickWait, err error) {
		// A loop that stopped drops picked; it has closed (or will close) c then
		// (LoopClosed), and endWait abandons att on the loop.
		c.loop.Post(func() { c.picked(w, err) })
	})
}

// picked continues on the loop the request whose wait for a host ended (err: no host).
func (c *loopConn) picked(w *cluster.PickWait, err error) {
	if c.pw != w {
		return // the request ended during the wait (endWait)
	}
	c.pw = nil
	w.Cancel()
	if c.pwTimer {
		c.pwTimer = false
		if at := c.deadline(); at != 0 && c.loop.Now() >= at {
			c.OnTimer() // 504 (408 for a body timeout), or the retry a per-try timeout allows
			return
		}
	}
	if err != nil {
		c.noConnect(err)
		return
	}
	c.connectNext()
}

// endWait ends the wait for a host of a request that ends during it (dropTry): the
// goroutine, cancelled, abandons the attempts when WaitPick returns, unless it returned
// already (its picked is then ignored, or dropped by a stopped loop) and the loop does it
// now. The connection ends with such a request (closed, or closing after a local answer),
// so that att is not used again before the goroutine is done with it.
func (c *loopConn) endWait() {
	w := c.pw
	c.pw, c.pwTimer = nil, false
	c.keepAlive = false
	w.Drop()
}

// connectFailed drops the connect in flight and tries the next host.
func (c *loopConn) connectFailed(err error, timedOut bool) {
	u := c.up
	c.up = nil
	u.done = nil
	u.close()
	c.connAt = 0
	c.att.Failed(err, timedOut, false)
	c.connectNext()
}

// connected starts the request on the new upstream connection.
func (c *loopConn) connected() {
	u := c.up
	u.connecting = false
	c.connAt = 0
	u.host, u.done = c.att.Connected()
	u.key = u.host.PoolKey()
	if c.logging {
		c.logUpstream(u)
	}
	c.upSent = c.loop.Now()
	c.rearm()
	c.writeUp()
}

// attach makes up the request's upstream connection.
func (c *loopConn) attach(u *loopUp) {
	u.owner = c
	u.readable, u.rdhup, u.blocked = false, false, false
	c.up = u
	if c.logging {
		c.logUpstream(u)
	}
}

// writeUp writes what is left of hb to the upstream.
func (c *loopConn) writeUp() {
	u := c.up
	for c.hbOff < c.hb.Len() {
		n, err := evloop.Send(u.fd, c.hb.Bytes()[c.hbOff:])
		switch {
		case err == nil:
			c.hbOff += n
			c.upSent = c.loop.Now()
		case err == syscall.EAGAIN:
			u.blocked = true
			c.rearm() // an upload's write-stall bound (uploadDeadline)
			return
		case err == syscall.EINTR:
		default:
			c.upFailed(false)
			return
		}
	}
	if c.reqBody {
		c.pumpBody()
	}
}

// sendFailed ends a request whose streamed body could not be written whole to the
// upstream. An upstream that answered early and closed without reading the rest leaves
// its answer readable under the reset: nothing more is sent (blocked), and the answer is
// read and forwarded as any early answer (finish: bodyCut), as on the goroutine path
// (session.respond). Otherwise the upstream failed (upFailed).
func (c *loopConn) sendFailed() {
	u := c.up
	if c.started || !evloop.InputPending(u.fd) {
		c.upFailed(false)
		return
	}
	u.blocked, u.readable = true, true
	c.readUp()
}

// startBody starts streaming the body of request head h: the bytes already read go
// upstream after the head (pumpBody), the rest as they arrive.
func (c *loopConn) startBody(h *http1.RequestHead) {
	c.reqBody, c.bodyDone, c.bodyReady, c.bodyCut = true, false, 0, false
	c.reqChunk, c.reqRemain = h.Body == http1.BodyChunked, h.ContentLength
	if c.reqChunk {
		c.rcr.Reset(c.p.cfg.Limits)
		c.rcr.Canonical = true
	}
}

// pumpBody frames the request body bytes in `in` and writes them to the upstream once its
// head is out, reading more from the client as the upstream takes them: `in` holds at most
// inMax bytes, so a slow upstream holds the client back. A malformed chunked body is
// answered 400 (or ends the connection once the response has started).
func (c *loopConn) pumpBody() {
	for c.reqBody && !c.closed {
		if !c.bodyDone && c.in.Len() > c.bodyReady {
			if err := c.frameBody(); err != nil {
				c.p.protocolError(string(stream.HTTP1))
				if c.started {
					c.finish(false, err)
					c.close(network.CloseReason("protocol_error"), false)
					return
				}
				c.finish(false, err)
				c.keepAlive = false
				c.localReply(http1.StatusCode(err), err.Error(), true)
				return
			}
		}
		u := c.up
		if u == nil || u.connecting || u.blocked || c.hbOff < c.hb.Len() {
			return // the upstream is not ready: OnEvents calls again
		}
		for c.bodyReady > 0 {
			n, err := evloop.Send(u.fd, c.in.Bytes()[:c.bodyReady])
			switch {
			case err == nil:
				c.in.Drain(n)
				c.bodyReady -= n
				c.upSent = c.loop.Now()
				if c.logged {
					c.info.BytesReceived += uint64(n)
				}
				continue
			case err == syscall.EAGAIN:
				u.blocked = true
				c.rearm() // the upload's write-stall bound (uploadDeadline)
				return
			case err == syscall.EINTR:
				continue
			}
			c.sendFailed()
			return
		}
		if c.bodyDone {
			c.reqBody = false
			if c.logged {
				c.info.RequestReceived = time.Since(c.info.Start)
			}
			return
		}
		if !c.readable || c.eof {
			if c.eof { // the client left before the end of its body
				c.close(network.CloseRemote, false)
			}
			return // wait for the client
		}
		c.readDown()
	}
}

// frameBody extends bodyReady over the body bytes newly in `in`, up to the body's end.
func (c *loopConn) frameBody() error {
	body := http1.BodyLength
	if c.reqChunk {
		body = http1.BodyChunked
	}
	k, cut, done, err := frameBody(body, c.in.Bytes()[c.bodyReady:], &c.reqRemain, &c.rcr)
	c.in.Truncate(c.in.Len() - cut)
	c.bodyReady += k
	c.bodyDone = done
	if done && c.recvAt == 0 {
		// The request is in: its route timeout (and its only try's per-try timeout) starts.
		c.recvAt = c.loop.Now()
		c.tryStart = c.recvAt
		c.rearm()
	}
	return err
}

// readUp reads the response while the client keeps up with it.
func (c *loopConn) readUp() {
	u := c.up
	for u != nil && u.readable && !c.blocked && !c.closed && c.up == u {
		if c.rb == nil {
			c.rb = c.p.cfg.Pool.NewBuffer(readSize)
		}
		if c.rb.Available() == 0 {
			c.rb.Grow(readSize)
		}
		space := c.rb.Available()
		n, err := c.rb.ReadOnce(&u.dr)
		if n > 0 {
			c.upLast = c.loop.Now()
			if n < space && !u.rdhup {
				u.readable = false
			}
			if !c.response() {
				return
			}
		}
		switch {
		case err == nil:
		case err == syscall.EAGAIN:
			u.readable = false
		case err == syscall.EINTR:
		case err == io.EOF:
			u.readable = false
			c.upEOF()
			return
		default:
			u.readable = false
			c.upFailed(false)
			return
		}
	}
}

// response parses and forwards what rb holds; false: the request ended (or failed) and c.up
// is no longer read.
func (c *loopConn) response() bool {
	if !c.started {
		n, ok := c.responseHead()
		if !ok || n == 0 {
			return ok
		}
	}
	return c.forward()
}

// responseHead parses the response head in rb and queues the edited head for the client;
// n == 0 with ok: the head is not complete yet.
func (c *loopConn) responseHead() (n int, ok bool) {
	rh := &c.rhead
	interim := false
	for {
		*rh = http1.ResponseHead{HeadRequest: c.isHead, Headers: c.rhdrs[:0]}
		var err error
		n, err = http1.ParseResponseHead(c.rb.Bytes(), c.p.cfg.Limits, rh)
		if cap(rh.Headers) > cap(c.rhdrs) {
			c.rhdrs = rh.Headers[:0]
		}
		if err == nil && n > 0 && rh.Status == http.StatusSwitchingProtocols {
			err = errors.New("101 to a request that asked for no upgrade")
		}
		if err != nil {
			c.report(false)
			c.finish(false, err)
			c.answer(http.StatusBadGateway, "invalid upstream response")
			return 0, false
		}
		if n == 0 {
			return 0, true
		}
		if rh.Status >= 100 && rh.Status < 200 {
			if hb := interimHead(c.p.cfg.Pool, rh, c.minor, n); hb != nil {
				c.sent(hb.Len())
				c.out = append(c.out, hb)
				interim = true
			}
			c.rb.Drain(n)
			if c.rb.Len() == 0 {
				if interim && !c.flush() { // early hints are worth sending early
					return 0, false
				}
				return 0, true
			}
			continue
		}
		break
	}
	c.report(rh.Status < 500)
	if c.retry(rh.Status) {
		return 0, false
	}
	re := &c.redits
	*re = http1.Edits{Add: re.Add[:0], Remove: re.Remove[:0]}
	// An answer that starts before the request body is all forwarded ends the connection
	// (finish): it says so.
	c.closeOut = !c.keepAlive || rh.Body == http1.BodyClose || c.p.draining.Load() || c.reqBody
	switch {
	case c.closeOut:
		re.Connection = http1.ConnClose
	case c.minor == 0:
		re.Connection = http1.ConnKeepAlive
	}
	c.route.ApplyResponseHeaders(editMutator{re})
	if c.logging {
		c.logResponse()
	}
	if c.responseFilters() {
		// The filter's answer replaces the upstream's, which is not reused.
		c.finish(false, errStoppedByFilter)
		if c.filterAnswer() {
			c.serve()
		}
		return 0, false
	}
	hb := c.p.cfg.Pool.NewBuffer(n + 256)
	if err := http1.AppendResponseHead(hb, rh, re); err != nil {
		hb.Release()
		c.finish(false, err)
		c.answer(http.StatusBadGateway, "invalid upstream response")
		return 0, false
	}
	c.rb.Drain(n)
	c.started = true
	c.sent(hb.Len())
	c.body, c.remain = rh.Body, rh.ContentLength
	if c.body == http1.BodyChunked {
		c.cr.Reset(c.p.cfg.Limits)
		c.cr.Canonical = true
	}
	c.out = append(c.out, hb)
	return n, true
}

// forward queues the body bytes of rb that belong to the response for the client and
// writes; at the response's end the upstream connection is released.
func (c *loopConn) forward() bool {
	rb := c.rb
	k, cut, done, err := frameBody(c.body, rb.Bytes(), &c.remain, &c.cr)
	rb.Truncate(rb.Len() - cut)
	if err != nil {
		c.p.cfg.Log.Debug("proxy: invalid chunked response body", zap.Error(err))
		c.upFailed(false)
		return false
	}
	c.sent(k)
	switch {
	case k == 0:
	case k == rb.Len():
		c.out = append(c.out, rb)
		c.rb = nil
	default:
		ob := c.p.cfg.Pool.NewBuffer(k)
		_, _ = ob.Write(rb.Bytes()[:k])
		rb.Drain(k)
		c.out = append(c.out, ob)
	}
	if done {
		// The upstream is not reused after bytes past the response (it spoke out of turn)
		// or before the whole request was written (it answered early).
		extra := c.rb != nil && c.rb.Len() > 0
		c.finish(!extra && c.rhead.KeepAlive && c.hbOff == c.hb.Len() && !c.reqBody, nil)
		c.logEnd(0)
		if c.closeOut || !c.keepAlive {
			c.closing = true
		}
	}
	if !c.flush() {
		return false
	}
	if done {
		c.serve()
		return false
	}
	return true
}

// upEOF: the upstream closed its side.
func (c *loopConn) upEOF() {
	switch {
	case c.started && c.body == http1.BodyClose:
		c.finish(false, nil)
		c.logEnd(0)
		c.closing = true
		if c.flush() {
			c.serve()
		}
	default:
		c.upFailed(true)
	}
}

// upFailed ends a request whose upstream connection broke: before any response byte, an
// idempotent request on a reused connection goes once more on a new one (the upstream may
// have closed it while it was idle); otherwise the client gets 502, or, once the response has
// started, the connection closes.
func (c *loopConn) upFailed(eof bool) {
	switch {
	case c.started:
		c.finish(false, errors.New("upstream reset"))
		c.logEnd(accesslog.FlagUpstreamReset)
		c.close(network.CloseReason("upstream_reset"), false)
	case c.reused && c.idem && !c.streamed && (c.rb == nil || c.rb.Len() == 0):
		c.reused = false
		host := c.host
		c.up.close()
		c.up = nil
		c.hbOff = 0
		if err := c.cl.StartAttemptsHost(&c.att, &c.lr, host); err != nil {
			c.finish(false, err)
			c.answer(statusNoHealthy, "upstream connect failed")
			return
		}
		c.connectNext()
	default:
		c.report(false)
		if c.retry(0) {
			return
		}
		msg := "upstream write failed"
		if eof || c.hbOff == c.hb.Len() {
			msg = "upstream closed before the response"
		}
		c.finish(false, errors.New(msg))
		c.answer(statusReset, msg)
	}
}

// report feeds the host of the try in flight to outlier detection
// (cluster.Host.ReportResult): ok false for a 5xx answer, or for no answer by the
// upstream's doing (timeout, reset, an invalid response).
func (c *loopConn) report(ok bool) {
	if c.host != nil {
		c.host.ReportResult(ok)
	}
}

// finish ends the request's use of its upstream: the connection goes back to the pool
// (reuse) or is closed, the pick's done and the max_requests unit are given back.
func (c *loopConn) finish(reuse bool, err error) {
	if !c.busy {
		return
	}
	c.busy, c.connAt = false, 0
	if c.reqBody {
		// The rest of the request body will not be read: the connection ends with the
		// answer.
		c.bodyCut = !c.bodyDone
		c.reqBody, c.keepAlive = false, false
	}
	c.retryDone()
	c.dropTry(reuse)
	var lat time.Duration
	if err == nil {
		lat = time.Duration(c.loop.Now() - c.start)
	}
	if c.pickDone != nil {
		c.pickDone(lb.DoneInfo{Err: err, Latency: lat})
		c.pickDone = nil
	}
	c.cl.Release(cluster.MaxRequests)
	c.route, c.host, c.cl = nil, nil, nil
	c.endFilters()
	c.rearm()
}

// dropTry ends the try in flight: its upstream connection goes back to the pool (reuse)
// or is closed, and its read buffer is released.
func (c *loopConn) dropTry(reuse bool) {
	c.started, c.connAt = false, 0
	if u := c.up; u != nil {
		c.up = nil
		switch {
		case u.connecting:
			u.done = nil
			u.close()
			c.att.Failed(nil, false, true)
			c.att.Abandon()
		case reuse:
			c.pool.put(u)
		default:
			u.close()
		}
	} else if c.pw != nil {
		c.endWait()
	} else {
		c.att.Abandon()
	}
	if c.rb != nil {
		c.rb.Release()
		c.rb = nil
	}
}

// tryDeadline is when the try in flight times out: the route timeout from when the
// request was in (recvAt), tightened by the retry policy's per-try timeout; 0: none, as
// while a streamed body still arrives (uploadDeadline bounds that).
func (c *loopConn) tryDeadline() int64 {
	if c.recvAt == 0 {
		return 0
	}
	var d int64
	if t := c.route.Timeout(); t > 0 {
		d = c.recvAt + int64(t)
	}
	if pt := c.route.Retry().PerTryTimeout(); pt > 0 {
		if td := c.tryStart + int64(pt); d == 0 || td < d {
			d = td
		}
	}
	return d
}

// retry is called when a try ended before any of its response went to the client: status
// is the upstream's, or 0 for none (connect failure, reset, per-try timeout). When the
// route's retry policy, the time left and the cluster's max_retries breaker allow it
// (session.retryTry's rules; the loop always holds the whole request), the try is dropped
// and the request sent again, preferably to another host; it reports whether it was.
func (c *loopConn) retry(status int) bool {
	c.retryDone()
	rt, cl := c.route, c.cl
	pol := rt.Retry()
	if pol == nil || c.streamed {
		return false
	}
	now := c.loop.Now()
	if t := rt.Timeout(); t > 0 && now-c.recvAt >= int64(t) {
		return false
	}
	if !pol.ShouldRetry(c.attempt, status, false, cl) {
		return false
	}
	var host *cluster.Host
	var done func(lb.DoneInfo)
	for range 3 { // another host than the failed one, when the cluster has one
		c.lr.Attempt++
		h, d, err := cl.PickNow(&c.lr)
		if err != nil {
			break
		}
		if host != nil {
			done(lb.DoneInfo{})
		}
		host, done = h, d
		if h != c.host {
			break
		}
	}
	if host == nil {
		cl.ReleaseRetry()
		return false
	}
	c.retrySlot = true
	c.attempt++
	cl.CountRetry()
	c.dropTry(false) // its response, if any, is unread
	c.pickDone(lb.DoneInfo{Err: errRetried})
	c.host, c.pickDone = host, done
	c.tryStart, c.hbOff = now, 0
	c.rearm()
	if up := c.pool.get(host.PoolKey()); up != nil {
		c.reused = true
		c.attach(up)
		c.writeUp()
		return true
	}
	c.reused = false
	if err := cl.StartAttemptsHost(&c.att, &c.lr, host); err != nil {
		c.finish(false, err)
		c.answer(statusNoHealthy, "upstream connect failed")
		return true
	}
	c.connectNext()
	return true
}

// retryDone gives back the max_retries unit of the try that ended.
func (c *loopConn) retryDone() {
	if c.retrySlot {
		c.retrySlot = false
		c.cl.ReleaseRetry()
	}
}

// localDone answers the current request locally; false: the connection is closing, or
// the answer waits for the client to take it.
func (c *loopConn) localDone(status int, body string) bool {
	c.localReply(status, body, !c.keepAlive)
	return !c.closed && !c.closing && len(c.out) == 0
}

// answer is localDone outside serve: it then serves the requests that follow.
func (c *loopConn) answer(status int, body string) {
	if c.localDone(status, body) {
		c.serve()
	}
}

// localReply queues a response made by the proxy and writes it.
func (c *loopConn) localReply(status int, body string, closeConn bool) {
	c.endFilters()
	ob := localReplyBuffer(c.p.cfg.Pool, status, body, closeConn, c.isHead)
	if c.logged {
		c.logLocal(status, body, ob.Len())
	}
	c.out = append(c.out, ob)
	if closeConn {
		c.closing = true
	}
	c.flush()
}

// flush writes out to the client; false: the connection is closed (or closing after a
// failed write). Afterwards out is empty, or blocked is set.
func (c *loopConn) flush() bool {
	for len(c.out) > 0 {
		iov := c.iov[:0]
		for _, b := range c.out[:min(len(c.out), loopIovMax)] {
			if p := b.Bytes(); len(p) > 0 {
				v := syscall.Iovec{Base: &p[0]}
				v.SetLen(len(p))
				iov = append(iov, v)
			}
		}
		c.iov = iov
		n, err := evloop.Writev(c.fd, iov)
		switch {
		case err == nil:
		case err == syscall.EAGAIN:
			c.blocked = true
			c.rearm()
			return true
		case err == syscall.EINTR:
			continue
		default:
			c.close(downstreamErrReason(err), false)
			return false
		}
		c.last = c.loop.Now()
		// Release the buffers written whole (and empty ones), and drain the one
		// written in part.
		k := 0
		for ; k < len(c.out); k++ {
			b := c.out[k]
			if l := b.Len(); n < l {
				b.Drain(n)
				break
			} else {
				n -= l
			}
			b.Release()
			c.out[k] = nil
		}
		m := copy(c.out, c.out[k:])
		clear(c.out[m:])
		c.out = c.out[:m]
	}
	if c.closing && !c.busy {
		c.closeAfterAnswer()
		return false
	}
	return true
}

// closeAfterAnswer closes the connection once the answer that ends it is written. When
// the client may still be sending (bytes held here or unread in the socket, a request
// body not read to its end), closing now would reset the connection, and with a reset
// the kernel drops the part of the answer still in the socket's send queue: the write
// side is shut instead and the input read and dropped until the client closes, or has
// taken the whole answer, or network.LingerTime passed (lingering close, as on the
// goroutine path: network.Conn.CloseLinger).
func (c *loopConn) closeAfterAnswer() {
	more := c.in.Len() > 0 || c.bodyCut || c.reqBody && !c.bodyDone || c.readable || evloop.InputPending(c.fd)
	if c.eof || !more || evloop.ShutdownWrite(c.fd) != nil {
		c.close("", false)
		return
	}
	c.lingering = true
	c.lingerAt = c.loop.Now() + int64(network.LingerTime)
	c.in.Reset()
	c.rearm()
	c.linger()
}

// linger reads and drops what the client sends after the answer that ended the
// connection. Its EOF or a read error closes the connection, and so does an empty send
// queue when the client sent nothing more (it has the whole answer: a reset can no longer
// cut it). A client whose body the upstream answered early is read until it closes:
// closing under a client still sending resets the connection, and a client such as Go's
// then reports its failed write rather than the answer it has. LingerTime bounds both.
func (c *loopConn) linger() {
	got := false
	for c.readable && !c.closed {
		c.in.Reset()
		if c.in.Available() < 4<<10 {
			c.in.Grow(readSize)
		}
		n, err := c.in.ReadOnce(&c.dr)
		got = got || n > 0
		switch {
		case err == syscall.EAGAIN:
			c.readable = false
		case err == syscall.EINTR:
		case err != nil:
			c.close("", false)
		}
	}
	if !c.closed && !got && !c.bodyCut && !evloop.OutputPending(c.fd) {
		c.close("", false)
	}
}

// handoff gives the connection to the goroutine path with the bytes not yet consumed,
// counted on http1_loop_handoffs_total with reason. Called between requests (nothing in
// flight, nothing queued for the client).
func (c *loopConn) handoff(reason handoffReason) {
	if h := c.p.handoffs[reason]; h != nil {
		h.Inc()
	}
	if err := c.loop.Remove(c.fd, c.tok); err != nil {
		c.p.cfg.Log.Warn("proxy: handing a connection to a goroutine failed", zap.Error(err))
		c.close(network.CloseError, false)
		return
	}
	c.closed = true
	c.endFilters() // the goroutine path runs the chain again on the request
	c.loop.Cancel(&c.timer)
	c.rc.Handoff(c.in.Bytes())
	c.release()
}

// close closes the client connection and drops the request in flight.
// downstreamErrReason names a failed read or write on the client's socket: its
// send_timeout ran out, or (anything else) the client reset or vanished.
func downstreamErrReason(err error) network.CloseReason {
	if network.SendTimedOut(err) {
		return network.CloseSendTimeout
	}
	return network.CloseReason("downstream_reset")
}

func (c *loopConn) close(r network.CloseReason, reset bool) {
	if c.closed {
		return
	}
	c.closed = true
	c.finish(false, errors.New("downstream closed"))
	c.endFilters()
	c.logEnd(accesslog.FlagDownstreamReset)
	c.loop.Forget(c.tok)
	c.loop.Cancel(&c.timer)
	if r == "" {
		r = network.CloseLocal
		if c.eof {
			r = network.CloseRemote
		}
	}
	c.rc.Close(r, reset)
	c.release()
}

// release returns the connection's buffers.
func (c *loopConn) release() {
	for _, b := range c.out {
		b.Release()
	}
	c.out = nil
	for _, b := range []*buffer.IoBuffer{c.in, c.hb, c.rb} {
		if b != nil {
			b.Release()
		}
	}
	c.in, c.hb, c.rb = nil, nil, nil
	clear(c.hdrs[:cap(c.hdrs)])
	clear(c.rhdrs[:cap(c.rhdrs)])
}

// rearm schedules the connection's timer for the earliest of its bounds (see OnTimer);
// a timer already set earlier is left, and looks again when it fires.
func (c *loopConn) rearm() {
	at := c.deadline()
	if at == 0 || (c.timerAt != 0 && c.timerAt <= at) {
		return
	}
	c.timerAt = at
	c.loop.Schedule(&c.timer, at)
}

// deadline is when the current wait ends: the connect timeout, the route timeout (from
// the request's end to the response head, then between two reads of the body), the
// request header or body timeout of a partial request or a streamed body (either side
// of it), the idle timeout of a connection with nothing to do; 0: none.
func (c *loopConn) deadline() int64 {
	switch {
	case c.lingering:
		return c.lingerAt
	case c.sniff != nil:
		return c.sniffBy
	case c.lf.park.at != 0:
		return c.lf.park.at
	case c.busy && c.started:
		if t := int64(c.route.Timeout()); t > 0 {
			return c.upLast + t
		}
		return 0
	case c.busy:
		d := c.tryDeadline()
		if c.connAt != 0 {
			if cd := c.connAt + int64(c.att.ConnectTimeout()); d == 0 || cd < d {
				d = cd
			}
		}
		if bd := c.bodyDeadline(); bd != 0 && (d == 0 || bd < d) {
			d = bd
		}
		if ud := c.uploadDeadline(); ud != 0 && (d == 0 || ud < d) {
			d = ud
		}
		return d
	case c.headAt != 0:
		t := c.p.requestHeaderTimeout()
		if c.inBody {
			t = c.p.requestBodyTimeout()
		}
		if t < 0 {
			return 0
		}
		return c.headAt + int64(t)
	case c.idle > 0:
		return c.last + c.idle
	}
	return 0
}

// bodyDeadline bounds the wait for more of a streamed request body: the request body
// timeout after the client's last bytes, while the body is incomplete and nothing holds
// it back but the client; 0: none.
func (c *loopConn) bodyDeadline() int64 {
	if !c.reqBody || c.bodyDone || c.in.Len() >= c.inMax {
		return 0
	}
	if u := c.up; u != nil && u.blocked {
		return 0 // the upstream is slow, not the client
	}
	t := c.p.requestBodyTimeout()
	if t < 0 {
		return 0
	}
	return c.last + int64(t)
}

// uploadDeadline bounds the upstream's side of a streamed request body: while the
// upstream does not take the bytes (its socket is blocked; the client is not read
// meanwhile, so bodyDeadline is off), the request body timeout after the upload's latest
// progress. It passes as an upstream timeout (504). 0: none.
func (c *loopConn) uploadDeadline() int64 {
	if !c.reqBody || c.up == nil || !c.up.blocked {
		return 0
	}
	t := c.p.requestBodyTimeout()
	if t < 0 {
		return 0
	}
	return c.upSent + int64(t)
}

// OnTimer applies the bound that passed, if one did.
func (c *loopConn) OnTimer() {
	c.timerAt = 0
	if c.closed {
		return
	}
	now := c.loop.Now()
	at := c.deadline()
	if at == 0 || now < at {
		c.rearm()
		return
	}
	if c.pw != nil {
		// During a wait for a host, which owns att: the bound applies once it is over.
		c.pwTimer = true
		c.pw.Cancel()
		return
	}
	switch {
	case c.lingering: // the client did not close in time
		c.close("", false)
	case c.sniff != nil: // no protocol in time: closed, as the goroutine path does
		c.close("", false)
	case c.lf.park.at != 0: // the filters' delay is over
		c.unpark()
	case c.busy && !c.started && c.bodyDeadline() != 0 && now >= c.bodyDeadline():
		c.p.protocolError(string(stream.HTTP1))
		c.finish(false, errors.New("request body timeout"))
		c.localReply(http.StatusRequestTimeout, "request body timeout", true)
	case c.busy && c.connAt != 0 && now >= c.connAt+int64(c.att.ConnectTimeout()):
		c.connectFailed(nil, true)
	case c.busy && !c.started:
		c.report(false)
		if c.retry(0) { // the per-try timeout passed, and the route's allows another try
			return
		}
		c.finish(false, errors.New("upstream timeout"))
		c.answer(statusTimeout, "upstream timeout")
	case c.busy:
		c.finish(false, errors.New("upstream timeout"))
		c.logEnd(accesslog.FlagUpstreamTimeout)
		c.close(network.CloseReason("upstream_timeout"), false)
	case c.headAt != 0:
		c.p.protocolError(string(stream.HTTP1))
		c.keepAlive, c.isHead = false, false
		c.in.Reset()
		msg := "request header timeout"
		if c.inBody {
			msg = "request body timeout"
		}
		c.localReply(http.StatusRequestTimeout, msg, true)
	default:
		c.close(network.CloseIdleTimeout, false)
	}
}

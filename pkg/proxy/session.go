package proxy

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// errClose ends the read loop after a response that closes the connection.
var errClose = errors.New("proxy: connection done")

// session is the state of one downstream connection.
type session struct {
	p   *Proxy
	ctx context.Context
	c   *network.Conn

	bodyArmed bool // the read deadline bounds the wait for more of a request body (timeout.go)

	sniffed bool
	head    http1.RequestHead
	edits   http1.Edits
	redits  http1.Edits
	rhead   http1.ResponseHead
	rhdrs   http1.Headers // storage for rhead.Headers
	hdrs    http1.Headers // storage for head.Headers
	lr      lb.Request
	hb      *buffer.IoBuffer // upstream request head, reused
	xff     []byte
	rid     [32]byte
	remove  [1]string

	// The request whose body is being forwarded.
	inBody    bool
	chunked   bool
	remain    int64
	cr        http1.ChunkedReader
	up        *upConn
	route     *router.Route
	pickDone  func(lb.DoneInfo)
	reqSlot   bool       // a max_requests unit of s.cl is held for the request
	rip       netip.Addr // the downstream peer's address, read once per connection
	start     time.Time
	isHead    bool
	keepAlive bool
	minor     uint8
	upFailed  bool // an upstream write failed while the body was forwarded
	upTimeout bool // ... because the try's time ran out (answered 504, not 502)
	reused    bool // s.up came from the idle pool
	idem      bool // the method is idempotent: retryFresh may send the request again
	replay    bool // the request has no body and s.hb still holds its head
	cl        *cluster.Cluster
	h2        *h1h2 // request forwarded to an HTTP/2 upstream while its body arrives (h2conv.go)

	fs    filterState  // stream filters and access log (filters.go, accesslog.go)
	x     sessExt      // retries, upgrade tunnel, request header timeout (retry.go, upgrade.go, timeout.go)
	watch *clientWatch // the client while a request waits for its response head (clientwatch.go)
}

var sessions = sync.Pool{New: func() any { return new(session) }}

func getSession(p *Proxy, ctx context.Context, c *network.Conn) *session {
	s := sessions.Get().(*session)
	s.p, s.ctx, s.c = p, ctx, c
	s.sniffed = p.cfg.Downstream != stream.Auto
	if s.hb == nil {
		s.hb = p.cfg.Pool.NewBuffer(1024)
	}
	s.xff = s.xff[:0]
	s.rip = remoteIP(c)
	if s.rip.IsValid() {
		s.xff = s.rip.AppendTo(s.xff)
	}
	return s
}

func putSession(s *session) {
	s.dropMirror()
	s.hb.Reset()
	hb, xff, hdrs, rhdrs := s.hb, s.xff, s.hdrs, s.rhdrs
	clear(hdrs[:cap(hdrs)]) // drop references into read buffers
	clear(rhdrs[:cap(rhdrs)])
	fs := s.fs.keep()
	*s = session{hb: hb, xff: xff, hdrs: hdrs[:0], rhdrs: rhdrs[:0], fs: fs, watch: s.watch}
	sessions.Put(s)
}

// onData is the ReadLoop callback: it handles every complete request in b, and bounds
// the wait for the rest of a request body it left incomplete.
func (s *session) onData(b *buffer.IoBuffer) error {
	if s.x.tunnel == nil && !s.c.Busy() {
		return errClose // a drain closed the connection between requests
	}
	err := s.requests(b)
	if err == nil {
		s.bodyPartial(s.inBody && s.x.tunnel == nil)
		if s.h2EarlyClosing() {
			// Looked at after the read deadline was set: h2Early's wake-up is not lost.
			return errClose
		}
		if b.Len() == 0 && !s.inBody && s.x.tunnel == nil {
			// Every request read is answered: between requests.
			if s.p.draining.Load() {
				return errClose
			}
			s.c.SetIdle()
		}
	}
	return err
}

// requests handles every complete request in b.
func (s *session) requests(b *buffer.IoBuffer) error {
	if !s.sniffed {
		ok, more := stream.SniffHTTP1(b.Bytes())
		if more {
			s.headPartial(true)
			return nil
		}
		if !ok || hasPrefix(b.Bytes(), "PRI * HTTP/2") {
			s.p.protocolError(string(stream.Auto))
			s.p.cfg.Log.Info("proxy: Auto found no supported protocol, closing connection")
			return errClose
		}
		s.sniffed = true
	}
	for b.Len() > 0 {
		if s.x.tunnel != nil {
			return s.tunnelData(b)
		}
		if s.inBody {
			if err := s.body(b); err != nil {
				return err
			}
			if s.inBody {
				return nil
			}
			if s.up == nil {
				continue
			}
			if err := s.respond(); err != nil {
				return err
			}
			continue
		}
		s.head.Headers = s.hdrs[:0]
		n, err := http1.ParseRequestHead(b.Bytes(), s.p.cfg.Limits, &s.head)
		if cap(s.head.Headers) > cap(s.hdrs) {
			s.hdrs = s.head.Headers[:0]
		}
		if err != nil {
			s.p.protocolError(string(stream.HTTP1))
			s.beginBadRequest(b.Len())
			s.localReply(http1.StatusCode(err), err.Error(), true, false)
			return errClose
		}
		if n == 0 {
			s.headPartial(true)
			return nil
		}
		s.headPartial(false)
		if err := s.request(b, n); err != nil {
			return err
		}
		if !s.inBody && s.up != nil {
			if err := s.respond(); err != nil {
				return err
			}
		}
	}
	return nil
}

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }

// request handles a parsed head of n bytes at the start of b: local answers, or the
// upstream connection and the head written to it. It drains the head from b.
func (s *session) request(b *buffer.IoBuffer, n int) error {
	h := &s.head
	s.isHead = string(h.Method) == "HEAD"
	s.idem = idempotent(bstr(h.Method))
	s.keepAlive = h.KeepAlive && !s.p.draining.Load()
	s.minor = h.ProtoMinor
	s.start = time.Now()
	s.beginRequest(n)
	s.beginTries()
	hasBody := h.Body != http1.BodyNone
	if !s.upgradeRequest(h) {
		b.Drain(n)
		s.localReply(http.StatusNotImplemented, "upgrade and CONNECT are not supported", true, false)
		return errClose
	}
	if s.p.overloaded() {
		b.Drain(n)
		s.localReply(http.StatusServiceUnavailable, msgOverloaded, true, s.isHead)
		return errClose
	}
	view := stream.HTTP1Request{Head: h}
	var rt *router.Route
	tbl, ok := s.p.table()
	if ok {
		rt, ok = tbl.Match(view)
	}
	s.resetEdits()
	if s.p.cfg.StreamFilters.Len() > 0 {
		if stop, err := s.filterRequest(rt, b, n, hasBody); stop {
			return err
		}
	}
	if !ok {
		b.Drain(n)
		return s.localDone(statusNoRoute, "no route", hasBody)
	}
	if dr, ok := rt.DirectResponse(); ok {
		b.Drain(n)
		return s.routeReply(rt, dr.Status, dr.Body, "", hasBody)
	}
	if rd, ok := rt.Redirect(); ok {
		b.Drain(n)
		return s.redirect(rt, rd, hasBody)
	}
	if s.p.upstreamProtocol(rt, stream.HTTP1) == stream.HTTP2 {
		if s.x.upgrade {
			b.Drain(n)
			return s.localDone(http.StatusNotImplemented, "upgrade to an HTTP/2 upstream is not supported", false)
		}
		return s.h2Request(b, n, rt, view, hasBody)
	}
	name := rt.ClusterFor(view, rand.Uint64())
	cl, ok := s.p.cfg.Clusters.Get(name)
	if !ok {
		b.Drain(n)
		return s.localDone(statusNoHealthy, "no cluster "+name, hasBody)
	}
	s.lr = lb.Request{}
	lr := &s.lr
	if k, ok := rt.HashKey(view, s.rip); ok {
		lr.HashKey, lr.HasHash = k, true
	}
	// The cluster's max_requests breaker: one unit per request in flight, given back when
	// the request ends (endRequestSlot).
	if !cl.TryAcquire(cluster.MaxRequests) { // the breaker counted the overflow
		b.Drain(n)
		return s.localDone(statusOverflow, "upstream overflow", hasBody)
	}
	// A bodiless request is in with its head: its route timeout starts now, and bounds
	// the waits for a host (tryCtx) as it bounds the answer.
	if !hasBody {
		s.received(s.start)
	}
	host, pickDone, err := s.pick(rt, cl)
	if err != nil {
		cl.Release(cluster.MaxRequests)
		b.Drain(n)
		le := pickError(err)
		if errors.Is(err, errTimeout) {
			le = errTimeout
		}
		return s.localDone(le.status, le.body, hasBody)
	}
	up := s.p.get(host, s.start) // probed by the pool when idle for a while
	for up != nil && (hasBody || !s.idem) && !up.Probe() {
		// A body may stream through and then cannot be sent again if the connection
		// turns out closed (retryFresh replays idempotent requests with their head and
		// body in s.hb only): look first.
		up.close()
		up = s.p.get(host, s.start)
	}
	if up == nil {
		raw, h2, done, err := s.dial(rt, cl, host, hasBody)
		if err != nil {
			pickDone(lb.DoneInfo{Err: err})
			cl.Release(cluster.MaxRequests)
			b.Drain(n)
			if s.fs.logging {
				s.fs.info.UpstreamCluster = cl.Name() // the cluster that failed, as on HTTP/2
			}
			le := dialError(err)
			if errors.Is(err, errTimeout) {
				le = errTimeout
			}
			return s.localDone(le.status, le.body, hasBody)
		}
		up = newUpConn(raw, h2, done)
	}
	s.reused = up.since != (time.Time{})
	s.up, s.route, s.pickDone, s.cl, s.reqSlot = up, rt, pickDone, cl, true
	// The request's own bound, before anything is written: a coarse bound left by the
	// connection's previous request may fire earlier. A bodiless request's route timeout
	// started with its head (received above); one with a body starts its upload.
	up.deadline(s.tryDeadline(s.start))

	s.noteUpstream(up.host, cl, up) // a connect retry may have moved to another host

	// Head edits (reset by resetEdits before the stream filters ran).
	e := &s.edits
	s.requestID()
	e.RequestID = s.rid[:]
	if h.Expect100 {
		s.remove[0] = "Expect"
		e.Remove = append(e.Remove, s.remove[0])
	}
	routeEdits(e, rt, h)
	e.Upgrade = s.x.upgrade
	s.hb.Reset()
	if err := http1.AppendRequestHead(s.hb, h, e); err != nil {
		b.Drain(n)
		s.finishUpstream(false, err)
		return s.localDone(http1.StatusCode(err), "bad request edit", hasBody)
	}
	b.Drain(n)
	if !hasBody {
		s.mirror(rt)
	} else {
		s.mirrorWithBody(rt)
	}
	if h.Expect100 && hasBody {
		if err := s.c.Write(continueBuffer(s.p.cfg.Pool)); err != nil {
			s.finishUpstream(false, err)
			return err
		}
	}
	s.inBody = hasBody
	s.chunked = h.Body == http1.BodyChunked
	s.remain = h.ContentLength
	s.upFailed, s.upTimeout = false, false
	if s.chunked {
		s.cr.Reset(s.p.cfg.Limits)
		s.cr.Canonical = true
	}
	s.replay = !hasBody
	if !hasBody {
		s.requestReceived()
	}
	if !hasBody || b.Len() == 0 {
		err := s.writeUp(s.hb.Bytes())
		if hasBody {
			s.hb.Reset()
		}
		return err
	}
	// Small first body piece: one write with the head.
	return s.body(b)
}

// body forwards the request body bytes at the start of b upstream, as they arrive.
func (s *session) body(b *buffer.IoBuffer) error {
	if s.h2 != nil {
		return s.h2Body(b)
	}
	first := s.hb.Len() > 0
	var k int
	done := false
	if s.chunked {
		// Re-framed in place as it goes (NextCompact): b[:k] is what goes upstream.
		r := 0
		for r < b.Len() {
			prev := r
			data, nr, nk, d, err := s.cr.NextCompact(b.Bytes(), r, k)
			r, k = nr, nk
			if err != nil {
				s.p.protocolError(string(stream.HTTP1))
				s.finishUpstream(false, err)
				s.inBody = false
				s.localReply(http1.StatusCode(err), err.Error(), true, false)
				return errClose
			}
			if len(s.fs.filters) > 0 && len(data) > 0 && s.requestData(data, d) {
				dropGap(b, k, r)
				return s.stopInBody()
			}
			if d {
				done = true
				break
			}
			if r == prev {
				break
			}
		}
		dropGap(b, k, r)
	} else {
		k = int(min(int64(b.Len()), s.remain))
		s.remain -= int64(k)
		done = s.remain == 0
	}
	piece := b.Bytes()[:k]
	if s.requestBody(piece, s.chunked, done) {
		return s.stopInBody()
	}
	// The upload made progress: its write-stall bound moves on (coarse, so mostly
	// nothing to do), or, with the body's end read, the route timeout starts.
	now := time.Now()
	if done {
		s.received(now)
	}
	if s.up != nil {
		s.up.deadline(s.tryDeadline(now))
	}
	s.mirrorBody(piece, done)
	if first {
		if k <= 8<<10 {
			_, _ = s.hb.Write(piece)
			piece = nil
		}
		if err := s.writeUp(s.hb.Bytes()); err != nil {
			return err
		}
		if done && piece == nil {
			s.replay = true // a small body that came with the head: s.hb can replay it (retry.go)
		} else {
			s.hb.Reset()
		}
	}
	if len(piece) > 0 {
		if err := s.writeUp(piece); err != nil {
			return err
		}
	}
	b.Drain(k)
	if done {
		s.inBody = false
	}
	return nil
}

// writeUp writes to the upstream; a failure is remembered and answered once the request
// has been read (the body is still drained so the reply lines up): 504 when the write
// ran out of time, else 502. While the body arrives, a write may block for the request
// body timeout (an upstream that stopped reading it; tryDeadline); the route timeout
// starts only once the request is in, so a slow upload alone is never cut by it.
func (s *session) writeUp(p []byte) error {
	if s.upFailed || len(p) == 0 {
		return nil
	}
	if _, err := s.up.io().Write(p); err != nil {
		s.upFailed = true
		s.upTimeout = errors.Is(err, os.ErrDeadlineExceeded)
	}
	return nil
}

// aliveCheckAfter is how long a connection must have been idle before the pool probes it
// (the probe costs a syscall). Upstream servers close idle keep-alive connections after
// seconds, not milliseconds.
const aliveCheckAfter = time.Second

// alive reports whether an idle upstream connection is still open (upConn.Probe).
func (s *session) alive(up *upConn) bool { return up.Probe() }

// retryFresh replaces a reused upstream connection that failed before any response byte
// with a new one and writes the (bodiless) request again: the upstream may have closed the
// idle connection while it was being taken. It reports whether the request was re-sent.
func (s *session) retryFresh() bool {
	if !s.reused || !s.replay || !s.idem {
		return false
	}
	s.reused = false
	addr := s.up.addr
	s.up.close()
	var host *cluster.Host
	for _, h := range s.cl.Hosts() {
		if h.Addr() == addr {
			host = h // the same host, on a new connection
		}
	}
	ctx, cancel := s.tryCtx(s.route) // a wait for another host ends with the try
	raw, h, done, err := s.cl.DialHost(ctx, &s.lr, host)
	cancel()
	if err != nil {
		s.up = nil
		return false
	}
	s.up = newUpConn(raw, h, done)
	s.upFailed, s.upTimeout = false, false
	_ = s.writeUp(s.hb.Bytes())
	return !s.upFailed
}

// respond reads the response from the upstream and writes it downstream.
func (s *session) respond() error {
	// A write that failed other than by time (the upstream answered early and closed
	// without reading the whole body) leaves its answer readable: read it as usual; the
	// read fails at once when there is none.
	early := s.upFailed && !s.upTimeout
	if early {
		s.upFailed = false
	}
	if s.upFailed && (s.upTimeout || !s.retryFresh()) {
		s.up.report(false)
		s.retryTry(0)
	}
	up := s.up
	if s.upFailed && s.upTimeout {
		s.finishUpstream(false, errors.New("upstream timeout"))
		return s.localDone(statusTimeout, "upstream timeout", false)
	}
	if s.upFailed {
		s.finishUpstream(false, errors.New("upstream write failed"))
		return s.localDone(statusReset, "upstream write failed", false)
	}
	pool := s.p.cfg.Pool
	deadline := s.tryDeadline(time.Time{})
	if !s.waitOn(up, deadline) {
		s.unwatch()
		return s.clientLeft()
	}
	rh := &s.rhead
	rb := pool.NewBuffer(readSize)
	var n int
	// Let the connections with work run before reading the answer just asked for: under
	// load it has often arrived by then, which saves the read that would return EAGAIN
	// and the netpoll park and wake-up behind it (1.4 EAGAIN reads per request before).
	// With nothing else runnable this returns at once.
	runtime.Gosched()
	for {
		// A need-more parse drops the field slice, so keep its storage here.
		*rh = http1.ResponseHead{HeadRequest: s.isHead, Headers: s.rhdrs[:0]}
		var err error
		if rb.Len() > 0 {
			n, err = http1.ParseResponseHead(rb.Bytes(), s.p.cfg.Limits, rh)
			if cap(rh.Headers) > cap(s.rhdrs) {
				s.rhdrs = rh.Headers[:0]
			}
		}
		if err != nil {
			s.unwatch()
			rb.Release()
			s.retryDone()
			s.up.report(false)
			s.finishUpstream(false, err)
			return s.localDone(http.StatusBadGateway, "invalid upstream response", false)
		}
		if n > 0 && rh.Status >= 100 && rh.Status < 200 && rh.Status != 101 {
			if hb := interimHead(pool, rh, s.minor, n); hb != nil {
				s.sent(hb, nil)
				_ = s.c.Write(hb) // a client gone fails the final answer's write too
			}
			rb.Drain(n)
			n = 0 // not a head any more: read on when rb is now empty
			continue
		}
		if n > 0 {
			s.up.report(rh.Status < 500)
			if s.retryTry(rh.Status) {
				rb.Reset()
				n = 0
				up, deadline = s.up, s.tryDeadline(time.Time{})
				if !s.waitOn(up, deadline) {
					break
				}
				continue
			}
			break
		}
		if _, err := rb.ReadOnce(up.io()); err != nil {
			if s.watch.left() {
				break // the client left (clientwatch.go); no retry
			}
			if rb.Len() == 0 && !errors.Is(err, os.ErrDeadlineExceeded) && s.retryFresh() {
				up = s.up
				if !s.waitOn(up, deadline) {
					break
				}
				continue
			}
			s.up.report(false)
			if s.retryTry(0) {
				rb.Reset()
				n = 0
				up, deadline = s.up, s.tryDeadline(time.Time{})
				if !s.waitOn(up, deadline) {
					break
				}
				continue
			}
			s.unwatch()
			rb.Release()
			s.finishUpstream(false, err)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return s.localDone(statusTimeout, "upstream timeout", false)
			}
			return s.localDone(statusReset, "upstream closed before the response", false)
		}
	}
	if s.unwatch() {
		rb.Release()
		return s.clientLeft()
	}
	if s.route.Timeout() <= 0 {
		up.deadline(time.Time{}) // the body's reads are unbounded (forwardBody)
	}
	if s.x.upgrade && rh.Status == http.StatusSwitchingProtocols {
		return s.startTunnel(rb, n)
	}
	re := &s.redits
	*re = http1.Edits{Add: re.Add[:0], Remove: re.Remove[:0]}
	closeDown := !s.keepAlive || rh.Body == http1.BodyClose || s.p.draining.Load()
	switch {
	case closeDown:
		re.Connection = http1.ConnClose
	case s.minor == 0:
		re.Connection = http1.ConnKeepAlive
	}
	s.route.ApplyResponseHeaders(editMutator{re})
	s.responseHead()
	if s.responseFilters() {
		rb.Release()
		s.finishUpstream(false, errStoppedByFilter)
		return s.filterReply(false)
	}
	hb := pool.NewBuffer(n + 256)
	if err := http1.AppendResponseHead(hb, rh, re); err != nil {
		hb.Release()
		rb.Release()
		s.finishUpstream(false, err)
		return s.localDone(http.StatusBadGateway, "invalid upstream response", false)
	}
	rb.Drain(n)
	reuse, err := s.forwardBody(hb, rb)
	if err != nil {
		s.finishUpstream(false, err)
		s.upstreamFailed()
		s.c.Close("error")
		return errClose
	}
	// After a refused upgrade the upstream connection is not reused either: whether the
	// upstream still parses it as HTTP/1 is in doubt (ROBUSTNESS 5b, Envoy CVE-2023-27493).
	s.finishUpstream(reuse && rh.KeepAlive && !s.x.upgrade && !early, nil)
	s.endRequest()
	if closeDown {
		return errClose
	}
	return nil
}

// forwardBody writes the response head hb and the body downstream. rb holds the bytes
// read after the head. Read buffers are handed to the downstream Conn, so body bytes are
// copied once, from the upstream socket into a pooled buffer; only a buffer that holds
// the end of one framing unit and the start of the next is split with a copy.
func (s *session) forwardBody(hb, rb *buffer.IoBuffer) (reuse bool, err error) {
	rh := &s.rhead
	pool := s.p.cfg.Pool
	var cr *http1.ChunkedReader
	remain := rh.ContentLength
	idle := s.route.Timeout()
	if rh.Body == http1.BodyChunked {
		cr = &s.cr
		cr.Reset(s.p.cfg.Limits)
		cr.Canonical = true
	}
	send := func(k int) error {
		var out *buffer.IoBuffer
		switch {
		case k == 0:
		case k == rb.Len():
			out, rb = rb, nil
		default:
			out = pool.NewBuffer(k)
			_, _ = out.Write(rb.Bytes()[:k])
			rb.Drain(k)
		}
		s.sent(hb, out)
		switch {
		case hb != nil && out != nil:
			err = s.c.Write(hb, out)
		case hb != nil:
			err = s.c.Write(hb)
		case out != nil:
			err = s.c.Write(out)
		}
		hb = nil
		return err
	}
	defer func() {
		if hb != nil {
			hb.Release()
		}
		if rb != nil {
			rb.Release()
		}
	}()
	for {
		done := false
		k := 0
		switch rh.Body {
		case http1.BodyNone:
			done = true
		case http1.BodyLength:
			k = int(min(int64(rb.Len()), remain))
			remain -= int64(k)
			done = remain == 0
		case http1.BodyChunked:
			r := 0
			for r < rb.Len() {
				prev := r
				data, nr, nk, d, cerr := cr.NextCompact(rb.Bytes(), r, k)
				r, k = nr, nk
				if cerr != nil {
					return false, cerr
				}
				if len(s.fs.filters) > 0 && len(data) > 0 && s.responseData(data, d) {
					return false, errStoppedByFilter
				}
				if d {
					done = true
					break
				}
				if r == prev {
					break
				}
			}
			dropGap(rb, k, r)
		case http1.BodyClose:
			k = rb.Len()
		}
		if rh.Body != http1.BodyChunked && k > 0 && len(s.fs.filters) > 0 && s.responseData(rb.Bytes()[:k], done) {
			return false, errStoppedByFilter
		}
		if err := send(k); err != nil {
			return false, err
		}
		if done {
			// Bytes after the response: the upstream spoke out of turn; do not reuse.
			return rb == nil || rb.Len() == 0, nil
		}
		if rb == nil {
			rb = pool.NewBuffer(readSize)
		}
		// The route timeout bounds the wait for each body read, so a stalled upstream
		// cannot hold the connection forever.
		if idle > 0 {
			s.up.deadline(time.Now().Add(idle))
		}
		if _, rerr := rb.ReadOnce(s.up.io()); rerr != nil {
			if rh.Body == http1.BodyClose && errors.Is(rerr, io.EOF) {
				return false, nil
			}
			return false, rerr
		}
	}
}

// finishUpstream returns the upstream connection to the pool or closes it.
func (s *session) finishUpstream(reuse bool, err error) {
	if s.pickDone == nil {
		return
	}
	switch {
	case s.up == nil:
	case reuse:
		s.p.put(s.up, time.Now())
	default:
		s.up.close()
	}
	var lat time.Duration
	if err == nil {
		lat = time.Since(s.start)
	}
	s.pickDone(lb.DoneInfo{Err: err, Latency: lat})
	s.up, s.pickDone, s.route = nil, nil, nil
	s.endRequestSlot()
}

// endRequestSlot gives back the request's max_requests unit.
func (s *session) endRequestSlot() {
	if s.reqSlot {
		s.reqSlot = false
		s.cl.Release(cluster.MaxRequests)
	}
}

// dropUpstream closes an upstream connection left by a request that did not finish.
func (s *session) dropUpstream() {
	s.endTunnel()
	s.h2Abort()
	s.finishUpstream(false, errors.New("downstream closed"))
}

// routeEdits adds the route's own edits of an HTTP/1 request head to e: the path
// rewrite, the host rewrite and the route's request headers. Both HTTP/1 paths (session
// and loop) make them the same way.
func routeEdits(e *http1.Edits, rt *router.Route, h *http1.RequestHead) {
	if p := bstr(h.Target); p != "" {
		if np := rt.RewritePath(p); np != p {
			e.Target = []byte(np)
		}
	}
	if hr := rt.HostRewrite(); hr != "" {
		e.Host = []byte(hr)
	}
	rt.ApplyRequestHeaders(editMutator{e})
}

// localDone answers the current request locally. A request with a body that was not
// read closes the connection, so no body bytes are taken for a next request.
func (s *session) localDone(status int, body string, hasBody bool) error {
	closeConn := hasBody || !s.keepAlive
	s.localReply(status, body, closeConn, s.isHead)
	if closeConn {
		return errClose
	}
	return nil
}

// localReply writes a response made by the proxy.
func (s *session) localReply(status int, body string, closeConn, noBody bool) {
	ob := localReplyBuffer(s.p.cfg.Pool, status, body, closeConn, noBody)
	s.localAnswered(status, body, ob.Len())
	_ = s.c.Write(ob)
}

// interimHead is the interim (1xx) upstream head rh, n bytes long, to forward to an HTTP/1
// client of minor version minor, or nil. A proxy forwards 1xx answers it did not ask for
// (RFC 9110 §15.2): 103 Early Hints and the like, without hop-by-hop fields. A 100 is the
// proxy's own to give (it answers Expect itself), and an HTTP/1.0 client gets none.
func interimHead(pool *buffer.Pool, rh *http1.ResponseHead, minor uint8, n int) *buffer.IoBuffer {
	if rh.Status == http.StatusContinue || minor == 0 {
		return nil
	}
	hb := pool.NewBuffer(n + 32)
	if err := http1.AppendResponseHead(hb, rh, nil); err != nil {
		hb.Release()
		return nil
	}
	return hb
}

// continueBuffer is an interim "100 Continue" response.
func continueBuffer(pool *buffer.Pool) *buffer.IoBuffer {
	b := pool.NewBuffer(32)
	_, _ = b.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	return b
}

// localReplyBuffer is a response made by the proxy: status, a text/plain body (left out
// when noBody: HEAD), and "Connection: close" when closeConn.
func localReplyBuffer(pool *buffer.Pool, status int, body string, closeConn, noBody bool) *buffer.IoBuffer {
	ob := pool.NewBuffer(128 + len(body))
	_, _ = ob.WriteString("HTTP/1.1 ")
	ob.Grow(3)
	var num [20]byte
	_, _ = ob.Write(strconv.AppendInt(num[:0], int64(status), 10))
	_ = ob.WriteByte(' ')
	_, _ = ob.WriteString(http.StatusText(status))
	_, _ = ob.WriteString("\r\nContent-Type: text/plain\r\nContent-Length: ")
	_, _ = ob.Write(strconv.AppendInt(num[:0], int64(len(body)), 10))
	if closeConn {
		_, _ = ob.WriteString("\r\nConnection: close")
	}
	_, _ = ob.WriteString("\r\n\r\n")
	if !noBody {
		_, _ = ob.WriteString(body)
	}
	return ob
}

const hexDigits = "0123456789abcdef"

// requestID fills s.rid with 32 random hex digits.
func (s *session) requestID() { fillRequestID(&s.rid) }

func remoteIP(c *network.Conn) (ip netip.Addr) {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return ip
}

// editMutator records a route's header mutations as head edits.
type editMutator struct{ e *http1.Edits }

func (m editMutator) Set(k, v string) {
	m.e.Remove = append(m.e.Remove, k)
	m.e.Add = append(m.e.Add, http1.Header{Name: []byte(k), Value: []byte(v)})
}

func (m editMutator) Add(k, v string) {
	m.e.Add = append(m.e.Add, http1.Header{Name: []byte(k), Value: []byte(v)})
}

func (m editMutator) Del(k string) { m.e.Remove = append(m.e.Remove, k) }

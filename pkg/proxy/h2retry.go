package proxy

//lint:file-ignore SA1019 x/net/http2 is the HTTP/2 implementation by design (docs/l7-plan.md); its ClientConn API is deprecated in favour of net/http, which has no per-connection RoundTrip.

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http2"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/network"
)

// bufferLimit bounds the request body kept for a request on the HTTP/2 paths (to an
// HTTP/2 upstream, and from an HTTP/2 client to an HTTP/1 upstream), so that a retry or
// a mirror copy sends it whole: the listener's per_connection_buffer_limit_bytes
// (Config.BufferLimit), by default network.DefaultBufferLimit (1 MiB), as Envoy bounds
// the bodies it buffers for retries and shadows. It serves the retry policy, a stream
// the upstream did not process (unprocessedRetries) and the mirror copy alike. Memory:
// each request in flight with a body holds up to this much in a pooled buffer, from its
// first body byte until its response head arrives (and a mirror copy, up to as much,
// until it is sent); the memory overload check (Config.Overloaded) bounds the total. A
// body that outgrew it is not sent again: the try's failure is answered and counted
// (upstream_overflow_total, breaker retry_buffer), and the mirror copy is dropped.
// (The HTTP/1 path replays only a body that came whole with the head, at most 8 KiB.)
func (p *Proxy) bufferLimit() int {
	if p.cfg.BufferLimit > 0 {
		return p.cfg.BufferLimit
	}
	return network.DefaultBufferLimit
}

// unprocessedRetries bounds the tries a request to an HTTP/2 upstream gets again because
// the upstream did not process it (REFUSED_STREAM, a stream id above a GOAWAY's last
// stream id, a connection that could not take the stream): such a request is sent again
// whatever its method and whether or not the route has a retry policy, on a new
// connection, or on another host when the cluster has one. The route timeout bounds
// them too; they count in upstream_retries_total but take no max_retries slot.
const unprocessedRetries = 3

// roundTripH2 sends a request to the target's HTTP/2 upstream and returns the response,
// repeating the request while nothing of it has gone downstream: up to
// unprocessedRetries times when the upstream did not process the stream (REFUSED_STREAM,
// above a GOAWAY's last stream id, a connection that could not take it), on another
// host or a new connection; once on a new connection when a pooled one turns out
// closed; and as the route's retry policy allows (retry_on, num_retries, retry_timeout
// per try, the route timeout, the cluster's max_retries breaker) on another host when
// the cluster has one, after a connect failure, a stream reset, a per-try timeout or a
// retriable status. A request body is kept in a bounded replay buffer (h2Replay) so that
// a later try sends it again: up to bufferLimit. out.URL.Host follows the host of each
// try. It also queues the copy for the route's mirror cluster (mirror.go). first, when
// not nil, is a connection already acquired for the first try.
func (p *Proxy) roundTripH2(ctx context.Context, t *h2Target, out *http.Request, first *http2.ClientConn) (*http.Response, error) {
	r := t.retryState()
	defer r.release(t)
	mirror := p.mirrorH2(t.rt, out)
	var rp *h2Replay
	if out.Body != nil && out.Body != http.NoBody {
		// Kept even without a retry policy: an unprocessed stream is sent again.
		rp = p.newH2Replay(out.Body, t.cl.Name(), mirror)
		defer rp.settle()
		r.once = t.rt.Retry().NumRetries() == 0 && mirror == nil
	} else if mirror != nil {
		p.queueMirror(mirror, nil)
	}
	fresh, again := false, 0
	for {
		resp, unproc, err := p.tryH2(ctx, t, out, &r, rp, first, fresh)
		first, fresh = nil, false
		if ctx.Err() != nil {
			return resp, err
		}
		status := 0
		if err == nil {
			status = resp.StatusCode
		} else if le, ok := err.(*errLocal); ok && le == errOverflow {
			return nil, err // a breaker refused the try: no retry
		}
		// After a stream the upstream did not process, a failed connect of the next try
		// has not reached an upstream either.
		if unproc || again > 0 && err == errConnect {
			if again < unprocessedRetries && !t.timesUp() {
				if ok, over := rp.replayable(); !ok {
					if over {
						p.unreplayable(t)
					}
					return nil, err
				}
				again++
				t.cl.CountRetry()
				prev := t.host.Addr()
				if err := p.nextTryHost(ctx, t, &r, prev); err != nil {
					return nil, err
				}
				fresh = t.host.Addr() == prev // the pooled connections may get a GOAWAY too
				p.retarget(t, out)
				continue
			}
		}
		if !r.waited {
			t.reportTry(status, err)
		}
		if rp != nil && !rp.retriable() {
			if rp.outgrew() && r.wouldRetry(t, status) {
				p.unreplayable(t)
			}
			return resp, err
		}
		if !r.retryStatus(p, t, status) {
			return resp, err
		}
		if resp != nil {
			_ = resp.Body.Close()
		}
		if err := p.nextTryHost(ctx, t, &r, t.host.Addr()); err != nil {
			return nil, err
		}
		p.retarget(t, out)
	}
}

// h2TryCtx is the context of the waits for a host (pick_timeout) and the connects of a
// try on the HTTP/2 paths: ctx, ended at the try's deadline (r.deadline) once the request
// is in. While a body still arrives pick_timeout alone bounds the wait.
func (p *Proxy) h2TryCtx(ctx context.Context, t *h2Target, r *fastRetry) (context.Context, context.CancelFunc) {
	if _, ok := t.receivedAt(); ok {
		if d := r.deadline(p, t, time.Time{}); !d.IsZero() {
			return context.WithDeadline(ctx, d)
		}
	}
	return ctx, func() {}
}

// nextTryHost is nextHost for the next try, whose wait for a host ends with the try's
// time: then errTimeout.
func (p *Proxy) nextTryHost(ctx context.Context, t *h2Target, r *fastRetry, prev string) error {
	tctx, cancel := p.h2TryCtx(ctx, t, r)
	defer cancel()
	err := p.nextHost(tctx, t, prev)
	if err != nil && tctx.Err() != nil && ctx.Err() == nil {
		return errTimeout
	}
	return err
}

// tryConn is a try's HTTP/2 connection: a pooled one (unless fresh), else one dialled
// within the try's time (h2TryCtx). A wait for a host, or for another stream's dial, that
// the try's deadline ends is errTimeout, as on the HTTP/1 paths.
func (p *Proxy) tryConn(ctx context.Context, t *h2Target, r *fastRetry, fresh bool) (*http2.ClientConn, error) {
	if !fresh {
		if cc := p.h2up.Get(t.host.PoolKey()); cc != nil {
			return cc, nil
		}
	}
	tctx, cancel := p.h2TryCtx(ctx, t, r)
	defer cancel()
	var cc *http2.ClientConn
	var err error
	if fresh {
		cc, err = p.h2Dial(tctx, t)
	} else {
		cc, err = p.h2Conn(tctx, t)
	}
	if err != nil && tctx.Err() != nil && ctx.Err() == nil {
		return nil, errTimeout
	}
	return cc, err
}

// retarget points out at the host of the next try.
func (p *Proxy) retarget(t *h2Target, out *http.Request) {
	out.URL.Host = t.host.Addr()
	if t.rt.AutoHostRewrite() {
		out.Host = t.host.Addr()
	}
}

// unreplayable counts a request that is not sent again, though the upstream did not
// process it or the retry policy would retry it, because its body outgrew bufferLimit
// and part of it went upstream already.
func (p *Proxy) unreplayable(t *h2Target) {
	p.cfg.Log.Debug("proxy: request not sent again: its body outgrew the retry buffer",
		zap.String("cluster", t.cl.Name()), zap.Int("limit", p.bufferLimit()))
	t.cl.CountRetryBufferOverflow()
}

// tryH2 is one try of roundTripH2. The try's deadline bounds its dial (tryConn); a
// per-try timeout bounds the wait for the response head, not the body: once the head is
// in, the body streams under the request's own context. With rp the try sends the body
// through a reader of its own (rp.try), which replays what earlier tries sent. cc, when
// not nil, is the connection to use; else fresh asks for a new connection rather than a
// pooled one. unproc reports a failure that says the upstream did not process the
// stream (unprocessed): roundTripH2 sends it again.
func (p *Proxy) tryH2(ctx context.Context, t *h2Target, out *http.Request, r *fastRetry, rp *h2Replay, cc *http2.ClientConn, fresh bool) (resp *http.Response, unproc bool, err error) {
	r.waited = false
	if cc == nil {
		if cc, err = p.tryConn(ctx, t, r, fresh); err != nil {
			r.waited = err == errTimeout // no upstream answered for this try
			return nil, false, err
		}
	}
	t.cc = cc
	req, timer := out, (*time.Timer)(nil)
	if pt := t.rt.Retry().PerTryTimeout(); pt > 0 {
		tctx, cancel := context.WithCancel(ctx) // cancelled with ctx when the request ends
		if r.attempt == 0 {
			timer = t.firstTryTimer(pt, cancel) // from when the request is in
		} else {
			timer = time.AfterFunc(time.Until(r.tryStart.Add(pt)), cancel)
		}
		req = out.WithContext(tctx)
	}
	if rp != nil {
		if req == out {
			req = out.WithContext(ctx)
		}
		req.Body = rp.try()
	}
	resp, err = cc.RoundTrip(req)
	unproc = err != nil && unprocessed(err)
	// Another failure of a pooled connection may have come from the upstream closing it
	// while it was taken (an idle close): with a retry policy a kept body is sent once
	// more on a new connection, as a bodiless request always is.
	kept := rp != nil && t.rt.Retry().NumRetries() > 0 && rp.retriable()
	if err != nil && !unproc && retryFresh(ctx, out, err, kept) && (timer == nil || timer.Stop()) {
		if cc, cerr := p.tryConn(ctx, t, r, true); cerr == nil {
			t.cc = cc
			if timer != nil {
				timer.Reset(time.Until(r.tryStart.Add(t.rt.Retry().PerTryTimeout())))
			}
			if kept {
				req.Body = rp.try()
			}
			resp, err = cc.RoundTrip(req)
			unproc = err != nil && unprocessed(err)
		}
	}
	if timer != nil && !t.stopTry(timer) && err != nil {
		return nil, false, errTimeout // the try outlived retry_timeout
	}
	if err != nil {
		return nil, unproc && ctx.Err() == nil, classifyUpstreamErr(t, err)
	}
	return resp, false, nil
}

// errTryEnded is what an earlier try's body reader returns once the next try started.
var errTryEnded = errors.New("proxy: request body moved to the next try")

// errReplayLost is what a try's body reader returns when bytes it has to send again
// were no longer kept.
var errReplayLost = errors.New("proxy: request body outgrew the replay buffer")

// h2Replay feeds one request body to the tries of roundTripH2. The bytes read from the
// downstream body are kept in a pooled buffer while the whole body so far fits
// bufferLimit (limit), so that a retry sends the body again from its start; each try reads
// through its own replayTry, which replays the kept bytes, then reads on from the
// downstream body. x/net's body writer of an earlier try may still be inside a Read when
// the next try starts: reads of the downstream body are serialised, and every byte read
// is kept (or handed to the current try) so none is lost or sent twice. Once the body
// outgrew the limit, bytes the current try took are dropped, no retry happens and the
// mirror copy is dropped. The buffer goes back to the pool when roundTripH2 returned and
// every try's body was closed.
type h2Replay struct {
	p       *Proxy
	src     io.Reader
	cluster string
	limit   int64 // bufferLimit

	mu      sync.Mutex
	cond    sync.Cond
	buf     *buffer.IoBuffer // kept bytes, from body offset base; nil until the first
	base    int64
	n       int64 // bytes read from src
	reading bool  // a Read of src is in progress
	err     error // src's final error; io.EOF at the end of the body
	over    bool  // nothing more is kept: no retry from here on
	big     bool  // the body outgrew limit
	cur     *replayTry
	refs    int        // roundTripH2 and each try whose body is not closed yet
	settled bool       // roundTripH2 returned: no further try starts
	freed   bool       // refs reached 0: a late read keeps nothing
	mirror  *mirrorJob // the copy for the mirror cluster, queued with the body at its end
}

func (p *Proxy) newH2Replay(src io.Reader, cluster string, mirror *mirrorJob) *h2Replay {
	rp := &h2Replay{p: p, src: src, cluster: cluster, limit: int64(p.bufferLimit()), refs: 1, mirror: mirror}
	rp.cond.L = &rp.mu
	return rp
}

// replayTry is one try's request body.
type replayTry struct {
	rp     *h2Replay
	off    int64 // body bytes this try has read
	closed bool
}

// try returns the body reader of the next try; readers of earlier tries stop.
func (rp *h2Replay) try() io.ReadCloser {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	t := &replayTry{rp: rp}
	rp.cur = t
	rp.refs++
	rp.cond.Broadcast()
	return t
}

// retriable reports whether a retry_policy retry can send the whole body again: it was
// all kept (it fits the limit and the exchange has not ended), and reading it has not
// failed (a downstream reset, a filter that stopped it).
func (rp *h2Replay) retriable() bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return !rp.over && (rp.err == nil || rp.err == io.EOF)
}

// outgrew reports whether the body outgrew the limit.
func (rp *h2Replay) outgrew() bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.big
}

// replayable reports whether a try of a request the upstream did not process can send
// the whole body again (as retriable; a bodiless request, rp nil, always can), and
// whether the body outgrew the limit.
func (rp *h2Replay) replayable() (ok, over bool) {
	if rp == nil {
		return true, false
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return !rp.over && (rp.err == nil || rp.err == io.EOF), rp.big
}

// settle is roundTripH2's end: no further try starts, so nothing more needs keeping
// beyond what the current try has not read yet (and a mirror copy still waits for the
// end of the body).
func (rp *h2Replay) settle() {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.settled = true
	if rp.mirror == nil && !rp.over {
		rp.over = true
		rp.dropRead()
	}
	rp.unref()
}

// dropRead drops the kept bytes the current try already read. rp.mu is held.
func (rp *h2Replay) dropRead() {
	if rp.buf == nil {
		return
	}
	off := int64(0)
	if rp.cur != nil {
		off = rp.cur.off
	}
	if k := off - rp.base; k > 0 {
		rp.buf.Drain(int(k))
		rp.base = off
	}
	if rp.buf.Len() == 0 {
		rp.buf.Release()
		rp.buf = nil
	}
}

// unref drops one reference; the last one gives the buffer back and closes the
// downstream body, as x/net closes the body it was given. rp.mu is held.
func (rp *h2Replay) unref() {
	rp.refs--
	if rp.refs > 0 {
		return
	}
	rp.freed = true
	if c, ok := rp.src.(io.Closer); ok {
		_ = c.Close()
	}
	if rp.buf != nil {
		rp.buf.Release()
		rp.buf = nil
	}
	if rp.mirror != nil {
		rp.p.mirrorMetric(rp.mirror.cluster, "dropped") // the body never completed
		rp.mirror = nil
	}
}

// keep records b, just read from src at offset rp.n-len(b), unless the body outgrew
// the limit: then the request stops being retriable, the mirror copy gives up, and only
// bytes the current try has not read yet stay. rp.mu is held.
func (rp *h2Replay) keep(b []byte, forCur bool) {
	if rp.freed {
		return
	}
	if !rp.big && rp.n > rp.limit {
		rp.big, rp.over = true, true
		if rp.mirror != nil {
			rp.p.mirrorMetric(rp.mirror.cluster, "dropped")
			rp.mirror = nil
		}
		rp.p.cfg.Log.Debug("proxy: request body outgrew the retry buffer, no retry",
			zap.String("cluster", rp.cluster), zap.Int64("limit", rp.limit))
	}
	if rp.over {
		rp.dropRead()
		if forCur {
			return // handed to the current try directly
		}
	}
	if len(b) == 0 {
		return
	}
	if rp.buf == nil {
		rp.buf = rp.p.cfg.Pool.NewBuffer(int(min(max(int64(len(b)), 4<<10), rp.limit)))
		if rp.over {
			rp.base = rp.n - int64(len(b))
		}
	}
	_, _ = rp.buf.Write(b)
}

// Read implements io.Reader.
func (t *replayTry) Read(p []byte) (int, error) {
	rp := t.rp
	rp.mu.Lock()
	defer rp.mu.Unlock()
	for {
		if t.closed || t != rp.cur {
			return 0, errTryEnded
		}
		if t.off < rp.base {
			// The body outgrew the limit while an earlier try still read it, after this
			// try was decided: bytes it must send are gone. The try fails (its stream
			// is reset) rather than send a truncated body.
			return 0, errReplayLost
		}
		if t.off < rp.n {
			// Bytes an earlier try (or this one's earlier reads) took from src.
			k := copy(p, rp.buf.Bytes()[t.off-rp.base:])
			t.off += int64(k)
			if rp.over {
				rp.dropRead()
			}
			return k, nil
		}
		if rp.err != nil {
			return 0, rp.err
		}
		if !rp.reading {
			break
		}
		rp.cond.Wait()
	}
	rp.reading = true
	rp.mu.Unlock()
	n, err := rp.src.Read(p)
	rp.mu.Lock()
	rp.reading = false
	rp.cond.Broadcast()
	rp.n += int64(n)
	if err != nil {
		rp.err = err
	}
	current := !t.closed && t == rp.cur
	rp.keep(p[:n], current)
	if err == io.EOF && rp.mirror != nil {
		var body []byte
		if rp.buf != nil {
			body = rp.buf.Bytes() // the whole body: nothing was dropped yet
		}
		rp.p.queueMirror(rp.mirror, body)
		rp.mirror = nil
		rp.over = rp.over || rp.settled // nothing needs the kept bytes any more
	}
	if !current {
		return 0, errTryEnded
	}
	t.off += int64(n)
	if rp.over {
		rp.dropRead()
	}
	return n, err
}

// Close implements io.Closer; x/net closes each try's body once its stream is done.
func (t *replayTry) Close() error {
	rp := t.rp
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if !t.closed {
		t.closed = true
		rp.cond.Broadcast()
		rp.unref()
	}
	return nil
}

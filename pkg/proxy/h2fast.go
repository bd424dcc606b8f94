package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
	h2stream "github.com/mosnlite/mosnlite/pkg/stream/http2"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// h2Conn is one downstream HTTP/2 connection's handler (h2stream.Handler).
type h2Conn struct {
	h      *H2
	ctx    context.Context
	c      *network.Conn
	ip     netip.Addr
	remote string
}

// ServeStream implements h2stream.Handler. It runs on the connection's goroutine: it only
// routes, then hands the stream to a goroutine of its own.
func (hc *h2Conn) ServeStream(st *h2stream.ServerStream) {
	p := hc.h.p
	// Overloaded: the full path answers 503 (serveH2Stream).
	if p.cfg.StreamFilters.Len() == 0 && !p.overloaded() && fastFields(st) {
		if tbl, ok := p.table(); ok {
			if rt, ok := tbl.Match(h2View{st}); ok && fastRoute(p, rt) {
				go hc.serveFast(st, rt)
				return
			}
		}
	}
	go hc.serveFull(st)
}

// fastRoute reports whether a request routed to rt can take the direct HTTP/1 path: it
// goes upstream over HTTP/1 and is not answered by the route itself.
func fastRoute(p *Proxy, rt *router.Route) bool {
	if _, ok := rt.DirectResponse(); ok {
		return false
	}
	if _, ok := rt.Redirect(); ok {
		return false
	}
	return p.upstreamProtocol(rt, stream.HTTP2) == stream.HTTP1
}

// fastFields reports whether st's fields map onto an HTTP/1 head one to one: at most one
// cookie field (split cookies are joined by the full path).
func fastFields(st *h2stream.ServerStream) bool {
	cookies := 0
	for i := range st.Header {
		if st.Header[i].Name == "cookie" {
			cookies++
		}
	}
	return cookies <= 1
}

// h2Expects100 reports whether st's request has "expect: 100-continue".
func h2Expects100(st *h2stream.ServerStream) bool {
	for i := range st.Header {
		if st.Header[i].Name == "expect" && strings.EqualFold(strings.TrimSpace(st.Header[i].Value), "100-continue") {
			return true
		}
	}
	return false
}

// h2View is the router's view of a decoded HTTP/2 request.
type h2View struct{ st *h2stream.ServerStream }

var _ router.Request = h2View{}

func (v h2View) Host() string   { return v.st.Authority }
func (v h2View) Path() string   { return v.st.Path }
func (v h2View) Method() string { return v.st.Method }

// Header implements router.Request; names in the stream are lower case.
func (v h2View) Header(name string) (string, bool) {
	for i := range v.st.Header {
		if f := &v.st.Header[i]; strings.EqualFold(f.Name, name) {
			return f.Value, true
		}
	}
	return "", false
}

// Variable implements router.Request, as for HTTP/1.
func (v h2View) Variable(name string) (string, bool) {
	return h2stream.Variable(name, v.st.Method, v.st.Authority, v.st.Path)
}

// h2Fast is the pooled state of one stream on the direct path.
type h2Fast struct {
	t      h2Target
	head   http1.RequestHead
	hdrs   http1.Headers
	edits  http1.Edits
	rhead  http1.ResponseHead
	rhdrs  http1.Headers
	redits http1.Edits
	cr     http1.ChunkedReader
	rid    [32]byte
	xff    []byte
	log    bool // the listener has access logs: info is filled
	info   accesslog.Info
	asked  bool // hasBody asked the stream
	body   bool // its answer
}

var h2Fasts = sync.Pool{New: func() any { return new(h2Fast) }}

// sent counts body bytes written downstream for the access log (DATA payload, as on the
// full path).
func (f *h2Fast) sent(n int) {
	if f.log {
		f.info.BytesSent += uint64(n)
	}
}

// serveFast forwards a request to an HTTP/1 upstream and streams the answer back, on the
// stream's own goroutine.
func (hc *h2Conn) serveFast(st *h2stream.ServerStream, rt *router.Route) {
	defer st.Done()
	p := hc.h.p
	f := h2Fasts.Get().(*h2Fast)
	defer h2Fasts.Put(f)
	t := &f.t
	*t = h2Target{rt: rt, timeout: rt.RequestTimeout(h2View{st}), start: time.Now()}
	f.asked = false
	f.log = p.cfg.AccessLog.Enabled()
	if f.log {
		hc.logStart(st, f)
	}
	err := p.pickTargetNow(t, h2View{st}, hc.ip)
	if err == cluster.ErrWouldWait {
		// The pick waits for a host: within the try's time when the request is in, as a
		// bodiless one is with its head.
		f.hasBody(st)
		err = p.pickTargetWait(hc.ctx, t)
	}
	if err == nil {
		if f.log {
			f.info.UpstreamCluster, f.info.RouteName = t.cl.Name(), rt.Name()
		}
		err = hc.forwardFast(st, f)
		t.release(err)
	}
	*t = h2Target{}
	var flag accesslog.Flag
	switch {
	case err == nil:
	case errors.Is(err, errDownstreamWrite) || st.WasReset():
		flag = accesslog.FlagDownstreamReset // the downstream stream is gone
	case errors.Is(err, errAbort):
		flag = accesslog.FlagUpstreamReset
		st.Reset(h2stream.ErrCodeInternal)
	default:
		le, ok := err.(*errLocal)
		if !ok {
			le = errReset
		}
		flag = h2Flag(le)
		h2Answer(st, le.status, le.body)
		if f.log {
			f.info.ResponseCode, f.info.BytesSent = le.status, uint64(len(le.body))
		}
	}
	if f.log {
		f.info.Flags |= flag
		f.info.Finished = time.Since(f.info.Start)
		p.cfg.AccessLog.Log(&f.info, hc.c.ID())
	}
}

// logStart begins a stream's access-log line (the direct path: no filters run).
func (hc *h2Conn) logStart(st *h2stream.ServerStream, f *h2Fast) {
	i := &f.info
	i.Reset()
	i.Start = f.t.start
	i.Protocol = string(stream.HTTP2)
	i.DownstreamLocal = addrPort(hc.c.LocalAddr())
	i.DownstreamRemote = addrPort(hc.c.RemoteAddr())
	i.RequestReceived = time.Since(i.Start)
	hc.h.p.cfg.AccessLog.CaptureRequest(i, h2View{st})
}

// forwardFast writes the HTTP/1 request head (and, for a bodiless request, queues a copy
// for the route's mirror cluster, as HTTP/1 requests do) and relays the response. A try
// that failed before anything went downstream can be repeated: once on a fresh
// connection when a reused one turns out closed, and as the route's retry policy allows
// (retry_on, num_retries, per_try_timeout, the cluster's max_retries breaker), on another
// host when the cluster has one. A request body is kept in a pooled replay buffer while
// it fits bufferLimit, and a retry sends it again; a larger body gets one try.
func (hc *h2Conn) forwardFast(st *h2stream.ServerStream, f *h2Fast) error {
	p := hc.h.p
	t := &f.t
	hb := p.cfg.Pool.NewBuffer(512)
	defer hb.Release()
	body := f.hasBody(st)
	if err := hc.fastHead(st, f, hb, body); err != nil {
		return &errLocal{stream.HTTPStatus(stream.CauseCodecError), "bad request"}
	}
	if !body {
		p.mirror(t.rt, hb.Bytes())
	}
	if body && h2Expects100(st) {
		// The client waits for a go-ahead before its body; the upstream is not asked.
		if err := st.WriteHeaders(100, false, nil); err != nil {
			return errDownstreamWrite
		}
	}
	rb := p.cfg.Pool.NewBuffer(readSize)
	defer rb.Release()
	r := t.retryState() // the retries the first pick made, if any
	var mj mirrorJob
	if body {
		// Only a body that is kept can be sent again; without retries it is not kept,
		// unless the request is mirrored: the copy is sent with the kept body.
		var hit bool
		mj.cluster, mj.timeout, hit = mirrorDraw(t.rt)
		r.once = t.rt.Retry().NumRetries() == 0 && !hit
		r.body = true
		defer r.freeBody()
		if hit {
			defer hc.mirrorKept(st, f, hb, &r, &mj) // before freeBody
		}
	}
	defer r.release(t)
	// A request that cannot be sent again (a body not kept, a POST) looks at an idle
	// connection before it takes it.
	idem := idempotent(st.Method)
	stale := r.once
	r.look = body || !idem
	for {
		rb.Reset()
		uc, reused, err := hc.tryFast(st, f, hb, rb, &r)
		if err == nil {
			t.reportTry(f.rhead.Status, nil)
			if r.retryStatus(p, t, f.rhead.Status) {
				uc.close()
				if err := hc.nextFast(t, &r, uc.addr); err != nil {
					return err
				}
				continue
			}
			hc.mirrorKept(st, f, hb, &r, &mj)
			r.freeBody() // no try follows
			return hc.relay(st, f, uc, rb, r.headLen)
		}
		if uc != nil {
			uc.close()
		}
		if st.WasReset() || errors.Is(err, errDownstreamWrite) {
			return errDownstreamWrite
		}
		le, _ := err.(*errLocal)
		switch {
		case le != errTimeout && le != errReset && le != errConnect:
			return err // overflow, no cluster, a response that is not HTTP/1
		case reused && !stale && idem && rb.Len() == 0 && le != errTimeout && !r.bodyOver:
			// The upstream closed the idle connection meanwhile: once more, fresh.
			stale, r.fresh = true, true
			if !st.OnReset(nil) {
				return errDownstreamWrite
			}
			continue
		}
		if !r.waited {
			t.reportTry(0, le)
		}
		if !r.retryStatus(p, t, 0) {
			return le
		}
		if err := hc.nextFast(t, &r, t.host.Addr()); err != nil {
			return err
		}
	}
}

// hasBody reports whether st's request has a body, asked once: an empty DATA frame that
// ends the stream can arrive between two asks, and a head framed for a body must be
// followed by one (if only its last chunk). A bodiless request is in at its head: its
// route timeout starts then.
func (f *h2Fast) hasBody(st *h2stream.ServerStream) bool {
	if f.asked {
		return f.body
	}
	f.asked, f.body = true, st.HasBody()
	if !f.body {
		f.t.recvd.Store(1)
	}
	if bodyDecided != nil {
		bodyDecided(st)
	}
	return f.body
}

// tryCtx is h2TryCtx on the stream's connection.
func (hc *h2Conn) tryCtx(t *h2Target, r *fastRetry) (context.Context, context.CancelFunc) {
	return hc.h.p.h2TryCtx(hc.ctx, t, r)
}

// nextFast is nextTryHost on the stream's connection.
func (hc *h2Conn) nextFast(t *h2Target, r *fastRetry, prev string) error {
	return hc.h.p.nextTryHost(hc.ctx, t, r, prev)
}

// idleH1 is h1Conn without its dial: an idle connection to the target's host, or nil.
func (p *Proxy) idleH1(t *h2Target, look bool) *upConn {
	for up := p.get(t.host, time.Now()); up != nil; up = p.get(t.host, time.Now()) {
		if !look || up.Probe() {
			return up
		}
		up.close()
	}
	return nil
}

// mirrorKept queues the mirror copy of a request with a body, drawn in forwardFast
// (mj.cluster set), once: the HTTP/1 head hb and the kept body, framed as hb says. A body
// that outgrew the kept buffer is not mirrored (counted as dropped); one that had not
// ended when the exchange did is not either.
func (hc *h2Conn) mirrorKept(st *h2stream.ServerStream, f *h2Fast, hb *buffer.IoBuffer, r *fastRetry, mj *mirrorJob) {
	if mj.cluster == "" {
		return
	}
	p := hc.h.p
	defer func() { mj.cluster = "" }()
	switch {
	case r.bodyOver:
		p.mirrorMetric(mj.cluster, "dropped")
		return
	case !r.bodyEOF:
		return
	}
	var kept []byte
	if r.bodyBuf != nil {
		kept = r.bodyBuf.Bytes()
	}
	out := p.cfg.Pool.NewBuffer(hb.Len() + len(kept) + 32)
	_, _ = out.Write(hb.Bytes())
	if st.ContentLength < 0 {
		http1.AppendChunk(out, kept)
		if err := http1.AppendLastChunk(out, f.trailerFields(st)); err != nil {
			out.Release()
			return
		}
	} else {
		_, _ = out.Write(kept)
	}
	j := *mj
	j.head = out
	p.enqueueMirror(j)
}

// fastRetry is a request's retry state (the direct path, and requests to HTTP/2
// upstreams).
type fastRetry struct {
	once     bool // no retry at all: the request body is not kept
	attempt  int
	slot     bool // a max_retries slot is held for the try in flight
	tryStart time.Time
	headLen  int // the response head's length in the read buffer

	// The direct path's connection: look probes an idle one before it is taken; fresh
	// dials, after a reused one turned out closed.
	look, fresh bool

	// The direct path's request body: the bytes read from the stream so far while they fit
	// bufferLimit, sent again by a retry.
	body     bool
	bodyBuf  *buffer.IoBuffer
	bodyEOF  bool // the stream's body ended: bodyBuf holds all of it
	bodyOver bool // the body outgrew bufferLimit: no retry

	// waited: the try's time ended before it had a connection (a wait for a host): not
	// the host's failure (reportTry), as a connect failure is counted by the dial.
	waited bool
}

// retryStatus decides whether to try again after a try ended with status (0: no
// response), taking a max_retries slot when it does. A retry the policy allows is not
// made for a body that outgrew bufferLimit (counted, unreplayable).
func (r *fastRetry) retryStatus(p *Proxy, t *h2Target, status int) bool {
	r.release(t)
	rt := t.rt
	pol := rt.Retry()
	if pol == nil || r.once {
		return false
	}
	now := time.Now()
	if at, ok := t.receivedAt(); ok {
		if d := t.timeout; d > 0 && now.Sub(at) >= d {
			return false // the route timeout runs from when the request was in
		}
	}
	if r.bodyOver {
		if r.wouldRetry(t, status) {
			p.unreplayable(t)
		}
		return false
	}
	if !pol.ShouldRetry(r.attempt, status, false, t.cl) {
		return false
	}
	r.slot = true
	r.attempt++
	r.tryStart = now
	t.cl.CountRetry()
	return true
}

// wouldRetry reports whether the route's retry policy allows another try after one that
// ended with status (0: no response), not asking the cluster's budget: a retry that
// something else (a body over the buffer) stands in the way of.
func (r *fastRetry) wouldRetry(t *h2Target, status int) bool {
	return !r.once && t.rt.Retry().ShouldRetry(r.attempt, status, false, nil)
}

// keepBody keeps b, just read from the request body, for a retry; once the body outgrows
// bufferLimit nothing is kept and the request is no longer retriable.
func (r *fastRetry) keepBody(p *Proxy, t *h2Target, b []byte) {
	if r.bodyOver || r.once {
		return
	}
	kept := 0
	if r.bodyBuf != nil {
		kept = r.bodyBuf.Len()
	}
	if limit := p.bufferLimit(); kept+len(b) > limit {
		r.bodyOver = true
		r.freeBody()
		p.cfg.Log.Debug("proxy: request body outgrew the retry buffer, no retry",
			zap.String("cluster", t.cl.Name()), zap.Int("limit", limit))
		return
	}
	if len(b) == 0 {
		return
	}
	if r.bodyBuf == nil {
		r.bodyBuf = p.cfg.Pool.NewBuffer(max(len(b), 4<<10))
	}
	_, _ = r.bodyBuf.Write(b)
}

func (r *fastRetry) freeBody() {
	if r.bodyBuf != nil {
		r.bodyBuf.Release()
		r.bodyBuf = nil
	}
}

func (r *fastRetry) release(t *h2Target) {
	if r.slot {
		r.slot = false
		t.cl.ReleaseRetry()
	}
}

// deadline is the try's upstream bound (the direct path). Once the request is in
// (t.receivedAt), it is the route timeout from then, tightened by the per-try timeout
// (the first try's also runs from then). While the body still arrives, the route timeout
// has not started: the upload's writes are bounded by the request body timeout from now
// (the upload's latest progress; zero: the clock), as the stream's reads are (the
// server's BodyTimeout), so an upstream that stops reading cannot hold the stream.
func (r *fastRetry) deadline(p *Proxy, t *h2Target, now time.Time) time.Time {
	at, ok := t.receivedAt()
	if !ok {
		return p.uploadBound(now)
	}
	var d time.Time
	if to := t.timeout; to > 0 {
		d = at.Add(to)
	}
	if pt := t.rt.Retry().PerTryTimeout(); pt > 0 {
		ts := r.tryStart
		if r.attempt == 0 {
			ts = at
		}
		if td := ts.Add(pt); d.IsZero() || td.Before(d) {
			d = td
		}
	}
	return d
}

// nextHost picks the host of the next try, another than prev when the cluster has one.
// When none is picked, t.host stays the last try's (the access log's).
func (p *Proxy) nextHost(ctx context.Context, t *h2Target, prev string) error {
	t.pickDone(lb.DoneInfo{Err: errRetried})
	last := t.host
	t.host, t.pickDone = nil, nil
	for i := 0; i < 3; i++ {
		t.lr.Attempt++
		h, done, err := t.cl.Pick(ctx, &t.lr)
		if err != nil {
			if t.host != nil {
				break
			}
			t.host, t.pickDone = last, func(lb.DoneInfo) {} // release's call
			return pickError(err)
		}
		if t.host != nil {
			t.pickDone(lb.DoneInfo{})
		}
		t.host, t.pickDone = h, done
		if h.Addr() != prev {
			break
		}
	}
	return nil
}

// tryFast sends the request head on an upstream connection and reads the response head
// into f.rhead (its length in r.headLen). On error the connection, when there is one, is
// returned for the caller to close.
func (hc *h2Conn) tryFast(st *h2stream.ServerStream, f *h2Fast, hb, rb *buffer.IoBuffer, r *fastRetry) (uc *upConn, reused bool, err error) {
	t := &f.t
	r.waited = false
	if !r.fresh {
		uc = hc.h.p.idleH1(t, r.look)
	}
	if uc == nil {
		// A wait for a host during the dial (the host picked refused, another is down)
		// ends with the try's time, as on the HTTP/1 paths.
		ctx, cancel := hc.tryCtx(t, r)
		uc, err = hc.h.p.h1Dial(ctx, t)
		if err != nil && ctx.Err() != nil && hc.ctx.Err() == nil {
			err, r.waited = errTimeout, true
		}
		cancel()
	}
	if err != nil {
		return nil, false, err
	}
	reused = uc.since != (time.Time{})
	if f.log {
		f.info.UpstreamHost, f.info.UpstreamLocal = uc.addr, addrPort(uc.raw.LocalAddr())
	}
	// A downstream reset unblocks the upstream read. The hook holds only the socket: f is
	// pooled and may serve another stream by the time a late hook runs.
	raw := uc.raw
	if !st.OnReset(func() { _ = raw.SetDeadline(time.Unix(1, 0)) }) {
		return uc, reused, errDownstreamWrite
	}
	if err := armFast(st, uc, r.deadline(hc.h.p, t, time.Time{})); err != nil {
		return uc, reused, err
	}
	_, err = uc.io().Write(hb.Bytes())
	if err == nil && r.body {
		err = hc.sendBody(st, f, uc, r)
	}
	if err == nil {
		runtime.Gosched() // as session.respond: the answer has often arrived by then
		r.headLen, err = hc.readHead(st, f, uc, rb)
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
			return uc, reused, errTimeout
		}
		if _, ok := err.(*errLocal); !ok && err != errDownstreamWrite {
			err = errReset
		}
		return uc, reused, err
	}
	if t.timeout <= 0 {
		// The body's reads are unbounded (readBody).
		if err := armFast(st, uc, time.Time{}); err != nil {
			return uc, reused, err
		}
	}
	return uc, reused, nil
}

// sendBody streams the request body to the upstream as it arrives: as is when its length
// is known, else chunked, with the request's trailers in the last chunk. The stream's
// flow-control window is given back as pieces are read, so the body is never held
// whole beyond the retry buffer: a retry first sends again what r kept, then reads on.
// Each piece read moves the upload's bound on (fastRetry.deadline), and the body's end
// starts the route timeout. A reset stream is errDownstreamWrite; a failed write is the
// upstream's.
func (hc *h2Conn) sendBody(st *h2stream.ServerStream, f *h2Fast, uc *upConn, r *fastRetry) error {
	p := hc.h.p
	pool := p.cfg.Pool
	w := uc.raw
	chunked := st.ContentLength < 0
	buf := pool.NewBuffer(bodyPiece + 32)
	defer buf.Release()
	if kept := r.bodyBuf; kept != nil && kept.Len() > 0 {
		var err error
		if chunked {
			buf.Reset()
			http1.AppendChunk(buf, kept.Bytes())
			_, err = w.Write(buf.Bytes())
		} else {
			_, err = w.Write(kept.Bytes())
		}
		if err != nil {
			return err
		}
	}
	if r.bodyEOF {
		if !chunked {
			return nil
		}
		buf.Reset()
		if err := http1.AppendLastChunk(buf, f.trailerFields(st)); err != nil {
			return errDownstreamWrite
		}
		_, err := w.Write(buf.Bytes())
		return err
	}
	for {
		buf.Reset()
		b := buf.Alloc(bodyPiece)
		n, err := st.Read(b)
		out := b[:n]
		r.keepBody(p, &f.t, out)
		r.bodyEOF = err == io.EOF
		now := time.Now()
		if r.bodyEOF && f.t.recvd.Load() == 0 {
			f.t.recvd.Store(int64(now.Sub(f.t.start)) + 1) // the request is in
		}
		if aerr := armFast(st, uc, r.deadline(p, &f.t, now)); aerr != nil {
			return aerr
		}
		if chunked {
			frame := pool.NewBuffer(n + 32)
			if n > 0 {
				http1.AppendChunk(frame, out)
			}
			if err == io.EOF {
				if terr := http1.AppendLastChunk(frame, f.trailerFields(st)); terr != nil {
					frame.Release()
					return errDownstreamWrite
				}
			}
			_, werr := w.Write(frame.Bytes())
			frame.Release()
			if werr != nil {
				return werr
			}
		} else if n > 0 {
			if _, werr := w.Write(out); werr != nil {
				return werr
			}
		}
		if f.log {
			f.info.BytesReceived += uint64(n)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return errDownstreamWrite
		}
	}
}

// bodyPiece is the most of a request body read from the stream at a time.
const bodyPiece = 16 << 10

// trailerFields views st's request trailers as HTTP/1 fields.
func (f *h2Fast) trailerFields(st *h2stream.ServerStream) http1.Headers {
	hs := f.hdrs[:0]
	for _, tf := range st.Trailer() {
		hs = append(hs, http1.Header{Name: sbytes(tf.Name), Value: sbytes(tf.Value)})
	}
	f.hdrs = hs
	return hs
}

// bodyDecided, set by tests only, runs once forwardFast has asked whether st has a body.
var bodyDecided func(st *h2stream.ServerStream)

// fastHead writes the HTTP/1 request head for st into hb, framed for a body when body.
func (hc *h2Conn) fastHead(st *h2stream.ServerStream, f *h2Fast, hb *buffer.IoBuffer, body bool) error {
	t := &f.t
	rt := t.rt
	hs := f.hdrs[:0]
	for i := range st.Header {
		fl := &st.Header[i]
		switch fl.Name {
		case "host", "te", "content-length":
			continue // Host is written from :authority; TE is hop-by-hop; no body here
		case "expect":
			continue // answered here (forwardFast), as on HTTP/1
		}
		hs = append(hs, http1.Header{Name: sbytes(fl.Name), Value: sbytes(fl.Value)})
	}
	f.hdrs = hs
	f.head = http1.RequestHead{
		Method:        sbytes(st.Method),
		Target:        sbytes(st.Path),
		Host:          sbytes(st.Authority),
		ProtoMinor:    1,
		Headers:       hs,
		ContentLength: -1,
		KeepAlive:     true,
	}
	e := &f.edits
	*e = http1.Edits{Remove: e.Remove[:0], Add: e.Add[:0], Framing: http1.FramingNone}
	switch {
	case !body:
	case st.ContentLength >= 0:
		e.Framing, e.ContentLength = http1.FramingLength, st.ContentLength
	default:
		e.Framing = http1.FramingChunked
	}
	// Target and Host always go through the edits, which validate them: a :path or
	// :authority must not carry bytes that would split the HTTP/1 head.
	e.Target = sbytes(rt.RewritePath(st.Path))
	e.Host = sbytes(st.Authority)
	if hr := rt.HostRewrite(); hr != "" {
		e.Host = sbytes(hr)
	} else if rt.AutoHostRewrite() {
		e.Host = sbytes(t.host.Addr())
	}
	if hc.ip.IsValid() {
		f.xff = hc.ip.AppendTo(f.xff[:0])
		e.XForwardedFor = f.xff
	}
	fillRequestID(&f.rid)
	e.RequestID = f.rid[:]
	rt.ApplyRequestHeaders(editMutator{e})
	err := http1.AppendRequestHead(hb, &f.head, e)
	clear(f.hdrs)
	return err
}

// readHead reads the upstream response head into f.rhead; interim answers other than
// 100 go to the client as they come (as interimHead says why); n is the head's length in
// rb.
func (hc *h2Conn) readHead(st *h2stream.ServerStream, f *h2Fast, uc *upConn, rb *buffer.IoBuffer) (int, error) {
	lim := hc.h.p.cfg.Limits
	rh := &f.rhead
	for {
		*rh = http1.ResponseHead{HeadRequest: st.Method == "HEAD", Headers: f.rhdrs[:0]}
		if rb.Len() > 0 {
			n, err := http1.ParseResponseHead(rb.Bytes(), lim, rh)
			if cap(rh.Headers) > cap(f.rhdrs) {
				f.rhdrs = rh.Headers[:0]
			}
			if err != nil {
				return 0, &errLocal{statusReset, "invalid upstream response"}
			}
			if n > 0 && rh.Status >= 100 && rh.Status < 200 && rh.Status != 101 {
				if rh.Status != 100 {
					if err := st.WriteHeaders(rh.Status, false, func(w h2stream.FieldWriter) {
						responseFields(w, rh, &http1.Edits{})
					}); err != nil {
						return 0, errDownstreamWrite
					}
				}
				rb.Drain(n)
				continue
			}
			if n > 0 {
				if rh.Status == 101 || rh.Upgrade {
					return 0, &errLocal{statusReset, "upstream switched protocols"}
				}
				return n, nil
			}
		}
		if _, err := rb.ReadOnce(uc.io()); err != nil {
			if err == io.EOF && rb.Len() > 0 {
				return 0, &errLocal{statusReset, "upstream closed before the response"}
			}
			return 0, err
		}
	}
}

// relay sends the response head and body downstream and returns the upstream connection
// to the pool when the exchange ended cleanly.
func (hc *h2Conn) relay(st *h2stream.ServerStream, f *h2Fast, uc *upConn, rb *buffer.IoBuffer, n int) (err error) {
	p := hc.h.p
	rh := &f.rhead
	re := &f.redits
	*re = http1.Edits{Add: re.Add[:0], Remove: re.Remove[:0]}
	f.t.rt.ApplyResponseHeaders(editMutator{re})
	fields := func(w h2stream.FieldWriter) { responseFields(w, rh, re) }
	if f.log {
		i := &f.info
		i.ResponseReceived, i.ResponseCode = time.Since(i.Start), rh.Status
		p.cfg.AccessLog.CaptureResponse(i, stream.HTTP1Headers{H: &rh.Headers})
	}
	status := rh.Status
	body := rh.Body
	remain := rh.ContentLength
	reuse := false
	defer func() {
		if reuse && st.OnReset(nil) {
			p.put(uc, time.Now())
			return
		}
		uc.close()
	}()
	rb.Drain(n)
	switch body {
	case http1.BodyNone:
		if err := st.WriteHeaders(status, true, fields); err != nil {
			return errDownstreamWrite
		}
		reuse = rh.KeepAlive && rb.Len() == 0
		return nil
	case http1.BodyLength:
		piece := rb.Bytes()
		if int64(len(piece)) > remain {
			piece = piece[:remain]
		}
		remain -= int64(len(piece))
		if err := st.WriteResponse(status, fields, piece, remain == 0); err != nil {
			return errDownstreamWrite
		}
		f.sent(len(piece))
		rb.Drain(len(piece))
		for remain > 0 {
			rb.Reset()
			if _, err := f.readBody(st, uc, rb); err != nil && rb.Len() == 0 {
				return errAbort
			}
			piece := rb.Bytes()
			if int64(len(piece)) > remain {
				piece = piece[:remain]
			}
			remain -= int64(len(piece))
			if err := st.WriteData(piece, remain == 0); err != nil {
				return errDownstreamWrite
			}
			f.sent(len(piece))
			rb.Drain(len(piece))
		}
		reuse = rh.KeepAlive && rb.Len() == 0
		return nil
	}
	if err := st.WriteHeaders(status, false, fields); err != nil {
		return errDownstreamWrite
	}
	if body == http1.BodyChunked {
		cr := &f.cr
		cr.Reset(p.cfg.Limits)
		for {
			data, used, done, cerr := cr.Next(rb.Bytes())
			if cerr != nil {
				return errAbort
			}
			if len(data) > 0 {
				if err := st.WriteData(data, false); err != nil {
					return errDownstreamWrite
				}
				f.sent(len(data))
			}
			rb.Drain(used)
			if done {
				break
			}
			if used == 0 && len(data) == 0 {
				if rb.Len() == 0 {
					rb.Reset()
				} else if rb.Available() < 4096 {
					rb.Compact()
				}
				if _, err := f.readBody(st, uc, rb); err != nil {
					return errAbort
				}
			}
		}
		if len(f.cr.Trailers) > 0 {
			err = st.WriteTrailers(func(w h2stream.FieldWriter) {
				for _, tf := range f.cr.Trailers {
					if !hopByHop(tf.Name) {
						w.FieldBytes(tf.Name, tf.Value)
					}
				}
			})
		} else {
			err = st.WriteData(nil, true)
		}
		if err != nil {
			return errDownstreamWrite
		}
		reuse = rh.KeepAlive && rb.Len() == 0
		return nil
	}
	// Read until the upstream closes.
	for {
		if rb.Len() > 0 {
			if err := st.WriteData(rb.Bytes(), false); err != nil {
				return errDownstreamWrite
			}
			f.sent(rb.Len())
			rb.Reset()
		}
		if _, err := f.readBody(st, uc, rb); err != nil {
			if rb.Len() > 0 {
				continue
			}
			if err != io.EOF {
				return errAbort
			}
			if err := st.WriteData(nil, true); err != nil {
				return errDownstreamWrite
			}
			return nil
		}
	}
}

// readBody reads more of the response body into rb. The route timeout bounds each read,
// as on the HTTP/1 path, so an upstream that stalls mid-body cannot hold the stream and
// its connection.
func (f *h2Fast) readBody(st *h2stream.ServerStream, uc *upConn, rb *buffer.IoBuffer) (int, error) {
	if d := f.t.timeout; d > 0 {
		if err := armFast(st, uc, time.Now().Add(d)); err != nil {
			return 0, err
		}
	}
	return rb.ReadOnce(uc.io())
}

// armFast bounds uc by d (upConn.deadline). A downstream reset unblocks the upstream
// socket through the hook tryFast registers, which sets a deadline in the past; arming
// anew after the hook ran would undo that and leave the exchange waiting on the
// upstream (until the route timeout, or for ever without one), so a reset seen once the
// socket was armed anew ends the exchange here.
func armFast(st *h2stream.ServerStream, uc *upConn, d time.Time) error {
	if uc.deadline(d) && st.WasReset() {
		return errDownstreamWrite
	}
	return nil
}

// responseFields writes an HTTP/1 response head's fields as HTTP/2 fields: hop-by-hop
// ones and those the Connection field names are dropped, the framing field is kept only
// for a length-delimited body (or a HEAD answer), and the route's edits apply.
func responseFields(w h2stream.FieldWriter, rh *http1.ResponseHead, re *http1.Edits) {
	for _, hf := range rh.Headers {
		if hopByHop(hf.Name) || rh.Headers.HasToken("Connection", bstr(hf.Name)) {
			continue
		}
		if http1.EqualFold(hf.Name, "content-length") && rh.Body != http1.BodyLength && !rh.HeadRequest {
			continue
		}
		if removedName(re.Remove, hf.Name) {
			continue
		}
		w.FieldBytes(hf.Name, hf.Value)
	}
	for _, af := range re.Add {
		w.FieldBytes(af.Name, af.Value)
	}
}

func removedName(names []string, name []byte) bool {
	for _, n := range names {
		if http1.EqualFold(name, n) {
			return true
		}
	}
	return false
}

// hopByHop reports the fields HTTP/2 does not carry (RFC 9113 §8.2.2).
func hopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		return http1.EqualFold(name, "te")
	case 7:
		return http1.EqualFold(name, "trailer") || http1.EqualFold(name, "upgrade")
	case 10:
		return http1.EqualFold(name, "connection") || http1.EqualFold(name, "keep-alive")
	case 16:
		return http1.EqualFold(name, "proxy-connection")
	case 17:
		return http1.EqualFold(name, "transfer-encoding")
	}
	return false
}

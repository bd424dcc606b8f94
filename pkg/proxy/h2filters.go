package proxy

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	h2stream "github.com/mosnlite/mosnlite/pkg/stream/http2"
)

// Stream filters and the access log on a downstream HTTP/2 stream. A stream gets an
// h2Stream only when the listener has stream filters or access logs; otherwise every
// hook is a nil-receiver no-op and the stream path is unchanged.
//
// Threading: the stream's goroutine runs the request-head phase, the response phase and
// the end; request body pieces are read by whoever reads the forwarded request body — the
// stream's goroutine for an HTTP/1 upstream, the HTTP/2 client's body writer goroutine for
// an HTTP/2 upstream, which may still be reading when the response arrives. Every filter
// call therefore holds the stream's own mutex (never shared with another stream), and a
// body read after the stream ended does not touch the filters.
//
// Access log values: protocol is Http2; bytes_received and bytes_sent count DATA payload
// (the header blocks are HPACK-compressed by x/net and not seen here); the upstream local
// address is known for HTTP/1 upstreams only (HTTP/2 upstream connections are pooled
// inside x/net's ClientConn).

// h2Stream is one downstream HTTP/2 stream's filter and access-log state. It implements
// filter.StreamHandler. It is allocated per stream (the body reader may outlive the
// stream); its reusable storage (filter slice, log line, timer) is pooled in h2Scratch.
type h2Stream struct {
	p  *Proxy
	r  *http.Request
	mu sync.Mutex

	sc        *h2Scratch // nil once the stream ended
	done      bool
	logging   bool
	route     *router.Route
	local     localAnswer
	stopped   bool // a filter stopped the request (local holds the answer)
	wroteHead bool // the response head went to the stream
	remote    netip.AddrPort
	reqH      h2Headers
	respH     h2Headers
	body      h2Body
	conn      *network.Conn // the downstream connection, when known (access log)
}

// h2Scratch is the pooled storage of a stream's state.
type h2Scratch struct {
	filters []filter.StreamFilter
	info    accesslog.Info
	timer   *time.Timer
	rng     rand.PCG
	seeded  bool
}

var h2Scratches = sync.Pool{New: func() any { return new(h2Scratch) }}

// h2ConnKey is the context key under which H2.ServeConn stores the downstream
// *network.Conn when the listener logs (local address, log shard).
type h2ConnKey struct{}

// h2Extras reports whether streams need an h2Stream.
func (p *Proxy) h2Extras() bool {
	return p.cfg.StreamFilters.Len() > 0 || p.cfg.AccessLog.Enabled()
}

// newH2Stream starts the state of stream r.
func (p *Proxy) newH2Stream(r *http.Request) *h2Stream {
	st := &h2Stream{p: p, r: r, sc: h2Scratches.Get().(*h2Scratch), logging: p.cfg.AccessLog.Enabled()}
	st.body.st = st
	st.remote, _ = netip.ParseAddrPort(r.RemoteAddr)
	st.remote = netip.AddrPortFrom(st.remote.Addr().Unmap(), st.remote.Port())
	if !st.logging {
		return st
	}
	st.conn, _ = r.Context().Value(h2ConnKey{}).(*network.Conn)
	i := &st.sc.info
	i.Reset()
	i.Start = time.Now()
	i.Protocol = string(stream.HTTP2)
	i.DownstreamRemote = st.remote
	if st.conn != nil {
		i.DownstreamLocal = addrPort(st.conn.LocalAddr())
	}
	if r.Body == nil || r.Body == http.NoBody {
		i.RequestReceived = time.Since(i.Start)
	}
	p.cfg.AccessLog.CaptureRequest(i, h2stream.Request{R: r})
	return st
}

var _ filter.StreamHandler = (*h2Stream)(nil)

// Protocol implements filter.StreamHandler.
func (st *h2Stream) Protocol() stream.Protocol { return stream.HTTP2 }

// Route implements filter.StreamHandler.
func (st *h2Stream) Route() *router.Route { return st.route }

// Request implements filter.StreamHandler.
func (st *h2Stream) Request() router.Request { return h2stream.Request{R: st.r} }

// RemoteAddr implements filter.StreamHandler.
func (st *h2Stream) RemoteAddr() netip.AddrPort { return st.remote }

// Rand implements filter.StreamHandler.
func (st *h2Stream) Rand() uint64 {
	sc := st.sc
	if !sc.seeded {
		sc.rng = filter.NewRand()
		sc.seeded = true
	}
	return sc.rng.Uint64()
}

// SendLocalReply implements filter.StreamHandler.
func (st *h2Stream) SendLocalReply(status int, headers []filter.Header, body string) {
	st.local = localAnswer{set: true, status: status, headers: headers, body: body}
}

// Delay implements filter.StreamHandler: the calling goroutine (the stream's, or the
// body reader's) waits on the stream's reused timer; the wait ends early when the stream
// is reset or its connection closes.
func (st *h2Stream) Delay(d time.Duration) {
	if d <= 0 {
		return
	}
	sc := st.sc
	if sc.timer == nil {
		sc.timer = time.NewTimer(d)
	} else {
		sc.timer.Reset(d)
	}
	select {
	case <-sc.timer.C:
	case <-st.r.Context().Done():
		sc.timer.Stop()
	}
}

// SetResponseFlag implements filter.StreamHandler.
func (st *h2Stream) SetResponseFlag(f accesslog.Flag) { st.sc.info.Flags |= f }

// stop records a Stop and makes sure it carries an answer. Called with st.mu held.
func (st *h2Stream) stop() bool {
	if !st.local.set {
		st.SendLocalReply(http.StatusInternalServerError, nil, "stream filter stopped the request")
	}
	st.stopped = true
	return true
}

// requestHeaders runs the receive phase on the request head routed to rt (nil: no
// route); true: a filter stopped the request and answerLocal must answer it. Header
// edits change r.Header, which the forwarded request is built from.
func (st *h2Stream) requestHeaders(rt *router.Route) bool {
	if st == nil {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.route = rt
	chain := st.p.cfg.StreamFilters
	if chain.Len() == 0 {
		return false
	}
	sc := st.sc
	for _, f := range chain.Factories {
		sc.filters = append(sc.filters, f.NewStreamFilter(st))
	}
	if st.r.Header == nil {
		st.r.Header = make(http.Header)
	}
	st.reqH = h2Headers{h: st.r.Header}
	end := st.r.Body == nil || st.r.Body == http.NoBody
	for _, f := range sc.filters {
		if f.OnRequestHeaders(&st.reqH, end) == filter.Stop {
			return st.stop()
		}
	}
	return false
}

// requestBody returns the reader the forwarded request reads the body from: the stream's
// counting, filtering reader when needed, else rc itself.
func (st *h2Stream) requestBody(rc io.ReadCloser) io.ReadCloser {
	if st == nil {
		return rc
	}
	st.body.rc = rc
	return &st.body
}

// h2Body is the forwarded request body: it counts the bytes for the access log and runs
// the receive phase on each piece (and on the trailers at the end).
type h2Body struct {
	st *h2Stream
	rc io.ReadCloser
}

// Read implements io.Reader.
func (b *h2Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	st := b.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return n, err
	}
	if st.stopped {
		return 0, errStoppedByFilter
	}
	eof := err == io.EOF
	sc := st.sc
	if st.logging {
		sc.info.BytesReceived += uint64(n)
		if eof {
			sc.info.RequestReceived = time.Since(sc.info.Start)
		}
	}
	if len(sc.filters) == 0 || (n == 0 && !eof) {
		return n, err
	}
	for _, f := range sc.filters {
		if f.OnRequestData(p[:n], eof) == filter.Stop {
			st.stop()
			return 0, errStoppedByFilter
		}
	}
	if eof && hasValues(st.r.Trailer) {
		th := h2Headers{h: st.r.Trailer}
		for _, f := range sc.filters {
			if f.OnRequestTrailers(&th) == filter.Stop {
				st.stop()
				return 0, errStoppedByFilter
			}
		}
	}
	return n, err
}

// Close implements io.Closer.
func (b *h2Body) Close() error { return b.rc.Close() }

func hasValues(h http.Header) bool {
	for _, vs := range h {
		if len(vs) > 0 {
			return true
		}
	}
	return false
}

// hasLocal reports whether a filter stopped the request (after a forwarding error: the
// request body reader refused a piece).
func (st *h2Stream) hasLocal() bool {
	if st == nil {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.stopped
}

// noteTarget records the picked cluster and host.
func (st *h2Stream) noteTarget(t *h2Target) {
	if st == nil || !st.logging {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	i := &st.sc.info
	i.UpstreamHost = t.host.Addr()
	i.UpstreamCluster = t.cl.Name()
	if t.rt != nil {
		i.RouteName = t.rt.Name()
	}
}

// noteUpstreamLocal records the local address of an HTTP/2 upstream connection, when
// known.
func (st *h2Stream) noteUpstreamLocal(local netip.AddrPort) {
	if st == nil || !st.logging || !local.IsValid() {
		return
	}
	st.mu.Lock()
	st.sc.info.UpstreamLocal = local
	st.mu.Unlock()
}

// noteUpstreamConn records the upstream connection's local address (HTTP/1 upstreams).
func (st *h2Stream) noteUpstreamConn(up *upConn) {
	if st == nil || !st.logging {
		return
	}
	st.mu.Lock()
	st.sc.info.UpstreamLocal = addrPort(up.raw.LocalAddr())
	st.sc.info.UpstreamHost = up.addr // a connect retry may have moved to another host
	st.mu.Unlock()
}

// responseHeaders notes the upstream response head (after the route's header edits, in
// wh) and runs the send phase on it; true: a filter stopped the response, wh is cleared
// and answerLocal must answer instead.
func (st *h2Stream) responseHeaders(resp *http.Response, wh http.Header) bool {
	if st == nil {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	sc := st.sc
	st.respH = h2Headers{h: wh}
	if st.logging {
		sc.info.ResponseReceived = time.Since(sc.info.Start)
		sc.info.ResponseCode = resp.StatusCode
		st.p.cfg.AccessLog.CaptureResponse(&sc.info, &st.respH)
	}
	if len(sc.filters) == 0 {
		return false
	}
	end := resp.ContentLength == 0 || resp.Body == http.NoBody
	for _, f := range sc.filters {
		if f.OnResponseHeaders(resp.StatusCode, &st.respH, end) == filter.Stop {
			clear(wh)
			return st.stop()
		}
	}
	return false
}

// wroteResponseHead notes that the head is on its way downstream.
func (st *h2Stream) wroteResponseHead() {
	if st != nil {
		st.wroteHead = true
	}
}

// responseData runs the send phase on a response body piece; true: a filter stopped it.
func (st *h2Stream) responseData(p []byte, end bool) bool {
	if st == nil || len(st.sc.filters) == 0 {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, f := range st.sc.filters {
		if f.OnResponseData(p, end) == filter.Stop {
			return true
		}
	}
	return false
}

// responseTrailers runs the send phase on the upstream's trailers; true: stopped.
func (st *h2Stream) responseTrailers(t http.Header) bool {
	if st == nil || len(st.sc.filters) == 0 || !hasValues(t) {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	th := h2Headers{h: t}
	for _, f := range st.sc.filters {
		if f.OnResponseTrailers(&th) == filter.Stop {
			return true
		}
	}
	return false
}

// sent counts response body bytes written downstream.
func (st *h2Stream) sent(n int) {
	if st == nil || !st.logging {
		return
	}
	st.mu.Lock()
	st.sc.info.BytesSent += uint64(n)
	st.mu.Unlock()
}

// flag records a response flag.
func (st *h2Stream) flag(f accesslog.Flag) {
	if st == nil {
		return
	}
	st.mu.Lock()
	st.sc.info.Flags |= f
	st.mu.Unlock()
}

// answered records a proxy-made answer (status, body) for the log: the flag follows the
// message (flagFor) unless a filter set one.
func (st *h2Stream) answered(status int, body string, f accesslog.Flag) {
	if st == nil || !st.logging {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	i := &st.sc.info
	i.ResponseCode = status
	i.BytesSent += uint64(len(body))
	if i.Flags == 0 {
		i.Flags = f
	}
}

// answerLocal writes the answer a filter asked for.
func (st *h2Stream) answerLocal(w http.ResponseWriter) {
	st.mu.Lock()
	a := st.local
	st.mu.Unlock()
	if a.status < 100 || a.status > 599 {
		a.status = http.StatusInternalServerError
	}
	hd := w.Header()
	for _, h := range a.headers {
		if validHeader(h) {
			hd.Add(h.Name, h.Value)
		}
	}
	st.answered(a.status, a.body, accesslog.FlagLocalReply)
	h2Local(w, a.status, a.body)
}

// end writes the access log line and releases the filters; the stream's goroutine calls
// it once, when the handler returns. A stream that ended without a complete response
// because the downstream went away is flagged DC.
func (st *h2Stream) end() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return
	}
	st.done = true
	sc := st.sc
	st.sc = nil
	if st.logging {
		i := &sc.info
		if st.r.Context().Err() != nil && i.Flags&(accesslog.FlagDownstreamReset|accesslog.FlagUpstreamReset) == 0 {
			i.Flags |= accesslog.FlagDownstreamReset
		}
		i.Finished = time.Since(i.Start)
		var shard uint64
		if st.conn != nil {
			shard = st.conn.ID()
		} else {
			shard = uint64(st.remote.Port())
		}
		st.p.cfg.AccessLog.Log(i, shard)
		i.Reset()
	}
	for k, f := range sc.filters {
		f.OnDestroy()
		sc.filters[k] = nil
	}
	sc.filters = sc.filters[:0]
	st.route, st.local = nil, localAnswer{}
	st.reqH, st.respH = h2Headers{}, h2Headers{}
	h2Scratches.Put(sc)
}

// h2Flag maps the HTTP/2 driver's local answers to response flags.
func h2Flag(le *errLocal) accesslog.Flag {
	switch le {
	case errOverflow:
		return accesslog.FlagOverflow
	case errReset:
		return accesslog.FlagUpstreamReset
	}
	return flagFor(le.body)
}

// h2ConnContext adds the downstream connection to a connection's base context when the
// listener logs (the log line's local address and shard).
func (p *Proxy) h2ConnContext(ctx context.Context, c *network.Conn) context.Context {
	if !p.cfg.AccessLog.Enabled() {
		return ctx
	}
	return context.WithValue(ctx, h2ConnKey{}, c)
}

// h2Headers is the filters' stream.Headers over an http.Header (names are matched
// case-insensitively; writes canonicalize them, as net/http does).
type h2Headers struct{ h http.Header }

var _ stream.Headers = (*h2Headers)(nil)

// Get implements stream.Headers.
func (h *h2Headers) Get(name string) (string, bool) { return h2stream.HeaderGet(h.h, name) }

// Set implements stream.Headers.
func (h *h2Headers) Set(name, value string) { h.h.Set(name, value) }

// Add implements stream.Headers.
func (h *h2Headers) Add(name, value string) { h.h.Add(name, value) }

// Del implements stream.Headers.
func (h *h2Headers) Del(name string) { h.h.Del(name) }

// Range implements stream.Headers.
func (h *h2Headers) Range(fn func(name, value string) bool) {
	for k, vs := range h.h {
		for _, v := range vs {
			if !fn(k, v) {
				return
			}
		}
	}
}

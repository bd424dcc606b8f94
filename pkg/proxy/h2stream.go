package proxy

//lint:file-ignore SA1019 x/net/http2 is the HTTP/2 implementation by design (docs/l7-plan.md); its ServeConn and ClientConn API is deprecated in favour of net/http, which has no per-connection ServeConn.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	h2stream "github.com/mosnlite/mosnlite/pkg/stream/http2"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/connpool"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// newH2Pool builds the proxy's HTTP/2 upstream pool.
func newH2Pool(cfg Config) *h2stream.Pool {
	o := h2stream.PoolOptions{IdleTimeout: cfg.IdleTimeout}
	if cfg.Clusters != nil {
		// Connections to a host that left its cluster or went down are drained when the
		// hosts change, instead of idling until IdleTimeout.
		o.Stale, o.HostsChanged = cfg.Clusters.PoolKeyStale, cfg.Clusters.HostsChanged
	}
	return h2stream.NewPool(o)
}

// upstreamProtocol is the protocol a request routed to rt is forwarded with: the route's
// upstream_protocol, else the proxy's, else the downstream's.
func (p *Proxy) upstreamProtocol(rt *router.Route, down stream.Protocol) stream.Protocol {
	if u := rt.UpstreamProtocol(); u != "" {
		if strings.EqualFold(u, string(stream.HTTP2)) {
			return stream.HTTP2
		}
		if strings.EqualFold(u, string(stream.HTTP1)) {
			return stream.HTTP1
		}
	}
	if p.cfg.Upstream != "" && p.cfg.Upstream != stream.Auto {
		return p.cfg.Upstream
	}
	return down
}

// h2Target is where one request goes: the route, cluster and picked host.
type h2Target struct {
	rt       *router.Route
	timeout  time.Duration // the request's route timeout (router.Route.RequestTimeout)
	cl       *cluster.Cluster
	lr       lb.Request
	pickDone func(lb.DoneInfo)
	host     *cluster.Host
	start    time.Time
	timer    *time.Timer // the upload's stall bound, then the route timeout until the response head (startTimer)
	timedOut atomic.Bool
	headIn   atomic.Bool  // the response head arrived: the timer no longer times the request out
	recvd    atomic.Int64 // when the request was in full, as time since start plus 1; 0: its body is arriving
	up       h2Upload
	unpooled []*http2.ClientConn // connections made after the pool closed, closed by release
	cc       *http2.ClientConn   // the HTTP/2 upstream connection of the last try (access log)
	attempt  int                 // retries made by the first pick (pickWait), for the tries that follow
	tryStart time.Time           // when the last of them started
}

// retryState is the retry state the request's tries start from: the retries its first
// pick made (pickWait), if any.
func (t *h2Target) retryState() fastRetry {
	if t.attempt == 0 {
		return fastRetry{tryStart: t.start}
	}
	return fastRetry{attempt: t.attempt, tryStart: t.tryStart}
}

// h2Local is the local address of the HTTP/2 upstream connection t's last try used, for
// the access log; invalid when there is none (an HTTP/1 upstream, a closed connection).
func (p *Proxy) h2Local(t *h2Target) netip.AddrPort {
	if t.cc == nil {
		return netip.AddrPort{}
	}
	return addrPort(p.h2up.LocalAddr(t.cc))
}

// h2Upload is the timing of a request body still arriving while the request is being
// forwarded (startTimer). The route timeout starts only once the body's end has been
// read (received), as in MOSN and Envoy. Until then the target's timer bounds a stall of
// the upload instead: it is armed for the request body timeout plus a slack, and pushed
// back as pieces go through (progress), at most once per slack, so a body in many small
// pieces costs no timer work for most of them; a stall therefore times out between the
// body timeout and that plus the slack after the last piece. The per-try timer of the
// first try (tryH2) waits for the end too.
type h2Upload struct {
	mu       sync.Mutex
	active   bool          // the body is arriving
	stall    time.Duration // the request body timeout; <= 0: no stall bound (set before the body is read)
	slack    time.Duration
	pushed   time.Time     // when the stall bound was last pushed back
	route    time.Duration // the route timeout, armed at the body's end
	tryTimer *time.Timer   // the first try's per-try timer, armed at the body's end
	tryPT    time.Duration
}

// startTimer arms the target's timer, which times the request out (cancel) unless the
// response head arrived first (headDone). A bodiless request is in at its head: the timer
// is its route timeout. For one whose body is still to come (body), the timer is the
// upload's stall bound until the body's end (h2Upload).
func (t *h2Target) startTimer(p *Proxy, body bool, cancel context.CancelFunc) {
	d := t.timeout
	fire := func() {
		if !t.headIn.Load() { // a late push of a bound after the head is moot
			t.timedOut.Store(true)
			cancel()
		}
	}
	if !body {
		t.recvd.Store(1)
		if d > 0 {
			t.timer = time.AfterFunc(d, fire)
		}
		return
	}
	u := &t.up
	u.active, u.route, u.stall = true, d, p.requestBodyTimeout()
	switch {
	case u.stall > 0:
		u.slack = min(u.stall/16, maxDeadlineSlack)
		u.pushed = time.Now()
		t.timer = time.AfterFunc(u.stall+u.slack, fire)
	case d > 0:
		t.timer = time.AfterFunc(time.Hour, fire) // armed at the body's end
		t.timer.Stop()
	}
}

// progress notes a piece of the request body that went through: the stall bound moves
// on (at most once per slack).
func (t *h2Target) progress() {
	u := &t.up
	if u.stall <= 0 {
		return
	}
	now := time.Now()
	u.mu.Lock()
	if u.active && now.Sub(u.pushed) >= u.slack {
		u.pushed = now
		t.timer.Reset(u.stall + u.slack)
	}
	u.mu.Unlock()
}

// received notes that the request body's end has been read: the route timeout starts,
// and so does the first try's per-try timeout if it waits for it.
func (t *h2Target) received() {
	u := &t.up
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.active {
		return
	}
	u.active = false
	t.recvd.Store(int64(time.Since(t.start)) + 1)
	if t.timer != nil {
		if u.route > 0 {
			t.timer.Reset(u.route)
		} else {
			t.timer.Stop()
		}
	}
	if u.tryTimer != nil {
		u.tryTimer.Reset(u.tryPT)
		u.tryTimer = nil
	}
}

// receivedAt is when the request was in full; false while its body is arriving.
func (t *h2Target) receivedAt() (time.Time, bool) {
	n := t.recvd.Load()
	if n == 0 {
		return time.Time{}, false
	}
	return t.start.Add(time.Duration(n - 1)), true
}

// timesUp reports whether the request's route timeout ran out: its timer fired, or a
// failure came at or after the deadline before the timer's goroutine ran (an upstream
// told the same deadline, a gRPC server under max_grpc_timeout, resets as it passes).
func (t *h2Target) timesUp() bool {
	if t.timedOut.Load() {
		return true
	}
	at, ok := t.receivedAt()
	return ok && t.timeout > 0 && time.Since(at) >= t.timeout
}

// firstTryTimer is the per-try timer (pt, calling cancel) of a request's first try: from
// when the request was in, or, while its body is arriving, armed at the body's end
// (received). stopTry stops it.
func (t *h2Target) firstTryTimer(pt time.Duration, cancel func()) *time.Timer {
	u := &t.up
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.active {
		at, _ := t.receivedAt()
		return time.AfterFunc(time.Until(at.Add(pt)), cancel)
	}
	tm := time.AfterFunc(time.Hour, cancel)
	tm.Stop()
	u.tryTimer, u.tryPT = tm, pt
	return tm
}

// stopTry stops a try's per-try timer; false: it fired.
func (t *h2Target) stopTry(tm *time.Timer) bool {
	u := &t.up
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.tryTimer == tm { // never armed: the body had not ended
		u.tryTimer = nil
		return true
	}
	return tm.Stop()
}

// reportTry feeds the host's outlier detection (cluster.Host.ReportResult) with the outcome
// of a try: with a response, a failure when its status is 5xx; without one (err), a
// failure when the proxy timed the try out or the upstream reset it. A failed connect is
// counted by the dial, and a try refused or abandoned by the client is nobody's failure.
func (t *h2Target) reportTry(status int, err error) {
	if t.host == nil {
		return
	}
	switch {
	case err == nil:
		t.host.ReportResult(status < 500)
	case err == errTimeout || err == errReset:
		t.host.ReportResult(false)
	}
}

// errLocal is a request answered by the proxy: status and body.
type errLocal struct {
	status int
	body   string
}

func (e *errLocal) Error() string { return e.body }

var (
	errNoRoute   = &errLocal{statusNoRoute, "no route"}
	errNoHealthy = &errLocal{statusNoHealthy, "no healthy upstream"}
	errOverflow  = &errLocal{statusOverflow, "upstream overflow"}
	errConnect   = &errLocal{statusNoHealthy, "upstream connect failed"}
	errTimeout   = &errLocal{statusTimeout, "upstream timeout"}
	errReset     = &errLocal{statusReset, "upstream reset"}
)

// The statuses of local replies, by cause: the HTTP registrations' table in pkg/stream,
// which TestLocalReplyStatuses (pkg/filter/network/proxy) checks end to end.
var (
	statusNoRoute   = stream.HTTPStatus(stream.CauseNoRoute)
	statusNoHealthy = stream.HTTPStatus(stream.CauseNoHealthyUpstream)
	statusOverflow  = stream.HTTPStatus(stream.CauseOverflow)
	statusTimeout   = stream.HTTPStatus(stream.CauseTimeout)
	statusReset     = stream.HTTPStatus(stream.CauseUpstreamReset)
)

// pickTarget picks the cluster and host for a routed request and takes a max_requests
// unit; release undoes both (call it once with the outcome). A pick that waits for a host
// to come up does so within the first try's time once the request is in (pickWait).
func (p *Proxy) pickTarget(ctx context.Context, t *h2Target, view router.Request, ip netip.Addr) error {
	err := p.pickTargetNow(t, view, ip)
	if err == cluster.ErrWouldWait {
		err = p.pickTargetWait(ctx, t)
	}
	return err
}

// pickTargetNow is pickTarget without the wait for a host: where the pick would wait it
// returns cluster.ErrWouldWait, and keeps the cluster and its unit for pickTargetWait.
func (p *Proxy) pickTargetNow(t *h2Target, view router.Request, ip netip.Addr) error {
	rt := t.rt
	name := rt.ClusterFor(view, rand.Uint64())
	cl, ok := p.cfg.Clusters.Get(name)
	if !ok {
		return &errLocal{statusNoHealthy, "no cluster " + name}
	}
	if !cl.TryAcquire(cluster.MaxRequests) { // the breaker counted the overflow
		return errOverflow
	}
	t.cl = cl
	if k, ok := rt.HashKey(view, ip); ok {
		t.lr.HashKey, t.lr.HasHash = k, true
	}
	host, done, err := cl.PickNow(&t.lr)
	if errors.Is(err, cluster.ErrWouldWait) {
		return cluster.ErrWouldWait
	}
	return t.picked(host, done, err)
}

// pickTargetWait is the pick that pickTargetNow found would wait (pickWait).
func (p *Proxy) pickTargetWait(ctx context.Context, t *h2Target) error {
	host, done, err := p.pickWait(ctx, t)
	return t.picked(host, done, err)
}

// picked keeps the first pick's host, or gives back the cluster's max_requests unit.
func (t *h2Target) picked(host *cluster.Host, done func(lb.DoneInfo), err error) error {
	if err != nil {
		t.cl.Release(cluster.MaxRequests)
		t.cl = nil
		if err == errTimeout {
			return errTimeout
		}
		return pickError(err)
	}
	t.host, t.pickDone = host, done
	return nil
}

// pickWait waits for a host to come up (pick_timeout). Once the request is in, the try's
// deadline ends the wait too (h2TryCtx): the try is then retried as a timed-out one, as
// the route's retry policy allows (the retries carry on to the tries: t.attempt), and
// the last one fails with errTimeout. While a body arrives pick_timeout alone bounds it.
func (p *Proxy) pickWait(ctx context.Context, t *h2Target) (*cluster.Host, func(lb.DoneInfo), error) {
	r := fastRetry{tryStart: t.start}
	for {
		tctx, cancel := p.h2TryCtx(ctx, t, &r)
		h, done, err := t.cl.Pick(tctx, &t.lr)
		timedOut := err != nil && tctx.Err() != nil && ctx.Err() == nil
		cancel()
		r.release(t) // a retry's max_retries unit is held for its pick only
		if !timedOut {
			t.attempt, t.tryStart = r.attempt, r.tryStart
			return h, done, err
		}
		if !r.retryStatus(p, t, 0) {
			return nil, nil, errTimeout
		}
		t.lr.Attempt++
	}
}

func (t *h2Target) release(err error) {
	for _, cc := range t.unpooled {
		_ = cc.Close()
	}
	t.unpooled = nil
	if t.cl == nil {
		return
	}
	var lat time.Duration
	if err == nil {
		lat = time.Since(t.start)
	}
	t.pickDone(lb.DoneInfo{Err: err, Latency: lat})
	t.cl.Release(cluster.MaxRequests)
	t.cl = nil
}

// pickError is the local answer to a failed Pick: an overflow when max_pending_requests
// refused to let it wait, else no healthy upstream.
func pickError(err error) *errLocal {
	if errors.Is(err, cluster.ErrOverflow) {
		return errOverflow
	}
	return errNoHealthy
}

// dialError is the local answer to a failed dial: an overflow when the cluster's
// max_connections refused it (its breaker counted it), else a connect failure.
func dialError(err error) *errLocal {
	if errors.Is(err, cluster.ErrOverflow) {
		return errOverflow
	}
	return errConnect
}

// overflow counts a refusal that no cluster breaker counted (the HTTP/2 pool's connection
// limit per host); a breaker's TryAcquire and the cluster's Dial count their own.
func (p *Proxy) overflow(cl *cluster.Cluster, b cluster.Breaker) {
	cl.CountOverflow(b)
}

// h2Conn returns an HTTP/2 client connection to the target's host with a stream reserved:
// a pooled one, or a new one dialled through the cluster (one dial per host at a time;
// concurrent streams wait for it).
func (p *Proxy) h2Conn(ctx context.Context, t *h2Target) (*http2.ClientConn, error) {
	cc, pooled, err := p.h2up.Acquire(ctx, t.host.PoolKey(), func(ctx context.Context) (net.Conn, string, func(), error) {
		return p.h2DialRaw(ctx, t)
	})
	if err != nil {
		var le *errLocal
		switch {
		case errors.As(err, &le):
			return nil, err
		case errors.Is(err, connpool.ErrFull):
			p.overflow(t.cl, cluster.MaxConnections)
			return nil, errOverflow
		case errors.Is(err, h2stream.ErrHandshake):
			return nil, errConnect
		}
		return nil, errTimeout // ctx ended while another stream dialled
	}
	if !pooled {
		t.unpooled = append(t.unpooled, cc) // the proxy is closing: closed by release
	}
	return cc, nil
}

// h2DialRaw dials the target's cluster for a new HTTP/2 upstream connection; it returns
// the pool key of the host reached (cluster.Host.PoolKey).
func (p *Proxy) h2DialRaw(ctx context.Context, t *h2Target) (net.Conn, string, func(), error) {
	raw, host, done, err := t.cl.DialHost(ctx, &t.lr, t.host)
	if err != nil {
		return nil, "", nil, dialError(err)
	}
	t.host = host // DialHost may have moved on to another host
	return raw, host.PoolKey(), func() { done(lb.DoneInfo{}) }, nil
}

// h2Dial dials a new HTTP/2 upstream connection through the cluster, bypassing the pooled
// ones, and pools it.
func (p *Proxy) h2Dial(ctx context.Context, t *h2Target) (*http2.ClientConn, error) {
	raw, key, done, err := p.h2DialRaw(ctx, t)
	if err != nil {
		return nil, err
	}
	cc, pooled, err := p.h2up.Add(raw, key, done)
	if err != nil {
		return nil, errConnect
	}
	if !pooled {
		t.unpooled = append(t.unpooled, cc) // the proxy is closing: closed by release
	}
	return cc, nil
}

// serveH2Stream proxies one downstream HTTP/2 stream; it runs on the stream's goroutine.
// When the listener has stream filters or access logs, st carries them (h2filters.go);
// otherwise st is nil and its hooks do nothing.
func (p *Proxy) serveH2Stream(w http.ResponseWriter, r *http.Request) {
	var st *h2Stream
	if p.h2Extras() {
		st = p.newH2Stream(r)
		defer st.end()
	}
	view := h2stream.Request{R: r}
	var rt *router.Route
	tbl, ok := p.table()
	if ok {
		rt, ok = tbl.Match(view)
	}
	if st.requestHeaders(rt) {
		st.answerLocal(w)
		return
	}
	if !ok {
		st.answered(errNoRoute.status, errNoRoute.body, accesslog.FlagNoRoute)
		h2Reply(w, r, errNoRoute.status, errNoRoute.body, false)
		return
	}
	if dr, ok := rt.DirectResponse(); ok {
		st.answered(dr.Status, dr.Body, accesslog.FlagLocalReply)
		h2Local(w, dr.Status, dr.Body)
		return
	}
	if p.overloaded() {
		st.answered(http.StatusServiceUnavailable, msgOverloaded, accesslog.FlagLocalReply)
		h2Reply(w, r, http.StatusServiceUnavailable, msgOverloaded, false)
		return
	}
	t := h2Target{rt: rt, timeout: rt.RequestTimeout(view), start: time.Now()}
	// The route timeout bounds the wait for the response head (as for HTTP/1) from when
	// the request is in: a body still arriving is bounded by the body timeout instead,
	// on either side (h2Upload, and the server's BodyTimeout). A streaming response body
	// is not cut. A downstream reset cancels r.Context().
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	body := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 // as outRequest
	if rb, ok := r.Body.(*h2ReqBody); ok && body {
		rb.t = &t
	}
	t.startTimer(p, body, cancel)
	defer t.headDone()
	ap, _ := netip.ParseAddrPort(r.RemoteAddr)
	if err := p.pickTarget(ctx, &t, view, ap.Addr().Unmap()); err != nil {
		p.h2Fail(w, r, &t, err, st)
		return
	}
	st.noteTarget(&t)
	if body && strings.EqualFold(strings.TrimSpace(r.Header.Get("Expect")), "100-continue") {
		// The client waits for a go-ahead before its body: given here, as on HTTP/1
		// (outRequest drops the field).
		w.WriteHeader(http.StatusContinue)
	}
	var err error
	if p.upstreamProtocol(rt, stream.HTTP2) == stream.HTTP1 {
		err = p.h2ToH1(ctx, w, r, &t, ap.Addr().Unmap(), st)
	} else {
		err = p.h2ToH2(ctx, w, r, &t, ap.Addr().Unmap(), st)
	}
	t.release(err)
	if err != nil && st.hasLocal() {
		// A filter stopped the request body or the response head: its answer replaces
		// the upstream's, unless the response already started.
		if !st.wroteHead {
			st.answerLocal(w)
			return
		}
		err = errAbort
	}
	if errors.Is(err, errAbort) {
		st.flag(accesslog.FlagUpstreamReset)
		if errors.Is(err, errUpstreamCancel) {
			panic(errUpstreamCancel) // serveFull resets with CANCEL
		}
		// Reset the downstream stream: x/net answers this panic with RST_STREAM.
		panic(http.ErrAbortHandler)
	}
	if err != nil {
		p.h2Fail(w, r, &t, err, st)
	}
}

// headDone stops the route timeout once the response head arrived.
func (t *h2Target) headDone() {
	if t.timer != nil {
		t.headIn.Store(true)
		t.timer.Stop()
	}
}

// h2Fail answers a request that failed before its response started. A downstream that
// went away gets nothing.
func (p *Proxy) h2Fail(w http.ResponseWriter, r *http.Request, t *h2Target, err error, st *h2Stream) {
	if r.Context().Err() != nil {
		st.flag(accesslog.FlagDownstreamReset)
		return
	}
	var le *errLocal
	if !errors.As(err, &le) {
		le = errReset
	}
	if t.timesUp() {
		le = errTimeout
	}
	st.answered(le.status, le.body, h2Flag(le))
	h2Reply(w, r, le.status, le.body, le == errTimeout)
}

// errAbort marks a failure after the response head was sent: the downstream stream is
// reset (RST_STREAM) instead of answered.
var errAbort = errors.New("proxy: upstream failed after the response started")

// errUpstreamCancel is errAbort for an upstream that reset its stream with CANCEL (grpc-go
// does when a call's deadline passes): the downstream stream is reset with CANCEL too,
// which a gRPC client reads as CANCELLED or DEADLINE_EXCEEDED, not INTERNAL.
var errUpstreamCancel = fmt.Errorf("%w (upstream cancelled the stream)", errAbort)

// outRequest builds the upstream request for a downstream HTTP/2 request routed by t.
func (p *Proxy) outRequest(ctx context.Context, r *http.Request, t *h2Target, ip netip.Addr, st *h2Stream) *http.Request {
	rt := t.rt
	pathQ := rt.RewritePath(r.RequestURI)
	u := &url.URL{Scheme: "http", Host: t.host.Addr()}
	path, q, hasQ := strings.Cut(pathQ, "?")
	if strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "//") || path == "*" {
		u.Opaque, u.RawQuery, u.ForceQuery = path, q, hasQ && q == ""
	} else {
		u.Path = path
		u.RawQuery = q
	}
	out := &http.Request{
		Method:        r.Method,
		URL:           u,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        make(http.Header, len(r.Header)+3),
		Host:          r.Host,
		ContentLength: r.ContentLength,
		Trailer:       r.Trailer,
	}
	if hr := rt.HostRewrite(); hr != "" {
		out.Host = hr
	} else if rt.AutoHostRewrite() {
		out.Host = t.host.Addr()
	}
	if te := h2stream.CopyHeaders(out.Header, r.Header); te {
		out.Header["Te"] = teTrailers
	}
	delete(out.Header, "Expect") // answered by serveH2Stream
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		out.Body = st.requestBody(r.Body)
	} else {
		out.Body = http.NoBody
		out.ContentLength = 0
	}
	if ip.IsValid() {
		if prior, ok := out.Header["X-Forwarded-For"]; ok && len(prior) > 0 {
			out.Header["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + ip.String()}
		} else {
			out.Header["X-Forwarded-For"] = []string{ip.String()}
		}
	}
	if _, ok := out.Header["X-Request-Id"]; !ok {
		var rid [32]byte
		fillRequestID(&rid)
		out.Header["X-Request-Id"] = []string{string(rid[:])}
	}
	if rt.GRPCTimeouts() && t.timeout > 0 && router.IsGRPC(r.Header.Get("Content-Type")) {
		// The upstream learns the deadline the proxy keeps (Envoy does the same).
		out.Header["Grpc-Timeout"] = []string{router.FormatGRPCTimeout(t.timeout)}
	}
	rt.ApplyRequestHeaders(h2stream.Mutator{H: out.Header})
	return out.WithContext(ctx)
}

var teTrailers = []string{"trailers"}

// fillRequestID fills rid with 32 random hex digits.
func fillRequestID(rid *[32]byte) {
	for i := 0; i < 2; i++ {
		v := rand.Uint64()
		for j := 0; j < 16; j++ {
			rid[i*16+j] = hexDigits[v&15]
			v >>= 4
		}
	}
}

// h2ToH2 forwards a downstream HTTP/2 stream on a pooled upstream HTTP/2 connection.
// Request and response bodies stream through in bounded pieces, trailers pass both
// ways, a downstream reset cancels the upstream stream (ctx) and an upstream reset after
// the response head resets the downstream stream.
func (p *Proxy) h2ToH2(ctx context.Context, w http.ResponseWriter, r *http.Request, t *h2Target, ip netip.Addr, st *h2Stream) error {
	if fwd := interimToH2(w); fwd != nil {
		ctx = interimTrace(ctx, fwd)
	}
	out := p.outRequest(ctx, r, t, ip, st)
	resp, err := p.roundTripH2(ctx, t, out, nil)
	t.headDone()
	st.noteTarget(t) // a retry may have moved to another host
	st.noteUpstreamLocal(p.h2Local(t))
	if err != nil {
		if t.timesUp() {
			return errTimeout
		}
		return err
	}
	return p.writeH2Response(ctx, w, resp, t.rt, st)
}

// retryFresh reports whether a failed RoundTrip may be repeated on a new connection: the
// request has no body or its body is kept for a retry (kept), the caller is still
// waiting, and the upstream did not answer the stream itself (a stream reset other than
// REFUSED_STREAM is an answer).
func retryFresh(ctx context.Context, out *http.Request, err error, kept bool) bool {
	if ctx.Err() != nil || out.Body != http.NoBody && !kept {
		return false
	}
	var se http2.StreamError
	if errors.As(err, &se) {
		return se.Code == http2.ErrCodeRefusedStream
	}
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// interimToH2 returns what writes an upstream's interim answer to the client stream w
// serves, or nil when w is not the proxy's HTTP/2 writer.
func interimToH2(w http.ResponseWriter) func(code int, h textproto.MIMEHeader) error {
	hw, ok := w.(*h2Writer)
	if !ok {
		return nil
	}
	return func(code int, h textproto.MIMEHeader) error {
		return hw.st.WriteHeaders(code, false, func(fw h2stream.FieldWriter) {
			for k, vs := range h {
				if h2stream.HopByHop(k) {
					continue
				}
				lk := lowerName(k)
				for _, v := range vs {
					fw.Field(lk, v)
				}
			}
		})
	}
}

// interimTrace returns ctx with a trace that hands the interim (1xx) answers x/net's
// client reads from an HTTP/2 upstream to fwd, but 100 (the proxy answers Expect itself):
// a proxy forwards the 1xx answers it did not ask for (RFC 9110 §15.2). fwd runs on the
// upstream connection's reader, before the final answer is delivered; its error ends the
// request (the client is gone).
func interimTrace(ctx context.Context, fwd func(code int, h textproto.MIMEHeader) error) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			if code == http.StatusContinue {
				return nil
			}
			return fwd(code, h)
		},
	})
}

// unprocessed reports whether err, from x/net's ClientConn.RoundTrip, says the upstream
// did not process the stream: it refused it (REFUSED_STREAM, RFC 9113 §8.7), its stream
// id was above a graceful GOAWAY's last stream id, or the connection could not take it.
// x/net keeps the last two errors unexported (its canRetryError); they are matched by
// their text, which TestUnprocessedMatchesXNet pins.
func unprocessed(err error) bool {
	if err == nil {
		return false
	}
	var se http2.StreamError
	if errors.As(err, &se) {
		return se.Code == http2.ErrCodeRefusedStream
	}
	switch err.Error() {
	case xnetGotGoAway, xnetConnUnusable:
		return true
	}
	return false
}

// The texts of x/net's errClientConnGotGoAway and errClientConnUnusable.
const (
	xnetGotGoAway    = "http2: Transport received Server's graceful shutdown GOAWAY"
	xnetConnUnusable = "http2: client conn not usable"
)

// classifyUpstreamErr maps a failure before the response head to a local answer.
func classifyUpstreamErr(t *h2Target, err error) error {
	if t.timesUp() || errors.Is(err, os.ErrDeadlineExceeded) {
		return errTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errTimeout
	}
	return errReset
}

// writeH2Response copies an upstream response (HTTP/1 or HTTP/2) to a downstream HTTP/2
// stream, then its trailers. A body read failure resets the downstream stream.
func (p *Proxy) writeH2Response(ctx context.Context, w http.ResponseWriter, resp *http.Response, rt *router.Route, st *h2Stream) error {
	defer resp.Body.Close()
	wh := w.Header()
	h2stream.CopyHeaders(wh, resp.Header)
	delete(wh, "Content-Length")
	if resp.ContentLength >= 0 && resp.Header.Get("Content-Length") != "" {
		wh["Content-Length"] = resp.Header["Content-Length"]
	}
	rt.ApplyResponseHeaders(h2stream.Mutator{H: wh})
	if st.responseHeaders(resp, wh) {
		return errStoppedByFilter
	}
	st.wroteResponseHead()
	w.WriteHeader(resp.StatusCode)
	fl, _ := w.(http.Flusher)
	if resp.ContentLength < 0 && fl != nil {
		// A body of unknown length may be a stream (gRPC, server-sent events): send the
		// head now rather than with the first piece.
		fl.Flush()
	}
	if err := p.copyBody(w, fl, resp.Body, st); err != nil {
		if errors.Is(err, errDownstreamWrite) || ctx.Err() != nil {
			// The downstream stream is gone; the upstream stream is cancelled by ctx.
			st.flag(accesslog.FlagDownstreamReset)
			return nil
		}
		if se := (http2.StreamError{}); errors.As(err, &se) && se.Code == http2.ErrCodeCancel {
			return errUpstreamCancel
		}
		return errAbort
	}
	if st.responseTrailers(resp.Trailer) {
		return errAbort
	}
	for k, vs := range resp.Trailer {
		wh[http.TrailerPrefix+k] = vs
	}
	return nil
}

var errDownstreamWrite = errors.New("proxy: downstream write failed")

// bodyBufs holds the bounded copy buffers body pieces move through.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody streams src to w in pieces of at most 32 KiB, flushing each so streaming
// RPCs see messages as they come.
func (p *Proxy) copyBody(w io.Writer, fl http.Flusher, src io.Reader, st *h2Stream) error {
	bp := bodyBufs.Get().(*[]byte)
	defer bodyBufs.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if st != nil && (n > 0 || err == io.EOF) && st.responseData(buf[:n], err == io.EOF) {
			return errStoppedByFilter
		}
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return errDownstreamWrite
			}
			st.sent(n)
			if fl != nil {
				fl.Flush()
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// h2ToH1 forwards a downstream HTTP/2 stream to an HTTP/1 upstream on a connection from
// the ping-pong pool: request head and body are written (chunked when the length is not
// known, with the request trailers), then the response is read and streamed back.
func (p *Proxy) h2ToH1(ctx context.Context, w http.ResponseWriter, r *http.Request, t *h2Target, ip netip.Addr, st *h2Stream) error {
	out := p.outRequest(ctx, r, t, ip, st)
	uc, err := p.h1Conn(ctx, t, true) // no second try here: look at an idle one first
	if err != nil {
		return err
	}
	st.noteUpstreamConn(uc)
	// Deadlines carry the route timeout and a downstream reset to the blocking socket calls.
	stop := context.AfterFunc(ctx, func() { _ = uc.raw.SetDeadline(time.Unix(1, 0)) })
	uc.deadline(time.Time{})
	reuse := false
	defer func() {
		if stop() && reuse {
			uc.deadline(time.Time{})
			p.put(uc, time.Now())
			return
		}
		uc.close()
	}()
	out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	delete(out.Header, "Te") // hop-by-hop in HTTP/1; only HTTP/2 carries "TE: trailers" on
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = emptyValue // keep net/http from adding its own
	}
	if out.Body == http.NoBody {
		out.Body = nil
	}
	if out.ContentLength < 0 {
		out.ContentLength = -1
	}
	bw := bufWriters.Get().(*bufio.Writer)
	bw.Reset(uc.raw)
	if mc := p.mirrorCopy(t.rt, bw); mc != nil {
		if out.Body != nil {
			out.Body = mc.countBody(out.Body)
		}
		err = out.Write(mc)
		mc.finish(p, err == nil)
	} else {
		err = out.Write(bw)
	}
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	bufWriters.Put(bw)
	if err != nil {
		err = classifyUpstreamErr(t, err)
		if ctx.Err() == nil {
			t.reportTry(0, err)
		}
		return err
	}
	br := bufReaders.Get().(*bufio.Reader)
	br.Reset(uc.raw)
	defer func() { br.Reset(nil); bufReaders.Put(br) }()
	resp, err := http.ReadResponse(br, out)
	fwd := interimToH2(w)
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != 101 {
		if fwd != nil && resp.StatusCode != http.StatusContinue {
			// Forwarded as on the other paths (interimTrace); a client gone ends it.
			if err = fwd(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				break
			}
		}
		resp, err = http.ReadResponse(br, out)
	}
	t.headDone()
	if err != nil {
		err = classifyUpstreamErr(t, err)
		if ctx.Err() == nil {
			t.reportTry(0, err)
		}
		return err
	}
	t.reportTry(resp.StatusCode, nil)
	if err := p.writeH2Response(ctx, w, resp, t.rt, st); err != nil {
		return err
	}
	reuse = !resp.Close && br.Buffered() == 0 && ctx.Err() == nil
	return nil
}

var emptyValue = []string{""}

var (
	bufWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
	bufReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}
)

// h1Conn takes an idle HTTP/1 upstream connection to the target's host (the pool probes
// one idle for a while) or dials one. With look, an idle one is probed before it is taken
// (one the upstream closed is closed, and the next one looked at). The dial's waits for a
// host end with the try's time (h2TryCtx): then errTimeout.
func (p *Proxy) h1Conn(ctx context.Context, t *h2Target, look bool) (*upConn, error) {
	if up := p.idleH1(t, look); up != nil {
		return up, nil
	}
	r := t.retryState()
	dctx, cancel := p.h2TryCtx(ctx, t, &r)
	defer cancel()
	up, err := p.h1Dial(dctx, t)
	if err != nil && dctx.Err() != nil && ctx.Err() == nil {
		return nil, errTimeout
	}
	return up, err
}

// h1Dial dials a new HTTP/1 upstream connection to the target's host.
func (p *Proxy) h1Dial(ctx context.Context, t *h2Target) (*upConn, error) {
	raw, host, done, err := t.cl.DialHost(ctx, &t.lr, t.host)
	if err != nil {
		return nil, dialError(err)
	}
	return newUpConn(raw, host, done), nil
}

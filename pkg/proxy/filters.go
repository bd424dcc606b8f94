package proxy

import (
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"
	"unsafe"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
)

// filterState is a connection's stream-filter and access-log state for its current
// request. It implements filter.StreamHandler; everything runs on the connection's
// goroutine. Its slices and timer are kept across requests and connections (putSession).
type filterState struct {
	h1Chain
	s       *session
	timer   *time.Timer
	remote  netip.AddrPort
	info    accesslog.Info
	active  bool // a request began and has not been logged / destroyed yet
	logging bool // the listener has access logs
}

// h1Chain is one request's stream filters over HTTP/1 heads, shared by the goroutine
// path (filterState) and the event loop (loopFilters): the instances, the route they
// run for, the header views and the answer a filter asked for.
type h1Chain struct {
	filters []filter.StreamFilter
	route   *router.Route
	reqH    h1Headers
	respH   h1Headers
	local   localAnswer
	rng     rand.PCG
	seeded  bool
}

// begin makes the chain's instances for a request on route rt, with h their handler.
func (ch *h1Chain) begin(chain *filter.StreamChain, h filter.StreamHandler, rt *router.Route) {
	ch.route, ch.local = rt, localAnswer{}
	for _, f := range chain.Factories {
		ch.filters = append(ch.filters, f.NewStreamFilter(h))
	}
}

// requestHead runs the receive phase on a request head (hs, edited through e); true: a
// filter stopped the request (ch.local holds the answer).
func (ch *h1Chain) requestHead(hs *http1.Headers, e *http1.Edits, end bool) bool {
	ch.reqH = h1Headers{hs: hs, e: e}
	for _, f := range ch.filters {
		if f.OnRequestHeaders(&ch.reqH, end) == filter.Stop {
			return ch.stopped()
		}
	}
	return false
}

// responseHead runs the send phase on a response head; true: a filter stopped it.
func (ch *h1Chain) responseHead(status int, hs *http1.Headers, e *http1.Edits, end bool) bool {
	if len(ch.filters) == 0 {
		return false
	}
	ch.respH = h1Headers{hs: hs, e: e}
	for _, f := range ch.filters {
		if f.OnResponseHeaders(status, &ch.respH, end) == filter.Stop {
			return ch.stopped()
		}
	}
	return false
}

// setLocal records the answer a filter asked for (StreamHandler.SendLocalReply).
func (ch *h1Chain) setLocal(status int, headers []filter.Header, body string) {
	ch.local = localAnswer{set: true, status: status, headers: headers, body: body}
}

// stopped makes sure a Stop carries an answer.
func (ch *h1Chain) stopped() bool {
	if !ch.local.set {
		ch.setLocal(http.StatusInternalServerError, nil, "stream filter stopped the request")
	}
	return true
}

// end ends the request's filter instances (OnDestroy, once each) and forgets the request;
// the answer a filter asked for stays readable until the next begin.
func (ch *h1Chain) end() {
	for i, f := range ch.filters {
		f.OnDestroy()
		ch.filters[i] = nil
	}
	ch.filters = ch.filters[:0]
	ch.route = nil
	ch.reqH, ch.respH = h1Headers{}, h1Headers{}
}

// localAnswer is the reply a filter asked for.
type localAnswer struct {
	set     bool
	status  int
	headers []filter.Header
	body    string
}

// keep returns fs's reusable storage for the next connection.
func (fs *filterState) keep() filterState {
	clear(fs.filters[:cap(fs.filters)])
	fs.info.Reset()
	return filterState{h1Chain: h1Chain{filters: fs.filters[:0]}, timer: fs.timer, info: fs.info}
}

var _ filter.StreamHandler = (*filterState)(nil)

// Protocol implements filter.StreamHandler.
func (fs *filterState) Protocol() stream.Protocol { return stream.HTTP1 }

// Route implements filter.StreamHandler.
func (fs *filterState) Route() *router.Route { return fs.route }

// Request implements filter.StreamHandler.
func (fs *filterState) Request() router.Request { return stream.HTTP1Request{Head: &fs.s.head} }

// RemoteAddr implements filter.StreamHandler.
func (fs *filterState) RemoteAddr() netip.AddrPort {
	if !fs.remote.IsValid() {
		fs.remote = addrPort(fs.s.c.RemoteAddr())
	}
	return fs.remote
}

// Rand implements filter.StreamHandler (for filterState and loopFilters): the
// connection's own generator, seeded on first use.
func (ch *h1Chain) Rand() uint64 {
	if !ch.seeded {
		ch.rng = filter.NewRand()
		ch.seeded = true
	}
	return ch.rng.Uint64()
}

// SendLocalReply implements filter.StreamHandler (for filterState and loopFilters).
func (ch *h1Chain) SendLocalReply(status int, headers []filter.Header, body string) {
	ch.setLocal(status, headers, body)
}

// Delay implements filter.StreamHandler: the connection's goroutine waits (HTTP/1 is
// ping-pong, so it has nothing else to do for this connection); the wait ends early when
// the connection or the server shuts down. No goroutine is started; the timer is the
// connection's own, reused.
func (fs *filterState) Delay(d time.Duration) {
	if d <= 0 {
		return
	}
	if fs.timer == nil {
		fs.timer = time.NewTimer(d)
	} else {
		fs.timer.Reset(d)
	}
	// The route timeout and the upstream latency count from after the delay; the access
	// log keeps the arrival time (info.Start).
	defer func() { fs.s.start = time.Now() }()
	select {
	case <-fs.timer.C:
	case <-fs.s.c.Done():
		fs.timer.Stop()
	case <-fs.s.ctx.Done():
		fs.timer.Stop()
	}
}

// SetResponseFlag implements filter.StreamHandler.
func (fs *filterState) SetResponseFlag(f accesslog.Flag) { fs.info.Flags |= f }

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// requestFilters runs the receive phase on the request head with route rt (nil: no route
// matched). It reports whether a filter stopped the request (fs.local holds the answer).
// s.edits must be initialised: header changes become head edits.
func (s *session) requestFilters(rt *router.Route) (stopped bool) {
	fs := &s.fs
	fs.begin(s.p.cfg.StreamFilters, fs, rt)
	return fs.requestHead(&s.head.Headers, &s.edits, s.head.Body == http1.BodyNone)
}

// requestData runs the receive phase on a body piece; true: a filter stopped it.
func (s *session) requestData(p []byte, end bool) bool {
	for _, f := range s.fs.filters {
		if f.OnRequestData(p, end) == filter.Stop {
			return s.fs.stopped()
		}
	}
	return false
}

// responseFilters runs the send phase on the response head (s.rhead, edits s.redits).
func (s *session) responseFilters() (stopped bool) {
	return s.fs.responseHead(s.rhead.Status, &s.rhead.Headers, &s.redits, s.rhead.Body == http1.BodyNone)
}

// responseData runs the send phase on a response body piece; true: a filter stopped it.
func (s *session) responseData(p []byte, end bool) bool {
	for _, f := range s.fs.filters {
		if f.OnResponseData(p, end) == filter.Stop {
			return true
		}
	}
	return false
}

// destroyFilters ends the request's filter instances.
func (s *session) destroyFilters() { s.fs.end() }

// filterReply writes the answer a filter asked for and ends the request. A request whose
// body was not read (or is half forwarded) closes the connection.
func (s *session) filterReply(closeConn bool) error {
	closeConn = closeConn || !s.keepAlive
	ob := localAnswerBuffer(s.p.cfg.Pool, &s.fs.local, closeConn, s.isHead)
	s.fs.info.ResponseCode = s.fs.local.status
	s.fs.info.BytesSent += uint64(ob.Len())
	_ = s.c.Write(ob)
	s.endRequest()
	if closeConn {
		return errClose
	}
	return nil
}

// localAnswerBuffer encodes the answer a filter asked for (a status out of range becomes
// 500, and a's status with it); closeConn adds Connection: close; a HEAD request gets no
// body.
func localAnswerBuffer(pool *buffer.Pool, a *localAnswer, closeConn, isHead bool) *buffer.IoBuffer {
	if a.status < 100 || a.status > 599 {
		a.status = http.StatusInternalServerError
	}
	size := 128 + len(a.body)
	for _, h := range a.headers {
		size += len(h.Name) + len(h.Value) + 4
	}
	ob := pool.NewBuffer(size)
	var num [20]byte
	_, _ = ob.WriteString("HTTP/1.1 ")
	_, _ = ob.Write(strconv.AppendInt(num[:0], int64(a.status), 10))
	_ = ob.WriteByte(' ')
	_, _ = ob.WriteString(http.StatusText(a.status))
	_, _ = ob.WriteString("\r\nContent-Type: text/plain\r\nContent-Length: ")
	_, _ = ob.Write(strconv.AppendInt(num[:0], int64(len(a.body)), 10))
	for _, h := range a.headers {
		if !validHeader(h) {
			continue
		}
		_, _ = ob.WriteString("\r\n")
		_, _ = ob.WriteString(h.Name)
		_, _ = ob.WriteString(": ")
		_, _ = ob.WriteString(h.Value)
	}
	if closeConn {
		_, _ = ob.WriteString("\r\nConnection: close")
	}
	_, _ = ob.WriteString("\r\n\r\n")
	if !isHead {
		_, _ = ob.WriteString(a.body)
	}
	return ob
}

func validHeader(h filter.Header) bool {
	if h.Name == "" {
		return false
	}
	for i := 0; i < len(h.Name); i++ {
		if c := h.Name[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	for i := 0; i < len(h.Value); i++ {
		if c := h.Value[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// stopInBody answers a request stopped by a filter while its body was being forwarded:
// the upstream exchange is abandoned and the connection closes after the answer.
func (s *session) stopInBody() error {
	s.finishUpstream(false, errStoppedByFilter)
	s.inBody = false
	_ = s.filterReply(true)
	return errClose
}

type filterError string

func (e filterError) Error() string { return string(e) }

const errStoppedByFilter = filterError("proxy: stream filter stopped the request")

// h1Headers is the filters' stream.Headers over an HTTP/1 head: reads see the parsed
// fields minus the removed ones, then the added ones; writes become head edits (Remove /
// Add of http1.Edits), so the parsed bytes are never modified. Added names and values
// alias the strings given (filter configs), so nothing is copied or allocated.
type h1Headers struct {
	hs *http1.Headers
	e  *http1.Edits
}

var _ stream.Headers = (*h1Headers)(nil)

func (h *h1Headers) removed(name string) bool {
	for _, r := range h.e.Remove {
		if len(r) == len(name) && http1.EqualFold(sbytes(r), name) {
			return true
		}
	}
	return false
}

// Get implements stream.Headers.
func (h *h1Headers) Get(name string) (string, bool) {
	if !h.removed(name) {
		if v, ok := h.hs.Get(name); ok {
			return bstr(v), true
		}
	}
	for _, f := range h.e.Add {
		if http1.EqualFold(f.Name, name) {
			return bstr(f.Value), true
		}
	}
	return "", false
}

// Set implements stream.Headers.
func (h *h1Headers) Set(name, value string) {
	h.Del(name)
	h.Add(name, value)
}

// Add implements stream.Headers.
func (h *h1Headers) Add(name, value string) {
	h.e.Add = append(h.e.Add, http1.Header{Name: sbytes(name), Value: sbytes(value)})
}

// Del implements stream.Headers.
func (h *h1Headers) Del(name string) {
	if !h.removed(name) && h.hs.Has(name) {
		h.e.Remove = append(h.e.Remove, name)
	}
	add := h.e.Add
	out := add[:0]
	for _, f := range add {
		if !http1.EqualFold(f.Name, name) {
			out = append(out, f)
		}
	}
	clear(add[len(out):])
	h.e.Add = out
}

// Range implements stream.Headers.
func (h *h1Headers) Range(fn func(name, value string) bool) {
	for _, f := range *h.hs {
		if h.removed(bstr(f.Name)) {
			continue
		}
		if !fn(bstr(f.Name), bstr(f.Value)) {
			return
		}
	}
	for _, f := range h.e.Add {
		if !fn(bstr(f.Name), bstr(f.Value)) {
			return
		}
	}
}

// sbytes views s as bytes without copying; the bytes must not be modified.
func sbytes(s string) []byte {
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// resetEdits starts the request head's edits; the stream filters add theirs first.
func (s *session) resetEdits() { freshEdits(&s.edits, s.xff) }

// freshEdits empties e for a new request head, keeping its slices' storage, with xff (the
// client's address) to append to X-Forwarded-For when there is one.
func freshEdits(e *http1.Edits, xff []byte) {
	*e = http1.Edits{XForwardedFor: xff, Add: e.Add[:0], Remove: e.Remove[:0]}
	if len(xff) == 0 {
		e.XForwardedFor = nil
	}
}

// filterRequest runs the receive phase on a parsed head of n bytes at the start of b;
// when a filter stopped the request it answers it and reports stop.
func (s *session) filterRequest(rt *router.Route, b *buffer.IoBuffer, n int, hasBody bool) (stop bool, err error) {
	if !s.requestFilters(rt) {
		return false, nil
	}
	b.Drain(n)
	return true, s.filterReply(hasBody)
}

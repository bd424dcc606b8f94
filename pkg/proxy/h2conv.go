package proxy

//lint:file-ignore SA1019 x/net/http2 is the HTTP/2 implementation by design (docs/l7-plan.md); its ServeConn and ClientConn API is deprecated in favour of net/http, which has no per-connection ServeConn.

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
	h2stream "github.com/mosnlite/mosnlite/pkg/stream/http2"
)

// h1h2 is an HTTP/1 request being forwarded to an HTTP/2 upstream while its body
// arrives: the body pieces go through a pipe that the HTTP/2 client's body writer reads
// (so at most one piece is held), RoundTrip runs on its own goroutine (only for requests
// with a body) and the session goroutine collects the response when the body is done.
//
// An upstream may answer before it has read the body, and may read no more of it until
// its answer is read. When the response head comes while the body is still arriving
// (state h2Uploading), the RoundTrip goroutine writes the answer to the client itself
// (h2Early) while the session goroutine goes on with the upload. Once the answer is
// written the stream is done: the rest of the body is read and dropped, so the
// connection's framing holds and it stays open for the next request (as after an
// answer that came after the body), unless the answer closes it. While both run, the
// session goroutine writes nothing to the client, and mu orders their use of the
// filters and access log state (s.fs).
type h1h2 struct {
	t      h2Target
	out    *http.Request
	pw     *io.PipeWriter
	res    chan h2result
	cancel context.CancelFunc
	failed bool // the pipe refused a body piece: drain the rest

	state    atomic.Int32 // h2Uploading, then h2Done or h2Early, whichever comes first
	answered atomic.Bool  // the early answer is written (or failed): h2Early is done with the client
	closing  atomic.Bool  // ... and the connection closes after it (set before answered)
	hooks    bool         // the request has filters or an access log line (s.fs.active)
	locked   bool         // the RoundTrip goroutine holds mu (early answer; its own field)
	mu       sync.Mutex
}

// The states of h1h2.state.
const (
	h2Uploading int32 = iota // the body is arriving and no response head came
	h2Done                   // the session goroutine takes the response (body done, or abort)
	h2Early                  // the RoundTrip goroutine writes the response (h2Early)
)

// claim makes the session goroutine the one that takes the response, unless the
// RoundTrip goroutine took it first (h2Early); it reports whether the session has it.
func (x *h1h2) claim() bool {
	return x.state.CompareAndSwap(h2Uploading, h2Done) || x.state.Load() == h2Done
}

// lockFS and unlockFS guard a session goroutine's use of s.fs while an early answer may
// be written beside it; nothing to do for a request without filters or access log.
func (x *h1h2) lockFS() {
	if x.hooks {
		x.mu.Lock()
	}
}

func (x *h1h2) unlockFS() {
	if x.hooks {
		x.mu.Unlock()
	}
}

// ioStart and ioEnd drop mu around a blocking read or write of the early answer, so the
// upload is not held behind it.
func (x *h1h2) ioStart() {
	if x.locked {
		x.mu.Unlock()
	}
}

func (x *h1h2) ioEnd() {
	if x.locked {
		x.mu.Lock()
	}
}

type h2result struct {
	resp *http.Response
	err  error
}

// h2Request forwards the HTTP/1 request whose head (n bytes at the start of b) was just
// parsed and routed to rt, to an HTTP/2 upstream. It drains the head from b.
func (s *session) h2Request(b *buffer.IoBuffer, n int, rt *router.Route, view router.Request, hasBody bool) error {
	p := s.p
	x := &h1h2{t: h2Target{rt: rt, timeout: rt.Timeout(), start: s.start}}
	t := &x.t
	ctx, cancel := context.WithCancel(s.ctx)
	x.cancel = cancel
	// The route timeout runs from when the request is in: at once for a bodiless one; for
	// one with a body, from its end (h2Body), the upload being bounded by the body
	// timeout meanwhile (h2Upload; the client's reads by bodyPartial).
	t.startTimer(p, hasBody, cancel)
	fail := func(err error) error {
		t.headDone()
		cancel()
		t.release(err)
		var le *errLocal
		if !errors.As(err, &le) {
			le = errReset
		}
		if t.timesUp() {
			le = errTimeout
		}
		return s.localDone(le.status, le.body, hasBody)
	}
	if s.minor >= 1 {
		ctx = interimTrace(ctx, s.forwardInterim)
	}
	out := s.h1OutRequest(ctx, rt)
	b.Drain(n)
	if err := p.pickTarget(ctx, t, view, s.rip); err != nil {
		return fail(err)
	}
	s.noteH2Upstream(t)
	out.URL.Host = t.host.Addr()
	if rt.AutoHostRewrite() {
		out.Host = t.host.Addr()
	}
	if !hasBody {
		s.watchWait(cancelCut(cancel))
		resp, err := p.roundTripH2(ctx, t, out, nil)
		t.headDone()
		s.noteH2Upstream(t) // a retry may have moved to another host
		if s.unwatch() {
			return s.h2ClientLeft(x, resp)
		}
		if err != nil {
			return fail(err)
		}
		return s.h2Respond(x, resp)
	}
	cc, err := p.h2Conn(ctx, t)
	if err != nil {
		return fail(err)
	}
	if s.head.Expect100 {
		if err := s.c.Write(continueBuffer(p.cfg.Pool)); err != nil {
			t.headDone()
			cancel()
			t.release(err)
			return err
		}
	}
	pr, pw := io.Pipe()
	out.Body, x.pw, x.out = pr, pw, out
	x.res = make(chan h2result, 1)
	x.hooks = s.fs.active
	go func() {
		// Its own goroutine: the body goes through the pipe from this one.
		resp, err := p.roundTripH2(ctx, t, out, cc)
		if err == nil && x.state.CompareAndSwap(h2Uploading, h2Early) {
			s.h2Early(x, resp)
			return
		}
		x.res <- h2result{resp, err}
	}()
	s.h2 = x
	s.inBody = true
	s.chunked = s.head.Body == http1.BodyChunked
	s.remain = s.head.ContentLength
	if s.chunked {
		s.cr.Reset(p.cfg.Limits)
	}
	return nil
}

// h1OutRequest builds the HTTP/2 upstream request from the parsed HTTP/1 head, copying
// every string (the head aliases the read buffer).
func (s *session) h1OutRequest(ctx context.Context, rt *router.Route) *http.Request {
	h := &s.head
	target := rt.RewritePath(string(h.Target))
	u := &url.URL{Scheme: "http"}
	path, q, hasQ := strings.Cut(target, "?")
	if strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "//") || path == "*" {
		u.Opaque, u.RawQuery, u.ForceQuery = path, q, hasQ && q == ""
	} else if pu, err := url.Parse(target); err == nil && pu.Host != "" {
		// absolute-form target: keep its path
		u.Opaque, u.RawQuery = pu.EscapedPath(), pu.RawQuery
		if u.Opaque == "" {
			u.Opaque = "/"
		}
	} else {
		u.Path, u.RawQuery = path, q
	}
	out := &http.Request{
		Method:     string(h.Method),
		URL:        u,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     make(http.Header, len(h.Headers)+2),
		Host:       string(h.Host),
		Body:       http.NoBody,
	}
	if h.Body == http1.BodyLength {
		out.ContentLength = h.ContentLength
	} else if h.Body == http1.BodyChunked {
		out.ContentLength = -1
	}
	if hr := rt.HostRewrite(); hr != "" {
		out.Host = hr
	}
	conn, _ := h.Headers.Get("Connection")
	for _, f := range h.Headers {
		k := textproto.CanonicalMIMEHeaderKey(string(f.Name))
		switch k {
		case "Host", "Content-Length", "Expect":
			continue
		case "Te":
			if http1.HasToken(f.Value, "trailers") {
				out.Header["Te"] = teTrailers
			}
			continue
		case "Trailer":
			for _, tk := range strings.Split(string(f.Value), ",") {
				if tk = strings.TrimSpace(tk); tk != "" {
					if out.Trailer == nil {
						out.Trailer = make(http.Header)
					}
					out.Trailer[textproto.CanonicalMIMEHeaderKey(tk)] = nil
				}
			}
			continue
		}
		if h2stream.HopByHop(k) || (len(conn) > 0 && http1.HasToken(conn, k)) {
			continue
		}
		out.Header[k] = append(out.Header[k], string(f.Value))
	}
	if len(s.xff) > 0 {
		if prior, ok := out.Header["X-Forwarded-For"]; ok && len(prior) > 0 {
			out.Header["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + string(s.xff)}
		} else {
			out.Header["X-Forwarded-For"] = []string{string(s.xff)}
		}
	}
	if _, ok := out.Header["X-Request-Id"]; !ok {
		s.requestID()
		out.Header["X-Request-Id"] = []string{string(s.rid[:])}
	}
	// Header edits stream filters recorded for this request.
	for _, name := range s.edits.Remove {
		out.Header.Del(name)
	}
	for _, f := range s.edits.Add {
		out.Header.Add(string(f.Name), string(f.Value))
	}
	rt.ApplyRequestHeaders(h2stream.Mutator{H: out.Header})
	return out.WithContext(ctx)
}

// h2Body feeds the request body bytes at the start of b to the HTTP/2 upstream; once
// the body is complete it waits for the response and writes it downstream.
func (s *session) h2Body(b *buffer.IoBuffer) error {
	x := s.h2
	done := false
	if s.chunked {
		k := 0
		for k < b.Len() {
			data, used, d, err := s.cr.Next(b.Bytes()[k:])
			if err != nil {
				s.p.protocolError(string(stream.HTTP1))
				early := s.h2Abort()
				s.inBody = false
				if !early { // an early answer was cut or written instead
					s.localReply(http1.StatusCode(err), err.Error(), true, false)
				}
				return errClose
			}
			x.lockFS()
			stop := len(s.fs.filters) > 0 && len(data) > 0 && s.requestData(data, d)
			x.unlockFS()
			if stop {
				return s.h2StopInBody()
			}
			if !s.h2Piece(data) {
				return s.clientLeft()
			}
			k += used
			if d {
				done = true
				break
			}
			if used == 0 {
				break
			}
		}
		x.lockFS()
		stop := s.requestBody(b.Bytes()[:k], true, done)
		x.unlockFS()
		if stop {
			return s.h2StopInBody()
		}
		b.Drain(k)
	} else {
		k := int(min(int64(b.Len()), s.remain))
		s.remain -= int64(k)
		done = s.remain == 0
		x.lockFS()
		stop := s.requestBody(b.Bytes()[:k], false, done)
		x.unlockFS()
		if stop {
			return s.h2StopInBody()
		}
		if !s.h2Piece(b.Bytes()[:k]) {
			return s.clientLeft()
		}
		b.Drain(k)
	}
	if !done {
		return nil
	}
	s.inBody = false
	x.t.received()
	if s.chunked && len(s.cr.Trailers) > 0 && x.out.Trailer != nil {
		for _, f := range s.cr.Trailers {
			k := textproto.CanonicalMIMEHeaderKey(string(f.Name))
			if _, declared := x.out.Trailer[k]; declared {
				x.out.Trailer[k] = append(x.out.Trailer[k], string(f.Value))
			}
		}
	}
	_ = x.pw.Close()
	if !x.claim() {
		// The answer came first and is being written (h2Early): once it is, the
		// connection goes on as that answer says. A reset cuts it; a FIN (a client
		// that half-closes after its body) must not cut an answer that has started.
		s.watchWait(uploadCut{cancel: x.cancel, down: s.c.Raw()})
		r := <-x.res
		s.h2 = nil
		if s.unwatch() {
			return s.clientLeft()
		}
		return r.err
	}
	s.watchWait(cancelCut(x.cancel))
	r := <-x.res
	s.h2 = nil
	x.t.headDone()
	s.noteH2Upstream(&x.t) // a retry may have moved to another host
	if s.unwatch() {
		return s.h2ClientLeft(x, r.resp)
	}
	if r.err != nil {
		x.cancel()
		err := classifyUpstreamErr(&x.t, r.err)
		x.t.release(err)
		le := err.(*errLocal)
		return s.localDone(le.status, le.body, false)
	}
	return s.h2Respond(x, r.resp)
}

// h2ClientLeft ends a request whose client left while it waited for the HTTP/2
// upstream's response head (clientWatch cancelled the stream).
func (s *session) h2ClientLeft(x *h1h2, resp *http.Response) error {
	if resp != nil {
		_ = resp.Body.Close()
	}
	x.cancel()
	x.t.release(errClientGone)
	return s.clientLeft()
}

// h2StopInBody answers a request stopped by a filter while its body was being forwarded
// to the HTTP/2 upstream: the upstream stream is cancelled and the connection closes
// after the answer.
func (s *session) h2StopInBody() error {
	early := s.h2Abort()
	s.inBody = false
	if !early { // an early answer was cut or written instead
		_ = s.filterReply(true)
	}
	return errClose
}

// noteH2Upstream records the picked cluster and host for the access log.
func (s *session) noteH2Upstream(t *h2Target) {
	if !s.fs.logging {
		return
	}
	i := &s.fs.info
	i.UpstreamHost = t.host.Addr()
	i.UpstreamCluster = t.cl.Name()
	if l := s.p.h2Local(t); l.IsValid() {
		i.UpstreamLocal = l
	}
	if t.rt != nil {
		i.RouteName = t.rt.Name()
	}
}

// h2ResponseHead notes the HTTP/2 upstream's response head for the access log (after the
// route's header edits, before the filters') and runs the send phase on it; true: a
// filter stopped the response (s.fs.local holds the answer).
func (s *session) h2ResponseHead(resp *http.Response) bool {
	fs := &s.fs
	if !fs.active {
		return false
	}
	hv := h2Headers{h: resp.Header}
	if fs.logging {
		i := &fs.info
		i.ResponseReceived = time.Since(i.Start)
		i.ResponseCode = resp.StatusCode
		s.p.cfg.AccessLog.CaptureResponse(i, &hv)
	}
	end := resp.ContentLength == 0 || resp.Body == http.NoBody
	for _, f := range fs.filters {
		if f.OnResponseHeaders(resp.StatusCode, &hv, end) == filter.Stop {
			return s.fs.stopped()
		}
	}
	return false
}

// h2ResponseTrailers runs the send phase on the upstream's trailers; true: stopped.
func (s *session) h2ResponseTrailers(t http.Header) bool {
	if len(s.fs.filters) == 0 || !hasValues(t) {
		return false
	}
	hv := h2Headers{h: t}
	for _, f := range s.fs.filters {
		if f.OnResponseTrailers(&hv) == filter.Stop {
			return true
		}
	}
	return false
}

// h2Piece writes one body piece into the pipe; after a refusal the rest is dropped. The
// write blocks while the upstream's flow control holds the body back, and the client is
// not read meanwhile: it is watched instead, and its reset cancels the stream. It
// reports false when the client left.
func (s *session) h2Piece(p []byte) bool {
	x := s.h2
	if len(p) == 0 || x.failed {
		return true
	}
	s.watchWait(uploadCut{cancel: x.cancel, down: s.c.Raw()})
	_, err := x.pw.Write(p)
	gone := s.unwatch()
	if err != nil {
		x.failed = true
		return !gone || network.Peer(s.c.Raw()) != network.PeerReset
	}
	x.t.progress() // the upstream took the piece: the upload's stall bound moves on
	return true
}

// uploadCut ends a body write blocked on an HTTP/2 upstream when the client reset its
// connection. A FIN is not taken as leaving here: it may follow a complete body (a
// half-close), and it waits behind the body bytes not read yet anyway.
type uploadCut struct {
	cancel context.CancelFunc
	down   net.Conn
}

func (c uploadCut) cutWait() {
	if network.Peer(c.down) == network.PeerReset {
		c.cancel()
	}
}

// h2Abort ends a forwarded request whose body will not complete (the downstream closed
// or sent a bad body): the upstream stream is cancelled and its goroutine waited for.
// It reports whether the response had come early (h2EarlyEnd ended it): then nothing
// more may be written to the client.
func (s *session) h2Abort() (early bool) {
	return s.h2AbortWith(errors.New("downstream closed"))
}

// h2AbortWith is h2Abort releasing the target with outcome err.
func (s *session) h2AbortWith(err error) (early bool) {
	x := s.h2
	if x == nil {
		return false
	}
	if !x.claim() {
		s.h2EarlyEnd(0)
		return true
	}
	s.h2 = nil
	x.t.headDone()
	_ = x.pw.CloseWithError(errBodyIncomplete)
	x.cancel()
	if r := <-x.res; r.resp != nil {
		_ = r.resp.Body.Close()
	}
	x.t.release(err)
	return false
}

// h2Stalled reports whether the upstream's stall bound cut the upload being forwarded
// (startTimer): the pipe refused a piece once the target had timed out, so the rest of
// the body is dropped and the answer is 504 whatever the client does next.
func (s *session) h2Stalled() bool {
	x := s.h2
	return x != nil && x.failed && x.t.timesUp()
}

// errBodyIncomplete ends the upstream request body when the client's body will not come.
var errBodyIncomplete = errors.New("proxy: downstream request body incomplete")

// h2Early runs on the RoundTrip goroutine when the response head came while the request
// body is still arriving: it writes the answer to the client at once, while the session
// goroutine goes on reading the body (h1h2). An answer that closes the connection wakes
// the session goroutine if it waits for more of the body, so that the connection closes
// right after the answer (RFC 9112 §9.6; h2EarlyClose).
func (s *session) h2Early(x *h1h2, resp *http.Response) {
	x.t.headDone()
	if x.hooks {
		x.mu.Lock()
		x.locked = true
	}
	s.noteH2Upstream(&x.t)
	err := s.h2Respond(x, resp)
	if x.locked {
		x.locked = false
		x.mu.Unlock()
	}
	x.closing.Store(err != nil)
	x.answered.Store(true)
	if err != nil {
		_ = s.c.Raw().SetReadDeadline(time.Unix(1, 0))
	}
	x.res <- h2result{err: err}
}

// h2EarlyEnd ends, on the session goroutine, a request whose answer came early (h2Early):
// unless that answer is written, it is cut (the stream cancelled and the connection
// closed, which also ends a write blocked on the client); then the RoundTrip goroutine is
// waited for. With grace > 0 an answer still being written gets that long to finish
// first. It reports whether the answer was written in full (or ended as its own failure
// decided).
func (s *session) h2EarlyEnd(grace time.Duration) bool {
	x := s.h2
	s.h2, s.inBody = nil, false
	done := x.answered.Load()
	ended := false
	if !done && grace > 0 {
		tm := time.NewTimer(grace)
		select {
		case <-x.res:
			ended = true
		case <-tm.C:
		}
		tm.Stop()
		done = x.answered.Load()
	}
	if !done {
		_ = x.pw.CloseWithError(errBodyIncomplete)
		x.cancel()
		s.c.Close("error")
	}
	if !ended {
		<-x.res
	}
	return done
}

// h2EarlyClose closes the connection after an early answer, written in full, while the
// client may still be sending its body. The write side is shut at once (the client
// reads the answer, then EOF: RFC 9112 §9.6), and what arrives is read and dropped until
// the client closes, for up to network.LingerTime. Unlike CloseLinger, it does not stop
// once the answer is acknowledged: a reset under a client still uploading can make it
// report the failed upload instead of the answer (Go's HTTP/1 client does).
func (s *session) h2EarlyClose() {
	type closeWriter interface{ CloseWrite() error }
	raw := s.c.Raw()
	cw, ok := raw.(closeWriter)
	deadline := time.Now().Add(network.LingerTime)
	_ = raw.SetWriteDeadline(deadline)
	if !ok || s.c.Flush() != nil || cw.CloseWrite() != nil {
		s.c.Close("")
		return
	}
	_ = raw.SetReadDeadline(deadline)
	var buf [4096]byte
	for {
		if _, err := raw.Read(buf[:]); err != nil {
			break
		}
	}
	s.c.Close("")
}

// h2EarlyClosing reports whether an early answer (h2Early) that closes the connection
// has been written while the request body is still arriving: the rest of the body is
// then not read.
func (s *session) h2EarlyClosing() bool {
	return s.h2 != nil && s.h2.answered.Load() && s.h2.closing.Load()
}

// h2Respond writes an HTTP/2 upstream response to the HTTP/1 downstream: head, body in
// pooled pieces (chunked when the length is unknown and the client speaks HTTP/1.1, with
// the upstream's trailers), then releases the request. It runs on the RoundTrip goroutine
// for an early answer (h2Early), with x.mu held but around blocking reads and writes.
func (s *session) h2Respond(x *h1h2, resp *http.Response) error {
	defer x.cancel()
	defer resp.Body.Close()
	pool := s.p.cfg.Pool
	rt := x.t.rt
	rt.ApplyResponseHeaders(h2stream.Mutator{H: resp.Header})
	if s.h2ResponseHead(resp) {
		x.t.release(errStoppedByFilter)
		return s.filterReply(false)
	}
	noBody := s.isHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified
	_, hasLen := resp.Header["Content-Length"]
	chunked := !noBody && !hasLen && s.minor >= 1
	closeDown := !s.keepAlive || (!noBody && !hasLen && !chunked)

	hb := pool.NewBuffer(512)
	_, _ = hb.WriteString("HTTP/1.1 ")
	var num [20]byte
	_, _ = hb.Write(strconv.AppendInt(num[:0], int64(resp.StatusCode), 10))
	_ = hb.WriteByte(' ')
	_, _ = hb.WriteString(http.StatusText(resp.StatusCode))
	_, _ = hb.WriteString("\r\n")
	for k, vs := range resp.Header {
		if h2stream.HopByHop(k) || !validH1Field(k) {
			continue
		}
		for _, v := range vs {
			if !validH1Value(v) {
				continue
			}
			_, _ = hb.WriteString(k)
			_, _ = hb.WriteString(": ")
			_, _ = hb.WriteString(v)
			_, _ = hb.WriteString("\r\n")
		}
	}
	if chunked {
		_, _ = hb.WriteString("Transfer-Encoding: chunked\r\n")
	}
	switch {
	case closeDown:
		_, _ = hb.WriteString("Connection: close\r\n")
	case s.minor == 0:
		_, _ = hb.WriteString("Connection: keep-alive\r\n")
	}
	_, _ = hb.WriteString("\r\n")

	var err error
	first := true
	downFailed := false // a downstream write failed (not the upstream)
	for !noBody {
		rb := pool.NewBuffer(readSize)
		x.ioStart()
		_, rerr := rb.ReadOnce(resp.Body)
		x.ioEnd()
		if len(s.fs.filters) > 0 && (rb.Len() > 0 || rerr == io.EOF) && s.responseData(rb.Bytes(), rerr == io.EOF) {
			rb.Release()
			err = errStoppedByFilter
			break
		}
		if rb.Len() > 0 {
			var pre *buffer.IoBuffer
			if chunked {
				pre = pool.NewBuffer(24)
				if !first {
					http1.AppendChunkEnd(pre)
				}
				http1.AppendChunkHeader(pre, rb.Len())
				first = false
			}
			switch {
			case hb != nil && pre != nil:
				s.sent(hb, pre)
				s.sent(rb, nil)
				x.ioStart()
				err = s.c.Write(hb, pre, rb)
			case hb != nil:
				s.sent(hb, rb)
				x.ioStart()
				err = s.c.Write(hb, rb)
			case pre != nil:
				s.sent(pre, rb)
				x.ioStart()
				err = s.c.Write(pre, rb)
			default:
				s.sent(rb, nil)
				x.ioStart()
				err = s.c.Write(rb)
			}
			x.ioEnd()
			downFailed = err != nil
			hb = nil
		} else {
			rb.Release()
		}
		if err != nil {
			break
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	if err != nil {
		if hb != nil {
			hb.Release()
		}
		x.t.release(err)
		if hb != nil && err != errStoppedByFilter {
			// The upstream failed before the first body byte: nothing went downstream,
			// so the client gets a clear 502 rather than a connection closed unanswered.
			return s.localDone(errReset.status, errReset.body, false)
		}
		if downFailed {
			s.abandonRequest()
		} else {
			s.upstreamFailed()
		}
		s.c.Close("error")
		return errClose
	}
	if hb != nil {
		s.sent(hb, nil)
		x.ioStart()
		err = s.c.Write(hb)
		x.ioEnd()
	}
	if err == nil && s.h2ResponseTrailers(resp.Trailer) {
		x.t.release(errStoppedByFilter)
		s.upstreamFailed()
		s.c.Close("error")
		return errClose
	}
	if err == nil && chunked {
		end := pool.NewBuffer(64)
		if !first {
			http1.AppendChunkEnd(end)
		}
		var tr http1.Headers
		for k, vs := range resp.Trailer {
			if !validH1Field(k) {
				continue
			}
			for _, v := range vs {
				tr = append(tr, http1.Header{Name: []byte(k), Value: []byte(v)})
			}
		}
		if http1.AppendLastChunk(end, tr) != nil {
			_ = http1.AppendLastChunk(end, nil)
		}
		s.sent(end, nil)
		x.ioStart()
		err = s.c.Write(end)
		x.ioEnd()
	}
	x.t.release(err)
	if err != nil {
		s.abandonRequest()
	} else {
		s.endRequest()
	}
	if err != nil || closeDown {
		return errClose
	}
	return nil
}

// forwardInterim writes an HTTP/2 upstream's interim answer to the HTTP/1.1 client. It
// runs on x/net's reader while the session waits for the final answer, which it precedes.
func (s *session) forwardInterim(code int, h textproto.MIMEHeader) error {
	hb := s.p.cfg.Pool.NewBuffer(256)
	rh := http1.ResponseHead{Status: code, Reason: []byte(http.StatusText(code))}
	for k, vs := range h {
		if !validH1Field(k) {
			continue
		}
		for _, v := range vs {
			if validH1Value(v) {
				rh.Headers = append(rh.Headers, http1.Header{Name: []byte(k), Value: []byte(v)})
			}
		}
	}
	if err := http1.AppendResponseHead(hb, &rh, nil); err != nil {
		hb.Release()
		return nil // not forwardable: dropped
	}
	return s.c.Write(hb)
}

func validH1Field(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c == ':' || c >= 0x7f {
			return false
		}
	}
	return true
}

func validH1Value(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' || c == 0 {
			return false
		}
	}
	return true
}

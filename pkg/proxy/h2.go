package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
	h2stream "github.com/mosnlite/mosnlite/pkg/stream/http2"
)

// H2MaxConcurrentStreams is the SETTINGS_MAX_CONCURRENT_STREAMS the HTTP/2 server
// advertises to each downstream connection.
const H2MaxConcurrentStreams = 100

// H2 is the HTTP/2 downstream driver. pkg/stream/http2's server engine reads and decodes
// each connection's frames on the connection's goroutine and hands every request to
// ServeStream there. A request to an HTTP/1 upstream on a listener without stream filters
// takes the direct path of h2fast.go: its own goroutine writes the HTTP/1 head from the
// decoded fields, copies the body, and turns the HTTP/1 response into frames, with no
// net/http objects. Every other request runs the full path (h2stream.go) over a net/http
// view of the stream (h2Writer, h2ReqBody). It implements network.Handler; Close sends GOAWAY
// on every open connection (streams in flight finish) and closes the idle upstreams.
type H2 struct {
	p    *Proxy
	opts h2stream.ServerOptions

	mu      sync.Mutex
	conns   map[*h2stream.ServerConn]struct{}
	closing bool
	idle    chan struct{} // closed when closing and the last connection ended
}

// NewH2 returns the HTTP/2 driver for cfg (cfg.Downstream is ignored).
func NewH2(cfg Config) *H2 {
	cfg.Downstream = stream.HTTP2
	h := &H2{p: New(cfg), conns: make(map[*h2stream.ServerConn]struct{}), idle: make(chan struct{})}
	maxHdr := cfg.Limits.MaxHeaderBytes
	if maxHdr <= 0 {
		maxHdr = http1.DefaultMaxHeaderBytes
	}
	h.opts = h2stream.ServerOptions{
		MaxConcurrentStreams: H2MaxConcurrentStreams,
		MaxHeaderListSize:    uint32(maxHdr),
		StreamWindow:         h2StreamWindow,
		// Room for every stream's window: a connection window smaller than that lets
		// a few uploads an upstream holds back stall every other stream of the
		// connection (head-of-line blocking). Each stream is still bounded by its own.
		ConnWindow:      H2MaxConcurrentStreams * h2StreamWindow,
		BodyTimeout:     h.p.requestBodyTimeout(),
		OnProtocolError: h.countError,
	}
	return h
}

// h2StreamWindow is each downstream stream's receive window.
const h2StreamWindow = 256 << 10

// Proxy returns the underlying proxy (its pools and config).
func (h *H2) Proxy() *Proxy { return h.p }

// ServeConn implements network.Handler. c's first bytes are the client preface (prior
// knowledge h2c, ALPN h2, or handed back by the Auto sniffer).
func (h *H2) ServeConn(ctx context.Context, c *network.Conn) {
	hc := &h2Conn{h: h, ctx: h.p.h2ConnContext(ctx, c), c: c}
	hc.ip, hc.remote = addrPort(c.RemoteAddr()).Addr(), c.RemoteAddr().String()
	err := h2stream.Serve(c, h.p.cfg.Pool, h.opts, hc, h.track)
	switch {
	case errors.Is(err, h2stream.ErrBadPreface):
		h.p.cfg.Log.Info("proxy: invalid HTTP/2 client preface, closing connection",
			zap.Stringer("remote", c.RemoteAddr()))
	case err != nil:
		h.p.cfg.Log.Debug("proxy: http2 connection ended", zap.Error(err))
	}
	c.Close("")
}

// track records open connections, for Close's GOAWAY.
func (h *H2) track(sc *h2stream.ServerConn, open bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if open {
		h.conns[sc] = struct{}{}
		if h.closing {
			go sc.ShutdownAfterFirstStream()
		}
		return
	}
	delete(h.conns, sc)
	if h.closing && len(h.conns) == 0 {
		select {
		case <-h.idle:
		default:
			close(h.idle)
		}
	}
}

// GoAway starts a graceful shutdown of every open HTTP/2 connection, and of any that
// opens later: GOAWAY (a shutdown notice, then the final one), streams in flight finish,
// then the connection closes. A connection with no stream yet, and one that opens later
// (the listener may still accept during the drain delay), is shut down once its first
// stream opens, and that stream is served; a second GoAway (accepting stopped) shuts down
// every connection at once. It does not wait.
func (h *H2) GoAway() {
	h.p.GoAway()
	h.mu.Lock()
	force := h.closing
	h.closing = true
	conns := make([]*h2stream.ServerConn, 0, len(h.conns))
	for sc := range h.conns {
		conns = append(conns, sc)
	}
	if len(h.conns) == 0 {
		select {
		case <-h.idle:
		default:
			close(h.idle)
		}
	}
	h.mu.Unlock()
	for _, sc := range conns {
		if force {
			sc.Shutdown()
		} else {
			sc.ShutdownAfterFirstStream()
		}
	}
}

// Close is GoAway, then a wait of up to a second for the connections to end, then the
// idle upstream connections are closed.
func (h *H2) Close() error {
	h.GoAway()
	select {
	case <-h.idle:
	case <-time.After(time.Second):
	}
	return h.p.Close()
}

func (h *H2) countError(kind string) {
	h.p.protocolError(string(stream.HTTP2))
	h.p.cfg.Log.Debug("proxy: http2 protocol error", zap.String("error", kind))
}

// h2Answer answers a stream locally with a text/plain body.
func h2Answer(st *h2stream.ServerStream, status int, body string) {
	n := strconv.Itoa(len(body))
	if err := st.WriteHeaders(status, body == "", func(w h2stream.FieldWriter) {
		w.Field("content-type", "text/plain")
		w.Field("content-length", n)
	}); err == nil && body != "" {
		_ = st.WriteData([]byte(body), true)
	}
}

// h2Local answers a stream of the full path locally.
func h2Local(w http.ResponseWriter, status int, body string) {
	hd := w.Header()
	hd["Content-Type"] = textPlain
	hd["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

var textPlain = []string{"text/plain"}

// h2Reply answers r with a local reply. A gRPC request (content-type application/grpc...)
// gets a trailers-only gRPC answer, HTTP 200 with grpc-status and grpc-message, as Envoy
// gives: a gRPC client reads a bare HTTP error as UNKNOWN or INTERNAL without the
// proxy's reason. The status follows gRPC's HTTP-to-gRPC mapping, except that timeout
// (the route timeout ran out, or the client's own deadline under max_grpc_timeout)
// answers DEADLINE_EXCEEDED.
func h2Reply(w http.ResponseWriter, r *http.Request, status int, body string, timeout bool) {
	if !router.IsGRPC(r.Header.Get("Content-Type")) {
		h2Local(w, status, body)
		return
	}
	code := grpcStatus(status)
	if timeout {
		code = grpcDeadlineExceeded
	}
	hd := w.Header()
	hd["Content-Type"] = grpcContentType
	hd["Grpc-Status"] = []string{strconv.Itoa(code)}
	hd["Grpc-Message"] = []string{grpcMessage(body)}
	w.WriteHeader(http.StatusOK)
}

var grpcContentType = []string{"application/grpc"}

// gRPC status codes the proxy answers with.
const (
	grpcUnknown          = 2
	grpcDeadlineExceeded = 4
	grpcPermissionDenied = 7
	grpcUnimplemented    = 12
	grpcInternal         = 13
	grpcUnavailable      = 14
	grpcUnauthenticated  = 16
)

// grpcStatus maps an HTTP status to a gRPC code (gRPC's http-grpc-status-mapping).
func grpcStatus(status int) int {
	switch status {
	case http.StatusBadRequest:
		return grpcInternal
	case http.StatusUnauthorized:
		return grpcUnauthenticated
	case http.StatusForbidden:
		return grpcPermissionDenied
	case http.StatusNotFound:
		return grpcUnimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return grpcUnavailable
	}
	return grpcUnknown
}

// grpcMessage percent-encodes a grpc-message value: bytes outside printable ASCII, and
// '%', become %XX (gRPC over HTTP/2).
func grpcMessage(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			b = append(b, '%', hex[c>>4], hex[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

// serveFull runs a stream through the full path: the request as a net/http request whose
// body reads the stream, the response through an http.ResponseWriter on the stream.
func (hc *h2Conn) serveFull(st *h2stream.ServerStream) {
	defer st.Done()
	ctx, cancel := context.WithCancel(hc.ctx)
	defer cancel()
	if !st.OnReset(cancel) {
		return
	}
	r := hc.request(ctx, st)
	w := &h2Writer{st: st, hdr: make(http.Header)}
	aborted, cancelled := false, false
	func() {
		defer func() {
			if v := recover(); v != nil {
				if v == errUpstreamCancel {
					cancelled = true
				} else if v != http.ErrAbortHandler {
					hc.h.p.cfg.Log.Error("proxy: http2 stream handler panic", zap.Any("panic", v))
				}
				aborted = true
			}
		}()
		hc.h.p.serveH2Stream(w, r)
	}()
	if aborted {
		code := h2stream.ErrCodeInternal
		if cancelled {
			code = h2stream.ErrCodeCancel
		}
		st.Reset(code)
		return
	}
	w.finish()
}

// request builds the net/http view of st's request.
func (hc *h2Conn) request(ctx context.Context, st *h2stream.ServerStream) *http.Request {
	hdr := make(http.Header, len(st.Header))
	var cookies []string
	for _, f := range st.Header {
		if f.Name == "cookie" {
			cookies = append(cookies, f.Value)
			continue
		}
		k := http.CanonicalHeaderKey(f.Name)
		hdr[k] = append(hdr[k], f.Value)
	}
	if len(cookies) > 0 {
		// RFC 9113 §8.2.3: split cookie fields are joined for HTTP/1.
		hdr["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	u, err := url.ParseRequestURI(st.Path)
	if err != nil || st.Method == "CONNECT" {
		u = &url.URL{Path: st.Path, Host: st.Authority}
	}
	r := &http.Request{
		Method:     st.Method,
		URL:        u,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     hdr,
		Host:       st.Authority,
		RequestURI: st.Path,
		RemoteAddr: hc.remote,
		Body:       http.NoBody,
	}
	if st.HasBody() {
		r.ContentLength = st.ContentLength
		r.Trailer = declaredTrailers(hdr)
		r.Body = &h2ReqBody{st: st, r: r}
	}
	return r.WithContext(ctx)
}

// declaredTrailers returns the trailer map a request with a Trailer field announces
// (values filled at the end of the body); an empty map otherwise, so that undeclared
// trailers are still carried.
func declaredTrailers(h http.Header) http.Header {
	t := make(http.Header)
	for _, v := range h["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = http.CanonicalHeaderKey(strings.TrimSpace(k)); k != "" {
				t[k] = nil
			}
		}
	}
	return t
}

// h2ReqBody is the request body of the full path: it reads the stream and, at its end,
// fills the request's trailers. With t (set before the body is read) it times the upload
// of the request t forwards: each piece read is progress, and its end starts the route
// timeout (h2Upload).
type h2ReqBody struct {
	st *h2stream.ServerStream
	r  *http.Request
	t  *h2Target
}

func (b *h2ReqBody) Read(p []byte) (int, error) {
	n, err := b.st.Read(p)
	if err == io.EOF {
		for _, f := range b.st.Trailer() {
			k := http.CanonicalHeaderKey(f.Name)
			b.r.Trailer[k] = append(b.r.Trailer[k], f.Value)
		}
	}
	if b.t != nil {
		switch {
		case err == io.EOF:
			b.t.received()
		case n > 0:
			b.t.progress()
		}
	}
	return n, err
}

// Close stops the body: x/net closes it when it abandons the upstream request body (the
// response ended or the stream was aborted) and waits for a Read in progress to return.
func (b *h2ReqBody) Close() error {
	b.st.CloseRead()
	return nil
}

// h2Writer is the http.ResponseWriter of the full path. The head is sent with the first
// body piece (or at Flush, or at the end), so a short response leaves in one write.
type h2Writer struct {
	st      *h2stream.ServerStream
	hdr     http.Header
	status  int  // set by WriteHeader; 0: not yet
	sent    bool // the head went out
	failed  bool
	started bool // WriteHeader was called (or implied)
}

func (w *h2Writer) Header() http.Header { return w.hdr }

func (w *h2Writer) WriteHeader(code int) {
	if w.started {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// An interim response goes out at once; the final one follows.
		_ = w.st.WriteHeaders(code, false, w.fields(false))
		return
	}
	w.started, w.status = true, code
}

func (w *h2Writer) Write(p []byte) (int, error) {
	if w.failed {
		return 0, errDownstreamWrite
	}
	if !w.started {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sent {
		w.sendHead(false)
	}
	if err := w.st.WriteData(p, false); err != nil {
		w.failed = true
		return 0, err
	}
	return len(p), nil
}

func (w *h2Writer) Flush() {
	if !w.started {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sent {
		w.sendHead(false)
	}
}

func (w *h2Writer) sendHead(end bool) {
	w.sent = true
	if err := w.st.WriteHeaders(w.status, end, w.fields(false)); err != nil {
		w.failed = true
	}
}

// fields writes the header map (trailers with trailer), names lower-cased, the
// Trailer-prefixed and hop-by-hop ones left out.
func (w *h2Writer) fields(trailer bool) func(h2stream.FieldWriter) {
	return func(fw h2stream.FieldWriter) {
		for k, vs := range w.hdr {
			name, isTrailer := strings.CutPrefix(k, http.TrailerPrefix)
			if trailer != isTrailer || !trailer && (k == "Trailer" || h2stream.HopByHop(k)) {
				continue
			}
			lk := lowerName(name)
			for _, v := range vs {
				fw.Field(lk, v)
			}
		}
	}
}

// finish ends the response after the handler returned.
func (w *h2Writer) finish() {
	if w.failed {
		w.st.Reset(h2stream.ErrCodeInternal)
		return
	}
	if !w.started {
		w.WriteHeader(http.StatusOK)
	}
	hasTrailers := false
	for k := range w.hdr {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			hasTrailers = true
			break
		}
	}
	switch {
	case !w.sent && !hasTrailers:
		w.sendHead(true)
	case hasTrailers:
		if !w.sent {
			w.sendHead(false)
		}
		if w.st.WriteTrailers(w.fields(true)) != nil {
			w.st.Reset(h2stream.ErrCodeInternal)
		}
	default:
		if w.st.WriteData(nil, true) != nil {
			w.st.Reset(h2stream.ErrCodeInternal)
		}
	}
}

// lowerName lower-cases a canonical header name, without allocating for common ones.
func lowerName(k string) string {
	if v, ok := commonLower[k]; ok {
		return v
	}
	return strings.ToLower(k)
}

var commonLower = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Accept-Ranges", "Age",
		"Cache-Control", "Content-Encoding", "Content-Language", "Content-Length", "Content-Type",
		"Date", "Etag", "Expires", "Grpc-Encoding", "Grpc-Message", "Grpc-Status", "Grpc-Status-Details-Bin",
		"Last-Modified", "Location", "Server", "Set-Cookie", "Vary", "Via", "X-Request-Id", "X-Forwarded-For"} {
		m[k] = strings.ToLower(k)
	}
	return m
}()

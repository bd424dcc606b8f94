package e2e

//lint:file-ignore SA1019 x/net/http2's Server.ServeConn is the h2c upstream these tests run.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/mosnlite/mosnlite/pkg/network/tlstest"
	"github.com/mosnlite/mosnlite/test/framework"
)

// HTTP/1 clients through the proxy to an h2c upstream (route upstream_protocol Http2):
// the upstream is x/net's http2.Server serving each accepted connection (ServeConn, as
// h2c.NewHandler does after its hijack), so that the test can send GOAWAY on the open
// connections while new ones keep being served.

// h1h2Data is the byte source bodies are sliced from (fixed seed: failures repeat).
var h1h2Data = func() []byte {
	b := make([]byte, 9<<20)
	r := rand.NewChaCha8([32]byte{'h', '1', 'h', '2'})
	_, _ = r.Read(b)
	return b
}()

func h1h2Sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// h2Origin is the h2c upstream. Each accepted connection is served by the current
// generation's http2.Server; goAway sends GOAWAY (graceful shutdown) on every connection
// of the current generation and starts a new one.
type h2Origin struct {
	addr     string
	ln       net.Listener
	h        http.Handler
	accepted atomic.Int64

	mu    sync.Mutex
	gen   *originGen
	conns map[net.Conn]bool
	wg    sync.WaitGroup

	// Events the handler reports (buffered; the tests read what they wait for).
	events chan string
	// seen counts the requests with an X-Once header the handler read in full, by its value.
	seen sync.Map
	// written counts the bytes /slow wrote.
	written atomic.Int64
	// tls, when set, serves h2 over TLS (ALPN h2) instead of h2c.
	tls *tls.Config
}

type originGen struct {
	hs  *http.Server
	h2s *http2.Server
}

func newOriginGen() *originGen {
	g := &originGen{hs: &http.Server{}, h2s: &http2.Server{}}
	if err := http2.ConfigureServer(g.hs, g.h2s); err != nil {
		panic(err)
	}
	return g
}

func startH2Origin(t *testing.T) *h2Origin { return startH2OriginTLS(t, nil) }

func startH2OriginTLS(t *testing.T, tc *tls.Config) *h2Origin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &h2Origin{addr: ln.Addr().String(), ln: ln, gen: newOriginGen(), conns: map[net.Conn]bool{}, events: make(chan string, 256), tls: tc}
	o.h = http.HandlerFunc(o.serve)
	o.wg.Add(1)
	go o.accept()
	t.Cleanup(o.close)
	return o
}

func (o *h2Origin) accept() {
	defer o.wg.Done()
	for {
		c, err := o.ln.Accept()
		if err != nil {
			return
		}
		o.accepted.Add(1)
		o.mu.Lock()
		g := o.gen
		o.conns[c] = true
		o.wg.Add(1)
		o.mu.Unlock()
		go func() {
			defer o.wg.Done()
			if o.tls != nil {
				tc := tls.Server(c, o.tls)
				_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
				if tc.Handshake() != nil || tc.ConnectionState().NegotiatedProtocol != "h2" {
					_ = c.Close()
					return
				}
				_ = tc.SetDeadline(time.Time{})
				c = tc
			}
			g.h2s.ServeConn(c, &http2.ServeConnOpts{Handler: o.h, BaseConfig: g.hs})
			_ = c.Close()
			o.mu.Lock()
			delete(o.conns, c)
			o.mu.Unlock()
		}()
	}
}

// goAway gracefully shuts the current connections down (GOAWAY; streams in flight end).
func (o *h2Origin) goAway() {
	o.mu.Lock()
	g := o.gen
	o.gen = newOriginGen()
	o.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = g.hs.Shutdown(ctx)
}

// drop closes every open upstream connection.
func (o *h2Origin) drop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for c := range o.conns {
		_ = c.Close()
	}
}

func (o *h2Origin) close() {
	_ = o.ln.Close()
	o.drop()
	done := make(chan struct{})
	go func() { o.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		panic("h2Origin: connections still served 10 s after close")
	}
}

func (o *h2Origin) event(s string) {
	select {
	case o.events <- s:
	default:
	}
}

// waitEvent waits for an event starting with prefix, dropping others; "" on timeout.
func (o *h2Origin) waitEvent(prefix string, d time.Duration) string {
	tm := time.NewTimer(d)
	defer tm.Stop()
	for {
		select {
		case e := <-o.events:
			if strings.HasPrefix(e, prefix) {
				return e
			}
		case <-tm.C:
			return ""
		}
	}
}

func qInt(r *http.Request, k string) int {
	n, _ := strconv.Atoi(r.URL.Query().Get(k))
	return n
}

// serve: every path answers with h1h2Data[:size] (Content-Length when cl=1, else
// streamed) after reading the request body, whose hash and length go in X-Req-Sha and
// X-Req-Len, except as the path says.
func (o *h2Origin) serve(w http.ResponseWriter, r *http.Request) {
	size := qInt(r, "size")
	switch r.URL.Path {
	case "/early": // answers without reading the request body (nolen=1: no Content-Length)
		if qInt(r, "nolen") != 1 {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		_, _ = w.Write(h1h2Data[:size])
		return
	case "/wait": // holds the request until it is cancelled
		_, _ = io.Copy(io.Discard, r.Body)
		o.event("wait-start")
		select {
		case <-r.Context().Done():
			o.event("wait-cancelled")
		case <-time.After(20 * time.Second):
			o.event("wait-timeout")
		}
		return
	case "/stall": // reads nothing until the request is cancelled
		o.event("stall-start")
		select {
		case <-r.Context().Done():
			o.event("stall-cancelled")
		case <-time.After(20 * time.Second):
			o.event("stall-timeout")
		}
		return
	case "/upload": // reads the body, reporting how it ends
		var n int64
		buf := make([]byte, 32<<10)
		for {
			k, err := r.Body.Read(buf)
			if n < 256<<10 && n+int64(k) >= 256<<10 {
				o.event("upload-started")
			}
			n += int64(k)
			if err == io.EOF {
				o.event("upload-complete")
				return
			}
			if err != nil {
				o.event("upload-error " + err.Error())
				return
			}
		}
	case "/slow": // writes size bytes, counting them, until the stream fails
		w.Header().Set("Content-Length", strconv.Itoa(size))
		var err error
		for off := 0; off < size && err == nil; off += 16 << 10 {
			var k int
			k, err = w.Write(h1h2Data[off%(8<<20):][:min(16<<10, size-off)])
			o.written.Add(int64(k))
		}
		if err != nil {
			o.event("slow-error " + err.Error())
		} else {
			o.event("slow-done")
		}
		return
	}
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if id := r.Header.Get("X-Once"); id != "" {
		n, _ := o.seen.LoadOrStore(id, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}
	w.Header().Set("X-Req-Sha", hex.EncodeToString(h.Sum(nil)[:8]))
	w.Header().Set("X-Req-Len", strconv.FormatInt(n, 10))
	switch r.URL.Path {
	case "/204":
		w.WriteHeader(http.StatusNoContent)
		return
	case "/304":
		w.Header().Set("ETag", `"x"`)
		w.WriteHeader(http.StatusNotModified)
		return
	case "/1xx":
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
	case "/trailers":
		w.Header().Set("Trailer", "X-Sum")
		_, _ = w.Write(h1h2Data[:size])
		w.Header().Set("X-Sum", h1h2Sum(h1h2Data[:size]))
		return
	case "/reset": // a head and part of the body, then RST_STREAM
		if qInt(r, "before") == 1 {
			panic(http.ErrAbortHandler)
		}
		if qInt(r, "head") == 1 { // the head alone, then the reset
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			time.Sleep(20 * time.Millisecond)
			panic(http.ErrAbortHandler)
		}
		if qInt(r, "cl") == 1 {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		_, _ = w.Write(h1h2Data[:size/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	if qInt(r, "cl") == 1 {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = w.Write(h1h2Data[:size])
		return
	}
	// Unknown length: the head goes first, then pieces.
	w.(http.Flusher).Flush()
	for off := 0; off < size; off += 100 << 10 {
		if _, err := w.Write(h1h2Data[off:min(size, off+100<<10)]); err != nil {
			return
		}
	}
}

// h1h2Proxy starts a proxy (with an admin endpoint) whose HTTP/1 listener routes every
// request to the origin over HTTP/2.
func h1h2Proxy(t *testing.T, o *h2Origin, action map[string]any) (*framework.Proxy, string) {
	return h1h2ProxyTLS(t, o, action, nil)
}

// h1h2ProxyTLS is h1h2Proxy with the cluster's tls_context.
func h1h2ProxyTLS(t *testing.T, o *h2Origin, action, clusterTLS map[string]any) (*framework.Proxy, string) {
	t.Helper()
	a := map[string]any{"upstream_protocol": "Http2", "timeout": "20s"}
	for k, v := range action {
		a[k] = v
	}
	addr := framework.FreePort(t)
	cfg := framework.WithAdmin(t, httpProxyConfig(addr, "Http1", "", []any{routeTo("/", a)}, o.addr))
	if clusterTLS != nil {
		cfg = soakWithTLS(t, cfg, nil, map[string]map[string]any{"up": clusterTLS})
	}
	return framework.StartProxy(t, cfg), addr
}

// h1h2Client is net/http's HTTP/1 client on one connection at a time.
func h1h2Client(t *testing.T) *http.Client {
	tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DisableCompression: true, ForceAttemptHTTP2: false}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// opaqueReader hides a reader's type so that net/http sends its body chunked.
type opaqueReader struct{ io.Reader }

// TestH1ToH2Bodies: bodies up to several MiB both ways, Content-Length and chunked, on
// one kept-alive client connection; every byte is hash-checked, the client connection
// is reused for every request and the upstream connection is shared.
func TestH1ToH2Bodies(t *testing.T) {
	t.Run("h2c", func(t *testing.T) {
		o := startH2Origin(t)
		_, addr := h1h2Proxy(t, o, nil)
		h1h2Bodies(t, o, addr)
	})
	t.Run("tls", func(t *testing.T) {
		ca := tlstest.NewCA(t)
		o := startH2OriginTLS(t, &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, "127.0.0.1").TLS(t)}, NextProtos: []string{"h2"}})
		_, addr := h1h2ProxyTLS(t, o, nil, map[string]any{"status": true, "ca_cert": ca.PEM, "alpn": "h2"})
		h1h2Bodies(t, o, addr)
	})
}

func h1h2Bodies(t *testing.T, o *h2Origin, addr string) {
	c := h1h2Client(t)
	var newConns atomic.Int64
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if !i.Reused {
			newConns.Add(1)
		}
	}}
	sizes := []int{0, 1, 16<<10 - 1, 64<<10 + 3, 1<<20 + 7, 5<<20 + 1}
	n := 0
	for i, up := range sizes {
		down := sizes[len(sizes)-1-i]
		for _, chunked := range []bool{false, true} {
			for _, cl := range []int{0, 1} {
				n++
				body := h1h2Data[i : i+up]
				var rd io.Reader = bytes.NewReader(body)
				if chunked {
					rd = opaqueReader{rd}
				}
				url := fmt.Sprintf("http://%s/data?size=%d&cl=%d", addr, down, cl)
				req := newReq(t, "POST", url, rd)
				req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("POST up=%d chunked=%v down=%d cl=%d: %v", up, chunked, down, cl, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("POST up=%d chunked=%v down=%d cl=%d: status %d, %d bytes, %v", up, chunked, down, cl, resp.StatusCode, len(got), err)
				}
				if resp.Header.Get("X-Req-Sha") != h1h2Sum(body) || resp.Header.Get("X-Req-Len") != strconv.Itoa(up) {
					t.Errorf("POST up=%d chunked=%v: upstream got %s bytes sha %s, sent sha %s", up, chunked,
						resp.Header.Get("X-Req-Len"), resp.Header.Get("X-Req-Sha"), h1h2Sum(body))
				}
				if !bytes.Equal(got, h1h2Data[:down]) {
					t.Errorf("POST down=%d cl=%d: got %d bytes, sha %s want %s", down, cl, len(got), h1h2Sum(got), h1h2Sum(h1h2Data[:down]))
				}
			}
		}
	}
	if nc := newConns.Load(); nc != 1 {
		t.Errorf("%d requests used %d client connections, want 1 kept alive", n, nc)
	}
	if a := o.accepted.Load(); a != 1 {
		t.Errorf("upstream accepted %d connections, want 1 shared", a)
	}
}

// h1h2Exchange is one request written on a raw socket and its expected answer.
type h1h2Exchange struct {
	method, path string
	body         []byte
	chunked      bool
	status       int
	want         []byte // response body; nil: none
}

func (e *h1h2Exchange) bytes() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: h1h2\r\n", e.method, e.path)
	switch {
	case e.chunked:
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		for rest := e.body; len(rest) > 0; {
			k := min(len(rest), 7000)
			fmt.Fprintf(&b, "%x\r\n%s\r\n", k, rest[:k])
			rest = rest[k:]
		}
		b.WriteString("0\r\n\r\n")
	case e.body != nil:
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(e.body))
		b.Write(e.body)
	default:
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// h1h2Raw writes the exchanges on one connection at once (pipelined) and reads the
// answers in order; then the connection must carry no further byte.
func h1h2Raw(t *testing.T, addr string, ex []*h1h2Exchange) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	var all []byte
	for _, e := range ex {
		all = append(all, e.bytes()...)
	}
	werr := make(chan error, 1)
	go func() { _, err := conn.Write(all); werr <- err }()
	br := bufio.NewReader(conn)
	for i, e := range ex {
		req, _ := http.NewRequest(e.method, "http://h1h2"+e.path, nil)
		resp, err := http.ReadResponse(br, req)
		interim := 0
		for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 {
			// Forwarded interim answers (/1xx sends one 103 with a Link field).
			if resp.StatusCode != http.StatusEarlyHints || resp.Header.Get("Link") == "" {
				t.Fatalf("#%d %s %s: interim answer %d %v", i, e.method, e.path, resp.StatusCode, resp.Header)
			}
			interim++
			resp, err = http.ReadResponse(br, req)
		}
		if err != nil {
			t.Fatalf("#%d %s %s: reading the answer: %v", i, e.method, e.path, err)
		}
		if want := strings.Count(e.path, "/1xx"); interim != want {
			t.Fatalf("#%d %s %s: %d interim answers, want %d", i, e.method, e.path, interim, want)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != e.status || !bytes.Equal(got, e.want) {
			t.Fatalf("#%d %s %s: status %d (want %d), %d body bytes (want %d; equal %v), %v",
				i, e.method, e.path, resp.StatusCode, e.status, len(got), len(e.want), bytes.Equal(got, e.want), err)
		}
		if e.body != nil && !strings.HasPrefix(e.path, "/early") && resp.Header.Get("X-Req-Sha") != h1h2Sum(e.body) {
			t.Fatalf("#%d %s %s: upstream got body sha %s len %s, sent %s len %d", i, e.method, e.path,
				resp.Header.Get("X-Req-Sha"), resp.Header.Get("X-Req-Len"), h1h2Sum(e.body), len(e.body))
		}
		if resp.Close {
			t.Fatalf("#%d %s %s: the proxy closes the connection", i, e.method, e.path)
		}
	}
	if err := <-werr; err != nil {
		t.Fatalf("writing the requests: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if extra, _ := br.ReadByte(); br.Buffered() > 0 || extra != 0 {
		rest, _ := br.Peek(br.Buffered())
		t.Fatalf("bytes after the last answer: %q", append([]byte{extra}, rest...))
	}
}

// TestH1ToH2Pipelined: requests with and without bodies pipelined on one raw connection
// come back in order, whole.
func TestH1ToH2Pipelined(t *testing.T) {
	o := startH2Origin(t)
	_, addr := h1h2Proxy(t, o, nil)
	var ex []*h1h2Exchange
	for i := 0; i < 24; i++ {
		size := (i * 37 << 10) % (700 << 10)
		e := &h1h2Exchange{method: "GET", status: 200, want: h1h2Data[:size]}
		e.path = fmt.Sprintf("/data?size=%d&cl=%d&i=%d", size, i%2, i)
		switch i % 3 {
		case 1:
			e.method, e.body = "POST", h1h2Data[i:i+size/2+1]
		case 2:
			e.method, e.body, e.chunked = "PUT", h1h2Data[i:i+size/3+1], true
		}
		ex = append(ex, e)
	}
	// An empty chunked body, and answers given before the body was read (the rest of the
	// body is dropped; the next request still parses).
	ex = append(ex[:12], append([]*h1h2Exchange{
		{method: "POST", path: "/data?size=5&cl=1", body: []byte{}, chunked: true, status: 200, want: h1h2Data[:5]},
		{method: "POST", path: "/early?size=100", body: h1h2Data[:3<<20], status: 200, want: h1h2Data[:100]},
		{method: "POST", path: "/early?size=100", body: h1h2Data[:3<<20], chunked: true, status: 200, want: h1h2Data[:100]},
		{method: "GET", path: "/data?size=7&cl=1", status: 200, want: h1h2Data[:7]},
	}, ex[12:]...)...)
	h1h2Raw(t, addr, ex)
}

// TestH1ToH2Framing: HEAD, 204, 304 and a 1xx before the answer keep the HTTP/1 framing:
// no body bytes where none belong, and the connection carries on (pipelined).
func TestH1ToH2Framing(t *testing.T) {
	o := startH2Origin(t)
	_, addr := h1h2Proxy(t, o, nil)
	h1h2Raw(t, addr, []*h1h2Exchange{
		{method: "HEAD", path: "/data?size=1000&cl=1", status: 200, want: []byte{}},
		{method: "HEAD", path: "/data?size=300000", status: 200, want: []byte{}},
		{method: "GET", path: "/204", status: 204, want: []byte{}},
		{method: "POST", path: "/204", body: []byte("x"), status: 204, want: []byte{}},
		{method: "GET", path: "/304", status: 304, want: []byte{}},
		{method: "GET", path: "/1xx?size=5000&cl=1", status: 200, want: h1h2Data[:5000]},
		{method: "GET", path: "/1xx?size=70000", status: 200, want: h1h2Data[:70000]},
		{method: "GET", path: "/trailers?size=9000", status: 200, want: h1h2Data[:9000]},
		{method: "GET", path: "/data?size=10&cl=1", status: 200, want: h1h2Data[:10]},
	})
	// HTTP/1.0: a body of unknown length ends with the connection; one of known length
	// keeps a keep-alive connection open.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	for _, size := range []int{10, 70000} {
		fmt.Fprintf(conn, "GET /data?size=%d&cl=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", size)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("HTTP/1.0 keep-alive, %d bytes: %v", size, err)
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil || resp.Close || !bytes.Equal(got, h1h2Data[:size]) {
			t.Fatalf("HTTP/1.0 keep-alive: %d bytes of %d, close %v, %v", len(got), size, resp.Close, err)
		}
	}
	fmt.Fprintf(conn, "GET /data?size=70000 HTTP/1.0\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(got, h1h2Data[:70000]) || resp.TransferEncoding != nil {
		t.Fatalf("HTTP/1.0, unknown length: %d bytes, transfer-encoding %v, %v", len(got), resp.TransferEncoding, err)
	}
}

// TestH1ToH2UpstreamAnswers: trailers, an answer before the request body is read, and
// stream resets before and after the response head.
func TestH1ToH2UpstreamAnswers(t *testing.T) {
	o := startH2Origin(t)
	_, addr := h1h2Proxy(t, o, nil)
	c := h1h2Client(t)

	t.Run("trailers", func(t *testing.T) {
		resp, body := mustDo(t, c, newReq(t, "POST", "http://"+addr+"/trailers?size=300000", bytes.NewReader(h1h2Data[:1<<20])))
		if resp.StatusCode != 200 || body != string(h1h2Data[:300000]) || resp.Trailer.Get("X-Sum") != h1h2Sum(h1h2Data[:300000]) {
			t.Fatalf("status %d, %d bytes, trailer %v", resp.StatusCode, len(body), resp.Trailer)
		}
	})
	for _, tc := range []struct {
		name       string
		up, down   int
		contentLen bool
	}{
		{"small-answer", 4 << 20, 100, true},
		{"small-answer-chunked-upload", 4 << 20, 100, false},
		{"answer-fits-the-window", 4 << 20, 64 << 10, true},
	} {
		t.Run("early/"+tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			var rd io.Reader = bytes.NewReader(h1h2Data[:tc.up])
			if !tc.contentLen {
				rd = opaqueReader{rd}
			}
			req := newReq(t, "POST", fmt.Sprintf("http://%s/early?size=%d", addr, tc.down), rd).WithContext(ctx)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("upstream answered %d bytes without reading a %d-byte body: %v", tc.down, tc.up, err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, h1h2Data[:tc.down]) {
				t.Fatalf("status %d, %d bytes (want %d), %v", resp.StatusCode, len(got), tc.down, err)
			}
		})
	}
	t.Run("reset-before-head", func(t *testing.T) {
		for _, method := range []string{"GET", "POST"} {
			resp, body := mustDo(t, c, newReq(t, method, "http://"+addr+"/reset?before=1", strings.NewReader("b")))
			if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("%s: status %d %q, want 502 or 503", method, resp.StatusCode, body)
			}
		}
	})
	// A reset after the head, before any body byte: nothing went to the client yet, so it
	// gets a clear 502 (not a closed connection without an answer).
	t.Run("reset-after-head", func(t *testing.T) {
		for _, req := range []string{
			"GET /reset?head=1 HTTP/1.1\r\nHost: h1h2\r\n\r\n",
			"POST /reset?head=1 HTTP/1.1\r\nHost: h1h2\r\nContent-Length: 3\r\n\r\nabc",
		} {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := conn.Write([]byte(req)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			conn.Close()
			if err != nil {
				t.Fatalf("%.20q: no answer: %v", req, err)
			}
			if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("%.20q: status %d, want 502 or 503", req, resp.StatusCode)
			}
		}
	})
	for _, cl := range []int{0, 1} {
		t.Run(fmt.Sprintf("reset-mid-body/cl=%d", cl), func(t *testing.T) {
			resp, err := c.Get(fmt.Sprintf("http://%s/reset?size=600000&cl=%d", addr, cl))
			if err != nil {
				return // no answer at all is clear too
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Fatalf("a stream reset after %d of 600000 bytes reached the client as a complete %d with %d bytes",
					300000, resp.StatusCode, len(got))
			}
			if !bytes.Equal(got, h1h2Data[:len(got)]) {
				t.Fatalf("the truncated body is garbled")
			}
		})
	}
	// The client's connection pool still works after the failures.
	resp, body := mustDo(t, c, newReq(t, "GET", "http://"+addr+"/data?size=10&cl=1", nil))
	if resp.StatusCode != 200 || body != string(h1h2Data[:10]) {
		t.Fatalf("after the resets: %d %q", resp.StatusCode, body)
	}
}

// TestH1ToH2EarlyLargeAnswer: an upstream that answers with more than a stream window
// before reading a large request body, and reads no more of the body until its answer
// is read. A direct client reads the answer while it uploads; so does the proxy's
// client: the proxy writes the answer as it comes while the body is still arriving
// (h2conv.go h2Early), then drops the rest of the body and keeps the connection, or
// closes it right after the answer when the request asked for that. (It used to read
// the answer only once the body was in: both sides waited for request_body_timeout,
// 60 s, and the unread body held the upstream connection's receive window, stalling
// other clients' uploads on it.)
func TestH1ToH2EarlyLargeAnswer(t *testing.T) {
	o := startH2Origin(t)
	p, addr := h1h2Proxy(t, o, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	warm := h1h2Client(t)
	mustDo(t, warm, newReq(t, "POST", "http://"+addr+"/data?size=10&cl=1", strings.NewReader("warm")))
	warm.CloseIdleConnections()
	o.drop()
	lc := framework.NewLeakCheck(t, p)

	const up, down = 4 << 20, 2 << 20
	for _, tc := range []struct {
		name    string
		chunked bool // the upload has no Content-Length
		nolen   bool // the answer has no Content-Length: chunked to the client
	}{
		{"length", false, false},
		{"chunked-upload", true, false},
		{"chunked-answer", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
				defer c.CloseIdleConnections()
				var body io.Reader = bytes.NewReader(h1h2Data[:up])
				if tc.chunked {
					body = opaqueReader{body}
				}
				u := fmt.Sprintf("http://%s/early?size=%d", addr, down)
				if tc.nolen {
					u += "&nolen=1"
				}
				req, _ := http.NewRequestWithContext(ctx, "POST", u, body)
				resp, err := c.Do(req)
				if err != nil {
					done <- err
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case err != nil:
				case resp.StatusCode != 200 || !bytes.Equal(got, h1h2Data[:down]):
					err = fmt.Errorf("status %d, %d bytes (want %d)", resp.StatusCode, len(got), down)
				case resp.Close:
					err = errors.New("the proxy closes the connection")
				case tc.nolen && (resp.ContentLength != -1 || len(resp.TransferEncoding) == 0):
					err = fmt.Errorf("answer of unknown length: Content-Length %d, Transfer-Encoding %v", resp.ContentLength, resp.TransferEncoding)
				case !tc.nolen && resp.ContentLength != down:
					err = fmt.Errorf("Content-Length %d, want %d", resp.ContentLength, down)
				}
				done <- err
			}()
			// Another client's small upload, on another connection, once the first is
			// under way: it shares the upstream connection.
			time.Sleep(300 * time.Millisecond)
			c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
			defer c.CloseIdleConnections()
			req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+addr+"/data?size=10&cl=1", strings.NewReader("small"))
			resp, err := c.Do(req)
			if err != nil {
				t.Errorf("a small upload beside it: %v", err)
			} else {
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || resp.Header.Get("X-Req-Len") != "5" || !bytes.Equal(got, h1h2Data[:10]) {
					t.Errorf("a small upload beside it: status %d, X-Req-Len %q, %d bytes, %v", resp.StatusCode, resp.Header.Get("X-Req-Len"), len(got), err)
				}
			}
			if err := <-done; err != nil {
				t.Errorf("upstream answered %d bytes without reading a %d-byte body: %v", down, up, err)
			}
		})
	}
	// Raw clients that send part of the body, then read the whole answer before they go
	// on. Kept alive: the rest of the body is dropped and the next request on the
	// connection is answered. With Connection: close: the connection ends right after
	// the answer (not at request_body_timeout, a minute later).
	for _, closing := range []bool{false, true} {
		t.Run(fmt.Sprintf("raw/close=%v", closing), func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			head := fmt.Sprintf("POST /early?size=%d HTTP/1.1\r\nHost: h1h2\r\nContent-Length: %d\r\n", down, up)
			if closing {
				head += "Connection: close\r\n"
			}
			if _, err := conn.Write(append([]byte(head+"\r\n"), h1h2Data[:64<<10]...)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			got, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 200 || resp.Close != closing || !bytes.Equal(got, h1h2Data[:down]) {
				t.Fatalf("status %d, close %v, %d bytes, %v", resp.StatusCode, resp.Close, len(got), err)
			}
			if closing {
				if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Fatalf("after the answer: %d bytes, %v; want the connection closed", n, err)
				}
				return
			}
			next := append(h1h2Data[64<<10:up:up], "GET /data?size=7&cl=1 HTTP/1.1\r\nHost: h1h2\r\n\r\n"...)
			if _, err := conn.Write(next); err != nil {
				t.Fatal(err)
			}
			resp, err = http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("the request after the dropped body: %v", err)
			}
			got, err = io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, h1h2Data[:7]) {
				t.Fatalf("the request after the dropped body: status %d, %q, %v", resp.StatusCode, got, err)
			}
		})
	}
	o.drop()
	lc.Check(t)
}

// TestH1ToH2ClientAborts: a client that leaves mid-upload, mid-download or while waiting
// for the answer has its upstream stream cancelled, and the proxy gets back to its
// baseline of descriptors and goroutines.
func TestH1ToH2ClientAborts(t *testing.T) {
	o := startH2Origin(t)
	p, addr := h1h2Proxy(t, o, nil)
	c := h1h2Client(t)
	mustDo(t, c, newReq(t, "POST", "http://"+addr+"/data?size=1000", strings.NewReader("warm")))
	c.CloseIdleConnections()
	o.drop()
	lc := framework.NewLeakCheck(t, p)

	dial := func() net.Conn {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
		return conn
	}
	const bound = 5 * time.Second
	for _, chunked := range []bool{false, true} {
		// Mid-upload: 1 MiB of 8 MiB sent, then the client closes.
		conn := dial()
		head := "POST /upload HTTP/1.1\r\nHost: h1h2\r\nContent-Length: 8388608\r\n\r\n"
		if chunked {
			head = "POST /upload HTTP/1.1\r\nHost: h1h2\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n"
		}
		if _, err := conn.Write(append([]byte(head), h1h2Data[:1<<20]...)); err != nil {
			t.Fatal(err)
		}
		if e := o.waitEvent("upload-started", bound); e == "" {
			t.Fatalf("chunked=%v: the upload did not reach the upstream", chunked)
		}
		conn.Close()
		if e := o.waitEvent("upload-", bound); !strings.HasPrefix(e, "upload-error") {
			t.Errorf("chunked=%v: client left mid-upload; upstream body read ended with %q within %s, want an error", chunked, e, bound)
		}
	}
	// Waiting for the head, with and without a body sent.
	for _, body := range []string{"", "0123456789"} {
		conn := dial()
		req := "GET /wait HTTP/1.1\r\nHost: h1h2\r\n\r\n"
		if body != "" {
			req = "POST /wait HTTP/1.1\r\nHost: h1h2\r\nContent-Length: 10\r\n\r\n" + body
		}
		if _, err := conn.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		if o.waitEvent("wait-start", bound) == "" {
			t.Fatal("/wait did not reach the upstream")
		}
		conn.Close()
		if e := o.waitEvent("wait-", bound); e != "wait-cancelled" {
			t.Errorf("body %q: client left while waiting; upstream saw %q within %s, want its stream cancelled", body, e, bound)
		}
	}
	// Mid-upload to an upstream that reads none of it: the proxy's forwarding blocks on
	// the upstream's flow control, and the client resets its connection (a FIN would
	// wait behind the body bytes the proxy does not read); the reset must still cancel
	// the upstream stream.
	{
		conn := dial()
		if _, err := conn.Write([]byte("POST /stall HTTP/1.1\r\nHost: h1h2\r\nContent-Length: 8388608\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		if o.waitEvent("stall-start", bound) == "" {
			t.Fatal("/stall did not reach the upstream")
		}
		// Send until the proxy stops taking the body (bounded by the write deadline).
		_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		sent := 0
		for sent < 8<<20 {
			k, err := conn.Write(h1h2Data[sent:min(sent+256<<10, 8<<20)])
			sent += k
			if err != nil {
				break
			}
		}
		_ = conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
		if e := o.waitEvent("stall-", bound); e != "stall-cancelled" {
			t.Errorf("client reset mid-upload (%d KiB sent) to an upstream not reading; upstream saw %q within %s, want its stream cancelled", sent>>10, e, bound)
		}
	}
	// Mid-download: 1 MiB of 64 MiB read.
	conn := dial()
	if _, err := conn.Write([]byte("GET /slow?size=67108864 HTTP/1.1\r\nHost: h1h2\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, conn, 1<<20); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if e := o.waitEvent("slow-", bound); !strings.HasPrefix(e, "slow-error") {
		t.Errorf("client left mid-download; upstream saw %q within %s, want its writes to fail", e, bound)
	}
	o.drop()
	lc.Check(t)
}

// TestH1ToH2SlowReader: a client that stops reading a large response holds a bounded
// amount of it, and other clients' requests on the same upstream connection go on.
func TestH1ToH2SlowReader(t *testing.T) {
	o := startH2Origin(t)
	p, addr := h1h2Proxy(t, o, nil)
	c := h1h2Client(t)
	mustDo(t, c, newReq(t, "GET", "http://"+addr+"/data?size=300000", nil))
	before := rss(t, p.Pid())

	const size = 64 << 20
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	_ = slow.SetDeadline(time.Now().Add(40 * time.Second))
	if _, err := slow.Write([]byte(fmt.Sprintf("GET /slow?size=%d HTTP/1.1\r\nHost: h1h2\r\n\r\n", size))); err != nil {
		t.Fatal(err)
	}
	// Let the stalled stream fill what it can.
	waitUntil(t, "the slow response to start", 5*time.Second, func() bool { return o.written.Load() > 256<<10 })
	for prev := int64(-1); prev != o.written.Load(); {
		prev = o.written.Load()
		time.Sleep(300 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cw := &http.Client{Transport: &http.Transport{DisableCompression: true}}
			defer cw.CloseIdleConnections()
			for i := 0; i < 20 && ctx.Err() == nil; i++ {
				size := 1000 + (w*20+i)*4099
				req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s/data?size=%d", addr, size), nil)
				resp, err := cw.Do(req)
				if err != nil {
					errs <- fmt.Errorf("worker %d #%d: %w", w, i, err)
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, h1h2Data[:size]) {
					errs <- fmt.Errorf("worker %d #%d: status %d, %d bytes of %d, %v", w, i, resp.StatusCode, len(got), size, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("beside a stalled reader: %v", err)
	}
	if a := o.accepted.Load(); a != 1 {
		t.Logf("upstream accepted %d connections (the stalled stream did not share one with the rest)", a)
	}
	held := o.written.Load()
	grew := rss(t, p.Pid()) - before
	t.Logf("stalled stream: upstream wrote %d KiB; proxy RSS grew %d KiB", held>>10, grew>>10)
	if held > 16<<20 || grew > size/2 {
		t.Errorf("a client that reads nothing of a %d MiB answer: the upstream wrote %d MiB, the proxy grew %d MiB: unbounded buffering",
			size>>20, held>>20, grew>>20)
	}
	// The slow client now reads everything, intact.
	br := bufio.NewReaderSize(slow, 1<<20)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for off := 0; off < size; off += 16 << 10 {
		k := min(16<<10, size-off)
		buf := make([]byte, k)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatalf("slow body: %v after %d bytes", err, n)
		}
		if !bytes.Equal(buf, h1h2Data[off%(8<<20):][:k]) {
			t.Fatalf("slow body garbled at offset %d", off)
		}
		n += int64(k)
	}
	resp.Body.Close()
}

// TestH1ToH2GoAwayUnderLoad: the upstream sends GOAWAY (graceful shutdown) on its
// connections, or drops them, while HTTP/1 clients keep requests going. Every answer is
// whole and correct, a clear 502/503, or (after a drop) a failure the client sees (an
// error, a body cut short of its framing); never a complete-looking wrong answer, and no
// POST reaches the upstream twice. After a GOAWAY no bodiless request fails. After a
// drop a few POSTs get no answer: a drop between the last DATA of an answer and its
// END_STREAM gives the client a complete answer, then the proxy closes the connection,
// and net/http does not send a POST again on a reused connection that closed.
func TestH1ToH2GoAwayUnderLoad(t *testing.T) {
	for _, mode := range []string{"goaway", "drop"} {
		t.Run(mode, func(t *testing.T) { h1h2Churn(t, mode) })
	}
}

func h1h2Churn(t *testing.T, mode string) {
	o := startH2Origin(t)
	_, addr := h1h2Proxy(t, o, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var ok, failedGet, failedPost, cut, noAnswer atomic.Int64
	var mu sync.Mutex
	var bad []string
	note := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if len(bad) < 20 {
			bad = append(bad, s)
		}
	}
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
			defer c.CloseIdleConnections()
			for i := 0; ctx.Err() == nil; i++ {
				select {
				case <-stop:
					return
				default:
				}
				size := (w*7919 + i*4111) % (200 << 10)
				method, body := "GET", []byte(nil)
				if i%3 == 0 {
					method, body = "POST", h1h2Data[i:i+1000+i%5000]
				}
				var reused, wrote atomic.Bool
				tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
					GotConn:      func(i httptrace.GotConnInfo) { reused.Store(i.Reused) },
					WroteRequest: func(i httptrace.WroteRequestInfo) { wrote.Store(i.Err == nil) },
				})
				req, _ := http.NewRequestWithContext(tctx, method, fmt.Sprintf("http://%s/data?size=%d&cl=%d", addr, size, i%2), bytes.NewReader(body))
				if method == "POST" {
					req.Header.Set("X-Once", fmt.Sprintf("w%d-%d", w, i))
				}
				resp, err := c.Do(req)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					if mode == "drop" {
						noAnswer.Add(1)
						t.Logf("%s size %d (connection reused %v, request written %v): no answer: %v", method, size, reused.Load(), wrote.Load(), err)
						continue
					}
					note(fmt.Sprintf("%s size %d: %v", method, size, err))
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == 502 || resp.StatusCode == 503:
					if method == "GET" {
						failedGet.Add(1)
					} else {
						failedPost.Add(1)
					}
				case err != nil && mode == "drop" && resp.StatusCode == 200 && bytes.Equal(got, h1h2Data[:len(got)]):
					cut.Add(1) // cut short, and the client can tell
				case err != nil || resp.StatusCode != 200 || !bytes.Equal(got, h1h2Data[:size]):
					note(fmt.Sprintf("%s size %d cl %d: status %d, %d bytes, prefix intact %v, %v", method, size, i%2,
						resp.StatusCode, len(got), len(got) <= size && bytes.Equal(got, h1h2Data[:len(got)]), err))
					return
				case body != nil && resp.Header.Get("X-Req-Sha") != h1h2Sum(body):
					note(fmt.Sprintf("POST: upstream got body sha %s len %s, sent len %d", resp.Header.Get("X-Req-Sha"), resp.Header.Get("X-Req-Len"), len(body)))
				default:
					ok.Add(1)
				}
			}
		}()
	}
	for i := 0; i < 8; i++ {
		time.Sleep(150 * time.Millisecond)
		if mode == "goaway" {
			o.goAway()
		} else {
			o.drop()
		}
	}
	time.Sleep(150 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%s: %d answered, %d GET and %d POST answered 502/503, %d cut short, %d without an answer; %d upstream connections",
		mode, ok.Load(), failedGet.Load(), failedPost.Load(), cut.Load(), noAnswer.Load(), o.accepted.Load())
	for _, b := range bad {
		t.Error(b)
	}
	o.seen.Range(func(k, v any) bool {
		if n := v.(*atomic.Int64).Load(); n > 1 {
			t.Errorf("POST %s reached the upstream handler %d times", k, n)
		}
		return true
	})
	if ok.Load() == 0 {
		t.Fatal("no request succeeded")
	}
	if mode == "goaway" && failedGet.Load() > 0 {
		t.Errorf("%d bodiless GETs answered 502/503 after an upstream GOAWAY: not retried on a new connection", failedGet.Load())
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("load did not finish in time (hung requests)")
	}
}

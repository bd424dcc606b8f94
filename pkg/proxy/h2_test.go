package proxy_test

//lint:file-ignore SA1019 x/net/http2 is the HTTP/2 implementation by design (docs/l7-plan.md); its ServeConn and ClientConn API is deprecated in favour of net/http, which has no per-connection ServeConn.

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/proxy/proxytest"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// h2Origin is an upstream speaking HTTP/1 and h2c (prior knowledge).
func h2Origin(t testing.TB, h http.HandlerFunc) *origin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &origin{ln: ln}
	o.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			o.reqs.Add(1)
			h(w, r)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				o.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				o.closed.Add(1)
			}
		},
		Protocols: new(http.Protocols),
	}
	o.srv.Protocols.SetHTTP1(true)
	o.srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = o.srv.Serve(ln) }()
	t.Cleanup(func() { _ = o.srv.Close() })
	return o
}

const h2RoutesFmt = `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/direct"},"direct_response":{"status":200,"body":"direct body"}},
 {"match":{"prefix":"/slow"},"route":{"cluster_name":"c","timeout":"200ms"}},
 {"match":{"prefix":"/down"},"route":{"cluster_name":"dead"}},
 {"match":{"prefix":"/empty"},"route":{"cluster_name":"empty"}},
 {"match":{"prefix":"/pf/"},"route":{"cluster_name":"c"},"per_filter_config":{"fault":{"abort":{"status":418,"percentage":100}}}},
 {"match":{"prefix":"/h1/"},"route":{"cluster_name":"c","upstream_protocol":"Http1"}},
 {"match":{"prefix":"/h1slow/"},"route":{"cluster_name":"c","upstream_protocol":"Http1","timeout":"200ms"}},
 {"match":{"prefix":"/h2/"},"route":{"cluster_name":"c","upstream_protocol":"Http2"}},
 {"match":{"prefix":"/"},"route":{"cluster_name":"c"}}
]}]}`

type h2env struct {
	addr string
	m    *metrics.Set
	h    network.Handler
}

// startH2Proxy serves the HTTP/2 driver (down HTTP2) or the HTTP/1 proxy (down HTTP1) on
// 127.0.0.1:0 with cluster "c" on upstream; up is the proxy-level upstream protocol.
func startH2Proxy(t testing.TB, upstream string, down, up stream.Protocol, opts ...func(*proxy.Config)) *h2env {
	t.Helper()
	rts := proxytest.Routers(t, h2RoutesFmt)
	js := fmt.Sprintf(`[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","hosts":[{"address":%q}]},
		{"name":"dead","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","connect_timeout":"200ms","hosts":[{"address":"127.0.0.1:1"}]},
		{"name":"empty","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","pick_timeout":"0s","hosts":[]}]`, upstream)
	m := metrics.New()
	mgr := proxytest.Clusters(t, js, m)
	pool := buffer.NewPool()
	cfg := proxy.Config{Listener: "l", Downstream: down, Upstream: up, Routers: rts, RouterName: "r",
		Clusters: mgr, Pool: pool, Metrics: m}
	addr, h := serveProxy(t, cfg, opts...)
	return &h2env{addr: addr, m: m, h: h}
}

// proxyHandler is what proxy.New and proxy.NewH2 return.
type proxyHandler interface {
	network.Handler
	io.Closer
}

// serveProxy serves cfg, adjusted by opts, on 127.0.0.1:0: the HTTP/2 driver when
// cfg.Downstream is HTTP2, else the HTTP/1 proxy. The handler is closed before the
// listener drains.
func serveProxy(t testing.TB, cfg proxy.Config, opts ...func(*proxy.Config)) (string, proxyHandler) {
	t.Helper()
	for _, o := range opts {
		o(&cfg)
	}
	var h proxyHandler
	if cfg.Downstream == stream.HTTP2 {
		h = proxy.NewH2(cfg)
	} else {
		h = proxy.New(cfg)
	}
	addr := proxytest.Serve(t, h, cfg.Pool, cfg.Metrics)
	t.Cleanup(func() { _ = h.Close() })
	return addr, h
}

func h2cTransport(t testing.TB) *http2.Transport {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func get(t testing.TB, c *http.Client, method, url, body string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp, string(b)
}

func h2echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Proto", r.Proto)
	fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), b)
}

func TestH2ToH2Multiplexed(t *testing.T) {
	o := h2Origin(t, h2echo)
	e := startH2Proxy(t, o.addr(), stream.HTTP2, "")
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := get(t, c, "POST", fmt.Sprintf("http://%s/p/%d", e.addr, i), "x")
			if resp.StatusCode != 200 || body != fmt.Sprintf("POST /p/%d x", i) || resp.Header.Get("X-Proto") != "HTTP/2.0" {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d bad responses", bad.Load())
	}
	if n := o.conns.Load(); n > 2 {
		t.Fatalf("%d upstream connections for 40 concurrent streams", n)
	}
}

func TestH2ToH1AndLocalAnswers(t *testing.T) {
	o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/slow") {
			select {
			case <-r.Context().Done():
			case <-time.After(testTimeout):
			}
			return
		}
		h2echo(w, r)
	})
	e := startH2Proxy(t, o.addr(), stream.HTTP2, "")
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	for _, tc := range []struct {
		path   string
		status int
		body   string
		proto  string
	}{
		{"/h1/a", 200, "GET /h1/a ", "HTTP/1.1"},
		{"/h1/b", 200, "GET /h1/b ", "HTTP/1.1"},
		{"/h2/a", 200, "GET /h2/a ", "HTTP/2.0"},
		{"/direct", 200, "direct body", ""},
		{"/slow", 504, "upstream timeout", ""},
		{"/down", 503, "upstream connect failed", ""},
	} {
		resp, body := get(t, c, "GET", "http://"+e.addr+tc.path, "")
		if resp.StatusCode != tc.status || body != tc.body || resp.Header.Get("X-Proto") != tc.proto {
			t.Fatalf("%s: %d %q %q", tc.path, resp.StatusCode, body, resp.Header.Get("X-Proto"))
		}
	}
}

// TestH2ToH1BodyStallBounded: an HTTP/1 upstream that sends the head and part of the body,
// then stalls, is cut by the route timeout (200 ms on /h1slow/): the client sees its
// stream end in error long before its own timeout, as on the HTTP/1 path.
func TestH2ToH1BodyStallBounded(t *testing.T) {
	o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		_, _ = w.Write([]byte("0123456789"))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(testTimeout):
		}
	})
	e := startH2Proxy(t, o.addr(), stream.HTTP2, "")
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	start := time.Now()
	resp, err := c.Get("http://" + e.addr + "/h1slow/x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("a stalled body ended cleanly: %q", b)
	}
	if string(b) != "0123456789" {
		t.Fatalf("got %q before the stall", b)
	}
	if d := time.Since(start); d > testTimeout/2 {
		t.Fatalf("the stall held the stream %v (route timeout 200ms)", d)
	}
}

func TestH1ToH2Upstream(t *testing.T) {
	o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/slow") {
			select {
			case <-r.Context().Done():
			case <-time.After(testTimeout):
			}
			return
		}
		h2echo(w, r)
	})
	e := startH2Proxy(t, o.addr(), stream.HTTP1, stream.HTTP2)
	c := client()
	defer c.CloseIdleConnections()
	for _, tc := range []struct{ method, path, body, want, proto string }{
		{"GET", "/a?b=c", "", "GET /a?b=c ", "HTTP/2.0"},
		{"POST", "/p", "payload", "POST /p payload", "HTTP/2.0"},
		{"GET", "/h1/x", "", "GET /h1/x ", "HTTP/1.1"},
	} {
		resp, body := get(t, c, tc.method, "http://"+e.addr+tc.path, tc.body)
		if resp.StatusCode != 200 || body != tc.want || resp.Header.Get("X-Proto") != tc.proto {
			t.Fatalf("%s %s: %d %q %q", tc.method, tc.path, resp.StatusCode, body, resp.Header.Get("X-Proto"))
		}
	}
	// Chunked request body (unknown length).
	pr, pw := io.Pipe()
	go func() { pw.Write([]byte("one ")); pw.Write([]byte("two")); pw.Close() }()
	req, _ := http.NewRequest("PUT", "http://"+e.addr+"/c", pr)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "PUT /c one two" {
		t.Fatalf("chunked: %q", b)
	}
	if o.conns.Load() != 2 { // one h2 connection, one h1
		t.Fatalf("upstream connections %d, want 2", o.conns.Load())
	}
	for _, tc := range []struct {
		path   string
		status int
	}{{"/slow", 504}, {"/down", 503}, {"/direct", 200}} {
		if resp, body := get(t, c, "GET", "http://"+e.addr+tc.path, ""); resp.StatusCode != tc.status {
			t.Fatalf("%s: %d %q", tc.path, resp.StatusCode, body)
		}
	}
	// A slow request with a body: the route timeout bounds the wait for the answer once
	// the body is in.
	if resp, body := get(t, c, "POST", "http://"+e.addr+"/slow", "body"); resp.StatusCode != 504 {
		t.Fatalf("slow POST: %d %q", resp.StatusCode, body)
	}
}

// TestH2CloseSendsGoAway: closing the driver sends GOAWAY; a stream in flight finishes.
func TestH2CloseSendsGoAway(t *testing.T) {
	release := make(chan struct{})
	o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-time.After(testTimeout):
		}
		io.WriteString(w, "done")
	})
	e := startH2Proxy(t, o.addr(), stream.HTTP2, "")
	tr := h2cTransport(t)
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := tr.NewClientConn(conn)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	type res struct {
		body string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+e.addr+"/x", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			ch <- res{"", err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- res{string(b), err}
	}()
	deadline := time.Now().Add(testTimeout)
	for o.reqs.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	_ = e.h.(io.Closer).Close()
	for cc.CanTakeNewRequest() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if cc.CanTakeNewRequest() {
		t.Fatal("no GOAWAY after Close")
	}
	close(release)
	r := <-ch
	if r.err != nil || r.body != "done" {
		t.Fatalf("in-flight stream: %q %v", r.body, r.err)
	}
}

package proxy_test

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// TestIdleUpstreamClosedByPeerNotReused: an upstream that closed an idle keep-alive
// connection does not cost a request with a large body (which is not replayed) its answer:
// the pool probes a connection idle for a second or more before reusing it, sees the
// close and dials anew.
func TestIdleUpstreamClosedByPeerNotReused(t *testing.T) {
	var opened, closed atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, "got "+strconv.FormatInt(n, 10))
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				opened.Add(1)
			case http.StateClosed:
				closed.Add(1)
			}
		},
		IdleTimeout:       100 * time.Millisecond, // the upstream closes idle connections
		ReadHeaderTimeout: testTimeout,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	e := startProxyRouter(t, ln.Addr().String(), "r")

	if resp, body := roundTrip(t, e.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "got 0" {
		t.Fatalf("first request: %d %q", resp.StatusCode, body)
	}
	deadline := time.Now().Add(testTimeout)
	for closed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if closed.Load() == 0 {
		t.Fatal("the upstream did not close its idle connection")
	}
	// Age the pooled connection past the probe threshold (one second).
	time.Sleep(1100 * time.Millisecond)
	// A body over 8 KiB is not kept for a replay on a fresh connection.
	big := strings.Repeat("x", 16<<10)
	resp, body := roundTrip(t, e.addr, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 16384\r\n\r\n"+big)
	if resp.StatusCode != 200 || body != "got 16384" {
		t.Fatalf("request after the upstream closed the idle connection: %d %q; want 200", resp.StatusCode, body)
	}
	if opened.Load() != 2 {
		t.Fatalf("upstream connections %d; want 2 (the closed one was not reused)", opened.Load())
	}
}

// TestIdleUpstreamToDownHostClosed: an idle keep-alive connection to a host that goes
// down (or leaves its cluster) is closed at once, not at its idle expiry, and the next
// request does not reuse it.
func TestIdleUpstreamToDownHostClosed(t *testing.T) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	addr := o.addr()
	e := startRetryEnv(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[{"match":{"prefix":"/"},"route":{"cluster_name":"c"}}]}]}`,
		`[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","pick_timeout":"0s","hosts":[{"address":"`+addr+`"}]}]`, "")
	get := func() int {
		resp, err := http.Get("http://" + e.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != 200 {
		t.Fatalf("first request: %d", code)
	}
	c, _ := e.clusters.Get("c")
	c.SetHostHealth(addr, false)
	deadline := time.Now().Add(testTimeout)
	for o.closed.Load() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the idle connection to the down host was not closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.SetHostHealth(addr, true)
	if code := get(); code != 200 || o.conns.Load() != 2 {
		t.Fatalf("after the host came back: %d with %d connections opened, want 200 on a new one", code, o.conns.Load())
	}
}

// TestIdleH2UpstreamToDownHostClosed: an idle HTTP/2 upstream connection to a host that
// goes down is drained (closed, as it carries no stream) when the hosts change, not at
// its idle expiry (90 s), and the next request after the host is back opens a new one.
func TestIdleH2UpstreamToDownHostClosed(t *testing.T) {
	o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	var mgr *cluster.Manager
	e := startH2Proxy(t, o.addr(), stream.HTTP1, stream.HTTP2, func(c *proxy.Config) { mgr = c.Clusters })
	get := func() {
		t.Helper()
		if resp, body := roundTrip(t, e.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	}
	get()
	if o.conns.Load() != 1 || o.closed.Load() != 0 {
		t.Fatalf("after one request: %d opened, %d closed; want 1, 0", o.conns.Load(), o.closed.Load())
	}
	c, _ := mgr.Get("c")
	c.SetHostHealth(o.addr(), false)
	testutil.Eventually(t, testTimeout, "the idle HTTP/2 connection to the down host to close", func() bool { return o.closed.Load() == 1 })
	c.SetHostHealth(o.addr(), true)
	get()
	if o.conns.Load() != 2 {
		t.Fatalf("after the host came back: %d connections opened; want 2", o.conns.Load())
	}
}

// TestOverloadedRefusesRequests: while Overloaded reports true, an HTTP/1 request is
// answered 503 "overloaded" with Connection: close and does not reach the upstream, on
// both paths; requests are served again once it reports false.
func TestOverloadedRefusesRequests(t *testing.T) {
	bothPaths(t, func(t *testing.T, p path) {
		o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
		var over atomic.Bool
		e := p.start(t, o.addr(), func(c *proxy.Config) { c.Overloaded = over.Load })
		const req = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
		if resp, body := roundTrip(t, e.addr, req); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("before overload: %d %q", resp.StatusCode, body)
		}
		over.Store(true)
		for _, r := range []string{req, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"} {
			resp, body := roundTrip(t, e.addr, r)
			if resp.StatusCode != 503 || body != "overloaded" || !resp.Close {
				t.Fatalf("overloaded: %d %q close %v; want 503 overloaded, close", resp.StatusCode, body, resp.Close)
			}
		}
		if n := o.reqs.Load(); n != 1 {
			t.Fatalf("the upstream saw %d requests; want 1 (none while overloaded)", n)
		}
		over.Store(false)
		if resp, body := roundTrip(t, e.addr, req); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("after overload: %d %q", resp.StatusCode, body)
		}
	})
}

// TestOverloadedRefusesH2Streams: an HTTP/2 stream gets 503 while Overloaded reports
// true, on the direct HTTP/1-upstream path and on the full path alike.
func TestOverloadedRefusesH2Streams(t *testing.T) {
	o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	var over atomic.Bool
	e := startH2Proxy(t, o.addr(), stream.HTTP2, "", func(c *proxy.Config) { c.Overloaded = over.Load })
	client := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	for _, path := range []string{"/", "/h1/x"} {
		over.Store(false)
		if resp, body := get(t, client, "GET", "http://"+e.addr+path, ""); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("%s before overload: %d %q", path, resp.StatusCode, body)
		}
		over.Store(true)
		if resp, body := get(t, client, "GET", "http://"+e.addr+path, ""); resp.StatusCode != 503 || body != "overloaded" {
			t.Fatalf("%s overloaded: %d %q; want 503 overloaded", path, resp.StatusCode, body)
		}
	}
	if n := o.reqs.Load(); n != 2 {
		t.Fatalf("the upstream saw %d requests; want 2 (none while overloaded)", n)
	}
}

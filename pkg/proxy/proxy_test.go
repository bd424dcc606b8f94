package proxy_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// echo answers with the method, path, selected headers and the request body.
func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Method", r.Method)
	w.Header().Set("X-Path", r.URL.RequestURI())
	w.Header().Set("X-XFF", r.Header.Get("X-Forwarded-For"))
	w.Header().Set("X-Rid", r.Header.Get("X-Request-Id"))
	w.Header().Set("X-TE", strings.Join(r.TransferEncoding, ","))
	_, _ = w.Write(b)
}

func TestGetAndPost(t *testing.T) { bothPaths(t, getAndPost) }

func getAndPost(t *testing.T, p path) {
	o := startOrigin(t, echo)
	e := p.start(t, o.addr())
	c := client()
	defer c.CloseIdleConnections()

	resp, err := c.Get("http://" + e.addr + "/hello?x=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Path") != "/hello?x=1" || len(body) != 0 {
		t.Fatalf("GET: %d %q %q", resp.StatusCode, resp.Header.Get("X-Path"), body)
	}
	if resp.Header.Get("X-XFF") != "127.0.0.1" || len(resp.Header.Get("X-Rid")) != 32 {
		t.Fatalf("XFF %q rid %q", resp.Header.Get("X-XFF"), resp.Header.Get("X-Rid"))
	}

	big := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB
	resp, err = c.Post("http://"+e.addr+"/post", "text/plain", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != big || resp.Header.Get("X-TE") != "" {
		t.Fatalf("POST CL: %d len %d te %q", resp.StatusCode, len(body), resp.Header.Get("X-TE"))
	}

	// Chunked: an io.Reader without a length.
	resp, err = c.Post("http://"+e.addr+"/post", "text/plain", io.MultiReader(strings.NewReader(big[:1000]), strings.NewReader(big[1000:])))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != big || resp.Header.Get("X-TE") != "chunked" {
		t.Fatalf("POST chunked: %d len %d te %q", resp.StatusCode, len(body), resp.Header.Get("X-TE"))
	}
	// Path rewrite.
	resp, err = c.Get("http://" + e.addr + "/rw/a")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Path"); got != "/rewritten/a" {
		t.Fatalf("rewrite: %q", got)
	}
}

func TestChunkedResponseAndHead(t *testing.T) { bothPaths(t, chunkedResponseAndHead) }

func chunkedResponseAndHead(t *testing.T, p path) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 5; i++ {
			_, _ = io.WriteString(w, strings.Repeat("x", 5000))
			w.(http.Flusher).Flush()
		}
	})
	e := p.start(t, o.addr())
	c := client()
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + e.addr + "/c")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || len(b) != 25000 || resp.TransferEncoding == nil {
		t.Fatalf("chunked: len %d err %v te %v", len(b), err, resp.TransferEncoding)
	}
	resp, err = c.Head("http://" + e.addr + "/c")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD: %v", err)
	}
	resp.Body.Close()
	// The connection is still usable after the HEAD.
	resp, err = c.Get("http://" + e.addr + "/c")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(b) != 25000 {
		t.Fatalf("after HEAD: len %d", len(b))
	}
}

func TestKeepAliveReuse(t *testing.T) { bothPaths(t, keepAliveReuse) }

func keepAliveReuse(t *testing.T, p path) {
	o := startOrigin(t, echo)
	e := p.start(t, o.addr())
	c := client()
	defer c.CloseIdleConnections()
	for i := 0; i < 10; i++ {
		resp, err := c.Get("http://" + e.addr + "/k")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := o.conns.Load(); n != 1 {
		t.Fatalf("upstream saw %d connections for 10 sequential requests, want 1", n)
	}
}

// TestKeepAliveReuseAfterTimeoutPassed: the route timeout's bound stays armed on the idle
// upstream connection (coarse deadlines); once it has passed, a request with a body that
// takes the connection within the pool's probe-free second must still be carried on it,
// not fail its write on the old bound.
func TestKeepAliveReuseAfterTimeoutPassed(t *testing.T) {
	o := startOrigin(t, echo)
	e := startProxy(t, o.addr())
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	for i := range 3 {
		if i > 0 {
			time.Sleep(300 * time.Millisecond) // past /slow's 200 ms bound and its slack
		}
		if _, err := io.WriteString(c, "POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nping"); err != nil {
			t.Fatal(err)
		}
		resp, body := readResp(t, br, http.MethodPost)
		if resp.StatusCode != 200 || body != "ping" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := o.conns.Load(); n != 1 {
		t.Fatalf("upstream saw %d connections, want the first one reused", n)
	}
}

// TestSlowUploadOnReusedConnection: the bound the previous request left armed on the
// pooled connection (its start plus a 1 s timeout) passes during this request's upload;
// the upload ends within this request's own bound, so it must be carried and answered.
func TestSlowUploadOnReusedConnection(t *testing.T) {
	o := startOrigin(t, echo)
	routes := `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/"},"route":{"cluster_name":"c","timeout":"1s"}}]}]}`
	clusters := fmt.Sprintf(`[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","hosts":[{"address":%q}]}]`, o.addr())
	e := startEnv(t, routes, clusters, "r")
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	send := func(s string) {
		t.Helper()
		if _, err := io.WriteString(c, s); err != nil {
			t.Fatal(err)
		}
	}
	send("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nping")
	if resp, body := readResp(t, br, http.MethodPost); resp.StatusCode != 200 || body != "ping" {
		t.Fatalf("first request: %d %q", resp.StatusCode, body)
	}
	time.Sleep(500 * time.Millisecond) // idle, but not past the old bound: the pool keeps it
	send("POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\nslow")
	time.Sleep(700 * time.Millisecond) // the old bound passes; this request's has ~300 ms left
	send("load")
	if resp, body := readResp(t, br, http.MethodPost); resp.StatusCode != 200 || body != "slowload" {
		t.Fatalf("slow upload on the reused connection: %d %q", resp.StatusCode, body)
	}
	if n := o.conns.Load(); n != 1 {
		t.Fatalf("upstream saw %d connections, want the first one reused", n)
	}
}

func TestPipelined(t *testing.T) { bothPaths(t, pipelined) }

func pipelined(t *testing.T, p path) {
	o := startOrigin(t, echo)
	e := p.start(t, o.addr())
	c := dial(t, e.addr)
	var raw strings.Builder
	for i := 0; i < 5; i++ {
		raw.WriteString("POST /p" + strconv.Itoa(i) + " HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nab" + strconv.Itoa(i))
	}
	raw.WriteString("GET /direct HTTP/1.1\r\nHost: x\r\n\r\n")
	raw.WriteString("GET /direct HTTP/1.1\r\nHost: x\r\n\r\n")
	raw.WriteString("GET /p9 HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := io.WriteString(c, raw.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i := 0; i < 5; i++ {
		resp, body := readResp(t, br, "POST")
		if resp.Header.Get("X-Path") != "/p"+strconv.Itoa(i) || body != "ab"+strconv.Itoa(i) {
			t.Fatalf("response %d: path %q body %q", i, resp.Header.Get("X-Path"), body)
		}
	}
	for i := 0; i < 2; i++ {
		if _, body := readResp(t, br, "GET"); body != "direct body" {
			t.Fatalf("direct: %q", body)
		}
	}
	if resp, _ := readResp(t, br, "GET"); resp.Header.Get("X-Path") != "/p9" {
		t.Fatalf("after direct: %q", resp.Header.Get("X-Path"))
	}
}

func TestLocalReplies(t *testing.T) { bothPaths(t, localReplies) }

func localReplies(t *testing.T, p path) {
	o := startOrigin(t, echo)
	e := p.start(t, o.addr())
	resp, body := roundTrip(t, e.addr, "GET /direct/x HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 200 || body != "direct body" {
		t.Fatalf("direct: %d %q", resp.StatusCode, body)
	}
	resp, _ = roundTrip(t, e.addr, "GET /down HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 503 {
		t.Fatalf("dead upstream: %d", resp.StatusCode)
	}
	if o.reqs.Load() != 0 {
		t.Fatal("origin saw a request")
	}
}

func TestNoRoute(t *testing.T) { bothPaths(t, noRoute) }

func noRoute(t *testing.T, p path) {
	o := startOrigin(t, echo)
	e := p.start(t, o.addr())
	// No route matches "*" (every route is a path prefix).
	resp, _ := roundTrip(t, e.addr, "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 404 {
		t.Fatalf("no route: %d", resp.StatusCode)
	}
	// A proxy whose router is missing answers 404 too.
	e2 := p.startRouter(t, o.addr(), "missing")
	resp, _ = roundTrip(t, e2.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 404 || o.reqs.Load() != 0 {
		t.Fatalf("no router: %d", resp.StatusCode)
	}
}

func TestNoHealthyUpstream(t *testing.T) { bothPaths(t, noHealthyUpstream) }

func noHealthyUpstream(t *testing.T, p path) {
	o := startOrigin(t, echo)
	e := p.start(t, o.addr())
	cl, _ := e.clusters.Get("c")
	cl.SetHostHealth(o.addr(), false)
	resp, _ := roundTrip(t, e.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 503 {
		t.Fatalf("no healthy upstream: %d", resp.StatusCode)
	}
}

func TestUpstreamTimeout(t *testing.T) { bothPaths(t, upstreamTimeout) }

func upstreamTimeout(t *testing.T, p path) {
	release := make(chan struct{})
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	e := p.start(t, o.addr())
	start := time.Now()
	resp, _ := roundTrip(t, e.addr, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 504 {
		t.Fatalf("timeout: %d", resp.StatusCode)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("504 after %v", d)
	}
}

// rawOrigin runs fn on every accepted connection, then closes it.
func rawOrigin(t *testing.T, fn func(c net.Conn)) string {
	return testutil.StartTCP(t, func(c *net.TCPConn) { fn(c) }).Addr()
}

func TestUpstreamDiesMidBody(t *testing.T) { bothPaths(t, upstreamDiesMidBody) }

func upstreamDiesMidBody(t *testing.T, p path) {
	addr := rawOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
	})
	e := p.start(t, addr)
	c := dial(t, e.addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("body read error %v, want unexpected EOF", err)
	}

	// An upstream that closes before a complete head: 502.
	addr2 := rawOrigin(t, func(c net.Conn) {
		_, _ = http.ReadRequest(bufio.NewReader(c))
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-")
	})
	e2 := p.start(t, addr2)
	resp, _ = roundTrip(t, e2.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 502 {
		t.Fatalf("truncated head: %d", resp.StatusCode)
	}
}

func TestSmuggling(t *testing.T) { bothPaths(t, smuggling) }

func smuggling(t *testing.T, p path) {
	o := startOrigin(t, echo)
	e := p.start(t, o.addr())
	c := dial(t, e.addr)
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	resp, _ := readResp(t, br, "POST")
	if resp.StatusCode != 400 || !resp.Close {
		t.Fatalf("smuggling: %d close %v", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection not closed: %v", err)
	}
	if o.reqs.Load() != 0 || o.conns.Load() != 0 {
		t.Fatal("bytes reached the upstream")
	}
	if n := counter(t, e, "Http1"); n != 1 {
		t.Fatalf("protocol_errors = %v", n)
	}
}

func TestAutoRejectsOtherProtocols(t *testing.T) {
	o := startOrigin(t, echo)
	e := startProxy(t, o.addr())
	c := dial(t, e.addr)
	_, _ = c.Write([]byte{0xda, 0xbb, 0xc2, 0, 0, 0, 0, 0})
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("want EOF, got %v", err)
	}
	if n := counter(t, e, "Auto"); n != 1 {
		t.Fatalf("protocol_errors = %v", n)
	}
}

func counter(t *testing.T, e *env, proto string) float64 {
	return counterValue(t, e.m.ProtocolErrors.WithLabelValues("l", proto))
}

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// An upstream that closes each keep-alive connection right after its response (without
// saying so): the proxy retries a bodiless request on a fresh connection.
func TestStaleIdleConnectionRetried(t *testing.T) {
	staleIdleRetried(t, func(addr string) *env { return startProxy(t, addr) })
}

// staleIdleRetried runs TestStaleIdleConnectionRetried's requests through the proxy
// start returns; each request after the first finds its idle upstream connection closed
// and must be sent again on a new one.
func staleIdleRetried(t *testing.T, start func(upstream string) *env) *env {
	var accepted atomic.Int64
	addr := rawOrigin(t, func(c net.Conn) {
		accepted.Add(1)
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	e := start(addr)
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	for i := 0; i < 5; i++ {
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body := readResp(t, br, "GET")
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		time.Sleep(10 * time.Millisecond) // let the upstream's close arrive
	}
	if n := accepted.Load(); n != 5 {
		t.Fatalf("upstream connections = %d, want 5", n)
	}
	return e
}

// TestStaleIdleConnectionWithBody: the upstream closes each keep-alive connection after
// its response; a request whose body streams through (too large to replay) must not be
// sent on that closed connection: it is looked at first.
func TestStaleIdleConnectionWithBody(t *testing.T) { bothPaths(t, staleIdleWithBody) }

func staleIdleWithBody(t *testing.T, p path) {
	closed := make(chan struct{}, 8)
	addr := rawOrigin(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		b, _ := io.ReadAll(req.Body)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d", len(strconv.Itoa(len(b))), len(b))
		_ = c.Close()
		closed <- struct{}{}
	})
	e := p.start(t, addr)
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	body := strings.Repeat("p", 200000)
	for i := range 3 {
		fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		resp, got := readResp(t, br, http.MethodPost)
		if resp.StatusCode != 200 || got != "200000" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, got)
		}
		<-closed // the upstream closed the connection the proxy keeps
	}
}

// TestClustersSharingAnAddressKeepTheirOwnConnections: two clusters list one upstream
// address; each may configure it differently (TLS server name, breakers), so an idle
// connection one cluster dialled must not carry the other's requests, over HTTP/1 or
// HTTP/2 upstreams. The origin counts the connections it accepted.
func TestClustersSharingAnAddressKeepTheirOwnConnections(t *testing.T) {
	o := h2Origin(t, h2echo)
	routes := `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/a2"},"route":{"cluster_name":"a","upstream_protocol":"Http2"}},
 {"match":{"prefix":"/b2"},"route":{"cluster_name":"b","upstream_protocol":"Http2"}},
 {"match":{"prefix":"/a"},"route":{"cluster_name":"a"}},
 {"match":{"prefix":"/b"},"route":{"cluster_name":"b"}}]}]}`
	clusters := fmt.Sprintf(`[{"name":"a","type":"SIMPLE","hosts":[{"address":%q}]},
	 {"name":"b","type":"SIMPLE","hosts":[{"address":%q}]}]`, o.addr(), o.addr())
	e := startProxyWith(t, routes, clusters)
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	for round, paths := range [][]string{{"/a", "/b", "/a", "/b"}, {"/a2", "/b2", "/a2", "/b2"}} {
		for _, path := range paths {
			if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			if resp, _ := readResp(t, br, http.MethodGet); resp.StatusCode != 200 {
				t.Fatalf("%s: %d", path, resp.StatusCode)
			}
		}
		if n, want := o.conns.Load(), int64(2*(round+1)); n != want {
			t.Fatalf("after %v the upstream saw %d connections, want %d (one per cluster)", paths, n, want)
		}
	}
}

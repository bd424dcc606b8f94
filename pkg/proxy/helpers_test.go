package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/proxy/proxytest"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testTimeout = 10 * time.Second

// origin is an upstream net/http server that counts the connections it accepted.
type origin struct {
	ln     net.Listener
	srv    *http.Server
	conns  atomic.Int64 // opened
	closed atomic.Int64
	reqs   atomic.Int64
}

func startOrigin(t testing.TB, h http.HandlerFunc) *origin {
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
			case http.StateClosed:
				o.closed.Add(1)
			}
		},
		ReadHeaderTimeout: testTimeout,
	}
	go func() { _ = o.srv.Serve(ln) }()
	t.Cleanup(func() { _ = o.srv.Close() })
	return o
}

func (o *origin) addr() string { return o.ln.Addr().String() }

// env is a proxy listening on 127.0.0.1:0.
type env struct {
	addr     string
	px       *proxy.Proxy
	m        *metrics.Set
	clusters *cluster.Manager
}

const routesFmt = `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/direct"},"direct_response":{"status":200,"body":"direct body"}},
 {"match":{"prefix":"/slow"},"route":{"cluster_name":"c","timeout":"200ms"}},
 {"match":{"prefix":"/down"},"route":{"cluster_name":"dead"}},
 {"match":{"prefix":"/rw/"},"route":{"cluster_name":"c","prefix_rewrite":"/rewritten/"}},
 {"match":{"prefix":"/"},"route":{"cluster_name":"c"}}
]}]}`

func startProxy(t testing.TB, upstream string) *env {
	t.Helper()
	return startProxyRouter(t, upstream, "r")
}

func startProxyRouter(t testing.TB, upstream, routerName string, opts ...func(*proxy.Config)) *env {
	t.Helper()
	return path{}.startRouter(t, upstream, routerName, opts...)
}

// path is the HTTP/1 path a test runs on: goroutines (an Auto-downstream proxy served
// by ServeConn) or, with loops, an HTTP/1 proxy on event loops (one, or n when n > 1).
type path struct {
	loops bool
	n     int
	conn  func(*network.ListenerConfig) // adjusts the listener's config; nil: defaults
}

// bothPaths runs test on each path (the loop one is skipped where there are none).
func bothPaths(t *testing.T, test func(t *testing.T, p path)) {
	t.Run("goroutines", func(t *testing.T) { test(t, path{}) })
	t.Run("loops", func(t *testing.T) { test(t, path{loops: true}) })
}

// start is startProxy on p.
func (p path) start(t testing.TB, upstream string, opts ...func(*proxy.Config)) *env {
	t.Helper()
	return p.startRouter(t, upstream, "r", opts...)
}

// startRouter is startProxyRouter on p.
func (p path) startRouter(t testing.TB, upstream, routerName string, opts ...func(*proxy.Config)) *env {
	t.Helper()
	js := fmt.Sprintf(`[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","hosts":[{"address":%q}]},
		{"name":"dead","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","connect_timeout":"200ms","hosts":[{"address":"127.0.0.1:1"}]}]`, upstream)
	return newTestEnvN(t, routesFmt, js, routerName, p, opts...)
}

// startWith is a proxy on p with router "r" from routerJSON and clusters from
// clustersJSON, HTTP/1 downstream.
func (p path) startWith(t testing.TB, routerJSON, clustersJSON string) *env {
	t.Helper()
	return newTestEnv(t, routerJSON, clustersJSON, "r", p.loops, func(c *proxy.Config) { c.Downstream = stream.HTTP1 })
}

// startEnv runs an Auto-downstream proxy on a loopback listener with one router built
// from routerJSON and the clusters in clustersJSON, matching in routerName; opts adjust
// the proxy's config. Everything is stopped when the test ends.
func startEnv(t testing.TB, routerJSON, clustersJSON, routerName string, opts ...func(*proxy.Config)) *env {
	t.Helper()
	return newTestEnv(t, routerJSON, clustersJSON, routerName, false, opts...)
}

// newTestEnv is startEnv, or with loops an HTTP/1-downstream proxy whose listener serves
// it on one event loop (the test skips where there are none).
func newTestEnv(t testing.TB, routerJSON, clustersJSON, routerName string, loops bool, opts ...func(*proxy.Config)) *env {
	t.Helper()
	return newTestEnvN(t, routerJSON, clustersJSON, routerName, path{loops: loops}, opts...)
}

// newTestEnvN is newTestEnv served as p says: on goroutines, or on p.n (at least one)
// event loops, with p.conn adjusting the listener's config.
func newTestEnvN(t testing.TB, routerJSON, clustersJSON, routerName string, p path, opts ...func(*proxy.Config)) *env {
	t.Helper()
	rts := proxytest.Routers(t, routerJSON)
	m := metrics.New()
	mgr := proxytest.Clusters(t, clustersJSON, m)
	pool := buffer.NewPool()
	pcfg := proxy.Config{
		Listener: "l", Downstream: stream.Auto, Routers: rts, RouterName: routerName,
		Clusters: mgr, Pool: pool, Metrics: m,
	}
	if p.loops {
		pcfg.Downstream = stream.HTTP1
	}
	for _, o := range opts {
		o(&pcfg)
	}
	px := proxy.New(pcfg)
	t.Cleanup(func() { _ = px.Close() }) // after the listener's cleanup
	e := &env{px: px, m: m, clusters: mgr}
	if !p.loops {
		e.addr = proxytest.ServeConn(t, px, pool, m, 0, p.conn)
		return e
	}
	if !px.LoopCapable() {
		t.Skip("this proxy cannot be served on event loops here")
	}
	e.addr = proxytest.ServeConn(t, px, pool, m, max(p.n, 1), p.conn)
	return e
}

// dial connects to addr; the connection times out with the test and closes at cleanup.
func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	return testutil.DialConn(t, addr, testTimeout)
}

// roundTrip sends raw on a fresh connection and reads one response.
func roundTrip(t testing.TB, addr, raw string) (*http.Response, string) {
	t.Helper()
	c := dial(t, addr)
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	return readResp(t, br, http.MethodGet)
}

func readResp(t testing.TB, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	return resp, string(b)
}

func client() *http.Client {
	return &http.Client{Timeout: testTimeout, Transport: &http.Transport{DisableCompression: true}}
}

// handoffs is how many of the loop's connections went to goroutines for reason.
func (e *env) handoffs(t *testing.T, reason string) float64 {
	return counterValue(t, e.m.HTTPLoopHandoffs.WithLabelValues("l", reason))
}

// noHandoffs fails the test when the loop handed any connection to the goroutine path.
func (e *env) noHandoffs(t *testing.T) {
	t.Helper()
	for _, r := range []string{"upgrade", "chunked_body", "large_body", "large_head", "no_route",
		"local_answer", "mirror", "upstream_protocol", "no_cluster", "pick_wait", "cluster_dialer", "protocol"} {
		if n := e.handoffs(t, r); n != 0 {
			t.Fatalf("%v connections handed off (%s); the loop should have served them", n, r)
		}
	}
}

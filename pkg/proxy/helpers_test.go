package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testTimeout = 10 * time.Second

// origin is an upstream net/http server that counts the connections it accepted.
type origin struct {
	ln    net.Listener
	srv   *http.Server
	conns atomic.Int64
	reqs  atomic.Int64
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
			if s == http.StateNew {
				o.conns.Add(1)
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
	js := fmt.Sprintf(`[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","hosts":[{"address":%q}]},
		{"name":"dead","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","connect_timeout":"200ms","hosts":[{"address":"127.0.0.1:1"}]}]`, upstream)
	return startEnv(t, routesFmt, js, routerName, opts...)
}

// startEnv runs an Auto-downstream proxy on a loopback listener with one router built
// from routerJSON and the clusters in clustersJSON, matching in routerName; opts adjust
// the proxy's config. Everything is stopped when the test ends.
func startEnv(t testing.TB, routerJSON, clustersJSON, routerName string, opts ...func(*proxy.Config)) *env {
	t.Helper()
	var rc config.RouterCfg
	if err := config.Unmarshal([]byte(routerJSON), &rc); err != nil {
		t.Fatal(err)
	}
	tables, err := router.Build([]config.RouterCfg{rc})
	if err != nil {
		t.Fatal(err)
	}
	rts := new(router.Tables)
	rts.Replace(tables)
	var cls []config.Cluster
	if err := config.Unmarshal([]byte(clustersJSON), &cls); err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	mgr := cluster.NewManager(cluster.Options{Metrics: m})
	if err := mgr.Apply(cls); err != nil {
		t.Fatal(err)
	}
	pool := buffer.NewPool()
	pcfg := proxy.Config{
		Listener: "l", Downstream: stream.Auto, Routers: rts, RouterName: routerName,
		Clusters: mgr, Pool: pool, Metrics: m,
	}
	for _, o := range opts {
		o(&pcfg)
	}
	px := proxy.New(pcfg)
	ln, err := network.NewListener(network.ListenerConfig{
		Name: "l", Network: "tcp", Address: "127.0.0.1:0", BindPort: true,
		Conn: network.ConnOptions{Pool: pool, IdleTimeout: time.Minute}, Handler: px, Metrics: m,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = ln.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		dctx, dcancel := context.WithTimeout(context.Background(), 0)
		ln.Drain(dctx)
		dcancel()
		_ = px.Close()
	})
	return &env{addr: ln.Addr().String(), px: px, m: m, clusters: mgr}
}

func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { _ = c.Close() })
	return c
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

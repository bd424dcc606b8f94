package proxy_test

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// startProxyWith runs a proxy with router "r" built from routerJSON and clusters from
// clustersJSON.
func startProxyWith(t testing.TB, routerJSON, clustersJSON string) *env {
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
	px := proxy.New(proxy.Config{Listener: "l", Downstream: stream.HTTP1, Routers: rts, RouterName: "r", Clusters: mgr, Pool: pool, Metrics: m})
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

const retryRoutes = `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/dead"},"route":{"cluster_name":"dead","retry_policy":{"retry_on":true,"num_retries":2}}},
 {"match":{"prefix":"/"},"route":{"cluster_name":"c","retry_policy":{"retry_on":true,"num_retries":3}}}
]}]}`

// TestRetryConnectFailure: when every connect attempt fails, a bodiless request is
// dialled again num_retries times (counted in upstream_retries_total), then 503.
func TestRetryConnectFailure(t *testing.T) {
	e := startProxyWith(t, retryRoutes, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"127.0.0.1:1"}]},
	 {"name":"dead","type":"SIMPLE","connect_timeout":"200ms","hosts":[{"address":"127.0.0.1:1"}]}]`)
	resp, _ := roundTrip(t, e.addr, "GET /dead HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var mv dto.Metric
	if err := e.m.UpstreamRetries.WithLabelValues("dead").Write(&mv); err != nil {
		t.Fatal(err)
	}
	if n := mv.GetCounter().GetValue(); n != 2 {
		t.Fatalf("retries = %v, want 2", n)
	}
}

// TestRetryBudgetHonoured: with the cluster's max_retries slots all taken, a failed try
// is not retried; once a slot is free it is.
func TestRetryBudgetHonoured(t *testing.T) {
	var fail atomic.Int64
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if fail.Add(-1) >= 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	e := startProxyWith(t, retryRoutes, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+o.addr()+`"}],
	 "circuit_breakers":[{"max_retries":1}]},{"name":"dead","type":"SIMPLE","hosts":[{"address":"127.0.0.1:1"}]}]`)
	cl, ok := e.clusters.Get("c")
	if !ok || !cl.TryAcquireRetry() {
		t.Fatal("cannot take the retry slot")
	}
	fail.Store(1)
	resp, _ := roundTrip(t, e.addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable || o.reqs.Load() != 1 {
		t.Fatalf("breaker full: %d after %d tries", resp.StatusCode, o.reqs.Load())
	}
	cl.ReleaseRetry()
	fail.Store(1)
	resp, body := roundTrip(t, e.addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != http.StatusOK || body != "ok" || o.reqs.Load() != 3 {
		t.Fatalf("slot free: %d %q after %d tries", resp.StatusCode, body, o.reqs.Load())
	}
	// The slot was given back: it can be taken again.
	if !cl.TryAcquireRetry() {
		t.Fatal("retry slot leaked")
	}
	cl.ReleaseRetry()
}

// Package proxytest builds what the in-process proxy tests of several packages (the HTTP
// proxy, the RPC engine, the proxy network filter) set up around the code under test: route
// tables and a cluster manager from their JSON config, and a loopback listener serving a
// connection handler until the test ends. It is for tests only: no non-test code imports it.
package proxytest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// Routers returns route tables built from routerJSON, one router_config.
func Routers(t testing.TB, routerJSON string) *router.Tables {
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
	return rts
}

// Clusters returns a cluster manager with the clusters of clustersJSON (a JSON array)
// applied, counting into m.
func Clusters(t testing.TB, clustersJSON string, m *metrics.Set) *cluster.Manager {
	t.Helper()
	var cls []config.Cluster
	if err := config.Unmarshal([]byte(clustersJSON), &cls); err != nil {
		t.Fatal(err)
	}
	mgr := cluster.NewManager(cluster.Options{Metrics: m})
	if err := mgr.Apply(cls); err != nil {
		t.Fatal(err)
	}
	return mgr
}

// Serve serves h on a listener named "l" on 127.0.0.1:0 and returns its address. When the
// test ends the listener stops accepting and its connections are closed at once (a drain
// with no grace period); h itself is the caller's to close.
func Serve(t testing.TB, h network.Handler, pool *buffer.Pool, m *metrics.Set) string {
	t.Helper()
	ln, err := network.NewListener(network.ListenerConfig{
		Name: "l", Network: "tcp", Address: "127.0.0.1:0", BindPort: true,
		Conn: network.ConnOptions{Pool: pool, IdleTimeout: time.Minute}, Handler: h, Metrics: m,
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
	})
	return ln.Addr().String()
}

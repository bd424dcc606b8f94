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
	"github.com/mosnlite/mosnlite/pkg/network/evloop"
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
	return serve(t, network.ListenerConfig{Handler: h}, pool, m, nil, nil)
}

// ServeConn is Serve (loops 0) or ServeLoopsN (loops > 0) with adjust changing the
// listener's config (connection options, send timeout) first.
func ServeConn(t testing.TB, h interface {
	network.Handler
	network.RawHandler
}, pool *buffer.Pool, m *metrics.Set, loops int, adjust func(*network.ListenerConfig)) string {
	t.Helper()
	if loops <= 0 {
		return serve(t, network.ListenerConfig{Handler: h}, pool, m, nil, adjust)
	}
	g, err := evloop.NewGroup(loops, nil)
	if err != nil {
		t.Skipf("event loops: %v", err)
	}
	return serve(t, network.ListenerConfig{Handler: h, RawHandler: h, Loops: g}, pool, m, g.Close, adjust)
}

// ServeLoops is Serve on one event loop: h serves the sockets it takes (ServeRaw), the
// rest on goroutines. The loop stops after the listener, when the test ends. It skips
// the test where event loops are not supported.
func ServeLoops(t testing.TB, h interface {
	network.Handler
	network.RawHandler
}, pool *buffer.Pool, m *metrics.Set) string {
	t.Helper()
	return ServeLoopsN(t, h, pool, m, 1)
}

// ServeLoopsN is ServeLoops on n event loops, which share the listening socket.
func ServeLoopsN(t testing.TB, h interface {
	network.Handler
	network.RawHandler
}, pool *buffer.Pool, m *metrics.Set, n int) string {
	t.Helper()
	return ServeConn(t, h, pool, m, max(n, 1), nil)
}

func serve(t testing.TB, cfg network.ListenerConfig, pool *buffer.Pool, m *metrics.Set, after func(), adjust func(*network.ListenerConfig)) string {
	t.Helper()
	cfg.Name, cfg.Network, cfg.Address, cfg.BindPort = "l", "tcp", "127.0.0.1:0", true
	cfg.Conn = network.ConnOptions{Pool: pool, IdleTimeout: time.Minute}
	if adjust != nil {
		adjust(&cfg)
	}
	cfg.Metrics = m
	ln, err := network.NewListener(cfg)
	if err != nil {
		if after != nil {
			after()
		}
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
		if after != nil {
			after()
		}
	})
	return ln.Addr().String()
}

package proxy_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// TestMaxRequestsBreaker: an HTTP/1 request takes one max_requests unit for as long as
// it is in flight. With the only unit taken the request is answered 503 "upstream
// overflow" without reaching the upstream; once it is free the request passes, and the
// unit is given back when the request ends.
func TestMaxRequestsBreaker(t *testing.T) {
	o := startOrigin(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	e := startProxyWith(t, retryRoutes, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+o.addr()+`"}],
	 "circuit_breakers":[{"max_requests":1}]},{"name":"dead","type":"SIMPLE","hosts":[{"address":"127.0.0.1:1"}]}]`)
	cl, ok := e.clusters.Get("c")
	if !ok || !cl.TryAcquire(cluster.MaxRequests) {
		t.Fatal("cannot take the max_requests unit")
	}
	resp, body := roundTrip(t, e.addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable || body != "upstream overflow" || o.reqs.Load() != 0 {
		t.Fatalf("breaker full: %d %q, %d upstream requests", resp.StatusCode, body, o.reqs.Load())
	}
	if v := counterValue(t, e.m.UpstreamOverflow.WithLabelValues("c", "requests")); v != 1 {
		t.Fatalf("upstream_overflow_total{breaker=requests} = %v for one refused request", v)
	}
	cl.Release(cluster.MaxRequests)
	for i := range 3 {
		if resp, body := roundTrip(t, e.addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d with the unit free: %d %q", i, resp.StatusCode, body)
		}
		// The unit is given back once the proxy has finished the request, just after the
		// client has the answer: wait for that, or the next request would find it taken.
		testutil.Eventually(t, testTimeout, "the max_requests unit back", func() bool {
			inUse, _ := cl.Usage(cluster.MaxRequests)
			return inUse == 0
		})
	}
}

// TestMaxConnectionsBreaker: with the cluster's one max_connections unit taken, a request
// that needs a new upstream connection is answered 503 "upstream overflow" (flag UO), not
// "upstream connect failed", on both HTTP/1 paths, and the breaker counts it.
func TestMaxConnectionsBreaker(t *testing.T) { bothPaths(t, maxConnectionsBreaker) }

func maxConnectionsBreaker(t *testing.T, p path) {
	o := startOrigin(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	e := newTestEnvN(t, retryRoutes, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+o.addr()+`"}],
	 "circuit_breakers":[{"max_connections":1}]},{"name":"dead","type":"SIMPLE","hosts":[{"address":"127.0.0.1:1"}]}]`, "r", p)
	cl, ok := e.clusters.Get("c")
	if !ok || !cl.TryAcquire(cluster.MaxConnections) {
		t.Fatal("cannot take the max_connections unit")
	}
	resp, body := roundTrip(t, e.addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable || body != "upstream overflow" || o.conns.Load() != 0 {
		t.Fatalf("max_connections reached: %d %q, %d upstream connections", resp.StatusCode, body, o.conns.Load())
	}
	if v := counterValue(t, e.m.UpstreamOverflow.WithLabelValues("c", "connections")); v != 1 {
		t.Fatalf("upstream_overflow_total{breaker=connections} = %v for one refused dial", v)
	}
	cl.Release(cluster.MaxConnections)
	if resp, body := roundTrip(t, e.addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("with the unit free: %d %q", resp.StatusCode, body)
	}
}

// TestMaxPendingRequestsZero: with max_pending_requests 0 no request may wait for a
// healthy host, so with the only host down the answer is an immediate 503 "upstream
// overflow" instead of a wait of pick_timeout (10 s here).
func TestMaxPendingRequestsZero(t *testing.T) {
	o := startOrigin(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	e := startProxyWith(t, retryRoutes, `[{"name":"c","type":"SIMPLE","pick_timeout":"10s","hosts":[{"address":"`+o.addr()+`"}],
	 "circuit_breakers":[{"max_pending_requests":0}]},{"name":"dead","type":"SIMPLE","hosts":[{"address":"127.0.0.1:1"}]}]`)
	cl, _ := e.clusters.Get("c")
	cl.SetHostHealth(o.addr(), false)
	resp, body := roundTrip(t, e.addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable || body != "upstream overflow" {
		t.Fatalf("host down, no waiting allowed: %d %q", resp.StatusCode, body)
	}
	if v := counterValue(t, e.m.UpstreamOverflow.WithLabelValues("c", "pending")); v != 1 {
		t.Fatalf("upstream_overflow_total{breaker=pending} = %v", v)
	}
	cl.SetHostHealth(o.addr(), true)
	if resp, body := roundTrip(t, e.addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("host back up: %d %q", resp.StatusCode, body)
	}
}

package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// startProxyWith runs a proxy with router "r" built from routerJSON and clusters from
// clustersJSON.
func startProxyWith(t testing.TB, routerJSON, clustersJSON string) *env {
	t.Helper()
	return startEnv(t, routerJSON, clustersJSON, "r", func(c *proxy.Config) { c.Downstream = stream.HTTP1 })
}

const retryRoutes = `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/dead"},"route":{"cluster_name":"dead","retry_policy":{"retry_on":true,"num_retries":2}}},
 {"match":{"prefix":"/"},"route":{"cluster_name":"c","retry_policy":{"retry_on":true,"num_retries":3}}}
]}]}`

// TestRetryConnectFailure: when every connect attempt fails, a bodiless request is
// dialled again num_retries times (counted in upstream_retries_total), then 503.
func TestRetryConnectFailure(t *testing.T) { bothPaths(t, retryConnectFailure) }

func retryConnectFailure(t *testing.T, p path) {
	e := p.startWith(t, retryRoutes, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"127.0.0.1:1"}]},
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
func TestRetryBudgetHonoured(t *testing.T) { bothPaths(t, retryBudgetHonoured) }

func retryBudgetHonoured(t *testing.T, p path) {
	var fail atomic.Int64
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if fail.Add(-1) >= 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	e := p.startWith(t, retryRoutes, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+o.addr()+`"}],
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

// TestRetryStatusAndPerTryTimeout: a 5xx answer and a try that outlives retry_timeout are
// retried on the other host; a 200 is not; upstream_retries_total counts the retries.
func TestRetryStatusAndPerTryTimeout(t *testing.T) { bothPaths(t, retryStatusAndPerTryTimeout) }

func retryStatusAndPerTryTimeout(t *testing.T, p path) {
	bad := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)  // then net/http notices the proxy closing the connection
		if r.URL.Path == "/slow" { // until the proxy gives up on the try
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	good := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, "good "+string(b))
	})
	routes := `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/"},"route":{"cluster_name":"c","timeout":"5s","retry_policy":{"retry_on":true,"num_retries":1,"retry_timeout":"500ms"}}}]}]}`
	e := p.startWith(t, routes, `[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","hosts":[{"address":"`+bad.addr()+`"},{"address":"`+good.addr()+`"}]}]`)
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	for i, path := range []string{"/a", "/slow", "/b", "/slow"} {
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody", path)
		resp, body := readResp(t, br, http.MethodPost)
		if resp.StatusCode != 200 || body != "good body" {
			t.Fatalf("request %d (%s): %d %q", i, path, resp.StatusCode, body)
		}
	}
	var mv dto.Metric
	if err := e.m.UpstreamRetries.WithLabelValues("c").Write(&mv); err != nil {
		t.Fatal(err)
	}
	// Round robin alternates: every request whose first try went to the bad host was
	// retried once on the good one.
	if n, tries := mv.GetCounter().GetValue(), bad.reqs.Load(); n != float64(tries) || tries == 0 {
		t.Fatalf("retries = %v, tries on the failing host = %d", n, tries)
	}
	if good.reqs.Load() != 4 {
		t.Fatalf("the good host answered %d requests, want 4", good.reqs.Load())
	}
}

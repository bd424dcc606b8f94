//go:build linux

package proxy_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/proxy/proxytest"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// The try's deadline bounds its waits for a host on the HTTP/2 paths too: to an HTTP/2
// upstream (from HTTP/1 and HTTP/2 clients), and an HTTP/2 client's first pick for an
// HTTP/1 upstream. Same answers and timing as TestPickWaitTryTimeout.

// tryTimeoutH2Case is one request: the route's timeout and retry policy, the cluster's
// pick_timeout, which hosts are down, and what the proxy must answer.
type tryTimeoutH2Case struct {
	name           string
	route, perTry  string
	retries        int
	pick           string
	bothDown       bool
	retryPick      bool // the origin is up, answers 503 once and goes down: the retry's pick waits
	code           int
	log            string
	refused, tries float64
	atLeast, until time.Duration
}

var tryTimeoutH2Cases = []tryTimeoutH2Case{
	// The first try's dial is refused and waits for the host that is down until its
	// retry_timeout; the retry does the same.
	{"retry_timeout", "10s", "200ms", 1, "3s", false, false, http.StatusGatewayTimeout, "504 UT", 2, 1, 350 * time.Millisecond, 2500 * time.Millisecond},
	// No retry policy: the route timeout ends the wait.
	{"route_timeout", "300ms", "", 0, "3s", false, false, http.StatusGatewayTimeout, "504 UT", 1, 0, 250 * time.Millisecond, 2500 * time.Millisecond},
	// No host up at the first pick.
	{"first_pick", "10s", "200ms", 1, "3s", true, false, http.StatusGatewayTimeout, "504 UT", 0, 1, 350 * time.Millisecond, 2500 * time.Millisecond},
	// The pick between the tries waits within the retry's time.
	{"retry_pick", "10s", "200ms", 1, "3s", true, true, http.StatusGatewayTimeout, "504 UT", 0, 1, 150 * time.Millisecond, 2500 * time.Millisecond},
	// pick_timeout shorter than the try's time: each wait ends with it, 503.
	{"pick_timeout", "10s", "5s", 1, "300ms", false, false, http.StatusServiceUnavailable, "503 UF", 2, 1, 550 * time.Millisecond, 4 * time.Second},
}

// startTryTimeoutH2 serves a proxy with down and up as its protocols, adjusted by opts,
// and cluster "c" of a host that refuses connections and an origin (h2c and HTTP/1) that
// is down; the refusing host is down too when tc.bothDown, and the origin up when
// tc.retryPick.
func startTryTimeoutH2(t *testing.T, down, up stream.Protocol, tc tryTimeoutH2Case, opts ...func(*proxy.Config)) (*pickWaitEnv, *h2env) {
	t.Helper()
	var e *pickWaitEnv
	var failed atomic.Bool
	o := h2Origin(t, func(w http.ResponseWriter, _ *http.Request) {
		if tc.retryPick && !failed.Swap(true) {
			e.cl.SetHostHealth(e.o.addr(), false)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("live"))
	})
	dead := testutil.RefusedAddr(t)
	policy := ""
	if tc.retries > 0 {
		policy = fmt.Sprintf(`,"retry_policy":{"retry_on":true,"num_retries":%d,"retry_timeout":%q}`, tc.retries, tc.perTry)
	}
	logPath := filepath.Join(t.TempDir(), "access.log")
	m := metrics.New()
	mgr := proxytest.Clusters(t, fmt.Sprintf(`[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","pick_timeout":%q,
		"hosts":[{"address":%q},{"address":%q}]}]`, tc.pick, dead, o.addr()), m)
	cfg := proxy.Config{Listener: "l", Downstream: down, Upstream: up, RouterName: "r",
		Routers: proxytest.Routers(t, fmt.Sprintf(`{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
		{"match":{"prefix":"/"},"route":{"cluster_name":"c","timeout":%q%s}}]}]}`, tc.route, policy)),
		Clusters: mgr, Pool: buffer.NewPool(), Metrics: m}
	addr, h := serveProxy(t, cfg, append(opts, withAccessLog(t, logPath, "%response_code% %response_flag%"))...)
	e = &pickWaitEnv{env: &env{addr: addr, m: m, clusters: mgr}, dead: dead, o: o, logPath: logPath}
	e.cl, _ = mgr.Get("c")
	if !tc.retryPick {
		e.cl.SetHostHealth(o.addr(), false)
	}
	if tc.bothDown {
		e.cl.SetHostHealth(dead, false)
	}
	return e, &h2env{addr: addr, m: m, h: h}
}

// checkTryTimeoutH2 sends a GET, checks its answer, the connects refused, the retries,
// the breakers and the log line, then that the client's connection serves a request once
// the origin is up.
func checkTryTimeoutH2(t *testing.T, down, up stream.Protocol, tc tryTimeoutH2Case, opts ...func(*proxy.Config)) {
	e, he := startTryTimeoutH2(t, down, up, tc, opts...)
	c := safeClient(t, down)
	start := time.Now()
	resp, body := get(t, c, http.MethodGet, "http://"+e.addr+"/", "")
	after := time.Since(start)
	if resp.StatusCode != tc.code || after < tc.atLeast || after > tc.until {
		t.Fatalf("answer %d %q after %v; want %d in [%v, %v]", resp.StatusCode, body, after, tc.code, tc.atLeast, tc.until)
	}
	t.Logf("%d after %v", resp.StatusCode, after)
	if n := e.refusals(); n != tc.refused {
		t.Errorf("%v connects refused; want %v", n, tc.refused)
	}
	if n := e.retries(t); n != tc.tries {
		t.Errorf("%v retries; want %v", n, tc.tries)
	}
	e.settled(t, cluster.MaxConnections, cluster.MaxPendingRequests, cluster.MaxRequests, cluster.MaxRetries)
	if lines := he.logLines(t, e.logPath, 1); len(lines) != 1 || lines[0] != tc.log {
		t.Fatalf("access log %q; want %q", lines, tc.log)
	}
	e.cl.SetHostHealth(e.o.addr(), true)
	if resp, body := get(t, c, http.MethodGet, "http://"+e.addr+"/", ""); resp.StatusCode != 200 || body != "live" {
		t.Fatalf("once the origin is up: %d %q", resp.StatusCode, body)
	}
	e.settled(t, cluster.MaxPendingRequests, cluster.MaxRequests, cluster.MaxRetries)
}

// To an HTTP/2 upstream (h2retry.go), from the HTTP/2 driver and from HTTP/1 clients.
func TestPickWaitTryTimeoutH2Upstream(t *testing.T) {
	for _, tc := range tryTimeoutH2Cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, down := range []stream.Protocol{stream.HTTP2, stream.HTTP1} {
				t.Run(string(down), func(t *testing.T) { checkTryTimeoutH2(t, down, stream.HTTP2, tc) })
			}
		})
	}
}

// An HTTP/2 client's bodiless request on the direct path to an HTTP/1 upstream: its first
// pick waits within the try's time, as its later waits do.
func TestPickWaitTryTimeoutH2DirectFirstPick(t *testing.T) {
	for _, tc := range tryTimeoutH2Cases {
		if !tc.bothDown {
			continue // covered by TestPickWaitTryTimeoutH2Direct
		}
		t.Run(tc.name, func(t *testing.T) { checkTryTimeoutH2(t, stream.HTTP2, stream.HTTP1, tc) })
	}
	// No retry policy: the route timeout ends the first pick's wait.
	t.Run("first_pick_route_timeout", func(t *testing.T) {
		checkTryTimeoutH2(t, stream.HTTP2, stream.HTTP1, tryTimeoutH2Case{"", "300ms", "", 0, "3s", true, false,
			http.StatusGatewayTimeout, "504 UT", 0, 0, 250 * time.Millisecond, 2500 * time.Millisecond})
	})
}

// An HTTP/2 client's request through stream filters to an HTTP/1 upstream (h2ToH1) gets
// one try: its dial's wait ends with the try's time too, and its first pick waits as on
// the other paths.
func TestPickWaitTryTimeoutH2Filters(t *testing.T) {
	filters := withFilters(t, "payload_limit", `{"max_entity_size":100000}`)
	for _, tc := range []tryTimeoutH2Case{
		{"retry_timeout", "10s", "200ms", 1, "3s", false, false, http.StatusGatewayTimeout, "504 UT", 1, 0, 150 * time.Millisecond, 2500 * time.Millisecond},
		{"first_pick", "10s", "200ms", 1, "3s", true, false, http.StatusGatewayTimeout, "504 UT", 0, 1, 350 * time.Millisecond, 2500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) { checkTryTimeoutH2(t, stream.HTTP2, stream.HTTP1, tc, filters) })
	}
}

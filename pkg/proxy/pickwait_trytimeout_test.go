//go:build linux

package proxy_test

import (
	"bufio"
	"fmt"
	"net/http"
	"path/filepath"
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

// A try's wait for a host (pick_timeout) ends with the try's deadline: the route timeout
// from when the request was received, tightened by the per-try timeout (retry_timeout)
// from the try's start. Both HTTP/1 paths give the same answer at about the same time: a
// deadline that passes during the wait is an upstream timeout (504); a wait that
// pick_timeout ends is a connect failure (503).

// startTryTimeout is startPickWait on p, with a retry policy on the route (none when
// retries is 0) and the refusing host marked down too when bothDown.
func startTryTimeout(t *testing.T, p path, route, perTry string, retries int, pick string, bothDown bool) *pickWaitEnv {
	t.Helper()
	o := startOrigin(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("live")) })
	dead := testutil.RefusedAddr(t)
	logPath := filepath.Join(t.TempDir(), "access.log")
	policy := ""
	if retries > 0 {
		policy = fmt.Sprintf(`,"retry_policy":{"retry_on":true,"num_retries":%d,"retry_timeout":%q}`, retries, perTry)
	}
	e := newTestEnvN(t, fmt.Sprintf(`{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
		{"match":{"prefix":"/"},"route":{"cluster_name":"c","timeout":%q%s}}]}]}`, route, policy),
		fmt.Sprintf(`[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","pick_timeout":%q,
		"hosts":[{"address":%q},{"address":%q}]}]`, pick, dead, o.addr()),
		"r", p, withAccessLog(t, logPath, "%response_code% %response_flag%"))
	cl, _ := e.clusters.Get("c")
	cl.SetHostHealth(o.addr(), false)
	if bothDown {
		cl.SetHostHealth(dead, false)
	}
	return &pickWaitEnv{env: e, cl: cl, dead: dead, o: o, logPath: logPath}
}

// retries is how many retries the proxy made to cluster "c".
func (e *pickWaitEnv) retries(t *testing.T) float64 {
	return counterValue(t, e.m.UpstreamRetries.WithLabelValues("c"))
}

func TestPickWaitTryTimeout(t *testing.T) {
	for _, tc := range []struct {
		name            string
		route, perTry   string
		retries         int
		pick            string
		bothDown        bool
		code            int
		log             string
		refused, tries  float64 // connects refused, retries made
		atLeast, before time.Duration
	}{
		// The repro: each try waits for the host that is down until its retry_timeout;
		// the retry does the same. Before the fix the goroutine path waited pick_timeout
		// per try (about 6 s) and answered 503.
		{"retry_timeout", "10s", "200ms", 1, "3s", false, http.StatusGatewayTimeout, "504 UT", 2, 1, 350 * time.Millisecond, 2500 * time.Millisecond},
		// No retry policy: the route timeout ends the wait.
		{"route_timeout", "300ms", "", 0, "3s", false, http.StatusGatewayTimeout, "504 UT", 1, 0, 250 * time.Millisecond, 2500 * time.Millisecond},
		// No host up at the first pick (the loop hands the request to a goroutine).
		{"first_pick", "10s", "200ms", 1, "3s", true, http.StatusGatewayTimeout, "504 UT", 0, 1, 350 * time.Millisecond, 2500 * time.Millisecond},
		// pick_timeout shorter than the try's time: each wait ends with it, 503.
		{"pick_timeout", "10s", "5s", 1, "300ms", false, http.StatusServiceUnavailable, "503 UF", 2, 1, 550 * time.Millisecond, 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bothPaths(t, func(t *testing.T, p path) {
				e := startTryTimeout(t, p, tc.route, tc.perTry, tc.retries, tc.pick, tc.bothDown)
				c := dial(t, e.addr)
				br := bufio.NewReader(c)
				a := recv(t, send(t, c, br))
				if a.code != tc.code || a.after < tc.atLeast || a.after > tc.before {
					t.Fatalf("answer %d %q after %v; want %d in [%v, %v]", a.code, a.body, a.after, tc.code, tc.atLeast, tc.before)
				}
				t.Logf("%d after %v", a.code, a.after)
				if n := e.refusals(); n != tc.refused {
					t.Errorf("%v connects refused; want %v", n, tc.refused)
				}
				if n := e.retries(t); n != tc.tries {
					t.Errorf("%v retries; want %v", n, tc.tries)
				}
				e.settled(t, cluster.MaxConnections, cluster.MaxPendingRequests, cluster.MaxRequests, cluster.MaxRetries)
				if lines := logLines(t, e.px.AccessLog().Flush, e.logPath, 1); len(lines) != 1 || lines[0] != tc.log {
					t.Fatalf("access log %q; want %q", lines, tc.log)
				}
				// The connection goes on serving once a host is up.
				e.cl.SetHostHealth(e.o.addr(), true)
				if a := recv(t, send(t, c, br)); a.code != 200 || a.body != "live" {
					t.Fatalf("next request on the connection: %d %q", a.code, a.body)
				}
				e.settled(t, cluster.MaxPendingRequests, cluster.MaxRequests, cluster.MaxRetries)
			})
		})
	}
}

// The HTTP/2 driver's direct path to HTTP/1 upstreams (h2fast.go) bounds its dials' waits
// for a host the same way. (Its first pick, before the request's body is known, waits
// up to pick_timeout still.)
func TestPickWaitTryTimeoutH2Direct(t *testing.T) {
	for _, tc := range []struct {
		name, route, perTry string
		retries             int
		refused, tries      float64
		atLeast             time.Duration
	}{
		{"retry_timeout", "10s", "200ms", 1, 2, 1, 350 * time.Millisecond},
		{"route_timeout", "300ms", "", 0, 1, 0, 250 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := startOrigin(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("live")) })
			dead := testutil.RefusedAddr(t)
			policy := ""
			if tc.retries > 0 {
				policy = fmt.Sprintf(`,"retry_policy":{"retry_on":true,"num_retries":%d,"retry_timeout":%q}`, tc.retries, tc.perTry)
			}
			logPath := filepath.Join(t.TempDir(), "access.log")
			m := metrics.New()
			mgr := proxytest.Clusters(t, fmt.Sprintf(`[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","pick_timeout":"3s",
				"hosts":[{"address":%q},{"address":%q}]}]`, dead, o.addr()), m)
			cfg := proxy.Config{Listener: "l", Downstream: stream.HTTP2, Upstream: stream.HTTP1, RouterName: "r",
				Routers: proxytest.Routers(t, fmt.Sprintf(`{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
				{"match":{"prefix":"/"},"route":{"cluster_name":"c","timeout":%q%s}}]}]}`, tc.route, policy)),
				Clusters: mgr, Pool: buffer.NewPool(), Metrics: m}
			addr, h := serveProxy(t, cfg, withAccessLog(t, logPath, "%response_code% %response_flag%"))
			e := &pickWaitEnv{env: &env{m: m, clusters: mgr}, dead: dead, o: o}
			e.cl, _ = mgr.Get("c")
			e.cl.SetHostHealth(o.addr(), false)
			c := safeClient(t, stream.HTTP2)
			start := time.Now()
			resp, body := get(t, c, http.MethodGet, "http://"+addr+"/", "")
			after := time.Since(start)
			if resp.StatusCode != http.StatusGatewayTimeout || after < tc.atLeast || after > 2500*time.Millisecond {
				t.Fatalf("answer %d %q after %v; want 504 in [%v, 2.5s]", resp.StatusCode, body, after, tc.atLeast)
			}
			t.Logf("%d after %v", resp.StatusCode, after)
			if n := e.refusals(); n != tc.refused {
				t.Errorf("%v connects refused; want %v", n, tc.refused)
			}
			if n := e.retries(t); n != tc.tries {
				t.Errorf("%v retries; want %v", n, tc.tries)
			}
			e.settled(t, cluster.MaxConnections, cluster.MaxPendingRequests, cluster.MaxRequests, cluster.MaxRetries)
			he := &h2env{addr: addr, m: m, h: h}
			if lines := he.logLines(t, logPath, 1); len(lines) != 1 || lines[0] != "504 UT" {
				t.Fatalf("access log %q; want %q", lines, "504 UT")
			}
			e.cl.SetHostHealth(o.addr(), true)
			if resp, body := get(t, c, http.MethodGet, "http://"+addr+"/", ""); resp.StatusCode != 200 || body != "live" {
				t.Fatalf("once the origin is up: %d %q", resp.StatusCode, body)
			}
			e.settled(t, cluster.MaxPendingRequests, cluster.MaxRequests, cluster.MaxRetries)
		})
	}
}

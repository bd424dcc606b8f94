package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/proxy/proxytest"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// TestOutlierDetection5xx: with outlier_detection, upstream 5xx answers count against
// their host on every HTTP path (HTTP/1 on goroutines and on loops, HTTP/2 downstream,
// HTTP/2 upstream): of two round-robin hosts, the one that answers 500 is ejected after
// consecutive_5xx of them, and the requests after that all reach the good one.
func TestOutlierDetection5xx(t *testing.T) {
	for _, tc := range []struct {
		name     string
		down, up stream.Protocol
		loops    bool
		close    bool // the bad host closes the connection after each answer
	}{
		{"http1", stream.HTTP1, stream.HTTP1, false, false},
		{"http1 loops", stream.HTTP1, stream.HTTP1, true, false},
		{"http2 to http1", stream.HTTP2, stream.HTTP1, false, false},
		{"http2 to http2", stream.HTTP2, stream.HTTP2, false, false},
		{"http1 to http2", stream.HTTP1, stream.HTTP2, false, false},
		// Each request to the bad host connects anew: a connect is not a success.
		{"http1 close each", stream.HTTP1, stream.HTTP1, false, true},
		{"http1 loops close each", stream.HTTP1, stream.HTTP1, true, true},
		{"http2 to http1 close each", stream.HTTP2, stream.HTTP1, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := startOrigin
			if tc.up == stream.HTTP2 {
				start = h2Origin
			}
			bad := start(t, func(w http.ResponseWriter, _ *http.Request) {
				if tc.close {
					w.Header().Set("Connection", "close")
				}
				w.WriteHeader(http.StatusInternalServerError)
			})
			good := start(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
			js := fmt.Sprintf(`[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","hosts":[{"address":%q},{"address":%q}],
				"outlier_detection":{"consecutive_5xx":3,"base_ejection_time":"1h","max_ejection_percent":50}}]`, bad.addr(), good.addr())
			m := metrics.New()
			mgr := proxytest.Clusters(t, js, m)
			cl, _ := mgr.Get("c")
			cfg := proxy.Config{Listener: "l", Downstream: tc.down, Upstream: tc.up, Routers: proxytest.Routers(t, routesFmt),
				RouterName: "r", Clusters: mgr, Pool: buffer.NewPool(), Metrics: m}
			var addr string
			if tc.loops {
				px := proxy.New(cfg)
				t.Cleanup(func() { _ = px.Close() })
				if !px.LoopCapable() {
					t.Skip("no event loops here")
				}
				addr = proxytest.ServeConn(t, px, cfg.Pool, m, 1, nil)
			} else {
				addr, _ = serveProxy(t, cfg)
			}
			client := &http.Client{}
			if tc.down == stream.HTTP2 {
				client.Transport = h2cTransport(t)
			}
			var statuses []int
			for range 12 {
				resp, _ := get(t, client, "GET", "http://"+addr+"/x", "")
				statuses = append(statuses, resp.StatusCode)
			}
			if h := hostHealth(cl, bad.addr()); !h.Ejected {
				t.Fatalf("the host answering 500 is not ejected (statuses %v)", statuses)
			}
			for i, s := range statuses[6:] {
				if s != 200 {
					t.Fatalf("request %d after the ejection: %d (statuses %v)", 7+i, s, statuses)
				}
			}
		})
	}
}

func hostHealth(cl *cluster.Cluster, addr string) cluster.Health {
	for _, h := range cl.Hosts() {
		if h.Addr() == addr {
			return h.Health()
		}
	}
	return cluster.Health{}
}

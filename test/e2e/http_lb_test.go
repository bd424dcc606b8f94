package e2e

import (
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/test/framework"
)

// TestHTTPRoundRobinSpread: HTTP requests go where the balancer picked. With round robin
// over two upstreams, HTTP/1 and HTTP/2 clients, to HTTP/1 and HTTP/2 upstreams, each
// upstream gets exactly half of the requests. (The connection used to be dialled by a
// second pick, so a new connection went to the other host.)
func TestHTTPRoundRobinSpread(t *testing.T) {
	for _, c := range []struct{ down, up string }{{"Http1", "Http1"}, {"Http2", "Http1"}, {"Http1", "Http2"}, {"Http2", "Http2"}} {
		t.Run(c.down+" to "+c.up, func(t *testing.T) {
			var n [2]atomic.Int64
			addrs := make([]string, 2)
			for i := range addrs {
				h := func(w http.ResponseWriter, _ *http.Request) { n[i].Add(1); _, _ = io.WriteString(w, "ok") }
				if c.up == "Http2" {
					addrs[i], _ = h2cUpstream(t, h)
				} else {
					addrs[i] = h1Upstream(t, h)
				}
			}
			addr := framework.FreePort(t)
			framework.StartProxy(t, httpProxyConfig(addr, c.down, c.up, []any{routeTo("/", nil)}, addrs...))
			cl := &http.Client{Timeout: 30 * time.Second}
			if c.down == "Http2" {
				cl = h2cClient(t)
			}
			getEach(t, cl, "http://"+addr+"/", 20, "ok")
			if a, b := n[0].Load(), n[1].Load(); a != 10 || b != 10 {
				t.Fatalf("requests per upstream %d and %d, want 10 and 10", a, b)
			}
		})
	}
}

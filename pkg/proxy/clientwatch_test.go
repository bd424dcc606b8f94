package proxy_test

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/network/tlstest"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// TestClientLeavesWhileWaiting: a client that resets or closes its connection while its
// request waits for the upstream's response head ends the upstream request (the origin
// sees its request cancelled within 2 s, where it would answer after 10 s), is not
// retried under a retry policy, and is logged with the DC flag. Also when the client's
// FIN comes behind a pipelined request, and through TLS (goroutine path).
func TestClientLeavesWhileWaiting(t *testing.T) {
	routes := `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/h2/"},"route":{"cluster_name":"c","upstream_protocol":"Http2","retry_policy":{"retry_on":true,"num_retries":3}}},
 {"match":{"prefix":"/"},"route":{"cluster_name":"c","retry_policy":{"retry_on":true,"num_retries":3}}}]}]}`
	cases := []struct {
		name string
		tls  bool
		req  string // default: a GET to an HTTP/1 upstream
		quit func(c net.Conn)
	}{
		{name: "reset", quit: func(c net.Conn) { c.(*net.TCPConn).SetLinger(0); c.Close() }},
		{name: "close", quit: func(c net.Conn) { c.Close() }},
		{name: "close-behind-pipelined", quit: func(c net.Conn) {
			io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
			c.Close()
		}},
		{name: "tls-close", tls: true, quit: func(c net.Conn) { c.Close() }},
		// An HTTP/2 upstream (goroutine path on either listener): the stream is cancelled.
		{name: "h2-upstream-close", req: "GET /h2/wait HTTP/1.1\r\nHost: a\r\n\r\n", quit: func(c net.Conn) { c.Close() }},
		{name: "h2-upstream-body-reset", req: "POST /h2/wait HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
			quit: func(c net.Conn) { c.(*net.TCPConn).SetLinger(0); c.Close() }},
	}
	bothPaths(t, func(t *testing.T, p path) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				if tc.tls && p.loops {
					t.Skip("TLS listeners are served on goroutines")
				}
				var got, cancelled atomic.Int32
				o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
					got.Add(1)
					select {
					case <-r.Context().Done():
						cancelled.Add(1)
					case <-time.After(10 * time.Second):
						io.WriteString(w, "late")
					}
				})
				js := `[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","hosts":[{"address":"` + o.addr() + `"}]}]`
				logPath := filepath.Join(t.TempDir(), "access.log")
				var ca *tlstest.CA
				p := p // this case's listener
				if tc.tls {
					ca = tlstest.NewCA(t)
					cert := ca.Leaf(t, "a").TLS(t)
					p.conn = func(lc *network.ListenerConfig) {
						lc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
					}
				}
				e := newTestEnvN(t, routes, js, "r", p, withAccessLog(t, logPath, "%response_flag%"))
				c := dial(t, e.addr)
				if tc.tls {
					tc := tls.Client(c, &tls.Config{RootCAs: ca.Pool(), ServerName: "a"})
					if err := tc.Handshake(); err != nil {
						t.Fatal(err)
					}
					c = tc
				}
				req := tc.req
				if req == "" {
					req = "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n"
				}
				io.WriteString(c, req)
				testutil.Eventually(t, testTimeout, "the request at the origin", func() bool { return got.Load() == 1 })
				tc.quit(c)
				deadline := time.Now().Add(2 * time.Second)
				for cancelled.Load() == 0 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				if n, k := got.Load(), cancelled.Load(); k != 1 || n != 1 {
					t.Fatalf("2 s after the client left, the origin had %d requests, %d of them cancelled; want 1 and 1", n, k)
				}
				time.Sleep(300 * time.Millisecond) // a retry would be at the origin by now
				if n := got.Load(); n != 1 {
					t.Fatalf("the origin got %d requests; want 1 (no retry, nothing after the abort)", n)
				}
				lines := logLines(t, e.px.AccessLog().Flush, logPath, 1)
				if len(lines) != 1 || !strings.Contains(lines[0], "DC") {
					t.Fatalf("access log %q; want one line flagged DC", lines)
				}
			})
		}
	})
}

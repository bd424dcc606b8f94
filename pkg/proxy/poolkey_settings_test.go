package proxy_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/network/tlstest"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// startSettingsOrigin serves HTTP/1 and HTTP/2 (h2c prior knowledge, or ALPN h2 over
// TLS), plain or TLS on one address. Each answer says how its connection came: "plain",
// or "tls" and the server name the client sent, then the protocol. A request to /hold
// waits for release (or the test's end) before it is answered; held is told when one
// arrives.
func startSettingsOrigin(t *testing.T, cert tls.Certificate) (addr string, held, release chan struct{}) {
	t.Helper()
	held, release = make(chan struct{}, 4), make(chan struct{})
	done := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held <- struct{}{}
			select {
			case <-release:
			case <-done:
			}
		}
		how := "plain"
		if r.TLS != nil {
			how = "tls " + r.TLS.ServerName
		}
		fmt.Fprintf(w, "%s %s", how, r.Proto)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: testTimeout, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	// The proxy writes first: a request, or a ClientHello once the cluster has TLS.
	sl := testutil.NewPlainOrTLS(&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}).Listener(ln, testTimeout)
	go func() { _ = srv.Serve(sl) }()
	t.Cleanup(func() {
		close(done)
		_ = srv.Close()
	})
	return ln.Addr().String(), held, release
}

const settingsRoutes = `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/"},"route":{"cluster_name":"c"}}]}]}`

// TestProxyClusterTLSUpdateMovesNewRequests: when cluster "c" is updated in place from
// plain to upstream TLS on the same address, and then to another TLS server name, the
// next requests go out on connections made with the new settings, over an HTTP/1
// upstream (the idle pool) and an HTTP/2 one (the multiplexed pool); a request in flight
// on a connection of the old settings finishes on it.
func TestProxyClusterTLSUpdateMovesNewRequests(t *testing.T) {
	for _, tc := range []struct {
		name  string
		up    stream.Protocol
		proto string
		alpn  string
	}{
		{"http1", stream.HTTP1, "HTTP/1.1", ""},
		{"http2", stream.HTTP2, "HTTP/2.0", "h2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := tlstest.NewCA(t)
			addr, held, release := startSettingsOrigin(t, ca.Leaf(t, "127.0.0.1", "one.test", "two.test").TLS(t))
			e := newTestEnvN(t, settingsRoutes, fmt.Sprintf(`[{"name":"c","type":"SIMPLE","hosts":[{"address":%q}]}]`, addr),
				"r", path{}, func(c *proxy.Config) { c.Upstream = tc.up })
			c := client()
			base := "http://" + e.addr
			want := func(path, body string) {
				t.Helper()
				resp, got := get(t, c, http.MethodGet, base+path, "")
				if resp.StatusCode != http.StatusOK || got != body {
					t.Fatalf("GET %s: %d %q; want 200 %q", path, resp.StatusCode, got, body)
				}
			}
			update := func(sni string) {
				t.Helper()
				cfg := config.Cluster{Name: "c", Type: "SIMPLE", Hosts: []config.Host{{Address: addr}},
					TLSContext: &config.TLSConfig{Status: true, CACert: ca.PEM, ServerName: sni, ALPN: tc.alpn}}
				if err := e.clusters.AddOrUpdate(cfg); err != nil {
					t.Fatal(err)
				}
			}
			inFlight := make(chan string, 1)
			go func() {
				// Its own client: the held request keeps a connection to the proxy busy.
				hc := client()
				defer hc.CloseIdleConnections()
				resp, err := hc.Get(base + "/hold")
				if err != nil {
					inFlight <- err.Error()
					return
				}
				defer resp.Body.Close()
				var b [64]byte
				n, _ := resp.Body.Read(b[:])
				inFlight <- fmt.Sprintf("%d %s", resp.StatusCode, b[:n])
			}()
			select {
			case <-held:
			case <-time.After(testTimeout):
				t.Fatal("the held request did not reach the upstream")
			}
			want("/", "plain "+tc.proto) // an HTTP/1 connection then waits idle in the pool

			update("one.test")
			want("/", "tls one.test "+tc.proto)
			update("two.test")
			want("/", "tls two.test "+tc.proto)

			close(release)
			select {
			case got := <-inFlight:
				if got != "200 plain "+tc.proto {
					t.Fatalf("the request in flight during the updates got %q; want 200 on its plain connection", got)
				}
			case <-time.After(testTimeout):
				t.Fatal("the request in flight during the updates did not finish")
			}
			c.CloseIdleConnections()
		})
	}
}

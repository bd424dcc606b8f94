package e2e

//lint:file-ignore SA1019 x/net/http2's Transport is the h2c client the other HTTP/2 tests use too.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"
	"golang.org/x/net/http2"

	"github.com/mosnlite/mosnlite/test/framework"
	"github.com/mosnlite/mosnlite/test/framework/rpcpeer"
)

// Leak checks of the mosnlite process itself (ROBUSTNESS.md row 44): per protocol, a
// mixed round of traffic runs once as a warm-up and three more times; after each round its
// clients are closed and the upstreams drop their connections, and the proxy must be back
// at the baseline taken after the warm-up (descriptors, goroutines; framework.LeakCheck)
// within 10 s, and its heap after a GC must not grow round over round.
//
// Idle pooled upstream connections legitimately outlive a round: the upstreams closing
// their connections is what ends them, and the proxy must notice. Dropping the upstreams'
// connections also ends any upstream request the proxy failed to cancel, so that is
// checked on its own, before any drop (TestLeakClientAbortWhileWaiting).

// leakRounds runs round as a warm-up, takes the baseline, then runs it three times,
// checking after each. round closes the clients it opened; drop has the upstreams close
// their connections (so that the proxy's pooled ones see EOF) and does what else the
// protocol needs for the proxy to let go of them (dropHTTP1).
func leakRounds(t *testing.T, p *framework.Proxy, round, drop func(t *testing.T)) {
	t.Helper()
	round(t)
	drop(t)
	if t.Failed() {
		t.FailNow()
	}
	lc := framework.NewLeakCheck(t, p)
	for i := 1; i <= 3; i++ {
		round(t)
		drop(t)
		if t.Failed() {
			t.FailNow()
		}
		lc.Check(t)
		h := lc.RecordHeap(t)
		t.Logf("round %d: heap in use after GC %d bytes", i, h)
	}
	lc.CheckHeap(t)
}

// leakHTTPConfig is one HTTP listener (down → up protocols) with routes, clusters
// name → address, and an admin endpoint.
func leakHTTPConfig(t *testing.T, listen, down, up string, routes []any, clusters map[string]string) string {
	t.Helper()
	var cs []any
	for name, addr := range clusters {
		cs = append(cs, map[string]any{"name": name, "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN",
			"connect_timeout": "1s", "hosts": []any{map[string]any{"address": addr}}})
	}
	pc := map[string]any{"downstream_protocol": down, "upstream_protocol": up, "router_config_name": "r"}
	cfg := map[string]any{
		"servers": []any{map[string]any{
			"default_log_path": "stderr",
			"routers": []any{map[string]any{
				"router_config_name": "r",
				"virtual_hosts":      []any{map[string]any{"name": "v", "domains": []any{"*"}, "routers": routes}},
			}},
			"listeners": []any{map[string]any{
				"name": "l7", "address": listen, "bind_port": true,
				"filter_chains": []any{map[string]any{"filters": []any{map[string]any{"type": "proxy", "config": pc}}}},
			}},
		}},
		"cluster_manager": map[string]any{"clusters": cs},
		"drain":           map[string]any{"timeout": "2s"},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return framework.WithAdmin(t, string(b))
}

func clusterRoute(prefix, cluster string, action map[string]any) any {
	a := map[string]any{"cluster_name": cluster}
	for k, v := range action {
		a[k] = v
	}
	return map[string]any{"match": map[string]any{"prefix": prefix}, "route": a}
}

// leakServer is an HTTP upstream (HTTP/1, and h2c with prior knowledge): /echo answers
// with the request body, /big with 256 KiB, /slow after 500 ms or when its request is
// cancelled, /close with "Connection: close". slow counts the /slow requests it holds.
type leakServer struct {
	*httptest.Server
	slow atomic.Int64
}

func leakUpstream(t *testing.T) *leakServer {
	big := bytes.Repeat([]byte("0123456789abcdef"), 16<<10)
	ls := &leakServer{}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Write(big)
		case "/slow":
			ls.slow.Add(1)
			defer ls.slow.Add(-1)
			select {
			case <-r.Context().Done():
			case <-time.After(500 * time.Millisecond):
			}
			io.WriteString(w, "slow")
		case "/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "closing")
		default: // the whole body first: net/http's HTTP/1 server is not full duplex
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		}
	}))
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetHTTP1(true)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Start()
	t.Cleanup(s.Close)
	ls.Server = s
	return ls
}

// settled waits until the upstream holds no /slow request: the proxy ended the requests
// whose clients gave up (or the upstream answered them). Dropping the upstream's
// connections before that would have the proxy retry them on new connections, which
// then stay pooled.
func (ls *leakServer) settled(t *testing.T) {
	t.Helper()
	waitUntil(t, "no /slow request at the upstream", 5*time.Second, func() bool { return ls.slow.Load() == 0 })
}

func hostOf(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// leakDo sends one request and checks the status and, unless want is "", the body.
func leakDo(c *http.Client, method, url string, body io.Reader, want string) error {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || want != "" && string(got) != want {
		return fmt.Errorf("%s %s: %d, %d bytes, %v", method, url, resp.StatusCode, len(got), err)
	}
	return nil
}

// parallel runs f(i) for i in [0, n) on n goroutines and reports their errors.
func parallel(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// onlyReader hides a reader's other methods: the request has no known length and goes
// chunked.
type onlyReader struct{ io.Reader }

// http1Round is keep-alive clients with small, large (streamed) and chunked bodies, a
// large response, and requests on connections of their own.
func http1Round(listen string) func(t *testing.T) {
	return func(t *testing.T) {
		small, large := strings.Repeat("s", 1024), strings.Repeat("L", 100<<10)
		tr := &http.Transport{MaxIdleConnsPerHost: 4}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		base := "http://" + listen
		parallel(t, 4, func(int) error {
			for j := 0; j < 10; j++ {
				var err error
				switch j % 5 {
				case 0:
					err = leakDo(c, "GET", base+"/echo", nil, "")
				case 1:
					err = leakDo(c, "POST", base+"/echo", strings.NewReader(small), small)
				case 2:
					err = leakDo(c, "POST", base+"/echo", strings.NewReader(large), large)
				case 3:
					err = leakDo(c, "POST", base+"/echo", onlyReader{strings.NewReader(small)}, small)
				case 4:
					err = leakDo(c, "GET", base+"/big", nil, "")
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		once := &http.Transport{DisableKeepAlives: true}
		defer once.CloseIdleConnections()
		oc := &http.Client{Transport: once, Timeout: 10 * time.Second}
		parallel(t, 3, func(int) error { return leakDo(oc, "POST", base+"/echo", strings.NewReader(small), small) })
	}
}

// dropHTTP1 makes the upstreams close their connections; the proxy notices (on loops the
// socket's EOF, on goroutines the pool's probe of its idle connections every 2 s).
func dropHTTP1(ups ...interface{ CloseClientConnections() }) func(t *testing.T) {
	return func(t *testing.T) {
		for _, u := range ups {
			u.CloseClientConnections()
		}
	}
}

// startLeakHTTP1 starts mosnlite (event loops "on" or "off") with an HTTP/1 listener in
// front of a leakUpstream.
func startLeakHTTP1(t *testing.T, loops string) (p *framework.Proxy, listen string, up *leakServer) {
	t.Setenv("MOSNLITE_EVENT_LOOPS", loops)
	up = leakUpstream(t)
	listen = framework.FreePort(t)
	p = framework.StartProxy(t, leakHTTPConfig(t, listen, "Http1", "Http1",
		[]any{clusterRoute("/", "up", nil)}, map[string]string{"up": hostOf(up.Server)}))
	return p, listen, up
}

// TestLeakHTTP1: HTTP/1 to HTTP/1, on event loops and with a goroutine per connection.
func TestLeakHTTP1(t *testing.T) {
	for _, mode := range []string{"on", "off"} {
		t.Run("event-loops-"+mode, func(t *testing.T) {
			p, listen, up := startLeakHTTP1(t, mode)
			leakRounds(t, p, http1Round(listen), dropHTTP1(up))
		})
	}
}

// TestLeakHTTP1PoolPeerClose: an idle pooled upstream connection whose upstream closed it
// is closed by the proxy within the bound, with no further request to that host. On event
// loops the socket's EOF closes it; the goroutine path's pool (connpool.PingPong) probes
// its idle connections every 2 s.
func TestLeakHTTP1PoolPeerClose(t *testing.T) {
	for _, mode := range []string{"on", "off"} {
		t.Run("event-loops-"+mode, func(t *testing.T) {
			p, listen, up := startLeakHTTP1(t, mode)
			lc := framework.NewLeakCheck(t, p) // before any traffic: nothing pooled yet
			lc.GoroutineSlack = 1              // the pool's host watcher, started by its first use, stays
			http1Round(listen)(t)
			up.CloseClientConnections()
			lc.Check(t)
		})
	}
}

// TestLeakCheckFailsOnHeldConnection: the check itself can fail. A client connection
// kept open past the check holds a socket in the proxy (and, with goroutines, the
// goroutine serving it); the check must report both, then pass once the client closes.
func TestLeakCheckFailsOnHeldConnection(t *testing.T) {
	for _, mode := range []string{"on", "off"} {
		t.Run("event-loops-"+mode, func(t *testing.T) {
			p, listen, up := startLeakHTTP1(t, mode)
			http1Round(listen)(t)
			dropHTTP1(up)(t)
			lc := framework.NewLeakCheck(t, p)

			held := framework.Dial(t, listen)
			defer held.Close()
			io.WriteString(held, "GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp, _ := readResponse(t, bufio.NewReader(held), "GET"); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			lc.Wait = time.Second
			err := lc.Settle()
			if err == nil {
				t.Fatal("the check passed with a client connection open")
			}
			t.Logf("with a client connection held, the check reports:\n%v", err)
			want := fmt.Sprintf("tcp %s -> %s ESTABLISHED", listen, held.LocalAddr())
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the report does not list the held connection (%q):\n%v", want, err)
			}
			if mode == "off" && !strings.Contains(err.Error(), "pkg/network.(*Listener).serveConn") {
				t.Errorf("the report does not list the goroutine serving the held connection:\n%v", err)
			}
			held.Close()
			dropHTTP1(up)(t)
			lc.Wait = 0
			lc.Check(t)
		})
	}
}

// waitingUpstream answers /wait only when its request is cancelled (or after 8 s); inflight
// counts the /wait requests it holds. Anything else gets "ok".
func waitingUpstream(t *testing.T) (*httptest.Server, *atomic.Int64) {
	inflight := new(atomic.Int64)
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/wait":
		case "/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "closing")
			return
		default:
			io.WriteString(w, "ok")
			return
		}
		inflight.Add(1)
		defer inflight.Add(-1)
		select {
		case <-r.Context().Done():
		case <-time.After(8 * time.Second):
		}
	}))
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetHTTP1(true)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Start()
	t.Cleanup(s.Close)
	return s, inflight
}

// TestLeakClientAbortWhileWaiting: a client that goes away while its requests wait for
// the upstream's answer (the route's timeout is the default 15 s) ends them upstream: the
// upstream sees them cancelled within 3 s, and the proxy is back at its baseline within
// the check's bound. HTTP/1 clients reset their connections (RST) or close them (FIN);
// the HTTP/1 proxy ends an upstream request by closing its connection, HTTP/2 resets the
// stream.
func TestLeakClientAbortWhileWaiting(t *testing.T) {
	for _, tc := range []struct{ name, proto, loops string }{
		{name: "http1-reset-event-loops-on", proto: "Http1", loops: "on"},
		{name: "http1-close-event-loops-on", proto: "Http1", loops: "on"},
		{name: "http1-reset-event-loops-off", proto: "Http1", loops: "off"},
		{name: "http1-close-event-loops-off", proto: "Http1", loops: "off"},
		{name: "http2-cancel", proto: "Http2", loops: "on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("MOSNLITE_EVENT_LOOPS", tc.loops)
			up, inflight := waitingUpstream(t)
			listen := framework.FreePort(t)
			p := framework.StartProxy(t, leakHTTPConfig(t, listen, tc.proto, tc.proto,
				[]any{clusterRoute("/", "up", nil)}, map[string]string{"up": hostOf(up)}))
			const n = 4
			var wait func() // sends n requests to /wait, returns once they are at the upstream
			var abort func()
			if tc.proto == "Http2" {
				c, closeAll := leakH2Client()
				if err := leakDo(c, "GET", "http://"+listen+"/", nil, "ok"); err != nil { // warm-up
					t.Fatal(err)
				}
				closeAll()
				up.CloseClientConnections()
				ctx, cancel := context.WithCancel(context.Background())
				errc := make(chan error, n)
				wait = func() {
					for i := 0; i < n; i++ {
						go func() {
							req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+listen+"/wait", nil)
							resp, err := c.Do(req)
							if err == nil {
								resp.Body.Close()
							}
							errc <- err
						}()
					}
				}
				abort = func() {
					cancel() // RST_STREAM
					for i := 0; i < n; i++ {
						if err := <-errc; err == nil {
							t.Error("a cancelled request succeeded")
						}
					}
					closeAll()
				}
			} else {
				if st, err := leakStatus(listen, "/"); err != nil || st != 200 { // warm-up
					t.Fatal(st, err)
				}
				dropHTTP1(up)(t)
				var conns []*net.TCPConn
				wait = func() {
					for i := 0; i < n; i++ {
						c := framework.Dial(t, listen)
						io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
						conns = append(conns, c)
					}
				}
				abort = func() {
					for _, c := range conns {
						if strings.Contains(tc.name, "reset") {
							c.SetLinger(0)
						}
						c.Close()
					}
				}
			}
			lc := framework.NewLeakCheck(t, p)
			wait()
			waitUntil(t, "the requests at the upstream", 5*time.Second, func() bool { return inflight.Load() == n })
			abort()
			const bound = 3 * time.Second // the upstream would answer after 8 s
			deadline := time.Now().Add(bound)
			for inflight.Load() != 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if k := inflight.Load(); k != 0 {
				t.Errorf("%d upstream requests still open %s after their clients went away", k, bound)
			}
			if tc.proto == "Http2" {
				up.CloseClientConnections() // the pooled upstream connection stays, idle
			}
			lc.Check(t)
		})
	}
}

// leakH2Client is an h2c client (prior knowledge) and a func that closes every connection
// it made: after cancelled streams x/net/http2 may not count a connection idle yet, and
// CloseIdleConnections would leave it open.
func leakH2Client() (*http.Client, func()) {
	var mu sync.Mutex
	var conns []net.Conn
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err == nil {
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
			return c, err
		},
	}
	closeAll := func() {
		tr.CloseIdleConnections()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, closeAll
}

// TestLeakHTTP2: h2c to h2c: concurrent streams on two client connections, bodies both
// ways, and streams the client cancels while the upstream is still answering.
func TestLeakHTTP2(t *testing.T) {
	up := leakUpstream(t)
	listen := framework.FreePort(t)
	p := framework.StartProxy(t, leakHTTPConfig(t, listen, "Http2", "Http2",
		[]any{clusterRoute("/", "up", nil)}, map[string]string{"up": hostOf(up.Server)}))
	round := func(t *testing.T) {
		small, large := strings.Repeat("s", 1024), strings.Repeat("L", 200<<10)
		base := "http://" + listen
		for k := 0; k < 2; k++ {
			c, closeAll := leakH2Client() // a connection of its own
			parallel(t, 20, func(i int) error {
				switch i % 4 {
				case 0:
					return leakDo(c, "GET", base+"/big", nil, "")
				case 1:
					return leakDo(c, "POST", base+"/echo", strings.NewReader(large), large)
				case 2:
					ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
					defer cancel()
					req, _ := http.NewRequestWithContext(ctx, "GET", base+"/slow", nil)
					if resp, err := c.Do(req); err == nil { // the client gives up: RST_STREAM
						resp.Body.Close()
						return fmt.Errorf("/slow answered within 50ms: %d", resp.StatusCode)
					}
					return nil
				default:
					return leakDo(c, "POST", base+"/echo", strings.NewReader(small), small)
				}
			})
			closeAll()
		}
		up.settled(t)
	}
	drop := func(t *testing.T) { up.CloseClientConnections() }
	leakRounds(t, p, round, drop)
}

// TestLeakTCPProxy: tcp_proxy sessions that echo and half-close, and sessions the client
// ends abruptly (a reset) with data in flight; on event loops and with goroutines.
func TestLeakTCPProxy(t *testing.T) {
	for _, mode := range []string{"on", "off"} {
		t.Run("event-loops-"+mode, func(t *testing.T) {
			t.Setenv("MOSNLITE_EVENT_LOOPS", mode)
			up := framework.EchoServer(t, "BYE")
			listen := framework.FreePort(t)
			p := framework.StartProxy(t, framework.WithAdmin(t,
				tcpProxyConfig(listen, "LB_ROUNDROBIN", []host{{Address: up.Addr()}}, nil)))
			round := func(t *testing.T) {
				payload := make([]byte, 64<<10)
				rand.Read(payload)
				parallel(t, 8, func(i int) error {
					c, err := net.DialTimeout("tcp", listen, 5*time.Second)
					if err != nil {
						return err
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(10 * time.Second))
					if i%4 == 3 { // abort: write, then reset without reading
						c.Write(payload)
						c.(*net.TCPConn).SetLinger(0)
						return nil
					}
					go func() {
						c.Write(payload)
						c.(*net.TCPConn).CloseWrite()
					}()
					got, err := io.ReadAll(c)
					if err != nil || !bytes.Equal(got, append(append([]byte{}, payload...), "BYE"...)) {
						return fmt.Errorf("session %d: %d bytes back, %v", i, len(got), err)
					}
					return nil
				})
			}
			leakRounds(t, p, round, func(*testing.T) { up.CloseConns() })
		})
	}
}

// rpcLeakConfig is an RPC proxy listener (proto: "bolt", or "X" with sub_protocol dubbo)
// with routes by service to clusters, and an admin endpoint.
func rpcLeakConfig(t *testing.T, listen string, proxy map[string]any, routes []any, clusters map[string]string) string {
	var cs []any
	for name, addr := range clusters {
		cs = append(cs, rpcCluster(name, addr))
	}
	return framework.WithAdmin(t, rpcProxyConfig(listen, proxy, routes, cs))
}

// TestLeakBolt: bolt v1 and v2 requests in flight on two client connections.
func TestLeakBolt(t *testing.T) {
	a := startBoltPeer(t, rpcpeer.BoltServerOptions{Name: "a"})
	listen := framework.FreePort(t)
	p := framework.StartProxy(t, rpcLeakConfig(t, listen, map[string]any{"downstream_protocol": "bolt"},
		[]any{rpcRoute("A", "", hdr{"service", "svc.a"})}, map[string]string{"A": a.Addr()}))
	round := func(t *testing.T) {
		ctx := rpcCtx(t, 10*time.Second)
		for k := 0; k < 2; k++ {
			cl, err := rpcpeer.DialBolt(listen, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			parallel(t, 50, func(i int) error {
				content := bytes.Repeat([]byte{byte(i)}, 1+i*100)
				r, err := cl.Call(ctx, rpcpeer.BoltRequest(byte(1+i%2), "svc.a", "echo", content))
				if err != nil {
					return err
				}
				if m := r.Message(); m.Status != 0 || !bytes.Equal(m.Content, content) {
					return fmt.Errorf("call %d: status %d", i, m.Status)
				}
				return nil
			})
			cl.Close()
		}
	}
	leakRounds(t, p, round, func(*testing.T) { a.CloseConns() })
}

// TestLeakDubbo: Dubbo two-way, one-way and heartbeat requests on two client connections.
func TestLeakDubbo(t *testing.T) {
	a := startDubboPeer(t, "a")
	listen := framework.FreePort(t)
	p := framework.StartProxy(t, rpcLeakConfig(t, listen,
		map[string]any{"downstream_protocol": "X", "extend_config": map[string]any{"sub_protocol": "dubbo"}},
		[]any{rpcRoute("A", "", hdr{"service", echoIface})}, map[string]string{"A": a.Addr()}))
	round := func(t *testing.T) {
		ctx := rpcCtx(t, 10*time.Second)
		for k := 0; k < 2; k++ {
			cl, err := rpcpeer.DialDubbo(listen, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			parallel(t, 50, func(i int) error {
				svc := dubboSvc(echoIface, "", "1.0.0", "echo")
				switch i % 10 {
				case 8:
					return cl.Oneway(svc, []any{"ow"}, nil)
				case 9:
					_, err := cl.Heartbeat(ctx)
					return err
				}
				arg := strings.Repeat("x", 1+i*100)
				res, err := cl.Call(ctx, svc, []any{arg}, nil)
				if err != nil {
					return err
				}
				if res.Status != hessian.Response_OK || res.Value != arg {
					return fmt.Errorf("call %d: status %d", i, res.Status)
				}
				return nil
			})
			cl.Close()
		}
	}
	leakRounds(t, p, round, func(*testing.T) { a.CloseConns() })
}

// resetServer reads a request head, then resets the connection (SO_LINGER 0).
func resetServer(t *testing.T) *framework.TCPServer {
	return framework.StartTCP(t, func(c *net.TCPConn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		c.SetLinger(0)
	})
}

// hangServer reads everything and answers nothing, until the proxy closes.
func hangServer(t *testing.T) *framework.TCPServer {
	return framework.StartTCP(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) })
}

// abortMidRequest sends a head announcing a body of 1 MiB and 4 KiB of it, then closes
// (reset when rst).
func abortMidRequest(addr string, rst bool) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", 1<<20, strings.Repeat("b", 4<<10))
	time.Sleep(20 * time.Millisecond) // let the proxy start forwarding
	if rst {
		c.(*net.TCPConn).SetLinger(0)
	}
	return nil
}

// abortMidResponse asks for path and resets the connection after the response's first
// KiB, or, with wait, that long after sending the request (before any answer).
func abortMidResponse(addr, path string, wait time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path)
	if wait > 0 {
		time.Sleep(wait) // the request is at the upstream; the client gives up
	} else if _, err := io.ReadFull(c, make([]byte, 1024)); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	c.(*net.TCPConn).SetLinger(0)
	return nil
}

// leakStatus sends one request on a connection of its own and returns the status.
func leakStatus(addr, path string) (int, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + addr + path)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestLeakFailures: rounds where requests fail: upstream resets, route timeouts on an
// upstream that never answers, a dead upstream, clients that abort mid-request,
// mid-response and while waiting; HTTP/1 on event loops and goroutines, bolt and
// tcp_proxy. (With goroutines, a client that resets while waiting is noticed only when the
// upstream answers, after 500 ms: TestLeakClientAbortWhileWaiting.)
func TestLeakFailures(t *testing.T) {
	for _, mode := range []string{"on", "off"} {
		t.Run("http1-event-loops-"+mode, func(t *testing.T) {
			t.Setenv("MOSNLITE_EVENT_LOOPS", mode)
			up, rst, hang := leakUpstream(t), resetServer(t), hangServer(t)
			listen := framework.FreePort(t)
			routes := []any{
				clusterRoute("/reset", "reset", nil),
				clusterRoute("/hang", "hang", map[string]any{"timeout": "200ms"}),
				clusterRoute("/dead", "dead", nil),
				clusterRoute("/", "up", nil),
			}
			p := framework.StartProxy(t, leakHTTPConfig(t, listen, "Http1", "Http1", routes, map[string]string{
				"up": hostOf(up.Server), "reset": rst.Addr(), "hang": hang.Addr(), "dead": deadAddr(t)}))
			round := func(t *testing.T) {
				http1Round(listen)(t)
				parallel(t, 16, func(i int) error {
					switch i % 8 {
					case 0, 1:
						return wantStatus(listen, "/reset", 502, 503)
					case 2:
						return wantStatus(listen, "/hang", 504)
					case 3:
						return abortMidRequest(listen, false)
					case 4:
						return abortMidRequest(listen, true)
					case 5:
						return abortMidResponse(listen, "/big", 0)
					case 6:
						return abortMidResponse(listen, "/slow", 100*time.Millisecond)
					default:
						return wantStatus(listen, "/dead", 502, 503)
					}
				})
				up.settled(t)
			}
			leakRounds(t, p, round, func(t *testing.T) {
				rst.CloseConns()
				hang.CloseConns()
				dropHTTP1(up)(t)
			})
		})
	}

	t.Run("bolt", func(t *testing.T) {
		a := startBoltPeer(t, rpcpeer.BoltServerOptions{Name: "a", SlowDelay: time.Second})
		d := startBoltPeer(t, rpcpeer.BoltServerOptions{Name: "d"})
		listen := framework.FreePort(t)
		routes := []any{
			rpcRoute("A", "200ms", hdr{"service", "svc.timeout"}),
			rpcRoute("A", "", hdr{"service", "svc.a"}),
			rpcRoute("D", "", hdr{"service", "svc.closer"}),
			rpcRoute("DEAD", "", hdr{"service", "svc.dead"}),
		}
		p := framework.StartProxy(t, rpcLeakConfig(t, listen, map[string]any{"downstream_protocol": "bolt"}, routes,
			map[string]string{"A": a.Addr(), "D": d.Addr(), "DEAD": deadAddr(t)}))
		round := func(t *testing.T) {
			ctx := rpcCtx(t, 10*time.Second)
			cl, err := rpcpeer.DialBolt(listen, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			parallel(t, 24, func(i int) error {
				var m = rpcpeer.BoltRequest(1, "svc.a", "echo", []byte("x"))
				switch i % 6 {
				case 0:
					m = rpcpeer.BoltRequest(1, "svc.timeout", rpcpeer.MethodSlow, []byte("x"))
				case 1:
					m = rpcpeer.BoltRequest(2, "svc.dead", "echo", []byte("x"))
				case 2:
					m = rpcpeer.BoltRequest(1, "svc.closer", rpcpeer.MethodClose, []byte("x"))
				}
				r, err := cl.Call(ctx, m)
				if err != nil {
					return fmt.Errorf("call %d: %w", i, err)
				}
				if st := r.Message().Status; (st == 0) != (i%6 > 2) {
					return fmt.Errorf("call %d (%s): status %d", i, m.Headers[0].Value, st)
				}
				return nil
			})
			// Slow calls in flight when the client goes away.
			for i := 0; i < 4; i++ {
				if _, err := cl.Send(encodeBolt(t, rpcpeer.BoltRequest(1, "svc.a", rpcpeer.MethodSlow, []byte("x")))); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(50 * time.Millisecond)
			cl.Close()
		}
		leakRounds(t, p, round, func(*testing.T) { a.CloseConns(); d.CloseConns() })
	})

	t.Run("tcp_proxy", func(t *testing.T) {
		rst := framework.StartTCP(t, func(c *net.TCPConn) {
			c.Read(make([]byte, 1))
			c.SetLinger(0)
		})
		listen, dead := framework.FreePort(t), framework.FreePort(t)
		cfg := tcpProxyConfig(listen, "LB_ROUNDROBIN", []host{{Address: rst.Addr()}, {Address: dead}}, nil)
		p := framework.StartProxy(t, framework.WithAdmin(t, cfg))
		round := func(t *testing.T) {
			parallel(t, 8, func(i int) error {
				c, err := net.DialTimeout("tcp", listen, 5*time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				c.Write([]byte("hello"))
				io.Copy(io.Discard, c) // ends with the upstream's reset or the proxy's close
				return nil
			})
		}
		leakRounds(t, p, round, func(*testing.T) { rst.CloseConns() })
	})
}

// wantStatus sends GET path on a connection of its own and wants one of the statuses.
func wantStatus(addr, path string, want ...int) error {
	st, err := leakStatus(addr, path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, w := range want {
		if st == w {
			return nil
		}
	}
	return fmt.Errorf("%s: status %d, want one of %v", path, st, want)
}

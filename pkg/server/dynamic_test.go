package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/extension"
	"github.com/mosnlite/mosnlite/pkg/extension/builtin"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// prefixUpstream answers every read with prefix + the bytes read, so a test can tell
// which upstream a proxied connection reached.
func prefixUpstream(t *testing.T, prefix string) string {
	t.Helper()
	return testutil.StartTCP(t, func(c *net.TCPConn) {
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write(append([]byte(prefix), buf[:n]...)); err != nil {
				return
			}
		}
	}).Addr()
}

// running starts s.Run and stops it (with the drain) at cleanup.
func running(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	testutil.Eventually(t, 10*time.Second, "running", s.running.Load)
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run = %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return")
		}
	})
}

// parseListeners decodes a JSON list of listeners through the config parser.
func parseListeners(t *testing.T, js string) []config.Listener {
	t.Helper()
	cfg, _, err := config.Parse([]byte(`{"servers":[{"listeners":`+js+`}]}`), config.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Servers[0].Listeners
}

func tcpListener(name, addr, cluster string) string {
	return fmt.Sprintf(`{"name":%q,"address":%q,"filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":%q}}]}]}`, name, addr, cluster)
}

// exchange writes msg on c and reads len(want) bytes back.
func exchange(t *testing.T, c net.Conn, msg, want string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
		t.Fatalf("read %q, %v; want %q", buf, err, want)
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addrOf(t *testing.T, s *Server, name string) string {
	t.Helper()
	a := s.Addrs()[name]
	if a == nil {
		t.Fatalf("listener %q not running (have %v)", name, s.Addrs())
	}
	return a.String()
}

func freePort(t *testing.T) string { return testutil.FreeAddr(t) }

func TestSetClusters(t *testing.T) {
	s := newServer(t, cfgFor(t, echoUpstream(t), `{"timeout":"1s"}`))
	defer s.closeAll()

	err := s.SetClusters(OwnerXDS, []config.Cluster{{Name: "up", Hosts: []config.Host{{Address: "127.0.0.1:1"}}}})
	if err == nil || !strings.Contains(err.Error(), "static") || !strings.Contains(err.Error(), "xds") {
		t.Fatalf("clash = %v; want an error naming both owners", err)
	}
	// All or nothing: one bad cluster, nothing added.
	err = s.SetClusters(OwnerXDS, []config.Cluster{
		{Name: "a", Hosts: []config.Host{{Address: "127.0.0.1:1"}}},
		{Name: "b", LBType: "LB_NOPE", Hosts: []config.Host{{Address: "127.0.0.1:2"}}},
	})
	if err == nil || !strings.Contains(err.Error(), "clusters[1].lb_type") {
		t.Fatalf("bad cluster = %v; want the path clusters[1].lb_type", err)
	}
	if _, ok := s.Clusters().Get("a"); ok {
		t.Fatal("cluster a added by a failed SetClusters")
	}
	if err := s.SetClusters(OwnerXDS, []config.Cluster{{Name: "a", Type: config.ClusterEDS}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetClusterHosts("a", []config.Host{{Address: "127.0.0.1:7"}, {Address: "127.0.0.1:8"}}); err != nil {
		t.Fatal(err)
	}
	c, _ := s.Clusters().Get("a")
	if h := c.Hosts(); len(h) != 2 || h[0].Addr() != "127.0.0.1:7" {
		t.Fatalf("hosts after SetClusterHosts = %v", h)
	}
	// Host state is kept by address across updates.
	c.SetHostHealth("127.0.0.1:7", false)
	if err := s.SetClusterHosts("a", []config.Host{{Address: "127.0.0.1:7"}, {Address: "127.0.0.1:9"}}); err != nil {
		t.Fatal(err)
	}
	c, _ = s.Clusters().Get("a")
	for _, h := range c.Hosts() {
		if h.Addr() == "127.0.0.1:7" && h.Healthy() {
			t.Fatal("host 127.0.0.1:7 lost its health state")
		}
	}
	// CDS again without hosts: the EDS hosts stay.
	if err := s.SetClusters(OwnerXDS, []config.Cluster{{Name: "a", Type: config.ClusterEDS}}); err != nil {
		t.Fatal(err)
	}
	c, _ = s.Clusters().Get("a")
	if len(c.Hosts()) != 2 {
		t.Fatalf("EDS hosts lost on a CDS update: %v", c.Hosts())
	}
	// The file cannot take a name another owner holds either.
	next := cfgFor(t, "127.0.0.1:1", `{"timeout":"1s"}`)
	next.Servers[0].Listeners[0].Address = addrOf(t, s, "l4")
	next.ClusterManager.Clusters = append(next.ClusterManager.Clusters, config.Cluster{Name: "a", Hosts: []config.Host{{Address: "127.0.0.1:2"}}})
	if err := s.Reload(next); err == nil || !strings.Contains(err.Error(), `cluster "a" (static) is already defined by xds`) {
		t.Fatalf("reload clash = %v", err)
	}
	if c, _ := s.Clusters().Get("up"); c.Hosts()[0].Addr() == "127.0.0.1:1" {
		t.Fatal("a failed reload changed cluster up")
	}
	if err := s.SetClusterHosts("nope", nil); err == nil {
		t.Fatal("SetClusterHosts on an unknown cluster succeeded")
	}
	if err := s.SetClusterHosts("a", []config.Host{{Address: "not an address"}}); err == nil {
		t.Fatal("bad host accepted")
	}
	// Removal, even of a cluster a listener names (static "up" stays, xds owns only a).
	if err := s.SetClusters(OwnerXDS, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Clusters().Get("a"); ok {
		t.Fatal("cluster a not removed")
	}
	if _, ok := s.Clusters().Get("up"); !ok {
		t.Fatal("static cluster up removed by another owner")
	}
}

func TestSetListenersWhileRunning(t *testing.T) {
	s := newServer(t, cfgFor(t, prefixUpstream(t, "A:"), `{"timeout":"5s"}`))
	running(t, s)
	if err := s.SetClusters(OwnerXDS, []config.Cluster{{Name: "b", Hosts: []config.Host{{Address: prefixUpstream(t, "B:")}}}}); err != nil {
		t.Fatal(err)
	}

	// A new listener serves while Run runs.
	if err := s.SetListeners(OwnerXDS, parseListeners(t, `[`+tcpListener("x", "127.0.0.1:0", "b")+`]`)); err != nil {
		t.Fatal(err)
	}
	xAddr := addrOf(t, s, "x")
	cx := dial(t, xAddr)
	exchange(t, cx, "1", "B:1")

	// Unchanged x keeps its socket and its open connection; y is added.
	if err := s.SetListeners(OwnerXDS, parseListeners(t, `[`+tcpListener("x", "127.0.0.1:0", "b")+`,`+tcpListener("y", "127.0.0.1:0", "up")+`]`)); err != nil {
		t.Fatal(err)
	}
	if got := addrOf(t, s, "x"); got != xAddr {
		t.Fatalf("unchanged listener moved from %s to %s", xAddr, got)
	}
	exchange(t, cx, "2", "B:2")
	exchange(t, dial(t, xAddr), "3", "B:3")
	exchange(t, dial(t, addrOf(t, s, "y")), "4", "A:4")

	// Name clash across owners, and all or nothing: nothing of a failed call serves.
	err := s.SetListeners(OwnerDubboRegistry, parseListeners(t, `[`+tcpListener("z", "127.0.0.1:0", "up")+`,`+tcpListener("x", "127.0.0.1:0", "up")+`]`))
	if err == nil || !strings.Contains(err.Error(), "xds") || !strings.Contains(err.Error(), OwnerDubboRegistry) {
		t.Fatalf("clash = %v; want an error naming both owners", err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	err = s.SetListeners(OwnerDubboRegistry, parseListeners(t, `[`+tcpListener("z", "127.0.0.1:0", "up")+`,`+tcpListener("w", busy.Addr().String(), "up")+`]`))
	if err == nil || !strings.Contains(err.Error(), "listeners[1] (w)") {
		t.Fatalf("busy address = %v; want listeners[1] (w)", err)
	}
	if _, ok := s.Addrs()["z"]; ok {
		t.Fatal("listener z of a failed SetListeners is running")
	}
	err = s.SetListeners(OwnerDubboRegistry, parseListeners(t, `[{"name":"v","address":"127.0.0.1:0","filter_chains":[{"filters":[{"type":"tcp_proxy","config":{}}]}]}]`))
	if err == nil || !strings.Contains(err.Error(), "listeners[0].filter_chains[0].filters[0].config.cluster") {
		t.Fatalf("invalid listener = %v; want its JSON path", err)
	}

	// Removing x: it stops accepting, its open connection keeps working while it drains.
	if err := s.SetListeners(OwnerXDS, parseListeners(t, `[`+tcpListener("y", "127.0.0.1:0", "up")+`]`)); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Addrs()["x"]; ok {
		t.Fatal("x still listed")
	}
	if c, err := net.DialTimeout("tcp", xAddr, time.Second); err == nil {
		c.Close()
		t.Fatal("removed listener still accepts")
	}
	exchange(t, cx, "5", "B:5")
	cx.Close() // the drain ends
}

// A changed listener on a fixed address is rebuilt on the same address: new connections
// get the new config, open ones keep the old until they end.
func TestSetListenersChangedSameAddress(t *testing.T) {
	s := newServer(t, cfgFor(t, prefixUpstream(t, "A:"), `{"timeout":"5s"}`))
	running(t, s)
	if err := s.SetClusters(OwnerXDS, []config.Cluster{
		{Name: "b", Hosts: []config.Host{{Address: prefixUpstream(t, "B:")}}},
		{Name: "c", Hosts: []config.Host{{Address: prefixUpstream(t, "C:")}}},
	}); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	if err := s.SetListeners(OwnerXDS, parseListeners(t, `[`+tcpListener("x", addr, "b")+`]`)); err != nil {
		t.Fatal(err)
	}
	old := dial(t, addr)
	exchange(t, old, "1", "B:1")
	if err := s.SetListeners(OwnerXDS, parseListeners(t, `[`+tcpListener("x", addr, "c")+`]`)); err != nil {
		t.Fatal(err)
	}
	exchange(t, dial(t, addr), "2", "C:2")
	exchange(t, old, "3", "B:3")

	// The new listener took over the socket: clients dialing throughout a series of
	// changes are never refused.
	stop := make(chan struct{})
	refused := make(chan error, 1)
	dialed := make(chan int, 1)
	go func() {
		n := 0
		defer func() { dialed <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				refused <- err
				return
			}
			c.Close()
			n++
		}
	}()
	for i := 0; i < 20; i++ {
		cl := []string{"b", "c"}[i%2]
		if err := s.SetListeners(OwnerXDS, parseListeners(t, `[`+tcpListener("x", addr, cl)+`]`)); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if n := <-dialed; n == 0 {
		t.Log("no dial completed during the changes")
	}
	select {
	case err := <-refused:
		t.Fatalf("a dial failed while the listener changed: %v", err)
	default:
	}
	exchange(t, dial(t, addr), "4", "C:4") // the last change (i=19) names c
}

// A changed listener on an ephemeral port keeps the port it got.
func TestSetListenersChangedEphemeral(t *testing.T) {
	s := newServer(t, cfgFor(t, prefixUpstream(t, "A:"), `{"timeout":"5s"}`))
	running(t, s)
	if err := s.SetClusters(OwnerXDS, []config.Cluster{{Name: "b", Hosts: []config.Host{{Address: prefixUpstream(t, "B:")}}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetListeners(OwnerXDS, parseListeners(t, `[`+tcpListener("x", "127.0.0.1:0", "up")+`]`)); err != nil {
		t.Fatal(err)
	}
	addr := addrOf(t, s, "x")
	exchange(t, dial(t, addr), "1", "A:1")
	if err := s.SetListeners(OwnerXDS, parseListeners(t, `[`+tcpListener("x", "127.0.0.1:0", "b")+`]`)); err != nil {
		t.Fatal(err)
	}
	if got := addrOf(t, s, "x"); got != addr {
		t.Fatalf("changed listener moved from %s to %s", addr, got)
	}
	exchange(t, dial(t, addr), "2", "B:2")
}

func TestSetListenersBeforeRunAndShutdownDrains(t *testing.T) {
	s := newServer(t, cfgFor(t, prefixUpstream(t, "A:"), `{"timeout":"300ms"}`))
	if err := s.SetListeners(OwnerXDS, parseListeners(t, `[`+tcpListener("x", "127.0.0.1:0", "up")+`]`)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	testutil.Eventually(t, 10*time.Second, "running", s.running.Load)
	c := dial(t, addrOf(t, s, "x"))
	exchange(t, c, "1", "A:1")
	if err := s.SetListeners(OwnerXDS, parseListeners(t, `[`+tcpListener("y", "127.0.0.1:0", "up")+`]`)); err != nil {
		t.Fatal(err)
	}
	cy := dial(t, addrOf(t, s, "y"))
	exchange(t, cy, "2", "A:2")
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	// Both the removed listener's and the added listener's connections were closed by the drain.
	for _, conn := range []net.Conn{c, cy} {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Fatal("connection open after shutdown")
		}
	}
	if err := s.SetListeners(OwnerXDS, nil); err == nil {
		t.Fatal("SetListeners after Run returned succeeded")
	}
}

// httpCfg is a server with an HTTP/1 proxy listener on router r whose "*" virtual host
// answers / with body.
func httpCfg(t *testing.T, body string) *config.Config {
	t.Helper()
	js := fmt.Sprintf(`{
	  "servers":[{"routers":[{"router_config_name":"r","virtual_hosts":[
	      {"name":"other","domains":["other.example"],"routers":[{"match":{"prefix":"/"},"direct_response":{"status":200,"body":"other"}}]},
	      {"name":"any","domains":["*"],"routers":[{"match":{"prefix":"/"},"direct_response":{"status":200,"body":%q}}]}]}],
	    "listeners":[{"name":"h","address":%q,
	      "filter_chains":[{"filters":[{"type":"proxy","config":{"downstream_protocol":"Http1","router_config_name":"r"}}]}]}]}],
	  "admin":{"address":{"socket_address":{"address":"127.0.0.1","port_value":0}}},
	  "drain":{"timeout":"1s"}}`, body, freePort(t))
	return parseConfig(t, js)
}

func directRoute(prefix, body string) config.Route {
	return config.Route{Match: config.RouteMatch{Prefix: prefix}, DirectResponse: &config.DirectResponse{StatusCode: 200, Body: body}}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestSetRoutes(t *testing.T) {
	s := newServer(t, httpCfg(t, "base"))
	running(t, s)
	base := "http://" + addrOf(t, s, "h")
	if got := httpGet(t, base+"/x"); got != "base" {
		t.Fatalf("before = %q", got)
	}
	if err := s.SetRoutes(OwnerXDS, "r", []config.Route{directRoute("/x", "xds")}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRoutes(OwnerDubboRegistry, "r", []config.Route{directRoute("/x", "dubbo"), directRoute("/y", "dubbo-y")}); err != nil {
		t.Fatal(err)
	}
	// Owners in name order, before the router's own routes, in the "*" virtual host.
	for path, want := range map[string]string{"/x": "dubbo", "/y": "dubbo-y", "/z": "base"} {
		if got := httpGet(t, base+path); got != want {
			t.Errorf("GET %s = %q; want %q", path, got, want)
		}
	}
	// Bad routes change nothing and name the path.
	err := s.SetRoutes(OwnerXDS, "r", []config.Route{{Match: config.RouteMatch{Prefix: "/"}}})
	if err == nil || !strings.Contains(err.Error(), "routes[0]") {
		t.Fatalf("bad route = %v; want routes[0]", err)
	}
	if err := s.SetRoutes(OwnerXDS, "nope", []config.Route{directRoute("/", "x")}); err == nil {
		t.Fatal("routes for an unknown router accepted")
	}
	// nil removes.
	if err := s.SetRoutes(OwnerDubboRegistry, "r", nil); err != nil {
		t.Fatal(err)
	}
	if got := httpGet(t, base+"/x"); got != "xds" {
		t.Fatalf("after removing dubbo's routes, /x = %q; want xds", got)
	}
	// The routes survive a reload of the router's base config.
	if err := s.Reload(httpCfgAt(t, "base2", addrOf(t, s, "h"))); err != nil {
		t.Fatal(err)
	}
	if got := httpGet(t, base+"/x"); got != "xds" {
		t.Fatalf("after reload, /x = %q; want xds", got)
	}
	if got := httpGet(t, base+"/z"); got != "base2" {
		t.Fatalf("after reload, /z = %q; want base2", got)
	}
	if err := s.SetRoutes(OwnerXDS, "r", nil); err != nil {
		t.Fatal(err)
	}
	if got := httpGet(t, base+"/x"); got != "base2" {
		t.Fatalf("after removing all routes, /x = %q", got)
	}
}

// httpCfgAt is httpCfg with the listener on addr.
func httpCfgAt(t *testing.T, body, addr string) *config.Config {
	cfg := httpCfg(t, body)
	cfg.Servers[0].Listeners[0].Address = addr
	return cfg
}

func TestSetRouters(t *testing.T) {
	s := newServer(t, httpCfg(t, "base"))
	defer s.closeAll()
	rc := config.RouterCfg{RouterConfigName: "x1", VirtualHosts: []config.VirtualHost{{Name: "v", Domains: []string{"*"},
		Routers: []config.Route{directRoute("/", "x1")}}}}
	if err := s.SetRouters(OwnerXDS, []config.RouterCfg{rc}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.routers.Get("x1"); !ok {
		t.Fatal("router x1 missing")
	}
	clash := rc
	clash.RouterConfigName = "r"
	if err := s.SetRouters(OwnerXDS, []config.RouterCfg{rc, clash}); err == nil || !strings.Contains(err.Error(), "static") {
		t.Fatalf("clash = %v", err)
	}
	bad := rc
	bad.RouterConfigName = "x2"
	bad.VirtualHosts = []config.VirtualHost{{Name: "v"}}
	if err := s.SetRouters(OwnerXDS, []config.RouterCfg{rc, bad}); err == nil || !strings.Contains(err.Error(), "routers[1].virtual_hosts[0].domains") {
		t.Fatalf("bad router = %v", err)
	}
	if _, ok := s.routers.Get("x2"); ok {
		t.Fatal("router x2 of a failed call present")
	}
	if err := s.SetRouters(OwnerXDS, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.routers.Get("x1"); ok {
		t.Fatal("router x1 not removed")
	}
	if _, ok := s.routers.Get("r"); !ok {
		t.Fatal("static router r removed")
	}
}

func TestHoldReady(t *testing.T) {
	s := newServer(t, httpCfg(t, "base"))
	release := s.HoldReady(OwnerXDS)
	release2 := s.HoldReady(OwnerDubboRegistry)
	running(t, s)
	admin := "http://" + s.AdminAddr().String() + "/ready"
	if code, _ := get(t, admin); code != http.StatusServiceUnavailable {
		t.Fatalf("/ready with holders = %d", code)
	}
	release()
	release() // idempotent
	if s.Ready() {
		t.Fatal("ready with one holder left")
	}
	release2()
	if code, _ := get(t, admin); code != 200 {
		t.Fatalf("/ready after release = %d", code)
	}
}

func TestReload(t *testing.T) {
	s := newServer(t, httpCfg(t, "one"))
	running(t, s)
	h := addrOf(t, s, "h")
	admin := "http://" + s.AdminAddr().String()
	c := dial(t, h) // a keep-alive connection survives the reload (listener unchanged)
	br := bufio.NewReader(c)
	keepAliveGet := func() string {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(b)
	}
	if got := keepAliveGet(); got != "one" {
		t.Fatalf("before = %q", got)
	}
	next := httpCfgAt(t, "two", h)
	if err := s.Reload(next); err != nil {
		t.Fatal(err)
	}
	if got := keepAliveGet(); got != "two" {
		t.Fatalf("after reload, same connection = %q", got)
	}
	// A bad config: the error names the JSON path; nothing changes.
	bad := httpCfgAt(t, "three", h)
	bad.Servers[0].Listeners[0].FilterChains[0].Filters[0].Config = config.RawMessage(`{"downstream_protocol":"Nope","router_config_name":"r"}`)
	err := s.Reload(bad)
	var ps config.Problems
	if !errors.As(err, &ps) || !strings.Contains(err.Error(), "servers[0].listeners[0].filter_chains[0].filters[0].config.downstream_protocol") {
		t.Fatalf("bad reload = %v; want Problems with the path", err)
	}
	if got := keepAliveGet(); got != "two" {
		t.Fatalf("after failed reload = %q", got)
	}
	// A config whose new listener cannot bind: nothing changes either (the route stays "two").
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	bad = httpCfgAt(t, "four", h)
	extra := bad.Servers[0].Listeners[0]
	extra.Name, extra.Address = "h2", busy.Addr().String()
	bad.Servers[0].Listeners = append(bad.Servers[0].Listeners, extra)
	if err := s.Reload(bad); err == nil || !strings.Contains(err.Error(), "servers[0].listeners[1] (h2)") {
		t.Fatalf("unbindable reload = %v", err)
	}
	if got := keepAliveGet(); got != "two" {
		t.Fatalf("after unbindable reload = %q", got)
	}
	_, body := get(t, admin+"/metrics")
	for _, want := range []string{`mosnlite_config_reloads_total{result="success"} 1`, `mosnlite_config_reloads_total{result="failure"} 2`, "mosnlite_config_last_reload_success_timestamp_seconds 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, testutil.Lines(body, "reload"))
		}
	}
	// POST /api/v1/reload without a source fails (and says so); GET is refused.
	resp, err := http.Post(admin+"/api/v1/reload", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"error"`) {
		t.Fatalf("POST /api/v1/reload = %d %s", resp.StatusCode, b)
	}
	if code, _ := get(t, admin+"/api/v1/reload"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /api/v1/reload = %d; want 405", code)
	}
	c.Close()
}

func TestReloadFromSource(t *testing.T) {
	body := "one"
	var s *Server
	cfg := httpCfg(t, body)
	var addr string
	load := func() (*config.Config, error) {
		if body == "broken" {
			return nil, config.Problems{{Path: "servers[0].listeners[0].address", Msg: "bad"}}
		}
		return httpCfgAt(t, body, addr), nil
	}
	s = newServerOpts(t, cfg, Options{Load: load})
	running(t, s)
	addr = addrOf(t, s, "h")
	admin := "http://" + s.AdminAddr().String()
	body = "two"
	resp, err := http.Post(admin+"/api/v1/reload", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /api/v1/reload = %d", resp.StatusCode)
	}
	if got := httpGet(t, "http://"+addr+"/"); got != "two" {
		t.Fatalf("after POST reload = %q", got)
	}
	body = "broken"
	resp, err = http.Post(admin+"/api/v1/reload", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "servers[0].listeners[0].address") {
		t.Fatalf("POST /api/v1/reload (broken) = %d %s", resp.StatusCode, b)
	}
}

func newServerOpts(t *testing.T, cfg *config.Config, o Options) *Server {
	t.Helper()
	ext, err := builtin.NewSet()
	if err != nil {
		t.Fatal(err)
	}
	o.Extensions, o.Log = ext, zaptest.NewLogger(t)
	s, err := New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// closingFilter wraps a tcp_proxy filter and counts Close calls.
type closingFilter struct {
	network.Handler
	closed *atomic.Int32
}

func (f closingFilter) Close() error { f.closed.Add(1); return nil }

// Filters that hold resources are closed when their listener is removed, after its
// connections drained, and on shutdown.
func TestRemovedListenerClosesFilterAfterDrain(t *testing.T) {
	ext, err := builtin.NewSet()
	if err != nil {
		t.Fatal(err)
	}
	var closed atomic.Int32
	nf := extension.NewRegistry[filter.NetworkFactory]("network filter")
	for _, name := range ext.NetworkFilters.Names() {
		f, _ := ext.NetworkFilters.Get(name)
		if name == config.FilterTCPProxy {
			inner := f
			f = func(raw config.RawMessage, d filter.Deps) (filter.NetworkFilter, error) {
				h, err := inner(raw, d)
				if err != nil {
					return nil, err
				}
				return closingFilter{Handler: h.(network.Handler), closed: &closed}, nil
			}
		}
		nf.Register(name, f)
	}
	ext.NetworkFilters = nf
	s, err := New(cfgFor(t, prefixUpstream(t, "A:"), `{"timeout":"10s"}`), Options{Extensions: ext, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	running(t, s)
	if err := s.SetListeners(OwnerXDS, parseListeners(t, `[`+tcpListener("x", "127.0.0.1:0", "up")+`]`)); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addrOf(t, s, "x"))
	exchange(t, c, "1", "A:1")
	if err := s.SetListeners(OwnerXDS, nil); err != nil {
		t.Fatal(err)
	}
	exchange(t, c, "2", "A:2") // still draining: the filter serves on
	if n := closed.Load(); n != 0 {
		t.Fatalf("filter closed %d times while its connection is open", n)
	}
	c.Close()
	testutil.Eventually(t, 10*time.Second, "the removed listener's filter closed", func() bool { return closed.Load() == 1 })
	// A filter of a failed SetListeners is closed too (busy address).
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := s.SetListeners(OwnerXDS, parseListeners(t, `[`+tcpListener("y", busy.Addr().String(), "up")+`]`)); err == nil {
		t.Fatal("SetListeners on a busy address succeeded")
	}
	if n := closed.Load(); n != 2 {
		t.Fatalf("filter of the failed listener: closed count %d; want 2", n)
	}
}

// A listener may take over the address of one the same change removes (renamed here): the
// old one stops accepting first, then the new one binds.
func TestSetListenersRenamedSameAddress(t *testing.T) {
	s := newServer(t, cfgFor(t, prefixUpstream(t, "A:"), `{"timeout":"5s"}`))
	running(t, s)
	addr := freePort(t)
	if err := s.SetListeners(OwnerXDS, parseListeners(t, `[`+tcpListener("x", addr, "up")+`]`)); err != nil {
		t.Fatal(err)
	}
	old := dial(t, addr)
	exchange(t, old, "1", "A:1")
	if err := s.SetListeners(OwnerXDS, parseListeners(t, `[`+tcpListener("x2", addr, "up")+`]`)); err != nil {
		t.Fatal(err)
	}
	if got := addrOf(t, s, "x2"); got != addr {
		t.Fatalf("x2 on %s; want %s", got, addr)
	}
	if _, ok := s.Addrs()["x"]; ok {
		t.Fatal("x still listed")
	}
	exchange(t, dial(t, addr), "2", "A:2")
	exchange(t, old, "3", "A:3") // x's connection drains
}

// A reload that drops clusters keeps them for the drain timeout (make before break:
// requests routed by the tables of the replaced listeners still name them), then removes
// them; one that a later reload names again is not removed by the sweep.
func TestReloadDroppedClustersLinger(t *testing.T) {
	withClusters := func(names ...string) *config.Config {
		cfg := httpCfg(t, "x")
		cfg.Drain.Timeout = config.Duration(300 * time.Millisecond)
		for _, n := range names {
			cfg.ClusterManager.Clusters = append(cfg.ClusterManager.Clusters, config.Cluster{
				Name: n, Type: config.ClusterSimple, LBType: "LB_ROUNDROBIN",
				Hosts: []config.Host{{Address: "127.0.0.1:9"}}})
		}
		return cfg
	}
	s := newServer(t, withClusters("a", "b", "c"))
	running(t, s)
	has := func(name string) bool { _, ok := s.Clusters().Get(name); return ok }
	if err := s.Reload(withClusters("c")); err != nil {
		t.Fatal(err)
	}
	if !has("a") || !has("b") {
		t.Fatal("the dropped clusters were removed at once")
	}
	if err := s.Reload(withClusters("b", "c")); err != nil { // b is named again
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for has("a") {
		if time.Now().After(deadline) {
			t.Fatal("cluster a still there 5s after its 300ms linger")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(400 * time.Millisecond) // past b's linger, had it still lingered
	if !has("b") || !has("c") {
		t.Fatalf("b %v, c %v: want both (named by the config)", has("b"), has("c"))
	}
	s.mu.Lock()
	n := len(s.lingering)
	s.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d clusters still lingering", n)
	}
}

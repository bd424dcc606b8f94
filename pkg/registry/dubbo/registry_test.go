package dubbo

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/registry/dubbo/zktest"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

const iface = "com.example.EchoService"

// TestZooKeeperPubUnpub: /pub writes the provider node where and how Dubbo does; a second
// identical /pub changes nothing; /unpub removes it.
func TestZooKeeperPubUnpub(t *testing.T) {
	zs := zktest.Start(t)
	rec := newRecorder()
	s := startService(t, testConfig(t, 20880), rec)
	c := zkClient(t, zs.Addr)

	body := req("zookeeper", zs.Addr, iface, "blue", "1.0.0", "ping", "echo")
	mustOK(t, s, "/pub", body)
	dir := "/dubbo/" + iface + "/providers"
	ps := children(t, c, dir)
	if len(ps) != 1 {
		t.Fatalf("providers: %v", ps)
	}
	u := ps[0]
	if u.Protocol != "dubbo" || u.Host != "127.0.0.1:20880" || u.Path != iface {
		t.Fatalf("provider URL %s", u)
	}
	for k, v := range map[string]string{"anyhost": "true", "application": "mosnlite", "interface": iface,
		"methods": "echo,ping", "group": "blue", "version": "1.0.0", "side": "provider"} {
		if u.Param(k) != v {
			t.Errorf("provider %s = %q, want %q (%s)", k, u.Param(k), v, u)
		}
	}
	if u.Param("timestamp") == "" {
		t.Errorf("no timestamp: %s", u)
	}
	// Ephemeral, owned by the sidecar's session; parents persistent.
	names, _, _ := c.Children(dir)
	_, st, err := c.Exists(dir + "/" + names[0])
	if err != nil || st.EphemeralOwner == 0 {
		t.Fatalf("provider node not ephemeral: %+v %v", st, err)
	}
	if _, st, _ := c.Exists(dir); st.EphemeralOwner != 0 {
		t.Fatal("providers dir is ephemeral")
	}
	// A Dubbo consumer's selector finds it.
	if !(Selector{Interface: iface, Group: "blue", Version: "1.0.0"}).Matches(u) {
		t.Fatalf("a Dubbo consumer of blue/%s:1.0.0 would not match %s", iface, u)
	}

	mustOK(t, s, "/pub", body) // idempotent
	if ps := children(t, c, dir); len(ps) != 1 || ps[0].String() != u.String() {
		t.Fatalf("second /pub changed the nodes: %v", ps)
	}
	if rec.callCount() != 1 { // only SetRouters at start: /pub builds no cluster
		t.Fatalf("applier calls = %d", rec.callCount())
	}
	mustOK(t, s, "/unpub", body)
	if ps := children(t, c, dir); len(ps) != 0 {
		t.Fatalf("after /unpub: %v", ps)
	}
	mustOK(t, s, "/unpub", body) // idempotent
}

// TestZooKeeperSubscribe: /sub writes a consumer node and keeps a cluster and a route for
// the providers Dubbo applications register; a provider's session ending takes its host out;
// /unsub removes everything.
func TestZooKeeperSubscribe(t *testing.T) {
	zs := zktest.Start(t)
	rec := newRecorder()
	s := startService(t, testConfig(t, 20880), rec)
	c := zkClient(t, zs.Addr)
	p1 := zkClient(t, zs.Addr)
	p2 := zkClient(t, zs.Addr)

	dubboProvider(t, p1, iface, "10.0.0.1:20880", "", "")
	body := req("zookeeper", zs.Addr, iface, "", "", "echo")
	mustOK(t, s, "/sub", body)

	cons := children(t, c, "/dubbo/"+iface+"/consumers")
	if len(cons) != 1 || cons[0].Protocol != "consumer" || cons[0].Host != "127.0.0.1" ||
		cons[0].Param("side") != "consumer" || cons[0].Param("interface") != iface || cons[0].Param("methods") != "echo" {
		t.Fatalf("consumer nodes: %v", cons)
	}
	if hs, ok := rec.hosts(iface); !ok || !slices.Equal(hs, []string{"10.0.0.1:20880"}) {
		t.Fatalf("cluster %q hosts = %v, %v", iface, hs, ok)
	}
	if cl, ok := rec.route(t, "dubbo", map[string]string{"service": iface}); !ok || cl != iface {
		t.Fatalf("route for service %s: %q %v", iface, cl, ok)
	}
	if _, ok := rec.route(t, "dubbo", map[string]string{"service": "com.example.Other"}); ok {
		t.Fatal("another service routed")
	}
	// Providers of another group or version do not join.
	dubboProvider(t, p2, iface, "10.0.0.9:20880", "blue", "")
	dubboProvider(t, p2, iface, "10.0.0.8:20880", "", "2.0")
	// A second provider appears.
	dubboProvider(t, p2, iface, "10.0.0.2:20880", "", "")
	testutil.Eventually(t, 20*time.Second, "second provider in the cluster", func() bool {
		hs, _ := rec.hosts(iface)
		return slices.Equal(hs, []string{"10.0.0.1:20880", "10.0.0.2:20880"})
	})
	calls := rec.callCount()
	mustOK(t, s, "/sub", body) // idempotent
	if rec.callCount() != calls || len(children(t, c, "/dubbo/"+iface+"/consumers")) != 1 {
		t.Fatal("second /sub changed something")
	}
	// Provider 1's session ends: its ephemeral node goes, and its host leaves.
	closeZK(p1)
	testutil.Eventually(t, 20*time.Second, "provider 1 out of the cluster", func() bool {
		hs, _ := rec.hosts(iface)
		return slices.Equal(hs, []string{"10.0.0.2:20880"})
	})

	if n := counterValue(t, s.met.RegistryUpdates.WithLabelValues("success")); n < 2 {
		t.Errorf("provider changes counted: %v", n)
	}
	mustOK(t, s, "/unsub", body)
	if _, ok := rec.hosts(iface); ok {
		t.Fatal("cluster still there after /unsub")
	}
	if _, ok := rec.route(t, "dubbo", map[string]string{"service": iface}); ok {
		t.Fatal("route still there after /unsub")
	}
	if cons := children(t, c, "/dubbo/"+iface+"/consumers"); len(cons) != 0 {
		t.Fatalf("consumer node left: %v", cons)
	}
	mustOK(t, s, "/unsub", body) // idempotent
}

// TestZooKeeperGroupVersion: group and version pick the providers, name the cluster, and
// make the route match on the version and group headers.
func TestZooKeeperGroupVersion(t *testing.T) {
	zs := zktest.Start(t)
	rec := newRecorder()
	s := startService(t, testConfig(t, 20880), rec)
	p := zkClient(t, zs.Addr)
	dubboProvider(t, p, iface, "10.0.0.1:20880", "blue", "1.0")
	dubboProvider(t, p, iface, "10.0.0.2:20880", "", "")
	mustOK(t, s, "/sub", req("zookeeper", zs.Addr, iface, "blue", "1.0", "echo"))
	mustOK(t, s, "/sub", req("zookeeper", zs.Addr, iface, "", "", "echo"))
	if got := rec.clusterNames(); !slices.Equal(got, []string{"blue/" + iface + ":1.0", iface}) {
		t.Fatalf("clusters %v", got)
	}
	if hs, _ := rec.hosts("blue/" + iface + ":1.0"); !slices.Equal(hs, []string{"10.0.0.1:20880"}) {
		t.Fatalf("blue hosts %v", hs)
	}
	if hs, _ := rec.hosts(iface); !slices.Equal(hs, []string{"10.0.0.2:20880"}) {
		t.Fatalf("plain hosts %v", hs)
	}
	for _, c := range []struct {
		hs   map[string]string
		want string
	}{
		{map[string]string{"service": iface, "version": "1.0", "group": "blue"}, "blue/" + iface + ":1.0"},
		{map[string]string{"service": iface, "version": "1.0"}, iface},
		{map[string]string{"service": iface}, iface},
	} {
		if got, ok := rec.route(t, "dubbo", c.hs); !ok || got != c.want {
			t.Errorf("route %v = %q, want %q", c.hs, got, c.want)
		}
	}
}

// TestZooKeeperSessionLoss: the network between the sidecar and ZooKeeper breaks for longer
// than the session timeout, so ZooKeeper expires the session and drops its nodes; when the
// network is back the sidecar opens a new session, writes its provider and consumer nodes
// again and watches again.
func TestZooKeeperSessionLoss(t *testing.T) {
	zs := zktest.Start(t)
	px := newCutProxy(t, zs.Addr)
	rec := newRecorder()
	s := startService(t, testConfig(t, 20880), rec)
	mustOK(t, s, "/pub", req("zookeeper", px.Addr(), iface, "", "", "echo"))
	mustOK(t, s, "/sub", req("zookeeper", px.Addr(), iface, "", "", "echo"))
	testutil.Eventually(t, 20*time.Second, "the sidecar's own provider in the cluster", func() bool {
		hs, _ := rec.hosts(iface)
		return slices.Equal(hs, []string{"127.0.0.1:20880"})
	})

	c := zkClient(t, zs.Addr)
	px.cut(true)
	testutil.Eventually(t, 20*time.Second, "ZooKeeper to expire the sidecar's session", func() bool {
		return len(children(t, c, "/dubbo/"+iface+"/providers")) == 0 &&
			len(children(t, c, "/dubbo/"+iface+"/consumers")) == 0
	})
	p := zkClient(t, zs.Addr)
	dubboProvider(t, p, iface, "10.0.0.3:20880", "", "") // appears while the sidecar is cut off
	px.cut(false)
	testutil.Eventually(t, 20*time.Second, "provider and consumer nodes written again", func() bool {
		return len(children(t, c, "/dubbo/"+iface+"/providers")) == 2 &&
			len(children(t, c, "/dubbo/"+iface+"/consumers")) == 1
	})
	testutil.Eventually(t, 20*time.Second, "the watch set again reporting both providers", func() bool {
		hs, _ := rec.hosts(iface)
		return slices.Equal(hs, []string{"10.0.0.3:20880", "127.0.0.1:20880"})
	})
}

// TestLocalRegistry: the embedded registry (no address) gives the same behaviour in one
// process: a /pub is a provider for /sub; /unpub takes the host out; /unsub removes all.
func TestLocalRegistry(t *testing.T) {
	rec := newRecorder()
	s := startService(t, testConfig(t, 2046), rec)
	mustOK(t, s, "/sub", req("", "", iface, "", "1.0", "echo"))
	name := iface + ":1.0"
	if hs, ok := rec.hosts(name); !ok || len(hs) != 0 {
		t.Fatalf("cluster before any provider: %v %v", hs, ok)
	}
	mustOK(t, s, "/pub", req("local", "", iface, "", "2.0", "echo")) // another version: not ours
	mustOK(t, s, "/pub", req("local", "", iface, "", "1.0", "echo"))
	testutil.Eventually(t, 20*time.Second, "the published provider in the cluster", func() bool {
		hs, _ := rec.hosts(name)
		return slices.Equal(hs, []string{"127.0.0.1:2046"})
	})
	if got, ok := rec.route(t, "dubbo", map[string]string{"service": iface, "version": "1.0"}); !ok || got != name {
		t.Fatalf("route = %q %v", got, ok)
	}
	if _, ok := rec.route(t, "dubbo", map[string]string{"service": iface, "version": "2.0"}); ok {
		t.Fatal("version 2.0 routed to the 1.0 cluster")
	}
	calls := rec.callCount()
	mustOK(t, s, "/pub", req("local", "", iface, "", "1.0", "echo"))
	mustOK(t, s, "/sub", req("local", "", iface, "", "1.0", "echo"))
	if rec.callCount() != calls {
		t.Fatal("repeated calls changed something")
	}
	mustOK(t, s, "/unpub", req("local", "", iface, "", "1.0"))
	testutil.Eventually(t, 20*time.Second, "the unpublished provider out", func() bool {
		hs, _ := rec.hosts(name)
		return len(hs) == 0
	})
	mustOK(t, s, "/unsub", req("local", "", iface, "", "1.0"))
	if len(rec.clusterNames()) != 0 {
		t.Fatalf("clusters left: %v", rec.clusterNames())
	}
}

// TestBadInput: every endpoint answers bad input with err_no 1 and a message naming the
// problem (400 when the body is not JSON), and changes nothing.
func TestBadInput(t *testing.T) {
	rec := newRecorder()
	s := startService(t, testConfig(t, 2046), rec)
	good := func(mut func(m map[string]any)) map[string]any {
		m := req("", "", iface, "", "", "echo")
		mut(m)
		return m
	}
	svc := func(m map[string]any) map[string]any { return m["service"].(map[string]any) }
	cases := []struct {
		name   string
		body   any
		paths  []string // default: all four
		status int
		msg    string
	}{
		{"not json", "{not json", nil, 400, "body is not JSON"},
		{"empty", "", nil, 400, "empty body"},
		{"array", "[1,2]", nil, 400, "not a JSON object"},
		{"methods not a list", `{"service":{"interface":"a.B","methods":"echo"}}`, nil, 200, "service.methods: want a list"},
		{"no interface", good(func(m map[string]any) { delete(svc(m), "interface") }), nil, 200, "service.interface: missing"},
		{"no service", `{"registry":{"type":"local"}}`, nil, 200, "service.interface: missing"},
		{"bad interface", good(func(m map[string]any) { svc(m)["interface"] = "a/b" }), nil, 200, "service.interface: \"a/b\""},
		{"unknown registry", good(func(m map[string]any) { m["registry"] = map[string]any{"type": "etcd", "addr": "1.2.3.4:2379"} }), nil, 200, `registry.type: unknown "etcd" (known: zookeeper, local)`},
		{"zookeeper without addr", good(func(m map[string]any) { m["registry"] = map[string]any{"type": "zookeeper"} }), nil, 200, "registry.addr: missing"},
		{"bad addr", good(func(m map[string]any) { m["registry"] = map[string]any{"addr": "nohost"} }), nil, 200, `registry.addr: "nohost" is not host:port`},
		{"local with addr", good(func(m map[string]any) { m["registry"] = map[string]any{"type": "local", "addr": "1.2.3.4:1"} }), nil, 200, "local registry takes no address"},
		{"no methods", good(func(m map[string]any) { delete(svc(m), "methods") }), []string{"/pub", "/sub"}, 200, "service.methods: missing"},
		{"bad method", good(func(m map[string]any) { svc(m)["methods"] = []string{"echo", "a,b"} }), nil, 200, `service.methods[1]: "a,b"`},
		{"bad group", good(func(m map[string]any) { svc(m)["group"] = "a&b" }), nil, 200, "service.group"},
		{"provider group star", good(func(m map[string]any) { svc(m)["group"] = "*" }), []string{"/pub", "/unpub"}, 200, "a provider has one group"},
		{"bad version", good(func(m map[string]any) { svc(m)["version"] = "1 0" }), nil, 200, "service.version"},
		{"zookeeper down", good(func(m map[string]any) { m["registry"] = map[string]any{"addr": "127.0.0.1:1"} }), []string{"/pub"}, 200, "no session within"},
	}
	if testing.Short() {
		cases = cases[:len(cases)-1]
	}
	subs := 0
	for _, c := range cases {
		paths := c.paths
		if paths == nil {
			paths = []string{"/pub", "/unpub", "/sub", "/unsub"}
		}
		for _, p := range paths {
			if p == "/sub" {
				subs++
			}
			st, r := call(t, s, p, c.body)
			if st != c.status || r.ErrNo != 1 || !strings.Contains(r.ErrMsg, c.msg) {
				t.Errorf("%s %s: %d %+v; want %d, err_no 1, %q", c.name, p, st, r, c.status, c.msg)
			}
		}
	}
	if n := counterValue(t, s.met.RegistryRequests.WithLabelValues("sub", "failure")); int(n) != subs {
		t.Errorf("sub failures counted: %v, want %d", n, subs)
	}
	if rec.callCount() != 1 || len(rec.clusterNames()) != 0 {
		t.Fatalf("bad input changed the server: %d calls, clusters %v", rec.callCount(), rec.clusterNames())
	}
	// GET is not an API call.
	resp, err := httpClient.Get("http://" + s.Addr().String() + "/sub")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /sub = %d", resp.StatusCode)
	}
}

// TestNothingHalfApplied: when the server refuses the routes, /sub fails, the clusters are
// put back and the consumer node is taken back; when it refuses on /unsub, the
// subscription stays whole.
func TestNothingHalfApplied(t *testing.T) {
	zs := zktest.Start(t)
	rec := newRecorder()
	s := startService(t, testConfig(t, 20880), rec)
	c := zkClient(t, zs.Addr)
	other := req("zookeeper", zs.Addr, "com.example.Other", "", "", "x")
	mustOK(t, s, "/sub", other)

	rec.failing("SetRoutes", errors.New("router says no"))
	st, r := call(t, s, "/sub", req("zookeeper", zs.Addr, iface, "", "", "echo"))
	if st != 200 || r.ErrNo != 1 || !strings.Contains(r.ErrMsg, "router says no") {
		t.Fatalf("/sub with a failing server: %d %+v", st, r)
	}
	if got := rec.clusterNames(); !slices.Equal(got, []string{"com.example.Other"}) {
		t.Fatalf("clusters after the failed /sub: %v", got)
	}
	if cons := children(t, c, "/dubbo/"+iface+"/consumers"); len(cons) != 0 {
		t.Fatalf("consumer node left by the failed /sub: %v", cons)
	}
	st, r = call(t, s, "/unsub", other)
	if r.ErrNo != 1 {
		t.Fatalf("/unsub with a failing server: %d %+v", st, r)
	}
	rec.failing("SetRoutes", nil)
	if got := rec.clusterNames(); !slices.Equal(got, []string{"com.example.Other"}) {
		t.Fatalf("clusters after the failed /unsub: %v", got)
	}
	if cons := children(t, c, "/dubbo/com.example.Other/consumers"); len(cons) != 1 {
		t.Fatalf("consumer node after the failed /unsub: %v", cons)
	}
	// Both work once the server accepts.
	mustOK(t, s, "/sub", req("zookeeper", zs.Addr, iface, "", "", "echo"))
	mustOK(t, s, "/unsub", other)
	if got := rec.clusterNames(); !slices.Equal(got, []string{iface}) {
		t.Fatalf("clusters: %v", got)
	}
}

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte(`{"enable":true,"server_port":20080,"log_path":"/tmp"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.APIPort != 22222 || c.APIAddress != "127.0.0.1" || c.RouterConfigName != "dubbo" || !c.Enabled() || c.ServerIP == "" {
		t.Fatalf("defaults: %+v", c)
	}
	if c, _ := ParseConfig([]byte(`{"enable":false,"server_port":1}`)); c.Enabled() {
		t.Fatal("enable false is enabled")
	}
	for raw, msg := range map[string]string{
		`{}`:                                        "server_port: missing",
		`{"server_port":70000}`:                     "server_port: 70000 is not a port",
		`{"server_port":1,"api_port":-1}`:           "api_port",
		`{"server_port":1,"api_address":"x"}`:       "api_address",
		`{"server_port":1,"server_ip":"0.0.0.0"}`:   "server_ip",
		`{"server_port":1,"registry_timeout":"0s"}`: "registry_timeout: must be positive",
		`{"server_port":"x"}`:                       "server_port",
	} {
		if _, err := ParseConfig([]byte(raw)); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseConfig(%s) = %v; want %q", raw, err, msg)
		}
	}
}

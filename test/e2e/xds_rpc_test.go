package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	dubbov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dubbo_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/mosnlite/mosnlite/pkg/xds"
	"github.com/mosnlite/mosnlite/pkg/xds/xdstest"
	"github.com/mosnlite/mosnlite/test/framework"
	"github.com/mosnlite/mosnlite/test/framework/rpcpeer"
)

// TestXDSRPCListeners: a control plane (go-control-plane's server) gives mosnlite a bolt and
// a dubbo listener, MOSN's proxy filter in a TypedStruct, whose RDS routes pick EDS
// clusters by the frame's service. Requests from real bolt and dubbo (hessian2) clients
// reach the servers their routes name; a route change moves them; a listener with a bad
// protocol is NACKed with the field's path while the old one keeps serving.
func TestXDSRPCListeners(t *testing.T) {
	const node = "mosnlite-e2e-rpc"
	boltA := startBoltPeer(t, rpcpeer.BoltServerOptions{Name: "a"})
	boltB := startBoltPeer(t, rpcpeer.BoltServerOptions{Name: "b"})
	dubboA, dubboB := startDubboPeer(t, "a"), startDubboPeer(t, "b")

	cp, cpAddr := startControlPlane(t)
	boltL, dubboL := framework.FreePort(t), framework.FreePort(t)
	boltProxy := map[string]any{"downstream_protocol": "bolt"}
	dubboProxy := map[string]any{"downstream_protocol": "X", "upstream_protocol": "X",
		"extend_config": map[string]any{"sub_protocol": "dubbo"}}
	push := func(version string, boltRoutes, dubboRoutes map[string]string, boltCfg map[string]any) {
		t.Helper()
		res := xdstest.Resources{}
		for name, addr := range map[string]string{"bolt-a": boltA.Addr(), "bolt-b": boltB.Addr(),
			"dubbo-a": dubboA.Addr(), "dubbo-b": dubboB.Addr()} {
			res.Add(xds.ClusterType, xdstest.EDSCluster(name))
			res.Add(xds.EndpointType, xdstest.Assignment(name, addr))
		}
		res.Add(xds.ListenerType, []types.Resource{
			xdstest.ProxyListener("bolt", boltL, "bolt-routes", boltCfg),
			xdstest.ProxyListener("dubbo", dubboL, "dubbo-routes", dubboProxy),
		}...)
		res.Add(xds.RouteType, xdstest.RouteByHeader("bolt-routes", "service", boltRoutes),
			xdstest.RouteByHeader("dubbo-routes", "service", dubboRoutes))
		if err := cp.SetSnapshot(node, version, res); err != nil {
			t.Fatal(err)
		}
	}
	waitReq := func(what string, match func(xdstest.Request) bool) xdstest.Request {
		t.Helper()
		r, _, err := cp.WaitRequest(0, 20*time.Second, match)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return r
	}
	push("v1", map[string]string{"svc.a": "bolt-a", "svc.b": "bolt-b"}, map[string]string{echoIface: "dubbo-a"}, boltProxy)
	p := startXDSProxy(t, cp, cpAddr, node, 2, xds.ClusterType, xds.EndpointType, xds.ListenerType, xds.RouteType)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bolt, dubbo := dialBoltPeer(t, boltL), dialDubboPeer(t, dubboL)
	boltServer := func(svc string) string {
		t.Helper()
		r, err := bolt.Call(ctx, rpcpeer.BoltRequest(1, svc, "echo", []byte("hello "+svc)))
		if err != nil {
			t.Fatalf("bolt %s: %v\n%s", svc, err, p.Logs())
		}
		m := r.Message()
		if m.Status != 0 || string(m.Content) != "hello "+svc {
			t.Fatalf("bolt %s: status %d content %q", svc, m.Status, m.Content)
		}
		got, _ := r.Header(rpcpeer.BoltHeaderServer)
		return got
	}
	dubboServer := func() string {
		t.Helper()
		res, err := dubbo.Call(ctx, dubboSvc(echoIface, "", "1.0.0", "echo"), []any{"r"}, nil)
		if err != nil {
			t.Fatalf("dubbo: %v\n%s", err, p.Logs())
		}
		if res.Value != "r" || res.Exception != nil {
			t.Fatalf("dubbo: value %v status %d exception %v", res.Value, res.Status, res.Exception)
		}
		return res.Attachments[rpcpeer.AttServer]
	}
	if a, b, d := boltServer("svc.a"), boltServer("svc.b"), dubboServer(); a != "a" || b != "b" || d != "a" {
		t.Fatalf("v1: bolt svc.a served by %q, svc.b by %q, dubbo by %q; want a, b, a", a, b, d)
	}

	// The routes change: both services move to the b servers, on the same client connections.
	push("v2", map[string]string{"svc.a": "bolt-b", "svc.b": "bolt-b"}, map[string]string{echoIface: "dubbo-b"}, boltProxy)
	waitReq("ACK v2 routes", xdstest.ACKOf(xds.RouteType, "v2"))
	waitUntil(t, "the routes of v2", 10*time.Second, func() bool {
		return boltServer("svc.a") == "b" && dubboServer() == "b"
	})

	// A bolt listener with a protocol mosnlite does not know: NACKed, naming the field; the
	// listener it would replace keeps serving.
	push("v3", map[string]string{"svc.a": "bolt-b"}, map[string]string{echoIface: "dubbo-b"},
		map[string]any{"downstream_protocol": "bolt9"})
	nack := waitReq("NACK v3 listeners", xdstest.NACKOf(xds.ListenerType))
	if !strings.Contains(nack.Error, "downstream_protocol") || !strings.Contains(nack.Error, "bolt9") {
		t.Fatalf("NACK of the bad listener: %q", nack.Error)
	}
	for range 3 {
		if got := boltServer("svc.a"); got != "b" {
			t.Fatalf("after the NACK: svc.a served by %q", got)
		}
	}
	if got := dubboServer(); got != "b" {
		t.Fatalf("after the NACK: dubbo served by %q", got)
	}
}

func startControlPlane(t *testing.T) (*xdstest.ControlPlane, string) {
	t.Helper()
	cp := xdstest.New()
	addr := framework.FreePort(t)
	if _, err := cp.Start(addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	return cp, addr
}

// startXDSProxy starts mosnlite on an ADS bootstrap as node and waits for its ACKs of v1 of
// types and for listeners started listeners.
func startXDSProxy(t *testing.T, cp *xdstest.ControlPlane, cpAddr, node string, listeners int, types ...string) *framework.Proxy {
	t.Helper()
	t.Setenv("MOSNLITE_SERVICE_NODE", node)
	t.Setenv("MOSNLITE_SERVICE_CLUSTER", "e2e")
	p := framework.StartProxy(t, adsBootstrap(framework.FreePort(t), cpAddr))
	for _, typ := range types {
		if _, _, err := cp.WaitRequest(0, 20*time.Second, xdstest.ACKOf(typ, "v1")); err != nil {
			t.Fatalf("ACK v1 %s: %v\n%s", typ, err, p.Logs())
		}
	}
	waitUntil(t, "the listeners started", 20*time.Second, func() bool {
		return strings.Count(p.Logs(), "\"listener started\"") >= listeners
	})
	return p
}

// TestXDSDubboProxy: Envoy's dubbo proxy filter, as Aeraki writes it for Dubbo services,
// with inline routes by interface (exact and wildcard), group, version and method. A real
// hessian2 client's calls reach the server each route names.
func TestXDSDubboProxy(t *testing.T) {
	const node = "mosnlite-e2e-dubbo-proxy"
	servers := map[string]*rpcpeer.DubboServer{"a": startDubboPeer(t, "a"), "b": startDubboPeer(t, "b"), "c": startDubboPeer(t, "c")}
	cp, cpAddr := startControlPlane(t)
	listen := framework.FreePort(t)
	route := func(method, cluster string) *dubbov3.Route {
		m := &dubbov3.RouteMatch{}
		if method != "" {
			m.Method = &dubbov3.MethodMatch{Name: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: method}}}
		}
		return &dubbov3.Route{Match: m, Route: &dubbov3.RouteAction{ClusterSpecifier: &dubbov3.RouteAction_Cluster{Cluster: cluster}}}
	}
	d := &dubbov3.DubboProxy{StatPrefix: "dubbo", RouteSpecifier: &dubbov3.DubboProxy_MultipleRouteConfig{
		MultipleRouteConfig: &dubbov3.MultipleRouteConfiguration{Name: "dubbo", RouteConfig: []*dubbov3.RouteConfiguration{
			{Interface: echoIface, Group: "g1", Routes: []*dubbov3.Route{route("", "a")}},
			{Interface: echoIface, Version: "2.0.0", Routes: []*dubbov3.Route{route("other", "c"), route("", "b")}},
			{Interface: "com.example.*", Routes: []*dubbov3.Route{route("", "c")}},
		}}}}
	res := xdstest.Resources{}.Add(xds.ListenerType, xdstest.DubboListener("dubbo", listen, d))
	for name, s := range servers {
		res.Add(xds.ClusterType, xdstest.EDSCluster(name))
		res.Add(xds.EndpointType, xdstest.Assignment(name, s.Addr()))
	}
	if err := cp.SetSnapshot(node, "v1", res); err != nil {
		t.Fatal(err)
	}
	p := startXDSProxy(t, cp, cpAddr, node, 1, xds.ClusterType, xds.EndpointType, xds.ListenerType)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := dialDubboPeer(t, listen)
	for _, c := range []struct{ iface, group, version, method, want string }{
		{echoIface, "g1", "2.0.0", "echo", "a"},
		{echoIface, "", "2.0.0", "echo", "b"},
		{echoIface, "", "2.0.0", "other", "c"},
		{echoIface, "", "1.0.0", "echo", "c"}, // the wildcard interface
		{timeoutSvc, "", "1.0.0", "echo", "c"},
	} {
		r, err := cl.Call(ctx, dubboSvc(c.iface, c.group, c.version, c.method), []any{"r"}, nil)
		if err != nil {
			t.Fatalf("%+v: %v\n%s", c, err, p.Logs())
		}
		if got := r.Attachments[rpcpeer.AttServer]; got != c.want || r.Value != "r" {
			t.Errorf("%+v: answered by %q (value %v, status %d, exception %v), want %q", c, got, r.Value, r.Status, r.Exception, c.want)
		}
	}
	// A service no route names: the client gets an error answer, and the connection serves on.
	if r, err := cl.Call(ctx, dubboSvc("org.other.Svc", "", "1.0.0", "echo"), []any{"r"}, nil); err != nil || r.Status == 20 {
		t.Fatalf("unrouted service: %+v, %v", r, err)
	}
	if r, err := cl.Call(ctx, dubboSvc(echoIface, "g1", "", "echo"), []any{"r"}, nil); err != nil || r.Attachments[rpcpeer.AttServer] != "a" {
		t.Fatalf("after the unrouted call: %+v, %v", r, err)
	}
}

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

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

	cp := xdstest.New()
	cpAddr := framework.FreePort(t)
	if _, err := cp.Start(cpAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
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

	t.Setenv("MOSNLITE_SERVICE_NODE", node)
	t.Setenv("MOSNLITE_SERVICE_CLUSTER", "e2e")
	p := framework.StartProxy(t, adsBootstrap(framework.FreePort(t), cpAddr))
	for _, typ := range []string{xds.ClusterType, xds.EndpointType, xds.ListenerType, xds.RouteType} {
		waitReq("ACK v1 "+typ, xdstest.ACKOf(typ, "v1"))
	}
	waitUntil(t, "the RPC listeners serving", 20*time.Second, func() bool {
		return strings.Count(p.Logs(), "\"listener started\"") >= 2
	})

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

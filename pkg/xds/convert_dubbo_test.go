package xds

//lint:file-ignore SA1019 the deprecated DubboProxy.route_config is what older control planes send; it is tested deliberately.

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	dubbov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dubbo_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/xds/xdstest"
)

func dubboRoute(method string, cluster string, headers ...*routev3.HeaderMatcher) *dubbov3.Route {
	m := &dubbov3.RouteMatch{Headers: headers}
	if method != "" {
		m.Method = &dubbov3.MethodMatch{Name: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: method}}}
	}
	return &dubbov3.Route{Match: m, Route: &dubbov3.RouteAction{ClusterSpecifier: &dubbov3.RouteAction_Cluster{Cluster: cluster}}}
}

// TestConvertDubboProxy: Envoy's dubbo proxy becomes the dubbo proxy filter and one router
// that routes as Envoy's dubbo router does: by interface (exact or wildcard), group,
// version, method and headers, first match in order, weighted clusters included.
func TestConvertDubboProxy(t *testing.T) {
	d := &dubbov3.DubboProxy{StatPrefix: "dubbo", RouteSpecifier: &dubbov3.DubboProxy_MultipleRouteConfig{
		MultipleRouteConfig: &dubbov3.MultipleRouteConfiguration{Name: "m", RouteConfig: []*dubbov3.RouteConfiguration{
			{Interface: "com.example.Echo", Group: "g1", Routes: []*dubbov3.Route{dubboRoute("", "g1")}},
			{Interface: "com.example.Echo", Version: "2.0.0", Routes: []*dubbov3.Route{
				dubboRoute("slow", "slow-v2"),
				dubboRoute("", "canary", &routev3.HeaderMatcher{Name: "env",
					HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
						MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "canary"}}}}),
				{Match: &dubbov3.RouteMatch{}, Route: &dubbov3.RouteAction{ClusterSpecifier: &dubbov3.RouteAction_WeightedClusters{
					WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
						{Name: "w1", Weight: wrapperspb.UInt32(1)}, {Name: "w2", Weight: wrapperspb.UInt32(3)}}}}}},
			}},
			{Interface: "com.example.*", Routes: []*dubbov3.Route{dubboRoute("", "example")}},
			{Interface: "*", Routes: []*dubbov3.Route{dubboRoute("", "any")}},
		}}}}
	cl, err := ConvertListener(xdstest.DubboListener("dubbo", "127.0.0.1:20880", d))
	if err != nil {
		t.Fatal(err)
	}
	typ, pc := func() (string, config.ProxyConfig) {
		var pc config.ProxyConfig
		f := cl.Listener.FilterChains[0].Filters[0]
		if err := config.Unmarshal(f.Config, &pc); err != nil {
			t.Fatal(err)
		}
		return f.Type, pc
	}()
	if typ != config.FilterProxy || pc.DownstreamProtocol != "X" || pc.UpstreamProtocol != "X" || pc.ExtendConfig["sub_protocol"] != "dubbo" ||
		pc.RouterConfigName != InlineRouterName("dubbo") || len(cl.Routers) != 1 || len(cl.RDSNames) != 0 {
		t.Fatalf("dubbo listener: %+v proxy %+v", cl, pc)
	}
	tbl, err := router.New(cl.Routers[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		hdr  map[string]string
		want string
	}{
		{map[string]string{"service": "com.example.Echo", "group": "g1", "version": "2.0.0", "method": "slow"}, "g1"},
		{map[string]string{"service": "com.example.Echo", "version": "2.0.0", "method": "slow"}, "slow-v2"},
		{map[string]string{"service": "com.example.Echo", "version": "2.0.0", "method": "echo", "env": "canary"}, "canary"},
		{map[string]string{"service": "com.example.Echo", "version": "2.0.0", "method": "echo"}, "w1"}, // weight draw 0
		{map[string]string{"service": "com.example.Echo", "version": "1.0.0", "method": "echo"}, "example"},
		{map[string]string{"service": "com.example.", "method": "echo"}, "any"}, // the wildcard needs a rest
		{map[string]string{"service": "org.other.Svc", "method": "echo"}, "any"},
	} {
		r := req{"", "/", c.hdr}
		rt, _ := tbl.Match(r)
		if rt == nil {
			t.Fatalf("%v: no route", c.hdr)
		}
		if got := rt.ClusterFor(r, 0); got != c.want {
			t.Errorf("%v: cluster %q, want %q", c.hdr, got, c.want)
		}
	}

	bad := func(mut func(d *dubbov3.DubboProxy)) *dubbov3.DubboProxy {
		d := &dubbov3.DubboProxy{RouteConfig: []*dubbov3.RouteConfiguration{{Interface: "a.B", Routes: []*dubbov3.Route{dubboRoute("", "c")}}}}
		mut(d)
		return d
	}
	for _, c := range []struct {
		name string
		d    *dubbov3.DubboProxy
		want string
	}{
		{"thrift", bad(func(d *dubbov3.DubboProxy) { d.ProtocolType = 1 }), "protocol_type"},
		{"drds", bad(func(d *dubbov3.DubboProxy) {
			d.RouteConfig = nil
			d.RouteSpecifier = &dubbov3.DubboProxy_Drds{Drds: &dubbov3.Drds{RouteConfigName: "x"}}
		}), "drds is not supported"},
		{"no routes", bad(func(d *dubbov3.DubboProxy) { d.RouteConfig = nil }), "no route configuration"},
		{"no interface", bad(func(d *dubbov3.DubboProxy) { d.RouteConfig[0].Interface = "" }), "route_config[0]: interface: missing"},
		{"params", bad(func(d *dubbov3.DubboProxy) {
			d.RouteConfig[0].Routes[0].Match.Method = &dubbov3.MethodMatch{ParamsMatch: map[uint32]*dubbov3.MethodMatch_ParameterMatchSpecifier{0: {}}}
		}), "params_match is not supported"},
		{"no cluster", bad(func(d *dubbov3.DubboProxy) { d.RouteConfig[0].Routes[0].Route = &dubbov3.RouteAction{} }), "no cluster specifier"},
		{"filter", bad(func(d *dubbov3.DubboProxy) {
			d.DubboFilters = []*dubbov3.DubboFilter{{Name: "envoy.filters.dubbo.testFilter"}}
		}), "only the router filter"},
	} {
		if _, err := ConvertListener(xdstest.DubboListener("bad", "127.0.0.1:1", c.d)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
}

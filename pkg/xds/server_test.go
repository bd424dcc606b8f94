package xds_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/extension/builtin"
	"github.com/mosnlite/mosnlite/pkg/server"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/xds"
	"github.com/mosnlite/mosnlite/pkg/xds/xdstest"
)

func freeAddr(t *testing.T) string { return testutil.FreeAddr(t) }

// TestRealServerAcceptsConvertedConfig pushes a broad set of resources (every cluster type,
// an inline route configuration using most route features, a tcp_proxy listener) through
// the client into a real *server.Server: every type is ACKed, none NACKed, and the listener
// answers from its inline route.
func TestRealServerAcceptsConvertedConfig(t *testing.T) {
	ext, err := builtin.NewSet()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{}
	cfg.ApplyDefaults()
	s, err := server.New(cfg, server.Options{Extensions: ext, Log: zaptest.NewLogger(t), AdminAddress: "-"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- s.Run(ctx) }()

	cp := xdstest.New()
	addr, err := cp.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := xds.New(&xds.Bootstrap{Targets: []string{addr}, CDS: true, LDS: true, ConnectTimeout: time.Second,
		KeepaliveInterval: 10 * time.Second, KeepaliveTimeout: 5 * time.Second},
		s, xds.Options{NodeID: "n", Log: zaptest.NewLogger(t), BackoffBase: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if s.Ready() {
		t.Fatal("ready before the first xDS config")
	}
	clientDone := make(chan error, 1)
	go func() { clientDone <- c.Run(ctx) }()
	defer func() {
		cancel()
		for _, ch := range []chan error{clientDone, runDone} {
			select {
			case err := <-ch:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("Run did not return")
			}
		}
		cp.Stop()
	}()

	httpAddr, tcpAddr := freeAddr(t), freeAddr(t)
	dns := xdstest.StaticCluster("dns", "localhost:9")
	dns.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}

	rc := &routev3.RouteConfiguration{Name: "ignored",
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-xds", Value: "1"}}},
		VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/api"}, Headers: []*routev3.HeaderMatcher{
				{Name: "x-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "a"}}}}}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
						{Name: "static", Weight: wrapperspb.UInt32(1)}, {Name: "eds", Weight: wrapperspb.UInt32(1)}}}},
					PrefixRewrite: "/v2", Timeout: durationpb.New(time.Second),
					RetryPolicy: &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2)},
					HashPolicy:  []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}},
				}}},
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/old"}},
				Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"}}}},
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/c/.*"}}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_ClusterHeader{ClusterHeader: "x-cluster"}}}},
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200,
					Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "from xds"}}}}},
		}}}}
	hl := xdstest.HTTPListener("http", httpAddr, "unused")
	var hcm hcmv3.HttpConnectionManager
	if err := hl.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
	a, _ := anypb.New(&hcm)
	hl.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	tp, _ := anypb.New(&tcpv3.TcpProxy{StatPrefix: "tcp", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "static"}})
	tl := &listenerv3.Listener{Name: "tcp", Address: xdstest.Address(tcpAddr), FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
		Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tp}}}}}}

	res := xdstest.Resources{}.
		Add(xds.ClusterType, xdstest.StaticCluster("static", "127.0.0.1:9"), xdstest.EDSCluster("eds"), dns).
		Add(xds.EndpointType, xdstest.Assignment("eds", "127.0.0.1:10", "127.0.0.1:11")).
		Add(xds.ListenerType, hl, tl)
	if err := cp.SetSnapshot("n", "v1", res); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{xds.ClusterType, xds.EndpointType, xds.ListenerType} {
		if _, _, err := cp.WaitRequest(0, 10*time.Second, xdstest.ACKOf(typ, "v1")); err != nil {
			t.Fatalf("%s: %v; requests %+v", typ, err, cp.Requests())
		}
	}
	for _, r := range cp.Requests() {
		if r.NACK {
			t.Fatalf("NACK: %+v", r)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !s.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("not ready after the first full config")
		}
		time.Sleep(20 * time.Millisecond)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get("http://" + httpAddr + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "from xds") {
		t.Fatalf("GET: %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

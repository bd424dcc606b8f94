package xds

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/xds/xdstest"
)

func dur(d time.Duration) *config.Duration { v := config.Duration(d); return &v }

func hv(k, v string, appendValue bool) config.HeaderValueOption {
	o := config.HeaderValueOption{Append: &appendValue}
	o.Header = &struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	}{k, v}
	return o
}

func toCluster(name string) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}}
}

func prefix(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

func TestConvertRoute(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		name    string
		in      *routev3.Route
		want    config.Route
		wantErr string
	}{
		{name: "prefix to cluster", in: &routev3.Route{Match: prefix("/api"), Action: toCluster("c1")},
			want: config.Route{Match: config.RouteMatch{Prefix: "/api"}, Route: &config.RouteAction{ClusterName: "c1"}}},
		{name: "empty prefix matches all", in: &routev3.Route{Match: prefix(""), Action: toCluster("c1")},
			want: config.Route{Match: config.RouteMatch{Prefix: "/"}, Route: &config.RouteAction{ClusterName: "c1"}}},
		{name: "path", in: &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/x"}}, Action: toCluster("c")},
			want: config.Route{Match: config.RouteMatch{Path: "/x"}, Route: &config.RouteAction{ClusterName: "c"}}},
		{name: "safe_regex", in: &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/v[0-9]+/.*"}}}, Action: toCluster("c")},
			want: config.Route{Match: config.RouteMatch{Regex: "/v[0-9]+/.*"}, Route: &config.RouteAction{ClusterName: "c"}}},
		{name: "case-insensitive prefix", in: &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/A.b"}, CaseSensitive: wrapperspb.Bool(false)}, Action: toCluster("c")},
			want: config.Route{Match: config.RouteMatch{Regex: `(?i)/A\.b.*`}, Route: &config.RouteAction{ClusterName: "c"}}},
		{name: "bad regex", in: &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}}, Action: toCluster("c")},
			wantErr: "safe_regex"},
		{name: "header matchers", in: &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
			{Name: "x-exact", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "v"}},
			{Name: "x-re", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "a+"}}},
			{Name: "x-present", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}},
			{Name: "x-sm", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "e"}}}},
			{Name: "x-pre", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "p."}}}},
		}}, Action: toCluster("c")},
			want: config.Route{Match: config.RouteMatch{Prefix: "/", Headers: []config.HeaderMatcher{
				{Name: "x-exact", Value: "v", Regex: &no},
				{Name: "x-re", Value: "a+", Regex: &yes},
				{Name: "x-present", Value: "(?s).*", Regex: &yes},
				{Name: "x-sm", Value: "e", Regex: &no},
				{Name: "x-pre", Value: `(?s)p\..*`, Regex: &yes},
			}}, Route: &config.RouteAction{ClusterName: "c"}}},
		{name: "inverted header is an error", in: &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
			{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "v"}, InvertMatch: true}}}, Action: toCluster("c")},
			wantErr: "invert_match"},
		{name: "query parameters are an error", in: &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			QueryParameters: []*routev3.QueryParameterMatcher{{Name: "q"}}}, Action: toCluster("c")},
			wantErr: "query_parameters"},
		{name: "full route action", in: &routev3.Route{Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier:     &routev3.RouteAction_ClusterHeader{ClusterHeader: "x-cluster"},
			PrefixRewrite:        "/new",
			HostRewriteSpecifier: &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "up.example"},
			Timeout:              durationpb.New(3 * time.Second),
			MaxStreamDuration:    &routev3.RouteAction_MaxStreamDuration{GrpcTimeoutHeaderMax: durationpb.New(30 * time.Second), GrpcTimeoutHeaderOffset: durationpb.New(50 * time.Millisecond)},
			RetryPolicy:          &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2), PerTryTimeout: durationpb.New(time.Second), RetriableStatusCodes: []uint32{503}},
			HashPolicy: []*routev3.RouteAction_HashPolicy{
				{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}},
				{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}},
			},
		}}},
			want: config.Route{Match: config.RouteMatch{Prefix: "/"}, Route: &config.RouteAction{
				ClusterHeader: "x-cluster", PrefixRewrite: "/new", HostRewrite: "up.example", Timeout: dur(3 * time.Second),
				MaxGrpcTimeout: dur(30 * time.Second), GrpcTimeoutOffset: dur(50 * time.Millisecond),
				RetryPolicy: &config.RetryPolicy{RetryOn: true, NumRetries: 2, RetryTimeout: dur(time.Second), RetriableStatusCodes: []uint32{503}},
				HashPolicy: []config.HashPolicy{
					{Header: &struct {
						Key string `json:"key"`
					}{"x-user"}},
					{SourceIP: &struct{}{}},
				},
			}}},
		{name: "weighted clusters and auto host rewrite", in: &routev3.Route{Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
				{Name: "a", Weight: wrapperspb.UInt32(80)}, {Name: "b", Weight: wrapperspb.UInt32(20)}}}},
			HostRewriteSpecifier: &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)},
		}}},
			want: func() config.Route {
				r := config.Route{Match: config.RouteMatch{Prefix: "/"}, Route: &config.RouteAction{AutoHostRewrite: true}}
				var a, b config.WeightedCluster
				a.Cluster.Name, a.Cluster.Weight = "a", 80
				b.Cluster.Name, b.Cluster.Weight = "b", 20
				r.Route.WeightedClusters = []config.WeightedCluster{a, b}
				return r
			}()},
		{name: "direct response with headers", in: &routev3.Route{Match: prefix("/"),
			Action:                  &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "hi"}}}},
			ResponseHeadersToAdd:    []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-a", Value: "1"}}, {Header: &corev3.HeaderValue{Key: "x-b", Value: "2"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}},
			RequestHeadersToRemove:  []string{"x-drop"},
			ResponseHeadersToRemove: []string{"server"},
		},
			want: config.Route{Match: config.RouteMatch{Prefix: "/"}, DirectResponse: &config.DirectResponse{StatusCode: 200, Body: "hi"},
				ResponseHeadersToAdd:   []config.HeaderValueOption{hv("x-a", "1", true), hv("x-b", "2", false)},
				RequestHeadersToRemove: []string{"x-drop"}, ResponseHeadersToRemove: []string{"server"}}},
		{name: "add-if-absent is an error", in: &routev3.Route{Match: prefix("/"), Action: toCluster("c"),
			RequestHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x", Value: "1"}, AppendAction: corev3.HeaderValueOption_ADD_IF_ABSENT}}},
			wantErr: "append_action"},
		{name: "redirect", in: &routev3.Route{Match: prefix("/"), Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
			SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}, HostRedirect: "h", PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/p"},
			ResponseCode: routev3.RedirectAction_PERMANENT_REDIRECT}}},
			want: config.Route{Match: config.RouteMatch{Prefix: "/"}, Redirect: &config.RedirectAction{ResponseCode: 308, SchemeRedirect: "https", HostRedirect: "h", PathRedirect: "/p"}}},
		{name: "mirror", in: &routev3.Route{Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier:      &routev3.RouteAction_Cluster{Cluster: "c"},
			RequestMirrorPolicies: []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "shadow", RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 2500, Denominator: typev3.FractionalPercent_TEN_THOUSAND}}}},
		}}},
			want: config.Route{Match: config.RouteMatch{Prefix: "/"}, Route: &config.RouteAction{ClusterName: "c"}, RequestMirrorPolicies: &config.MirrorPolicy{Cluster: "shadow", Percent: 25}}},
		{name: "no action", in: &routev3.Route{Match: prefix("/")}, wantErr: "no action"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := convertRoute(tc.in, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(tc.want)
				t.Fatalf("got  %s\nwant %s", g, w)
			}
		})
	}
}

// TestConvertRouteConfigurationBuilds checks that converted route configurations are
// accepted by the router and route as Envoy would.
func TestConvertRouteConfigurationBuilds(t *testing.T) {
	rc := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{
		{Name: "api", Domains: []string{"api.example"}, Routes: []*routev3.Route{
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
				{Name: "x-canary", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}}, Action: toCluster("canary")},
			{Match: prefix("/v1"), Action: toCluster("v1")},
		}},
		{Name: "rest", Domains: []string{"*"}, Routes: []*routev3.Route{{Match: prefix("/"), Action: toCluster("default")}},
			RetryPolicy: &routev3.RetryPolicy{RetryOn: "connect-failure"}},
	}}
	cfg, err := ConvertRouteConfiguration("r", rc)
	if err != nil {
		t.Fatal(err)
	}
	if rp := cfg.VirtualHosts[1].Routers[0].Route.RetryPolicy; rp == nil || !rp.RetryOn || rp.NumRetries != 1 {
		t.Fatalf("virtual host retry policy not inherited: %+v", rp)
	}
	tbl, err := router.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		host, path string
		hdr        map[string]string
		want       string
	}{
		{"api.example", "/v1/x", nil, "v1"},
		{"api.example", "/v1/x", map[string]string{"x-canary": ""}, "canary"},
		{"other", "/anything", nil, "default"},
	} {
		rt, _ := tbl.Match(req{c.host, c.path, c.hdr})
		if rt == nil {
			t.Fatalf("%s%s: no route", c.host, c.path)
		}
		if got := rt.ClusterFor(req{c.host, c.path, c.hdr}, 0); got != c.want {
			t.Fatalf("%s%s %v: cluster %q, want %q", c.host, c.path, c.hdr, got, c.want)
		}
	}
}

type req struct {
	host, path string
	hdr        map[string]string
}

func (r req) Host() string   { return r.host }
func (r req) Path() string   { return r.path }
func (r req) Method() string { return "GET" }
func (r req) Header(n string) (string, bool) {
	v, ok := r.hdr[n]
	return v, ok
}
func (r req) Variable(string) (string, bool) { return "", false }

func TestConvertCluster(t *testing.T) {
	eds := xdstest.EDSCluster("svc")
	eds.EdsClusterConfig.ServiceName = "svc-assignment"
	eds.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	eds.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{ChoiceCount: wrapperspb.UInt32(3)}}
	eds.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(10), MaxPendingRequests: wrapperspb.UInt32(20), MaxRequests: wrapperspb.UInt32(30), MaxRetries: wrapperspb.UInt32(4)}}}
	eds.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(7), Interval: durationpb.New(5 * time.Second),
		BaseEjectionTime: durationpb.New(10 * time.Second), MaxEjectionTime: durationpb.New(time.Minute), MaxEjectionPercent: wrapperspb.UInt32(50)}
	eds.HealthChecks = []*corev3.HealthCheck{{Timeout: durationpb.New(time.Second), Interval: durationpb.New(2 * time.Second),
		HealthyThreshold: wrapperspb.UInt32(1), UnhealthyThreshold: wrapperspb.UInt32(2),
		HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{Path: "/healthz",
			ExpectedStatuses: []*typev3.Int64Range{{Start: 200, End: 300}}}}}}

	dns := &clusterv3.Cluster{Name: "dns", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		LbPolicy: clusterv3.Cluster_MAGLEV, DnsLookupFamily: clusterv3.Cluster_V4_ONLY, DnsRefreshRate: durationpb.New(time.Minute),
		LoadAssignment: xdstest.Assignment("dns", "upstream.example:80")}

	for _, tc := range []struct {
		name    string
		in      *clusterv3.Cluster
		want    ConvertedCluster
		wantErr string
	}{
		{name: "eds", in: eds, want: ConvertedCluster{ServiceName: "svc-assignment", Cluster: config.Cluster{
			Name: "svc", Type: "EDS", LBType: "LB_LEAST_REQUEST", LBConfig: &config.LBConfig{ChoiceCount: 3}, ConnectTimeout: dur(time.Second),
			CircuitBreakers:  []config.CircuitBreaker{{Priority: "DEFAULT", MaxConnections: new(uint32(10)), MaxPendingRequests: new(uint32(20)), MaxRequests: new(uint32(30)), MaxRetries: new(uint32(4))}},
			OutlierDetection: &config.OutlierDetection{Consecutive5xx: 7, Interval: dur(5 * time.Second), BaseEjectionTime: dur(10 * time.Second), MaxEjectionTime: dur(time.Minute), MaxEjectionPercent: func() *uint32 { v := uint32(50); return &v }()},
			HealthCheck: &config.HealthCheck{Protocol: "http", Timeout: dur(time.Second), Interval: dur(2 * time.Second), HealthyThreshold: 1, UnhealthyThreshold: 2,
				CheckConfig: &config.HealthCheckConfig{HTTP: &config.HTTPCheckConfig{Path: "/healthz", Codes: []config.StatusRange{{Start: 200, End: 299}}}}},
		}}},
		{name: "static", in: xdstest.StaticCluster("s", "127.0.0.1:1", "127.0.0.1:2"), want: ConvertedCluster{Cluster: config.Cluster{
			Name: "s", Type: "SIMPLE", LBType: "LB_WEIGHTED_ROUNDROBIN", ConnectTimeout: dur(time.Second),
			Hosts: []config.Host{{Address: "127.0.0.1:1", Weight: 1}, {Address: "127.0.0.1:2", Weight: 1}}}}},
		{name: "strict dns", in: dns, want: ConvertedCluster{Cluster: config.Cluster{
			Name: "dns", Type: "STRICT_DNS", LBType: "LB_MAGLEV", DNSLookupFamily: "V4_ONLY", DNSRefreshRate: dur(time.Minute),
			Hosts: []config.Host{{Address: "upstream.example:80", Weight: 1}}}}},
		{name: "breaker 0 kept, absent left out", in: func() *clusterv3.Cluster {
			c := xdstest.StaticCluster("z", "127.0.0.1:1")
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRetries: wrapperspb.UInt32(0)}}}
			return c
		}(), want: ConvertedCluster{Cluster: config.Cluster{
			Name: "z", Type: "SIMPLE", LBType: "LB_WEIGHTED_ROUNDROBIN", ConnectTimeout: dur(time.Second),
			Hosts:           []config.Host{{Address: "127.0.0.1:1", Weight: 1}},
			CircuitBreakers: []config.CircuitBreaker{{Priority: "DEFAULT", MaxRetries: new(uint32(0))}}}}},
		{name: "load balancing policy is an error", in: xdstest.InvalidCluster("x"), wantErr: "LOAD_BALANCING_POLICY"},
		{name: "tls is an error", in: func() *clusterv3.Cluster {
			c := xdstest.StaticCluster("t", "127.0.0.1:1")
			c.TransportSocket = &corev3.TransportSocket{Name: "tls"}
			return c
		}(), wantErr: "transport_socket"},
		{name: "custom cluster type is an error", in: &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_ClusterType{ClusterType: &clusterv3.Cluster_CustomClusterType{Name: "x"}}}, wantErr: "cluster_type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ConvertCluster(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(tc.want)
				t.Fatalf("got  %s\nwant %s", g, w)
			}
		})
	}
}

func TestConvertLoadAssignment(t *testing.T) {
	ep := func(addr string, hs corev3.HealthStatus, w uint32) *endpointv3.LbEndpoint {
		e := &endpointv3.LbEndpoint{HealthStatus: hs, HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: xdstest.Address(addr)}}}
		if w > 0 {
			e.LoadBalancingWeight = wrapperspb.UInt32(w)
		}
		return e
	}
	md, _ := structpb.NewStruct(map[string]any{"zone": "a"})
	withMeta := ep("10.0.0.5:80", corev3.HealthStatus_HEALTHY, 0)
	withMeta.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.lb": md}}
	la := &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{
		ep("10.0.0.1:80", corev3.HealthStatus_UNKNOWN, 3),
		ep("10.0.0.2:80", corev3.HealthStatus_UNHEALTHY, 0),
		ep("10.0.0.3:80", corev3.HealthStatus_DRAINING, 0),
		ep("10.0.0.4:80", corev3.HealthStatus_DEGRADED, 0),
		withMeta,
	}}}}
	got, err := ConvertLoadAssignment(la)
	if err != nil {
		t.Fatal(err)
	}
	want := []config.Host{{Address: "10.0.0.1:80", Weight: 3}, {Address: "10.0.0.4:80", Weight: 1},
		{Address: "10.0.0.5:80", Weight: 1, MetaData: map[string]string{"zone": "a"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	la.Endpoints = append(la.Endpoints, &endpointv3.LocalityLbEndpoints{Priority: 1, LbEndpoints: []*endpointv3.LbEndpoint{ep("10.0.0.9:80", 0, 0)}})
	if _, err := ConvertLoadAssignment(la); err == nil || !strings.Contains(err.Error(), "priority") {
		t.Fatalf("priority 1: err = %v", err)
	}
}

func TestConvertListener(t *testing.T) {
	proxyCfg := func(l config.Listener) (string, config.ProxyConfig) {
		var pc config.ProxyConfig
		f := l.FilterChains[0].Filters[0]
		if err := json.Unmarshal(f.Config, &pc); err != nil {
			t.Fatal(err)
		}
		return f.Type, pc
	}
	// RDS.
	cl, err := ConvertListener(xdstest.HTTPListener("http", "127.0.0.1:8080", "routes"))
	if err != nil {
		t.Fatal(err)
	}
	typ, pc := proxyCfg(cl.Listener)
	if cl.Listener.Name != "http" || cl.Listener.Address != "127.0.0.1:8080" || typ != "proxy" ||
		pc.DownstreamProtocol != "Http1,Http2" || pc.UpstreamProtocol != "Http1" || pc.RouterConfigName != "routes" ||
		!reflect.DeepEqual(cl.RDSNames, []string{"routes"}) || len(cl.Routers) != 0 {
		t.Fatalf("rds listener: %+v proxy %+v", cl, pc)
	}

	// Inline route config, codec HTTP1.
	l := xdstest.HTTPListener("inline", "127.0.0.1:8081", "")
	var hcm hcmv3.HttpConnectionManager
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	hcm.CodecType = hcmv3.HttpConnectionManager_HTTP1
	hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: xdstest.RouteToCluster("ignored", "c1")}
	a, _ := anypb.New(&hcm)
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	cl, err = ConvertListener(l)
	if err != nil {
		t.Fatal(err)
	}
	_, pc = proxyCfg(cl.Listener)
	if pc.DownstreamProtocol != "Http1" || pc.RouterConfigName != InlineRouterName("inline") || len(cl.Routers) != 1 ||
		cl.Routers[0].RouterConfigName != InlineRouterName("inline") || cl.Routers[0].VirtualHosts[0].Routers[0].Route.ClusterName != "c1" {
		t.Fatalf("inline listener: %+v proxy %+v", cl, pc)
	}

	// tcp_proxy.
	tp, _ := anypb.New(&tcpv3.TcpProxy{StatPrefix: "tcp", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "db"}, IdleTimeout: durationpb.New(time.Minute)})
	tl := &listenerv3.Listener{Name: "tcp", Address: xdstest.Address("0.0.0.0:3306"), FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
		Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tp}}}}}}
	cl, err = ConvertListener(tl)
	if err != nil {
		t.Fatal(err)
	}
	var tcfg config.TCPProxyConfig
	if f := cl.Listener.FilterChains[0].Filters[0]; f.Type != "tcp_proxy" || config.Unmarshal(f.Config, &tcfg) != nil ||
		tcfg.Cluster != "db" || tcfg.IdleTimeout.D() != time.Minute {
		t.Fatalf("tcp listener: %+v %+v", cl, tcfg)
	}

	// socket_options: TCP_USER_TIMEOUT is the send_timeout; other options are listed as
	// ignored; an out-of-range timeout is refused.
	so := xdstest.HTTPListener("so", "127.0.0.1:8082", "routes")
	so.SocketOptions = []*corev3.SocketOption{
		{Level: 1, Name: 9, Value: &corev3.SocketOption_IntValue{IntValue: 1}}, // SO_KEEPALIVE
		{Level: 6, Name: 18, Value: &corev3.SocketOption_IntValue{IntValue: 20000}},
	}
	cl, err = ConvertListener(so)
	if err != nil {
		t.Fatal(err)
	}
	if st := cl.Listener.SendTimeout; st == nil || st.D() != 20*time.Second || !reflect.DeepEqual(cl.Ignored, []string{"socket_options[0] level 1 name 9"}) {
		t.Fatalf("socket options: send_timeout %v, ignored %q", st, cl.Ignored)
	}
	so.SocketOptions[1].Value = &corev3.SocketOption_IntValue{IntValue: -1}
	if _, err := ConvertListener(so); err == nil || !strings.Contains(err.Error(), "TCP_USER_TIMEOUT") {
		t.Fatalf("negative TCP_USER_TIMEOUT: err = %v", err)
	}

	// Errors.
	two := xdstest.HTTPListener("two", "127.0.0.1:1", "r")
	two.FilterChains = append(two.FilterChains, two.FilterChains[0])
	unknown := xdstest.HTTPListener("unknown", "127.0.0.1:1", "r")
	unknown.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"}}
	for _, c := range []struct {
		l    *listenerv3.Listener
		want string
	}{
		{two, "only one chain"},
		{unknown, "redis_proxy"},
		{&listenerv3.Listener{Name: "noaddr"}, "address"},
	} {
		if _, err := ConvertListener(c.l); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.l.GetName(), err, c.want)
		}
	}
}

func TestParseBootstrap(t *testing.T) {
	envoyForm := `{
	  "dynamic_resources": {
	    "lds_config": {"ads": {}, "initial_fetch_timeout": "3s"},
	    "cds_config": {"ads": {}},
	    "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
	      "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}
	  },
	  "static_resources": {"clusters": [
	    {"name": "other", "type": "STATIC", "some_future_field": 1},
	    {"name": "xds-grpc", "type": "STATIC", "connect_timeout": "2s",
	     "http2_protocol_options": {"connection_keepalive": {"interval": "5s", "timeout": "1s"}},
	     "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [
	       {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}}}]}]}}
	  ]}
	}`
	cfg, _, err := config.Parse([]byte(envoyForm), config.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseBootstrap(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := &Bootstrap{ClusterName: "xds-grpc", Targets: []string{"127.0.0.1:15010"}, CDS: true, LDS: true,
		ConnectTimeout: 2 * time.Second, KeepaliveInterval: 5 * time.Second, KeepaliveTimeout: time.Second, InitialFetchTimeout: 3 * time.Second}
	if !reflect.DeepEqual(b, want) {
		t.Fatalf("got %+v\nwant %+v", b, want)
	}

	mosnForm := `{
	  "dynamic_resources": {"cds_config": {"ads": {}}, "ads_config": {"api_type": "GRPC",
	      "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]}},
	  "cluster_manager": {"clusters": [{"name": "xds", "type": "SIMPLE", "hosts": [{"address": "127.0.0.1:18000"}]}]}
	}`
	cfg, _, err = config.Parse([]byte(mosnForm), config.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err = ParseBootstrap(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !b.CDS || b.LDS || !reflect.DeepEqual(b.Targets, []string{"127.0.0.1:18000"}) {
		t.Fatalf("mosn form: %+v", b)
	}

	for _, c := range []struct{ doc, want string }{
		{`{"dynamic_resources": {"cds_config": {"ads": {}}, "ads_config": {"api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "nope"}}]}}}`, `cluster "nope" is in neither`},
		{`{"dynamic_resources": {"cds_config": {"ads": {}}, "ads_config": {"api_type": "DELTA_GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "x"}}]}}}`, "only GRPC"},
		{`{"dynamic_resources": {"ads_config": {"api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "x"}}]}}}`, "nothing to subscribe"},
		{`{"dynamic_resources": {"cds_config": {"path": "/etc/cds.yaml"}, "ads_config": {"api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "x"}}]}}}`, "cds_config"},
	} {
		cfg, _, err := config.Parse([]byte(c.doc), config.ParseOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseBootstrap(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want %q", err, c.want)
		}
	}
	// No dynamic_resources: no client.
	if b, err := ParseBootstrap(&config.Config{}); b != nil || err != nil {
		t.Fatalf("empty: %v %v", b, err)
	}
}

// TestConvertProxyTypedStruct: MOSN's proxy filter in a TypedStruct (xds.type.v3 or
// udpa.type.v1) becomes the proxy filter with that JSON config as is (validated later, with
// every other proxy filter), its router name an RDS subscription; a TypedStruct of another
// type, or without a router name or a value, is refused.
func TestConvertProxyTypedStruct(t *testing.T) {
	bolt := map[string]any{"downstream_protocol": "bolt", "extend_config": map[string]any{"x": 1.0}}
	cl, err := ConvertListener(xdstest.ProxyListener("bolt", "127.0.0.1:12200", "bolt-routes", bolt))
	if err != nil {
		t.Fatal(err)
	}
	f := cl.Listener.FilterChains[0].Filters[0]
	var got map[string]any
	if err := json.Unmarshal(f.Config, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"downstream_protocol": "bolt", "router_config_name": "bolt-routes", "extend_config": map[string]any{"x": 1.0}}
	if f.Type != config.FilterProxy || !reflect.DeepEqual(got, want) || !reflect.DeepEqual(cl.RDSNames, []string{"bolt-routes"}) || len(cl.Routers) != 0 {
		t.Fatalf("typed struct listener: %+v, config %v", cl, got)
	}

	// The older udpa.type.v1.TypedStruct says the same.
	val, _ := structpb.NewStruct(map[string]any{"downstream_protocol": "X", "router_config_name": "dubbo-routes",
		"extend_config": map[string]any{"sub_protocol": "dubbo"}})
	udpa := func(typeURL string, v *structpb.Struct) *listenerv3.Listener {
		a, _ := anypb.New(&udpatypev1.TypedStruct{TypeUrl: typeURL, Value: v})
		l := xdstest.ProxyListener("udpa", "127.0.0.1:20880", "r", nil)
		l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		return l
	}
	if cl, err = ConvertListener(udpa("type.googleapis.com/proxy", val)); err != nil || !reflect.DeepEqual(cl.RDSNames, []string{"dubbo-routes"}) {
		t.Fatalf("udpa typed struct: %+v, %v", cl, err)
	}

	noRouter, _ := structpb.NewStruct(map[string]any{"downstream_protocol": "bolt"})
	for _, c := range []struct {
		name string
		l    *listenerv3.Listener
		want string
	}{
		{"other type", udpa("mosn.io/tcp_proxy", val), `type_url "mosn.io/tcp_proxy" is not supported`},
		{"no router", udpa("mosn.io/proxy", noRouter), "router_config_name missing"},
		{"no value", udpa("mosn.io/proxy", nil), "no value"},
	} {
		if _, err := ConvertListener(c.l); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
}

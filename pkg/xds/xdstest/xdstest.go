// Package xdstest runs go-control-plane's own ADS server (snapshot cache) in-process for
// tests, records every request it receives (so tests see ACKs and NACKs as the control plane
// does) and builds the Envoy resources tests push.
package xdstest

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	dubbov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dubbo_proxy/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Request is one DiscoveryRequest the control plane received.
type Request struct {
	Stream  int64
	TypeURL string
	Version string
	Nonce   string
	Names   []string
	// Error is the NACK's error_detail message ("" for an ACK or a subscription).
	Error string
	NACK  bool
}

// ControlPlane is a go-control-plane ADS server on a TCP address.
type ControlPlane struct {
	Cache cachev3.SnapshotCache

	mu      sync.Mutex
	addr    string
	srv     *grpc.Server
	done    chan struct{}
	reqs    []Request
	changed chan struct{}
	cancel  context.CancelFunc
}

// New makes a control plane with an empty ADS snapshot cache; Start serves it.
func New() *ControlPlane {
	return &ControlPlane{
		Cache:   cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil),
		changed: make(chan struct{}),
	}
}

// Start serves on addr ("127.0.0.1:0" picks a port; a stopped control plane restarts on its
// old address with ""). It returns the bound address.
func (cp *ControlPlane) Start(addr string) (string, error) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.srv != nil {
		return "", fmt.Errorf("xdstest: already serving on %s", cp.addr)
	}
	if addr == "" {
		addr = cp.addr
	}
	var ln net.Listener
	var err error
	// The old port may linger briefly after a stop.
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithCancel(context.Background())
	cb := serverv3.CallbackFuncs{StreamRequestFunc: cp.record}
	xs := serverv3.NewServer(ctx, cp.Cache, cb)
	// Tests ping as often as every few hundred milliseconds (short keepalive settings so a
	// half-open connection is noticed quickly): the server must not answer that with a
	// too_many_pings GOAWAY.
	srv := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
		MinTime: 50 * time.Millisecond, PermitWithoutStream: true,
	}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, xs)
	cp.srv, cp.addr, cp.cancel = srv, ln.Addr().String(), cancel
	done := make(chan struct{})
	cp.done = done
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	return cp.addr, nil
}

// Stop closes the server and every stream at once (as a crash would).
func (cp *ControlPlane) Stop() {
	cp.mu.Lock()
	srv, done, cancel := cp.srv, cp.done, cp.cancel
	cp.srv = nil
	cp.mu.Unlock()
	if srv == nil {
		return
	}
	srv.Stop()
	cancel()
	<-done
}

// Addr is the address served (or last served).
func (cp *ControlPlane) Addr() string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.addr
}

func (cp *ControlPlane) record(stream int64, r *discoveryv3.DiscoveryRequest) error {
	req := Request{
		Stream: stream, TypeURL: r.GetTypeUrl(), Version: r.GetVersionInfo(), Nonce: r.GetResponseNonce(),
		Names: append([]string(nil), r.GetResourceNames()...),
	}
	if ed := r.GetErrorDetail(); ed != nil {
		req.NACK, req.Error = true, ed.GetMessage()
	}
	cp.mu.Lock()
	cp.reqs = append(cp.reqs, req)
	close(cp.changed)
	cp.changed = make(chan struct{})
	cp.mu.Unlock()
	return nil
}

// Requests returns every request received so far, in order.
func (cp *ControlPlane) Requests() []Request {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]Request(nil), cp.reqs...)
}

// WaitRequest waits up to timeout for a request, received at index from or later, that
// matches; it returns the request and its index.
func (cp *ControlPlane) WaitRequest(from int, timeout time.Duration, match func(Request) bool) (Request, int, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		cp.mu.Lock()
		for i := from; i < len(cp.reqs); i++ {
			if match(cp.reqs[i]) {
				r := cp.reqs[i]
				cp.mu.Unlock()
				return r, i, nil
			}
		}
		from = len(cp.reqs)
		ch := cp.changed
		cp.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			return Request{}, -1, fmt.Errorf("xdstest: no matching request within %v", timeout)
		}
	}
}

// ACKOf matches the ACK of version for typeURL.
func ACKOf(typeURL, version string) func(Request) bool {
	return func(r Request) bool { return r.TypeURL == typeURL && !r.NACK && r.Version == version && r.Nonce != "" }
}

// NACKOf matches a NACK for typeURL.
func NACKOf(typeURL string) func(Request) bool {
	return func(r Request) bool { return r.TypeURL == typeURL && r.NACK }
}

// SetSnapshot publishes resources for node at version.
func (cp *ControlPlane) SetSnapshot(node, version string, res map[resourcev3.Type][]types.Resource) error {
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		return err
	}
	return cp.Cache.SetSnapshot(context.Background(), node, snap)
}

// Resources is a builder for a snapshot's resources.
type Resources map[resourcev3.Type][]types.Resource

// Add appends resources of typeURL.
func (r Resources) Add(typeURL string, rs ...types.Resource) Resources {
	r[typeURL] = append(r[typeURL], rs...)
	return r
}

// EDSCluster is an EDS cluster fed over ADS.
func EDSCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		},
		ConnectTimeout: durationpb.New(time.Second),
		LbPolicy:       clusterv3.Cluster_ROUND_ROBIN,
	}
}

// StaticCluster is a STATIC cluster with the given host:port endpoints.
func StaticCluster(name string, addrs ...string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment:       Assignment(name, addrs...),
	}
}

// Assignment is a ClusterLoadAssignment with the given host:port endpoints.
func Assignment(name string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	var eps []*endpointv3.LbEndpoint
	for _, a := range addrs {
		eps = append(eps, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: Address(a)}}})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}}
}

// Address is an Envoy socket address for host:port.
func Address(hostport string) *corev3.Address {
	host, port, _ := net.SplitHostPort(hostport)
	p, _ := strconv.Atoi(port)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
	}}}
}

// HTTPListener is a listener on addr whose HTTP connection manager takes its routes from RDS
// route configuration routeName.
func HTTPListener(name, addr, routeName string) *listenerv3.Listener {
	router, _ := anypb.New(&routerv3.Router{})
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routeName,
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	}
	tc, _ := anypb.New(hcm)
	return &listenerv3.Listener{
		Name:    name,
		Address: Address(addr),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tc},
		}}}},
	}
}

// ProxyListener is a listener on addr whose one filter is MOSN's proxy filter, carried in a
// TypedStruct (the way a control plane gives a listener an RPC proxy): proxy is its config
// (downstream_protocol, extend_config, ...) and routeName its RDS route configuration.
func ProxyListener(name, addr, routeName string, proxy map[string]any) *listenerv3.Listener {
	cfg := map[string]any{"router_config_name": routeName}
	for k, v := range proxy {
		cfg[k] = v
	}
	val, err := structpb.NewStruct(cfg)
	if err != nil {
		panic(fmt.Sprintf("xdstest: proxy config: %v", err))
	}
	tc, _ := anypb.New(&xdstypev3.TypedStruct{TypeUrl: "mosn.io/proxy", Value: val})
	return &listenerv3.Listener{
		Name:    name,
		Address: Address(addr),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tc},
		}}}},
	}
}

// DubboListener is a listener on addr whose one filter is Envoy's dubbo proxy d.
func DubboListener(name, addr string, d *dubbov3.DubboProxy) *listenerv3.Listener {
	tc, _ := anypb.New(d)
	return &listenerv3.Listener{
		Name:    name,
		Address: Address(addr),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.dubbo_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tc},
		}}}},
	}
}

// RouteByHeader is a route configuration whose "*" virtual host sends a request whose
// header (an RPC frame's "service", say) equals a key of clusters to that cluster.
func RouteByHeader(name, header string, clusters map[string]string) *routev3.RouteConfiguration {
	vh := &routev3.VirtualHost{Name: "all", Domains: []string{"*"}}
	for _, value := range sortedKeys(clusters) {
		vh.Routes = append(vh.Routes, &routev3.Route{
			Match: &routev3.RouteMatch{
				PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
				Headers: []*routev3.HeaderMatcher{{Name: header,
					HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
						MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}}}}},
			},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: clusters[value]}}},
		})
	}
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{vh}}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// RouteToCluster is a route configuration sending every request for any domain to cluster.
func RouteToCluster(name, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "all",
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
			}},
		}},
	}
}

// InvalidCluster is a cluster mosnlite rejects (a load_balancing_policy it cannot honour).
func InvalidCluster(name string) *clusterv3.Cluster {
	c := EDSCluster(name)
	c.LbPolicy = clusterv3.Cluster_LOAD_BALANCING_POLICY_CONFIG
	c.PerConnectionBufferLimitBytes = wrapperspb.UInt32(1 << 20)
	return c
}

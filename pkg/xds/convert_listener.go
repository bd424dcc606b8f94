package xds

//lint:file-ignore SA1019 control planes still send Envoy's deprecated fields; they are read deliberately.

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	dubbov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dubbo_proxy/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// Type URLs of the Envoy extensions the listener conversion understands.
const (
	hcmTypeURL         = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	tcpProxyTypeURL    = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
	httpRouterTypeURL  = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
	originalDstTypeURL = "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
	typedStructURL     = "type.googleapis.com/xds.type.v3.TypedStruct"
	udpaTypedStructURL = "type.googleapis.com/udpa.type.v1.TypedStruct"
)

// ProxyTypedStructType is the type a TypedStruct names (the last segment of its type_url,
// e.g. "mosn.io/proxy") to carry MOSN's own "proxy" network filter config: the way a
// control plane gives a listener the bolt, dubbo or other RPC proxy, which Envoy's
// filters cannot express.
const ProxyTypedStructType = "proxy"

// Listener filters that only feed filter_chain_match; with a single filter chain they change
// nothing and are skipped.
var inspectorTypeURLs = []string{
	"type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
	"type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
}

// ConvertedListener is an LDS listener in mosnlite's form, with the router configs it carries
// inline and the RDS route configuration names it references.
type ConvertedListener struct {
	Listener config.Listener
	Routers  []config.RouterCfg // from an inline route_config
	RDSNames []string
	// Ignored lists fields that were skipped because they change nothing mosnlite does
	// (for a debug log).
	Ignored []string
}

// Linux's numbers for a listener's socket_options (the control plane writes them for
// Linux proxies): IPPROTO_TCP and TCP_USER_TIMEOUT.
const (
	solTCP         = 6
	tcpUserTimeout = 18
)

// InlineRouterName is the router name given to a listener's inline route_config.
func InlineRouterName(listener string) string { return "xds-inline/" + listener }

// ConvertListener turns an LDS resource into a listener config. The listener must have one
// filter chain (or only a default_filter_chain) ending in envoy.filters.network.
// http_connection_manager (→ the proxy filter, downstream_protocol by codec_type: AUTO →
// "Http1,Http2", HTTP1 → Http1, HTTP2 → Http2; upstream Http1, Envoy's default) or
// envoy.filters.network.tcp_proxy (→ tcp_proxy), envoy.filters.network.dubbo_proxy with
// inline routes (→ the proxy filter, dubbo both ways; convertDubboProxy), or a TypedStruct (xds.type.v3 or
// udpa.type.v1) of type "…/proxy" whose value is MOSN's proxy filter config (any
// downstream_protocol, bolt and dubbo included); its router_config_name is an RDS route
// configuration.
func ConvertListener(l *listenerv3.Listener) (ConvertedListener, error) {
	var out ConvertedListener
	lc := &out.Listener
	lc.Name = l.GetName()
	if lc.Name == "" {
		return out, errors.New("listener without a name")
	}
	fail := func(format string, a ...any) (ConvertedListener, error) {
		return out, fmt.Errorf("listener %q: %s", l.GetName(), fmt.Sprintf(format, a...))
	}
	addr, network, err := socketAddress(l.GetAddress())
	if err != nil {
		return fail("address: %v", err)
	}
	lc.Address, lc.Network = addr, network
	if network == "udp" {
		return fail("udp listeners are not supported over xDS")
	}
	switch {
	case len(l.GetAdditionalAddresses()) > 0:
		return fail("additional_addresses is not supported")
	case l.GetFcdsConfig() != nil || l.GetFilterChainMatcher() != nil:
		return fail("fcds_config / filter_chain_matcher are not supported")
	case l.GetApiListener() != nil:
		return fail("api_listener is not supported")
	case l.GetTransparent().GetValue():
		return fail("transparent is not supported (use the original_dst listener filter)")
	case l.GetListenerSpecifier() != nil:
		return fail("internal listeners are not supported")
	}
	if b := l.GetBindToPort(); b != nil && !b.GetValue() {
		f := false
		lc.BindPort = &f
	}
	if l.GetUseOriginalDst().GetValue() {
		lc.UseOriginalDst = config.OriginalDstRedirect
	}
	lc.ReusePort = l.GetEnableReusePort().GetValue()
	if v := l.GetPerConnectionBufferLimitBytes(); v != nil {
		lc.PerConnBufferLimitBytes = v.GetValue()
	}
	for i, so := range l.GetSocketOptions() {
		// TCP_USER_TIMEOUT, the option a control plane sets to bound how long a peer may
		// leave sent bytes untaken, is mosnlite's send_timeout; others change nothing here.
		if so.GetLevel() == solTCP && so.GetName() == tcpUserTimeout && so.GetValue() != nil {
			if _, ok := so.GetValue().(*corev3.SocketOption_IntValue); ok {
				ms := so.GetIntValue()
				if ms < 0 || ms > int64(config.MaxSendTimeout/time.Millisecond) {
					return fail("socket_options[%d]: TCP_USER_TIMEOUT %d ms out of range", i, ms)
				}
				d := config.Duration(time.Duration(ms) * time.Millisecond)
				lc.SendTimeout = &d
				continue
			}
		}
		out.Ignored = append(out.Ignored, fmt.Sprintf("socket_options[%d] level %d name %d", i, so.GetLevel(), so.GetName()))
	}
	for i, lf := range l.GetListenerFilters() {
		url := lf.GetTypedConfig().GetTypeUrl()
		switch {
		case url == originalDstTypeURL || (url == "" && lf.GetName() == "envoy.filters.listener.original_dst"):
			lc.ListenerFilters = append(lc.ListenerFilters, config.TypedConfig{Type: config.ListenerFilterOriginalDst})
		case containsString(inspectorTypeURLs, url):
			out.Ignored = append(out.Ignored, fmt.Sprintf("listener_filters[%d] %s", i, lf.GetName()))
		default:
			return fail("listener_filters[%d] (%s, %s) is not supported", i, lf.GetName(), url)
		}
	}
	chains := l.GetFilterChains()
	var fc *listenerv3.FilterChain
	switch {
	case len(chains) == 1 && l.GetDefaultFilterChain() == nil:
		fc = chains[0]
		if m := fc.GetFilterChainMatch(); m != nil && !isEmptyMatch(m) {
			return fail("filter_chains[0].filter_chain_match is not supported (one chain serves every connection)")
		}
	case len(chains) == 0 && l.GetDefaultFilterChain() != nil:
		fc = l.GetDefaultFilterChain()
	case len(chains) == 0:
		return fail("no filter chain")
	default:
		return fail("%d filter chains (plus default %v): only one chain is supported", len(chains), l.GetDefaultFilterChain() != nil)
	}
	if fc.GetTransportSocket() != nil {
		return fail("filter chain transport_socket (TLS) is not supported over xDS")
	}
	if fc.GetUseProxyProto().GetValue() {
		return fail("use_proxy_proto is not supported")
	}
	filters := fc.GetFilters()
	if len(filters) != 1 {
		names := make([]string, 0, len(filters))
		for _, f := range filters {
			names = append(names, f.GetName())
		}
		return fail("filter chain has %d filters [%s]: exactly one (http_connection_manager, tcp_proxy, dubbo_proxy or MOSN's proxy) is supported",
			len(filters), strings.Join(names, ", "))
	}
	f := filters[0]
	tc := f.GetTypedConfig()
	if tc == nil {
		return fail("filter %q: no typed_config (config_discovery is not supported)", f.GetName())
	}
	switch tc.GetTypeUrl() {
	case hcmTypeURL:
		var hcm hcmv3.HttpConnectionManager
		if err := tc.UnmarshalTo(&hcm); err != nil {
			return fail("http_connection_manager: %v", err)
		}
		pc, routers, rds, ignored, err := convertHCM(lc.Name, &hcm)
		if err != nil {
			return fail("http_connection_manager: %v", err)
		}
		raw, _ := json.Marshal(pc)
		lc.FilterChains = []config.FilterChain{{Filters: []config.TypedConfig{{Type: config.FilterProxy, Config: raw}}}}
		out.Routers, out.RDSNames, out.Ignored = routers, rds, append(out.Ignored, ignored...)
	case tcpProxyTypeURL:
		var tp tcpv3.TcpProxy
		if err := tc.UnmarshalTo(&tp); err != nil {
			return fail("tcp_proxy: %v", err)
		}
		tcfg, err := convertTCPProxy(&tp)
		if err != nil {
			return fail("tcp_proxy: %v", err)
		}
		raw, _ := json.Marshal(tcfg)
		lc.FilterChains = []config.FilterChain{{Filters: []config.TypedConfig{{Type: config.FilterTCPProxy, Config: raw}}}}
	case dubboProxyTypeURL:
		var d dubbov3.DubboProxy
		if err := tc.UnmarshalTo(&d); err != nil {
			return fail("dubbo_proxy: %v", err)
		}
		pc, routers, err := convertDubboProxy(lc.Name, &d)
		if err != nil {
			return fail("dubbo_proxy: %v", err)
		}
		raw, _ := json.Marshal(pc)
		lc.FilterChains = []config.FilterChain{{Filters: []config.TypedConfig{{Type: config.FilterProxy, Config: raw}}}}
		out.Routers = routers
	case typedStructURL, udpaTypedStructURL:
		raw, router, err := proxyTypedStruct(tc.GetTypeUrl(), tc.GetValue())
		if err != nil {
			return fail("filter %q: %v", f.GetName(), err)
		}
		lc.FilterChains = []config.FilterChain{{Filters: []config.TypedConfig{{Type: config.FilterProxy, Config: raw}}}}
		out.RDSNames = []string{router}
	default:
		return fail("filter %q (%s) is not supported (http_connection_manager, tcp_proxy, dubbo_proxy, or a TypedStruct of MOSN's proxy)", f.GetName(), tc.GetTypeUrl())
	}
	return out, nil
}

// proxyTypedStruct reads MOSN's proxy filter config, as JSON, from a TypedStruct (url
// says which of the two) of type ProxyTypedStructType. Its fields are checked where every
// proxy filter's are (config validation, when the listener is set); here only the router
// name, which must name an RDS route configuration.
func proxyTypedStruct(url string, b []byte) (raw config.RawMessage, router string, err error) {
	var typ string
	var val *structpb.Struct
	if url == typedStructURL {
		var ts xdstypev3.TypedStruct
		if err := proto.Unmarshal(b, &ts); err != nil {
			return nil, "", fmt.Errorf("TypedStruct: %v", err)
		}
		typ, val = ts.GetTypeUrl(), ts.GetValue()
	} else {
		var ts udpatypev1.TypedStruct
		if err := proto.Unmarshal(b, &ts); err != nil {
			return nil, "", fmt.Errorf("TypedStruct: %v", err)
		}
		typ, val = ts.GetTypeUrl(), ts.GetValue()
	}
	if typ[strings.LastIndexByte(typ, '/')+1:] != ProxyTypedStructType {
		return nil, "", fmt.Errorf("TypedStruct type_url %q is not supported (want …/%s, MOSN's proxy filter)", typ, ProxyTypedStructType)
	}
	if val == nil {
		return nil, "", errors.New("TypedStruct: no value (MOSN's proxy filter config)")
	}
	if raw, err = val.MarshalJSON(); err != nil {
		return nil, "", fmt.Errorf("TypedStruct value: %v", err)
	}
	router = val.GetFields()["router_config_name"].GetStringValue()
	if router == "" {
		return nil, "", errors.New("TypedStruct value: router_config_name missing (the RDS route configuration of the listener)")
	}
	return raw, router, nil
}

func isEmptyMatch(m *listenerv3.FilterChainMatch) bool {
	return m.GetDestinationPort() == nil && len(m.GetPrefixRanges()) == 0 && len(m.GetServerNames()) == 0 &&
		m.GetTransportProtocol() == "" && len(m.GetApplicationProtocols()) == 0 && len(m.GetSourcePrefixRanges()) == 0 &&
		len(m.GetSourcePorts()) == 0 && len(m.GetDirectSourcePrefixRanges()) == 0 && m.GetAddressSuffix() == "" &&
		m.GetSuffixLen() == nil && m.GetSourceType() == listenerv3.FilterChainMatch_ANY
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// HTTP filters that only record stats; skipped.
var statsHTTPFilters = []string{
	"type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
}

func convertHCM(listener string, h *hcmv3.HttpConnectionManager) (pc config.ProxyConfig, routers []config.RouterCfg, rds []string, ignored []string, err error) {
	switch h.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO:
		pc.DownstreamProtocol = config.ProtocolHTTP1 + "," + config.ProtocolHTTP2
	case hcmv3.HttpConnectionManager_HTTP1:
		pc.DownstreamProtocol = config.ProtocolHTTP1
	case hcmv3.HttpConnectionManager_HTTP2:
		pc.DownstreamProtocol = config.ProtocolHTTP2
	default:
		return pc, nil, nil, nil, fmt.Errorf("codec_type %v is not supported", h.GetCodecType())
	}
	pc.UpstreamProtocol = config.ProtocolHTTP1
	switch rs := h.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_Rds:
		if err := checkADSSource(rs.Rds.GetConfigSource()); err != nil {
			return pc, nil, nil, nil, fmt.Errorf("rds.config_source: %v", err)
		}
		name := rs.Rds.GetRouteConfigName()
		if name == "" {
			return pc, nil, nil, nil, errors.New("rds.route_config_name empty")
		}
		pc.RouterConfigName, rds = name, []string{name}
	case *hcmv3.HttpConnectionManager_RouteConfig:
		name := InlineRouterName(listener)
		rc, err := ConvertRouteConfiguration(name, rs.RouteConfig)
		if err != nil {
			return pc, nil, nil, nil, fmt.Errorf("route_config: %v", err)
		}
		pc.RouterConfigName, routers = name, []config.RouterCfg{rc}
	default:
		return pc, nil, nil, nil, fmt.Errorf("route specifier %T is not supported (rds or route_config)", rs)
	}
	filters := h.GetHttpFilters()
	for i, f := range filters {
		url := f.GetTypedConfig().GetTypeUrl()
		switch {
		case url == httpRouterTypeURL || (url == "" && f.GetName() == "envoy.filters.http.router"):
			if i != len(filters)-1 {
				return pc, nil, nil, nil, fmt.Errorf("http_filters[%d]: the router filter must be last", i)
			}
			if tc := f.GetTypedConfig(); tc != nil {
				var r routerv3.Router
				if err := tc.UnmarshalTo(&r); err != nil {
					return pc, nil, nil, nil, fmt.Errorf("http_filters[%d] router: %v", i, err)
				}
			}
		case containsString(statsHTTPFilters, url) || f.GetIsOptional():
			ignored = append(ignored, fmt.Sprintf("http_filters[%d] %s", i, f.GetName()))
		default:
			return pc, nil, nil, nil, fmt.Errorf("http_filters[%d] (%s, %s) is not supported", i, f.GetName(), url)
		}
	}
	if len(filters) == 0 {
		return pc, nil, nil, nil, errors.New("http_filters: no router filter")
	}
	return pc, routers, rds, ignored, nil
}

func convertTCPProxy(t *tcpv3.TcpProxy) (config.TCPProxyConfig, error) {
	out := config.TCPProxyConfig{StatPrefix: t.GetStatPrefix()}
	switch c := t.GetClusterSpecifier().(type) {
	case *tcpv3.TcpProxy_Cluster:
		out.Cluster = c.Cluster
	default:
		return out, fmt.Errorf("cluster specifier %T is not supported (cluster only)", c)
	}
	switch {
	case t.GetTunnelingConfig() != nil:
		return out, errors.New("tunneling_config is not supported")
	case t.GetOnDemand() != nil:
		return out, errors.New("on_demand is not supported")
	case t.GetMetadataMatch() != nil:
		return out, errors.New("metadata_match is not supported")
	case len(t.GetHashPolicy()) > 0:
		return out, errors.New("hash_policy is not supported")
	}
	out.IdleTimeout = duration(t.GetIdleTimeout())
	if v := t.GetMaxConnectAttempts(); v != nil {
		out.MaxConnectAttempts = v.GetValue()
	}
	return out, nil
}

package xds

//lint:file-ignore SA1019 control planes still send DubboProxy.route_config (deprecated); it is read deliberately.

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	dubbov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dubbo_proxy/v3"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// Type URLs of Envoy's dubbo proxy and of its router filter (the only dubbo filter read).
const (
	dubboProxyTypeURL  = "type.googleapis.com/envoy.extensions.filters.network.dubbo_proxy.v3.DubboProxy"
	dubboRouterTypeURL = "type.googleapis.com/envoy.extensions.filters.network.dubbo_proxy.router.v3.Router"
	dubboRouterName    = "envoy.filters.dubbo.router"
)

// convertDubboProxy turns Envoy's dubbo proxy (as Aeraki and other control planes write it
// for Dubbo services) into the proxy filter with sub-protocol dubbo both ways, and its
// inline route configurations into one router with a "*" virtual host: each route matches
// the frame's "service" (the configuration's interface, "*" wildcards allowed), "group" and
// "version" when the configuration names them, "method" by its method matcher, and its
// header matchers. Routes keep their order, configuration by configuration.
func convertDubboProxy(listener string, d *dubbov3.DubboProxy) (pc config.ProxyConfig, routers []config.RouterCfg, err error) {
	switch {
	case d.GetProtocolType() != dubbov3.ProtocolType_Dubbo:
		return pc, nil, fmt.Errorf("protocol_type %v is not supported (Dubbo)", d.GetProtocolType())
	case d.GetSerializationType() != dubbov3.SerializationType_Hessian2:
		return pc, nil, fmt.Errorf("serialization_type %v is not supported (Hessian2)", d.GetSerializationType())
	}
	for i, f := range d.GetDubboFilters() {
		url := f.GetConfig().GetTypeUrl()
		if (url != dubboRouterTypeURL && !(url == "" && f.GetName() == dubboRouterName)) || i != len(d.GetDubboFilters())-1 {
			return pc, nil, fmt.Errorf("dubbo_filters[%d] (%s, %s): only the router filter, last, is supported", i, f.GetName(), url)
		}
	}
	rcs := d.GetRouteConfig()
	switch rs := d.GetRouteSpecifier().(type) {
	case *dubbov3.DubboProxy_MultipleRouteConfig:
		if len(rcs) > 0 {
			return pc, nil, errors.New("both route_config and multiple_route_config")
		}
		rcs = rs.MultipleRouteConfig.GetRouteConfig()
	case *dubbov3.DubboProxy_Drds:
		return pc, nil, errors.New("drds is not supported (use multiple_route_config)")
	case nil:
	default:
		return pc, nil, fmt.Errorf("route specifier %T is not supported", rs)
	}
	if len(rcs) == 0 {
		return pc, nil, errors.New("no route configuration (multiple_route_config)")
	}
	name := InlineRouterName(listener)
	vh := config.VirtualHost{Name: "dubbo", Domains: []string{"*"}}
	for i, rc := range rcs {
		service, err := dubboInterface(rc.GetInterface())
		if err != nil {
			return pc, nil, fmt.Errorf("route_config[%d]: interface: %v", i, err)
		}
		for j, r := range rc.GetRoutes() {
			route, err := convertDubboRoute(r, service, rc.GetGroup(), rc.GetVersion())
			if err != nil {
				return pc, nil, fmt.Errorf("route_config[%d].routes[%d]: %v", i, j, err)
			}
			vh.Routers = append(vh.Routers, route)
		}
	}
	pc.DownstreamProtocol, pc.UpstreamProtocol = config.ProtocolX, config.ProtocolX
	pc.ExtendConfig = map[string]any{"sub_protocol": "dubbo"}
	pc.RouterConfigName = name
	return pc, []config.RouterCfg{{RouterConfigName: name, VirtualHosts: []config.VirtualHost{vh}}}, nil
}

// dubboInterface is the "service" header matcher for a route configuration's interface:
// exact, or with Envoy's wildcards ("*" alone: any service, no matcher; "*.x" or "x.*":
// a non-empty rest).
func dubboInterface(iface string) (*config.HeaderMatcher, error) {
	yes, no := true, false
	switch {
	case iface == "":
		return nil, errors.New("missing")
	case iface == "*":
		return nil, nil
	case strings.HasPrefix(iface, "*"):
		return &config.HeaderMatcher{Name: "service", Value: "(?s).+" + regexp.QuoteMeta(iface[1:]), Regex: &yes}, nil
	case strings.HasSuffix(iface, "*"):
		return &config.HeaderMatcher{Name: "service", Value: "(?s)" + regexp.QuoteMeta(iface[:len(iface)-1]) + ".+", Regex: &yes}, nil
	}
	return &config.HeaderMatcher{Name: "service", Value: iface, Regex: &no}, nil
}

func convertDubboRoute(r *dubbov3.Route, service *config.HeaderMatcher, group, version string) (config.Route, error) {
	no := false
	var out config.Route
	if service != nil {
		out.Match.Headers = append(out.Match.Headers, *service)
	}
	for _, kv := range [][2]string{{"group", group}, {"version", version}} {
		if kv[1] != "" {
			out.Match.Headers = append(out.Match.Headers, config.HeaderMatcher{Name: kv[0], Value: kv[1], Regex: &no})
		}
	}
	m := r.GetMatch()
	if m == nil {
		return out, errors.New("no match")
	}
	if mm := m.GetMethod(); mm != nil {
		if len(mm.GetParamsMatch()) > 0 {
			return out, errors.New("match.method.params_match is not supported")
		}
		if mm.GetName() != nil {
			hm, err := convertHeaderMatcher(&routev3.HeaderMatcher{Name: "method",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: mm.GetName()}})
			if err != nil {
				return out, fmt.Errorf("match.method.name: %v", err)
			}
			out.Match.Headers = append(out.Match.Headers, hm)
		}
	}
	for i, h := range m.GetHeaders() {
		hm, err := convertHeaderMatcher(h)
		if err != nil {
			return out, fmt.Errorf("match.headers[%d] (%s): %v", i, h.GetName(), err)
		}
		out.Match.Headers = append(out.Match.Headers, hm)
	}
	a := r.GetRoute()
	if a.GetMetadataMatch() != nil {
		return out, errors.New("route.metadata_match is not supported")
	}
	ra := &routev3.RouteAction{}
	switch c := a.GetClusterSpecifier().(type) {
	case *dubbov3.RouteAction_Cluster:
		ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: c.Cluster}
	case *dubbov3.RouteAction_WeightedClusters:
		ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: c.WeightedClusters}
	}
	action, _, err := convertRouteAction(ra, nil)
	if err != nil {
		return out, fmt.Errorf("route: %v", err)
	}
	out.Route = action
	return out, nil
}

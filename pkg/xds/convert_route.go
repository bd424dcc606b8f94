package xds

//lint:file-ignore SA1019 control planes still send Envoy's deprecated fields; they are read deliberately.

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// ConvertRouteConfiguration turns an RDS resource (or an HTTP connection manager's inline
// route_config) into a router config named name. Fields that would change how requests are
// routed and that mosnlite cannot honour are errors (the update is NACKed); fields that only
// affect stats or tracing are ignored.
func ConvertRouteConfiguration(name string, rc *routev3.RouteConfiguration) (config.RouterCfg, error) {
	out := config.RouterCfg{RouterConfigName: name}
	if name == "" {
		return out, errors.New("route configuration without a name")
	}
	if rc.GetVhds() != nil {
		return out, fmt.Errorf("route configuration %q: vhds is not supported", name)
	}
	var err error
	if out.RequestHeadersToAdd, err = headersToAdd(rc.GetRequestHeadersToAdd()); err != nil {
		return out, fmt.Errorf("route configuration %q: request_headers_to_add: %w", name, err)
	}
	if out.ResponseHeadersToAdd, err = headersToAdd(rc.GetResponseHeadersToAdd()); err != nil {
		return out, fmt.Errorf("route configuration %q: response_headers_to_add: %w", name, err)
	}
	out.RequestHeadersToRemove = rc.GetRequestHeadersToRemove()
	out.ResponseHeadersToRemove = rc.GetResponseHeadersToRemove()
	for i, vh := range rc.GetVirtualHosts() {
		v, err := convertVirtualHost(vh)
		if err != nil {
			return out, fmt.Errorf("route configuration %q: virtual_hosts[%d] (%s): %w", name, i, vh.GetName(), err)
		}
		out.VirtualHosts = append(out.VirtualHosts, v)
	}
	return out, nil
}

func convertVirtualHost(vh *routev3.VirtualHost) (config.VirtualHost, error) {
	out := config.VirtualHost{Name: vh.GetName(), Domains: vh.GetDomains()}
	if vh.GetRequireTls() != routev3.VirtualHost_NONE {
		return out, fmt.Errorf("require_tls %v is not supported", vh.GetRequireTls())
	}
	if vh.GetMatcher() != nil {
		return out, errors.New("matcher (the generic matching tree) is not supported")
	}
	if vh.GetHedgePolicy() != nil || vh.GetRetryPolicyTypedConfig() != nil {
		return out, errors.New("hedge_policy / retry_policy_typed_config are not supported")
	}
	var err error
	if out.RequestHeadersToAdd, err = headersToAdd(vh.GetRequestHeadersToAdd()); err != nil {
		return out, fmt.Errorf("request_headers_to_add: %w", err)
	}
	if out.ResponseHeadersToAdd, err = headersToAdd(vh.GetResponseHeadersToAdd()); err != nil {
		return out, fmt.Errorf("response_headers_to_add: %w", err)
	}
	out.RequestHeadersToRemove = vh.GetRequestHeadersToRemove()
	out.ResponseHeadersToRemove = vh.GetResponseHeadersToRemove()
	for i, r := range vh.GetRoutes() {
		rt, err := convertRoute(r, vh.GetRetryPolicy())
		if err != nil {
			return out, fmt.Errorf("routes[%d]%s: %w", i, nameSuffix(r.GetName()), err)
		}
		out.Routers = append(out.Routers, rt)
	}
	return out, nil
}

func nameSuffix(n string) string {
	if n == "" {
		return ""
	}
	return " (" + n + ")"
}

// convertRoute converts one route; vhRetry is the virtual host's retry policy, which Envoy
// applies to routes that have none of their own.
func convertRoute(r *routev3.Route, vhRetry *routev3.RetryPolicy) (config.Route, error) {
	var out config.Route
	m, err := convertMatch(r.GetMatch())
	if err != nil {
		return out, fmt.Errorf("match: %w", err)
	}
	out.Match = m
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		ra, mirror, err := convertRouteAction(a.Route, vhRetry)
		if err != nil {
			return out, fmt.Errorf("route: %w", err)
		}
		out.Route, out.RequestMirrorPolicies = ra, mirror
	case *routev3.Route_DirectResponse:
		dr := &config.DirectResponse{StatusCode: int(a.DirectResponse.GetStatus())}
		if b := a.DirectResponse.GetBody(); b != nil {
			body, err := inlineData(b)
			if err != nil {
				return out, fmt.Errorf("direct_response.body: %w", err)
			}
			dr.Body = body
		}
		out.DirectResponse = dr
	case *routev3.Route_Redirect:
		rd, err := convertRedirect(a.Redirect)
		if err != nil {
			return out, fmt.Errorf("redirect: %w", err)
		}
		out.Redirect = rd
	case nil:
		return out, errors.New("no action (route, redirect or direct_response)")
	default:
		return out, fmt.Errorf("action %T is not supported", a)
	}
	if out.RequestHeadersToAdd, err = headersToAdd(r.GetRequestHeadersToAdd()); err != nil {
		return out, fmt.Errorf("request_headers_to_add: %w", err)
	}
	if out.ResponseHeadersToAdd, err = headersToAdd(r.GetResponseHeadersToAdd()); err != nil {
		return out, fmt.Errorf("response_headers_to_add: %w", err)
	}
	out.RequestHeadersToRemove = r.GetRequestHeadersToRemove()
	out.ResponseHeadersToRemove = r.GetResponseHeadersToRemove()
	return out, nil
}

func inlineData(ds *corev3.DataSource) (string, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		return s.InlineString, nil
	case *corev3.DataSource_InlineBytes:
		return string(s.InlineBytes), nil
	case nil:
		return "", nil
	default:
		return "", fmt.Errorf("%T is not supported (inline_string or inline_bytes only)", s)
	}
}

func convertMatch(m *routev3.RouteMatch) (config.RouteMatch, error) {
	var out config.RouteMatch
	if m == nil {
		return out, errors.New("missing")
	}
	caseInsensitive := m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue()
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		if caseInsensitive {
			out.Regex = "(?i)" + regexp.QuoteMeta(p.Prefix) + ".*"
		} else {
			out.Prefix = p.Prefix
			if out.Prefix == "" {
				out.Prefix = "/" // Envoy's "" prefix matches every path
			}
		}
	case *routev3.RouteMatch_Path:
		if caseInsensitive {
			out.Regex = "(?i)" + regexp.QuoteMeta(p.Path)
		} else {
			out.Path = p.Path
		}
	case *routev3.RouteMatch_SafeRegex:
		re := p.SafeRegex.GetRegex()
		if caseInsensitive {
			re = "(?i)" + re
		}
		if _, err := regexp.Compile(re); err != nil {
			return out, fmt.Errorf("safe_regex: %w", err)
		}
		out.Regex = re
	case nil:
		return out, errors.New("no path specifier (prefix, path or safe_regex)")
	default:
		return out, fmt.Errorf("path specifier %T is not supported (prefix, path, safe_regex)", p)
	}
	switch {
	case m.GetRuntimeFraction() != nil:
		return out, errors.New("runtime_fraction is not supported")
	case len(m.GetQueryParameters()) > 0:
		return out, errors.New("query_parameters is not supported")
	case len(m.GetCookies()) > 0:
		return out, errors.New("cookies is not supported")
	case m.GetGrpc() != nil:
		return out, errors.New("grpc is not supported")
	case m.GetTlsContext() != nil:
		return out, errors.New("tls_context is not supported")
	case len(m.GetDynamicMetadata()) > 0:
		return out, errors.New("dynamic_metadata is not supported")
	case len(m.GetFilterState()) > 0:
		return out, errors.New("filter_state is not supported")
	}
	for i, h := range m.GetHeaders() {
		hm, err := convertHeaderMatcher(h)
		if err != nil {
			return out, fmt.Errorf("headers[%d] (%s): %w", i, h.GetName(), err)
		}
		out.Headers = append(out.Headers, hm)
	}
	return out, nil
}

func convertHeaderMatcher(h *routev3.HeaderMatcher) (config.HeaderMatcher, error) {
	yes, no := true, false
	out := config.HeaderMatcher{Name: h.GetName()}
	if h.GetName() == "" {
		return out, errors.New("empty name")
	}
	if h.GetInvertMatch() {
		return out, errors.New("invert_match is not supported")
	}
	if h.GetTreatMissingHeaderAsEmpty() {
		return out, errors.New("treat_missing_header_as_empty is not supported")
	}
	regex := func(re string) (config.HeaderMatcher, error) {
		if _, err := regexp.Compile(re); err != nil {
			return out, fmt.Errorf("invalid regex: %w", err)
		}
		out.Value, out.Regex = re, &yes
		return out, nil
	}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_ExactMatch:
		out.Value, out.Regex = s.ExactMatch, &no
		return out, nil
	case *routev3.HeaderMatcher_SafeRegexMatch:
		return regex(s.SafeRegexMatch.GetRegex())
	case *routev3.HeaderMatcher_PresentMatch:
		if !s.PresentMatch {
			return out, errors.New("present_match false (absence) is not supported")
		}
		return regex("(?s).*")
	case *routev3.HeaderMatcher_PrefixMatch:
		return regex("(?s)" + regexp.QuoteMeta(s.PrefixMatch) + ".*")
	case *routev3.HeaderMatcher_SuffixMatch:
		return regex("(?s).*" + regexp.QuoteMeta(s.SuffixMatch))
	case *routev3.HeaderMatcher_ContainsMatch:
		return regex("(?s).*" + regexp.QuoteMeta(s.ContainsMatch) + ".*")
	case *routev3.HeaderMatcher_StringMatch:
		re, exact, err := stringMatcher(s.StringMatch)
		if err != nil {
			return out, err
		}
		if exact {
			out.Value, out.Regex = re, &no
			return out, nil
		}
		return regex(re)
	case nil:
		// No specifier: Envoy matches when the header is present.
		return regex("(?s).*")
	default:
		return out, fmt.Errorf("%T is not supported", s)
	}
}

// stringMatcher turns an Envoy StringMatcher into an exact value (exact true) or a regex.
func stringMatcher(m *matcherv3.StringMatcher) (string, bool, error) {
	ci := ""
	if m.GetIgnoreCase() {
		ci = "(?i)"
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		if ci == "" {
			return p.Exact, true, nil
		}
		return ci + regexp.QuoteMeta(p.Exact), false, nil
	case *matcherv3.StringMatcher_Prefix:
		return "(?s)" + ci + regexp.QuoteMeta(p.Prefix) + ".*", false, nil
	case *matcherv3.StringMatcher_Suffix:
		return "(?s)" + ci + ".*" + regexp.QuoteMeta(p.Suffix), false, nil
	case *matcherv3.StringMatcher_Contains:
		return "(?s)" + ci + ".*" + regexp.QuoteMeta(p.Contains) + ".*", false, nil
	case *matcherv3.StringMatcher_SafeRegex:
		return ci + p.SafeRegex.GetRegex(), false, nil
	default:
		return "", false, fmt.Errorf("string_match %T is not supported", p)
	}
}

func convertRouteAction(a *routev3.RouteAction, vhRetry *routev3.RetryPolicy) (*config.RouteAction, *config.MirrorPolicy, error) {
	out := &config.RouteAction{}
	switch c := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		out.ClusterName = c.Cluster
	case *routev3.RouteAction_ClusterHeader:
		out.ClusterHeader = c.ClusterHeader
	case *routev3.RouteAction_WeightedClusters:
		wc := c.WeightedClusters
		if wc.GetHeaderName() != "" || wc.GetUseHashPolicy() != nil {
			return nil, nil, errors.New("weighted_clusters: header_name / use_hash_policy are not supported")
		}
		for i, cw := range wc.GetClusters() {
			if cw.GetClusterHeader() != "" || len(cw.GetRequestHeadersToAdd()) > 0 || len(cw.GetResponseHeadersToAdd()) > 0 ||
				len(cw.GetRequestHeadersToRemove()) > 0 || len(cw.GetResponseHeadersToRemove()) > 0 || cw.GetHostRewriteLiteral() != "" {
				return nil, nil, fmt.Errorf("weighted_clusters.clusters[%d]: only name and weight are supported", i)
			}
			var w config.WeightedCluster
			w.Cluster.Name = cw.GetName()
			w.Cluster.Weight = cw.GetWeight().GetValue()
			out.WeightedClusters = append(out.WeightedClusters, w)
		}
	case nil:
		return nil, nil, errors.New("no cluster specifier (cluster, cluster_header or weighted_clusters)")
	default:
		return nil, nil, fmt.Errorf("cluster specifier %T is not supported", c)
	}
	switch h := a.GetHostRewriteSpecifier().(type) {
	case *routev3.RouteAction_HostRewriteLiteral:
		out.HostRewrite = h.HostRewriteLiteral
	case *routev3.RouteAction_AutoHostRewrite:
		out.AutoHostRewrite = h.AutoHostRewrite.GetValue()
	case nil:
	default:
		return nil, nil, fmt.Errorf("host rewrite %T is not supported", h)
	}
	out.PrefixRewrite = a.GetPrefixRewrite()
	if rr := a.GetRegexRewrite(); rr != nil {
		out.RegexRewrite = &config.RegexRewrite{Substitution: rr.GetSubstitution()}
		out.RegexRewrite.Pattern.Regex = rr.GetPattern().GetRegex()
	}
	switch {
	case a.GetPathRewritePolicy() != nil:
		return nil, nil, errors.New("path_rewrite_policy is not supported")
	case a.GetMetadataMatch() != nil:
		return nil, nil, errors.New("metadata_match is not supported")
	case a.GetHedgePolicy() != nil:
		return nil, nil, errors.New("hedge_policy is not supported")
	case a.GetRetryPolicyTypedConfig() != nil:
		return nil, nil, errors.New("retry_policy_typed_config is not supported")
	}
	if t := a.GetTimeout(); t != nil {
		d := config.Duration(t.AsDuration())
		out.Timeout = &d
	}
	// gRPC deadlines: max_stream_duration's grpc_timeout_header_max and _offset (the
	// successors of the deprecated max_grpc_timeout and grpc_timeout_offset, same meaning).
	if msd := a.GetMaxStreamDuration(); msd != nil {
		if t := msd.GetGrpcTimeoutHeaderMax(); t != nil {
			d := config.Duration(t.AsDuration())
			out.MaxGrpcTimeout = &d
		}
		if t := msd.GetGrpcTimeoutHeaderOffset(); t != nil {
			d := config.Duration(t.AsDuration())
			out.GrpcTimeoutOffset = &d
		}
	}
	rp := a.GetRetryPolicy()
	if rp == nil {
		rp = vhRetry
	}
	if rp != nil {
		out.RetryPolicy = &config.RetryPolicy{
			RetryOn:              rp.GetRetryOn() != "",
			RetriableStatusCodes: rp.GetRetriableStatusCodes(),
			NumRetries:           1, // Envoy's default
		}
		if n := rp.GetNumRetries(); n != nil {
			out.RetryPolicy.NumRetries = n.GetValue()
		}
		if t := rp.GetPerTryTimeout(); t != nil {
			d := config.Duration(t.AsDuration())
			out.RetryPolicy.RetryTimeout = &d
		}
	}
	for i, hp := range a.GetHashPolicy() {
		var p config.HashPolicy
		switch s := hp.GetPolicySpecifier().(type) {
		case *routev3.RouteAction_HashPolicy_Header_:
			if s.Header.GetRegexRewrite() != nil {
				return nil, nil, fmt.Errorf("hash_policy[%d].header.regex_rewrite is not supported", i)
			}
			p.Header = &struct {
				Key string `json:"key"`
			}{Key: s.Header.GetHeaderName()}
		case *routev3.RouteAction_HashPolicy_Cookie_:
			if s.Cookie.GetTtl() != nil {
				return nil, nil, fmt.Errorf("hash_policy[%d].cookie.ttl (generated cookies) is not supported", i)
			}
			p.Cookie = &struct {
				Name string `json:"name"`
			}{Name: s.Cookie.GetName()}
		case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
			if !s.ConnectionProperties.GetSourceIp() {
				continue
			}
			p.SourceIP = &struct{}{}
		case *routev3.RouteAction_HashPolicy_QueryParameter_:
			p.HTTPParam = &struct {
				Name string `json:"name"`
			}{Name: s.QueryParameter.GetName()}
		default:
			return nil, nil, fmt.Errorf("hash_policy[%d]: %T is not supported", i, s)
		}
		out.HashPolicy = append(out.HashPolicy, p)
	}
	var mirror *config.MirrorPolicy
	switch mp := a.GetRequestMirrorPolicies(); len(mp) {
	case 0:
	case 1:
		if mp[0].GetClusterHeader() != "" {
			return nil, nil, errors.New("request_mirror_policies[0].cluster_header is not supported")
		}
		mirror = &config.MirrorPolicy{Cluster: mp[0].GetCluster(), Percent: 100}
		if rf := mp[0].GetRuntimeFraction(); rf != nil {
			mirror.Percent = percent(rf.GetDefaultValue())
		}
	default:
		return nil, nil, errors.New("request_mirror_policies: more than one is not supported")
	}
	return out, mirror, nil
}

// percent converts an Envoy fractional percent to a whole percentage (rounded down).
func percent(f *typev3.FractionalPercent) uint32 {
	n := uint64(f.GetNumerator())
	switch f.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		n /= 100
	case typev3.FractionalPercent_MILLION:
		n /= 10000
	}
	return uint32(min(n, 100))
}

func convertRedirect(r *routev3.RedirectAction) (*config.RedirectAction, error) {
	out := &config.RedirectAction{HostRedirect: r.GetHostRedirect()}
	switch s := r.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			out.SchemeRedirect = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		out.SchemeRedirect = strings.ToLower(s.SchemeRedirect)
	}
	switch p := r.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		out.PathRedirect = p.PathRedirect
	case nil:
	default:
		return nil, fmt.Errorf("%T is not supported (path_redirect only)", p)
	}
	if r.GetPortRedirect() != 0 {
		return nil, errors.New("port_redirect is not supported")
	}
	if r.GetStripQuery() {
		return nil, errors.New("strip_query is not supported")
	}
	switch r.GetResponseCode() {
	case routev3.RedirectAction_MOVED_PERMANENTLY:
		out.ResponseCode = 301
	case routev3.RedirectAction_FOUND:
		out.ResponseCode = 302
	case routev3.RedirectAction_SEE_OTHER:
		out.ResponseCode = 303
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		out.ResponseCode = 307
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		out.ResponseCode = 308
	default:
		return nil, fmt.Errorf("response_code %v is not supported", r.GetResponseCode())
	}
	return out, nil
}

// headersToAdd converts header additions. Envoy appends by default; OVERWRITE_IF_EXISTS_OR_ADD
// replaces. The two other actions have no equivalent.
func headersToAdd(hs []*corev3.HeaderValueOption) ([]config.HeaderValueOption, error) {
	if len(hs) == 0 {
		return nil, nil
	}
	out := make([]config.HeaderValueOption, 0, len(hs))
	for i, h := range hs {
		if h.GetHeader().GetKey() == "" {
			return nil, fmt.Errorf("[%d]: empty header key", i)
		}
		if len(h.GetHeader().GetRawValue()) > 0 {
			return nil, fmt.Errorf("[%d] (%s): raw_value is not supported", i, h.GetHeader().GetKey())
		}
		appendValue := true
		if a := h.GetAppend(); a != nil {
			appendValue = a.GetValue()
		} else {
			switch h.GetAppendAction() {
			case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
				appendValue = false
			default:
				return nil, fmt.Errorf("[%d] (%s): append_action %v is not supported", i, h.GetHeader().GetKey(), h.GetAppendAction())
			}
		}
		o := config.HeaderValueOption{Append: &appendValue}
		o.Header = &struct {
			Key   string `json:"key"`
			Value string `json:"value"`
		}{Key: h.GetHeader().GetKey(), Value: h.GetHeader().GetValue()}
		out = append(out, o)
	}
	return out, nil
}

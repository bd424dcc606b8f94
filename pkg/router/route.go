package router

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// Route is one compiled route: matchers and what to do with a matching request. It is
// immutable; accessors return copies or values the caller must not modify.
type Route struct {
	name   string
	vhost  string
	action action

	// match
	pathKind pathKind
	path     string       // prefix or exact path
	pathRe   valueMatcher // matchRegex
	headers  []headerMatcher
	vars     []varMatcher

	// action: route
	cluster       string
	clusterHeader string
	weighted      []weightedArm
	weightTotal   uint64
	upstreamProto string
	prefixRewrite string
	rewriteRe     *regexp.Regexp
	rewriteSub    string
	hostRewrite   string
	autoHost      bool
	timeout       time.Duration
	grpcTimeouts  bool          // max_grpc_timeout set: gRPC requests are timed by grpc-timeout
	grpcMax       time.Duration // max_grpc_timeout; 0: no cap
	grpcOffset    time.Duration // grpc_timeout_offset
	retry         *RetryPolicy
	hash          []hashPolicy
	mirror        *Mirror
	perFilter     map[string]config.RawMessage

	direct   DirectResponse
	redirect Redirect

	reqOps  []headerOp
	respOps []headerOp
}

type action uint8

const (
	actionRoute action = iota
	actionDirect
	actionRedirect
)

type pathKind uint8

const (
	matchAny pathKind = iota
	matchPrefix
	matchPath
	matchRegex
)

// source says where a header-like value is read from: Envoy's pseudo-headers are served by
// the Request's own methods, so protocol views need not expose them as headers.
type source uint8

const (
	fromHeader source = iota
	fromAuthority
	fromPath
	fromMethod
)

func sourceOf(name string) source {
	switch strings.ToLower(name) {
	case ":authority":
		return fromAuthority
	case ":path":
		return fromPath
	case ":method":
		return fromMethod
	}
	return fromHeader
}

func lookup(r Request, src source, name string) (string, bool) {
	switch src {
	case fromAuthority:
		h := r.Host()
		return h, h != ""
	case fromPath:
		p := r.Path()
		return p, p != ""
	case fromMethod:
		m := r.Method()
		return m, m != ""
	}
	return r.Header(name)
}

type headerMatcher struct {
	name  string
	src   source
	value valueMatcher // a literal for exact matchers
}

type varMatcher struct {
	name  string
	value string
	set   bool // value was given
	re    *valueMatcher
}

type weightedArm struct {
	name string
	upTo uint64 // cumulative weight, exclusive upper bound
}

type opKind uint8

const (
	opDel opKind = iota
	opSet
	opAdd
)

type headerOp struct {
	kind       opKind
	key, value string
}

// DirectResponse is a local answer (direct_response).
type DirectResponse struct {
	Status int
	Body   string
}

// Redirect is a redirect answer. Empty fields keep the request's value.
type Redirect struct {
	Code   int    // 301 when not configured
	Scheme string // lower case
	Host   string
	Path   string
}

// Mirror copies a share of requests to another cluster (request_mirror_policies).
type Mirror struct {
	Cluster string
	Percent uint32 // 0..100; a configured value over 100 counts as 100
}

// Hit reports whether the request drawing rnd is mirrored.
func (m Mirror) Hit(rnd uint64) bool { return rnd%100 < uint64(m.Percent) }

// HeaderMutator edits request or response headers; each protocol's header map implements
// it (case-insensitive names for HTTP).
type HeaderMutator interface {
	Set(key, value string) // replace every value
	Add(key, value string) // append a value
	Del(key string)
}

func newRoute(rc *config.RouterCfg, vc *config.VirtualHost, c *config.Route, name string) (*Route, error) {
	rt := &Route{name: name, vhost: vc.Name, timeout: config.DefaultRouteTimeout}
	if err := rt.compileMatch(&c.Match); err != nil {
		return nil, err
	}
	n := 0
	for _, set := range []bool{c.Route != nil, c.DirectResponse != nil, c.Redirect != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("set exactly one of route, direct_response, redirect")
	}
	switch {
	case c.Route != nil:
		if err := rt.compileAction(c.Route); err != nil {
			return nil, fmt.Errorf("route: %w", err)
		}
	case c.DirectResponse != nil:
		d := c.DirectResponse
		if d.StatusCode < 100 || d.StatusCode > 599 {
			return nil, fmt.Errorf("direct_response.status: %d is outside 100-599", d.StatusCode)
		}
		rt.action = actionDirect
		rt.direct = DirectResponse{Status: d.StatusCode, Body: d.Body}
	default:
		d := c.Redirect
		rt.action = actionRedirect
		rt.redirect = Redirect{Code: d.ResponseCode, Scheme: strings.ToLower(d.SchemeRedirect), Host: d.HostRedirect, Path: d.PathRedirect}
		switch rt.redirect.Code {
		case 0:
			rt.redirect.Code = 301
		case 301, 302, 303, 307, 308:
		default:
			return nil, fmt.Errorf("redirect.response_code: %d is not a redirect status (301, 302, 303, 307, 308)", d.ResponseCode)
		}
		switch rt.redirect.Scheme {
		case "", "http", "https":
		default:
			return nil, fmt.Errorf("redirect.scheme_redirect: unknown %q (known: http, https)", d.SchemeRedirect)
		}
	}
	if m := c.RequestMirrorPolicies; m != nil {
		if m.Cluster == "" {
			return nil, fmt.Errorf("request_mirror_policies.cluster: missing")
		}
		rt.mirror = &Mirror{Cluster: m.Cluster, Percent: min(m.Percent, 100)}
	}
	if len(c.PerFilterConfig) > 0 {
		rt.perFilter = maps.Clone(c.PerFilterConfig)
	}

	// Header mutations in Envoy's order: route level (the route entry and its action), then
	// virtual host, then router; each level removes before it adds, so a less specific level
	// has the last word.
	type level struct {
		reqAdd, respAdd []config.HeaderValueOption
		reqDel, respDel []string
	}
	route := level{c.RequestHeadersToAdd, c.ResponseHeadersToAdd, c.RequestHeadersToRemove, c.ResponseHeadersToRemove}
	if a := c.Route; a != nil {
		route.reqAdd = append(slices.Clip(route.reqAdd), a.RequestHeadersToAdd...)
		route.respAdd = append(slices.Clip(route.respAdd), a.ResponseHeadersToAdd...)
		route.reqDel = append(slices.Clip(route.reqDel), a.RequestHeadersToRemove...)
		route.respDel = append(slices.Clip(route.respDel), a.ResponseHeadersToRemove...)
	}
	for _, l := range []level{
		route,
		{vc.RequestHeadersToAdd, vc.ResponseHeadersToAdd, vc.RequestHeadersToRemove, vc.ResponseHeadersToRemove},
		{rc.RequestHeadersToAdd, rc.ResponseHeadersToAdd, rc.RequestHeadersToRemove, rc.ResponseHeadersToRemove},
	} {
		var err error
		if rt.reqOps, err = appendOps(rt.reqOps, l.reqDel, l.reqAdd); err != nil {
			return nil, fmt.Errorf("request_headers_to_add: %w", err)
		}
		if rt.respOps, err = appendOps(rt.respOps, l.respDel, l.respAdd); err != nil {
			return nil, fmt.Errorf("response_headers_to_add: %w", err)
		}
	}
	return rt, nil
}

var errNoHeaderKey = errors.New("an entry has no header.key")

// checkOps reports a header to add without a key, naming its list.
func checkOps(req, resp []config.HeaderValueOption) error {
	if _, err := appendOps(nil, nil, req); err != nil {
		return fmt.Errorf("request_headers_to_add: %w", err)
	}
	if _, err := appendOps(nil, nil, resp); err != nil {
		return fmt.Errorf("response_headers_to_add: %w", err)
	}
	return nil
}

// appendOps appends one level's removals, then its additions.
func appendOps(ops []headerOp, del []string, add []config.HeaderValueOption) ([]headerOp, error) {
	for _, k := range del {
		if k != "" {
			ops = append(ops, headerOp{kind: opDel, key: k})
		}
	}
	for _, o := range add {
		if o.Header == nil || o.Header.Key == "" {
			return nil, errNoHeaderKey
		}
		kind := opAdd // Envoy and MOSN append unless "append": false
		if o.Append != nil && !*o.Append {
			kind = opSet
		}
		ops = append(ops, headerOp{kind: kind, key: o.Header.Key, value: o.Header.Value})
	}
	return ops, nil
}

func (rt *Route) compileMatch(m *config.RouteMatch) error {
	n := 0
	for _, s := range []string{m.Prefix, m.Path, m.Regex} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("match: set only one of prefix, path, regex")
	}
	switch {
	case m.Prefix != "":
		rt.pathKind, rt.path = matchPrefix, m.Prefix
	case m.Path != "":
		rt.pathKind, rt.path = matchPath, m.Path
	case m.Regex != "":
		vm, err := compileValue(m.Regex)
		if err != nil {
			return fmt.Errorf("match.regex: %w", err)
		}
		rt.pathKind, rt.pathRe = matchRegex, vm
	}
	for i, h := range m.Headers {
		if h.Name == "" {
			return fmt.Errorf("match.headers[%d].name: missing", i)
		}
		hm := headerMatcher{name: h.Name, src: sourceOf(h.Name), value: valueMatcher{kind: valueLiteral, lit: h.Value}}
		if h.IsRegex() {
			vm, err := compileValue(h.Value)
			if err != nil {
				return fmt.Errorf("match.headers[%d].value: %w", i, err)
			}
			hm.value = vm
		}
		rt.headers = append(rt.headers, hm)
	}
	for i, v := range m.Variables {
		if v.Name == "" {
			return fmt.Errorf("match.variables[%d].name: missing", i)
		}
		vm := varMatcher{name: v.Name, value: v.Value, set: v.Value != ""}
		if v.Regex != "" {
			re, err := compileValue(v.Regex)
			if err != nil {
				return fmt.Errorf("match.variables[%d].regex: %w", i, err)
			}
			vm.re = &re
		}
		rt.vars = append(rt.vars, vm)
	}
	return nil
}

func (rt *Route) compileAction(a *config.RouteAction) error {
	n := 0
	for _, set := range []bool{a.ClusterName != "", a.ClusterHeader != "", len(a.WeightedClusters) > 0} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("set exactly one of cluster_name, cluster_header, weighted_clusters")
	}
	rt.cluster, rt.clusterHeader = a.ClusterName, a.ClusterHeader
	for i, wc := range a.WeightedClusters {
		if wc.Cluster.Name == "" {
			return fmt.Errorf("weighted_clusters[%d].cluster.name: missing", i)
		}
		if wc.Cluster.Weight == 0 {
			continue
		}
		rt.weightTotal += uint64(wc.Cluster.Weight)
		rt.weighted = append(rt.weighted, weightedArm{name: wc.Cluster.Name, upTo: rt.weightTotal})
	}
	if len(a.WeightedClusters) > 0 && rt.weightTotal == 0 {
		return fmt.Errorf("weighted_clusters: weights sum to 0")
	}
	rt.upstreamProto = a.UpstreamProtocol
	if a.PrefixRewrite != "" && a.RegexRewrite != nil {
		return fmt.Errorf("set only one of prefix_rewrite, regex_rewrite")
	}
	rt.prefixRewrite = a.PrefixRewrite
	if rr := a.RegexRewrite; rr != nil {
		if rr.Pattern.Regex == "" {
			return fmt.Errorf("regex_rewrite.pattern.regex: missing")
		}
		re, err := regexp.Compile(rr.Pattern.Regex)
		if err != nil {
			return fmt.Errorf("regex_rewrite.pattern.regex: invalid regex %q: %w", rr.Pattern.Regex, err)
		}
		rt.rewriteRe, rt.rewriteSub = re, envoySubstitution(rr.Substitution)
	}
	if a.HostRewrite != "" && a.AutoHostRewrite {
		return fmt.Errorf("set only one of host_rewrite, auto_host_rewrite")
	}
	rt.hostRewrite, rt.autoHost = a.HostRewrite, a.AutoHostRewrite
	rt.timeout = a.Timeout.Or(config.DefaultRouteTimeout)
	if a.MaxGrpcTimeout != nil {
		rt.grpcTimeouts, rt.grpcMax = true, a.MaxGrpcTimeout.D()
		rt.grpcOffset = a.GrpcTimeoutOffset.Or(0)
	}
	rt.retry = newRetryPolicy(a.RetryPolicy)
	hp, err := newHashPolicies(a.HashPolicy)
	if err != nil {
		return err
	}
	rt.hash = hp
	return nil
}

// envoySubstitution rewrites Envoy's \N group references into Go's ${N}, so a substitution
// written for Envoy (xDS) or for MOSN (Go's $N) both work. Other text is left alone.
func envoySubstitution(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && '0' <= s[i+1] && s[i+1] <= '9' {
			b.WriteString("${")
			b.WriteByte(s[i+1])
			b.WriteByte('}')
			i++
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func (rt *Route) matches(r Request) bool {
	switch rt.pathKind {
	case matchPrefix:
		if !strings.HasPrefix(r.Path(), rt.path) {
			return false
		}
	case matchPath:
		if pathOnly(r.Path()) != rt.path {
			return false
		}
	case matchRegex:
		p := r.Path()
		if p == "" || !rt.pathRe.match(pathOnly(p)) {
			return false
		}
	}
	for i := range rt.headers {
		h := &rt.headers[i]
		if v, ok := lookup(r, h.src, h.name); !ok || !h.value.match(v) {
			return false
		}
	}
	for i := range rt.vars {
		vm := &rt.vars[i]
		v, ok := r.Variable(vm.name)
		if !ok || (vm.set && v != vm.value) || (vm.re != nil && !vm.re.match(v)) {
			return false
		}
	}
	return true
}

// pathOnly strips the query string.
func pathOnly(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

// Name identifies the route for logs and stats: "<virtual host>/<index>".
func (rt *Route) Name() string { return rt.name }

// VirtualHost is the name of the route's virtual host.
func (rt *Route) VirtualHost() string { return rt.vhost }

// ClusterFor returns the cluster for a request: cluster_name; the value of cluster_header
// ("" when the header is absent: no cluster); or a weighted_clusters arm chosen by rnd,
// arm i taking rnd % total in [sum of weights before i, sum through i). "" for routes that
// answer locally.
func (rt *Route) ClusterFor(r Request, rnd uint64) string {
	switch {
	case rt.action != actionRoute:
		return ""
	case rt.clusterHeader != "":
		v, _ := r.Header(rt.clusterHeader)
		return v
	case len(rt.weighted) > 0:
		x := rnd % rt.weightTotal
		for _, a := range rt.weighted {
			if x < a.upTo {
				return a.name
			}
		}
	}
	return rt.cluster
}

// UpstreamProtocol is the route-level upstream_protocol as configured ("" for none).
func (rt *Route) UpstreamProtocol() string { return rt.upstreamProto }

// DirectResponse returns the local answer when the route has one.
func (rt *Route) DirectResponse() (DirectResponse, bool) {
	return rt.direct, rt.action == actionDirect
}

// Redirect returns the redirect when the route has one.
func (rt *Route) Redirect() (Redirect, bool) {
	return rt.redirect, rt.action == actionRedirect
}

// Location builds the redirect target from the request's scheme, host and path. Without a
// path_redirect the request's path and query are kept; with one, the request's query is
// kept unless path_redirect carries its own. Changing the scheme drops the old scheme's
// default port (":80" for http, ":443" for https) from a kept host.
func (rd Redirect) Location(scheme, host, path string) string {
	s, h, p := scheme, host, path
	if rd.Scheme != "" && !strings.EqualFold(rd.Scheme, scheme) {
		s = rd.Scheme
		if rd.Host == "" {
			switch strings.ToLower(scheme) {
			case "http":
				h = strings.TrimSuffix(h, ":80")
			case "https":
				h = strings.TrimSuffix(h, ":443")
			}
		}
	}
	if rd.Host != "" {
		h = rd.Host
	}
	if rd.Path != "" {
		p = rd.Path
		if !strings.Contains(p, "?") {
			if i := strings.IndexByte(path, '?'); i >= 0 {
				p += path[i:]
			}
		}
	}
	return s + "://" + h + p
}

// Timeout is the whole request's timeout: route.timeout, default 15s; 0 ("0s") means none.
func (rt *Route) Timeout() time.Duration { return rt.timeout }

// Retry is the route's retry policy; nil (whose methods say "no retry") when retry_on is off.
func (rt *Route) Retry() *RetryPolicy { return rt.retry }

// Mirror returns the mirror policy when the route has one.
func (rt *Route) Mirror() (Mirror, bool) {
	if rt.mirror == nil {
		return Mirror{}, false
	}
	return *rt.mirror, true
}

// PerFilterConfig returns the raw per_filter_config of a stream filter; read only.
func (rt *Route) PerFilterConfig(filter string) (config.RawMessage, bool) {
	c, ok := rt.perFilter[filter]
	return c, ok
}

// RewritePath applies prefix_rewrite or regex_rewrite to a request path (query included)
// and returns it unchanged, without allocating, when the route rewrites nothing.
//
// prefix_rewrite replaces the part the route matched: its prefix, or for "path" and "regex"
// routes the whole path; a route with no path matcher matched an empty prefix.
// regex_rewrite replaces every match in the path; the query is kept as it is. Substitutions
// use Go's $1 / ${name} or Envoy's \1.
func (rt *Route) RewritePath(path string) string {
	switch {
	case rt.prefixRewrite != "":
		switch rt.pathKind {
		case matchPrefix:
			if strings.HasPrefix(path, rt.path) {
				return rt.prefixRewrite + path[len(rt.path):]
			}
			return path
		case matchPath, matchRegex:
			return rt.prefixRewrite + path[len(pathOnly(path)):]
		default:
			return rt.prefixRewrite + path
		}
	case rt.rewriteRe != nil:
		p := pathOnly(path)
		return rt.rewriteRe.ReplaceAllString(p, rt.rewriteSub) + path[len(p):]
	}
	return path
}

// HostRewrite is the literal host_rewrite ("" for none).
func (rt *Route) HostRewrite() string { return rt.hostRewrite }

// AutoHostRewrite reports whether the Host should become the picked upstream host's.
func (rt *Route) AutoHostRewrite() bool { return rt.autoHost }

// ApplyRequestHeaders applies the merged request header mutations (route, virtual host,
// router; each level removes, then adds).
func (rt *Route) ApplyRequestHeaders(m HeaderMutator) { apply(rt.reqOps, m) }

// ApplyResponseHeaders applies the merged response header mutations.
func (rt *Route) ApplyResponseHeaders(m HeaderMutator) { apply(rt.respOps, m) }

func apply(ops []headerOp, m HeaderMutator) {
	for i := range ops {
		switch op := &ops[i]; op.kind {
		case opDel:
			m.Del(op.key)
		case opSet:
			m.Set(op.key, op.value)
		case opAdd:
			m.Add(op.key, op.value)
		}
	}
}

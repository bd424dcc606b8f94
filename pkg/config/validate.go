package config

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
)

// Validate checks the meaning of a decoded config and reports every problem it finds, each
// with its JSON path: errors (as a Problems value) and warnings. Run it after ApplyDefaults;
// it also copes with unset fields, which it reads as their defaults. It never mutates c.
//
// The configs of the built-in filters (proxy, tcp_proxy, udp_proxy, original_dst) are decoded
// here and checked, with paths into them; their unknown keys are Parse's business.
// References to clusters and routers that a control plane may still deliver (the config has
// dynamic_resources) are warnings instead of errors.
func (c *Config) Validate() (warnings []Problem, err error) {
	v := &validator{c: c, dynamic: len(c.DynamicResources) > 0 && string(c.DynamicResources) != "null"}
	v.run()
	return v.rep.result()
}

type validator struct {
	c        *Config
	rep      report
	dynamic  bool
	clusters map[string]bool
}

func (v *validator) run() {
	c := v.c
	v.clusterManager()
	if len(c.Servers) > 1 {
		v.rep.fail("servers", fmt.Sprintf("%d servers; mosnlite runs exactly one (servers[0])", len(c.Servers)))
	}
	if len(c.Servers) == 0 && !v.dynamic && len(c.Extends) == 0 {
		v.rep.warn("servers", "no servers and no dynamic_resources: there is nothing to serve")
	}
	for i := range c.Servers {
		v.server(index("servers", i), &c.Servers[i])
	}
	v.admin()
	for i, e := range c.Extends {
		p := index("extends", i)
		if !slices.Contains(ExtendTypes, e.Type) {
			v.rep.fail(field(p, "type"), v.unknownOrMissing(e.Type, ExtendTypes))
		}
	}
	if c.Metrics != nil {
		for i, s := range c.Metrics.Sinks {
			p := index("metrics.sinks", i)
			if !slices.Contains(MetricSinkTypes, s.Type) {
				v.rep.fail(field(p, "type"), v.unknownOrMissing(s.Type, MetricSinkTypes))
			}
		}
	}
	v.negativeDurations(reflect.ValueOf(c).Elem(), RootPath)
}

func (v *validator) unknownOrMissing(name string, known []string) string {
	if name == "" {
		return "missing (known: " + strings.Join(known, ", ") + ")"
	}
	return unknownName(name, known)
}

// dangling reports a reference to a cluster or router the file does not define: an error,
// or a warning when a control plane may still deliver it.
func (v *validator) dangling(path, msg string) {
	if v.dynamic {
		v.rep.warn(path, msg+"; expected from dynamic_resources")
		return
	}
	v.rep.fail(path, msg)
}

func (v *validator) clusterRef(path, name string) {
	switch {
	case name == "":
		v.rep.fail(path, "missing cluster name")
	case !v.clusters[name]:
		v.dangling(path, fmt.Sprintf("cluster %q is not in cluster_manager.clusters", name))
	}
}

// ---- clusters ----

func (v *validator) clusterManager() {
	cm := &v.c.ClusterManager
	v.clusters = map[string]bool{}
	if cm.ClusterConfigPath != "" {
		v.rep.warn("cluster_manager.clusters_configs", "per-cluster config files are not supported; ignored")
	}
	first := map[string]string{}
	for i := range cm.Clusters {
		cl := &cm.Clusters[i]
		p := index("cluster_manager.clusters", i)
		switch prev, dup := first[cl.Name]; {
		case cl.Name == "":
			v.rep.fail(field(p, "name"), "missing")
		case dup:
			v.rep.fail(field(p, "name"), fmt.Sprintf("duplicate cluster name %q (also %s)", cl.Name, prev))
		default:
			first[cl.Name] = p
		}
		v.clusters[cl.Name] = true
		v.cluster(p, cl)
	}
}

func (v *validator) cluster(p string, cl *Cluster) {
	typ := cl.Type
	if typ == "" {
		typ = DefaultClusterType
	}
	typeOK := slices.Contains(ClusterTypes, typ)
	if !typeOK {
		v.rep.fail(field(p, "type"), unknownName(cl.Type, ClusterTypes))
	}
	if cl.LBType != "" && !slices.Contains(LBTypes, cl.LBType) {
		v.rep.fail(field(p, "lb_type"), unknownName(cl.LBType, LBTypes))
	}
	switch {
	case typ == ClusterOriginalDst && cl.LBType != "" && cl.LBType != LBOriginalDst:
		v.rep.fail(field(p, "lb_type"), fmt.Sprintf("an ORIGINAL_DST cluster balances with %s, not %s", LBOriginalDst, cl.LBType))
	case typeOK && typ != ClusterOriginalDst && cl.LBType == LBOriginalDst:
		v.rep.fail(field(p, "lb_type"), fmt.Sprintf("%s needs a cluster of type %s, not %s", LBOriginalDst, ClusterOriginalDst, typ))
	}

	hp := field(p, "hosts")
	switch typ {
	case ClusterSimple:
		if len(cl.Hosts) == 0 {
			v.rep.warn(hp, "a SIMPLE cluster with no hosts answers every request with no healthy upstream")
		}
		for j, h := range cl.Hosts {
			if _, err := netip.ParseAddrPort(h.Address); err != nil || strings.HasSuffix(h.Address, ":0") {
				v.rep.fail(field(index(hp, j), "address"), fmt.Sprintf("%q is not ip:port with a port in 1-65535 (a SIMPLE cluster does not resolve names; use STRICT_DNS)", h.Address))
			}
		}
	case ClusterStrictDNS:
		if len(cl.Hosts) == 0 {
			v.rep.fail(hp, "a STRICT_DNS cluster needs at least one host:port to resolve")
		}
		for j, h := range cl.Hosts {
			if err := checkHostPort(h.Address, false); err != nil {
				v.rep.fail(field(index(hp, j), "address"), fmt.Sprintf("%q: %v", h.Address, err))
			}
		}
		if cl.DNSRefreshRate != nil && *cl.DNSRefreshRate == 0 {
			v.rep.fail(field(p, "dns_refresh_rate"), "must be positive")
		}
	case ClusterEDS:
		if len(cl.Hosts) > 0 {
			v.rep.warn(hp, "an EDS cluster takes its hosts from xDS; these are ignored")
		}
		if !v.dynamic {
			v.rep.warn(field(p, "type"), "EDS cluster but no dynamic_resources: it will have no hosts")
		}
	case ClusterOriginalDst:
		if len(cl.Hosts) == 0 {
			// Hosts are not created on demand (pkg/upstream/cluster): only a listed host
			// that is a connection's original destination is chosen.
			v.rep.warn(hp, "an ORIGINAL_DST cluster chooses among its listed hosts (the one that is the original destination); with none, every pick fails")
		}
	}
	seen := map[string]int{}
	for j, h := range cl.Hosts {
		if h.Address == "" {
			if typeOK && typ != ClusterSimple && typ != ClusterStrictDNS {
				v.rep.fail(field(index(hp, j), "address"), "missing")
			}
			continue
		}
		if k, dup := seen[h.Address]; dup {
			v.rep.fail(field(index(hp, j), "address"), fmt.Sprintf("duplicate host %q (also %s)", h.Address, index(hp, k)))
		}
		seen[h.Address] = j
	}

	if cl.ConnectTimeout != nil && *cl.ConnectTimeout == 0 {
		v.rep.fail(field(p, "connect_timeout"), "must be positive")
	}
	if cl.DNSLookupFamily != "" && !slices.Contains(DNSLookupFamilies, cl.DNSLookupFamily) {
		v.rep.fail(field(p, "dns_lookup_family"), unknownName(cl.DNSLookupFamily, DNSLookupFamilies))
	}
	prios := map[string]int{}
	for j, cb := range cl.CircuitBreakers {
		cp := index(field(p, "circuit_breakers"), j)
		prio := cb.Priority
		if prio == "" {
			prio = "DEFAULT"
		}
		if !slices.Contains(CircuitBreakerPriorities, prio) {
			v.rep.fail(field(cp, "priority"), unknownName(cb.Priority, CircuitBreakerPriorities))
			continue
		}
		if k, dup := prios[prio]; dup {
			v.rep.fail(field(cp, "priority"), fmt.Sprintf("second %s thresholds (also %s)", prio, index(field(p, "circuit_breakers"), k)))
		}
		prios[prio] = j
		if prio != "DEFAULT" {
			v.rep.warn(field(cp, "priority"), fmt.Sprintf("%s thresholds are not used: mosnlite has no request priorities, so DEFAULT applies", prio))
			continue
		}
		// 0 is a threshold (Envoy's semantics), not "unset": max_retries 0 turns retries
		// off, which is a normal choice; 0 connections or requests refuse all traffic,
		// which MOSN configs written with 0 for "default" do not mean.
		if n := cb.MaxConnections; n != nil && *n == 0 {
			v.rep.warn(field(cp, "max_connections"), "0 refuses every upstream connection: the cluster takes no traffic (leave the field out for the default 1024)")
		}
		if n := cb.MaxRequests; n != nil && *n == 0 {
			v.rep.warn(field(cp, "max_requests"), "0 refuses every request: the cluster takes no traffic (leave the field out for the default 1024)")
		}
	}
	if hc := cl.HealthCheck; hc != nil {
		errs, warns := hc.Check()
		v.sub(field(p, "health_check"), errs, warns)
	}
	if od := cl.OutlierDetection; od != nil {
		v.sub(field(p, "outlier_detection"), od.Check(), nil)
	}
	if rb := cl.RetryBudget; rb != nil {
		errs, warns := rb.Check()
		v.sub(field(p, "retry_budget"), errs, warns)
	}
	if lc := cl.LBConfig; lc != nil {
		lp := field(p, "lbconfig")
		switch n := lc.MaglevTableSize; {
		case n == 0:
		case n > MaxMaglevTableSize:
			v.rep.fail(field(lp, "maglev_table_size"), fmt.Sprintf("%d is over the limit of %d", n, MaxMaglevTableSize))
		case !isPrime(n):
			v.rep.fail(field(lp, "maglev_table_size"), fmt.Sprintf("%d is not prime", n))
		}
		if lc.ActiveRequestBias < 0 {
			v.rep.fail(field(lp, "active_request_bias"), "must not be negative")
		}
	}
	if cl.TLSContext != nil {
		v.tls(field(p, "tls_context"), cl.TLSContext, false)
	}
}

// Check reports b's problems, each with its path relative to the retry_budget block.
func (b *RetryBudget) Check() (errs, warns []Problem) {
	var r report
	if b.Disabled {
		for _, f := range []struct {
			key string
			set bool
		}{{"retry_ratio", b.RetryRatio != nil}, {"min_retries_per_second", b.MinRetriesPerSecond != nil}, {"ttl", b.TTL != nil}} {
			if f.set {
				r.fail(f.key, "set with disabled true, which turns the budget off (remove one of them)")
			}
		}
		return r.errors, nil
	}
	if x := b.RetryRatio; x != nil && !(*x >= 0 && *x <= 1) {
		r.fail("retry_ratio", fmt.Sprintf("%v is outside 0-1", *x))
	}
	if d := b.TTL; d != nil && (d.D() < MinRetryBudgetTTL || d.D() > MaxRetryBudgetTTL) {
		r.fail("ttl", fmt.Sprintf("%v is outside %v-%v", d.D(), MinRetryBudgetTTL, MaxRetryBudgetTTL))
	}
	if x, n := b.RetryRatio, b.MinRetriesPerSecond; x != nil && *x == 0 && n != nil && *n == 0 {
		r.warn("retry_ratio", `0 with min_retries_per_second 0 allows no retry to the cluster (to lift the budget, write {"disabled":true})`)
	}
	return r.errors, r.warnings
}

// sub reports problems whose paths are relative to the block at p.
func (v *validator) sub(p string, errs, warns []Problem) {
	for _, e := range errs {
		v.rep.fail(p+"."+e.Path, e.Msg)
	}
	for _, w := range warns {
		v.rep.warn(p+"."+w.Path, w.Msg)
	}
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// ---- servers, routers, listeners ----

func (v *validator) server(sp string, s *Server) {
	v.logLevel(field(sp, "default_log_level"), s.DefaultLogLevel)
	if s.Processor < 0 {
		v.rep.fail(field(sp, "processor"), "must not be negative")
	}
	routers := map[string]string{}
	for i := range s.Routers {
		p := index(field(sp, "routers"), i)
		r := &s.Routers[i]
		switch prev, dup := routers[r.RouterConfigName]; {
		case r.RouterConfigName == "":
			v.rep.fail(field(p, "router_config_name"), "missing")
		case dup:
			v.rep.fail(field(p, "router_config_name"), fmt.Sprintf("duplicate router_config_name %q (also %s)", r.RouterConfigName, prev))
		default:
			routers[r.RouterConfigName] = p
		}
		v.router(p, r)
	}
	v.extendRouters(routers) // extend_routers.go
	lv := &listenerSet{names: map[string]string{}, bound: map[string][]boundAddr{}, virtual: map[string]string{}}
	for i := range s.Listeners {
		v.listener(index(field(sp, "listeners"), i), &s.Listeners[i], sp, routers, lv)
	}
}

func (v *validator) logLevel(path, level string) {
	if level != "" {
		if _, ok := canonical(level, LogLevels); !ok {
			v.rep.fail(path, unknownName(level, LogLevels))
		}
	}
}

func (v *validator) router(p string, r *RouterCfg) {
	v.headerOps(p, r.RequestHeadersToAdd, r.ResponseHeadersToAdd)
	if len(r.VirtualHosts) == 0 {
		v.rep.warn(field(p, "virtual_hosts"), "empty: every request through this router gets no route")
	}
	domains := map[string]string{}
	for i := range r.VirtualHosts {
		vp := index(field(p, "virtual_hosts"), i)
		vh := &r.VirtualHosts[i]
		if len(vh.Domains) == 0 {
			v.rep.fail(field(vp, "domains"), `empty: a virtual host needs at least one domain ("*" for any)`)
		}
		for j, d := range vh.Domains {
			dp := index(field(vp, "domains"), j)
			if d == "" {
				v.rep.fail(dp, "empty domain")
				continue
			}
			key := strings.ToLower(d)
			if prev, dup := domains[key]; dup {
				v.rep.fail(dp, fmt.Sprintf("domain %q is also in %s", d, prev))
				continue
			}
			domains[key] = dp
		}
		v.headerOps(vp, vh.RequestHeadersToAdd, vh.ResponseHeadersToAdd)
		for j := range vh.Routers {
			v.route(index(field(vp, "routers"), j), &vh.Routers[j])
		}
	}
}

func (v *validator) route(p string, r *Route) {
	actions := 0
	for _, set := range []bool{r.Route != nil, r.DirectResponse != nil, r.Redirect != nil} {
		if set {
			actions++
		}
	}
	switch {
	case actions == 0:
		v.rep.fail(p, "no action: set one of route, direct_response, redirect")
	case actions > 1:
		v.rep.fail(p, "set only one of route, direct_response, redirect")
	}
	v.match(field(p, "match"), &r.Match)
	if a := r.Route; a != nil {
		v.routeAction(field(p, "route"), a)
	}
	if d := r.DirectResponse; d != nil && (d.StatusCode < 100 || d.StatusCode > 599) {
		v.rep.fail(at(p, "direct_response.status"), fmt.Sprintf("%d is outside 100-599", d.StatusCode))
	}
	if rd := r.Redirect; rd != nil {
		rp := field(p, "redirect")
		switch rd.ResponseCode {
		case 0, 301, 302, 303, 307, 308:
		default:
			v.rep.fail(field(rp, "response_code"), fmt.Sprintf("%d is not a redirect status (301, 302, 303, 307, 308)", rd.ResponseCode))
		}
		switch strings.ToLower(rd.SchemeRedirect) {
		case "", "http", "https":
		default:
			v.rep.fail(field(rp, "scheme_redirect"), fmt.Sprintf("unknown %q (known: http, https)", rd.SchemeRedirect))
		}
	}
	if m := r.RequestMirrorPolicies; m != nil {
		mp := field(p, "request_mirror_policies")
		v.clusterRef(field(mp, "cluster"), m.Cluster)
		if m.Percent > 100 {
			v.rep.fail(field(mp, "percent"), fmt.Sprintf("%d is over 100", m.Percent))
		}
	}
	v.headerOps(p, r.RequestHeadersToAdd, r.ResponseHeadersToAdd)
}

func (v *validator) match(p string, m *RouteMatch) {
	n := 0
	for _, s := range []string{m.Prefix, m.Path, m.Regex} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		v.rep.fail(p, "set only one of prefix, path, regex")
	}
	v.regex(field(p, "regex"), m.Regex)
	for i, h := range m.Headers {
		hp := index(field(p, "headers"), i)
		if h.Name == "" {
			v.rep.fail(field(hp, "name"), "missing")
		}
		if h.IsRegex() {
			v.regex(field(hp, "value"), h.Value)
		}
	}
	for i, vm := range m.Variables {
		vp := index(field(p, "variables"), i)
		if vm.Name == "" {
			v.rep.fail(field(vp, "name"), "missing")
		}
		v.regex(field(vp, "regex"), vm.Regex)
	}
}

func (v *validator) regex(path, expr string) {
	if expr == "" {
		return
	}
	if _, err := regexp.Compile(expr); err != nil {
		v.rep.fail(path, fmt.Sprintf("invalid regex %q: %v", expr, err))
	}
}

func (v *validator) routeAction(p string, a *RouteAction) {
	n := 0
	for _, set := range []bool{a.ClusterName != "", a.ClusterHeader != "", len(a.WeightedClusters) > 0} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		v.rep.fail(field(p, "cluster_name"), "missing: set one of cluster_name, cluster_header, weighted_clusters")
	case n > 1:
		v.rep.fail(p, "set only one of cluster_name, cluster_header, weighted_clusters")
	}
	if a.ClusterName != "" {
		v.clusterRef(field(p, "cluster_name"), a.ClusterName)
	}
	if len(a.WeightedClusters) > 0 {
		var total uint64
		for i, wc := range a.WeightedClusters {
			cp := index(field(p, "weighted_clusters"), i)
			v.clusterRef(at(cp, "cluster.name"), wc.Cluster.Name)
			total += uint64(wc.Cluster.Weight)
		}
		if total == 0 {
			v.rep.fail(field(p, "weighted_clusters"), "weights sum to 0")
		}
	}
	if a.UpstreamProtocol != "" {
		if _, err := ParseProtocol(a.UpstreamProtocol, ""); err != nil {
			v.rep.fail(field(p, "upstream_protocol"), err.Error())
		}
	}
	if a.RegexRewrite != nil {
		if a.PrefixRewrite != "" {
			v.rep.fail(p, "set only one of prefix_rewrite, regex_rewrite")
		}
		if a.RegexRewrite.Pattern.Regex == "" {
			v.rep.fail(at(p, "regex_rewrite.pattern.regex"), "missing")
		}
		v.regex(at(p, "regex_rewrite.pattern.regex"), a.RegexRewrite.Pattern.Regex)
	}
	if a.HostRewrite != "" && a.AutoHostRewrite {
		v.rep.fail(p, "set only one of host_rewrite, auto_host_rewrite")
	}
	if rp := a.RetryPolicy; rp != nil {
		if rp.RetryOn && rp.NumRetries == 0 {
			v.rep.warn(at(p, "retry_policy.num_retries"), "retry_on is true but num_retries is 0: nothing will be retried (mosnlite uses num_retries as written)")
		}
		for i, code := range rp.RetriableStatusCodes {
			if code < 100 || code > 599 {
				v.rep.fail(index(at(p, "retry_policy.retriable_status_codes"), i), fmt.Sprintf("%d is outside 100-599", code))
			}
		}
	}
	for i, h := range a.HashPolicy {
		hp := index(field(p, "hash_policy"), i)
		n := 0
		for _, set := range []bool{h.Header != nil, h.Cookie != nil, h.SourceIP != nil, h.HTTPParam != nil} {
			if set {
				n++
			}
		}
		switch {
		case n == 0:
			v.rep.fail(hp, "empty: set one of header, cookie, source_ip, http_query_parameter")
		case n > 1:
			v.rep.fail(hp, "set only one of header, cookie, source_ip, http_query_parameter")
		}
		if h.Header != nil && h.Header.Key == "" {
			v.rep.fail(at(hp, "header.key"), "missing")
		}
		if h.Cookie != nil && h.Cookie.Name == "" {
			v.rep.fail(at(hp, "cookie.name"), "missing")
		}
		if h.HTTPParam != nil && h.HTTPParam.Name == "" {
			v.rep.fail(at(hp, "http_query_parameter.name"), "missing")
		}
	}
	v.headerOps(p, a.RequestHeadersToAdd, a.ResponseHeadersToAdd)
}

func (v *validator) headerOps(p string, req, resp []HeaderValueOption) {
	for _, list := range []struct {
		key  string
		opts []HeaderValueOption
	}{{"request_headers_to_add", req}, {"response_headers_to_add", resp}} {
		for i, o := range list.opts {
			hp := index(field(p, list.key), i)
			switch {
			case o.Header == nil:
				v.rep.fail(field(hp, "header"), "missing")
			case o.Header.Key == "":
				v.rep.fail(at(hp, "header.key"), "missing")
			}
		}
	}
}

// listenerSet tracks names and addresses across a server's listeners.
type listenerSet struct {
	names   map[string]string      // name → path of first use
	bound   map[string][]boundAddr // network/port → bound addresses on that port
	virtual map[string]string      // normalized address → path (bind_port false)
}

type boundAddr struct {
	host string // normalized: IP text, lower-case name, or "" for all interfaces
	path string
}

func (v *validator) listener(p string, l *Listener, sp string, routers map[string]string, ls *listenerSet) {
	switch prev, dup := ls.names[l.Name]; {
	case l.Name == "":
		v.rep.fail(field(p, "name"), "missing")
	case dup:
		v.rep.fail(field(p, "name"), fmt.Sprintf("duplicate listener name %q (also %s)", l.Name, prev))
	default:
		ls.names[l.Name] = p
	}
	network := l.Network
	if network == "" {
		network = DefaultNetwork
	}
	networkOK := slices.Contains(Networks, network)
	if !networkOK {
		v.rep.fail(field(p, "network"), unknownName(l.Network, Networks))
	}
	ap := field(p, "address")
	switch {
	case l.Address == "":
		v.rep.fail(ap, "missing")
	case !networkOK:
	case network == NetworkUnix:
		if len(l.Address) > 107 {
			v.rep.fail(ap, fmt.Sprintf("unix socket path is %d bytes; the limit is 107", len(l.Address)))
		} else {
			v.addressInUse(ap, l, network, l.Address, "", ls)
		}
	default:
		if err := checkHostPort(l.Address, true); err != nil {
			v.rep.fail(ap, fmt.Sprintf("%q: %v", l.Address, err))
		} else {
			host, port, _ := net.SplitHostPort(l.Address)
			if ip, err := netip.ParseAddr(host); err == nil {
				host = ip.Unmap().String()
				if ip.IsUnspecified() {
					host = ""
				}
			}
			v.addressInUse(ap, l, network, strings.ToLower(host), port, ls)
		}
	}
	if l.MaxConnections < 0 {
		v.rep.fail(field(p, "max_connections"), "must not be negative")
	}
	if st := l.SendTimeout.Or(0); st > 0 && st < time.Millisecond || st > MaxSendTimeout {
		v.rep.fail(field(p, "send_timeout"), fmt.Sprintf("%s is out of range: 1ms to %s, or 0s for off", st, MaxSendTimeout))
	}
	v.logLevel(field(p, "log_level"), l.LogLevel)
	for i, al := range l.AccessLogs {
		if al.Path == "" {
			v.rep.fail(field(index(field(p, "access_logs"), i), "log_path"), "missing")
		}
		if err := accesslog.Validate(al.Format); err != nil {
			v.rep.fail(field(index(field(p, "access_logs"), i), "log_format"), err.Error())
		}
	}

	// Original destination.
	if !l.UseOriginalDst.Valid() {
		v.rep.fail(field(p, "use_original_dst"), fmt.Sprintf("unknown %q (known: redirect, tproxy, or empty for off)", l.UseOriginalDst))
	}
	originalDst := l.UseOriginalDst != OriginalDstOff
	for i, f := range l.ListenerFilters {
		fp := index(field(p, "listener_filters"), i)
		if !slices.Contains(ListenerFilterTypes, f.Type) {
			v.rep.fail(field(fp, "type"), v.unknownOrMissing(f.Type, ListenerFilterTypes))
			continue
		}
		if f.Type != ListenerFilterOriginalDst {
			continue
		}
		originalDst = true
		var oc OriginalDstFilterConfig
		if !v.decodeFilter(fp, f.Config, &oc) {
			continue
		}
		switch mode := OriginalDst(oc.Type); {
		case !mode.Valid():
			v.rep.fail(at(fp, "config.type"), unknownName(oc.Type, OriginalDstModes))
		case mode != OriginalDstOff && l.UseOriginalDst != OriginalDstOff && mode != l.UseOriginalDst:
			v.rep.fail(at(fp, "config.type"), fmt.Sprintf("%q contradicts the listener's use_original_dst %q", oc.Type, l.UseOriginalDst))
		}
	}
	if originalDst && networkOK && network != NetworkTCP {
		v.rep.fail(field(p, "use_original_dst"), fmt.Sprintf("original destination needs a tcp listener, not %s", network))
	}

	// Filter chains.
	fcp := field(p, "filter_chains")
	if len(l.FilterChains) == 0 {
		v.rep.fail(fcp, "missing: a listener needs a filter chain with a proxy, tcp_proxy or udp_proxy filter")
	}
	if len(l.FilterChains) > 1 {
		v.rep.warn(index(fcp, 1), "mosnlite uses filter_chains[0] only; the other chains are ignored")
	}
	proxied := false
	for i := range l.FilterChains {
		fc := &l.FilterChains[i]
		cp := index(fcp, i)
		if fc.TLSContext != nil {
			v.tls(field(cp, "tls_context"), fc.TLSContext, true)
		}
		for j := range fc.TLSContexts {
			v.tls(index(field(cp, "tls_context_set"), j), &fc.TLSContexts[j], true)
		}
		if len(fc.Filters) == 0 {
			v.rep.fail(field(cp, "filters"), "empty: a filter chain needs one of proxy, tcp_proxy, udp_proxy")
			continue
		}
		terminal := -1
		for j, f := range fc.Filters {
			fp := index(field(cp, "filters"), j)
			if !slices.Contains(NetworkFilterTypes, f.Type) {
				v.rep.fail(field(fp, "type"), v.unknownOrMissing(f.Type, NetworkFilterTypes))
				continue
			}
			if slices.Contains(TerminalNetworkFilterTypes, f.Type) {
				if terminal >= 0 {
					v.rep.fail(field(fp, "type"), fmt.Sprintf("a second terminal filter (filters[%d] is %s already); a chain ends with exactly one of %s",
						terminal, fc.Filters[terminal].Type, strings.Join(TerminalNetworkFilterTypes, ", ")))
				} else {
					terminal = j
				}
			}
			if networkOK {
				switch {
				case f.Type == FilterUDPProxy && network != NetworkUDP:
					v.rep.fail(field(fp, "type"), fmt.Sprintf("udp_proxy needs a udp listener; this one is %s", network))
				case f.Type != FilterUDPProxy && network == NetworkUDP && slices.Contains(TerminalNetworkFilterTypes, f.Type):
					v.rep.fail(field(fp, "type"), fmt.Sprintf("%s needs a stream listener (tcp or unix); this one is udp", f.Type))
				}
			}
			if f.Type == FilterProxy {
				proxied = true
			}
			v.networkFilter(fp, f, routers, sp)
		}
		if terminal >= 0 && terminal != len(fc.Filters)-1 {
			v.rep.fail(index(field(cp, "filters"), terminal), fmt.Sprintf("%s must be the last filter of its chain", fc.Filters[terminal].Type))
		}
	}

	// Stream filters.
	for i, f := range l.StreamFilters {
		fp := index(field(p, "stream_filters"), i)
		switch {
		case slices.Contains(StreamFilterTypes, f.Type):
		case slices.Contains(RetiredStreamFilterTypes, f.Type):
			v.rep.warn(field(fp, "type"), fmt.Sprintf("stream filter %q was removed from MOSN; ignored", f.Type))
		default:
			v.rep.fail(field(fp, "type"), v.unknownOrMissing(f.Type, StreamFilterTypes))
		}
	}
	if len(l.StreamFilters) > 0 && !proxied && len(l.FilterChains) > 0 {
		v.rep.warn(field(p, "stream_filters"), "stream filters run only under the proxy filter; ignored on this listener")
	}
}

// addressInUse reports two listeners that would bind the same address (or, with a wildcard
// host, overlapping ones: Go listens dual-stack on 0.0.0.0, [::] and an empty host).
func (v *validator) addressInUse(ap string, l *Listener, network, host, port string, ls *listenerSet) {
	if !l.BindsPort() {
		key := network + "|" + host + "|" + port
		if prev, dup := ls.virtual[key]; dup {
			v.rep.fail(ap, fmt.Sprintf("address %q is also the address of the virtual listener at %s", l.Address, prev))
		} else {
			ls.virtual[key] = ap
		}
		return
	}
	if port == "0" {
		return // an ephemeral port never collides
	}
	key := network + "|" + port
	for _, b := range ls.bound[key] {
		if b.host == host {
			v.rep.fail(ap, fmt.Sprintf("address %q is already bound by the listener at %s", l.Address, b.path))
			return
		}
		if network != NetworkUnix && (b.host == "" || host == "") {
			v.rep.fail(ap, fmt.Sprintf("address %q overlaps the all-interfaces address of the listener at %s", l.Address, b.path))
			return
		}
	}
	ls.bound[key] = append(ls.bound[key], boundAddr{host: host, path: ap})
}

// checkHostPort checks "host:port". listen allows an empty host and port 0.
func checkHostPort(addr string, listen bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port (%v)", strings.TrimPrefix(err.Error(), "address "+addr+": "))
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("port %q is not a number in 0-65535", port)
	}
	if n == 0 && !listen {
		return fmt.Errorf("port 0")
	}
	if host == "" {
		if listen {
			return nil
		}
		return fmt.Errorf("missing host")
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if !validHostname(host) {
		return fmt.Errorf("%q is neither an IP address nor a host name", host)
	}
	return nil
}

func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c == '-' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
				return false
			}
		}
	}
	return true
}

func (v *validator) tls(p string, t *TLSConfig, server bool) {
	if !t.Status {
		return
	}
	if server && (t.CertChain == "" || t.PrivateKey == "") && t.SDSSource == nil {
		v.rep.fail(p, "status is true but cert_chain or private_key is missing")
	}
	if !server && (t.CertChain == "") != (t.PrivateKey == "") {
		v.rep.fail(p, "a client certificate needs both cert_chain and private_key")
	}
}

// decodeFilter decodes a built-in filter's raw config into out, reporting type errors with
// paths under fp.config. It reports whether out can be checked further.
func (v *validator) decodeFilter(fp string, raw RawMessage, out any) bool {
	if len(raw) == 0 {
		return true
	}
	_, err := decode(raw, out, field(fp, "config"), false, false)
	if err != nil {
		v.rep.errors = append(v.rep.errors, err.(Problems)...)
		return false
	}
	return true
}

func (v *validator) networkFilter(fp string, f TypedConfig, routers map[string]string, sp string) {
	cp := field(fp, "config")
	switch f.Type {
	case FilterProxy:
		var pc ProxyConfig
		if !v.decodeFilter(fp, f.Config, &pc) {
			return
		}
		v.proxyConfig(cp, &pc, routers, sp)
	case FilterTCPProxy:
		var tc TCPProxyConfig
		if !v.decodeFilter(fp, f.Config, &tc) {
			return
		}
		if tc.Cluster == "" && len(tc.Routes) == 0 {
			v.rep.fail(field(cp, "cluster"), "missing: tcp_proxy needs a cluster or routes")
		}
		if tc.Cluster != "" {
			v.clusterRef(field(cp, "cluster"), tc.Cluster)
		}
		for i, r := range tc.Routes {
			rp := index(field(cp, "routes"), i)
			v.clusterRef(field(rp, "cluster"), r.Cluster)
			for _, list := range []struct {
				key   string
				cidrs []CIDRCfg
			}{{"source_addrs", r.SourceAddrs}, {"destination_addrs", r.DestinationAddrs}} {
				for j, c := range list.cidrs {
					ip, err := netip.ParseAddr(c.Address)
					switch {
					case err != nil:
						v.rep.fail(field(index(field(rp, list.key), j), "address"), fmt.Sprintf("%q is not an IP address", c.Address))
					case int(c.Length) > ip.Unmap().BitLen():
						v.rep.fail(field(index(field(rp, list.key), j), "length"), fmt.Sprintf("%d is longer than the %d bits of %s", c.Length, ip.Unmap().BitLen(), c.Address))
					}
				}
			}
			for _, pp := range []struct{ key, val string }{{"source_port", r.SourcePort}, {"destination_port", r.DestinationPort}} {
				if err := checkPorts(pp.val); err != nil {
					v.rep.fail(field(rp, pp.key), err.Error())
				}
			}
		}
	case FilterUDPProxy:
		var uc UDPProxyConfig
		if !v.decodeFilter(fp, f.Config, &uc) {
			return
		}
		v.clusterRef(field(cp, "cluster"), uc.Cluster)
		if uc.MaxSessions < 0 {
			v.rep.fail(field(cp, "max_sessions"), "must not be negative")
		}
	}
}

func (v *validator) proxyConfig(cp string, pc *ProxyConfig, routers map[string]string, sp string) {
	subPath := at(cp, "extend_config.sub_protocol")
	sub, subOK := "", true
	if raw, ok := pc.ExtendConfig["sub_protocol"]; ok {
		s, isString := raw.(string)
		if !isString {
			v.rep.fail(subPath, fmt.Sprintf("expected a string, got %T", raw))
			subOK = false
		} else if _, err := parseSubProtocol(s); err != nil {
			v.rep.fail(subPath, err.Error())
			subOK = false
		} else {
			sub = s
		}
	}
	for _, pr := range []struct{ key, val string }{{"downstream_protocol", pc.DownstreamProtocol}, {"upstream_protocol", pc.UpstreamProtocol}} {
		pp := field(cp, pr.key)
		if pr.val == "" {
			if pr.key == "downstream_protocol" {
				v.rep.fail(pp, "missing (known: "+strings.Join(Protocols, ", ")+")")
			}
			continue
		}
		if _, err := ParseProtocol(pr.val, sub); err != nil {
			if !subOK {
				if name, _ := canonical(pr.val, Protocols); name == ProtocolX {
					continue // the sub_protocol error says it
				}
			}
			v.rep.fail(pp, err.Error())
		}
	}
	rp := field(cp, "router_config_name")
	switch {
	case pc.RouterConfigName == "":
		v.rep.fail(rp, "missing")
	case routers[pc.RouterConfigName] == "":
		known := make([]string, 0, len(routers))
		for name := range routers {
			known = append(known, name)
		}
		slices.Sort(known)
		v.dangling(rp, fmt.Sprintf("router %q is not in %s (known: %s)", pc.RouterConfigName, field(sp, "routers"), strings.Join(known, ", ")))
	}
}

// checkPorts checks a tcp_proxy port list: "80", "80-90", "80,443,8000-8080"; "" is any.
func checkPorts(s string) error {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		if err != nil {
			return fmt.Errorf("bad port %q (want 80, 80-90 or a comma list of those)", strings.TrimSpace(part))
		}
		if isRange {
			b, err := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
			if err != nil || b < a {
				return fmt.Errorf("bad port range %q", strings.TrimSpace(part))
			}
		}
	}
	return nil
}

// ---- admin ----

func (v *validator) admin() {
	a := v.c.Admin
	if a == nil {
		return
	}
	sa := a.Address.SocketAddress
	p := "admin.address.socket_address"
	if sa.PortValue > 65535 {
		v.rep.fail(field(p, "port_value"), fmt.Sprintf("%d is not a port (0-65535)", sa.PortValue))
	}
	if sa.Address == "" {
		v.rep.fail(field(p, "address"), "missing (127.0.0.1 keeps the admin API on loopback)")
		return
	}
	ip, err := netip.ParseAddr(sa.Address)
	switch {
	case err != nil && !validHostname(sa.Address):
		v.rep.fail(field(p, "address"), fmt.Sprintf("%q is not an IP address", sa.Address))
	case err == nil && !ip.IsLoopback():
		v.rep.warn(field(p, "address"), fmt.Sprintf("the admin API on %s is reachable from the network, and it can drain and reconfigure the proxy", sa.Address))
	}
}

// ---- durations ----

var durationType = reflect.TypeFor[Duration]()

// negativeDurations reports every negative Duration in v (decoding rejects them, but a
// Config built in code has not been decoded).
func (v *validator) negativeDurations(rv reflect.Value, path string) {
	switch rv.Kind() {
	case reflect.Pointer:
		if !rv.IsNil() {
			v.negativeDurations(rv.Elem(), path)
		}
	case reflect.Struct:
		for i := 0; i < rv.NumField(); i++ {
			sf := rv.Type().Field(i)
			if !sf.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = sf.Name
			}
			v.negativeDurations(rv.Field(i), field(path, name))
		}
	case reflect.Slice:
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			return
		}
		for i := 0; i < rv.Len(); i++ {
			v.negativeDurations(rv.Index(i), index(path, i))
		}
	case reflect.Int64:
		if rv.Type() == durationType && rv.Int() < 0 {
			v.rep.fail(path, fmt.Sprintf("negative duration %s", time.Duration(rv.Int())))
		}
	}
}

package router_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/router"
)

func TestVirtualHostSelection(t *testing.T) {
	t.Parallel()
	tb := build(t, `{"router_config_name":"r","virtual_hosts":[
		{"name":"exact","domains":["www.foo.com","WWW.Upper.com"],"routers":[{"route":{"cluster_name":"c"}}]},
		{"name":"exact-port","domains":["www.foo.com:8080"],"routers":[{"route":{"cluster_name":"c"}}]},
		{"name":"suffix","domains":["*.foo.com"],"routers":[{"route":{"cluster_name":"c"}}]},
		{"name":"longer-suffix","domains":["*.bar.foo.com"],"routers":[{"route":{"cluster_name":"c"}}]},
		{"name":"suffix-port","domains":["*.foo.com:9090"],"routers":[{"route":{"cluster_name":"c"}}]},
		{"name":"dash-suffix","domains":["*-api.baz.com"],"routers":[{"route":{"cluster_name":"c"}}]},
		{"name":"prefix","domains":["api.*"],"routers":[{"route":{"cluster_name":"c"}}]},
		{"name":"longer-prefix","domains":["api.internal.*"],"routers":[{"route":{"cluster_name":"c"}}]},
		{"name":"ipv6","domains":["[::1]"],"routers":[{"route":{"cluster_name":"c"}}]},
		{"name":"any","domains":["*"],"routers":[{"route":{"cluster_name":"c"}}]}]}`)
	for _, tc := range []struct{ host, want string }{
		{"www.foo.com", "exact"},
		{"WWW.FOO.COM", "exact"},           // case-insensitive host
		{"www.upper.com", "exact"},         // case-insensitive domain
		{"www.foo.com:80", "exact"},        // port ignored when no domain names it
		{"www.foo.com:8080", "exact-port"}, // a domain naming the port wins
		{"a.foo.com", "suffix"},            //
		{"a.b.foo.com", "suffix"},          //
		{"x.bar.foo.com", "longer-suffix"}, // longest suffix wins
		{"bar.foo.com", "suffix"},          // "*.bar.foo.com" needs a non-empty label
		{"foo.com", "any"},                 // "*.foo.com" does not match the bare domain
		{"a.foo.com:9090", "suffix-port"},  // port-named suffix first
		{"a.foo.com:9091", "suffix"},       // other port: port-less suffix
		{"www.foo.com:9090", "exact"},      // exact beats any wildcard
		{"svc-api.baz.com", "dash-suffix"}, //
		{"-api.baz.com", "any"},            // wildcard matches at least one character
		{"api.example.org", "prefix"},      //
		{"api.internal.example", "longer-prefix"},
		{"api.", "any"},
		{"[::1]:8080", "ipv6"},
		{"[::1]", "ipv6"},
		{"::1", "any"}, // bare IPv6: no port to strip
		{"", "any"},    // RPC: no host
		{"unknown.org", "any"},
		{strings.Repeat("a", 400) + ".foo.com", "suffix"}, // longer than the stack buffer
	} {
		got, ok := tb.VirtualHost(tc.host)
		if !ok || got != tc.want {
			t.Errorf("VirtualHost(%q) = %q, %v; want %q", tc.host, got, ok, tc.want)
		}
		if name := match(t, tb, httpReq(tc.host, "/")); name != tc.want+"/0" {
			t.Errorf("Match(host %q) = %q; want %q", tc.host, name, tc.want+"/0")
		}
	}
}

func TestNoCatchAllVirtualHost(t *testing.T) {
	t.Parallel()
	tb := build(t, `{"router_config_name":"r","virtual_hosts":[
		{"name":"only","domains":["foo.com"],"routers":[{"match":{"headers":[{"name":"service","value":".*"}]},"route":{"cluster_name":"c"}}]}]}`)
	for _, r := range []*req{rpcReq("service", "x"), httpReq("bar.com", "/", "service", "x")} {
		if name := match(t, tb, r); name != "" {
			t.Errorf("Match(%+v) = %q; want no route", r, name)
		}
	}
	if name := match(t, tb, httpReq("FOO.com:1234", "/", "service", "x")); name != "only/0" {
		t.Errorf("Match(FOO.com:1234) = %q; want only/0", name)
	}
}

// An RPC request carries no host: it reaches "*" even when other virtual hosts come first.
func TestRPCWithoutHostReachesStar(t *testing.T) {
	t.Parallel()
	tb := build(t, `{"router_config_name":"r","virtual_hosts":[
		{"name":"web","domains":["www.foo.com"],"routers":[{"match":{"prefix":"/"},"route":{"cluster_name":"web"}}]},
		{"name":"rpc","domains":["*"],"routers":[
			{"match":{"headers":[{"name":"service","value":"com.foo.Echo"},{"name":"method","value":"echo"},{"name":"version","value":"1\\..*"},{"name":"group","value":"g1","regex":false}]},"route":{"cluster_name":"echo-v1"}},
			{"match":{"headers":[{"name":"service","value":".*"}]},"route":{"cluster_name":"any-service"}}]}]}`)
	for _, tc := range []struct {
		r    *req
		want string
	}{
		{rpcReq("service", "com.foo.Echo", "method", "echo", "version", "1.2", "group", "g1"), "echo-v1"},
		{rpcReq("service", "com.foo.Echo", "method", "echo", "version", "2.0", "group", "g1"), "any-service"},
		{rpcReq("service", "com.foo.Echo", "method", "echo", "version", "1.0", "group", "G1"), "any-service"},
		{rpcReq("service", "com.foo.Other"), "any-service"},
		{rpcReq(), ""}, // no service header: the regex needs a value to match
	} {
		rt, ok := tb.Match(tc.r)
		got := ""
		if ok {
			got = rt.ClusterFor(tc.r, 0)
		}
		if got != tc.want {
			t.Errorf("Match(%v) cluster = %q; want %q", tc.r.headers, got, tc.want)
		}
	}
}

func TestPathMatchers(t *testing.T) {
	t.Parallel()
	tb := build(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
		{"match":{"path":"/exact"},"route":{"cluster_name":"c"}},
		{"match":{"regex":"/re/[0-9]+"},"route":{"cluster_name":"c"}},
		{"match":{"prefix":"/api/"},"route":{"cluster_name":"c"}},
		{"match":{"prefix":"/q?x="},"route":{"cluster_name":"c"}},
		{"match":{"headers":[{"name":"x-any","value":"1","regex":false}]},"route":{"cluster_name":"c"}}]}]}`)
	for _, tc := range []struct {
		path string
		hdr  []string
		want string
	}{
		{"/exact", nil, "v/0"},
		{"/exact?a=b", nil, "v/0"},                   // path ignores the query
		{"/exact/", nil, ""},                         //
		{"/Exact", nil, ""},                          // case-sensitive
		{"/re/123", nil, "v/1"},                      //
		{"/re/123?x", nil, "v/1"},                    // regex ignores the query
		{"/re/123x", nil, ""},                        // regex must match the whole path
		{"/a/re/1", nil, ""},                         //
		{"/api/users", nil, "v/2"},                   //
		{"/API/users", nil, ""},                      // case-sensitive prefix
		{"/api", nil, ""},                            //
		{"/q?x=1", nil, "v/3"},                       // prefix sees the query
		{"/anything", []string{"x-any", "1"}, "v/4"}, // no path matcher: any path
		{"", []string{"x-any", "1"}, "v/4"},          // ... and no path at all
	} {
		if got := match(t, tb, httpReq("h", tc.path, tc.hdr...)); got != tc.want {
			t.Errorf("Match(%q) = %q; want %q", tc.path, got, tc.want)
		}
	}
	// RPC requests have no path: path matchers never hold for them.
	tb = build(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
		{"match":{"prefix":"/"},"route":{"cluster_name":"c"}},
		{"match":{"regex":".*"},"route":{"cluster_name":"c"}}]}]}`)
	if got := match(t, tb, rpcReq("service", "s")); got != "" {
		t.Errorf("RPC request matched %q; want no route", got)
	}
}

func TestHeaderMatchers(t *testing.T) {
	t.Parallel()
	tb := build(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
		{"match":{"headers":[{"name":"x-exact","value":"a.b","regex":false}]},"route":{"cluster_name":"c"}},
		{"match":{"headers":[{"name":"x-re","value":"a.b"}]},"route":{"cluster_name":"c"}},
		{"match":{"headers":[{"name":"x-re-explicit","value":"v[0-9]","regex":true}]},"route":{"cluster_name":"c"}},
		{"match":{"headers":[{"name":":method","value":"POST","regex":false},{"name":":path","value":"/p.*"}]},"route":{"cluster_name":"c"}},
		{"match":{"headers":[{"name":":authority","value":".*\\.org"}]},"route":{"cluster_name":"c"}},
		{"match":{"prefix":"/both","headers":[{"name":"a","value":"1","regex":false},{"name":"b","value":"2","regex":false}]},"route":{"cluster_name":"c"}}]}]}`)
	for _, tc := range []struct {
		name string
		r    *req
		want string
	}{
		{"exact", httpReq("h", "/", "x-exact", "a.b"), "v/0"},
		{"exact is literal", httpReq("h", "/", "x-exact", "axb"), ""},
		{"exact is case-sensitive", httpReq("h", "/", "x-exact", "A.B"), ""},
		{"regex by default", httpReq("h", "/", "x-re", "axb"), "v/1"},
		{"regex matches whole value", httpReq("h", "/", "x-re", "axbc"), ""},
		{"explicit regex", httpReq("h", "/", "x-re-explicit", "v7"), "v/2"},
		{"absent header", httpReq("h", "/"), ""},
		{"pseudo headers", &req{host: "h", path: "/p1", method: "POST"}, "v/3"},
		{"pseudo method mismatch", &req{host: "h", path: "/p1", method: "GET"}, ""},
		{":authority", &req{host: "x.org", path: "/"}, "v/4"},
		{"all headers", httpReq("h", "/both", "a", "1", "b", "2"), "v/5"},
		{"one header missing", httpReq("h", "/both", "a", "1"), ""},
		{"path and headers", httpReq("h", "/other", "a", "1", "b", "2"), ""},
	} {
		if got := match(t, tb, tc.r); got != tc.want {
			t.Errorf("%s: Match = %q; want %q", tc.name, got, tc.want)
		}
	}
}

func TestVariableMatchers(t *testing.T) {
	t.Parallel()
	tb := build(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
		{"match":{"variables":[{"name":"x-mosn-method","value":"GET"},{"name":"zone","regex":"gz[0-9]+"}]},"route":{"cluster_name":"c"}},
		{"match":{"variables":[{"name":"present"}]},"route":{"cluster_name":"c"}}]}]}`)
	v := func(kv ...string) *req {
		r := httpReq("h", "/")
		r.vars = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			r.vars[kv[i]] = kv[i+1]
		}
		return r
	}
	for _, tc := range []struct {
		r    *req
		want string
	}{
		{v("x-mosn-method", "GET", "zone", "gz01"), "v/0"},
		{v("x-mosn-method", "GET", "zone", "gz"), ""},
		{v("x-mosn-method", "POST", "zone", "gz01"), ""},
		{v("zone", "gz01"), ""},
		{v("present", ""), "v/1"},
		{v(), ""},
	} {
		if got := match(t, tb, tc.r); got != tc.want {
			t.Errorf("Match(vars %v) = %q; want %q", tc.r.vars, got, tc.want)
		}
	}
}

func TestFirstMatchWins(t *testing.T) {
	t.Parallel()
	tb := build(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
		{"match":{"prefix":"/"},"route":{"cluster_name":"first"}},
		{"match":{"path":"/a"},"route":{"cluster_name":"second"}}]},
		{"name":"empty","domains":["empty.com"]}]}`)
	if got := match(t, tb, httpReq("h", "/a")); got != "v/0" {
		t.Errorf("Match = %q; want v/0", got)
	}
	// The chosen virtual host has no route: no fallback to "*" (Envoy).
	if got := match(t, tb, httpReq("empty.com", "/a")); got != "" {
		t.Errorf("Match(empty.com) = %q; want no route", got)
	}
	var nilTable *router.Table
	if _, ok := nilTable.Match(httpReq("h", "/")); ok {
		t.Errorf("nil table matched")
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	vh := func(routes string) string {
		return `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[` + routes + `]}]}`
	}
	for _, tc := range []struct{ name, cfg, want string }{
		{"no domains", `{"router_config_name":"r","virtual_hosts":[{"name":"v"}]}`, "virtual_hosts[0].domains: empty"},
		{"empty domain", `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":[""]}]}`, "empty domain"},
		{"duplicate domain", `{"router_config_name":"r","virtual_hosts":[{"name":"a","domains":["x.com"]},{"name":"b","domains":["X.com"]}]}`, "virtual_hosts[1].domains[0]: domain \"X.com\" is also in virtual_hosts[0].domains[0]"},
		{"inner wildcard", `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["a.*.com"]}]}`, "wildcard is allowed only"},
		{"double wildcard", `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*.a.*"]}]}`, "wildcard is allowed only"},
		{"no action", vh(`{"match":{"prefix":"/"}}`), "routers[0]: set exactly one of route"},
		{"two actions", vh(`{"route":{"cluster_name":"c"},"direct_response":{"status":200}}`), "set exactly one of route"},
		{"two path matchers", vh(`{"match":{"prefix":"/","path":"/a"},"route":{"cluster_name":"c"}}`), "set only one of prefix, path, regex"},
		{"bad path regex", vh(`{"match":{"regex":"("},"route":{"cluster_name":"c"}}`), "match.regex: invalid regex"},
		{"unbalanced regex", vh(`{"match":{"regex":"a)|(b"},"route":{"cluster_name":"c"}}`), "invalid regex"},
		{"bad header regex", vh(`{"match":{"headers":[{"name":"h","value":"["}]},"route":{"cluster_name":"c"}}`), "match.headers[0].value: invalid regex"},
		{"header name", vh(`{"match":{"headers":[{"value":"x"}]},"route":{"cluster_name":"c"}}`), "match.headers[0].name: missing"},
		{"bad variable regex", vh(`{"match":{"variables":[{"name":"v","regex":"*"}]},"route":{"cluster_name":"c"}}`), "match.variables[0].regex"},
		{"no cluster", vh(`{"route":{}}`), "set exactly one of cluster_name, cluster_header, weighted_clusters"},
		{"two clusters", vh(`{"route":{"cluster_name":"a","cluster_header":"h"}}`), "set exactly one of cluster_name"},
		{"zero weights", vh(`{"route":{"weighted_clusters":[{"cluster":{"name":"a","weight":0}}]}}`), "weights sum to 0"},
		{"weighted name", vh(`{"route":{"weighted_clusters":[{"cluster":{"weight":1}}]}}`), "weighted_clusters[0].cluster.name: missing"},
		{"two rewrites", vh(`{"route":{"cluster_name":"a","prefix_rewrite":"/","regex_rewrite":{"pattern":{"regex":"a"}}}}`), "set only one of prefix_rewrite, regex_rewrite"},
		{"bad rewrite regex", vh(`{"route":{"cluster_name":"a","regex_rewrite":{"pattern":{"regex":"("}}}}`), "regex_rewrite.pattern.regex: invalid"},
		{"empty rewrite regex", vh(`{"route":{"cluster_name":"a","regex_rewrite":{"pattern":{}}}}`), "regex_rewrite.pattern.regex: missing"},
		{"two host rewrites", vh(`{"route":{"cluster_name":"a","host_rewrite":"h","auto_host_rewrite":true}}`), "set only one of host_rewrite"},
		{"empty hash policy", vh(`{"route":{"cluster_name":"a","hash_policy":[{}]}}`), "hash_policy[0]: set exactly one"},
		{"hash header key", vh(`{"route":{"cluster_name":"a","hash_policy":[{"header":{}}]}}`), "hash_policy[0]: missing"},
		{"direct status", vh(`{"direct_response":{"status":99}}`), "direct_response.status: 99 is outside 100-599"},
		{"redirect code", vh(`{"redirect":{"response_code":200}}`), "redirect.response_code: 200"},
		{"redirect scheme", vh(`{"redirect":{"scheme_redirect":"ftp"}}`), "redirect.scheme_redirect"},
		{"mirror cluster", vh(`{"route":{"cluster_name":"a"},"request_mirror_policies":{"percent":5}}`), "request_mirror_policies.cluster: missing"},
		{"header to add", vh(`{"route":{"cluster_name":"a","request_headers_to_add":[{"header":{"value":"v"}}]}}`), "request_headers_to_add: an entry has no header.key"},
		{"router header to add", `{"router_config_name":"r","response_headers_to_add":[{}],"virtual_hosts":[{"name":"v","domains":["*"],"routers":[{"route":{"cluster_name":"a"}}]}]}`, `router "r": router: response_headers_to_add: an entry has no header.key`},
		{"vhost header to add", `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"request_headers_to_add":[{"header":{}}]}]}`, `router "r": virtual_hosts[0]: request_headers_to_add: an entry has no header.key`},
	} {
		_, err := router.New(parse(t, tc.cfg))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), `router "r": `) {
			t.Errorf("%s: New error = %v; want one containing %q", tc.name, err, tc.want)
		}
	}
}

// ".*", ".+" and literal patterns skip the regex engine; they must still mean what the
// regex means as a full match.
func TestRegexShortcutsAgreeWithRegex(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern string
		yes     []string
		no      []string
	}{
		{`.*`, []string{"", "abc", "a b"}, []string{"a\nb"}},
		{`(?s).*`, []string{"", "a\nb"}, nil},
		{`.+`, []string{"a", "abc"}, []string{"", "\n"}},
		{`.*?`, []string{"", "x"}, []string{"\n"}},
		{`abc`, []string{"abc"}, []string{"ab", "abcd", "ABC", "xabc"}},
		{`com\.foo\.Echo`, []string{"com.foo.Echo"}, []string{"comxfooxEcho"}},
		{`(?i)abc`, []string{"abc", "ABC"}, []string{"abcd"}},
		{``, []string{""}, []string{"a"}},
		{`a|b`, []string{"a", "b"}, []string{"ab", ""}},
		{`^a.*$`, []string{"a", "abc"}, []string{"ba"}},
		{`x*`, []string{"", "xx"}, []string{"y"}},
	} {
		js, _ := json.Marshal(tc.pattern)
		tb := build(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
			{"match":{"headers":[{"name":"h","value":`+string(js)+`}],"variables":[{"name":"v","regex":`+string(js)+`}]},"route":{"cluster_name":"c"}}]}]}`)
		for _, v := range append(tc.yes, tc.no...) {
			want := slices.Contains(tc.yes, v)
			r := rpcReq("h", v)
			r.vars = map[string]string{"v": v}
			if _, got := tb.Match(r); got != want {
				t.Errorf("pattern %q value %q: matched %v; want %v", tc.pattern, v, got, want)
			}
		}
	}
}

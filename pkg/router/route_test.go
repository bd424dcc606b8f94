package router_test

import (
	"strings"
	"testing"
	"time"
)

func TestClusterFor(t *testing.T) {
	t.Parallel()
	tb := build(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
		{"match":{"path":"/name"},"route":{"cluster_name":"named"}},
		{"match":{"path":"/header"},"route":{"cluster_header":"x-cluster"}},
		{"match":{"path":"/weighted"},"route":{"weighted_clusters":[
			{"cluster":{"name":"a","weight":1}},{"cluster":{"name":"off","weight":0}},
			{"cluster":{"name":"b","weight":2}},{"cluster":{"name":"c","weight":7}}]}},
		{"match":{"path":"/direct"},"direct_response":{"status":200}}]}]}`)
	cluster := func(r *req, rnd uint64) string {
		t.Helper()
		rt, ok := tb.Match(r)
		if !ok {
			t.Fatalf("no route for %q", r.path)
		}
		return rt.ClusterFor(r, rnd)
	}
	if got := cluster(httpReq("h", "/name"), 0); got != "named" {
		t.Errorf("cluster_name: %q", got)
	}
	if got := cluster(httpReq("h", "/header", "x-cluster", "from-header"), 0); got != "from-header" {
		t.Errorf("cluster_header: %q", got)
	}
	if got := cluster(httpReq("h", "/header"), 0); got != "" {
		t.Errorf("cluster_header absent: %q; want \"\"", got)
	}
	if got := cluster(httpReq("h", "/direct"), 0); got != "" {
		t.Errorf("direct_response: %q; want \"\"", got)
	}
	// rnd % 10 picks the arm: [0,1) a, [1,3) b, [3,10) c; the zero-weight arm never.
	counts := map[string]int{}
	r := httpReq("h", "/weighted")
	for rnd := range uint64(10000) {
		counts[cluster(r, rnd)]++
	}
	if counts["a"] != 1000 || counts["b"] != 2000 || counts["c"] != 7000 || len(counts) != 3 {
		t.Errorf("weighted distribution = %v; want a:1000 b:2000 c:7000", counts)
	}
	for rnd, want := range map[uint64]string{0: "a", 1: "b", 2: "b", 3: "c", 9: "c", 10: "a", 1<<64 - 1: "c"} {
		if got := cluster(r, rnd); got != want {
			t.Errorf("weighted rnd %d = %q; want %q", rnd, got, want)
		}
	}
}

func TestRewritePath(t *testing.T) {
	t.Parallel()
	tb := build(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
		{"match":{"prefix":"/old/"},"route":{"cluster_name":"c","prefix_rewrite":"/new/"}},
		{"match":{"prefix":"/strip"},"route":{"cluster_name":"c","prefix_rewrite":"/"}},
		{"match":{"path":"/exact"},"route":{"cluster_name":"c","prefix_rewrite":"/replaced"}},
		{"match":{"regex":"/re/.*"},"route":{"cluster_name":"c","prefix_rewrite":"/whole"}},
		{"match":{"prefix":"/go/"},"route":{"cluster_name":"c","regex_rewrite":{"pattern":{"regex":"^/go/([a-z]+)/(\\d+)$"},"substitution":"/$2/${1}"}}},
		{"match":{"prefix":"/envoy/"},"route":{"cluster_name":"c","regex_rewrite":{"pattern":{"regex":"^/envoy/([a-z]+)$"},"substitution":"/e/\\1"}}},
		{"match":{"prefix":"/all/"},"route":{"cluster_name":"c","regex_rewrite":{"pattern":{"regex":"o"},"substitution":"0"}}},
		{"match":{"headers":[{"name":"x-any","value":"1","regex":false}]},"route":{"cluster_name":"c","prefix_rewrite":"/pre"}},
		{"match":{"prefix":"/"},"route":{"cluster_name":"c"}}]}]}`)
	for _, tc := range []struct {
		path, want string
		hdr        []string
	}{
		{"/old/a/b?x=1", "/new/a/b?x=1", nil},
		{"/strip/me", "//me", nil},
		{"/exact?q=1", "/replaced?q=1", nil},
		{"/re/abc?q", "/whole?q", nil},
		{"/go/users/42", "/42/users", nil},
		{"/go/users/42?page=2", "/42/users?page=2", nil}, // query kept out of the regex
		{"/go/USERS/42", "/go/USERS/42", nil},            // no match: unchanged
		{"/envoy/abc", "/e/abc", nil},                    // Envoy's \1
		{"/all/foo/boo", "/all/f00/b00", nil},            // every match replaced
		{"/x", "/pre/x", []string{"x-any", "1"}},         // no path matcher: empty prefix
		{"/kept?q", "/kept?q", nil},
	} {
		r := httpReq("h", tc.path, tc.hdr...)
		rt, ok := tb.Match(r)
		if !ok {
			t.Fatalf("no route for %q", tc.path)
		}
		if got := rt.RewritePath(tc.path); got != tc.want {
			t.Errorf("RewritePath(%q) via %s = %q; want %q", tc.path, rt.Name(), got, tc.want)
		}
	}
}

func TestHostRewrite(t *testing.T) {
	t.Parallel()
	tb := build(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
		{"match":{"path":"/lit"},"route":{"cluster_name":"c","host_rewrite":"up.internal"}},
		{"match":{"path":"/auto"},"route":{"cluster_name":"c","auto_host_rewrite":true}},
		{"match":{"path":"/none"},"route":{"cluster_name":"c"}}]}]}`)
	for _, tc := range []struct {
		path, host string
		auto       bool
	}{{"/lit", "up.internal", false}, {"/auto", "", true}, {"/none", "", false}} {
		rt, _ := tb.Match(httpReq("h", tc.path))
		if rt.HostRewrite() != tc.host || rt.AutoHostRewrite() != tc.auto {
			t.Errorf("%s: HostRewrite %q auto %v; want %q %v", tc.path, rt.HostRewrite(), rt.AutoHostRewrite(), tc.host, tc.auto)
		}
	}
}

// Envoy's order: route level (entry, then action), virtual host, router; each level removes
// and then adds, so the router level has the last word.
func TestHeaderMutationOrder(t *testing.T) {
	t.Parallel()
	tb := build(t, `{"router_config_name":"r",
		"request_headers_to_add":[{"header":{"key":"x-level","value":"router"},"append":false}],
		"request_headers_to_remove":["x-router-del"],
		"response_headers_to_add":[{"header":{"key":"x-resp","value":"router"}}],
		"response_headers_to_remove":["server"],
		"virtual_hosts":[{"name":"v","domains":["*"],
			"request_headers_to_add":[{"header":{"key":"x-level","value":"vhost"},"append":false},{"header":{"key":"x-multi","value":"v"}}],
			"request_headers_to_remove":["x-vhost-del"],
			"response_headers_to_add":[{"header":{"key":"x-resp","value":"vhost"},"append":true}],
			"routers":[{"match":{"prefix":"/"},
				"request_headers_to_add":[{"header":{"key":"x-level","value":"route"},"append":false},{"header":{"key":"x-multi","value":"r"}}],
				"request_headers_to_remove":["x-route-del"],
				"response_headers_to_remove":["x-resp-del"],
				"route":{"cluster_name":"c",
					"request_headers_to_add":[{"header":{"key":"x-action","value":"a"}}],
					"request_headers_to_remove":["x-action-del"]}}]}]}`)
	rt, _ := tb.Match(httpReq("h", "/"))
	var req, resp recorder
	rt.ApplyRequestHeaders(&req)
	rt.ApplyResponseHeaders(&resp)
	wantReq := "del x-route-del, del x-action-del, set x-level=route, add x-multi=r, add x-action=a, " +
		"del x-vhost-del, set x-level=vhost, add x-multi=v, " +
		"del x-router-del, set x-level=router"
	if got := req.String(); got != wantReq {
		t.Errorf("request ops:\n got %s\nwant %s", got, wantReq)
	}
	wantResp := "del x-resp-del, add x-resp=vhost, del server, add x-resp=router"
	if got := resp.String(); got != wantResp {
		t.Errorf("response ops:\n got %s\nwant %s", got, wantResp)
	}
	var none recorder
	rt, _ = build(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[{"route":{"cluster_name":"c"}}]}]}`).
		Match(httpReq("h", "/"))
	rt.ApplyRequestHeaders(&none)
	rt.ApplyResponseHeaders(&none)
	if len(none.ops) != 0 {
		t.Errorf("route without mutations: ops %v", none.ops)
	}
}

func TestDirectResponseAndRedirect(t *testing.T) {
	t.Parallel()
	tb := build(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
		{"match":{"path":"/direct"},"direct_response":{"status":503,"body":"down"}},
		{"match":{"path":"/moved"},"redirect":{"path_redirect":"/new","host_redirect":"other.com"}},
		{"match":{"path":"/secure"},"redirect":{"scheme_redirect":"HTTPS","response_code":308}},
		{"match":{"path":"/q"},"redirect":{"path_redirect":"/n?own=1","response_code":302}},
		{"match":{"prefix":"/"},"route":{"cluster_name":"c"}}]}]}`)
	rt, _ := tb.Match(httpReq("h", "/direct"))
	if d, ok := rt.DirectResponse(); !ok || d.Status != 503 || d.Body != "down" {
		t.Errorf("DirectResponse = %+v, %v", d, ok)
	}
	if _, ok := rt.Redirect(); ok || rt.ClusterFor(httpReq("h", "/direct"), 0) != "" {
		t.Errorf("direct response route also redirects or has a cluster")
	}
	for _, tc := range []struct {
		scheme, host, path string
		code               int
		want               string
	}{
		{"http", "h.com", "/moved?x=1", 301, "http://other.com/new?x=1"},
		{"http", "h.com:80", "/secure?a", 308, "https://h.com/secure?a"},
		{"http", "h.com:8080", "/secure", 308, "https://h.com:8080/secure"},
		{"https", "h.com", "/secure", 308, "https://h.com/secure"},
		{"http", "h.com", "/q?x=1", 302, "http://h.com/n?own=1"},
	} {
		rt, _ := tb.Match(httpReq(tc.host, tc.path))
		rd, ok := rt.Redirect()
		if !ok || rd.Code != tc.code {
			t.Fatalf("%s: Redirect = %+v, %v; want code %d", tc.path, rd, ok, tc.code)
		}
		if got := rd.Location(tc.scheme, tc.host, tc.path); got != tc.want {
			t.Errorf("Location(%s, %s, %s) = %q; want %q", tc.scheme, tc.host, tc.path, got, tc.want)
		}
	}
	rt, _ = tb.Match(httpReq("h", "/other"))
	if _, ok := rt.DirectResponse(); ok {
		t.Errorf("forwarding route has a direct response")
	}
	if _, ok := rt.Redirect(); ok {
		t.Errorf("forwarding route has a redirect")
	}
}

func TestTimeoutMirrorAndPerFilterConfig(t *testing.T) {
	t.Parallel()
	tb := build(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
		{"match":{"path":"/default"},"route":{"cluster_name":"c","upstream_protocol":"Http2"}},
		{"match":{"path":"/set"},"route":{"cluster_name":"c","timeout":"1.5s"},
		 "request_mirror_policies":{"cluster":"shadow","percent":30},
		 "per_filter_config":{"fault_inject":{"delay":"1s"}}},
		{"match":{"path":"/none"},"route":{"cluster_name":"c","timeout":"0s"}}]}]}`)
	for path, want := range map[string]time.Duration{"/default": 15 * time.Second, "/set": 1500 * time.Millisecond, "/none": 0} {
		rt, _ := tb.Match(httpReq("h", path))
		if rt.Timeout() != want {
			t.Errorf("%s: Timeout = %v; want %v", path, rt.Timeout(), want)
		}
	}
	rt, _ := tb.Match(httpReq("h", "/default"))
	if rt.UpstreamProtocol() != "Http2" {
		t.Errorf("UpstreamProtocol = %q", rt.UpstreamProtocol())
	}
	if _, ok := rt.Mirror(); ok {
		t.Errorf("unexpected mirror")
	}
	rt, _ = tb.Match(httpReq("h", "/set"))
	m, ok := rt.Mirror()
	if !ok || m.Cluster != "shadow" || m.Percent != 30 {
		t.Fatalf("Mirror = %+v, %v", m, ok)
	}
	hits := 0
	for rnd := range uint64(1000) {
		if m.Hit(rnd) {
			hits++
		}
	}
	if hits != 300 {
		t.Errorf("mirror hits = %d of 1000; want 300", hits)
	}
	if c, ok := rt.PerFilterConfig("fault_inject"); !ok || !strings.Contains(string(c), `"1s"`) {
		t.Errorf("PerFilterConfig = %s, %v", c, ok)
	}
	if _, ok := rt.PerFilterConfig("other"); ok {
		t.Errorf("PerFilterConfig(other) found")
	}
	if rt.VirtualHost() != "v" || rt.Name() != "v/1" {
		t.Errorf("VirtualHost, Name = %q, %q", rt.VirtualHost(), rt.Name())
	}
}

package router_test

import (
	"net/netip"
	"testing"
)

// Not parallel: AllocsPerRun needs the process to itself.
func TestHotPathsDoNotAllocate(t *testing.T) {
	tb := build(t, `{"router_config_name":"r","virtual_hosts":[
		{"name":"a","domains":["a.com","*.b.com","c.*"],"routers":[
			{"match":{"regex":"/re/[0-9]+"},"route":{"cluster_name":"c"}},
			{"match":{"prefix":"/","headers":[{"name":"x-v","value":"v[0-9]"}],"variables":[{"name":"k","regex":"x+"}]},
			 "route":{"weighted_clusters":[{"cluster":{"name":"w1","weight":1}},{"cluster":{"name":"w2","weight":1}}],
			          "hash_policy":[{"header":{"key":"x-v"}},{"cookie":{"name":"sid"}},{"http_query_parameter":{"name":"u"}},{"source_ip":{}}]}},
			{"match":{"prefix":"/"},"route":{"cluster_name":"plain"}}]},
		{"name":"any","domains":["*"],"routers":[{"match":{"headers":[{"name":"service","value":".*"}]},"route":{"cluster_name":"rpc"}}]}]}`)
	r := httpReq("X.B.COM:8080", "/p?u=7", "x-v", "v1", "cookie", "a=1; sid=abc")
	r.vars = map[string]string{"k": "xx"}
	rpc := rpcReq("service", "com.foo.Echo")
	src := netip.MustParseAddr("10.0.0.1")
	rt, ok := tb.Match(r)
	if !ok || rt.Name() != "a/1" {
		t.Fatalf("Match = %v, %v; want a/1", rt, ok)
	}
	for name, f := range map[string]func(){
		"Match http":  func() { tb.Match(r) },
		"Match rpc":   func() { tb.Match(rpc) },
		"ClusterFor":  func() { rt.ClusterFor(r, 12345) },
		"HashKey":     func() { rt.HashKey(r, src) },
		"RewritePath": func() { rt.RewritePath("/kept?q") },
	} {
		if n := testing.AllocsPerRun(200, f); n != 0 {
			t.Errorf("%s: %v allocs per run; want 0", name, n)
		}
	}
}

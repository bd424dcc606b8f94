package router_test

import (
	"hash/fnv"
	"net/netip"
	"testing"
)

func fnv64a(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

func fnv64aBytes(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

func rotl1(x uint64) uint64 { return x<<1 | x>>63 }

func TestHashKey(t *testing.T) {
	t.Parallel()
	tb := build(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
		{"match":{"path":"/header"},"route":{"cluster_name":"c","hash_policy":[{"header":{"key":"x-user"}}]}},
		{"match":{"path":"/cookie"},"route":{"cluster_name":"c","hash_policy":[{"cookie":{"name":"sid"}}]}},
		{"match":{"path":"/query"},"route":{"cluster_name":"c","hash_policy":[{"http_query_parameter":{"name":"u"}}]}},
		{"match":{"path":"/ip"},"route":{"cluster_name":"c","hash_policy":[{"source_ip":{}}]}},
		{"match":{"path":"/combo"},"route":{"cluster_name":"c","hash_policy":[{"header":{"key":"x-user"}},{"source_ip":{}},{"cookie":{"name":"sid"}}]}},
		{"match":{"path":"/method"},"route":{"cluster_name":"c","hash_policy":[{"header":{"key":":method"}}]}},
		{"match":{"prefix":"/"},"route":{"cluster_name":"c"}}]}]}`)
	v4 := netip.MustParseAddr("10.1.2.3")
	v4in6 := netip.MustParseAddr("::ffff:10.1.2.3")
	ip16 := v4.As16()
	for _, tc := range []struct {
		name string
		r    *req
		src  netip.Addr
		want uint64
		ok   bool
	}{
		{"header", httpReq("h", "/header", "x-user", "alice"), v4, fnv64a("alice"), true},
		{"header absent", httpReq("h", "/header"), v4, 0, false},
		{"cookie", httpReq("h", "/cookie", "cookie", `a=1; sid="s1"; b=2`), v4, fnv64a("s1"), true},
		{"cookie name is exact", httpReq("h", "/cookie", "cookie", "sidx=1; xsid=2"), v4, 0, false},
		{"no cookie header", httpReq("h", "/cookie"), v4, 0, false},
		{"query", httpReq("h", "/query?a=1&u=bob&u=eve"), v4, fnv64a("bob"), true},
		{"query without value", httpReq("h", "/query?u"), v4, fnv64a(""), true},
		{"query absent", httpReq("h", "/query?x=u"), v4, 0, false},
		{"no query", httpReq("h", "/query"), v4, 0, false},
		{"source ip", httpReq("h", "/ip"), v4, fnv64aBytes(ip16[:]), true},
		{"v4-mapped v6 hashes as v4", httpReq("h", "/ip"), v4in6, fnv64aBytes(ip16[:]), true},
		{"no source ip", httpReq("h", "/ip"), netip.Addr{}, 0, false},
		{"combined", httpReq("h", "/combo", "x-user", "alice", "cookie", "sid=s1"), v4,
			rotl1(rotl1(fnv64a("alice"))^fnv64aBytes(ip16[:])) ^ fnv64a("s1"), true},
		{"combined skips absent", httpReq("h", "/combo", "cookie", "sid=s1"), v4,
			rotl1(fnv64aBytes(ip16[:])) ^ fnv64a("s1"), true},
		{"pseudo header", &req{host: "h", path: "/method", method: "PUT"}, v4, fnv64a("PUT"), true},
		{"no policy", httpReq("h", "/other", "x-user", "alice"), v4, 0, false},
	} {
		rt, ok := tb.Match(tc.r)
		if !ok {
			t.Fatalf("%s: no route", tc.name)
		}
		got, gotOK := rt.HashKey(tc.r, tc.src)
		if got != tc.want || gotOK != tc.ok {
			t.Errorf("%s: HashKey = %#x, %v; want %#x, %v", tc.name, got, gotOK, tc.want, tc.ok)
		}
	}
}

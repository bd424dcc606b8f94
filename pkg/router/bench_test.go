package router_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/router"
)

// benchTable: 100 virtual hosts (exact domains, the last one "*") of 20 routes each,
// alternating prefix routes and regex header routes.
func benchTable(b *testing.B) *router.Table {
	var vhs []string
	for v := range 100 {
		domain := fmt.Sprintf("%q", fmt.Sprintf("svc%d.example.com", v))
		if v == 99 {
			domain = `"*"`
		}
		var routes []string
		for r := range 20 {
			if r%2 == 0 {
				routes = append(routes, fmt.Sprintf(`{"match":{"prefix":"/api/v%d/"},"route":{"cluster_name":"c%d_%d"}}`, r, v, r))
			} else {
				routes = append(routes, fmt.Sprintf(`{"match":{"headers":[{"name":"service","value":"com\\.example\\.Service%d(:1\\.0)?"}]},"route":{"cluster_name":"c%d_%d","hash_policy":[{"header":{"key":"x-user"}},{"source_ip":{}}]}}`, r, v, r))
			}
		}
		vhs = append(vhs, fmt.Sprintf(`{"name":"vh%d","domains":[%s],"routers":[%s]}`, v, domain, strings.Join(routes, ",")))
	}
	return build(b, `{"router_config_name":"bench","virtual_hosts":[`+strings.Join(vhs, ",")+`]}`)
}

func BenchmarkMatch(b *testing.B) {
	tb := benchTable(b)
	for _, bc := range []struct {
		name string
		r    *req
		want string
	}{
		{"http/first", httpReq("svc50.example.com", "/api/v0/users"), "vh50/0"},
		{"http/last-prefix", httpReq("SVC50.example.com:8080", "/api/v18/users"), "vh50/18"},
		{"http/regex-header", httpReq("svc50.example.com", "/other", "service", "com.example.Service19:1.0"), "vh50/19"},
		{"http/no-route", httpReq("svc50.example.com", "/none"), ""},
		{"rpc/regex-header", rpcReq("service", "com.example.Service19"), "vh99/19"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if got := match(b, tb, bc.r); got != bc.want {
				b.Fatalf("Match = %q; want %q", got, bc.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				tb.Match(bc.r)
			}
		})
	}
}

func BenchmarkHashKey(b *testing.B) {
	tb := benchTable(b)
	r := httpReq("svc1.example.com", "/", "service", "com.example.Service1", "x-user", "alice@example.com")
	rt, ok := tb.Match(r)
	if !ok {
		b.Fatal("no route")
	}
	src := netip.MustParseAddr("10.1.2.3")
	b.ReportAllocs()
	for b.Loop() {
		rt.HashKey(r, src)
	}
}

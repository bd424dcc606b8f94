package router_test

import (
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/router"
)

func TestParseGRPCTimeout(t *testing.T) {
	const maxD = time.Duration(1<<63 - 1)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1H", time.Hour, true},
		{"2M", 2 * time.Minute, true},
		{"3S", 3 * time.Second, true},
		{"250m", 250 * time.Millisecond, true},
		{"7u", 7 * time.Microsecond, true},
		{"99n", 99, true},
		{"0S", 0, true},
		{"00000001S", time.Second, true},
		{"99999999n", 99999999, true},
		{"99999999H", maxD, true}, // ~11,400 years: clamped, no overflow
		{"99999999M", 99999999 * time.Minute, true},
		{"9999999H", maxD, true},
		{"2562047H", 2562047 * time.Hour, true}, // the largest whole hours a Duration holds
		{"", 0, false},
		{"S", 0, false},
		{"1", 0, false},
		{"123456789S", 0, false}, // nine digits
		{"1s", 0, false},         // units are case-sensitive: s is not one
		{"1x", 0, false},
		{"-1S", 0, false},
		{"+1S", 0, false},
		{"1.5S", 0, false},
		{" 1S", 0, false},
		{"1S ", 0, false},
	} {
		got, ok := router.ParseGRPCTimeout(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseGRPCTimeout(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestRequestTimeout: Envoy's max_grpc_timeout and grpc_timeout_offset. A route without
// max_grpc_timeout ignores grpc-timeout; with it, a gRPC request is timed by its header
// less the offset, capped by the maximum (0: no cap); no header, or an invalid or zero
// one, leaves the maximum alone. Non-gRPC requests keep the route timeout.
func TestRequestTimeout(t *testing.T) {
	tb := build(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
		{"match":{"prefix":"/plain"},"route":{"cluster_name":"c","timeout":"3s"}},
		{"match":{"prefix":"/capped"},"route":{"cluster_name":"c","timeout":"3s","max_grpc_timeout":"10s"}},
		{"match":{"prefix":"/offset"},"route":{"cluster_name":"c","timeout":"3s","max_grpc_timeout":"10s","grpc_timeout_offset":"100ms"}},
		{"match":{"prefix":"/uncapped"},"route":{"cluster_name":"c","timeout":"3s","max_grpc_timeout":"0s"}}]}]}`)
	const grpc = "application/grpc"
	for _, tc := range []struct {
		path, ct, gt string
		want         time.Duration
	}{
		{"/plain", grpc, "1S", 3 * time.Second},
		{"/capped", grpc, "1S", time.Second},
		{"/capped", grpc, "250m", 250 * time.Millisecond},
		{"/capped", grpc, "99999999H", 10 * time.Second},
		{"/capped", grpc, "1M", 10 * time.Second},
		{"/capped", grpc, "", 10 * time.Second},    // no header
		{"/capped", grpc, "bad", 10 * time.Second}, // invalid: as none
		{"/capped", grpc, "0S", 10 * time.Second},  // zero: as none
		{"/capped", "application/grpc+proto", "2S", 2 * time.Second},
		{"/capped", "application/grpc; charset=utf-8", "2S", 2 * time.Second},
		{"/capped", "APPLICATION/GRPC", "2S", 2 * time.Second},
		{"/capped", "application/grpc-web", "2S", 3 * time.Second}, // not gRPC over HTTP/2
		{"/capped", "application/json", "2S", 3 * time.Second},
		{"/capped", "", "2S", 3 * time.Second},
		{"/offset", grpc, "1S", 900 * time.Millisecond},
		{"/offset", grpc, "50m", 50 * time.Millisecond}, // shorter than the offset: kept
		{"/offset", grpc, "", 10 * time.Second},
		{"/uncapped", grpc, "1H", time.Hour},
		{"/uncapped", grpc, "", 0}, // no deadline anywhere: none
		{"/uncapped", grpc, "99999999H", time.Duration(1<<63 - 1)},
	} {
		h := []string{}
		if tc.ct != "" {
			h = append(h, "content-type", tc.ct)
		}
		if tc.gt != "" {
			h = append(h, "grpc-timeout", tc.gt)
		}
		rt, ok := tb.Match(httpReq("a", tc.path, h...))
		if !ok {
			t.Fatalf("%s: no route", tc.path)
		}
		if got := rt.RequestTimeout(httpReq("a", tc.path, h...)); got != tc.want {
			t.Errorf("%s content-type %q grpc-timeout %q: %v; want %v", tc.path, tc.ct, tc.gt, got, tc.want)
		}
	}
}

func BenchmarkRequestTimeout(b *testing.B) {
	tb := build(b, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
		{"match":{"prefix":"/"},"route":{"cluster_name":"c","max_grpc_timeout":"10s"}}]}]}`)
	r := httpReq("a", "/svc/M", "content-type", "application/grpc", "grpc-timeout", "1500m")
	rt, _ := tb.Match(r)
	b.ReportAllocs()
	for b.Loop() {
		if rt.RequestTimeout(r) != 1500*time.Millisecond {
			b.Fatal("wrong timeout")
		}
	}
}

func TestFormatGRPCTimeout(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{time.Second, "1000m"},
		{1500 * time.Microsecond, "2m"}, // rounded up
		{1, "1m"},
		{99999999 * time.Millisecond, "99999999m"},
		{100000000 * time.Millisecond, "100000S"},
		{time.Duration(1<<63 - 1), "2562048H"},
	} {
		got := router.FormatGRPCTimeout(tc.in)
		if got != tc.want {
			t.Errorf("FormatGRPCTimeout(%v) = %q; want %q", tc.in, got, tc.want)
		}
		if d, ok := router.ParseGRPCTimeout(got); !ok || d < tc.in && d != time.Duration(1<<63-1) {
			t.Errorf("FormatGRPCTimeout(%v) = %q parses back to %v, %v", tc.in, got, d, ok)
		}
	}
}

package e2e

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mosnlite/mosnlite/test/framework"
)

// TestGRPCTimeouts: a route with max_grpc_timeout times a gRPC call by its client's
// deadline (grpc-timeout), less grpc_timeout_offset, capped by the maximum, and tells the
// upstream the deadline it keeps; a route without it keeps its own timeout whatever the
// header says (ROBUSTNESS 47). The proxy's local answers to gRPC calls are gRPC statuses:
// DEADLINE_EXCEEDED "upstream timeout", UNIMPLEMENTED "no route". The time an answer takes
// tells the proxy's deadline from the client's own.
func TestGRPCTimeouts(t *testing.T) {
	// The upstream's Slow method waits for its call to end and records the deadline it
	// was given (the grpc-timeout it received).
	var seen atomic.Int64
	slow := func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		var in []byte
		if err := dec(&in); err != nil {
			return nil, err
		}
		if dl, ok := ctx.Deadline(); ok {
			seen.Store(int64(time.Until(dl)))
		} else {
			seen.Store(-1)
		}
		select {
		case <-ctx.Done(): // as a gRPC server does when its deadline passes
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-time.After(15 * time.Second):
		}
		out := []byte("late")
		return &out, nil
	}
	desc := grpc.ServiceDesc{
		ServiceName: "mosnlite.test.Slow",
		HandlerType: (*echoServer)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Wait", Handler: slow}},
	}
	up := startRawGRPC(t, &desc)

	route := func(prefix string, action map[string]any) map[string]any {
		action["cluster_name"], action["prefix_rewrite"] = "up", "/mosnlite.test.Slow/"
		return map[string]any{"match": map[string]any{"prefix": prefix}, "route": action}
	}
	addr := framework.FreePort(t)
	framework.StartProxy(t, httpProxyConfig(addr, "Http2", "Http2", []any{
		route("/capped/", map[string]any{"timeout": "20s", "max_grpc_timeout": "300ms"}),
		route("/offset/", map[string]any{"timeout": "20s", "max_grpc_timeout": "10s", "grpc_timeout_offset": "2s"}),
		route("/plain/", map[string]any{"timeout": "1s"}),
	}, up))
	cc := dialRawGRPC(t, addr)

	for _, tc := range []struct {
		name, method string
		deadline     time.Duration // the client's
		code         codes.Code
		msg          string
		within       time.Duration // the answer comes before this
		upstreamMax  time.Duration // the deadline the upstream saw is at most this (0: unchecked)
	}{
		// The route's cap is shorter than the client's deadline: the proxy gives the upstream
		// 300 ms and answers at 300 ms. Whether the proxy's timer or the upstream's own
		// deadline answers first is a race (both DEADLINE_EXCEEDED, msg ""); either way it
		// is long before the client's 10 s.
		{"capped", "/capped/Wait", 10 * time.Second, codes.DeadlineExceeded, "", 3 * time.Second, 300 * time.Millisecond},
		// 3 s less the 2 s offset: 1 s, before the client's 3 s.
		{"offset", "/offset/Wait", 3 * time.Second, codes.DeadlineExceeded, "", 2800 * time.Millisecond, time.Second},
		// No max_grpc_timeout: the route's 1 s holds, the client's 10 s is not taken.
		{"route-timeout", "/plain/Wait", 10 * time.Second, codes.DeadlineExceeded, "upstream timeout", 5 * time.Second, 0},
		{"no-route", "/nowhere/Wait", 10 * time.Second, codes.Unimplemented, "no route", 5 * time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen.Store(0)
			ctx, cancel := context.WithTimeout(context.Background(), tc.deadline)
			defer cancel()
			in, out := []byte("x"), []byte(nil)
			start := time.Now()
			err := cc.Invoke(ctx, tc.method, &in, &out)
			took := time.Since(start)
			st, _ := status.FromError(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("after %v: %v; want %v %q", took, err, tc.code, tc.msg)
			}
			if took > tc.within {
				t.Fatalf("answered after %v; want within %v", took, tc.within)
			}
			if tc.upstreamMax > 0 {
				if s := time.Duration(seen.Load()); s <= 0 || s > tc.upstreamMax {
					t.Fatalf("the upstream's deadline was %v from its start; want at most %v", s, tc.upstreamMax)
				}
			}
		})
	}
}

package router_test

import (
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb/lbtest"
)

// TestRetryPolicyUnderClusterBudget drives a route's retry policy against a cluster as
// the L7 proxies do — a max_requests unit per request (the budget's deposit), then
// ShouldRetry with the cluster as the budget after every failed try, releasing the
// max_retries slot when the retried try ends — for 2000 requests at 1000 per second that
// all fail with 503. With no retry_budget configured the default one (20 % + 10/s over
// 10s) holds the retries to 0.2 × 2000 + 100 where num_retries 3 would make 6000; with
// the budget disabled, 6000 it is.
func TestRetryPolicyUnderClusterBudget(t *testing.T) {
	pol := retryRoute(t, `,"retry_policy":{"retry_on":true,"num_retries":3}`)
	const n = 2000
	for _, tc := range []struct {
		name string
		rb   *config.RetryBudget
		want int
	}{
		{"default budget", nil, n/5 + 100},
		{"disabled", &config.RetryBudget{Disabled: true}, 3 * n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := lbtest.NewClock(time.Unix(1e9, 0))
			m := cluster.NewManager(cluster.Options{Now: clock.Now})
			if err := m.Apply([]config.Cluster{{Name: "c", Hosts: []config.Host{{Address: "10.0.0.1:80"}}, RetryBudget: tc.rb}}); err != nil {
				t.Fatal(err)
			}
			cl, _ := m.Get("c")
			retries, refused := 0, 0
			for range n {
				if !cl.TryAcquire(cluster.MaxRequests) {
					t.Fatal("max_requests refused")
				}
				attempt := 0
				for ; pol.ShouldRetry(attempt, 503, false, cl); attempt++ {
					retries++
					cl.ReleaseRetry() // the retried try ended (503 again)
				}
				if attempt < pol.NumRetries() {
					refused++
				}
				cl.Release(cluster.MaxRequests)
				clock.Advance(time.Millisecond)
			}
			if retries != tc.want {
				t.Fatalf("%d retries for %d requests failing with 503; want %d", retries, n, tc.want)
			}
			if tc.rb == nil && refused == 0 {
				t.Fatal("no request was refused a retry")
			}
			// A 200 is not retried and draws nothing from the budget.
			if pol.ShouldRetry(0, 200, false, cl) {
				t.Fatal("a 200 was retried")
			}
			if inUse, _ := cl.Usage(cluster.MaxRetries); inUse != 0 {
				t.Fatalf("%d max_retries slots still held", inUse)
			}
		})
	}
}

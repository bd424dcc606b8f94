package proxy_test

import (
	"bufio"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestRetryBudgetCapsRetryStorm: an origin that answers 503 to everything, a route that
// retries 5xx up to 3 times, and N requests over 4 keep-alive connections. The cluster's
// retry budget (ratio 0.2, 2/s over 60s) keeps the retries within 0.2 × N + 120 where
// num_retries alone makes 3 × N, as the same run with the budget disabled shows; the
// refused retries are counted as upstream_overflow_total{breaker="retry_budget"}.
// max_retries is raised so that the breaker does not limit the concurrent retries.
func TestRetryBudgetCapsRetryStorm(t *testing.T) { bothPaths(t, retryBudgetCapsRetryStorm) }

func retryBudgetCapsRetryStorm(t *testing.T, p path) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	routes := `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/"},"route":{"cluster_name":"c","retry_policy":{"retry_on":true,"num_retries":3}}}]}]}`
	for _, tc := range []struct {
		name   string
		budget string
		n      int
	}{
		{"budget", `{"retry_ratio":0.2,"min_retries_per_second":2,"ttl":"60s"}`, 2000},
		{"disabled", `{"disabled":true}`, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := o.reqs.Load()
			e := p.startWith(t, routes, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+o.addr()+`"}],
			 "circuit_breakers":[{"max_retries":64}],"retry_budget":`+tc.budget+`}]`)
			const conns = 4
			start := time.Now()
			var wg sync.WaitGroup
			for range conns {
				c := dial(t, e.addr)
				wg.Go(func() {
					br := bufio.NewReader(c)
					for i := range tc.n / conns {
						if _, err := fmt.Fprintf(c, "GET /r%d HTTP/1.1\r\nHost: a\r\n\r\n", i); err != nil {
							t.Errorf("request %d: %v", i, err)
							return
						}
						resp, err := http.ReadResponse(br, nil)
						if err != nil {
							t.Errorf("response %d: %v", i, err)
							return
						}
						_ = resp.Body.Close()
						if resp.StatusCode != http.StatusServiceUnavailable {
							t.Errorf("response %d: status %d", i, resp.StatusCode)
							return
						}
					}
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			elapsed := time.Since(start)
			retries := int(counterValue(t, e.m.UpstreamRetries.WithLabelValues("c")))
			refused := counterValue(t, e.m.UpstreamOverflow.WithLabelValues("c", "retry_budget"))
			if tries := int(o.reqs.Load() - before); tries != tc.n+retries {
				t.Fatalf("the origin saw %d tries for %d requests and %d retries", tries, tc.n, retries)
			}
			t.Logf("%d requests, %d retries, %v refused by the budget, in %v", tc.n, retries, refused, elapsed)
			if tc.name == "disabled" {
				if retries != 3*tc.n || refused != 0 {
					t.Fatalf("budget disabled: %d retries (want %d), %v refused", retries, 3*tc.n, refused)
				}
				return
			}
			if elapsed > 50*time.Second {
				t.Fatalf("took %v: the run no longer fits in one 60s window", elapsed)
			}
			// All in one window: at most ratio × requests + reserve (a retry decided
			// concurrently with a request may miss that request's deposit: +conns).
			if limit := tc.n/5 + 2*60 + conns; retries > limit || retries < tc.n/5 {
				t.Fatalf("%d retries for %d requests; want %d..%d (%d without the budget)", retries, tc.n, tc.n/5, limit, 3*tc.n)
			}
			if refused == 0 {
				t.Fatal("no retry counted as refused by the budget")
			}
		})
	}
}

package router_test

import (
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/router"
)

// budget counts TryAcquireRetry calls and grants up to left of them.
type budget struct{ left, calls int }

func (b *budget) TryAcquireRetry() bool {
	b.calls++
	if b.left == 0 {
		return false
	}
	b.left--
	return true
}

func retryRoute(t *testing.T, policy string) *router.RetryPolicy {
	t.Helper()
	rt, ok := build(t, `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
		{"route":{"cluster_name":"c"`+policy+`}}]}]}`).Match(httpReq("h", "/"))
	if !ok {
		t.Fatal("no route")
	}
	return rt.Retry()
}

func TestRetryPolicyAbsentOrOff(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{``, `,"retry_policy":{"num_retries":3}`} {
		p := retryRoute(t, policy)
		if p != nil {
			t.Fatalf("policy %q: Retry() = %+v; want nil", policy, p)
		}
		if p.ShouldRetry(0, 0, false, nil) || p.NumRetries() != 0 || p.PerTryTimeout() != 0 || p.Retriable(503) {
			t.Errorf("nil policy allows a retry")
		}
	}
}

// num_retries is taken as configured: 1 means exactly one retry, 0 none (MOSN makes both 3).
func TestRetryExactNumRetries(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 2, 5} {
		p := retryRoute(t, `,"retry_policy":{"retry_on":true,"num_retries":`+string(rune('0'+n))+`,"retry_timeout":"250ms"}`)
		if p.NumRetries() != n || p.PerTryTimeout() != 250*time.Millisecond {
			t.Errorf("NumRetries, PerTryTimeout = %d, %v; want %d, 250ms", p.NumRetries(), p.PerTryTimeout(), n)
		}
		tries := 1
		for attempt := 0; p.ShouldRetry(attempt, 503, false, nil); attempt++ {
			tries++
			if tries > 10 {
				t.Fatal("unbounded retries")
			}
		}
		if tries != 1+n {
			t.Errorf("num_retries %d: %d tries; want %d", n, tries, 1+n)
		}
	}
}

func TestShouldRetry(t *testing.T) {
	t.Parallel()
	any5xx := retryRoute(t, `,"retry_policy":{"retry_on":true,"num_retries":2}`)
	listed := retryRoute(t, `,"retry_policy":{"retry_on":true,"num_retries":2,"retriable_status_codes":[429,503]}`)
	for _, tc := range []struct {
		name    string
		p       *router.RetryPolicy
		attempt int
		status  int
		started bool
		grant   int // budget slots; -1: nil budget
		want    bool
		asked   bool // budget consulted
	}{
		{"reset, no budget", any5xx, 0, 0, false, -1, true, false},
		{"reset, budget granted", any5xx, 0, 0, false, 1, true, true},
		{"budget refused (max_retries open)", any5xx, 0, 0, false, 0, false, true},
		{"5xx by default", any5xx, 1, 502, false, 1, true, true},
		{"4xx not retriable", any5xx, 0, 404, false, 1, false, false},
		{"2xx not retriable", any5xx, 0, 200, false, 1, false, false},
		{"response started", any5xx, 0, 503, true, 1, false, false},
		{"response started, no status", any5xx, 0, 0, true, 1, false, false},
		{"retries used up", any5xx, 2, 503, false, 1, false, false},
		{"negative attempt", any5xx, -1, 503, false, 1, false, false},
		{"listed code", listed, 0, 429, false, 1, true, true},
		{"listed code 503", listed, 1, 503, false, 1, true, true},
		{"unlisted 5xx", listed, 0, 500, false, 1, false, false},
		{"listed policy still retries resets", listed, 0, 0, false, 1, true, true},
		{"out of range status", listed, 0, 1000, false, 1, false, false},
	} {
		var b *budget
		var rb router.RetryBudget
		if tc.grant >= 0 {
			b = &budget{left: tc.grant}
			rb = b
		}
		if got := tc.p.ShouldRetry(tc.attempt, tc.status, tc.started, rb); got != tc.want {
			t.Errorf("%s: ShouldRetry = %v; want %v", tc.name, got, tc.want)
		}
		if b != nil && (b.calls > 0) != tc.asked {
			t.Errorf("%s: budget asked %d times; want asked=%v", tc.name, b.calls, tc.asked)
		}
	}
}

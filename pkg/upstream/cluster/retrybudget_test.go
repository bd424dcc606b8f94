package cluster_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb/lbtest"
)

// budgeted is a cluster "b" with retry_budget rb (nil: the default budget) and a
// max_retries breaker high enough not to matter unless a test sets one, on a manager
// whose clock the test moves.
func budgeted(t *testing.T, rb *config.RetryBudget, cbs ...config.CircuitBreaker) (*cluster.Manager, *cluster.Cluster, *lbtest.Clock, *metrics.Set) {
	t.Helper()
	clock := lbtest.NewClock(time.Unix(1e9, 0))
	m, mt := newManager(t, cluster.Options{Now: clock.Now})
	if cbs == nil {
		cbs = []config.CircuitBreaker{{MaxRetries: new(uint32(1 << 20)), MaxRequests: new(uint32(1 << 20))}}
	}
	cfg := withBreakers(simple("b", lb.RoundRobin, "10.0.0.1:80"), cbs...)
	cfg.RetryBudget = rb
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	return m, get(t, m, "b"), clock, mt
}

func ratio(x float64) *float64 { return &x }

// request sends one request as the L7 proxies do: a max_requests unit (the deposit),
// then up to retries retries of a try that always fails; it returns the retries allowed.
func request(c *cluster.Cluster, retries int) int {
	if !c.TryAcquire(cluster.MaxRequests) {
		panic("max_requests refused")
	}
	defer c.Release(cluster.MaxRequests)
	n := 0
	for ; n < retries && c.TryAcquireRetry(); n++ {
		c.ReleaseRetry()
	}
	return n
}

// retriesLeft takes retries until the budget refuses and returns how many it allowed.
func retriesLeft(c *cluster.Cluster) int {
	n := 0
	for ; n < 1<<20 && c.TryAcquireRetry(); n++ {
		c.ReleaseRetry()
	}
	return n
}

// With no retry_budget the default applies (20 %, 10/s over 10s): with no traffic the
// reserve alone, 100 retries, then a refusal counted as an overflow of "retry_budget".
func TestRetryBudgetDefault(t *testing.T) {
	_, c, _, mt := budgeted(t, nil)
	if n := retriesLeft(c); n != config.DefaultRetryBudgetMinPerSecond*10 {
		t.Fatalf("%d retries allowed with no requests; want the reserve of 100", n)
	}
	if v := value(mt.UpstreamOverflow.WithLabelValues("b", "retry_budget")); v != 1 {
		t.Fatalf("retry_budget overflows = %v; want 1", v)
	}
	if v := value(mt.UpstreamOverflow.WithLabelValues("b", "retries")); v != 0 {
		t.Fatalf("max_retries overflows = %v; want 0 (the budget refused)", v)
	}
	// 1000 requests lift it by 200.
	for range 1000 {
		request(c, 0)
	}
	if n := retriesLeft(c); n != 200 {
		t.Fatalf("%d retries allowed after 1000 requests; want 200", n)
	}
}

// 100 % failures at 1000 requests per second, each wanting 3 retries: over every window
// the retries stay within ratio × requests + the reserve, where without the budget there
// would be 3 per request; and the budget is used, not refused wholesale.
func TestRetryBudgetBoundsRetryStorm(t *testing.T) {
	const (
		rps     = 1000
		seconds = 60
		ratioV  = 0.2
		minPerS = 10
	)
	_, c, clock, mt := budgeted(t, &config.RetryBudget{RetryRatio: ratio(ratioV), MinRetriesPerSecond: new(uint32(minPerS)), TTL: dur(10 * time.Second)})
	var perSecond [seconds]int
	total := 0
	for s := range seconds {
		for range rps {
			n := request(c, 3)
			perSecond[s] += n
			total += n
			clock.Advance(time.Second / rps)
		}
		// The budget's window at the end of second s is seconds s-9..s (ten slots of 1s).
		w, d := 0, 0
		for i := max(0, s-9); i <= s; i++ {
			w += perSecond[i]
			d += rps
		}
		if limit := ratioV*float64(d) + minPerS*10; float64(w) > limit+1 {
			t.Fatalf("second %d: %d retries in the window of %d requests; the budget is %v", s, w, d, limit)
		}
	}
	n := rps * seconds
	// Each 10s window grants 0.2 × its requests + 100; over 60s the steady rate is
	// 0.2 × 1000 + 10 per second.
	if lo, hi := ratioV*float64(n), ratioV*float64(n)+minPerS*(seconds+10)+10; float64(total) < lo || float64(total) > hi {
		t.Fatalf("%d retries for %d requests; want %v..%v (3 per request without the budget)", total, n, lo, hi)
	}
	if v := value(mt.UpstreamOverflow.WithLabelValues("b", "retry_budget")); v == 0 || v > float64(3*n-total) {
		t.Fatalf("retry_budget overflows = %v for %d refused retries", v, 3*n-total)
	}
}

// The ratio bound is exact in one window: n requests allow ceil(ratio × n + reserve)
// retries, with ratio 0 leaving only the reserve and min 0 only the ratio.
func TestRetryBudgetRatioAndReserve(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rb     config.RetryBudget
		reqs   int
		allows int
	}{
		{"ratio and reserve", config.RetryBudget{RetryRatio: ratio(0.2), MinRetriesPerSecond: new(uint32(10)), TTL: dur(10 * time.Second)}, 1000, 300},
		{"ratio only", config.RetryBudget{RetryRatio: ratio(0.5), MinRetriesPerSecond: new(uint32(0))}, 999, 500},
		{"reserve only", config.RetryBudget{RetryRatio: ratio(0), MinRetriesPerSecond: new(uint32(7)), TTL: dur(2 * time.Second)}, 1000, 14},
		{"nothing", config.RetryBudget{RetryRatio: ratio(0), MinRetriesPerSecond: new(uint32(0))}, 1000, 0},
		{"ratio 1", config.RetryBudget{RetryRatio: ratio(1), MinRetriesPerSecond: new(uint32(0))}, 10, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, c, _, _ := budgeted(t, &tc.rb)
			for range tc.reqs {
				request(c, 0)
			}
			if n := retriesLeft(c); n != tc.allows {
				t.Fatalf("%d retries after %d requests; want %d", n, tc.reqs, tc.allows)
			}
		})
	}
}

// Requests and retries leave the window ttl after they were counted (to the slot, a tenth
// of ttl): then the budget is back to the reserve.
func TestRetryBudgetWindowExpires(t *testing.T) {
	_, c, clock, _ := budgeted(t, &config.RetryBudget{RetryRatio: ratio(0.5), MinRetriesPerSecond: new(uint32(1)), TTL: dur(10 * time.Second)})
	for range 100 {
		request(c, 0)
	}
	if n := retriesLeft(c); n != 60 { // 0.5 × 100 + 1 × 10
		t.Fatalf("%d retries; want 60", n)
	}
	clock.Advance(9*time.Second + 999*time.Millisecond) // the tenth slot: all still counted
	if n := retriesLeft(c); n != 0 {
		t.Fatalf("%d retries 9.999s later; the window still holds the 60", n)
	}
	clock.Advance(time.Millisecond) // the first slot leaves the window
	if n := retriesLeft(c); n != 10 {
		t.Fatalf("%d retries 10s later; want the reserve, 10", n)
	}
	// After an idle hour no stale count survives. Deposits count in the slot of the latest
	// clock reading, renewed every 16 deposits: up to 16 of the first ones may count in
	// an expired slot, which only shrinks the budget.
	clock.Advance(time.Hour)
	for range 100 {
		request(c, 0)
	}
	if n := retriesLeft(c); n < 10+(100-16)/2 || n > 10+100/2 {
		t.Fatalf("%d retries after 100 requests; want 0.5 × (84..100) + 10 = 52..60", n)
	}
	clock.Advance(10 * time.Second)
	if n := retriesLeft(c); n != 10 {
		t.Fatalf("%d retries 10s later; want the reserve, 10", n)
	}
}

// A retry needs both the budget and the max_retries breaker. A withdrawal the breaker
// refuses is refunded; a retry that ends gives back its breaker slot but not its
// withdrawal.
func TestRetryBudgetWithBreaker(t *testing.T) {
	_, c, _, mt := budgeted(t, &config.RetryBudget{RetryRatio: ratio(0), MinRetriesPerSecond: new(uint32(1)), TTL: dur(2 * time.Second)},
		config.CircuitBreaker{MaxRetries: new(uint32(1))})
	if !c.TryAcquireRetry() {
		t.Fatal("first retry refused")
	}
	if c.TryAcquireRetry() { // the breaker refuses: the withdrawal is refunded
		t.Fatal("second retry in flight allowed with max_retries 1")
	}
	c.ReleaseRetry()
	if !c.TryAcquireRetry() {
		t.Fatal("second retry refused: the breaker's refusal used up budget")
	}
	c.ReleaseRetry()
	if c.TryAcquireRetry() {
		t.Fatal("third retry allowed with a budget of 2")
	}
	if n, _ := c.Usage(cluster.MaxRetries); n != 0 {
		t.Fatalf("%d max_retries slots held after the budget refused", n)
	}
	for b, want := range map[string]float64{"retries": 1, "retry_budget": 1} {
		if v := value(mt.UpstreamOverflow.WithLabelValues("b", b)); v != want {
			t.Errorf("overflow %s = %v; want %v", b, v, want)
		}
	}
}

// The budget's counts survive cluster updates as the breakers' do, and a changed
// retry_budget takes effect at once: a new ratio applies to the window as it is, a new ttl
// restarts it, disabled lifts the budget (only max_retries remains) and a bad one is
// refused with its path.
func TestRetryBudgetSurvivesUpdate(t *testing.T) {
	rb := &config.RetryBudget{RetryRatio: ratio(0.1), MinRetriesPerSecond: new(uint32(0)), TTL: dur(10 * time.Second)}
	m, c, _, _ := budgeted(t, rb)
	cfg := withBreakers(simple("b", lb.RoundRobin, "10.0.0.1:80"), config.CircuitBreaker{MaxRetries: new(uint32(1 << 20))})
	apply := func(rb *config.RetryBudget, hosts ...string) {
		t.Helper()
		cfg.Hosts, cfg.RetryBudget = nil, rb
		for _, h := range hosts {
			cfg.Hosts = append(cfg.Hosts, config.Host{Address: h})
		}
		if err := m.Apply([]config.Cluster{cfg}); err != nil {
			t.Fatal(err)
		}
		if get(t, m, "b") != c {
			t.Fatal("the update replaced the cluster")
		}
	}
	for range 100 {
		request(c, 0)
	}
	if n := retriesLeft(c); n != 10 {
		t.Fatalf("%d retries; want 10", n)
	}
	apply(rb, "10.0.0.1:80", "10.0.0.2:80") // hosts change: the budget is still spent
	if n := retriesLeft(c); n != 0 {
		t.Fatalf("%d retries after a host update; the window was lost", n)
	}
	apply(&config.RetryBudget{RetryRatio: ratio(0.3), MinRetriesPerSecond: new(uint32(0)), TTL: dur(10 * time.Second)}, "10.0.0.1:80")
	if n := retriesLeft(c); n != 20 { // 0.3 × 100 - 10 taken
		t.Fatalf("%d retries after raising the ratio to 0.3; want 20", n)
	}
	apply(&config.RetryBudget{RetryRatio: ratio(0.3), MinRetriesPerSecond: new(uint32(0)), TTL: dur(5 * time.Second)}, "10.0.0.1:80")
	if n := retriesLeft(c); n != 0 {
		t.Fatalf("%d retries after a ttl change; the window restarts empty", n)
	}
	apply(&config.RetryBudget{Disabled: true}, "10.0.0.1:80")
	for range 50 {
		if !c.TryAcquireRetry() {
			t.Fatal("retry refused with the budget disabled")
		}
		c.ReleaseRetry()
	}
	apply(nil, "10.0.0.1:80") // back to the default: a fresh window with its reserve
	if n := retriesLeft(c); n != 100 {
		t.Fatalf("%d retries with the default budget back; want 100", n)
	}
	cfg.RetryBudget = &config.RetryBudget{RetryRatio: ratio(1.5)}
	if err := m.Apply([]config.Cluster{cfg}); err == nil || !strings.Contains(err.Error(), `cluster "b": retry_budget.retry_ratio: 1.5 is outside 0-1`) {
		t.Fatalf("Apply with retry_ratio 1.5 = %v", err)
	}
	cfg.RetryBudget = &config.RetryBudget{TTL: dur(time.Hour)}
	if err := m.Apply([]config.Cluster{cfg}); err == nil || !strings.Contains(err.Error(), "retry_budget.ttl: 1h0m0s is outside 1s-1m0s") {
		t.Fatalf("Apply with ttl 1h = %v", err)
	}
}

// Concurrent requests and retries (run under -race): the budget never grants more than
// ratio × requests + reserve, counting a retry decided before the last requests arrived.
func TestRetryBudgetConcurrent(t *testing.T) {
	_, c, clock, _ := budgeted(t, &config.RetryBudget{RetryRatio: ratio(0.25), MinRetriesPerSecond: new(uint32(5)), TTL: dur(10 * time.Second)})
	var granted, reqs atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				reqs.Add(1)
				granted.Add(int64(request(c, 3)))
				if g == 0 && i%200 == 0 {
					clock.Advance(500 * time.Millisecond) // slots turn over while others count
				}
			}
		})
	}
	wg.Wait()
	// All 16000 requests fall within 5s, inside one 10s window.
	if limit := 0.25*float64(reqs.Load()) + 5*10; float64(granted.Load()) > limit+1 {
		t.Fatalf("%d retries granted for %d requests; the budget is %v", granted.Load(), reqs.Load(), limit)
	}
	if granted.Load() < 3000 {
		t.Fatalf("only %d retries granted for %d requests", granted.Load(), reqs.Load())
	}
}

// Every path of a request and a retry runs without allocating: each case takes its path
// on every run (AllocsPerRun rounds down).
func TestRetryBudgetDoesNotAllocate(t *testing.T) {
	for _, tc := range []struct {
		name string
		rb   config.RetryBudget
		cbs  []config.CircuitBreaker
		f    func(c *cluster.Cluster)
	}{
		{"deposit", config.RetryBudget{}, nil, func(c *cluster.Cluster) {
			c.TryAcquire(cluster.MaxRequests)
			c.Release(cluster.MaxRequests)
		}},
		{"withdraw", config.RetryBudget{MinRetriesPerSecond: new(uint32(1 << 20))}, nil, func(c *cluster.Cluster) {
			if !c.TryAcquireRetry() {
				panic("refused")
			}
			c.ReleaseRetry()
		}},
		{"refused by the budget", config.RetryBudget{RetryRatio: ratio(0), MinRetriesPerSecond: new(uint32(0))}, nil, func(c *cluster.Cluster) {
			if c.TryAcquireRetry() {
				panic("allowed")
			}
		}},
		{"refused by the breaker, refunded", config.RetryBudget{}, []config.CircuitBreaker{{MaxRetries: new(uint32(0))}}, func(c *cluster.Cluster) {
			if c.TryAcquireRetry() {
				panic("allowed")
			}
		}},
	} {
		_, c, clock, _ := budgeted(t, &tc.rb, tc.cbs...)
		if a := testing.AllocsPerRun(1000, func() {
			tc.f(c)
			clock.Advance(10 * time.Millisecond) // slots turn over
		}); a != 0 {
			t.Errorf("%s: %v allocations per run", tc.name, a)
		}
	}
}

// BenchmarkRetryBudget: the cost a request pays (deposit: a max_requests acquire and
// release) and a retry (withdraw: TryAcquireRetry and ReleaseRetry), with the default
// budget and with it disabled.
func BenchmarkRetryBudget(b *testing.B) {
	for _, bc := range []struct {
		name string
		rb   *config.RetryBudget
	}{{"default", nil}, {"disabled", &config.RetryBudget{Disabled: true}}} {
		m := cluster.NewManager(cluster.Options{})
		cfg := withBreakers(simple("b", "", "10.0.0.1:80"), config.CircuitBreaker{MaxRetries: new(uint32(1 << 20))})
		cfg.RetryBudget = bc.rb
		if err := m.Apply([]config.Cluster{cfg}); err != nil {
			b.Fatal(err)
		}
		c, _ := m.Get("b")
		b.Run(bc.name+"/deposit", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if c.TryAcquire(cluster.MaxRequests) {
					c.Release(cluster.MaxRequests)
				}
			}
		})
		b.Run(bc.name+"/deposit+withdraw", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if c.TryAcquire(cluster.MaxRequests) {
					c.Release(cluster.MaxRequests)
				}
				if c.TryAcquireRetry() {
					c.ReleaseRetry()
				}
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if c.TryAcquire(cluster.MaxRequests) {
						c.Release(cluster.MaxRequests)
					}
					if c.TryAcquireRetry() {
						c.ReleaseRetry()
					}
				}
			})
		})
	}
}

package cluster_test

import (
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// *Cluster is the router's retry budget (router.RetryBudget).
var _ interface{ TryAcquireRetry() bool } = (*cluster.Cluster)(nil)

func withBreakers(c config.Cluster, cbs ...config.CircuitBreaker) config.Cluster {
	c.CircuitBreakers = cbs
	return c
}

func TestDialOverflow(t *testing.T) {
	live := liveServer(t)
	m, mt := newManager(t, cluster.Options{})
	if err := m.Apply([]config.Cluster{withBreakers(simple("b", lb.RoundRobin, live), config.CircuitBreaker{MaxConnections: new(uint32(2))})}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "b")
	type open struct {
		conn net.Conn
		done func(lb.DoneInfo)
	}
	var conns []open
	for range 2 {
		conn, _, done, err := c.Dial(t.Context(), &lb.Request{})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, open{conn, done})
	}
	_, _, _, err := c.Dial(t.Context(), &lb.Request{})
	if !errors.Is(err, cluster.ErrOverflow) || !strings.Contains(err.Error(), "max_connections 2") {
		t.Fatalf("third Dial = %v; want ErrOverflow naming max_connections 2", err)
	}
	if v := value(mt.UpstreamOverflow.WithLabelValues("b", "connections")); v != 1 {
		t.Fatalf("overflow counter = %v; want 1", v)
	}
	if n, limit := c.Usage(cluster.MaxConnections); n != 2 || limit != 2 {
		t.Fatalf("usage = %d/%d; want 2/2", n, limit)
	}
	// Closing one makes room again.
	conns[0].conn.Close()
	conns[0].done(lb.DoneInfo{})
	conns[0].done(lb.DoneInfo{}) // a second done does not release twice
	conn, _, done, err := c.Dial(t.Context(), &lb.Request{})
	if err != nil {
		t.Fatalf("Dial after a close: %v", err)
	}
	conns[0] = open{conn, done}
	for _, o := range conns {
		o.conn.Close()
		o.done(lb.DoneInfo{})
	}
	if n, _ := c.Usage(cluster.MaxConnections); n != 0 {
		t.Fatalf("connections in use after all closed = %d", n)
	}

	// A failed Dial gives its slot back.
	dead := deadAddr(t)
	if err := m.Apply([]config.Cluster{withBreakers(simple("b", lb.RoundRobin, dead), config.CircuitBreaker{MaxConnections: new(uint32(2))})}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, _, _, err := c.Dial(t.Context(), &lb.Request{}); err == nil || errors.Is(err, cluster.ErrOverflow) {
			t.Fatalf("Dial to a dead host = %v; want a connect error", err)
		}
	}
	if n, _ := c.Usage(cluster.MaxConnections); n != 0 {
		t.Fatalf("connections in use after failed dials = %d", n)
	}
}

func TestBreakerLimits(t *testing.T) {
	m, _ := newManager(t, cluster.Options{})
	cfg := simple("b", lb.RoundRobin, "10.0.0.1:80")
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "b")
	for b, want := range map[cluster.Breaker]int64{cluster.MaxConnections: 1024, cluster.MaxPendingRequests: 1024, cluster.MaxRequests: 1024, cluster.MaxRetries: 3} {
		if _, limit := c.Usage(b); limit != want {
			t.Errorf("%s default = %d; want %d", b.Setting(), limit, want)
		}
	}
	if !c.TryAcquireRetry() {
		t.Fatal("TryAcquireRetry refused with nothing in use")
	}
	// Only DEFAULT thresholds apply; a HIGH entry is accepted and unused. The count in use
	// survives the update.
	cfg = withBreakers(cfg, config.CircuitBreaker{Priority: "HIGH", MaxRetries: new(uint32(100))}, config.CircuitBreaker{MaxRetries: new(uint32(2)), MaxRequests: new(uint32(7))})
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	if n, limit := c.Usage(cluster.MaxRetries); n != 1 || limit != 2 {
		t.Fatalf("retries = %d/%d; want 1/2", n, limit)
	}
	if _, limit := c.Usage(cluster.MaxRequests); limit != 7 {
		t.Fatalf("max_requests = %d; want 7", limit)
	}
	if !c.TryAcquireRetry() || c.TryAcquireRetry() {
		t.Fatal("want exactly one more retry slot")
	}
	c.ReleaseRetry()
	c.ReleaseRetry()
	defer func() {
		if recover() == nil {
			t.Fatal("a release without an acquire did not panic")
		}
		if n, _ := c.Usage(cluster.MaxRetries); n != 0 {
			t.Fatalf("count after the refused release = %d", n)
		}
	}()
	c.ReleaseRetry()
}

// A threshold written as 0 is a limit of 0 (Envoy's semantics), not the default: with
// max_retries 0 no retry may start and with max_connections 0 no dial. A threshold left
// out keeps its default.
func TestBreakerZeroLimits(t *testing.T) {
	m, _ := newManager(t, cluster.Options{})
	cfg := withBreakers(simple("b", "", liveServer(t)), config.CircuitBreaker{MaxRetries: new(uint32(0)), MaxConnections: new(uint32(0))})
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "b")
	for b, want := range map[cluster.Breaker]int64{cluster.MaxConnections: 0, cluster.MaxPendingRequests: 1024, cluster.MaxRequests: 1024, cluster.MaxRetries: 0} {
		if _, limit := c.Usage(b); limit != want {
			t.Errorf("%s = %d; want %d", b.Setting(), limit, want)
		}
	}
	if c.TryAcquireRetry() {
		t.Error("max_retries 0 allowed a retry")
	}
	if conn, _, done, err := c.Dial(t.Context(), nil); !errors.Is(err, cluster.ErrOverflow) {
		if err == nil {
			conn.Close()
			done(lb.DoneInfo{})
		}
		t.Errorf("Dial with max_connections 0 = %v; want ErrOverflow", err)
	}
	if n, _ := c.Usage(cluster.MaxConnections); n != 0 {
		t.Errorf("connections in use after the refused dial = %d", n)
	}
}

func TestBreakerBadConfig(t *testing.T) {
	m, _ := newManager(t, cluster.Options{})
	for _, cbs := range [][]config.CircuitBreaker{{{Priority: "LOW"}}, {{}, {Priority: "DEFAULT"}}} {
		if err := m.Apply([]config.Cluster{withBreakers(simple("b", "", "10.0.0.1:80"), cbs...)}); err == nil || !strings.Contains(err.Error(), "circuit_breakers[") {
			t.Errorf("Apply(%+v) = %v; want a circuit_breakers error", cbs, err)
		}
	}
}

func TestBreakerConcurrent(t *testing.T) {
	m, mt := newManager(t, cluster.Options{})
	if err := m.Apply([]config.Cluster{withBreakers(simple("b", "", "10.0.0.1:80"), config.CircuitBreaker{MaxRequests: new(uint32(8))})}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "b")
	var inFlight, peak, refused atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 2000 {
				if !c.TryAcquire(cluster.MaxRequests) {
					refused.Add(1)
					continue
				}
				n := inFlight.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				inFlight.Add(-1)
				c.Release(cluster.MaxRequests)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 8 {
		t.Fatalf("%d requests in flight at once; the limit is 8", p)
	}
	if n, _ := c.Usage(cluster.MaxRequests); n != 0 {
		t.Fatalf("in use after all released = %d", n)
	}
	if v := value(mt.UpstreamOverflow.WithLabelValues("b", "requests")); v != float64(refused.Load()) {
		t.Fatalf("overflow counter %v != refusals %d", v, refused.Load())
	}
}

func TestBreakerDoesNotAllocate(t *testing.T) {
	m, _ := newManager(t, cluster.Options{})
	if err := m.Apply([]config.Cluster{withBreakers(simple("b", "", "10.0.0.1:80"), config.CircuitBreaker{MaxRetries: new(uint32(1))})}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "b")
	if a := testing.AllocsPerRun(100, func() {
		if c.TryAcquireRetry() {
			c.TryAcquireRetry() // overflow path
			c.ReleaseRetry()
		}
	}); a != 0 {
		t.Fatalf("%v allocations per acquire/overflow/release", a)
	}
}

func BenchmarkBreaker(b *testing.B) {
	m := cluster.NewManager(cluster.Options{})
	if err := m.Apply([]config.Cluster{simple("b", "", "10.0.0.1:80")}); err != nil {
		b.Fatal(err)
	}
	c, _ := m.Get("b")
	b.Run("acquire-release", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if c.TryAcquire(cluster.MaxRequests) {
				c.Release(cluster.MaxRequests)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if c.TryAcquire(cluster.MaxRequests) {
					c.Release(cluster.MaxRequests)
				}
			}
		})
	})
}

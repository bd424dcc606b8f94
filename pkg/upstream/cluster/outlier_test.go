package cluster_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb/lbtest"
)

func withOutlier(c config.Cluster, od *config.OutlierDetection) config.Cluster {
	c.OutlierDetection = od
	return c
}

func pct(p uint32) *uint32 { return &p }

func TestOutlierEjectsAfterConsecutiveDialFailures(t *testing.T) {
	const bad = "10.0.0.1:80"
	d := newPipeDialer()
	d.setFail(bad, true)
	m, mt := newManager(t, cluster.Options{Dial: d.Dial})
	od := &config.OutlierDetection{Consecutive5xx: 3, BaseEjectionTime: dur(50 * time.Millisecond)}
	if err := m.Apply([]config.Cluster{withOutlier(simple("o", lb.RoundRobin, bad, "10.0.0.2:80", "10.0.0.3:80"), od)}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "o")
	h := hostByAddr(t, c, bad)
	dialAll := func(n int) {
		t.Helper()
		for i := range n {
			conn, got, done, err := c.Dial(t.Context(), &lb.Request{})
			if err != nil { // the failed attempt on bad is retried on another host
				t.Fatalf("Dial %d: %v", i, err)
			}
			if got.Addr() == bad {
				t.Fatalf("Dial %d connected to the failing host", i)
			}
			conn.Close()
			done(lb.DoneInfo{})
		}
	}

	dialAll(30)
	if n := d.count(bad); n != 3 {
		t.Fatalf("dials to the failing host = %d; want 3 (then ejected)", n)
	}
	if hh := h.Health(); !hh.Ejected || hh.FailedActiveCheck || hh.AdminDown {
		t.Fatalf("health = %+v; want ejected only", hh)
	}
	if v := value(mt.UpstreamEjections.WithLabelValues("o")); v != 1 {
		t.Fatalf("ejections = %v; want 1", v)
	}
	if v := value(mt.UpstreamHostsEjected.WithLabelValues("o")); v != 1 {
		t.Fatalf("ejected gauge = %v; want 1", v)
	}

	// The ejection ends on its timer; the second one lasts twice as long.
	testutil.Eventually(t, 5*time.Second, "un-ejection", h.Healthy)
	cluster.Ejections(h) // waits for the timer's callback to finish (it logs)
	if v := value(mt.UpstreamHostsEjected.WithLabelValues("o")); v != 0 {
		t.Fatalf("ejected gauge after return = %v", v)
	}
	dialAll(30)
	if !h.Health().Ejected || cluster.Ejections(h) != 2 {
		t.Fatalf("second ejection: health %+v, count %d", h.Health(), cluster.Ejections(h))
	}
	start := time.Now()
	testutil.Eventually(t, 5*time.Second, "second un-ejection", h.Healthy)
	cluster.Ejections(h)
	if el := time.Since(start); el < 80*time.Millisecond { // 100ms, less the time to the first check
		t.Fatalf("second ejection lasted %v; want 2 × 50ms", el)
	}
}

func TestOutlierMaxEjectionPercent(t *testing.T) {
	for _, tc := range []struct {
		hosts   int
		percent *uint32
		want    int
	}{
		{10, pct(20), 2},
		{10, nil, 1}, // default 10 %
		{3, nil, 1},  // 10 % of 3 rounds to 0, but one host may always be ejected (Envoy)
		{3, pct(0), 1},
		{4, pct(50), 2},
		{2, pct(100), 1}, // never the last healthy host
		{1, pct(100), 0},
	} {
		t.Run(fmt.Sprintf("%d hosts %v", tc.hosts, tc.percent), func(t *testing.T) {
			m, _ := newManager(t, cluster.Options{})
			var addrs []string
			for i := range tc.hosts {
				addrs = append(addrs, fmt.Sprintf("10.0.0.%d:80", i+1))
			}
			od := &config.OutlierDetection{ConsecutiveErrors: 2, BaseEjectionTime: dur(time.Hour), MaxEjectionPercent: tc.percent}
			if err := m.Apply([]config.Cluster{withOutlier(simple("o", lb.RoundRobin, addrs...), od)}); err != nil {
				t.Fatal(err)
			}
			c := get(t, m, "o")
			for round := range 3 { // refused ejections are retried, and refused again
				for _, h := range c.Hosts() {
					h.ReportResult(false)
					h.ReportResult(false)
				}
				ejected := 0
				for _, h := range c.Hosts() {
					if h.Health().Ejected {
						ejected++
					}
				}
				if ejected != tc.want {
					t.Fatalf("round %d: %d ejected; want %d", round, ejected, tc.want)
				}
			}
			if err := m.Remove("o"); err != nil { // stops the ejection timers
				t.Fatal(err)
			}
		})
	}
}

func TestOutlierSuccessResetsCount(t *testing.T) {
	m, _ := newManager(t, cluster.Options{})
	od := &config.OutlierDetection{Consecutive5xx: 3, BaseEjectionTime: dur(time.Hour)}
	if err := m.Apply([]config.Cluster{withOutlier(simple("o", lb.RoundRobin, "10.0.0.1:80", "10.0.0.2:80"), od)}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "o")
	h := c.Hosts()[0]
	for _, ok := range []bool{false, false, true, false, false} {
		h.ReportResult(ok)
	}
	if !h.Healthy() {
		t.Fatal("ejected although a success broke the run of failures")
	}
	h.ReportResult(false)
	if !h.Health().Ejected {
		t.Fatal("not ejected after 3 failures in a row")
	}
	// Other reasons are separate: lifting an admin mark does not end the ejection ...
	c.SetHostHealth(h.Addr(), false)
	c.SetHostHealth(h.Addr(), true)
	if hh := h.Health(); !hh.Ejected || hh.AdminDown || h.Healthy() {
		t.Fatalf("after admin down and up: %+v", hh)
	}
	// ... and turning detection off does.
	if err := m.Apply([]config.Cluster{simple("o", lb.RoundRobin, "10.0.0.1:80", "10.0.0.2:80")}); err != nil {
		t.Fatal(err)
	}
	if !h.Healthy() {
		t.Fatalf("still down after outlier_detection was removed: %+v", h.Health())
	}
	for range 10 {
		h.ReportResult(false)
	}
	if !h.Healthy() {
		t.Fatal("ejected with outlier detection off")
	}
}

func TestOutlierEjectionCountDecays(t *testing.T) {
	clock := lbtest.NewClock(time.Unix(1e9, 0))
	m, _ := newManager(t, cluster.Options{Now: clock.Now})
	od := &config.OutlierDetection{Consecutive5xx: 1, Interval: dur(10 * time.Second), BaseEjectionTime: dur(time.Millisecond),
		MaxEjectionTime: dur(2 * time.Millisecond)}
	if err := m.Apply([]config.Cluster{withOutlier(simple("o", lb.RoundRobin, "10.0.0.1:80", "10.0.0.2:80"), od)}); err != nil {
		t.Fatal(err)
	}
	h := get(t, m, "o").Hosts()[0]
	eject := func(want uint32) {
		t.Helper()
		h.ReportResult(false)
		if !h.Health().Ejected || cluster.Ejections(h) != want {
			t.Fatalf("ejected %v with count %d; want count %d", h.Health().Ejected, cluster.Ejections(h), want)
		}
		testutil.Eventually(t, 5*time.Second, "un-ejection", h.Healthy)
		cluster.Ejections(h) // waits for the timer's callback to finish (it logs)
	}
	eject(1)
	eject(2)
	// The time is capped (max_ejection_time), the count is not.
	eject(3)
	// Two intervals back in service: 3 → 1, then +1.
	clock.Advance(25 * time.Second)
	eject(2)
}

// TestHealthChurnConcurrent runs dials, outlier reports, admin marks, active checks and
// config churn (hosts leaving and coming back, checks and detection changing) at once; run
// under -race. Afterwards the books must balance.
func TestHealthChurnConcurrent(t *testing.T) {
	d := newPipeDialer()
	m, mt := newManager(t, cluster.Options{Dial: d.Dial, Rand: lbtest.SeededRand(3)})
	addrs := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80", "10.0.0.5:80", "10.0.0.6:80"}
	cfgAt := func(i int) config.Cluster {
		c := simple("x", lb.LeastRequest, addrs[i%3:]...)
		c.PickTimeout = dur(time.Millisecond)
		c.CircuitBreakers = []config.CircuitBreaker{{MaxConnections: new(uint32(4))}}
		if i%4 != 3 {
			c.HealthCheck = fastHC("tcp")
			c.HealthCheck.Interval = dur(time.Duration(1+i%2) * time.Millisecond)
		}
		if i%5 != 4 {
			c.OutlierDetection = &config.OutlierDetection{Consecutive5xx: 2, BaseEjectionTime: dur(2 * time.Millisecond), MaxEjectionPercent: pct(50)}
		}
		return c
	}
	if err := m.Apply([]config.Cluster{cfgAt(0)}); err != nil {
		t.Fatal(err)
	}
	runManager(t, m)
	c := get(t, m, "x")
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 300 {
				conn, h, done, err := c.Dial(t.Context(), &lb.Request{Attempt: g})
				if err != nil {
					continue
				}
				h.ReportResult(i%3 != 0)
				conn.Close()
				done(lb.DoneInfo{})
			}
		})
	}
	wg.Go(func() {
		for i := range 300 {
			d.setFail(addrs[i%len(addrs)], i%2 == 0)
			c.SetHostHealth(addrs[(i+1)%len(addrs)], i%3 != 0)
		}
	})
	wg.Go(func() {
		for i := range 60 {
			if err := m.Apply([]config.Cluster{cfgAt(i)}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
	if n, _ := c.Usage(cluster.MaxConnections); n != 0 {
		t.Fatalf("connections in use after all closed: %d", n)
	}
	for _, a := range addrs {
		c.SetHostHealth(a, true)
		d.setFail(a, false)
	}
	// Ejections end on their timers; the gauge follows the hosts.
	testutil.Eventually(t, 5*time.Second, "ejections to end", func() bool {
		for _, h := range c.Hosts() {
			if h.Health().Ejected {
				return false
			}
		}
		return value(mt.UpstreamHostsEjected.WithLabelValues("x")) == 0
	})
	for _, h := range c.Hosts() {
		if h.Stats().Active() != 0 || h.Stats().Conns() != 0 {
			t.Fatalf("%s: active %d conns %d", h.Addr(), h.Stats().Active(), h.Stats().Conns())
		}
	}
}

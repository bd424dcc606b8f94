package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// fastHC checks every 5ms, down after 2 failures, up after 2 successes.
func fastHC(protocol string) *config.HealthCheck {
	return &config.HealthCheck{Protocol: protocol, Timeout: dur(time.Second), Interval: dur(5 * time.Millisecond),
		IntervalJitter: dur(time.Millisecond), HealthyThreshold: 2, UnhealthyThreshold: 2}
}

func withHC(c config.Cluster, hc *config.HealthCheck) config.Cluster {
	c.HealthCheck = hc
	return c
}

func hostByAddr(t *testing.T, c *cluster.Cluster, addr string) *cluster.Host {
	t.Helper()
	for _, h := range c.Hosts() {
		if h.Addr() == addr {
			return h
		}
	}
	t.Fatalf("cluster %s has no host %s", c.Name(), addr)
	return nil
}

// acceptLoop accepts and closes connections on ln until it is closed; wait waits for that.
func acceptLoop(ln net.Listener) (wait func()) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	})
	return wg.Wait
}

func TestActiveTCPCheckMarksHostDownAndUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	flaky := ln.Addr().String()
	wait := acceptLoop(ln)
	live := liveServer(t)
	m, mt := newManager(t, cluster.Options{})
	if err := m.Apply([]config.Cluster{withHC(simple("hc", lb.RoundRobin, flaky, live), fastHC("tcp"))}); err != nil {
		t.Fatal(err)
	}
	runManager(t, m)
	c := get(t, m, "hc")
	passed := mt.UpstreamHealthChecks.WithLabelValues("hc", "success")
	testutil.Eventually(t, 5*time.Second, "checks passing", func() bool { return value(passed) >= 4 })

	ln.Close()
	wait()
	h := hostByAddr(t, c, flaky)
	testutil.Eventually(t, 5*time.Second, "the closed host marked down", func() bool { return h.Health().FailedActiveCheck })
	if h.Healthy() || h.Health().Ejected || h.Health().AdminDown {
		t.Fatalf("health = %+v", h.Health())
	}
	for i := range 20 {
		p, done, err := c.Pick(t.Context(), &lb.Request{})
		if err != nil || p.Addr() != live {
			t.Fatalf("pick %d = %v, %v; want %s", i, p, err, live)
		}
		done(lb.DoneInfo{})
	}
	if v := value(mt.UpstreamHealthChecks.WithLabelValues("hc", "failure")); v < 2 {
		t.Fatalf("failed checks = %v; want ≥ 2", v)
	}
	if v := value(mt.UpstreamHostsHealthy.WithLabelValues("hc")); v != 1 {
		t.Fatalf("healthy hosts = %v; want 1", v)
	}

	// The same port listens again: the host comes back.
	var ln2 net.Listener
	testutil.Eventually(t, 5*time.Second, "re-listening on "+flaky, func() bool { ln2, err = net.Listen("tcp", flaky); return err == nil })
	defer acceptLoop(ln2)()
	defer ln2.Close()
	testutil.Eventually(t, 5*time.Second, "the host back up", h.Healthy)
	seen := map[string]bool{}
	for range 4 {
		p, done, err := c.Pick(t.Context(), &lb.Request{})
		if err != nil {
			t.Fatal(err)
		}
		seen[p.Addr()] = true
		done(lb.DoneInfo{})
	}
	if !seen[flaky] || !seen[live] {
		t.Fatalf("picks after recovery reached %v; want both hosts", seen)
	}
}

func TestActiveHTTPCheckAndWaitingPicks(t *testing.T) {
	var status atomic.Int64
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	hc := fastHC("Http1")
	hc.CheckConfig = &config.HealthCheckConfig{HTTP: &config.HTTPCheckConfig{Path: "/healthz"}}
	cfg := withHC(simple("web", lb.RoundRobin, addr), hc)
	cfg.PickTimeout = dur(5 * time.Second)
	m, _ := newManager(t, cluster.Options{})
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	runManager(t, m)
	c := get(t, m, "web")
	h := hostByAddr(t, c, addr)

	status.Store(http.StatusInternalServerError)
	testutil.Eventually(t, 5*time.Second, "host down after 500s", func() bool { return !h.Healthy() })
	// All hosts down: a pick waits, bounded by its ctx (or pick_timeout) ...
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	if _, _, err := c.Pick(ctx, &lb.Request{}); !errors.Is(err, cluster.ErrNoHealthyUpstream) {
		t.Fatalf("Pick with every host down = %v; want ErrNoHealthyUpstream", err)
	}
	cancel()
	// ... and wakes when a check brings the host back.
	type result struct {
		h   *cluster.Host
		err error
	}
	picked := make(chan result, 1)
	go func() {
		p, done, err := c.Pick(t.Context(), &lb.Request{})
		if err == nil {
			done(lb.DoneInfo{})
		}
		picked <- result{p, err}
	}()
	status.Store(http.StatusOK)
	select {
	case r := <-picked:
		if r.err != nil || r.h.Addr() != addr {
			t.Fatalf("waiting pick = %v, %v", r.h, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiting pick did not wake when the host came back")
	}
}

// pipeDialer "connects" to any address (one end of a pipe) unless told to fail, and
// counts dials per address.
type pipeDialer struct {
	mu    sync.Mutex
	fail  map[string]bool
	calls map[string]int
	panic bool
}

func newPipeDialer() *pipeDialer {
	return &pipeDialer{fail: map[string]bool{}, calls: map[string]int{}}
}

func (d *pipeDialer) Dial(ctx context.Context, _, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.calls[addr]++
	fail, boom := d.fail[addr], d.panic
	d.mu.Unlock()
	if boom {
		panic("dialer bug")
	}
	if fail {
		return nil, errors.New("connection refused")
	}
	a, b := net.Pipe()
	b.Close()
	return a, nil
}

func (d *pipeDialer) setFail(addr string, fail bool) {
	d.mu.Lock()
	d.fail[addr] = fail
	d.mu.Unlock()
}

func (d *pipeDialer) count(addr string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls[addr]
}

func TestHealthCheckersFollowHostsAndLifecycle(t *testing.T) {
	d := newPipeDialer()
	res := newFakeResolver()
	res.set("svc.test", nil, "10.1.0.1", "10.1.0.2")
	m, _ := newManager(t, cluster.Options{Dial: d.Dial, Resolver: res})
	slow := fastHC("tcp")
	slow.Interval = dur(time.Hour) // one check per host, then quiet
	a := withHC(simple("a", lb.RoundRobin, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"), slow)
	dns := withHC(dnsCluster("d", "", 5*time.Millisecond, "svc.test:80"), slow)
	if err := m.Apply([]config.Cluster{a, dns}); err != nil {
		t.Fatal(err)
	}
	if n := cluster.ActiveCheckers(m); n != 0 {
		t.Fatalf("%d checkers before Run", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx) }()
	returned := false
	t.Cleanup(func() { // on an early failure too
		cancel()
		if !returned {
			<-ran
		}
	})
	checkers := func(want int64) {
		t.Helper()
		testutil.Eventually(t, 5*time.Second, fmt.Sprintf("%d checkers", want), func() bool { return cluster.ActiveCheckers(m) == want })
	}
	checkers(5)
	testutil.Eventually(t, 5*time.Second, "each host checked", func() bool { return d.count("10.0.0.3:80") == 1 && d.count("10.1.0.2:80") == 1 })

	a.Hosts = a.Hosts[:2] // a host leaves
	if err := m.Apply([]config.Cluster{a, dns}); err != nil {
		t.Fatal(err)
	}
	checkers(4)
	res.set("svc.test", nil, "10.1.0.1", "10.1.0.2", "10.1.0.3") // DNS adds one
	checkers(5)

	// A changed health_check restarts the checkers (each host is checked again); a change
	// elsewhere keeps them.
	a.PickTimeout = dur(2 * time.Second)
	if err := m.Apply([]config.Cluster{a, dns}); err != nil {
		t.Fatal(err)
	}
	a2 := a
	a2.HealthCheck = fastHC("tcp")
	a2.HealthCheck.Interval = dur(time.Hour)
	a2.HealthCheck.HealthyThreshold = 3
	if err := m.Apply([]config.Cluster{a2, dns}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "hosts checked again", func() bool { return d.count("10.0.0.1:80") == 2 })
	checkers(5)

	if err := m.Remove("d"); err != nil {
		t.Fatal(err)
	}
	checkers(2)
	if err := m.Apply([]config.Cluster{withHC(simple("b", lb.RoundRobin, "10.2.0.1:80"), slow)}); err != nil { // a replaced by b
		t.Fatal(err)
	}
	checkers(1)
	if err := m.AddOrUpdate(simple("b", lb.RoundRobin, "10.2.0.1:80")); err != nil { // checks off
		t.Fatal(err)
	}
	checkers(0)
	if err := m.AddOrUpdate(withHC(simple("b", lb.RoundRobin, "10.2.0.1:80"), slow)); err != nil {
		t.Fatal(err)
	}
	checkers(1)
	cancel()
	select {
	case err := <-ran:
		returned = true
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if n := cluster.ActiveCheckers(m); n != 0 {
		t.Fatalf("%d checkers left after Run returned", n)
	}
}

func TestHealthCheckOffRestoresHosts(t *testing.T) {
	d := newPipeDialer()
	d.setFail("10.0.0.1:80", true)
	m, _ := newManager(t, cluster.Options{Dial: d.Dial})
	cfg := simple("c", lb.RoundRobin, "10.0.0.1:80", "10.0.0.2:80")
	if err := m.Apply([]config.Cluster{withHC(cfg, fastHC("tcp"))}); err != nil {
		t.Fatal(err)
	}
	runManager(t, m)
	c := get(t, m, "c")
	h := hostByAddr(t, c, "10.0.0.1:80")
	// Hosts start healthy; one that has never passed goes down on its first failure.
	testutil.Eventually(t, 5*time.Second, "host down", func() bool { return h.Health().FailedActiveCheck })
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	if !h.Healthy() {
		t.Fatalf("host still down after health_check was removed: %+v", h.Health())
	}
}

func TestHealthCheckerPanicIsContained(t *testing.T) {
	d := newPipeDialer()
	d.panic = true
	m, _ := newManager(t, cluster.Options{Dial: d.Dial})
	if err := m.Apply([]config.Cluster{withHC(simple("p", lb.RoundRobin, "10.0.0.1:80"), fastHC("tcp"))}); err != nil {
		t.Fatal(err)
	}
	runManager(t, m)
	testutil.Eventually(t, 5*time.Second, "the checker to panic", func() bool { return d.count("10.0.0.1:80") > 0 })
	testutil.Eventually(t, 5*time.Second, "the panicked checker to end", func() bool { return cluster.ActiveCheckers(m) == 0 })
	c := get(t, m, "p")
	if h, done, err := c.Pick(t.Context(), &lb.Request{}); err != nil || !h.Healthy() {
		t.Fatalf("Pick after a checker panic = %v, %v", h, err)
	} else {
		done(lb.DoneInfo{})
	}
}

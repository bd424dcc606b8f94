package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb/lbtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func dur(d time.Duration) *config.Duration { v := config.Duration(d); return &v }

func hosts(addrs ...string) []config.Host {
	out := make([]config.Host, len(addrs))
	for i, a := range addrs {
		out[i] = config.Host{Address: a}
	}
	return out
}

func simple(name, lbType string, addrs ...string) config.Cluster {
	return config.Cluster{Name: name, LBType: lbType, Hosts: hosts(addrs...)}
}

func newManager(t *testing.T, o cluster.Options) (*cluster.Manager, *metrics.Set) {
	t.Helper()
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	o.Log = zaptest.NewLogger(t)
	return cluster.NewManager(o), o.Metrics
}

func get(t *testing.T, m *cluster.Manager, name string) *cluster.Cluster {
	t.Helper()
	c, ok := m.Get(name)
	if !ok {
		t.Fatalf("cluster %q not found", name)
	}
	return c
}

func hostAddrs(c *cluster.Cluster) []string {
	var out []string
	for _, h := range c.Hosts() {
		out = append(out, h.Addr())
	}
	return out
}

func TestApplyAllOrNothing(t *testing.T) {
	m, _ := newManager(t, cluster.Options{})
	if err := m.Apply([]config.Cluster{simple("a", "", "10.0.0.1:80", "10.0.0.2:80")}); err != nil {
		t.Fatal(err)
	}
	a := get(t, m, "a")
	for _, tc := range []struct {
		name string
		cfgs []config.Cluster
		want []string // substrings of the error
	}{
		{"unknown lb type", []config.Cluster{simple("a", "", "10.0.0.9:80"), simple("b", "LB_BOGUS", "10.0.0.3:80")},
			[]string{`cluster "b"`, "lb_type", "LB_BOGUS"}},
		{"bad address", []config.Cluster{simple("a", "", "10.0.0.9")}, []string{`cluster "a"`, "hosts[0].address"}},
		{"port zero", []config.Cluster{simple("a", "", "10.0.0.9:0")}, []string{`cluster "a"`, "port"}},
		{"duplicate host", []config.Cluster{simple("a", "", "10.0.0.9:80", "10.0.0.9:80")}, []string{"duplicates hosts[0]"}},
		{"duplicate name", []config.Cluster{simple("a", "", "10.0.0.9:80"), simple("a", "", "10.0.0.8:80")}, []string{"defined twice"}},
		{"unknown type", []config.Cluster{{Name: "c", Type: "WEIRD", Hosts: hosts("10.0.0.1:80")}}, []string{`cluster "c"`, "type", "WEIRD"}},
		{"bad family", []config.Cluster{{Name: "d", DNSLookupFamily: "V5", Hosts: hosts("10.0.0.1:80")}}, []string{`cluster "d"`, "dns_lookup_family"}},
		{"non-prime maglev table", []config.Cluster{{Name: "e", LBType: lb.Maglev, LBConfig: &config.LBConfig{MaglevTableSize: 1000}}}, []string{`cluster "e"`, "not prime"}},
		{"strict dns without hosts", []config.Cluster{{Name: "f", Type: config.ClusterStrictDNS}}, []string{`cluster "f"`, "STRICT_DNS"}},
		{"zero connect timeout", []config.Cluster{{Name: "g", ConnectTimeout: dur(0)}}, []string{`cluster "g"`, "connect_timeout"}},
		{"empty name", []config.Cluster{{}}, []string{"clusters[0]", "empty name"}},
		{"bad health check", []config.Cluster{withHC(simple("h", "", "10.0.0.1:80"), &config.HealthCheck{Protocol: "bolt"})},
			[]string{`cluster "h"`, "health_check.protocol", "bolt"}},
		{"bad outlier detection", []config.Cluster{withOutlier(simple("o", "", "10.0.0.1:80"), &config.OutlierDetection{MaxEjectionPercent: pct(101)})},
			[]string{`cluster "o"`, "outlier_detection.max_ejection_percent"}},
		{"bad breaker priority", []config.Cluster{withBreakers(simple("b", "", "10.0.0.1:80"), config.CircuitBreaker{Priority: "LOW"})},
			[]string{`cluster "b"`, "circuit_breakers[0].priority"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := m.Apply(tc.cfgs)
			if err == nil {
				t.Fatal("Apply succeeded; want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			// The old snapshot stands: same cluster, same hosts, nothing added.
			if got := get(t, m, "a"); got != a || !slices.Equal(hostAddrs(got), []string{"10.0.0.1:80", "10.0.0.2:80"}) {
				t.Fatalf("cluster a changed by a failed Apply: %v", hostAddrs(got))
			}
			if names := m.Names(); !slices.Equal(names, []string{"a"}) {
				t.Fatalf("names after failed Apply = %v", names)
			}
		})
	}
	// A good Apply replaces the set: a removed, b added.
	if err := m.Apply([]config.Cluster{simple("b", lb.Random, "10.0.0.3:80")}); err != nil {
		t.Fatal(err)
	}
	if names := m.Names(); !slices.Equal(names, []string{"b"}) {
		t.Fatalf("names = %v; want [b]", names)
	}
}

func TestHostStateSurvivesWeightChange(t *testing.T) {
	m, mt := newManager(t, cluster.Options{Rand: lbtest.FixedRand(0)})
	cfg := simple("c", lb.RoundRobin, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "c")
	h1, done, err := c.Pick(t.Context(), &lb.Request{}) // Rand 0: first host, kept in flight
	if err != nil || h1.Addr() != "10.0.0.1:80" {
		t.Fatalf("Pick = %v, %v", h1, err)
	}
	c.SetHostHealth("10.0.0.2:80", false)
	before := c.Hosts()

	// Unchanged config: nothing is rebuilt.
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	if after := c.Hosts(); !slices.Equal(before, after) {
		t.Fatal("unchanged config rebuilt the hosts")
	}

	// Weight change on host 1 and host 3 removed, host 4 added.
	cfg2 := simple("c", lb.RoundRobin, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.4:80")
	cfg2.Hosts[0].Weight = 5
	if err := m.Apply([]config.Cluster{cfg2}); err != nil {
		t.Fatal(err)
	}
	if get(t, m, "c") != c {
		t.Fatal("updated cluster is a new object; holders of the old one would go stale")
	}
	hs := c.Hosts()
	if hs[0].Weight() != 5 || hs[0].Stats() != h1.Stats() || hs[0].Stats().Active() != 1 {
		t.Fatalf("host 1 after weight change: weight %d, same stats %v, active %d", hs[0].Weight(), hs[0].Stats() == h1.Stats(), hs[0].Stats().Active())
	}
	if hs[1].Healthy() {
		t.Fatal("host 2 lost its down state across the update")
	}
	if got := hostAddrs(c); !slices.Equal(got, []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.4:80"}) {
		t.Fatalf("hosts = %v", got)
	}
	done(lb.DoneInfo{})
	if a := hs[0].Stats().Active(); a != 0 {
		t.Fatalf("active after done = %d", a)
	}
	if v := value(mt.UpstreamHosts.WithLabelValues("c")); v != 3 {
		t.Fatalf("upstream_hosts = %v; want 3", v)
	}
	if v := value(mt.UpstreamHostsHealthy.WithLabelValues("c")); v != 2 {
		t.Fatalf("upstream_hosts_healthy = %v; want 2", v)
	}
}

// TestHostRemovedAndHostsChanged: a host dropped by an update, and every host of a
// removed cluster, reports Removed (a returning address is a new host); each change of
// the hosts or of their health closes HostsChanged's channel, which pools wait on.
func TestHostRemovedAndHostsChanged(t *testing.T) {
	m, _ := newManager(t, cluster.Options{})
	changed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	ch := m.HostsChanged()
	if err := m.Apply([]config.Cluster{simple("c", "", "10.0.0.1:80", "10.0.0.2:80")}); err != nil {
		t.Fatal(err)
	}
	if !changed(ch) {
		t.Fatal("adding a cluster did not signal HostsChanged")
	}
	c := get(t, m, "c")
	hs := c.Hosts()
	a, b := hs[0], hs[1]
	ch = m.HostsChanged()
	if changed(ch) {
		t.Fatal("HostsChanged closed with no change")
	}
	if err := m.Apply([]config.Cluster{simple("c", "", "10.0.0.1:80")}); err != nil {
		t.Fatal(err)
	}
	if !changed(ch) || !b.Removed() || a.Removed() {
		t.Fatalf("after dropping %s: signalled %v, removed %v %v; want true, false, true", b, changed(ch), a.Removed(), b.Removed())
	}
	ch = m.HostsChanged()
	c.SetHostHealth("10.0.0.1:80", false)
	if !changed(ch) || a.Healthy() {
		t.Fatalf("marking %s down: signalled %v, healthy %v", a, changed(ch), a.Healthy())
	}
	if err := m.Apply([]config.Cluster{simple("c", "", "10.0.0.1:80", "10.0.0.2:80")}); err != nil {
		t.Fatal(err)
	}
	if back := c.Hosts()[1]; back.Addr() != b.Addr() || back.Removed() || !b.Removed() {
		t.Fatalf("returning address: new host removed %v, old host removed %v; want false, true", back.Removed(), b.Removed())
	}
	ch = m.HostsChanged()
	if err := m.Remove("c"); err != nil {
		t.Fatal(err)
	}
	if !changed(ch) || !a.Removed() {
		t.Fatalf("removing the cluster: signalled %v, %s removed %v", changed(ch), a, a.Removed())
	}
}

// PoolKeyStale follows the host behind a pool key: live and up is not stale; down,
// dropped from its cluster, or its cluster removed is. A cluster name with "|" in it
// still splits at the address.
func TestPoolKeyStale(t *testing.T) {
	m, _ := newManager(t, cluster.Options{})
	if err := m.Apply([]config.Cluster{simple("c|x", "", "10.0.0.1:80", "10.0.0.2:80")}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "c|x")
	a, b := c.Hosts()[0], c.Hosts()[1]
	if m.PoolKeyStale(a.PoolKey()) || m.PoolKeyStale(b.PoolKey()) {
		t.Fatal("live hosts reported stale")
	}
	c.SetHostHealth(a.Addr(), false)
	if !m.PoolKeyStale(a.PoolKey()) || m.PoolKeyStale(b.PoolKey()) {
		t.Fatal("a down host not reported stale, or its neighbour reported")
	}
	c.SetHostHealth(a.Addr(), true)
	if err := m.Apply([]config.Cluster{simple("c|x", "", "10.0.0.1:80")}); err != nil {
		t.Fatal(err)
	}
	if m.PoolKeyStale(a.PoolKey()) || !m.PoolKeyStale(b.PoolKey()) {
		t.Fatal("after dropping b: want only b stale")
	}
	if m.PoolKeyStale("no-separator") {
		t.Fatal("a key that is not a pool key reported stale")
	}
	if err := m.Remove("c|x"); err != nil {
		t.Fatal(err)
	}
	if !m.PoolKeyStale(a.PoolKey()) {
		t.Fatal("a host of a removed cluster not reported stale")
	}
}

func TestUnhealthyNeverPicked(t *testing.T) {
	for _, n := range lb.Builtins() {
		if n.Name == lb.OriginalDst {
			continue
		}
		t.Run(n.Name, func(t *testing.T) {
			t.Parallel()
			m, _ := newManager(t, cluster.Options{})
			if err := m.Apply([]config.Cluster{simple("c", n.Name, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")}); err != nil {
				t.Fatal(err)
			}
			c := get(t, m, "c")
			c.SetHostHealth("10.0.0.2:80", false)
			seen := map[string]int{}
			for i := range 300 {
				h, done, err := c.Pick(t.Context(), &lb.Request{HashKey: uint64(i) * 7919, HasHash: true})
				if err != nil {
					t.Fatal(err)
				}
				seen[h.Addr()]++
				done(lb.DoneInfo{Latency: time.Millisecond})
			}
			// LB_PEAK_EWMA may stay on the host sampled first: the other is still at
			// the 30 ms prior, which takes seconds to decay below a 1 ms host.
			if seen["10.0.0.2:80"] != 0 || (len(seen) != 2 && n.Name != lb.PeakEWMA) {
				t.Fatalf("picks %v; want only the two healthy hosts", seen)
			}
		})
	}
}

func TestPickWaitsForHost(t *testing.T) {
	m, _ := newManager(t, cluster.Options{})
	cfg := simple("w", "", "10.0.0.1:80")
	cfg.PickTimeout = dur(10 * time.Second)
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "w")
	c.SetHostHealth("10.0.0.1:80", false)
	type res struct {
		h   *cluster.Host
		err error
	}
	out := make(chan res, 1)
	go func() {
		h, done, err := c.Pick(t.Context(), &lb.Request{})
		if err == nil {
			done(lb.DoneInfo{})
		}
		out <- res{h, err}
	}()
	select {
	case r := <-out:
		t.Fatalf("Pick returned %v, %v while no host was up", r.h, r.err)
	case <-time.After(20 * time.Millisecond): // it is waiting (this is not an assertion's timing)
	}
	c.SetHostHealth("10.0.0.1:80", true)
	select {
	case r := <-out:
		if r.err != nil || r.h.Addr() != "10.0.0.1:80" {
			t.Fatalf("Pick = %v, %v; want the host that came up", r.h, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Pick did not wake when the host came up")
	}
}

// TestMaxPendingRequestsBoundsWaitingPicks: picks waiting for a healthy host take
// max_pending_requests units; beyond the limit a pick fails at once as an overflow,
// counted once; the waiting ones are served when a host comes up and give their units
// back. A limit of 0 lets no pick wait.
func TestMaxPendingRequestsBoundsWaitingPicks(t *testing.T) {
	m, mt := newManager(t, cluster.Options{})
	two, zero := uint32(2), uint32(0)
	cfg := simple("p", "", "10.0.0.1:80")
	cfg.PickTimeout = dur(10 * time.Second)
	cfg.CircuitBreakers = []config.CircuitBreaker{{MaxPendingRequests: &two}}
	none := simple("p0", "", "10.0.0.2:80")
	none.PickTimeout = dur(10 * time.Second)
	none.CircuitBreakers = []config.CircuitBreaker{{MaxPendingRequests: &zero}}
	if err := m.Apply([]config.Cluster{cfg, none}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "p")
	c.SetHostHealth("10.0.0.1:80", false)
	out := make(chan error, 2)
	for range 2 {
		go func() {
			_, done, err := c.Pick(t.Context(), &lb.Request{})
			if err == nil {
				done(lb.DoneInfo{})
			}
			out <- err
		}()
	}
	testutil.Eventually(t, 5*time.Second, "two picks waiting", func() bool {
		n, _ := c.Usage(cluster.MaxPendingRequests)
		return n == 2
	})
	start := time.Now()
	_, _, err := c.Pick(t.Context(), &lb.Request{})
	if !errors.Is(err, cluster.ErrOverflow) || !strings.Contains(err.Error(), "max_pending_requests") {
		t.Fatalf("third waiting pick: %v; want an overflow naming max_pending_requests", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the refused pick waited %v", d)
	}
	if v := value(mt.UpstreamOverflow.WithLabelValues("p", "pending")); v != 1 {
		t.Fatalf("upstream_overflow_total{pending} = %v; want 1", v)
	}
	c.SetHostHealth("10.0.0.1:80", true)
	for range 2 {
		if err := <-out; err != nil {
			t.Fatalf("waiting pick: %v; want the host that came up", err)
		}
	}
	if n, _ := c.Usage(cluster.MaxPendingRequests); n != 0 {
		t.Fatalf("%d pending units still held", n)
	}

	c0 := get(t, m, "p0")
	c0.SetHostHealth("10.0.0.2:80", false)
	if _, _, err := c0.Pick(t.Context(), &lb.Request{}); !errors.Is(err, cluster.ErrOverflow) {
		t.Fatalf("max_pending_requests 0: %v; want an overflow at once", err)
	}
}

func TestPickFailsWithoutHealthyHost(t *testing.T) {
	m, mt := newManager(t, cluster.Options{})
	for _, tc := range []struct {
		name        string
		pickTimeout time.Duration
		ctxTimeout  time.Duration
		min, max    time.Duration
		ctxErr      bool
	}{
		{"pick_timeout", 50 * time.Millisecond, 0, 50 * time.Millisecond, 3 * time.Second, false},
		{"ctx deadline first", 10 * time.Second, 30 * time.Millisecond, 30 * time.Millisecond, 3 * time.Second, true},
		{"pick_timeout 0 fails at once", 0, 0, 0, time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "n-" + strings.ReplaceAll(tc.name, " ", "-")
			cfg := simple(name, "", "10.0.0.1:80")
			cfg.PickTimeout = dur(tc.pickTimeout)
			if err := m.AddOrUpdate(cfg); err != nil {
				t.Fatal(err)
			}
			c := get(t, m, name)
			c.SetHostHealth("10.0.0.1:80", false)
			start := time.Now() // before the ctx's timer starts: took is never below ctxTimeout
			ctx := t.Context()
			if tc.ctxTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctxTimeout)
				defer cancel()
			}
			_, _, err := c.Pick(ctx, &lb.Request{})
			took := time.Since(start)
			if !errors.Is(err, cluster.ErrNoHealthyUpstream) || !strings.Contains(err.Error(), name) {
				t.Fatalf("err = %v; want ErrNoHealthyUpstream naming the cluster", err)
			}
			if tc.ctxErr != errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v; ctx deadline wrapped: want %v", err, tc.ctxErr)
			}
			if took < tc.min || took > tc.max {
				t.Fatalf("failed after %v; want within [%v, %v]", took, tc.min, tc.max)
			}
			if v := value(mt.UpstreamNoHealthy.WithLabelValues(name)); v != 1 {
				t.Fatalf("upstream_no_healthy_host_total = %v; want 1", v)
			}
		})
	}
}

func TestRemoveWakesWaitingPick(t *testing.T) {
	m, _ := newManager(t, cluster.Options{})
	cfg := simple("r", "", "10.0.0.1:80")
	cfg.PickTimeout = dur(time.Minute)
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "r")
	c.SetHostHealth("10.0.0.1:80", false)
	errc := make(chan error, 1)
	go func() { _, _, err := c.Pick(t.Context(), &lb.Request{}); errc <- err }()
	if err := m.Remove("r"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, cluster.ErrNoHealthyUpstream) || !strings.Contains(err.Error(), "removed") {
			t.Fatalf("err = %v; want ErrNoHealthyUpstream, cluster removed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Pick kept waiting on a removed cluster")
	}
	if err := m.Remove("r"); err == nil {
		t.Fatal("second Remove succeeded")
	}
}

// liveServer accepts and closes connections on a loopback port until the test ends.
func liveServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
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
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// deadAddr is a loopback port that refuses connects; it stays reserved until the test ends.
func deadAddr(t *testing.T) string { return testutil.RefusedAddr(t) }

func TestDialSkipsDeadHost(t *testing.T) {
	dead, live := deadAddr(t), liveServer(t)
	for _, lbType := range []string{lb.RoundRobin, lb.Random, lb.Maglev, lb.PeakEWMA} {
		t.Run(lbType, func(t *testing.T) {
			m, mt := newManager(t, cluster.Options{Rand: lbtest.SeededRand(1)})
			if err := m.Apply([]config.Cluster{simple("d", lbType, dead, live)}); err != nil {
				t.Fatal(err)
			}
			c := get(t, m, "d")
			for i := range 20 {
				conn, h, done, err := c.Dial(t.Context(), &lb.Request{HashKey: uint64(i), HasHash: true})
				if err != nil {
					t.Fatalf("Dial %d: %v", i, err)
				}
				if h.Addr() != live {
					t.Fatalf("Dial %d connected to %s; want %s", i, h.Addr(), live)
				}
				if h.Stats().Conns() != 1 {
					t.Fatalf("host conns = %d while open; want 1", h.Stats().Conns())
				}
				conn.Close()
				done(lb.DoneInfo{})
				done(lb.DoneInfo{}) // a second call is ignored by Dial's done
			}
			fails := value(mt.UpstreamCxConnectFail.WithLabelValues("d", dead))
			if fails < 1 {
				t.Fatalf("connect failures to the dead host = %v; want ≥ 1", fails)
			}
			if v := value(mt.UpstreamCxTotal.WithLabelValues("d")); v != 20 {
				t.Fatalf("upstream_connections_total = %v; want 20", v)
			}
			if v := value(mt.UpstreamCxActive.WithLabelValues("d")); v != 0 {
				t.Fatalf("upstream_connections_active = %v; want 0", v)
			}
			for _, h := range c.Hosts() {
				if h.Stats().Active() != 0 || h.Stats().Conns() != 0 {
					t.Fatalf("%s: active %d conns %d after all done", h.Addr(), h.Stats().Active(), h.Stats().Conns())
				}
			}
		})
	}
}

func TestDialFailsAfterMaxAttempts(t *testing.T) {
	dead := []string{deadAddr(t), deadAddr(t), deadAddr(t), deadAddr(t)}
	m, mt := newManager(t, cluster.Options{})
	cfg := simple("x", lb.RoundRobin, dead...)
	cfg.MaxConnectAttempts = 3
	few := simple("y", lb.Random, dead[:2]...)
	few.MaxConnectAttempts = 3
	if err := m.Apply([]config.Cluster{cfg, few}); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := get(t, m, "x").Dial(t.Context(), &lb.Request{})
	if err == nil {
		t.Fatal("Dial succeeded with every host dead")
	}
	var de *cluster.DialError
	if !errors.As(err, &de) || len(de.Attempts) != 3 || de.NoMoreHosts {
		t.Fatalf("err = %#v; want a DialError with 3 attempts", err)
	}
	msg := err.Error()
	t.Log(msg)
	n := 0
	for _, a := range dead {
		if strings.Contains(msg, a) {
			n++
		}
	}
	if n != 3 || !strings.Contains(msg, `cluster "x"`) || !strings.Contains(msg, "after 3 attempt(s)") {
		t.Fatalf("error %q: want cluster x, 3 attempts, 3 distinct hosts named (found %d)", msg, n)
	}
	var total float64
	for _, a := range dead {
		total += value(mt.UpstreamCxConnectFail.WithLabelValues("x", a))
	}
	if total != 3 {
		t.Fatalf("connect failures counted = %v; want 3", total)
	}
	// Only two hosts: both are tried once, then Dial stops.
	_, _, _, err = get(t, m, "y").Dial(t.Context(), &lb.Request{})
	if err == nil || !strings.Contains(err.Error(), "after 2 attempt(s)") || !strings.Contains(err.Error(), "no other healthy host") {
		t.Fatalf("err = %v; want 2 attempts then no other host", err)
	}
}

func TestConnectTimeout(t *testing.T) {
	var calls atomic.Int32
	blackhole := func(ctx context.Context, _, _ string) (net.Conn, error) {
		calls.Add(1)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	m, _ := newManager(t, cluster.Options{Dial: blackhole})
	cfg := simple("t", "", "10.0.0.1:80", "10.0.0.2:80")
	cfg.ConnectTimeout = dur(50 * time.Millisecond)
	cfg.MaxConnectAttempts = 2
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _, _, err := get(t, m, "t").Dial(t.Context(), &lb.Request{})
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "connect_timeout 50ms") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want connect_timeout 50ms", err)
	}
	if calls.Load() != 2 || took < 100*time.Millisecond || took > 3*time.Second {
		t.Fatalf("%d dials in %v; want 2 dials of 50ms each", calls.Load(), took)
	}
	// The caller's ctx ends first: no further host is tried.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	calls.Store(0)
	if _, _, _, err := get(t, m, "t").Dial(ctx, &lb.Request{}); err == nil || calls.Load() != 1 {
		t.Fatalf("err = %v after %d dials; want a failure after 1 dial", err, calls.Load())
	}
}

func TestOriginalDstCluster(t *testing.T) {
	m, _ := newManager(t, cluster.Options{})
	cfg := config.Cluster{Name: "od", Type: config.ClusterOriginalDst, Hosts: hosts("10.0.0.1:80", "10.0.0.2:80"), PickTimeout: dur(0)}
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "od")
	h, done, err := c.Pick(t.Context(), &lb.Request{OriginalDst: netip.MustParseAddrPort("10.0.0.2:80")})
	if err != nil || h.Addr() != "10.0.0.2:80" {
		t.Fatalf("Pick = %v, %v", h, err)
	}
	done(lb.DoneInfo{})
	if _, _, err := c.Pick(t.Context(), &lb.Request{OriginalDst: netip.MustParseAddrPort("10.0.0.3:80")}); !errors.Is(err, cluster.ErrNoHealthyUpstream) {
		t.Fatalf("unknown destination: err = %v", err)
	}
}

// TestConcurrentPickDuringApply runs picks and dials' bookkeeping while hosts, weights,
// balancers and health change underneath (run with -race).
func TestConcurrentPickDuringApply(t *testing.T) {
	m, _ := newManager(t, cluster.Options{})
	mk := func(i int) config.Cluster {
		lbs := []string{lb.RoundRobin, lb.LeastRequest, lb.Maglev, lb.WeightedRoundRobin, lb.PeakEWMA}
		cfg := simple("c", lbs[i%len(lbs)], "10.0.0.1:80", fmt.Sprintf("10.0.1.%d:80", i%5+1), fmt.Sprintf("10.0.2.%d:80", i%3+1))
		cfg.Hosts[0].Weight = uint32(i%4 + 1)
		cfg.LBConfig = &config.LBConfig{MaglevTableSize: 1009}
		return cfg
	}
	if err := m.Apply([]config.Cluster{mk(0)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var picks atomic.Int64
	var kept sync.Map // every Stats seen, to check in-flight counts return to 0
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				c, ok := m.Get("c")
				if !ok {
					t.Error("cluster vanished")
					return
				}
				h, done, err := c.Pick(ctx, &lb.Request{HashKey: uint64(g<<20 | i), HasHash: true})
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("Pick: %v", err)
					}
					return
				}
				kept.Store(h.Stats(), h.Addr())
				picks.Add(1)
				done(lb.DoneInfo{Latency: time.Duration(i%50) * time.Microsecond})
			}
		})
	}
	for i := 1; i <= 200; i++ {
		if err := m.Apply([]config.Cluster{mk(i)}); err != nil {
			t.Fatal(err)
		}
		get(t, m, "c").SetHostHealth("10.0.0.1:80", i%2 == 0)
	}
	testutil.Eventually(t, 5*time.Second, "some picks", func() bool { return picks.Load() > 100 })
	cancel()
	wg.Wait()
	kept.Range(func(k, v any) bool {
		if a := k.(*lb.HostStats).Active(); a != 0 {
			t.Errorf("%v: %d in flight after every done", v, a)
		}
		return true
	})
}

// BenchmarkClusterPick is Cluster.Pick + done over 3 and 100 hosts: one atomic load of the
// snapshot plus the balancer; 0 allocs/op.
func BenchmarkClusterPick(b *testing.B) {
	for _, lbType := range []string{lb.RoundRobin, lb.LeastRequest, lb.Maglev} {
		for _, n := range []int{3, 100} {
			b.Run(fmt.Sprintf("%s/%d", lbType, n), func(b *testing.B) {
				addrs := make([]string, n)
				for i := range addrs {
					addrs[i] = fmt.Sprintf("10.0.%d.%d:80", i/250, i%250+1)
				}
				m := cluster.NewManager(cluster.Options{})
				if err := m.Apply([]config.Cluster{simple("c", lbType, addrs...)}); err != nil {
					b.Fatal(err)
				}
				c, _ := m.Get("c")
				r := &lb.Request{HasHash: true}
				ctx := b.Context()
				b.ReportAllocs()
				for b.Loop() {
					r.HashKey++
					_, done, err := c.Pick(ctx, r)
					if err != nil {
						b.Fatal(err)
					}
					done(lb.DoneInfo{})
				}
			})
		}
	}
}

// TestConnectFailureSeriesLeaveWithHost: upstream_connect_failures_total has a series per
// host; one for a host that leaves its cluster (EDS churn), or for any host of a removed
// cluster, is deleted, so the series do not pile up.
func TestConnectFailureSeriesLeaveWithHost(t *testing.T) {
	dead, live := deadAddr(t), liveServer(t)
	m, mt := newManager(t, cluster.Options{})
	series := func() int {
		ch := make(chan prometheus.Metric, 16)
		mt.UpstreamCxConnectFail.Collect(ch)
		close(ch)
		return len(ch)
	}
	fail := func() {
		t.Helper()
		c := get(t, m, "x")
		for i := range 4 {
			conn, _, done, err := c.Dial(t.Context(), &lb.Request{})
			if err != nil {
				t.Fatalf("Dial %d: %v", i, err)
			}
			conn.Close()
			done(lb.DoneInfo{})
		}
		if v := value(mt.UpstreamCxConnectFail.WithLabelValues("x", dead)); v == 0 {
			t.Fatal("no connect failure counted for the dead host")
		}
	}
	if err := m.Apply([]config.Cluster{simple("x", lb.RoundRobin, dead, live)}); err != nil {
		t.Fatal(err)
	}
	fail()
	if err := m.Apply([]config.Cluster{simple("x", lb.RoundRobin, live)}); err != nil {
		t.Fatal(err)
	}
	if n := series(); n != 0 {
		t.Fatalf("%d connect-failure series after the dead host left; want 0", n)
	}
	if err := m.Apply([]config.Cluster{simple("x", lb.RoundRobin, dead, live)}); err != nil {
		t.Fatal(err)
	}
	fail()
	if err := m.Apply(nil); err != nil {
		t.Fatal(err)
	}
	if n := series(); n != 0 {
		t.Fatalf("%d connect-failure series after the cluster was removed; want 0", n)
	}
}

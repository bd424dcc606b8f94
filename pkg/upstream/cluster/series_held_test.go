package cluster_test

import (
	"sync"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// countAll makes every count the proxy makes on a cluster.
func countAll(c *cluster.Cluster) {
	c.CountRetry()
	c.CountRetryBufferOverflow()
	c.CountOverflow(cluster.MaxConnections)
	for _, r := range []cluster.MirrorResult{cluster.MirrorSent, cluster.MirrorDropped, cluster.MirrorFailed} {
		c.CountMirror(r)
	}
}

// TestProxyCountsAfterClusterRemoved: the counts the proxy makes on a cluster (retries,
// retry-buffer and breaker overflows, mirrors) land on the cluster's series while it
// serves, and a count on a *Cluster that outlived its removal makes no series again,
// whether its child was made before the removal (x) or never was (y). A request still in
// flight holds a breaker unit, so the late sweep does not hide a series made again. The
// name added again counts from 0.
func TestProxyCountsAfterClusterRemoved(t *testing.T) {
	live := liveServer(t)
	m, mt := newManager(t, cluster.Options{})
	if err := m.Apply([]config.Cluster{simple("x", lb.RoundRobin, live), simple("y", lb.RoundRobin, live)}); err != nil {
		t.Fatal(err)
	}
	x, y := get(t, m, "x"), get(t, m, "y")
	countAll(x)
	for _, want := range []struct {
		v    float64
		name string
	}{
		{value(mt.UpstreamRetries.WithLabelValues("x")), "upstream_retries_total"},
		{value(mt.UpstreamOverflow.WithLabelValues("x", "retry_buffer")), "upstream_overflow_total{retry_buffer}"},
		{value(mt.UpstreamOverflow.WithLabelValues("x", "connections")), "upstream_overflow_total{connections}"},
		{value(mt.UpstreamMirrors.WithLabelValues("x", "sent")), "upstream_mirrors_total{sent}"},
		{value(mt.UpstreamMirrors.WithLabelValues("x", "dropped")), "upstream_mirrors_total{dropped}"},
		{value(mt.UpstreamMirrors.WithLabelValues("x", "failed")), "upstream_mirrors_total{failed}"},
	} {
		if want.v != 1 {
			t.Fatalf("cluster x, one count: %s %v; want 1", want.name, want.v)
		}
	}
	for _, c := range []*cluster.Cluster{x, y} {
		if !c.TryAcquire(cluster.MaxRequests) {
			t.Fatal("max_requests refused a request")
		}
	}

	if err := m.Apply(nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"x", "y"} {
		if s := seriesWith(t, mt, "cluster", n); len(s) > 0 {
			t.Fatalf("cluster %s removed; its series stay:\n%v", n, s)
		}
	}
	countAll(x)
	countAll(y)
	for _, n := range []string{"x", "y"} {
		if s := seriesWith(t, mt, "cluster", n); len(s) > 0 {
			t.Fatalf("cluster %s removed; counts that came late made series again:\n%v", n, s)
		}
	}
	x.Release(cluster.MaxRequests)
	y.Release(cluster.MaxRequests)

	if err := m.Apply([]config.Cluster{simple("x", lb.RoundRobin, live)}); err != nil {
		t.Fatal(err)
	}
	x.CountRetry() // the old *Cluster: not the new one's series
	get(t, m, "x").CountRetry()
	if v := value(mt.UpstreamRetries.WithLabelValues("x")); v != 1 {
		t.Fatalf("re-added cluster, one retry: upstream_retries_total %v; want 1", v)
	}
}

// TestProxyCountsRaceRemoval: first counts racing with the cluster's removal leave no
// series once both are done (run with -race).
func TestProxyCountsRaceRemoval(t *testing.T) {
	live := liveServer(t)
	for range 20 {
		m, mt := newManager(t, cluster.Options{})
		if err := m.Apply([]config.Cluster{simple("x", lb.RoundRobin, live)}); err != nil {
			t.Fatal(err)
		}
		x := get(t, m, "x")
		if !x.TryAcquire(cluster.MaxRequests) { // no late sweep meanwhile
			t.Fatal("max_requests refused a request")
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { countAll(x) })
		}
		if err := m.Apply(nil); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		countAll(x)
		if s := seriesWith(t, mt, "cluster", "x"); len(s) > 0 {
			t.Fatalf("cluster x removed while counted; series stay:\n%v", s)
		}
		x.Release(cluster.MaxRequests)
	}
}

// BenchmarkCountRetry: a count on the cluster's held child against the label lookup per
// event it replaces in the proxy.
func BenchmarkCountRetry(b *testing.B) {
	mt := metrics.New()
	m := cluster.NewManager(cluster.Options{Metrics: mt})
	if err := m.Apply([]config.Cluster{simple("x", lb.RoundRobin, "127.0.0.1:1")}); err != nil {
		b.Fatal(err)
	}
	x, _ := m.Get("x")
	b.Run("held", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			x.CountRetry()
		}
	})
	b.Run("lookup", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			mt.UpstreamRetries.WithLabelValues("x").Inc()
		}
	})
}

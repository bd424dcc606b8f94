package cluster_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// seriesWith gathers mt's registry and returns the series that have label=value, as
// "name{labels} value".
func seriesWith(t *testing.T, mt *metrics.Set, label, value string) []string {
	t.Helper()
	mfs, err := mt.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			match := false
			for _, lp := range m.GetLabel() {
				match = match || lp.GetName() == label && lp.GetValue() == value
			}
			if !match {
				continue
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			out = append(out, fmt.Sprintf("%s%v %v", mf.GetName(), m.GetLabel(), v))
		}
	}
	return out
}

// TestClusterSeriesLeaveWithCluster: every series labelled with a cluster goes when the
// cluster is removed, and stays gone when a connection and a connect attempt that outlive
// the cluster end afterwards (the gauge would come back at -1, the counter at 1). A series
// a late count makes again by a label lookup goes when the last request ends. The name
// added again starts at 0.
func TestClusterSeriesLeaveWithCluster(t *testing.T) {
	dead, live := deadAddr(t), liveServer(t)
	m, mt := newManager(t, cluster.Options{})
	apply := func(cs ...config.Cluster) {
		t.Helper()
		if err := m.Apply(cs); err != nil {
			t.Fatal(err)
		}
	}
	apply(simple("x", lb.RoundRobin, live), simple("d", lb.RoundRobin, dead))

	// x: an open connection; d: a failed connect (its per-host series exists), then a
	// connect attempt whose failure is reported after the removal.
	x := get(t, m, "x")
	conn, _, done, err := x.Dial(t.Context(), &lb.Request{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if !x.TryAcquire(cluster.MaxRequests) { // a request in flight
		t.Fatal("max_requests refused the first request")
	}
	d := get(t, m, "d")
	if _, _, _, err := d.Dial(t.Context(), &lb.Request{}); err == nil {
		t.Fatal("dial to a refused address succeeded")
	}
	r := &lb.Request{}
	var late cluster.Attempts
	if err := d.StartAttempts(&late, r); err != nil {
		t.Fatal(err)
	}
	if _, _, err := late.Next(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"x", "d"} {
		if len(seriesWith(t, mt, "cluster", n)) == 0 {
			t.Fatalf("no series for cluster %s before the removal", n)
		}
	}

	apply()
	for _, n := range []string{"x", "d"} {
		if s := seriesWith(t, mt, "cluster", n); len(s) > 0 {
			t.Fatalf("cluster %s removed; its series stay:\n%v", n, s)
		}
	}
	// The connection and the attempt end after the removal.
	conn.Close()
	done(lb.DoneInfo{})
	late.Failed(errors.New("connection refused"), false, false)
	late.Abandon()
	for _, n := range []string{"x", "d"} {
		if s := seriesWith(t, mt, "cluster", n); len(s) > 0 {
			t.Fatalf("cluster %s removed; updates that came late made series again:\n%v", n, s)
		}
	}

	// The proxy counts a retry of the request that outlived x with a lookup per event,
	// which makes the series again; it goes once the request ends.
	mt.UpstreamRetries.WithLabelValues("x").Inc()
	x.Release(cluster.MaxRequests)
	for i := 0; len(seriesWith(t, mt, "cluster", "x")) > 0; i++ {
		if i == 500 {
			t.Fatalf("cluster x removed, its last request ended; a late count's series stays:\n%v", seriesWith(t, mt, "cluster", "x"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A count that comes even later, with no request left: the name's next use starts at 0.
	mt.UpstreamRetries.WithLabelValues("x").Inc()

	// Added again: fresh, and counting.
	apply(simple("x", lb.RoundRobin, live))
	if v := value(mt.UpstreamRetries.WithLabelValues("x")); v != 0 {
		t.Fatalf("re-added cluster: upstream_retries_total %v; want 0", v)
	}
	x2 := get(t, m, "x")
	if v := value(mt.UpstreamCxActive.WithLabelValues("x")); v != 0 {
		t.Fatalf("re-added cluster: upstream_connections_active %v; want 0", v)
	}
	if v := value(mt.UpstreamCxTotal.WithLabelValues("x")); v != 0 {
		t.Fatalf("re-added cluster: upstream_connections_total %v; want 0", v)
	}
	conn2, _, done2, err := x2.Dial(t.Context(), &lb.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if v := value(mt.UpstreamCxActive.WithLabelValues("x")); v != 1 {
		t.Fatalf("re-added cluster, one connection: upstream_connections_active %v; want 1", v)
	}
	conn2.Close()
	done2(lb.DoneInfo{})
	if v := value(mt.UpstreamCxActive.WithLabelValues("x")); v != 0 {
		t.Fatalf("re-added cluster, connection closed: upstream_connections_active %v; want 0", v)
	}
}

// TestConnectFailureAfterHostLeft: a connect failure reported after its host left the
// cluster does not make the host's deleted series again.
func TestConnectFailureAfterHostLeft(t *testing.T) {
	dead, live := deadAddr(t), liveServer(t)
	m, mt := newManager(t, cluster.Options{})
	if err := m.Apply([]config.Cluster{simple("x", lb.RoundRobin, dead)}); err != nil {
		t.Fatal(err)
	}
	var a cluster.Attempts
	if err := get(t, m, "x").StartAttempts(&a, &lb.Request{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Next(); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply([]config.Cluster{simple("x", lb.RoundRobin, live)}); err != nil {
		t.Fatal(err)
	}
	a.Failed(errors.New("connection refused"), false, false)
	a.Abandon()
	if s := seriesWith(t, mt, "host", dead); len(s) > 0 {
		t.Fatalf("host %s left; a late failure made its series again:\n%v", dead, s)
	}
}

package cluster_test

import (
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// A host that accepts every connection but fails every answer is ejected after
// consecutive_5xx failed answers, even when each request is sent on a new connection
// (an upstream that answers 500 and closes): a connect on its own is not a success, as in
// Envoy, where only tcp_proxy counts a connect as the final result.
func TestOutlierConnectDoesNotResetFailures(t *testing.T) {
	const bad = "10.0.0.1:80"
	d := newPipeDialer()
	m, _ := newManager(t, cluster.Options{Dial: d.Dial})
	od := &config.OutlierDetection{Consecutive5xx: 3, BaseEjectionTime: dur(time.Hour)}
	if err := m.Apply([]config.Cluster{withOutlier(simple("o", lb.RoundRobin, bad, "10.0.0.2:80", "10.0.0.3:80"), od)}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "o")
	h := hostByAddr(t, c, bad)
	for i := range 3 {
		if h.Health().Ejected {
			t.Fatalf("ejected after %d failed answers; want 3", i)
		}
		conn, got, done, err := c.DialHost(t.Context(), &lb.Request{}, h)
		if err != nil || got != h {
			t.Fatalf("dial %d: host %v, %v", i, got, err)
		}
		h.ReportResult(false) // the answer failed, and the connection is closed
		conn.Close()
		done(lb.DoneInfo{})
	}
	if !h.Health().Ejected {
		t.Fatal("a host that accepted each connection and failed each answer is not ejected")
	}
}

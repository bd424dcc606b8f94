package lb_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb/lbtest"
)

// A host without a sample that joins hosts with samples starts from the median of their
// estimates, not from DefaultRTT; a reset host (back up) likewise.
func TestPeakEWMAPriorIsMedian(t *testing.T) {
	clock := lbtest.NewClock(time.Unix(1700000000, 0))
	o := lb.Options{Now: clock.Now, Decay: 10 * time.Second, DefaultRTT: 30 * time.Millisecond}
	hs := lbtest.Hosts("a", "b", "c")
	lat := []time.Duration{time.Millisecond, 2 * time.Millisecond, 400 * time.Millisecond}
	for i := range hs {
		p := lb.NewPeakEWMA(hs[i:i+1], o)
		_, done, err := p.Pick(t.Context(), &lb.Request{})
		if err != nil {
			t.Fatal(err)
		}
		done(lb.DoneInfo{Latency: lat[i]})
	}
	d := lbtest.Hosts("d")[0]
	lb.NewPeakEWMA(append(hs[:3:3], d), o)
	if v, sampled := d.Stats().PeakEWMA(); sampled || v != 2*time.Millisecond {
		t.Fatalf("new host's prior %v (sampled %v); want the median 2ms", v, sampled)
	}
	hs[2].Stats().ResetPeakEWMA()
	lb.NewPeakEWMA(hs, o)
	if v, sampled := hs[2].Stats().PeakEWMA(); sampled || v > 2*time.Millisecond {
		t.Fatalf("reset host's prior %v (sampled %v); want at most 2ms, not its old 400ms", v, sampled)
	}
	e := lbtest.Hosts("e")[0]
	lb.NewPeakEWMA([]lb.Host{e}, o)
	if v, _ := e.Stats().PeakEWMA(); v != 30*time.Millisecond {
		t.Fatalf("prior with no sampled host %v; want DefaultRTT", v)
	}
}

// A host that was slow, went down and comes back up healthy gets traffic again at once
// under light (sequential) load, instead of waiting for its old peak estimate to decay
// below the other host's (tens of seconds with the default 10 s ewma_decay). Real HTTP
// requests to two loopback servers; health flaps through SetHostHealth.
func TestPeakEWMAReturningHostGetsTraffic(t *testing.T) {
	var slow atomic.Bool
	slow.Store(true)
	srvA := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if slow.Load() {
			time.Sleep(100 * time.Millisecond)
		}
		_, _ = w.Write([]byte("a"))
	}))
	defer srvA.Close()
	srvB := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("b"))
	}))
	defer srvB.Close()
	a, b := strings.TrimPrefix(srvA.URL, "http://"), strings.TrimPrefix(srvB.URL, "http://")

	m := cluster.NewManager(cluster.Options{Metrics: metrics.New(), Log: zaptest.NewLogger(t)})
	if err := m.Apply([]config.Cluster{{Name: "e", LBType: lb.PeakEWMA, Hosts: []config.Host{{Address: a}, {Address: b}}}}); err != nil {
		t.Fatal(err)
	}
	c, _ := m.Get("e")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	// get makes n sequential requests through picks and counts them per host.
	get := func(n int) map[string]int {
		seen := map[string]int{}
		for range n {
			h, done, err := c.Pick(t.Context(), &lb.Request{})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			resp, err := hc.Get("http://" + h.Addr() + "/")
			if err != nil {
				done(lb.DoneInfo{Err: err})
				t.Fatal(err)
			}
			resp.Body.Close()
			done(lb.DoneInfo{Latency: time.Since(start)})
			seen[h.Addr()]++
		}
		return seen
	}

	c.SetHostHealth(b, false)
	if seen := get(3); seen[a] != 3 {
		t.Fatalf("with b down: %v", seen)
	}
	c.SetHostHealth(b, true)
	c.SetHostHealth(a, false) // a is taken out and fixed
	slow.Store(false)
	if seen := get(10); seen[b] != 10 {
		t.Fatalf("with a down: %v", seen)
	}
	c.SetHostHealth(a, true)
	seen := get(20)
	est, _ := c.Hosts()[0].Stats().PeakEWMA()
	t.Logf("after a came back: %v (a's estimate %v)", seen, est)
	if seen[a] == 0 {
		t.Fatalf("a got none of 20 requests after it came back healthy (%v): its old ~100ms estimate still held it off", seen)
	}
}

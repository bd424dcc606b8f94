package overload

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var sink []byte

func gaugeValue(g prometheus.Gauge) float64 {
	var d dto.Metric
	if err := g.Write(&d); err != nil {
		panic(err)
	}
	return d.GetGauge().GetValue()
}

// Memory pauses once real allocations take use past PauseAt of the limit, and resumes
// once they are freed and use falls under ResumeAt; the gauge follows.
func TestMemoryPausesAndResumes(t *testing.T) {
	runtime.GC()
	debug.FreeOSMemory()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "overloaded"})
	probe := NewMemory(1, nil, nil)
	base := probe.Used()
	m := NewMemory(base+40<<20, nil, g)
	if m.Check() || m.Overloaded() {
		t.Fatalf("overloaded at %d of %d bytes", m.Used(), m.limit)
	}
	sink = make([]byte, 48<<20)
	for i := 0; i < len(sink); i += 4096 {
		sink[i] = 1
	}
	if !m.Check() || !m.Overloaded() || gaugeValue(g) != 1 {
		t.Fatalf("not overloaded at %d of %d bytes (pause at %d)", m.Used(), m.limit, m.pauseAt)
	}
	sink = nil
	runtime.GC()
	debug.FreeOSMemory()
	if m.Check() || m.Overloaded() || gaugeValue(g) != 0 {
		t.Fatalf("still overloaded at %d of %d bytes (resume at %d)", m.Used(), m.limit, m.resumeAt)
	}
	var none *Memory
	if none.Overloaded() {
		t.Fatal("a nil Memory reports overload")
	}
}

// Between the two marks the state holds: no flapping around one threshold.
func TestMemoryHysteresis(t *testing.T) {
	m := NewMemory(1, nil, nil)
	used := m.Used()
	// A limit that puts use between ResumeAt and PauseAt.
	m = NewMemory(uint64(float64(used)/0.9), nil, nil)
	if m.Check() {
		t.Fatal("paused below PauseAt")
	}
	m.over.Store(true)
	if !m.Check() {
		t.Fatal("resumed above ResumeAt")
	}
}

func TestRunStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { NewMemory(1, nil, nil).Run(ctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

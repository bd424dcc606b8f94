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
	m.shrink = func() {} // a collection here could take use under ResumeAt
	if m.Check() {
		t.Fatal("paused below PauseAt")
	}
	m.over.Store(true)
	if !m.Check() {
		t.Fatal("resumed above ResumeAt")
	}
}

// Memory freed while paused (garbage no collection has seen yet, as a closed connection's
// buffers are) lets accepting resume without anything else collecting: Check shrinks the
// heap itself.
func TestMemoryShrinksWhilePaused(t *testing.T) {
	runtime.GC()
	debug.FreeOSMemory()
	probe := NewMemory(1, nil, nil)
	m := NewMemory(probe.Used()+40<<20, nil, nil)
	shrinks := 0
	m.shrink = func() { shrinks++; debug.FreeOSMemory() }
	sink = make([]byte, 48<<20)
	for i := 0; i < len(sink); i += 4096 {
		sink[i] = 1
	}
	if !m.Check() {
		t.Fatalf("not overloaded at %d of %d bytes (pause at %d)", m.Used(), m.limit, m.pauseAt)
	}
	if shrinks != 0 {
		t.Fatalf("shrank %d times on pausing; want none before the next check", shrinks)
	}
	sink = nil
	if m.Check() || m.Overloaded() {
		t.Fatalf("still overloaded at %d of %d bytes (resume at %d) after %d shrinks", m.Used(), m.limit, m.resumeAt, shrinks)
	}
	if shrinks != 1 {
		t.Fatalf("shrank %d times, want 1", shrinks)
	}
}

// While paused above ResumeAt, the heap is shrunk at most once a ShrinkEvery; never while
// accepting.
func TestMemoryShrinkRate(t *testing.T) {
	m := NewMemory(1<<40, nil, nil)
	shrinks := 0
	m.shrink = func() { shrinks++ }
	m.Check()
	m.Check()
	if shrinks != 0 {
		t.Fatalf("shrank %d times while accepting", shrinks)
	}
	m = NewMemory(1, nil, nil) // always over
	m.shrink = func() { shrinks++ }
	for range 5 {
		if !m.Check() {
			t.Fatal("resumed above ResumeAt")
		}
	}
	if shrinks != 1 {
		t.Fatalf("shrank %d times in five checks within %v, want 1", shrinks, ShrinkEvery)
	}
	m.shrunk = m.shrunk.Add(-ShrinkEvery)
	m.Check()
	if shrinks != 2 {
		t.Fatalf("shrank %d times, want 2 once %v passed", shrinks, ShrinkEvery)
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

// From WatchAt of the limit, and while paused, memory is sampled every WatchInterval, so
// fast arrivals overshoot the limit by at most what they allocate in that time.
func TestMemoryIntervalNearLimit(t *testing.T) {
	m := NewMemory(1000, nil, nil)
	for _, c := range []struct {
		over bool
		used uint64
		want time.Duration
	}{
		{false, 0, Interval},
		{false, 799, Interval},
		{false, 800, WatchInterval},
		{false, 949, WatchInterval},
		{true, 960, WatchInterval},
		{true, 100, WatchInterval}, // paused: the next sample resumes
	} {
		if got := m.interval(c.over, c.used); got != c.want {
			t.Errorf("interval(over %v, used %d) = %v, want %v", c.over, c.used, got, c.want)
		}
	}
}

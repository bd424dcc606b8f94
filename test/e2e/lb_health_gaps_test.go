package e2e

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// latencyHost is an HTTP upstream whose answers take delay and whose /healthz answers
// 200 or 503 as healthy says.
type latencyHost struct {
	name    string
	addr    string
	delay   atomic.Int64 // ns
	healthy atomic.Bool
}

func newLatencyHost(t *testing.T, name string) *latencyHost {
	h := &latencyHost{name: name}
	h.healthy.Store(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if !h.healthy.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		time.Sleep(time.Duration(h.delay.Load()))
		io.WriteString(w, h.name)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("%s: %v", name, err)
		}
	}()
	t.Cleanup(func() { srv.Close(); <-done })
	return h
}

// TestLBPeakEWMAHostBackFromDown: a host that was slow, failed its health checks and
// comes back fast gets requests again at once under sequential load, rather than after its
// old ~100 ms estimate decays below the other host's (about 45 s with ewma_decay 10s).
func TestLBPeakEWMAHostBackFromDown(t *testing.T) {
	a, b := newLatencyHost(t, "A"), newLatencyHost(t, "B")
	a.delay.Store(int64(100 * time.Millisecond))
	r := startFlapRig(t, []string{a.addr, b.addr}, map[string]any{
		"lb_type": "LB_PEAK_EWMA", "health_check": flapHTTPCheck(nil)})
	r.waitHealthy(2, "start")
	ask := func(n int, what string) map[string]int {
		seen := map[string]int{}
		for i := range n {
			code, body, err := r.get(false, 5*time.Second)
			if err != nil || code != 200 {
				t.Fatalf("%s: request %d: %d %q %v", what, i, code, body, err)
			}
			seen[body]++
		}
		return seen
	}

	b.healthy.Store(false)
	r.waitHealthy(1, "B failing checks")
	if seen := ask(3, "A alone, slow"); seen["A"] != 3 {
		t.Fatalf("A alone: %v", seen)
	}
	b.healthy.Store(true)
	r.waitHealthy(2, "B back")
	a.healthy.Store(false)
	r.waitHealthy(1, "A failing checks")
	a.delay.Store(0) // fixed while out
	if seen := ask(10, "B alone"); seen["B"] != 10 {
		t.Fatalf("B alone: %v", seen)
	}
	a.healthy.Store(true)
	r.waitHealthy(2, "A back")
	seen := ask(20, "A back, fast")
	if seen["A"] == 0 {
		t.Fatalf("A, back up and fast, got none of 20 sequential requests: %v", seen)
	}
	t.Logf("after A came back: %v", seen)
}

package network

import (
	"context"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/testutil"
)

func openFDs(t *testing.T) int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(fds)
}

// TestNoFDOrGoroutineLeak (ROBUSTNESS row 44): a burst of connections over a listener with
// max_connections, idle timeout and a drain leaves descriptors and goroutines at their
// baseline. Not parallel, so other tests' sockets do not disturb the counts.
func TestNoFDOrGoroutineLeak(t *testing.T) {
	fds0, g0 := openFDs(t), runtime.NumGoroutine()
	func() {
		cfg := testConfig(t, "leak", nil)
		cfg.Handler = echo(cfg.Conn.Pool)
		cfg.Log = zap.NewNop()
		cfg.MaxConnections = 8
		cfg.Conn.IdleTimeout = 50 * time.Millisecond
		l, cancel, errc := serveTest(t, cfg)
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				c := dial(t, l.Addr())
				if i%2 == 0 { // half talk and hang up, half idle until the timeout
					if got, err := roundTrip(c, "ping", 5*time.Second); err != nil || got != "ping" {
						t.Errorf("conn %d: %q, %v", i, got, err)
					}
					c.Close()
					return
				}
				if err := waitClosedByPeer(c, 5*time.Second); err != nil {
					t.Errorf("idle conn %d: %v", i, err)
				}
				c.Close()
			})
		}
		wg.Wait()
		cancel()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		l.Drain(dctx)
	}()
	testutil.Eventually(t, 5*time.Second, "descriptors and goroutines back to baseline", func() bool {
		return openFDs(t) <= fds0 && runtime.NumGoroutine() <= g0
	})
}

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/test/framework"
)

// TestDrainUnderLoadLosesNoRequest: HTTP/1 and HTTP/2 clients (Go's, which honour
// Connection: close and GOAWAY) keep sending through an Auto listener while mosnlite gets
// SIGTERM. Readiness goes off at once and clients are told to go (Connection: close,
// GOAWAY) while the listener still accepts for drain.delay; the clients stop within that
// delay, as a load balancer that saw readiness go would take them elsewhere. No request
// may fail, the answers during the delay carry Connection: close, and the process exits 0
// (ROBUSTNESS 43).
func TestDrainUnderLoadLosesNoRequest(t *testing.T) {
	up, _ := h2cUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(2 * time.Millisecond)
		_, _ = io.WriteString(w, "ok")
	})
	listen, admin := framework.FreePort(t), framework.FreePort(t)
	var cfg map[string]any
	if err := json.Unmarshal([]byte(httpProxyConfig(listen, "Auto", "", []any{routeTo("/", nil)}, up)), &cfg); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(admin)
	n, _ := strconv.Atoi(port)
	cfg["admin"] = map[string]any{"address": map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": n}}}
	cfg["drain"] = map[string]any{"delay": "2s", "timeout": "10s"}
	raw, _ := json.Marshal(cfg)
	p := framework.StartProxy(t, string(raw))

	h1 := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 10 * time.Second}
	t.Cleanup(h1.CloseIdleConnections)
	h2c := h2cClient(t)
	var (
		stop               atomic.Bool
		ok, failed, closes atomic.Int64
		errMu              sync.Mutex
		firstErr           error
		wg                 sync.WaitGroup
	)

	for i := range 8 {
		c, isH2 := h1, i%2 == 1
		if isH2 {
			c = h2c
		}
		wg.Go(func() {
			for j := 0; !stop.Load() && j < 100000; j++ {
				resp, err := c.Get(fmt.Sprintf("http://%s/x?w=%d&n=%d", listen, i, j))
				if err == nil {
					var b []byte
					b, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && (resp.StatusCode != 200 || string(b) != "ok") {
						err = fmt.Errorf("status %d body %q", resp.StatusCode, b)
					}
					if resp.Close {
						closes.Add(1)
					}
				}
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					continue
				}
				ok.Add(1)
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	before := ok.Load()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Readiness goes off at once; the clients keep going for 1 s of the 2 s delay.
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _ := getBody(t, "http://"+admin+"/ready")
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready = %d after SIGTERM", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()
	t.Logf("%d requests before SIGTERM, %d after; %d answers with Connection: close; %d failed", before, ok.Load()-before, closes.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed during the drain; first: %v", failed.Load(), firstErr)
	}
	if ok.Load()-before == 0 || closes.Load() == 0 {
		t.Fatalf("no request served during the drain delay (%d) or none answered with Connection: close (%d)", ok.Load()-before, closes.Load())
	}
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/test/framework"
	"github.com/mosnlite/mosnlite/test/framework/rpcpeer"
)

// TestDrainUnderLoadLosesNoRequest: HTTP/1 and HTTP/2 clients (Go's, which honour
// Connection: close and GOAWAY), and bolt and dubbo clients (rpcpeer's, over the real
// codecs: mosnlite's bolt, dubbo-go-hessian2) keep sending through an Auto, a bolt and a
// dubbo listener while mosnlite gets SIGTERM. Readiness goes off at once and clients are
// told to go (Connection: close, GOAWAY, bolt go-away, dubbo readonly event) while the
// listeners still accept for drain.delay. The HTTP clients stop within that delay, as a
// load balancer that saw readiness go would take them elsewhere; the RPC clients stop
// sending on a connection once it got its go-away, as SOFA and Dubbo consumers do. On one
// RPC connection of two a request is in flight from before SIGTERM until after drain.delay,
// when the listeners have stopped accepting. No request may fail
// or get a wrong answer, the HTTP answers during the delay carry Connection: close, every
// RPC connection is told to go and then closed by the proxy once its requests are
// answered, and the process exits 0 before the drain deadline (ROBUSTNESS 43). The
// drain is started by SIGTERM, and in a second run by the admin endpoint POST
// /api/v1/drain (a pod's preStop hook), which must do the same.
func TestDrainUnderLoadLosesNoRequest(t *testing.T) {
	t.Run("sigterm", func(t *testing.T) { drainUnderLoad(t, false) })
	t.Run("admin-drain", func(t *testing.T) { drainUnderLoad(t, true) })
}

func drainUnderLoad(t *testing.T, viaAdmin bool) {
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
	const delay, timeout = 2 * time.Second, 10 * time.Second
	cfg["drain"] = map[string]any{"delay": delay.String(), "timeout": timeout.String()}
	const slow = delay + time.Second // answered after the listeners stopped accepting
	boltUp := startBoltPeer(t, rpcpeer.BoltServerOptions{Name: "bolt-up", SlowDelay: slow})
	dubboUp, err := rpcpeer.StartDubboServer(rpcpeer.DubboServerOptions{Name: "dubbo-up", SlowDelay: slow})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dubboUp.Close() })
	boltListen, dubboListen := framework.FreePort(t), framework.FreePort(t)
	drainRPCConfig(cfg, boltListen, boltUp.Addr(), dubboListen, dubboUp.Addr())
	raw, _ := json.Marshal(cfg)
	p := framework.StartProxy(t, string(raw))
	var rpcs []*drainConn
	for i := range 2 {
		rpcs = append(rpcs, dialBoltDrain(t, boltListen, "bolt-up", i), dialDubboDrain(t, dubboListen, "dubbo-up", i))
	}

	h1 := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 10 * time.Second}
	t.Cleanup(h1.CloseIdleConnections)
	h2c := h2cClient(t)
	var (
		stop               atomic.Bool
		ok, failed, closes atomic.Int64
		errMu              sync.Mutex
		firstErr           error
		wg                 sync.WaitGroup
		rpc                drainTally
	)
	ctx := rpcCtx(t, 30*time.Second)
	for i, c := range rpcs {
		rpc.load(ctx, &wg, c, 4, i < 2, &stop)
	}

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
	before, rpcBefore := ok.Load(), rpc.ok.Load()
	if viaAdmin {
		resp, err := http.Post("http://"+admin+"/api/v1/drain", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || !strings.Contains(string(body), `"status":"draining"`) {
			t.Fatalf("POST /api/v1/drain = %d %s", resp.StatusCode, body)
		}
	} else if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	term := time.Now()
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
	// Every RPC connection is told to go right away.
	for _, c := range rpcs {
		select {
		case <-c.goAway:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no go-away 5s after SIGTERM", c.name)
		}
	}
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()
	t.Logf("HTTP: %d requests before SIGTERM, %d after; %d answers with Connection: close; %d failed", before, ok.Load()-before, closes.Load(), failed.Load())
	t.Logf("RPC: %d requests before SIGTERM, %d after, %d answered after their connection's go-away; %d failed",
		rpcBefore, rpc.ok.Load()-rpcBefore, rpc.late.Load(), rpc.failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d HTTP requests failed during the drain; first: %v", failed.Load(), firstErr)
	}
	if rpc.failed.Load() != 0 {
		t.Fatalf("%d RPC requests failed during the drain; first: %v", rpc.failed.Load(), rpc.firstErr)
	}
	if ok.Load()-before == 0 || closes.Load() == 0 {
		t.Fatalf("no request served during the drain delay (%d) or none answered with Connection: close (%d)", ok.Load()-before, closes.Load())
	}
	if rpcBefore == 0 || rpc.late.Load() < 2 {
		t.Fatalf("RPC: %d requests answered before SIGTERM, %d after a go-away (the 2 slow ones at least)", rpcBefore, rpc.late.Load())
	}
	// The proxy closes each RPC connection once its requests are answered, before the
	// drain deadline; nothing arrived that answered no request.
	for _, c := range rpcs {
		select {
		case <-c.done:
		case <-time.After(delay + timeout - time.Since(term)):
			t.Fatalf("%s: still open at the drain deadline", c.name)
		}
		if n := c.strays(); n != 0 {
			t.Fatalf("%s: %d frames answered no request or could not be decoded", c.name, n)
		}
	}
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if d := time.Since(term); d >= delay+timeout {
		t.Fatalf("exited %v after SIGTERM, drain deadline %v", d, delay+timeout)
	}
}

//go:build linux

package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// A connection whose host goes down (or leaves its cluster) while a request is on it is
// closed when the request ends, not kept idle: the hosts watcher's pass ran while it was
// busy, so only put can drop it.
func TestLoopPoolPutToDownHostCloses(t *testing.T) {
	for _, tc := range []struct {
		name string
		flap func(e *env, addr string)
	}{
		{"down", func(e *env, addr string) {
			cl, _ := e.clusters.Get("c")
			cl.SetHostHealth(addr, false)
		}},
		{"removed", func(e *env, _ string) {
			if err := e.clusters.Remove("c"); err != nil {
				t.Error(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			arrived, release := make(chan struct{}), make(chan struct{})
			o := startOrigin(t, func(w http.ResponseWriter, _ *http.Request) {
				close(arrived)
				<-release
				_, _ = io.WriteString(w, "ok")
			})
			e := startLoopEnv(t, o.addr())
			c := dial(t, e.addr)
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			select {
			case <-arrived:
			case <-time.After(testTimeout):
				t.Fatal("request did not reach the origin")
			}
			tc.flap(e, o.addr())
			// Let the watcher's pass run on the loop while the connection is busy: a
			// second, empty loop pass is ordered after it.
			_ = proxy.LoopIdle(e.px)
			time.Sleep(50 * time.Millisecond)
			_ = proxy.LoopIdle(e.px)
			close(release)
			if resp, body := readResp(t, bufio.NewReader(c), http.MethodGet); resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("in-flight request: %d %q", resp.StatusCode, body)
			}
			testutil.Eventually(t, 2*time.Second, "the upstream connection closed after its request", func() bool {
				return proxy.LoopIdle(e.px) == 0 && o.closed.Load() == 1
			})
			e.noHandoffs(t)
		})
	}
}

// A request that waited for a healthy host, got one that refuses connections, and finds
// no other host up waits again (pick_timeout, within its own time) for a host to come up
// instead of answering 503 at once. The loop path hands the waiting request to the
// goroutine path (pick_wait), so both end in the cluster's dial.
func TestProxyDialRetryWaitsForHost(t *testing.T) {
	bothPaths(t, func(t *testing.T, p path) {
		o := startOrigin(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "live") })
		dead := testutil.RefusedAddr(t)
		e := p.startWith(t, `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
			{"match":{"prefix":"/"},"route":{"cluster_name":"c","timeout":"10s"}}]}]}`,
			fmt.Sprintf(`[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","pick_timeout":"10s",
			"hosts":[{"address":%q},{"address":%q}]}]`, dead, o.addr()))
		cl, _ := e.clusters.Get("c")
		cl.SetHostHealth(dead, false)
		cl.SetHostHealth(o.addr(), false)
		type answer struct {
			code int
			body string
		}
		out := make(chan answer, 1)
		c := dial(t, e.addr)
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		go func() {
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				out <- answer{0, err.Error()}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			out <- answer{resp.StatusCode, string(b)}
		}()
		time.Sleep(50 * time.Millisecond) // let the pick wait (not an assertion's timing)
		cl.SetHostHealth(dead, true)
		failures := func() float64 {
			var d dto.Metric
			_ = e.m.UpstreamCxConnectFail.WithLabelValues("c", dead).Write(&d)
			return d.GetCounter().GetValue()
		}
		testutil.Eventually(t, 5*time.Second, "the refusing host tried", func() bool { return failures() >= 1 })
		select {
		case a := <-out:
			t.Fatalf("answered %d %q after the only healthy host refused, with another host down", a.code, a.body)
		case <-time.After(100 * time.Millisecond): // still waiting (not an assertion's timing)
		}
		cl.SetHostHealth(o.addr(), true)
		select {
		case a := <-out:
			if a.code != 200 || a.body != "live" {
				t.Fatalf("answer %d %q; want 200 from the host that came up", a.code, a.body)
			}
		case <-time.After(testTimeout):
			t.Fatal("no answer after the live host came up")
		}
	})
}

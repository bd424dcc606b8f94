package server

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// churnBackend is an HTTP/1 upstream that counts its open connections and, on /hold,
// keeps the request until released.
type churnBackend struct {
	name    string
	addr    string
	body    string // what / answers
	open    atomic.Int64
	arrived chan struct{} // one value per /hold request received
	release chan struct{} // closed: /hold requests answer
}

func startChurnBackend(t *testing.T, name string) *churnBackend {
	t.Helper()
	b := &churnBackend{name: name, body: name + ":" + strings.Repeat("x", 4000),
		arrived: make(chan struct{}, 8), release: make(chan struct{})}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := b.body
		if r.URL.Path == "/hold" {
			b.arrived <- struct{}{}
			select {
			case <-b.release:
			case <-r.Context().Done():
				return
			}
			body = name + ":held"
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		io.WriteString(w, body)
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			b.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			b.open.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(func() {
		select {
		case <-b.release:
		default:
			close(b.release)
		}
		srv.Close()
	})
	b.addr = srv.Listener.Addr().String()
	return b
}

func hostsOf(bs ...*churnBackend) []config.Host {
	hs := []config.Host{}
	for _, b := range bs {
		hs = append(hs, config.Host{Address: b.addr})
	}
	return hs
}

// TestEndpointChurnUnderTraffic: a cluster's hosts change every 50ms for 2s (as EDS updates
// do: hosts added and removed, the empty set among them) while HTTP/1 requests flow through
// the proxy, and a host is removed while a request is in flight on it. Nothing panics;
// every request ends within the route timeout either with a complete 200 from a backend or
// with a clean 502/503 from the proxy (never a hang, never a truncated body); the request in
// flight on the removed host completes; the connections to the removed hosts, pooled or
// busy at the removal, are closed; goroutines return (goleak in TestMain). Both ways of
// serving HTTP/1 (event loops, a goroutine per connection) are run.
func TestEndpointChurnUnderTraffic(t *testing.T) {
	for _, loops := range []bool{true, false} {
		t.Run(map[bool]string{true: "loops", false: "goroutines"}[loops], func(t *testing.T) { endpointChurn(t, loops) })
	}
}

func endpointChurn(t *testing.T, loops bool) {
	a, b, c := startChurnBackend(t, "A"), startChurnBackend(t, "B"), startChurnBackend(t, "C")
	const routeTimeout = 3 * time.Second
	js := fmt.Sprintf(`{
	  "servers":[{"listeners":[{"name":"h","address":"127.0.0.1:0",
	    "filter_chains":[{"filters":[{"type":"proxy","config":{"downstream_protocol":"Http1","router_config_name":"r"}}]}]}],
	   "routers":[{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],
	    "routers":[{"match":{"prefix":"/"},"route":{"cluster_name":"svc","timeout":%q}}]}]}]}],
	  "cluster_manager":{"clusters":[{"name":"svc","pick_timeout":"0s","connect_timeout":"1s","hosts":[{"address":%q}]}]},
	  "drain":{"timeout":"1s"}}`, routeTimeout, a.addr)
	s := newServer(t, parseConfig(t, js), func(o *Options) { o.NoEventLoops = !loops })
	running(t, s)
	base := "http://" + addrOf(t, s, "h")

	// A request held on A, the only host.
	held := make(chan string, 1)
	go func() {
		c := http.Client{Timeout: routeTimeout + 2*time.Second}
		resp, err := c.Get(base + "/hold")
		if err != nil {
			held <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		held <- fmt.Sprintf("%d %s %v", resp.StatusCode, body, err)
	}()
	select {
	case <-a.arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the held request did not reach A")
	}

	// Traffic: clients with keep-alive connections, bounded in count and time.
	const (
		workers          = 4
		perWorker        = 400 // requests at most
		pace             = 10 * time.Millisecond
		churnFor         = 2 * time.Second
		churnEvery       = 50 * time.Millisecond
		releaseHoldAfter = 10 // updates
		clientTimeout    = routeTimeout + 2*time.Second
	)
	hostSets := [][]config.Host{hostsOf(b), hostsOf(b, c), hostsOf(), hostsOf(c), hostsOf(c, b), hostsOf(), hostsOf(b)}
	valid := map[string]bool{a.body: true, b.body: true, c.body: true}
	var (
		wg                 sync.WaitGroup
		stop               atomic.Bool
		ok, refused, total atomic.Int64
		mu                 sync.Mutex
		failures           []string
	)
	recordFailure := func(f string) {
		mu.Lock()
		failures = append(failures, f)
		mu.Unlock()
	}
	defer func() { // also on a failure below: no client outlives the test
		stop.Store(true)
		wg.Wait()
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			hc := http.Client{Timeout: clientTimeout, Transport: tr}
			for i := 0; i < perWorker && !stop.Load(); i++ {
				total.Add(1)
				started := time.Now()
				resp, err := hc.Get(base + "/")
				if err != nil {
					recordFailure(fmt.Sprintf("after %v: %v", time.Since(started), err))
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusOK && err == nil && valid[string(body)]:
					ok.Add(1)
				case (resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable) && err == nil:
					refused.Add(1)
				default:
					recordFailure(fmt.Sprintf("%d, %d bytes %.20q..., %v", resp.StatusCode, len(body), body, err))
				}
				time.Sleep(pace)
			}
		}()
	}

	// Churn: A (with the request in flight) goes at the first update and never returns;
	// B and C come and go, the empty set among the updates.
	var heldResult string
	for i := 0; i < int(churnFor/churnEvery); i++ {
		if err := s.SetClusterHosts("svc", hostSets[i%len(hostSets)]); err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
		if i == releaseHoldAfter {
			close(a.release)
			select {
			case heldResult = <-held:
			case <-time.After(clientTimeout):
				t.Fatal("the request held on the removed host A did not end")
			}
		}
		time.Sleep(churnEvery)
	}
	if err := s.SetClusterHosts("svc", hostsOf(b)); err != nil {
		t.Fatal(err)
	}
	stop.Store(true)
	wg.Wait()

	t.Logf("%d requests: %d 200, %d 502/503; held request: %s", total.Load(), ok.Load(), refused.Load(), heldResult)
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests neither a complete 200 nor a clean 502/503, e.g. %q", len(failures), total.Load(), failures[:min(len(failures), 5)])
	}
	if ok.Load() == 0 || refused.Load() == 0 {
		t.Fatal("want both complete 200s and clean 503s (the empty host set) during the churn")
	}
	if want := "200 A:held <nil>"; heldResult != want {
		t.Fatalf("request in flight on the removed host: %q; want %q", heldResult, want)
	}
	// The final set is {B}: A's and C's connections (A's was busy when A was removed) are
	// closed by the proxy, without new traffic.
	testutil.Eventually(t, 5*time.Second, "connections to the removed hosts closed", func() bool {
		return a.open.Load() == 0 && c.open.Load() == 0
	})
	if got := httpGet(t, base+"/"); got != b.body {
		t.Fatalf("after the churn: %.20q; want B's body", got)
	}
	// B came and went too: what it keeps open is no more than the traffic ever needed at
	// once (the connections from its earlier stints were closed, not leaked).
	testutil.Eventually(t, 5*time.Second, "B's connections bounded", func() bool { return b.open.Load() <= workers+1 })
}

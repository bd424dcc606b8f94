package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/test/framework"
)

// Active health checks and outlier detection against upstreams that go away and come
// back on fixed ports, through an HTTP listener and a tcp_proxy listener on one cluster.

// flapHost is an HTTP upstream on a fixed address that the test stops and restarts. Its
// /healthz answers as mode says; every other path answers the host's name.
type flapHost struct {
	t    *testing.T
	name string
	addr string
	mode atomic.Value // string: ok, 503, hints, redirect, slow, hang, pattern:<f|o>...

	mu     sync.Mutex
	srv    *http.Server
	served chan struct{}

	traffic   atomic.Int64  // non-check requests
	fail5xx   atomic.Bool   // answer non-check requests with 500
	checks    sync.Map      // mode → *atomic.Int64: health checks seen per mode
	inCheck   atomic.Int64  // checks being answered now
	maxCheck  atomic.Int64  // most checks answered at once
	openConns atomic.Int64  // open connections (all kinds)
	release   chan struct{} // closed at cleanup: ends hanging checks
}

func newFlapHost(t *testing.T, name string) *flapHost {
	h := &flapHost{t: t, name: name, addr: framework.FreePort(t), release: make(chan struct{})}
	h.mode.Store("ok")
	h.start()
	t.Cleanup(func() {
		close(h.release)
		h.stop()
	})
	return h
}

func (h *flapHost) setMode(m string) { h.mode.Store(m) }

func (h *flapHost) checksIn(mode string) int64 {
	v, _ := h.checks.LoadOrStore(mode, new(atomic.Int64))
	return v.(*atomic.Int64).Load()
}

func (h *flapHost) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/healthz" {
		h.traffic.Add(1)
		io.Copy(io.Discard, r.Body)
		if h.fail5xx.Load() {
			http.Error(w, h.name+" broken", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, h.name)
		return
	}
	mode := h.mode.Load().(string)
	v, _ := h.checks.LoadOrStore(mode, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
	n := h.inCheck.Add(1)
	defer h.inCheck.Add(-1)
	for {
		m := h.maxCheck.Load()
		if n <= m || h.maxCheck.CompareAndSwap(m, n) {
			break
		}
	}
	if p, ok := strings.CutPrefix(mode, "pattern:"); ok { // e.g. "pattern:ffo": fail, fail, ok, ...
		n := v.(*atomic.Int64).Load() - 1
		if p[n%int64(len(p))] == 'f' {
			mode = "503"
		} else {
			mode = "ok"
		}
	}
	switch mode {
	case "503":
		http.Error(w, "draining", http.StatusServiceUnavailable)
	case "hints": // 103 Early Hints, then 200: a healthy answer
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "ok")
	case "redirect":
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	case "slow": // well past the check timeout, then 200
		select {
		case <-time.After(1500 * time.Millisecond):
		case <-r.Context().Done():
		case <-h.release:
		}
		io.WriteString(w, "late")
	case "hang": // never answers; returns when the checker closes the connection
		select {
		case <-r.Context().Done():
		case <-h.release:
		}
	default:
		io.WriteString(w, "ok")
	}
}

// start listens on the host's fixed address again.
func (h *flapHost) start() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv != nil {
		return
	}
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ { // the port may linger briefly after a stop
		if ln, err = net.Listen("tcp", h.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		h.t.Fatalf("%s: listen %s again: %v", h.name, h.addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second,
		ConnState: func(c net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				h.openConns.Add(1)
			case http.StateClosed, http.StateHijacked:
				h.openConns.Add(-1)
			}
		}}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	h.srv, h.served = srv, served
}

// stop closes the listener and every connection.
func (h *flapHost) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv == nil {
		return
	}
	h.srv.Close()
	<-h.served
	h.srv = nil
}

// flapConfig is an HTTP listener and a tcp_proxy listener over cluster "flap" (round robin
// over hosts), with the given cluster fields added.
func flapConfig(t *testing.T, httpAddr, tcpAddr, admin string, hosts []string, extra map[string]any) string {
	t.Helper()
	var hs []any
	for _, a := range hosts {
		hs = append(hs, map[string]any{"address": a})
	}
	cl := map[string]any{"name": "flap", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN",
		"connect_timeout": "1s", "hosts": hs}
	for k, v := range extra {
		cl[k] = v
	}
	name := cl["name"].(string) // extra may rename the cluster; both listeners follow
	_, adminPort, _ := net.SplitHostPort(admin)
	port, _ := strconv.Atoi(adminPort)
	cfg := map[string]any{
		"servers": []any{map[string]any{
			"default_log_path": "stderr",
			"routers": []any{map[string]any{"router_config_name": "flap",
				"virtual_hosts": []any{map[string]any{"name": "flap", "domains": []any{"*"},
					"routers": []any{clusterRoute("/", name, map[string]any{"timeout": "10s"})}}}}},
			"listeners": []any{
				map[string]any{"name": "http", "address": httpAddr, "bind_port": true,
					"filter_chains": []any{map[string]any{"filters": []any{map[string]any{"type": "proxy",
						"config": map[string]any{"downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "flap"}}}}}},
				map[string]any{"name": "tcp", "address": tcpAddr, "bind_port": true,
					"filter_chains": []any{map[string]any{"filters": []any{map[string]any{"type": "tcp_proxy",
						"config": map[string]any{"cluster": name}}}}}},
			},
		}},
		"cluster_manager": map[string]any{"clusters": []any{cl}},
		"admin":           map[string]any{"address": map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": port}}},
		"drain":           map[string]any{"timeout": "2s"},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// flapRig is one proxy with its two listeners.
type flapRig struct {
	t                        *testing.T
	p                        *framework.Proxy
	httpAddr, tcpAddr, admin string
	cluster                  string // the cluster's name in the current config
}

func startFlapRig(t *testing.T, hosts []string, extra map[string]any) *flapRig {
	r := &flapRig{t: t, httpAddr: framework.FreePort(t), tcpAddr: framework.FreePort(t), admin: framework.FreePort(t), cluster: "flap"}
	r.p = framework.StartProxy(t, flapConfig(t, r.httpAddr, r.tcpAddr, r.admin, hosts, extra))
	return r
}

// reload rewrites the config and sends SIGHUP, then waits for the reload to be logged.
func (r *flapRig) reload(hosts []string, extra map[string]any) {
	r.t.Helper()
	before := strings.Count(r.p.Logs(), "config reloaded")
	if err := os.WriteFile(r.p.Config, []byte(flapConfig(r.t, r.httpAddr, r.tcpAddr, r.admin, hosts, extra)), 0o600); err != nil {
		r.t.Fatal(err)
	}
	if err := r.p.Signal(syscall.SIGHUP); err != nil {
		r.t.Fatal(err)
	}
	waitUntil(r.t, "config reloaded", 10*time.Second, func() bool {
		return strings.Count(r.p.Logs(), "config reloaded") > before
	})
	r.cluster = "flap"
	if n, ok := extra["name"].(string); ok {
		r.cluster = n
	}
}

// metrics scrapes /metrics as series → value.
func (r *flapRig) metrics() map[string]float64 {
	r.t.Helper()
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + r.admin + "/metrics")
	if err != nil {
		r.t.Fatalf("admin /metrics: %v", err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		i := strings.LastIndexByte(l, ' ')
		if i < 0 || strings.HasPrefix(l, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			m[l[:i]] = v
		}
	}
	return m
}

func (r *flapRig) healthy() int {
	return int(r.metrics()[fmt.Sprintf(`mosnlite_upstream_hosts_healthy{cluster=%q}`, r.cluster)])
}

func (r *flapRig) waitHealthy(n int, what string) {
	r.t.Helper()
	waitUntil(r.t, fmt.Sprintf("%s: %d healthy hosts", what, n), 10*time.Second, func() bool {
		time.Sleep(15 * time.Millisecond)
		return r.healthy() == n
	})
}

// get sends one request through the HTTP listener (tcp false) or through the tcp_proxy
// listener (tcp true; the tunnel carries the HTTP/1 request as bytes) on a new connection.
func (r *flapRig) get(tcp bool, timeout time.Duration) (int, string, error) {
	addr := r.httpAddr
	if tcp {
		addr = r.tcpAddr
	}
	c := http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/x")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// flapAnswer is the outcome of one of getAll's requests.
type flapAnswer struct {
	tcp  bool
	code int
	body string
	err  error
}

// getAll sends n requests at once, alternating the HTTP and the tcp_proxy listener (HTTP
// first), each with a 15 s bound; their answers come on the channel as they end.
func (r *flapRig) getAll(n int) <-chan flapAnswer {
	out := make(chan flapAnswer, n)
	for i := range n {
		tcp := i%2 == 1
		go func() {
			code, body, err := r.get(tcp, 15*time.Second)
			out <- flapAnswer{tcp, code, body, err}
		}()
	}
	return out
}

// stillWaiting fails t when one of the requests on results ended within 500 ms: with no
// host up they must wait for one.
func stillWaiting(t *testing.T, results <-chan flapAnswer, what string) {
	t.Helper()
	select {
	case x := <-results:
		t.Fatalf("%s: a request ended at once: %d %q %v", what, x.code, x.body, x.err)
	case <-time.After(500 * time.Millisecond):
	}
}

// spread sends n requests on each listener and returns the answers by body; failures
// fail the test.
func (r *flapRig) spread(n int, what string) map[string]int {
	r.t.Helper()
	got := map[string]int{}
	for _, tcp := range []bool{false, true} {
		for i := 0; i < n; i++ {
			code, body, err := r.get(tcp, 5*time.Second)
			if err != nil || code != 200 {
				r.t.Fatalf("%s: request %d (tcp_proxy %v): %d %q %v", what, i, tcp, code, body, err)
			}
			got[body]++
		}
	}
	return got
}

func flapHTTPCheck(extra map[string]any) map[string]any {
	hc := map[string]any{"protocol": "http", "interval": "100ms", "interval_jitter": "0s",
		"timeout": "300ms", "healthy_threshold": 2, "unhealthy_threshold": 3,
		"check_config": map[string]any{"http_check_config": map[string]any{
			"path": "/healthz", "codes": []any{map[string]any{"start": 200, "end": 299}}}}}
	for k, v := range extra {
		hc[k] = v
	}
	return hc
}

// TestHealthFlapTCPCheck: with TCP checks, a host whose port closes leaves both listeners'
// picks, gets traffic again when it is back, and when every host is down a request waits
// (pick_timeout) for one to come up rather than failing at once.
func TestHealthFlapTCPCheck(t *testing.T) {
	t.Parallel() // mostly waiting on check intervals: overlaps with the others
	a, b := newFlapHost(t, "A"), newFlapHost(t, "B")
	r := startFlapRig(t, []string{a.addr, b.addr}, map[string]any{
		"pick_timeout": "8s", "max_connect_attempts": 1,
		"health_check": map[string]any{"protocol": "tcp", "interval": "100ms", "interval_jitter": "0s",
			"timeout": "300ms", "healthy_threshold": 2, "unhealthy_threshold": 2}})
	r.waitHealthy(2, "start")
	if got := r.spread(10, "both up"); got["A"] == 0 || got["B"] == 0 {
		t.Fatalf("both up: answers %v, want both hosts", got)
	}

	for round := 0; round < 3; round++ {
		b.stop()
		r.waitHealthy(1, "B stopped")
		failB := fmt.Sprintf(`mosnlite_upstream_connect_failures_total{cluster="flap",host=%q}`, b.addr)
		before := r.metrics()[failB]
		if got := r.spread(10, "B down"); got["A"] != 20 {
			t.Fatalf("round %d, B down: answers %v", round, got)
		}
		if after := r.metrics()[failB]; after != before {
			t.Errorf("round %d: %v connects to B, which health checks hold down", round, after-before)
		}
		b.start()
		r.waitHealthy(2, "B restarted")
		if got := r.spread(10, "B back"); got["B"] == 0 {
			t.Fatalf("round %d: B is back and healthy but got no traffic: %v", round, got)
		}
	}

	// Everything down: requests on both listeners wait for a host.
	a.stop()
	b.stop()
	r.waitHealthy(0, "all stopped")
	// Refused checks go on at the interval: neither a tight loop nor a stop.
	failed := `mosnlite_upstream_health_check_total{cluster="flap",result="failure"}`
	f0 := r.metrics()[failed]
	time.Sleep(time.Second)
	if d := r.metrics()[failed] - f0; d < 2 || d > 44 {
		t.Errorf("2 hosts refusing, interval 100ms: %v failed checks in a second", d)
	}
	results := r.getAll(2)
	stillWaiting(t, results, "no host up, pick_timeout 8s")
	a.start()
	for range 2 {
		x := <-results
		if x.err != nil || x.code != 200 || x.body != "A" {
			t.Errorf("waiting request after A came back: %d %q %v", x.code, x.body, x.err)
		}
	}
}

// TestHealthFlapHTTPVerdicts: an HTTP check on /healthz with codes 200-299 takes a host
// down for a 503, a redirect, an answer slower than the timeout and no answer at all, only
// after unhealthy_threshold such checks, and up again after healthy_threshold passes; a host
// held down gets no traffic; the checker keeps at most one connection open to a host.
func TestHealthFlapHTTPVerdicts(t *testing.T) {
	t.Parallel() // mostly waiting on check intervals: overlaps with the others
	a, b := newFlapHost(t, "A"), newFlapHost(t, "B")
	r := startFlapRig(t, []string{a.addr, b.addr}, map[string]any{
		"pick_timeout": "2s", "health_check": flapHTTPCheck(nil)})
	r.waitHealthy(2, "start")
	if got := r.spread(6, "both up"); got["B"] == 0 {
		t.Fatalf("both up: %v", got)
	}
	for _, bad := range []string{"503", "redirect", "slow", "hang", "503"} {
		b.setMode(bad)
		// Not down before 3 bad checks: the count at B is at least what the proxy saw.
		waitUntil(t, "B down for "+bad, 10*time.Second, func() bool {
			// Read after the scrape: the count at B then bounds what the proxy had seen.
			down := r.healthy() == 1
			seen := b.checksIn(bad)
			if down {
				if seen < 3 {
					t.Errorf("%s: B went down after %d bad checks; unhealthy_threshold is 3", bad, seen)
				}
				return true
			}
			return false
		})
		tr := b.traffic.Load()
		if got := r.spread(5, "B down ("+bad+")"); got["A"] != 10 {
			t.Errorf("%s: B held down but answered: %v", bad, got)
		}
		if n := b.traffic.Load() - tr; n != 0 {
			t.Errorf("%s: B held down got %d requests", bad, n)
		}
		if m := b.maxCheck.Load(); m > 1 {
			t.Errorf("%s: %d checks of B at once; the checker must not pile up", bad, m)
		}
		if bad == "hang" || bad == "slow" {
			if n := b.openConns.Load(); n > 2 {
				t.Errorf("%s: %d connections open at B", bad, n)
			}
		}
		okBefore := b.checksIn("ok")
		b.setMode("ok")
		waitUntil(t, "B up after "+bad, 10*time.Second, func() bool {
			up := r.healthy() == 2
			seen := b.checksIn("ok") - okBefore
			if up {
				if seen < 2 {
					t.Errorf("after %s: B came up after %d good checks; healthy_threshold is 2", bad, seen)
				}
				return true
			}
			return false
		})
		if got := r.spread(6, "B back after "+bad); got["B"] == 0 {
			t.Errorf("after %s: B is up but got no traffic: %v", bad, got)
		}
	}
	waitUntil(t, "hung checks released", 5*time.Second, func() bool { return b.inCheck.Load() == 0 })
}

// checksOver counts the checks h sees (any mode) over d.
func checksOver(h *flapHost, d time.Duration) int64 {
	sum := func() int64 {
		var n int64
		h.checks.Range(func(_, v any) bool { n += v.(*atomic.Int64).Load(); return true })
		return n
	}
	before := sum()
	time.Sleep(d)
	return sum() - before
}

// noTraffic sends n requests on each listener right away and fails if h answered any.
func (r *flapRig) noTraffic(h *flapHost, n int, what string) {
	r.t.Helper()
	tr := h.traffic.Load()
	for _, tcp := range []bool{false, true} {
		for i := 0; i < n; i++ {
			code, body, err := r.get(tcp, 5*time.Second)
			if err != nil || code != 200 || body == h.name {
				r.t.Errorf("%s: request %d (tcp_proxy %v): %d %q %v", what, i, tcp, code, body, err)
			}
		}
	}
	if d := h.traffic.Load() - tr; d != 0 {
		r.t.Errorf("%s: %s is held down by its checks but got %d requests", what, h.name, d)
	}
}

// TestHealthFlapReload: a host held down by its checks stays down, and gets no request,
// across SIGHUP reloads of the same cluster, of a changed health_check and of a changed host
// list; reloads do not multiply the checkers; a host that leaves is no longer checked.
func TestHealthFlapReload(t *testing.T) {
	t.Parallel() // mostly waiting on check intervals: overlaps with the others
	a, b, c := newFlapHost(t, "A"), newFlapHost(t, "B"), newFlapHost(t, "C")
	hc := map[string]any{"pick_timeout": "2s", "health_check": flapHTTPCheck(nil)}
	r := startFlapRig(t, []string{a.addr, b.addr}, hc)
	r.waitHealthy(2, "start")
	b.setMode("503")
	r.waitHealthy(1, "B failing")
	base := checksOver(b, time.Second)
	if base == 0 {
		t.Fatal("B saw no checks in 1s at interval 100ms")
	}

	for i := 0; i < 3; i++ {
		r.reload([]string{a.addr, b.addr}, hc)
		r.noTraffic(b, 5, fmt.Sprintf("after identical reload %d", i))
		if n := r.healthy(); n != 1 {
			t.Errorf("after identical reload %d: %d healthy hosts, want 1", i, n)
		}
	}
	if n := checksOver(b, time.Second); n > 2*base+2 {
		t.Errorf("after 3 identical reloads B sees %d checks a second, before %d: checkers multiplied", n, base)
	}

	// A changed health_check restarts the checkers but keeps B's verdict.
	hc2 := map[string]any{"pick_timeout": "2s", "health_check": flapHTTPCheck(map[string]any{"interval": "150ms"})}
	r.reload([]string{a.addr, b.addr}, hc2)
	r.noTraffic(b, 5, "after a changed health_check")
	if n := checksOver(b, time.Second); n > 2*base+2 {
		t.Errorf("after a changed health_check B sees %d checks a second, before %d", n, base)
	}

	// A new host joins; B stays down.
	r.reload([]string{a.addr, b.addr, c.addr}, hc2)
	r.noTraffic(b, 5, "after C joined")
	r.waitHealthy(2, "C joined")
	if got := r.spread(6, "C joined"); got["C"] == 0 || got["B"] != 0 {
		t.Errorf("after C joined: %v", got)
	}

	// B leaves: its checks stop.
	r.reload([]string{a.addr, c.addr}, hc2)
	time.Sleep(400 * time.Millisecond)
	if n := checksOver(b, time.Second); n != 0 {
		t.Errorf("B left the cluster but saw %d checks in the next second", n)
	}

	// B comes back failing: a fresh host that fails its first check goes down at once.
	r.reload([]string{a.addr, b.addr, c.addr}, hc2)
	r.waitHealthy(2, "B re-added while failing")
	r.noTraffic(b, 5, "B re-added while failing")

	// B recovers and gets traffic.
	b.setMode("ok")
	r.waitHealthy(3, "B recovered")
	if got := r.spread(6, "B recovered"); got["B"] == 0 {
		t.Errorf("B recovered but got no traffic: %v", got)
	}
	if m := b.maxCheck.Load(); m > 1 {
		t.Errorf("%d checks of B at once", m)
	}

	// The cluster is renamed while B fails: the old cluster's checkers stop, the new
	// one's take B down at its first failure, and B gets no traffic.
	b.setMode("503")
	r.waitHealthy(2, "B failing again")
	renamed := map[string]any{"name": "flap2", "pick_timeout": "2s", "health_check": flapHTTPCheck(nil)}
	r.reload([]string{a.addr, b.addr, c.addr}, renamed)
	r.waitHealthy(2, "renamed cluster")
	r.noTraffic(b, 5, "renamed cluster")
	if n := checksOver(b, time.Second); n > 2*base+2 {
		t.Errorf("after the cluster was renamed B sees %d checks a second, before %d: the old cluster's checkers still run", n, base)
	}
}

// TestHealthFlapOutlier: outlier detection ejects a host answering 500s; while ejected it
// gets no request; when the ejection ends it gets traffic again; a host whose ejection ends
// while its active checks hold it down stays out until the checks pass.
func TestHealthFlapOutlier(t *testing.T) {
	t.Parallel() // mostly waiting on check intervals: overlaps with the others
	a, b := newFlapHost(t, "A"), newFlapHost(t, "B")
	r := startFlapRig(t, []string{a.addr, b.addr}, map[string]any{
		"pick_timeout": "2s", "health_check": flapHTTPCheck(nil),
		"outlier_detection": map[string]any{"consecutive_5xx": 3, "base_ejection_time": "1s",
			"interval": "10s", "max_ejection_time": "2s", "max_ejection_percent": 50}})
	r.waitHealthy(2, "start")
	ejected := `mosnlite_upstream_hosts_ejected{cluster="flap"}`
	ejections := `mosnlite_upstream_host_ejections_total{cluster="flap"}`
	b.fail5xx.Store(true)

	for round := 1; round <= 2; round++ {
		// Drive requests until B is ejected.
		for i := 0; ; i++ {
			if r.metrics()[ejected] == 1 {
				break
			}
			if i > 200 {
				t.Fatalf("round %d: B answered 500s but was never ejected", round)
			}
			r.get(false, 5*time.Second)
		}
		m0 := r.metrics()
		tr := b.traffic.Load()
		for i := 0; i < 5; i++ {
			if code, body, err := r.get(false, 5*time.Second); err != nil || code != 200 || body != "A" {
				t.Errorf("round %d, B ejected: %d %q %v", round, code, body, err)
			}
		}
		m1 := r.metrics()
		if m1[ejected] == 1 && m1[ejections] == m0[ejections] && b.traffic.Load() != tr {
			t.Errorf("round %d: B got %d requests while ejected", round, b.traffic.Load()-tr)
		}
		// The ejection ends on its own and B is picked again.
		waitUntil(t, "ejection over", 10*time.Second, func() bool {
			time.Sleep(20 * time.Millisecond)
			return r.metrics()[ejected] == 0
		})
		tr = b.traffic.Load()
		for i := 0; i < 10 && b.traffic.Load() == tr; i++ {
			r.get(false, 5*time.Second)
		}
		if b.traffic.Load() == tr {
			t.Fatalf("round %d: B's ejection ended but it got no request", round)
		}
	}

	// Ejected, then failing its checks: the end of the ejection does not bring it back.
	for i := 0; r.metrics()[ejected] != 1; i++ {
		if i > 200 {
			t.Fatal("B never ejected a third time")
		}
		r.get(false, 5*time.Second)
	}
	b.setMode("503")
	b.fail5xx.Store(false)
	waitUntil(t, "ejection over", 10*time.Second, func() bool {
		time.Sleep(20 * time.Millisecond)
		return r.metrics()[ejected] == 0
	})
	r.waitHealthy(1, "B ejection over, checks failing")
	r.noTraffic(b, 5, "B's ejection over but its checks fail")
	b.setMode("ok")
	r.waitHealthy(2, "B checks pass")
	if got := r.spread(6, "B healthy again"); got["B"] == 0 {
		t.Errorf("B healthy again but got no traffic: %v", got)
	}
}

// TestHealthFlapAbandonedPicks: with every host down, clients that give up while their
// request waits for a host (pick_timeout) release their max_pending_requests slot and
// leave nothing behind, so that later requests may still wait and are served when a host
// comes up.
func TestHealthFlapAbandonedPicks(t *testing.T) {
	t.Parallel() // mostly waiting on check intervals: overlaps with the others
	a, b := newFlapHost(t, "A"), newFlapHost(t, "B")
	r := startFlapRig(t, []string{a.addr, b.addr}, map[string]any{
		"pick_timeout":     "10s",
		"circuit_breakers": []any{map[string]any{"max_pending_requests": 3}},
		"health_check": map[string]any{"protocol": "tcp", "interval": "100ms", "interval_jitter": "0s",
			"timeout": "300ms", "healthy_threshold": 1, "unhealthy_threshold": 1}})
	r.waitHealthy(2, "start")
	r.spread(6, "warm-up") // starts the proxy's long-lived watchers before the baseline
	a.stop()
	b.stop()
	r.waitHealthy(0, "all stopped")
	lc := framework.NewLeakCheck(t, r.p)
	// A pool's host watcher starts on its first use, one pool per event loop; the warm-up
	// may not have reached every loop. 18 abandoned waits would show far above this.
	lc.GoroutineSlack = 2

	for round := 0; round < 3; round++ {
		var conns []net.Conn
		for _, addr := range []string{r.httpAddr, r.tcpAddr} {
			for i := 0; i < 3; i++ {
				c := framework.Dial(t, addr)
				if _, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: flap\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
		}
		time.Sleep(300 * time.Millisecond)
		for _, c := range conns {
			c.Close()
		}
	}
	overflow := `mosnlite_upstream_overflow_total{breaker="max_pending_requests",cluster="flap"}`
	if err := lc.Settle(); err != nil {
		t.Errorf("after clients abandoned their waiting requests: %v", err)
	}
	of := r.metrics()[overflow]
	tr := a.traffic.Load()

	results := r.getAll(2)
	stillWaiting(t, results, "no host up")
	a.start()
	for range 2 {
		if x := <-results; x.err != nil || x.code != 200 || x.body != "A" {
			t.Errorf("waiting request after A came back: %d %q %v", x.code, x.body, x.err)
		}
	}
	if d := r.metrics()[overflow] - of; d != 0 {
		t.Errorf("%v picks refused by max_pending_requests after the earlier ones were abandoned", d)
	}
	if d := a.traffic.Load() - tr; d != 2 {
		t.Errorf("A got %d requests, want the 2 still waiting (abandoned ones must not be sent)", d)
	}
	a.stop()
	r.waitHealthy(0, "A stopped again")
	lc.Check(t)
}

// TestHealthFlapPickTimeoutExpires: with every host down, a request on either listener
// waits pick_timeout, then fails (503 / closed connection), and the proxy keeps serving.
func TestHealthFlapPickTimeoutExpires(t *testing.T) {
	t.Parallel() // mostly waiting on check intervals: overlaps with the others
	a := newFlapHost(t, "A")
	r := startFlapRig(t, []string{a.addr}, map[string]any{
		"pick_timeout": "300ms",
		"health_check": map[string]any{"protocol": "tcp", "interval": "100ms", "interval_jitter": "0s",
			"timeout": "300ms", "healthy_threshold": 1, "unhealthy_threshold": 1}})
	r.waitHealthy(1, "start")
	a.stop()
	r.waitHealthy(0, "A stopped")
	for i := 0; i < 3; i++ {
		if code, body, err := r.get(false, 10*time.Second); err != nil || code != http.StatusServiceUnavailable {
			t.Errorf("HTTP, no host up: %d %q %v; want 503 after pick_timeout", code, body, err)
		}
		c := framework.Dial(t, r.tcpAddr)
		io.WriteString(c, "GET /x HTTP/1.1\r\nHost: flap\r\n\r\n")
		// The request bytes were never read, so the close may come as a reset.
		if n, err := io.Copy(io.Discard, c); n != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
			t.Errorf("tcp_proxy, no host up: read %d bytes, %v; want the connection closed", n, err)
		}
		c.Close()
	}
	a.start()
	r.waitHealthy(1, "A back")
	if got := r.spread(3, "A back"); got["A"] != 6 {
		t.Errorf("A back: %v", got)
	}
	if r.p.Wait(0) != -1 || strings.Contains(r.p.Logs(), "panic") {
		t.Errorf("mosnlite exited or panicked")
	}
}

// logged counts the proxy's log lines with msg for host addr.
func (r *flapRig) logged(msg, addr string) int {
	n := 0
	for _, l := range strings.Split(r.p.Logs(), "\n") {
		if strings.Contains(l, `"msg":"`+msg+`"`) && strings.Contains(l, `"host":"`+addr+`"`) {
			n++
		}
	}
	return n
}

// waitLogged waits until the proxy has logged msg for addr n times.
func (r *flapRig) waitLogged(msg, addr string, n int) {
	r.t.Helper()
	waitUntil(r.t, fmt.Sprintf("%d log lines %q for %s", n, msg, addr), 5*time.Second, func() bool {
		return r.logged(msg, addr) >= n
	})
}

// waitChecks waits until h has seen n checks in mode.
func waitChecks(t *testing.T, h *flapHost, mode string, n int64) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d %s checks at %s", n, mode, h.name), 15*time.Second, func() bool {
		return h.checksIn(mode) >= n
	})
}

// TestHealthFlapThresholds: failures that never reach unhealthy_threshold in a row (fail,
// fail, pass, ...) never take a host down, and passes that never reach healthy_threshold
// in a row (pass, fail, ...) never bring it up; the transitions are counted in the log.
func TestHealthFlapThresholds(t *testing.T) {
	t.Parallel() // mostly waiting on check intervals: overlaps with the others
	a, b := newFlapHost(t, "A"), newFlapHost(t, "B")
	r := startFlapRig(t, []string{a.addr, b.addr}, map[string]any{
		"pick_timeout": "2s", "health_check": flapHTTPCheck(nil)})
	r.waitHealthy(2, "start")
	waitChecks(t, b, "ok", 2) // B has passed: from now on it takes 3 failures in a row

	b.setMode("pattern:ffo")
	waitChecks(t, b, "pattern:ffo", 15)
	if n := r.logged("host failed health checks", b.addr); n != 0 {
		t.Errorf("B failed at most 2 checks in a row but was taken down %d times", n)
	}
	if got := r.spread(6, "fail, fail, pass"); got["B"] == 0 {
		t.Errorf("B, never 3 failures in a row, got no traffic: %v", got)
	}

	b.setMode("503")
	r.waitHealthy(1, "B failing")
	r.waitLogged("host failed health checks", b.addr, 1) // logged just after the gauge moves
	if n := r.logged("host failed health checks", b.addr); n != 1 {
		t.Errorf("B taken down %d times, want 1", n)
	}
	passed := r.logged("host passed health checks", b.addr)
	b.setMode("pattern:of")
	waitChecks(t, b, "pattern:of", 14)
	if n := r.logged("host passed health checks", b.addr) - passed; n != 0 {
		t.Errorf("B passed at most 1 check in a row but was brought up %d times", n)
	}
	r.noTraffic(b, 5, "pass, fail")
	b.setMode("ok")
	r.waitHealthy(2, "B passing")
	r.waitLogged("host passed health checks", b.addr, passed+1)
	if n := r.logged("host passed health checks", b.addr) - passed; n != 1 {
		t.Errorf("B brought up %d times, want 1", n)
	}
}

// TestHealthFlapOutlierLastHost: outlier detection does not eject the last host up; when an
// ejected host's peer then fails its checks, a request waits for the ejection to end
// instead of failing at once.
func TestHealthFlapOutlierLastHost(t *testing.T) {
	t.Parallel() // mostly waiting on check intervals: overlaps with the others
	a, b := newFlapHost(t, "A"), newFlapHost(t, "B")
	r := startFlapRig(t, []string{a.addr, b.addr}, map[string]any{
		"pick_timeout": "8s", "health_check": flapHTTPCheck(nil),
		"outlier_detection": map[string]any{"consecutive_5xx": 3, "base_ejection_time": "3s",
			"interval": "10s", "max_ejection_percent": 50}})
	r.waitHealthy(2, "start")
	ejected := `mosnlite_upstream_hosts_ejected{cluster="flap"}`
	ejections := `mosnlite_upstream_host_ejections_total{cluster="flap"}`

	a.setMode("503")
	r.waitHealthy(1, "A failing its checks")
	b.fail5xx.Store(true)
	for i := 0; i < 10; i++ {
		if code, body, err := r.get(false, 5*time.Second); err != nil || code != 500 || body != "B broken\n" {
			t.Fatalf("only B up: %d %q %v", code, body, err)
		}
	}
	if n := r.metrics()[ejections]; n != 0 {
		t.Fatalf("B, the last host up, was ejected %v times", n)
	}

	a.setMode("ok")
	r.waitHealthy(2, "A passing")
	for i := 0; r.metrics()[ejected] != 1; i++ {
		if i > 100 {
			t.Fatal("B answered 500s beside a healthy A but was never ejected")
		}
		r.get(false, 5*time.Second)
	}
	a.setMode("503")
	r.waitHealthy(0, "A failing, B ejected")
	code, body, err := r.get(false, 15*time.Second)
	if err != nil || code != 500 || body != "B broken\n" {
		t.Errorf("with A down and B ejected for 3s (pick_timeout 8s): %d %q %v; want B's answer once its ejection ends", code, body, err)
	}
}

// TestHealthFlapEarlyHints: a /healthz that sends 103 Early Hints before its 200 is healthy;
// the check must read past the informational answer.
func TestHealthFlapEarlyHints(t *testing.T) {
	t.Parallel() // mostly waiting on check intervals: overlaps with the others
	a, b := newFlapHost(t, "A"), newFlapHost(t, "B")
	r := startFlapRig(t, []string{a.addr, b.addr}, map[string]any{
		"pick_timeout": "2s", "health_check": flapHTTPCheck(nil)})
	r.waitHealthy(2, "start")
	waitChecks(t, b, "ok", 2)
	b.setMode("hints")
	waitChecks(t, b, "hints", 6)
	if n := r.logged("host failed health checks", b.addr); n != 0 {
		t.Errorf("B answers 103 then 200 but was taken down %d times", n)
	}
	if got := r.spread(6, "early hints"); got["B"] == 0 {
		t.Errorf("B healthy (103, 200) got no traffic: %v", got)
	}
}

// rawHost is a raw TCP upstream: a check sends "PING" and, in mode ok, gets "PONG" split
// in two writes; in mode silent it gets nothing; in mode wrong it gets "PANG". Traffic
// sends "GET!" and gets the host's name and a newline.
type rawHost struct {
	name            string
	srv             *framework.TCPServer
	mode            atomic.Value
	checks, traffic atomic.Int64
	open, maxOpen   atomic.Int64 // check connections open now, and at most
}

func newRawHost(t *testing.T, name string) *rawHost {
	h := &rawHost{name: name}
	h.mode.Store("ok")
	h.srv = framework.StartTCP(t, func(c *net.TCPConn) {
		var b [4]byte
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return
		}
		if string(b[:]) == "GET!" {
			h.traffic.Add(1)
			io.WriteString(c, h.name+"\n")
			return
		}
		h.checks.Add(1)
		n := h.open.Add(1)
		defer h.open.Add(-1)
		for {
			m := h.maxOpen.Load()
			if n <= m || h.maxOpen.CompareAndSwap(m, n) {
				break
			}
		}
		switch h.mode.Load().(string) {
		case "ok":
			io.WriteString(c, "PO")
			time.Sleep(20 * time.Millisecond)
			io.WriteString(c, "NG")
		case "wrong":
			io.WriteString(c, "PANG")
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c) // until the checker closes
	})
	return h
}

// rawGet sends one request through the tcp_proxy listener and returns the answer line.
func (r *flapRig) rawGet() (string, error) {
	c, err := net.DialTimeout("tcp", r.tcpAddr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET!"); err != nil {
		return "", err
	}
	return framework.ReadLine(c)
}

// TestHealthFlapTCPPayload: a TCP check that sends bytes and expects a reply takes down a
// host that answers nothing or the wrong bytes, brings it back when the reply comes in two
// pieces, sends it no tcp_proxy session while down, and keeps at most one check connection
// open to it even when the host never answers.
func TestHealthFlapTCPPayload(t *testing.T) {
	t.Parallel() // mostly waiting on check intervals: overlaps with the others
	a, b := newRawHost(t, "A"), newRawHost(t, "B")
	r := startFlapRig(t, []string{a.srv.Addr(), b.srv.Addr()}, map[string]any{
		"pick_timeout": "2s",
		"health_check": map[string]any{"protocol": "tcp", "interval": "100ms", "interval_jitter": "0s",
			"timeout": "300ms", "healthy_threshold": 2, "unhealthy_threshold": 2,
			"check_config": map[string]any{"tcp_check_config": map[string]any{"send": "50494e47", "receive": "504f4e47"}}}})
	r.waitHealthy(2, "start")
	for _, bad := range []string{"silent", "wrong", "silent"} {
		b.mode.Store(bad)
		r.waitHealthy(1, "B "+bad)
		c0 := b.checks.Load()
		tr := b.traffic.Load()
		for i := 0; i < 10; i++ {
			if got, err := r.rawGet(); err != nil || got != "A" {
				t.Errorf("B %s: %q %v", bad, got, err)
			}
		}
		if d := b.traffic.Load() - tr; d != 0 {
			t.Errorf("B %s and held down got %d sessions", bad, d)
		}
		waitUntil(t, "more checks of B", 10*time.Second, func() bool { return b.checks.Load() >= c0+5 })
		if m := b.maxOpen.Load(); m > 2 {
			t.Errorf("B %s: %d check connections open at once", bad, m)
		}
		b.mode.Store("ok")
		r.waitHealthy(2, "B answers PONG again")
		got := map[string]int{}
		for i := 0; i < 10; i++ {
			s, err := r.rawGet()
			if err != nil {
				t.Fatalf("B back: %v", err)
			}
			got[s]++
		}
		if got["B"] == 0 {
			t.Errorf("B back after %s got no session: %v", bad, got)
		}
	}
	waitUntil(t, "check connections closed", 5*time.Second, func() bool { return b.open.Load() <= 1 })
}

// TestHealthFlapReloadChecksOffOn: a reload that drops health_check clears the verdicts and
// stops the checkers (as documented); one that brings it back takes a failing host down
// again at its first failed check, with one checker per host.
func TestHealthFlapReloadChecksOffOn(t *testing.T) {
	t.Parallel() // mostly waiting on check intervals: overlaps with the others
	a, b := newFlapHost(t, "A"), newFlapHost(t, "B")
	hc := map[string]any{"pick_timeout": "2s", "health_check": flapHTTPCheck(nil)}
	r := startFlapRig(t, []string{a.addr, b.addr}, hc)
	r.waitHealthy(2, "start")
	b.setMode("503")
	r.waitHealthy(1, "B failing")
	base := checksOver(b, time.Second)

	r.reload([]string{a.addr, b.addr}, map[string]any{"pick_timeout": "2s"})
	r.waitHealthy(2, "checks off")
	time.Sleep(300 * time.Millisecond)
	if n := checksOver(b, time.Second); n != 0 {
		t.Errorf("health_check removed, yet B saw %d checks in a second", n)
	}
	if got := r.spread(6, "checks off"); got["B"] == 0 {
		t.Errorf("checks off: B got no traffic: %v", got)
	}

	for i := 0; i < 2; i++ {
		r.reload([]string{a.addr, b.addr}, hc)
		r.waitHealthy(1, "checks back on")
		r.noTraffic(b, 5, "checks back on")
		if n := checksOver(b, time.Second); n > 2*base+2 {
			t.Errorf("checks back on (%d): B sees %d checks a second, before %d", i, n, base)
		}
		if i == 0 {
			r.reload([]string{a.addr, b.addr}, map[string]any{"pick_timeout": "2s"})
			r.waitHealthy(2, "checks off again")
		}
	}
}

// TestHealthFlapStrictDNS: a STRICT_DNS cluster re-resolves its names every 100ms; the
// rebuilds keep a failing host down, add no checkers, and a recovered host comes back.
func TestHealthFlapStrictDNS(t *testing.T) {
	t.Parallel() // mostly waiting on check intervals: overlaps with the others
	a, b := newFlapHost(t, "A"), newFlapHost(t, "B")
	_, pa, _ := net.SplitHostPort(a.addr)
	_, pb, _ := net.SplitHostPort(b.addr)
	r := startFlapRig(t, []string{"localhost:" + pa, "localhost:" + pb}, map[string]any{
		"type": "STRICT_DNS", "dns_refresh_rate": "100ms", "dns_lookup_family": "V4_ONLY",
		"pick_timeout": "2s", "health_check": flapHTTPCheck(nil)})
	r.waitHealthy(2, "start")
	b.setMode("503")
	r.waitHealthy(1, "B failing")
	base := checksOver(b, time.Second)
	for i := 0; i < 4; i++ {
		r.noTraffic(b, 5, fmt.Sprintf("B failing, after DNS refreshes (%d)", i))
		time.Sleep(250 * time.Millisecond)
	}
	if n := checksOver(b, time.Second); n > 2*base+2 {
		t.Errorf("B sees %d checks a second after DNS refreshes, before %d", n, base)
	}
	r.waitLogged("host failed health checks", b.addr, 1)
	if n := r.logged("host failed health checks", b.addr); n != 1 {
		t.Errorf("B taken down %d times, want 1", n)
	}
	b.setMode("ok")
	r.waitHealthy(2, "B passing")
	if got := r.spread(6, "B back"); got["B"] == 0 {
		t.Errorf("B back got no traffic: %v", got)
	}
}

// TestHealthFlapReloadWhileWaiting: requests waiting for a host (every host down) are
// served by a healthy host that a reload adds; an outlier ejection survives a reload of the
// same cluster.
func TestHealthFlapReloadWhileWaiting(t *testing.T) {
	t.Parallel() // mostly waiting on check intervals: overlaps with the others
	a, b, c := newFlapHost(t, "A"), newFlapHost(t, "B"), newFlapHost(t, "C")
	extra := map[string]any{"pick_timeout": "8s", "health_check": flapHTTPCheck(nil),
		"outlier_detection": map[string]any{"consecutive_5xx": 3, "base_ejection_time": "5s",
			"interval": "10s", "max_ejection_percent": 50}}
	r := startFlapRig(t, []string{a.addr, b.addr}, extra)
	r.waitHealthy(2, "start")
	a.setMode("503")
	b.setMode("503")
	r.waitHealthy(0, "A and B failing")

	results := r.getAll(2)
	time.Sleep(300 * time.Millisecond) // the requests are waiting for a host
	r.reload([]string{a.addr, b.addr, c.addr}, extra)
	for range 2 {
		if x := <-results; x.err != nil || x.code != 200 || x.body != "C" {
			t.Errorf("waiting request after a reload added C: %d %q %v", x.code, x.body, x.err)
		}
	}

	// Eject B (its checks pass, its answers are 500s), then reload the same config.
	a.setMode("ok")
	b.setMode("ok")
	r.waitHealthy(3, "all passing")
	b.fail5xx.Store(true)
	ejected := `mosnlite_upstream_hosts_ejected{cluster="flap"}`
	for i := 0; r.metrics()[ejected] != 1; i++ {
		if i > 100 {
			t.Fatal("B never ejected")
		}
		r.get(false, 5*time.Second)
	}
	r.reload([]string{a.addr, b.addr, c.addr}, extra)
	if r.metrics()[ejected] == 1 {
		tr := b.traffic.Load()
		for i := 0; i < 6; i++ {
			if code, body, err := r.get(false, 5*time.Second); err != nil || code != 200 {
				t.Errorf("B ejected, after reload: %d %q %v", code, body, err)
			}
		}
		if d := b.traffic.Load() - tr; d != 0 && r.metrics()[ejected] == 1 {
			t.Errorf("B ejected for 5s got %d requests right after a reload of the same cluster", d)
		}
	} else {
		t.Errorf("a reload of the same cluster ended B's ejection")
	}
}

// TestHealthFlapBalancers: under each balancer a host that fails its checks gets no
// traffic and gets traffic again once it passes.
func TestHealthFlapBalancers(t *testing.T) {
	t.Parallel() // mostly waiting on check intervals: overlaps with the others
	a, b := newFlapHost(t, "A"), newFlapHost(t, "B")
	for _, lbType := range []string{"LB_RANDOM", "LB_WEIGHTED_ROUNDROBIN", "LB_LEAST_REQUEST", "LB_LEAST_CONNECTION", "LB_PEAK_EWMA"} {
		t.Run(lbType, func(t *testing.T) {
			a.setMode("ok")
			b.setMode("ok")
			extra := map[string]any{"lb_type": lbType, "pick_timeout": "2s", "health_check": flapHTTPCheck(nil)}
			if lbType == "LB_PEAK_EWMA" {
				// A host without fresh samples is picked once its estimate (the 30ms prior,
				// or its last latency) has decayed below the other's fresh one; with the
				// default 10s decay, light sequential traffic may take half a minute to
				// reach it. Decay fast here.
				extra["lbconfig"] = map[string]any{"ewma_decay": "200ms"}
			}
			r := startFlapRig(t, []string{a.addr, b.addr}, extra)
			defer r.p.Stop(10 * time.Second)
			r.waitHealthy(2, "start")
			r.spread(5, "warm")
			b.setMode("503")
			r.waitHealthy(1, "B failing")
			r.noTraffic(b, 10, "B failing")
			b.setMode("ok")
			r.waitHealthy(2, "B passing")
			// B must get a request again, on each listener, within a bounded time.
			for _, tcp := range []bool{false, true} {
				got := map[string]int{}
				for end := time.Now().Add(5 * time.Second); got["B"] == 0 && time.Now().Before(end); {
					code, body, err := r.get(tcp, 5*time.Second)
					if err != nil || code != 200 {
						t.Fatalf("B back (tcp_proxy %v): %d %q %v", tcp, code, body, err)
					}
					got[body]++
				}
				if got["B"] == 0 {
					t.Errorf("B back for 5s got no traffic (tcp_proxy %v): %v", tcp, got)
				}
			}
		})
	}
}

// TestHealthFlapWaitThenRefused: the checks go to a separate port (http_check_config.port),
// so a host can pass them while its traffic port refuses. Requests that waited for a host
// and then picked the refusing one end (they are answered by C, or fail when C was not yet
// up: only the first pick waits) without taking the proxy down; once both are up, a pick
// of the refusing host goes on to C (max_connect_attempts).
func TestHealthFlapWaitThenRefused(t *testing.T) {
	t.Parallel() // mostly waiting on check intervals: overlaps with the others
	health, c := newFlapHost(t, "H"), newFlapHost(t, "C")
	_, hp, _ := net.SplitHostPort(health.addr)
	port, _ := strconv.Atoi(hp)
	closed := framework.FreePort(t) // nothing listens here
	hc := flapHTTPCheck(map[string]any{"healthy_threshold": 1, "unhealthy_threshold": 1})
	hc["check_config"].(map[string]any)["http_check_config"].(map[string]any)["port"] = port
	r := startFlapRig(t, []string{closed, c.addr}, map[string]any{
		"pick_timeout": "8s", "max_connect_attempts": 3, "health_check": hc,
		"outlier_detection": map[string]any{"consecutive_5xx": 2, "base_ejection_time": "10s",
			"interval": "10s", "max_ejection_percent": 50}})
	r.waitHealthy(2, "start")
	health.setMode("503")
	r.waitHealthy(0, "health port failing")

	results := r.getAll(8)
	time.Sleep(500 * time.Millisecond)
	health.setMode("ok")
	for range 8 {
		x := <-results
		if x.err == nil && !(x.code == 200 && x.body == "C" || x.code == 503) {
			t.Errorf("waited, then the host set came up (tcp_proxy %v): %d %q", x.tcp, x.code, x.body)
		}
	}
	if r.p.Wait(0) != -1 {
		t.Fatal("mosnlite exited")
	}
	for i := 0; r.metrics()[`mosnlite_upstream_hosts_ejected{cluster="flap"}`] != 1; i++ {
		if i > 50 {
			t.Fatal("the refusing host was never ejected")
		}
		r.get(i%2 == 1, 5*time.Second)
	}
	if got := r.spread(10, "both up, one refusing"); got["C"] != 20 {
		t.Errorf("both up, one refusing: %v", got)
	}
	// Ejected for its refused connects (its checks still pass), it is dialled no more.
	m := r.metrics()
	if m[`mosnlite_upstream_hosts_ejected{cluster="flap"}`] != 1 {
		t.Fatalf("the refusing host is not ejected: %v ejections", m[`mosnlite_upstream_host_ejections_total{cluster="flap"}`])
	}
	failX := fmt.Sprintf(`mosnlite_upstream_connect_failures_total{cluster="flap",host=%q}`, closed)
	before := m[failX]
	r.spread(10, "refusing host ejected")
	if d := r.metrics()[failX] - before; d != 0 {
		t.Errorf("the ejected host was dialled %v times", d)
	}
}

//go:build linux

package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/network/evloop"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// The fault filter on the HTTP/1 event loop (loop_filters_linux.go: park, unpark): its
// delays are waited on the connection's timer and its decisions drawn once per request.

const faultLogFormat = "%response_code% %response_flag% %x-mosn-path%"

// mustLoop fails the test when a proxy with these filters would not be served on event
// loops (newTestEnvN would skip it).
func mustLoop(t *testing.T, filters func(*proxy.Config)) {
	t.Helper()
	if !evloop.Supported {
		t.Skip("no event loops here")
	}
	cfg := proxy.Config{Downstream: stream.HTTP1}
	filters(&cfg)
	px := proxy.New(cfg)
	capable := px.LoopCapable()
	_ = px.Close()
	if !capable {
		t.Fatalf("filters %v: the listener is not served on event loops", cfg.StreamFilters.Types)
	}
}

// faultLoopEnv is a loop proxy (startLoopEnv) with filters and an access log.
func faultLoopEnv(t *testing.T, upstream string, filters func(*proxy.Config)) (*env, string) {
	t.Helper()
	mustLoop(t, filters)
	logPath := filepath.Join(t.TempDir(), "access.log")
	return startLoopEnv(t, upstream, filters, withAccessLog(t, logPath, faultLogFormat)), logPath
}

// timedRoundTrip writes raw on c and reads one answer, with the time from the write.
func timedRoundTrip(t *testing.T, c net.Conn, br *bufio.Reader, raw string) (*http.Response, string, time.Duration) {
	t.Helper()
	start := time.Now()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, body := readResp(t, br, http.MethodGet)
	return resp, body, time.Since(start)
}

// Chains with fault keep the listener on the event loops.
func TestLoopFaultCapable(t *testing.T) {
	for _, pairs := range [][]string{
		{"fault", `{"delay":{"fixed_delay":"1s","percentage":1}}`},
		{"header_mutation", `{}`, "fault", `{"abort":{"status":503,"percentage":10}}`},
		{"payload_limit", `{"max_entity_size":8}`, "fault", `{"delay":{"fixed_delay":"1s","percentage":1}}`},
	} {
		mustLoop(t, withFilters(t, pairs...))
	}
}

// A delayed request is answered no sooner than the delay, on the loop, and the route
// timeout starts after the delay (/slow has 200ms, the delay is 250ms); the access log
// says DI as on the goroutine path.
func TestLoopFaultDelay(t *testing.T) {
	const delay = 250 * time.Millisecond
	o := startOrigin(t, echo)
	e, logPath := faultLoopEnv(t, o.addr(), withFilters(t, "fault", `{"delay":{"fixed_delay":"250ms","percentage":100}}`))
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	for _, p := range []string{"/slow", "/two"} {
		resp, _, took := timedRoundTrip(t, c, br, "GET "+p+" HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode != 200 || resp.Header.Get("X-Path") != p {
			t.Fatalf("%s: %d %q", p, resp.StatusCode, resp.Header.Get("X-Path"))
		}
		if took < delay {
			t.Fatalf("%s answered after %v, before the %v delay", p, took, delay)
		}
	}
	e.noHandoffs(t)
	lines := logLines(t, e.px.AccessLog().Flush, logPath, 2)
	if strings.Join(lines, "|") != "200 DI /slow|200 DI /two" {
		t.Fatalf("access log: %q", lines)
	}
}

// An abort answers with the configured status after the delay, without an upstream
// request, and logs FI (and DI); the connection serves the next request. With abort at
// 50%, each request is drawn once: the upstream sees exactly the requests not aborted.
func TestLoopFaultAbort(t *testing.T) {
	t.Run("delay and abort", func(t *testing.T) {
		o := startOrigin(t, echo)
		e, logPath := faultLoopEnv(t, o.addr(), withFilters(t, "fault",
			`{"delay":{"fixed_delay":"100ms","percentage":100},"abort":{"status":418,"percentage":100},"headers":[{"name":"x-fault","value":"yes"}]}`))
		c := dial(t, e.addr)
		br := bufio.NewReader(c)
		resp, body, took := timedRoundTrip(t, c, br, "GET /abort HTTP/1.1\r\nHost: a\r\nX-Fault: yes\r\n\r\n")
		if resp.StatusCode != 418 || body != "fault filter abort: I'm a teapot" {
			t.Fatalf("abort: %d %q", resp.StatusCode, body)
		}
		if took < 100*time.Millisecond {
			t.Fatalf("abort answered after %v, before the 100ms delay", took)
		}
		resp, _, _ = timedRoundTrip(t, c, br, "GET /pass HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode != 200 || resp.Header.Get("X-Path") != "/pass" {
			t.Fatalf("after the abort: %d", resp.StatusCode)
		}
		if n := o.reqs.Load(); n != 1 {
			t.Fatalf("upstream saw %d requests; want 1", n)
		}
		e.noHandoffs(t)
		lines := logLines(t, e.px.AccessLog().Flush, logPath, 2)
		if strings.Join(lines, "|") != "418 FI,DI /abort|200 - /pass" {
			t.Fatalf("access log: %q", lines)
		}
	})
	t.Run("half", func(t *testing.T) {
		o := startOrigin(t, echo)
		e, logPath := faultLoopEnv(t, o.addr(), withFilters(t, "fault", `{"abort":{"status":503,"percentage":50}}`))
		c := dial(t, e.addr)
		br := bufio.NewReader(c)
		const n = 40
		aborted := 0
		for i := range n {
			resp, body, _ := timedRoundTrip(t, c, br, fmt.Sprintf("GET /r%d HTTP/1.1\r\nHost: a\r\n\r\n", i))
			switch {
			case resp.StatusCode == 503 && body == "fault filter abort: Service Unavailable":
				aborted++
			case resp.StatusCode != 200:
				t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
			}
		}
		if aborted == 0 || aborted == n {
			t.Fatalf("%d of %d aborted at 50%%", aborted, n)
		}
		if got := o.reqs.Load(); got != int64(n-aborted) {
			t.Fatalf("upstream saw %d requests; %d were not aborted", got, n-aborted)
		}
		e.noHandoffs(t)
		fi := 0
		for _, l := range logLines(t, e.px.AccessLog().Flush, logPath, n) {
			if strings.HasPrefix(l, "503 FI /r") {
				fi++
			}
		}
		if fi != aborted {
			t.Fatalf("%d lines with FI; %d aborted", fi, aborted)
		}
	})
}

// A client that closes during the delay ends the request at once: no upstream
// connection is made, the line says DC and DI, and the connection is released.
func TestLoopFaultClientLeavesDuringDelay(t *testing.T) {
	o := startOrigin(t, echo)
	e, logPath := faultLoopEnv(t, o.addr(), withFilters(t, "fault", `{"delay":{"fixed_delay":"300ms","percentage":100}}`))
	parked := proxy.ParkedSignal(t)
	c := dial(t, e.addr)
	if _, err := io.WriteString(c, "GET /left HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitParked(t, parked)
	c.Close()
	lines := logLines(t, e.px.AccessLog().Flush, logPath, 1)
	if len(lines) != 1 || lines[0] != "0 DC,DI /left" {
		t.Fatalf("access log: %q", lines)
	}
	var m dto.Metric
	testutil.Eventually(t, testTimeout, "the connection counted closed", func() bool {
		_ = e.m.DownstreamCxActive.WithLabelValues("l").Write(&m)
		return m.GetGauge().GetValue() == 0
	})
	time.Sleep(400 * time.Millisecond) // past the delay's end
	if n, r := o.conns.Load(), o.reqs.Load(); n != 0 || r != 0 {
		t.Fatalf("upstream saw %d connections and %d requests for a client that left", n, r)
	}
	if n := proxy.LoopIdle(e.px); n != 0 {
		t.Fatalf("%d idle upstream connections", n)
	}
	e.noHandoffs(t)
}

// Requests pipelined behind a delayed one wait for it and are answered in order; the
// upstream gets them in order too.
func TestLoopFaultPipelined(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Path)
		mu.Unlock()
		echo(w, r)
	})
	e, logPath := faultLoopEnv(t, o.addr(), withFilters(t, "fault",
		`{"delay":{"fixed_delay":"150ms","percentage":100},"headers":[{"name":"x-fault","value":"delay"}]}`))
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	start := time.Now()
	_, err := io.WriteString(c, "GET /a HTTP/1.1\r\nHost: a\r\nX-Fault: delay\r\n\r\n"+
		"GET /b HTTP/1.1\r\nHost: a\r\n\r\n"+
		"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz"+
		"GET /d HTTP/1.1\r\nHost: a\r\nX-Fault: delay\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/a", "/b", "/c", "/d"} {
		resp, body := readResp(t, br, http.MethodGet)
		if resp.StatusCode != 200 || resp.Header.Get("X-Path") != want {
			t.Fatalf("want %s: %d %q", want, resp.StatusCode, resp.Header.Get("X-Path"))
		}
		if want == "/c" && body != "xyz" {
			t.Fatalf("/c body %q", body)
		}
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("two delayed requests answered after %v", took)
	}
	mu.Lock()
	order := strings.Join(seen, " ")
	mu.Unlock()
	if order != "/a /b /c /d" {
		t.Fatalf("upstream order %q", order)
	}
	e.noHandoffs(t)
	lines := logLines(t, e.px.AccessLog().Flush, logPath, 4)
	if strings.Join(lines, "|") != "200 DI /a|200 - /b|200 - /c|200 DI /d" {
		t.Fatalf("access log: %q", lines)
	}
}

// Request bodies under a delay arrive whole at the upstream: one read whole before the
// filters (small), one streamed (over the loop's 48 KiB), one chunked (fault needs no
// body phase: no "filter_body" handoff); each is answered after the delay.
func TestLoopFaultBodies(t *testing.T) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		fmt.Fprintf(w, "%s %d %s", r.URL.Path, len(b), b[max(0, len(b)-8):])
	})
	e, _ := faultLoopEnv(t, o.addr(), withFilters(t, "fault", `{"delay":{"fixed_delay":"100ms","percentage":100}}`))
	body := func(n int) string {
		var sb strings.Builder
		for sb.Len() < n {
			sb.WriteString(strconv.Itoa(sb.Len()) + ",")
		}
		return sb.String()[:n]
	}
	small, large := body(1000), body(200<<10)
	cases := []struct{ name, req, want string }{
		{"whole", "POST /whole HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + small, "/whole 1000 " + small[992:]},
		{"streamed", fmt.Sprintf("POST /streamed HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", len(large), large),
			fmt.Sprintf("/streamed %d %s", len(large), large[len(large)-8:])},
		{"chunked", "POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n", "/chunked 8 abcdefgh"},
	}
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	for _, tc := range cases {
		start := time.Now()
		werr := make(chan error, 1)
		go func() { _, err := io.WriteString(c, tc.req); werr <- err }()
		resp, got := readResp(t, br, http.MethodPost)
		if err := <-werr; err != nil {
			t.Fatalf("%s: write: %v", tc.name, err)
		}
		if resp.StatusCode != 200 || got != tc.want {
			t.Fatalf("%s: %d %q, want %q", tc.name, resp.StatusCode, got, tc.want)
		}
		if took := time.Since(start); took < 100*time.Millisecond {
			t.Fatalf("%s answered after %v, before the 100ms delay", tc.name, took)
		}
	}
	e.noHandoffs(t)
	if n := e.handoffs(t, "filter_body"); n != 0 {
		t.Fatalf("%v filter_body handoffs", n)
	}
}

// drawFilter is a filter.LoopDelay test filter: each instance counts a draw and delays
// its request.
type drawFilter struct{ draws atomic.Int64 }

func (f *drawFilter) LoopDelay() {}

func (f *drawFilter) NewStreamFilter(h filter.StreamHandler) filter.StreamFilter {
	return &drawInstance{f: f, h: h}
}

type drawInstance struct {
	filter.Passthrough
	f *drawFilter
	h filter.StreamHandler
}

func (in *drawInstance) OnRequestHeaders(stream.Headers, bool) filter.Status {
	in.f.draws.Add(1)
	in.h.SetResponseFlag(accesslog.FlagFaultDelay)
	in.h.Delay(20 * time.Millisecond)
	return filter.Continue
}

func (in *drawInstance) OnDestroy() {}

// A request the loop hands to a goroutine (a cluster it cannot dial itself, or one with
// no healthy host while pick_timeout allows a wait) is handed over before an impure
// filter runs: the filter draws once per request.
func TestLoopFaultDrawnOnceOnHandoff(t *testing.T) {
	o := startOrigin(t, echo)
	_, port, _ := net.SplitHostPort(o.addr())
	routes := `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
		{"match":{"prefix":"/"},"route":{"cluster_name":"c"}}]}]}`
	for _, tc := range []struct {
		name, clusters, reason string
		down                   bool
		status                 int
	}{
		{"cluster_dialer", `[{"name":"c","type":"SIMPLE","hosts":[{"address":"localhost:` + port + `"}]}]`, "cluster_dialer", false, 200},
		{"pick_wait", `[{"name":"c","type":"SIMPLE","pick_timeout":"50ms","hosts":[{"address":"` + o.addr() + `"}]}]`, "pick_wait", true, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &drawFilter{}
			filters := func(c *proxy.Config) {
				c.StreamFilters = &filter.StreamChain{Types: []string{"draw"}, Factories: []filter.StreamFilterFactory{f}}
			}
			mustLoop(t, filters)
			e := newTestEnv(t, routes, tc.clusters, "r", true, filters)
			if tc.down {
				cl, _ := e.clusters.Get("c")
				cl.SetHostHealth(o.addr(), false)
			}
			resp, _ := roundTrip(t, e.addr, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if n := e.handoffs(t, tc.reason); n != 1 {
				t.Fatalf("%s handoffs %v, want 1", tc.reason, n)
			}
			if n := f.draws.Load(); n != 1 {
				t.Fatalf("the filter ran %d times on one request", n)
			}
		})
	}
}

// BenchmarkLoopProxyGETFault is BenchmarkLoopProxyGET with a fault filter that applies to
// no request of the benchmark (a header it does not send), and one that delays none (0%).
func BenchmarkLoopProxyGETFault(b *testing.B) {
	benchGET(b, startLoopEnv(b, fastOrigin(b),
		withFilters(b, "fault", `{"delay":{"fixed_delay":"1s","percentage":0},"abort":{"status":503,"percentage":0}}`)).addr)
}

// BenchmarkLoopProxyGETFaultDelay delays every request by 1ms (parked on the loop's
// timer); run it with a small -benchtime (each request takes the delay).
func BenchmarkLoopProxyGETFaultDelay(b *testing.B) {
	benchGET(b, startLoopEnv(b, fastOrigin(b),
		withFilters(b, "fault", `{"delay":{"fixed_delay":"1ms","percentage":100}}`)).addr)
}

// A cluster whose hosts all go down during a delay: the request, whose fault draw is
// made, is not handed to a goroutine (which would draw again); it is answered as a pick
// that may not wait (503).
func TestLoopFaultHostsDownDuringDelay(t *testing.T) {
	o := startOrigin(t, echo)
	filters := withFilters(t, "fault", `{"delay":{"fixed_delay":"200ms","percentage":100}}`)
	mustLoop(t, filters)
	e := newTestEnv(t, `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
		{"match":{"prefix":"/"},"route":{"cluster_name":"c"}}]}]}`,
		`[{"name":"c","type":"SIMPLE","pick_timeout":"5s","hosts":[{"address":"`+o.addr()+`"}]}]`, "r", true, filters)
	cl, _ := e.clusters.Get("c")
	parked := proxy.ParkedSignal(t)
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitParked(t, parked)
	cl.SetHostHealth(o.addr(), false)
	resp, body := readResp(t, br, http.MethodGet)
	if resp.StatusCode != 503 || body != "no healthy upstream" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if n := e.handoffs(t, "pick_wait"); n != 0 {
		t.Fatalf("%v pick_wait handoffs after the filters ran", n)
	}
	if n := o.reqs.Load(); n != 0 {
		t.Fatalf("upstream saw %d requests", n)
	}
}

// waitParked waits until an event loop has parked a request for its filters' delay.
func waitParked(t *testing.T, parked <-chan struct{}) {
	t.Helper()
	select {
	case <-parked:
	case <-time.After(testTimeout):
		t.Fatal("no request was parked")
	}
}

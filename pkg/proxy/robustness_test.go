package proxy_test

// Robustness tests of the HTTP/1 proxy on both paths (docs/robustness.md): upstream
// response heads over the limits (row 8), slowloris request heads (row 27), the listener's
// connection idle timeout (row 29), an upstream dying in the middle of its response
// (row 31), and a client leaving while the upstream holds its answer (the regression
// "HTTP/1 goroutine blocked forever on a recycled stream").

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// gaugeValue reads a gauge.
func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// downActive is the listener's downstream_connections_active.
func (e *env) downActive(t *testing.T) float64 {
	return gaugeValue(t, e.m.DownstreamCxActive.WithLabelValues("l"))
}

// upActive is cluster c's upstream_connections_active (both paths count their upstream
// connections there, from the connect to the close).
func (e *env) upActive(t *testing.T) float64 {
	return gaugeValue(t, e.m.UpstreamCxActive.WithLabelValues("c"))
}

// sessionGoroutines counts the goroutines serving a downstream connection of the
// goroutine path (Proxy.ServeConn on their stack).
func sessionGoroutines() int { return testutil.Goroutines("pkg/proxy.(*Proxy).ServeConn") }

// isReset reports whether err is a connection reset (or broken pipe): a peer that closed
// with unread bytes, or aborted.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// readClosed reads what is left on c until the peer's close, within testTimeout: the
// bytes, and nil for an EOF or a reset (the proxy may close with the client's unread
// bytes in its socket). A read still blocked when the time runs out fails the test.
func readClosed(t *testing.T, r io.Reader, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	b, err := io.ReadAll(r)
	if err != nil && !isReset(err) {
		t.Fatalf("the connection was not closed: read %q, then %v", b, err)
	}
	return b
}

// --- Row 8: upstream response heads over the limits -------------------------------------

// Response heads for upstreamResponseHeadLimits, by request path; each is followed by the
// body "ok".
func limitHeads() map[string]string {
	const status = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
	fields := func(n int) string { // n field lines, Content-Length included
		var b strings.Builder
		b.WriteString(status)
		for i := 1; i < n; i++ {
			fmt.Fprintf(&b, "X-F%03d: v\r\n", i)
		}
		return b.String() + "\r\n"
	}
	sized := func(n int) string { // a head of exactly n bytes, final CRLF included
		pre, post := status+"X-Fill: ", "\r\n\r\n"
		return pre + strings.Repeat("f", n-len(pre)-len(post)) + post
	}
	return map[string]string{
		"/ok":               status + "\r\n",
		"/one-80k":          status + "X-Big: " + strings.Repeat("b", 80<<10) + "\r\n\r\n",
		"/fields-100":       fields(http1.DefaultMaxHeaders),
		"/fields-101":       fields(http1.DefaultMaxHeaders + 1),
		"/bytes-at-limit":   sized(http1.DefaultMaxHeaderBytes),
		"/bytes-over-limit": sized(http1.DefaultMaxHeaderBytes + 1),
	}
}

// TestUpstreamResponseHeadLimits (ROBUSTNESS 8, the upstream direction): the head size
// and field count limits (60 KiB, 100 fields: http1.Limits defaults) apply to upstream
// responses too. A response with one 80 KiB field, with 101 fields, or one byte over
// 60 KiB is answered 502 (session.respond, loopConn.responseHead), its upstream
// connection is closed, not pooled (the next request opens a new one), and the
// keep-alive client connection stays open for its next request, whose framing is not in
// doubt. Heads at the limits (exactly 100 fields, exactly 60 KiB) pass whole, and the
// upstream connection behind them is reused.
func TestUpstreamResponseHeadLimits(t *testing.T) { bothPaths(t, upstreamResponseHeadLimits) }

func upstreamResponseHeadLimits(t *testing.T, p path) {
	heads := limitHeads()
	up := testutil.StartTCP(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, heads[req.URL.Path]+"ok"); err != nil {
				return
			}
		}
	})
	e := p.start(t, up.Addr())
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	steps := []struct {
		path   string
		status int
		conns  int64 // upstream connections opened after the step
	}{
		{"/ok", 200, 1},
		{"/fields-100", 200, 1},
		{"/bytes-at-limit", 200, 1},
		{"/one-80k", 502, 1},
		{"/ok", 200, 2},
		{"/fields-101", 502, 2},
		{"/ok", 200, 3},
		{"/bytes-over-limit", 502, 3},
		{"/ok", 200, 4},
	}
	for i, s := range steps {
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", s.path); err != nil {
			t.Fatalf("step %d (%s): the client connection was closed: %v", i, s.path, err)
		}
		resp, body := readResp(t, br, http.MethodGet)
		if resp.StatusCode != s.status {
			t.Fatalf("step %d (%s): status %d, want %d", i, s.path, resp.StatusCode, s.status)
		}
		if resp.Close {
			t.Fatalf("step %d (%s): the answer closes the client connection", i, s.path)
		}
		if s.status == 200 && body != "ok" {
			t.Fatalf("step %d (%s): body %q", i, s.path, body)
		}
		if n := up.Conns.Load(); n != s.conns {
			t.Fatalf("step %d (%s): %d upstream connections opened, want %d", i, s.path, n, s.conns)
		}
		switch s.path {
		case "/fields-100":
			if resp.Header.Get("X-F099") != "v" {
				t.Fatalf("100 fields: the last one was not forwarded: %v", resp.Header)
			}
		case "/bytes-at-limit":
			if n := len(resp.Header.Get("X-Fill")); n < 60<<10-100 {
				t.Fatalf("a 60 KiB head: its big field arrived with %d bytes", n)
			}
		}
	}
	if p.loops {
		e.noHandoffs(t)
	}
}

// --- Row 27: slowloris -------------------------------------------------------------------

// TestSlowlorisTrickledHead (ROBUSTNESS 27): a client that sends its request head one
// byte at a time, every byte well within any per-read bound, gets 408 and a close once
// RequestHeaderTimeout has passed since the head began: the trickle does not extend it.
// The trickle would go on for 10 s, longer than the client waits (3 s), so a timer
// restarted by each byte never answers.
func TestSlowlorisTrickledHead(t *testing.T) { bothPaths(t, slowlorisTrickledHead) }

func slowlorisTrickledHead(t *testing.T, p path) {
	const timeout = 300 * time.Millisecond
	const gap = 10 * time.Millisecond
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	e := p.start(t, o.addr(), func(c *proxy.Config) { c.RequestHeaderTimeout = timeout })
	c := dial(t, e.addr)
	head := "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + strings.Repeat("s", 1000) // 10 s or more
	stop := make(chan struct{})
	wrote := make(chan int, 1)
	start := time.Now()
	go func() {
		n := 0
		defer func() { wrote <- n }()
		for i := 0; i < len(head); i++ {
			if _, err := c.Write([]byte{head[i]}); err != nil {
				return
			}
			n++
			select {
			case <-stop:
				return
			case <-time.After(gap):
			}
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	answered := time.Since(start)
	close(stop)
	n := <-wrote
	if err != nil {
		t.Fatalf("no answer while the head trickled (%d bytes in %v): %v", n, answered, err)
	}
	if n == len(head) {
		t.Fatalf("the trickle ended (%d bytes in %v) before the answer", n, answered)
	}
	if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
		t.Fatalf("trickled head: %d close %v; want 408 and close", resp.StatusCode, resp.Close)
	}
	if answered < timeout {
		t.Fatalf("408 after %v, before the %v header timeout", answered, timeout)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if rest := readClosed(t, br, c); len(rest) != 0 {
		t.Fatalf("after the 408: %q", rest)
	}
	if o.reqs.Load() != 0 {
		t.Fatal("the trickled head reached the upstream")
	}
	testutil.Eventually(t, testTimeout, "the connection counted closed", func() bool { return e.downActive(t) == 0 })
}

// TestSlowlorisManyConnections (ROBUSTNESS 27): 200 connections hold an incomplete head
// and trickle more of it; while they are all open a new client is served (within a
// bounded wait), and once RequestHeaderTimeout passes every slow connection gets 408 and
// is closed: the listener's active connections and (goroutine path) the connection
// goroutines go back to zero.
func TestSlowlorisManyConnections(t *testing.T) { bothPaths(t, slowlorisManyConnections) }

func slowlorisManyConnections(t *testing.T, p path) {
	const n = 200
	const timeout = time.Second
	baseG := sessionGoroutines()
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	e := p.start(t, o.addr(), func(c *proxy.Config) { c.RequestHeaderTimeout = timeout })
	slow := make([]net.Conn, n)
	for i := range slow {
		slow[i] = dial(t, e.addr)
		if _, err := io.WriteString(slow[i], "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: s"); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, testTimeout, "the slow connections accepted", func() bool { return e.downActive(t) >= n })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // one byte more on every slow connection every 50 ms
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			for _, c := range slow {
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = c.Write([]byte{'s'})
			}
		}
	}()
	fast := dial(t, e.addr)
	if _, err := io.WriteString(fast, "GET /fast HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, body := readResp(t, bufio.NewReader(fast), http.MethodGet)
	_ = fast.Close()
	close(stop)
	wg.Wait()
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("a new client beside %d slow ones: %d %q", n, resp.StatusCode, body)
	}
	for i, c := range slow {
		out := readClosed(t, c, c)
		if !strings.HasPrefix(string(out), "HTTP/1.1 408 ") {
			t.Fatalf("slow connection %d: got %.100q, want 408 then the close", i, out)
		}
	}
	if r := o.reqs.Load(); r != 1 {
		t.Fatalf("the upstream served %d requests, want 1", r)
	}
	testutil.Eventually(t, testTimeout, "the slow connections counted closed", func() bool { return e.downActive(t) == 0 })
	if !p.loops {
		testutil.Eventually(t, testTimeout, "the connection goroutines ended", func() bool { return sessionGoroutines() <= baseG })
	}
}

// --- Row 29: the listener's connection idle timeout ---------------------------------------

// TestListenerIdleTimeout (ROBUSTNESS 29): a keep-alive client connection that stays
// idle between requests for longer than the listener's connection idle timeout
// (ConnOptions.IdleTimeout; on the loop network.Accepted.IdleTimeout) is closed by the
// proxy, counted with reason idle_timeout; requests closer together than the timeout
// keep it open for longer than the timeout in all.
func TestListenerIdleTimeout(t *testing.T) { bothPaths(t, listenerIdleTimeout) }

func listenerIdleTimeout(t *testing.T, p path) {
	const idle = 300 * time.Millisecond
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	p.conn = func(c *network.ListenerConfig) { c.Conn.IdleTimeout = idle }
	e := p.start(t, o.addr())
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	start := time.Now()
	for i := 0; time.Since(start) < 2*idle; i++ {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if resp, body := readResp(t, br, http.MethodGet); resp.StatusCode != 200 || body != "ok" || resp.Close {
			t.Fatalf("request %d: %d %q close %v", i, resp.StatusCode, body, resp.Close)
		}
		time.Sleep(idle / 6)
	}
	closes := e.m.ConnCloses.WithLabelValues("l", string(network.CloseIdleTimeout))
	if n := counterValue(t, closes); n != 0 {
		t.Fatalf("%v idle_timeout closes while requests came every %v", n, idle/6)
	}
	if rest := readClosed(t, br, c); len(rest) != 0 {
		t.Fatalf("idle connection: %q before the close", rest)
	}
	// The socket closes first, then the close is counted.
	testutil.Eventually(t, testTimeout, "the close counted as idle_timeout", func() bool { return counterValue(t, closes) == 1 })
	testutil.Eventually(t, testTimeout, "the connection counted closed", func() bool { return e.downActive(t) == 0 })
	if p.loops {
		e.noHandoffs(t)
	}
}

// TestIdleTimeoutSparesRequestInProgress: a request whose upstream takes longer than the
// listener's idle timeout to answer is answered: the idle timeout closes connections with
// nothing in progress, and a request's wait is bounded by its route timeout (both paths;
// the goroutine path used to close the connection under the waiting request).
func TestIdleTimeoutSparesRequestInProgress(t *testing.T) {
	bothPaths(t, idleTimeoutSparesRequestInProgress)
}

func idleTimeoutSparesRequestInProgress(t *testing.T, p path) {
	const idle = 300 * time.Millisecond
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(3 * idle)
		_, _ = io.WriteString(w, "late")
	})
	p.conn = func(c *network.ListenerConfig) { c.Conn.IdleTimeout = idle }
	e := p.start(t, o.addr())
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	for i := range 2 { // the first request of a connection, then one after it was between requests
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if resp, body := readResp(t, br, http.MethodGet); resp.StatusCode != 200 || body != "late" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if rest := readClosed(t, br, c); len(rest) != 0 { // then idle: closed
		t.Fatalf("idle connection: %q before the close", rest)
	}
}

// --- Row 31: the upstream dies in the middle of its response -------------------------------

// cutOrigin is an upstream whose first connection answers its first request with a
// chunked 200 (a whole 10-byte chunk, then, with midChunk, the start of a 100-byte one)
// and, once cut is closed, ends the connection by how: "close", "rst" (an abortive close)
// or "half" (a FIN, while it keeps reading: a request that arrives afterwards on that
// connection is counted in reusedDead). Every other request is answered "ok" at once.
type cutOrigin struct {
	srv        *testutil.TCPServer
	cut        chan struct{}
	reqs       sync.Map // path → *atomic.Int64
	reusedDead atomic.Int64
}

const cutChunk = "0123456789"

func startCutOrigin(t *testing.T, how string, midChunk bool) *cutOrigin {
	o := &cutOrigin{cut: make(chan struct{})}
	var first atomic.Bool
	o.srv = testutil.StartTCP(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		dying := !first.Swap(true)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			v, _ := o.reqs.LoadOrStore(req.URL.Path, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
			if !dying {
				if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
					return
				}
				continue
			}
			part := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n" + cutChunk + "\r\n"
			if midChunk {
				part += "64\r\nonly part of the chunk"
			}
			if _, err := io.WriteString(c, part); err != nil {
				return
			}
			select {
			case <-o.cut:
			case <-time.After(testTimeout):
				return
			}
			switch how {
			case "rst":
				_ = c.SetLinger(0)
				return
			case "half":
				_ = c.CloseWrite()
				if _, err := http.ReadRequest(br); err == nil {
					o.reusedDead.Add(1) // the proxy sent a request on the dead connection
				}
				return
			default:
				return
			}
		}
	})
	return o
}

func (o *cutOrigin) count(path string) int64 {
	if v, ok := o.reqs.Load(path); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// cutResponse sends GET /cut on a new client connection, reads the response head and its
// first chunk, has the upstream cut the connection, and reads on: the client must not
// see the end of the chunked body (the proxy must not write the last chunk), and the
// client connection must be closed.
func cutResponse(t *testing.T, e *env, o *cutOrigin) {
	t.Helper()
	c := dial(t, e.addr)
	if _, err := io.WriteString(c, "GET /cut HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		close(o.cut)
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || len(resp.TransferEncoding) == 0 {
		close(o.cut)
		t.Fatalf("response head: %d %v; want a chunked 200", resp.StatusCode, resp.TransferEncoding)
	}
	got := make([]byte, len(cutChunk))
	if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != cutChunk {
		close(o.cut)
		t.Fatalf("first chunk: %q %v", got, err)
	}
	close(o.cut) // the response has started downstream: now the upstream dies
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	rest, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("the client read a complete chunked body (then %q) from an upstream that died in the middle of it", rest)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the client connection stayed open after the upstream died (read %q)", rest)
	}
	readClosed(t, br, c)
}

// TestUpstreamCutChunkedResponse (ROBUSTNESS 31a, c): an upstream that dies (close, reset,
// or a FIN while it still reads) in the middle of a chunked response, within a chunk or
// between two: the client connection is closed without the terminating chunk, so the
// client cannot take the truncated body for a complete one. The dead upstream connection
// is closed, not pooled: upstream_connections_active drops to 0 and no request is ever
// written to it again; the next request opens a new connection and succeeds.
func TestUpstreamCutChunkedResponse(t *testing.T) { bothPaths(t, upstreamCutChunkedResponse) }

func upstreamCutChunkedResponse(t *testing.T, p path) {
	for _, how := range []string{"close", "rst", "half"} {
		for _, mid := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/midchunk=%v", how, mid), func(t *testing.T) {
				o := startCutOrigin(t, how, mid)
				e := p.start(t, o.srv.Addr())
				cutResponse(t, e, o)
				testutil.Eventually(t, testTimeout, "the dead upstream connection closed", func() bool { return e.upActive(t) == 0 })
				if resp, body := roundTrip(t, e.addr, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "ok" {
					t.Fatalf("next request: %d %q", resp.StatusCode, body)
				}
				if n := o.srv.Conns.Load(); n != 2 {
					t.Fatalf("%d upstream connections, want 2 (the next request on a new one)", n)
				}
				if n := o.reusedDead.Load(); n != 0 {
					t.Fatalf("%d requests were written to the dead upstream connection", n)
				}
				if p.loops {
					e.noHandoffs(t)
				}
			})
		}
	}
}

// TestNoRetryAfterResponseStarted (ROBUSTNESS 31b): on a route whose retry policy retries
// resets and 5xx, an upstream that dies after its response began to reach an HTTP/1
// client is not asked again: the client's connection closes on the truncated response
// and the upstream saw the request exactly once (a later request, served after it, shows
// that a retry would have arrived by then).
func TestNoRetryAfterResponseStarted(t *testing.T) { bothPaths(t, noRetryAfterResponseStarted) }

func noRetryAfterResponseStarted(t *testing.T, p path) {
	const routes = `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/"},"route":{"cluster_name":"c","retry_policy":{"retry_on":true,"num_retries":3}}}]}]}`
	for _, how := range []string{"close", "rst"} {
		t.Run(how, func(t *testing.T) {
			o := startCutOrigin(t, how, true)
			e := p.startWith(t, routes, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+o.srv.Addr()+`"}]}]`)
			cutResponse(t, e, o)
			if resp, body := roundTrip(t, e.addr, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("next request: %d %q", resp.StatusCode, body)
			}
			if n := o.count("/cut"); n != 1 {
				t.Fatalf("the upstream got the request %d times, want 1: retried after the response started", n)
			}
			if n := counterValue(t, e.m.UpstreamRetries.WithLabelValues("c")); n != 0 {
				t.Fatalf("upstream_retries_total = %v, want 0", n)
			}
		})
	}
}

// --- Regression: a client that leaves while the upstream holds its answer -------------------

// TestClientLeavesWhileUpstreamHolds (the regression "HTTP/1 goroutine blocked forever on
// a recycled stream"): a client sends a request, the upstream holds the answer, the
// client goes away (FIN, or reset), then the upstream answers (small, or larger than the
// socket buffers) or closes. The proxy's connection ends (downstream_connections_active
// back to 0; on the goroutine path the connection goroutine returns), the upstream
// connection is closed or pooled clean (upstream_connections_active ends at the one
// connection the next request left idle), and a request on a new client connection gets
// its own answer.
func TestClientLeavesWhileUpstreamHolds(t *testing.T) { bothPaths(t, clientLeavesWhileUpstreamHolds) }

func clientLeavesWhileUpstreamHolds(t *testing.T, p path) {
	for _, leave := range []string{"fin", "rst"} {
		for _, then := range []string{"answer", "big_answer", "close"} {
			t.Run(leave+"/"+then, func(t *testing.T) {
				got := make(chan struct{}, 1)
				release := make(chan struct{})
				big := strings.Repeat("B", 8<<20)
				up := testutil.StartTCP(t, func(c *net.TCPConn) {
					br := bufio.NewReader(c)
					for {
						req, err := http.ReadRequest(br)
						if err != nil {
							return
						}
						body := req.URL.Path
						if body == "/hold" {
							got <- struct{}{}
							select {
							case <-release:
							case <-time.After(testTimeout):
								return
							}
							switch then {
							case "close":
								return
							case "big_answer":
								body = big
							}
						}
						if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
							return
						}
					}
				})
				baseG := sessionGoroutines()
				e := p.start(t, up.Addr())
				c := dial(t, e.addr)
				if _, err := io.WriteString(c, "GET /hold HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				select {
				case <-got:
				case <-time.After(testTimeout):
					t.Fatal("the request did not reach the upstream")
				}
				if leave == "rst" {
					_ = c.(*net.TCPConn).SetLinger(0)
				}
				_ = c.Close()
				time.Sleep(50 * time.Millisecond) // let the proxy see the client go first
				close(release)
				testutil.Eventually(t, testTimeout, "the proxy's connection closed", func() bool { return e.downActive(t) == 0 })
				if !p.loops {
					testutil.Eventually(t, testTimeout, "the connection goroutine ended", func() bool { return sessionGoroutines() <= baseG })
				}
				if resp, body := roundTrip(t, e.addr, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "/next" {
					t.Fatalf("next request: %d %.50q", resp.StatusCode, body)
				}
				testutil.Eventually(t, testTimeout, "one upstream connection left (the idle one)", func() bool { return e.upActive(t) == 1 })
				if p.loops {
					e.noHandoffs(t)
				}
			})
		}
	}
}

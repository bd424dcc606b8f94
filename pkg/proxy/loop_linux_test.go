package proxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// The HTTP/1 event-loop path (loop_linux.go): the same proxy behaviour as the goroutine
// path, with the requests it does not serve handed over to that path.

// startLoopEnv runs an HTTP/1 proxy on one event loop with the routes of routesFmt and
// the clusters of startProxyRouter.
func startLoopEnv(t testing.TB, upstream string, opts ...func(*proxy.Config)) *env {
	t.Helper()
	return path{loops: true}.start(t, upstream, opts...)
}

// Keep-alive requests on one client connection share one upstream connection, and the
// proxy's request edits arrive.
func TestLoopKeepAliveReuse(t *testing.T) {
	var xff, rid atomic.Value
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		xff.Store(r.Header.Get("X-Forwarded-For"))
		rid.Store(r.Header.Get("X-Request-Id"))
		_, _ = io.WriteString(w, "hello "+r.URL.Path)
	})
	e := startLoopEnv(t, o.addr())
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	for i := range 5 {
		fmt.Fprintf(c, "GET /p%d HTTP/1.1\r\nHost: a\r\n\r\n", i)
		resp, body := readResp(t, br, http.MethodGet)
		if resp.StatusCode != 200 || body != fmt.Sprintf("hello /p%d", i) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := o.conns.Load(); n != 1 {
		t.Fatalf("upstream connections = %d, want 1 (kept alive)", n)
	}
	if v := xff.Load().(string); v != "127.0.0.1" {
		t.Fatalf("X-Forwarded-For = %q", v)
	}
	if v := rid.Load().(string); len(v) != 32 {
		t.Fatalf("X-Request-Id = %q", v)
	}
	if n := proxy.LoopIdle(e.px); n != 1 {
		t.Fatalf("idle upstream connections on the loop = %d, want 1", n)
	}
	e.noHandoffs(t)
}

// Pipelined requests sent in one write are answered in order; a Content-Length body that
// arrives in pieces is forwarded whole.
func TestLoopPipelinedAndSplitBody(t *testing.T) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
	})
	e := startLoopEnv(t, o.addr())
	c := dial(t, e.addr)
	var sb strings.Builder
	for i := range 10 {
		fmt.Fprintf(&sb, "POST /q%d HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nb%02d", i, i)
	}
	if _, err := io.WriteString(c, sb.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i := range 10 {
		_, body := readResp(t, br, http.MethodPost)
		if want := fmt.Sprintf("POST /q%d b%02d", i, i); body != want {
			t.Fatalf("response %d = %q, want %q", i, body, want)
		}
	}
	// A body in three writes.
	big := strings.Repeat("x", 20000)
	fmt.Fprintf(c, "PUT /split HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", len(big))
	for _, part := range []string{big[:5000], big[5000:15000], big[15000:]} {
		time.Sleep(20 * time.Millisecond)
		_, _ = io.WriteString(c, part)
	}
	_, body := readResp(t, br, http.MethodPut)
	if body != "PUT /split "+big {
		t.Fatalf("split body: got %d bytes", len(body))
	}
	e.noHandoffs(t)
}

// Chunked and close-delimited responses, HEAD, and a large response read slowly by the
// client (the upstream is read only as fast as the client takes the bytes).
func TestLoopResponseFramings(t *testing.T) {
	large := bytes.Repeat([]byte("0123456789abcdef"), 256<<10) // 4 MiB
	addr := keepAliveOrigin(t, func(c net.Conn, req *http.Request) bool {
		switch req.URL.Path {
		case "/chunked":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n")
		case "/close":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nuntil the end")
			return false
		case "/head":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
		case "/large":
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(large))
			_, _ = c.Write(large)
		}
		return true
	})
	e := startLoopEnv(t, addr)
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	_, _ = io.WriteString(c, "GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body := readResp(t, br, http.MethodGet)
	if body != "hello world" || resp.Trailer.Get("X-T") != "1" {
		t.Fatalf("chunked: %q trailer %v", body, resp.Trailer)
	}
	_, _ = io.WriteString(c, "HEAD /head HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body = readResp(t, br, http.MethodHead)
	if resp.ContentLength != 1234 || body != "" {
		t.Fatalf("HEAD: length %d body %q", resp.ContentLength, body)
	}
	_, _ = io.WriteString(c, "GET /large HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the socket buffers fill; the proxy must wait
	got, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(got, large) {
		t.Fatalf("large body: %d bytes, err %v", len(got), err)
	}
	_, _ = io.WriteString(c, "GET /close HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body = readResp(t, br, http.MethodGet)
	if body != "until the end" || !resp.Close {
		t.Fatalf("close-delimited: %q close=%v", body, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after a close-delimited response the connection should close: %v", err)
	}
	e.noHandoffs(t)
}

// Requests the loop does not serve go to the goroutine path with the connection, which
// then serves them and the requests after them. Streamed bodies (chunked, or larger than
// the loop holds) stay on the loop (reason "").
func TestLoopHandoff(t *testing.T) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d", r.URL.Path, len(b))
	})
	e := startLoopEnv(t, o.addr())
	cases := []struct {
		name, reason, req, want string
		status                  int
	}{
		{"chunked body", "", "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "/a 3", 200},
		{"large body", "", fmt.Sprintf("POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", 100000, strings.Repeat("y", 100000)), "/b 100000", 200},
		{"large head and body", "", "POST /big-head HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 1000)+"\r\n", 50) +
			"Content-Length: 48000\r\n\r\n" + strings.Repeat("z", 48000), "/big-head 48000", 200}, // head + body over what the loop holds
		{"direct response", "local_answer", "GET /direct HTTP/1.1\r\nHost: a\r\n\r\n", "direct body", 200},
		{"no route", "no_route", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "no route", 404},
	}
	handed := map[string]int{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, e.addr)
			br := bufio.NewReader(c)
			// One request the loop serves, then the one it hands over, then another.
			_, _ = io.WriteString(c, "GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
			if _, body := readResp(t, br, http.MethodGet); body != "/first 0" {
				t.Fatalf("first: %q", body)
			}
			_, _ = io.WriteString(c, tc.req)
			resp, body := readResp(t, br, http.MethodPost)
			if resp.StatusCode != tc.status || body != tc.want {
				t.Fatalf("%s: %d %q", tc.name, resp.StatusCode, body)
			}
			_, _ = io.WriteString(c, "GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
			if _, body := readResp(t, br, http.MethodGet); body != "/after 0" {
				t.Fatalf("after: %q", body)
			}
			if tc.reason == "" {
				e.noHandoffs(t)
			} else if n := e.handoffs(t, tc.reason); n != float64(handed[tc.reason]+1) {
				t.Fatalf("handoffs(%s) = %v, want %d", tc.reason, n, handed[tc.reason]+1)
			}
			handed[tc.reason]++
			// The listener counts the connection once, before and after the handoff.
			var m dto.Metric
			if err := e.m.DownstreamCxActive.WithLabelValues("l").Write(&m); err != nil || m.GetGauge().GetValue() != 1 {
				t.Fatalf("downstream_connections_active = %v (%v), want 1", m.GetGauge().GetValue(), err)
			}
			c.Close()
			testutil.Eventually(t, testTimeout, "the connection counted closed", func() bool {
				_ = e.m.DownstreamCxActive.WithLabelValues("l").Write(&m)
				return m.GetGauge().GetValue() == 0
			})
		})
	}
}

// An upstream that closes each kept-alive connection after its response: the next
// request is sent again on a new connection (staleIdleRetried).
func TestLoopStaleIdleConnectionRetried(t *testing.T) {
	e := staleIdleRetried(t, func(addr string) *env { return startLoopEnv(t, addr) })
	e.noHandoffs(t)
}

// The proxy's own answers on the loop: a dead host (503), the route timeout (504), an
// upstream that breaks off before or during its response (502, then a closed
// connection), a malformed request (400, closed), and an incomplete head (408).
func TestLoopLocalAnswers(t *testing.T) {
	addr := rawOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		switch req.URL.Path {
		case "/slow": // no answer; until the proxy gives up on it
			_, _ = io.Copy(io.Discard, c)
		case "/garbage":
			_, _ = io.WriteString(c, "NOT HTTP\r\n\r\n")
		case "/cut":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
		}
	})
	e := startLoopEnv(t, addr, func(cfg *proxy.Config) {
		cfg.RequestHeaderTimeout, cfg.RequestBodyTimeout = 300*time.Millisecond, 300*time.Millisecond
	})
	cases := []struct {
		path   string
		status int
		body   string
	}{
		{"/down", 503, "upstream connect failed"},
		{"/slow", 504, "upstream timeout"},
		{"/garbage", 502, "invalid upstream response"},
		{"/empty", 502, "upstream closed before the response"},
	}
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	for _, tc := range cases {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", tc.path)
		resp, body := readResp(t, br, http.MethodGet)
		if resp.StatusCode != tc.status || body != tc.body {
			t.Fatalf("%s: %d %q, want %d %q", tc.path, resp.StatusCode, body, tc.status, tc.body)
		}
	}
	// Cut mid-body: the client connection closes.
	_, _ = io.WriteString(c, "GET /cut HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut body: %v, want unexpected EOF", err)
	}

	resp, _ = roundTrip(t, e.addr, "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
	if resp.StatusCode != 400 || !resp.Close {
		t.Fatalf("CL+TE: %d close=%v", resp.StatusCode, resp.Close)
	}
	resp, body := roundTrip(t, e.addr, "GET / HTTP/1.1\r\nHost: a\r\n")
	if resp.StatusCode != 408 || body != "request header timeout" {
		t.Fatalf("partial head: %d %q", resp.StatusCode, body)
	}
	resp, body = roundTrip(t, e.addr, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
	if resp.StatusCode != 408 || body != "request body timeout" {
		t.Fatalf("partial body: %d %q", resp.StatusCode, body)
	}
	e.noHandoffs(t)
}

// A client that sends its request and its FIN at once still gets the response; HTTP/1.0
// keep-alive is answered with "Connection: keep-alive".
func TestLoopHalfCloseAndHTTP10(t *testing.T) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "fine") })
	e := startLoopEnv(t, o.addr())
	c := dial(t, e.addr)
	// The request and the FIN in one segment (corked), so that the loop reads them
	// together: a FIN read after the request went upstream is the client leaving, and
	// that request is dropped (readDown).
	cork(t, c.(*net.TCPConn), true)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	_ = c.(*net.TCPConn).CloseWrite()
	br := bufio.NewReader(c)
	if _, body := readResp(t, br, http.MethodGet); body != "fine" {
		t.Fatalf("body %q", body)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection not closed after the client's FIN: %v", err)
	}

	c = dial(t, e.addr)
	br = bufio.NewReader(c)
	for range 2 {
		_, _ = io.WriteString(c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		resp, body := readResp(t, br, http.MethodGet)
		if body != "fine" || resp.Header.Get("Connection") != "keep-alive" {
			t.Fatalf("HTTP/1.0 keep-alive: %q %v", body, resp.Header)
		}
	}
	_, _ = io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
	if _, body := readResp(t, br, http.MethodGet); body != "fine" {
		t.Fatalf("HTTP/1.0: %q", body)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("HTTP/1.0 without keep-alive: connection not closed: %v", err)
	}
	e.noHandoffs(t)
}

// cork sets TCP_CORK on c: what is written is held back until it is unset or the socket
// is shut down for writing, which then sends it with the FIN.
func cork(t *testing.T, c *net.TCPConn, on bool) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	v := 0
	if on {
		v = 1
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, v) }); err != nil || serr != nil {
		t.Fatalf("TCP_CORK: %v %v", err, serr)
	}
}

// Many clients at once on two loops, each with many requests, with an access log and
// retries of every eleventh request's first try (503): every response matches its
// request, under the race detector.
func TestLoopConcurrentClients(t *testing.T) {
	var tries sync.Map
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		v := r.URL.Query().Get("v")
		if n, _ := strconv.Atoi(v); n%11 == 0 {
			if _, again := tries.LoadOrStore(v, true); !again {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = io.WriteString(w, v)
	})
	routes := `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/"},"route":{"cluster_name":"c","retry_policy":{"retry_on":true,"num_retries":1}}}]}]}`
	logPath := filepath.Join(t.TempDir(), "access.log")
	e := newTestEnvN(t, routes, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+o.addr()+`"}],"circuit_breakers":[{"max_retries":1000}]}]`,
		"r", path{loops: true, n: 2}, withAccessLog(t, logPath, "%response_code% %x-mosn-path%"))
	const clients, reqs = 16, 50
	errs := make(chan error, clients)
	for k := range clients {
		go func() {
			c, err := net.DialTimeout("tcp", e.addr, testTimeout)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(testTimeout))
			br := bufio.NewReader(c)
			for i := range reqs {
				v := strconv.Itoa(k*1000 + i)
				fmt.Fprintf(c, "GET /?v=%s HTTP/1.1\r\nHost: a\r\n\r\n", v)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(resp.Body)
				if err != nil || string(b) != v {
					errs <- fmt.Errorf("client %d request %d: %q %v", k, i, b, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	retried := int64(0)
	tries.Range(func(any, any) bool { retried++; return true })
	if n := o.reqs.Load(); n != clients*reqs+retried {
		t.Fatalf("upstream requests = %d, want %d + %d retries", n, clients*reqs, retried)
	}
	if lines := logLines(t, e.px.AccessLog().Flush, logPath, clients*reqs); len(lines) != clients*reqs {
		t.Fatalf("%d access log lines, want %d", len(lines), clients*reqs)
	}
	if n := proxy.LoopIdle(e.px); n < 1 || n > clients {
		t.Fatalf("idle upstream connections on the loop = %d, want 1..%d", n, clients)
	}
	e.noHandoffs(t)
}

// A client that does not read holds the upstream back: the proxy stops reading the
// upstream once the client's socket is full, instead of buffering the response.
func TestLoopBackpressure(t *testing.T) {
	const total, chunk = 64 << 20, 1 << 20
	var written atomic.Int64
	addr := rawOrigin(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", total)
		b := make([]byte, chunk)
		for written.Load() < total {
			if _, err := c.Write(b); err != nil {
				return
			}
			written.Add(chunk)
		}
	})
	e := startLoopEnv(t, addr)
	c := dial(t, e.addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(500 * time.Millisecond)
	// Socket buffers on the way hold some tens of MiB at most.
	if w := written.Load(); w >= total {
		t.Fatalf("the upstream wrote all %d bytes while the client read nothing: the proxy buffered them", w)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != total {
		t.Fatalf("body: %d bytes, %v", n, err)
	}
}

// BenchmarkLoopProxyGET is BenchmarkProxyGET on the event-loop path.
func BenchmarkLoopProxyGET(b *testing.B) {
	benchGET(b, startLoopEnv(b, fastOrigin(b)).addr)
}

// BenchmarkLoopProxyGETLog is BenchmarkLoopProxyGET with an access log to a file.
func BenchmarkLoopProxyGETLog(b *testing.B) {
	path := filepath.Join(b.TempDir(), "access.log")
	benchGET(b, startLoopEnv(b, fastOrigin(b), withAccessLog(b, path, "")).addr)
}

// BenchmarkLoopProxyGETFilters is BenchmarkProxyGETFilters on the event loop: a
// header_mutation filter (one request header added, one response header removed) and an
// access log to a file.
func BenchmarkLoopProxyGETFilters(b *testing.B) {
	path := filepath.Join(b.TempDir(), "access.log")
	benchGET(b, startLoopEnv(b, fastOrigin(b),
		withFilters(b, "header_mutation", `{"request_headers_to_add":[{"header":{"key":"x-bench","value":"1"}}],"response_headers_to_remove":["content-type"]}`),
		withAccessLog(b, path, "")).addr)
}

// The access log on the loop writes the lines the goroutine path writes for the same
// requests: served, connect failure, upstream timeout, upstream cut mid-body.
func TestLoopAccessLog(t *testing.T) {
	addr := keepAliveOrigin(t, func(c net.Conn, req *http.Request) bool {
		switch req.URL.Path {
		case "/slow": // no answer; until the proxy gives up on it
			_, _ = io.Copy(io.Discard, c)
			return false
		case "/cut":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-R: cut\r\n\r\nonly part")
			return false
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-R: ok\r\n\r\nhello")
		return true
	})
	const format = "%protocol% %response_code% %response_flag% %x-mosn-method% %x-mosn-path% %request_header_user-agent% " +
		"%bytes_received% %bytes_sent% %upstream_cluster% %upstream_host% %response_header_x-r%"
	run := func(t *testing.T, loops bool) []string {
		path := filepath.Join(t.TempDir(), "access.log")
		e := newTestEnv(t, routesFmt, fmt.Sprintf(`[{"name":"c","type":"SIMPLE","hosts":[{"address":%q}]},
		{"name":"dead","type":"SIMPLE","connect_timeout":"200ms","hosts":[{"address":"127.0.0.1:1"}]}]`, addr), "r", loops,
			withAccessLog(t, path, format))
		c := dial(t, e.addr)
		br := bufio.NewReader(c)
		for _, p := range []string{"/one", "/down", "/slow"} {
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a\r\nUser-Agent: ua\r\n\r\n", p)
			readResp(t, br, http.MethodGet)
		}
		roundTrip(t, e.addr, "POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
		c2 := dial(t, e.addr)
		_, _ = io.WriteString(c2, "GET /cut HTTP/1.1\r\nHost: a\r\n\r\n")
		_, _ = io.Copy(io.Discard, c2)
		lines := logLines(t, e.px.AccessLog().Flush, path, 5)
		slices.Sort(lines)
		if loops {
			e.noHandoffs(t)
		}
		return lines
	}
	want := run(t, false)
	got := run(t, true)

	if len(want) != 5 || !slices.Equal(got, want) {
		t.Fatalf("loop access log:\n%s\nthe goroutine path's:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The same random request streams through both paths get the same answers: keep-alive
// and pipelined requests, bodies, HEAD, chunked and close-delimited responses, 204 and
// 304, and requests the loop hands over (chunked bodies, Expect).
func TestLoopMatchesGoroutinePath(t *testing.T) {
	addr := keepAliveOrigin(t, func(c net.Conn, req *http.Request) bool {
		body, _ := io.ReadAll(req.Body)
		var kind string
		var n int
		_, _ = fmt.Sscanf(req.URL.Path, "/r/%1s/%d", &kind, &n)
		unit := fmt.Sprintf("%s%s%d|", req.Method, body, n)
		payload := strings.Repeat(unit, 1+n/len(unit))[:n]
		if req.Method == http.MethodHead {
			payload = "" // the head says what a GET would get; no body follows
		}
		switch kind {
		case "l":
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-K: l\r\n\r\n", n)
			_, _ = io.WriteString(c, payload)
		case "c":
			_, _ = io.WriteString(c, "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n")
			if req.Method == http.MethodHead {
				return true
			}
			for i := 0; i < n; i += 700 {
				part := payload[i:min(n, i+700)]
				fmt.Fprintf(c, "%x\r\n%s\r\n", len(part), part)
			}
			_, _ = io.WriteString(c, "0\r\n\r\n")
		case "n":
			_, _ = io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
		case "m":
			_, _ = io.WriteString(c, "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n")
		case "e":
			// Close-delimited (for a GET). It says so: an upstream that closes a connection
			// the proxy may reuse races the next request, which a body that streams
			// cannot survive on either path.
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n%s", payload)
			return false
		}
		return true
	})
	type exchange struct{ reqs []string }
	rng := rand.New(rand.NewPCG(1, 2))
	var conns []exchange
	handed := 0
	for range 12 {
		var ex exchange
		for range 1 + rng.IntN(12) {
			kind := []string{"l", "l", "l", "c", "n", "m", "e"}[rng.IntN(7)]
			n := rng.IntN(5000)
			path := fmt.Sprintf("/r/%s/%d", kind, n)
			var req string
			switch rng.IntN(7) {
			case 0:
				req = "HEAD " + path + " HTTP/1.1\r\nHost: a\r\n\r\n"
			case 1:
				b := strings.Repeat("b", rng.IntN(3000))
				req = fmt.Sprintf("POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", path, len(b), b)
			case 2: // streamed: over what the loop holds
				b := strings.Repeat("L", 50000+rng.IntN(80000))
				req = fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", path, len(b), b)
			case 3: // streamed: chunked, in several chunks, with a trailer
				var sb strings.Builder
				for range 1 + rng.IntN(4) {
					part := strings.Repeat("c", 1+rng.IntN(20000))
					fmt.Fprintf(&sb, "%x\r\n%s\r\n", len(part), part)
				}
				req = "POST " + path + " HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + sb.String() + "0\r\nX-T: 1\r\n\r\n"
			default:
				req = "GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n"
			}
			ex.reqs = append(ex.reqs, req)
			if kind == "e" {
				break // the upstream closes: so does the client connection
			}
		}
		if last := ex.reqs[len(ex.reqs)-1]; len(conns)%3 == 2 && !strings.Contains(last, "/r/e/") {
			// A request the loop hands over, and one more after it.
			ex.reqs = append(ex.reqs, "GET /direct HTTP/1.1\r\nHost: a\r\n\r\n",
				"GET /r/c/2000 HTTP/1.1\r\nHost: a\r\n\r\n")
			handed++
		}
		conns = append(conns, ex)
	}
	var loopEnv *env
	run := func(p path) []string {
		e := p.start(t, addr)
		if p.loops {
			loopEnv = e
		}
		var out []string
		for i, ex := range conns {
			c := dial(t, e.addr)
			br := bufio.NewReader(c)
			pipelined := i%2 == 1
			if pipelined {
				_, _ = io.WriteString(c, strings.Join(ex.reqs, ""))
			}
			for _, req := range ex.reqs {
				if !pipelined {
					_, _ = io.WriteString(c, req)
				}
				method, _, _ := strings.Cut(req, " ")
				resp, err := http.ReadResponse(br, &http.Request{Method: method})
				if err != nil {
					out = append(out, "error "+err.Error())
					break
				}
				b, err := io.ReadAll(resp.Body)
				out = append(out, fmt.Sprintf("%d %q %v %s %s", resp.StatusCode, b, err, resp.Header.Get("X-K"), resp.TransferEncoding))
			}
			c.Close()
		}
		return out
	}
	want := run(path{})
	got := run(path{loops: true})
	if !slices.Equal(got, want) {
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Errorf("answer %d: loop %.200s\ngoroutines %.200s", i, got[i], want[i])
			}
		}
		t.Fatalf("%d answers on the loop, %d on goroutines", len(got), len(want))
	}
	if n := loopEnv.handoffs(t, "local_answer"); n != float64(handed) || handed == 0 {
		t.Fatalf("%v connections handed off, want %d", n, handed)
	}
}

// An idle upstream connection on a loop is closed as soon as its host goes down, not at
// its idle timeout.
func TestLoopIdleToDownHostClosed(t *testing.T) {
	o := startOrigin(t, echo)
	e := startLoopEnv(t, o.addr())
	if resp, _ := roundTrip(t, e.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if n := proxy.LoopIdle(e.px); n != 1 {
		t.Fatalf("idle = %d, want 1", n)
	}
	cl, _ := e.clusters.Get("c")
	cl.SetHostHealth(o.addr(), false)
	testutil.Eventually(t, testTimeout, "the idle connection to the down host closed", func() bool {
		return proxy.LoopIdle(e.px) == 0 && o.closed.Load() == 1
	})
}

// Expect: 100-continue on the loop: the go-ahead goes out once the request is known to be
// forwarded from the loop, the body is awaited, and the upstream gets no Expect; a body
// sent with the head needs no go-ahead.
func TestLoopExpectContinue(t *testing.T) {
	var expect atomic.Value
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		expect.Store(r.Header.Get("Expect"))
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	})
	e := startLoopEnv(t, o.addr())
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	_, _ = io.WriteString(c, "POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("before the body: %q %v, want 100 Continue", line, err)
	}
	if l, _ := br.ReadString('\n'); l != "\r\n" {
		t.Fatalf("interim response not ended: %q", l)
	}
	_, _ = io.WriteString(c, "hello")
	if resp, body := readResp(t, br, http.MethodPost); resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("after the body: %d %q", resp.StatusCode, body)
	}
	if v := expect.Load().(string); v != "" {
		t.Fatalf("upstream got Expect: %q", v)
	}
	_, _ = io.WriteString(c, "POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc")
	if resp, body := readResp(t, br, http.MethodPost); resp.StatusCode != 200 || body != "abc" {
		t.Fatalf("body with the head: %d %q", resp.StatusCode, body)
	}
	e.noHandoffs(t)
}

// A streamed request body goes no faster than the upstream reads it: the proxy holds at
// most what the loop reads ahead, not the body.
func TestLoopUploadBackpressure(t *testing.T) {
	const total, chunk = 64 << 20, 1 << 20
	release := make(chan struct{})
	addr := rawOrigin(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		<-release
		n, _ := io.Copy(io.Discard, req.Body)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d", len(strconv.FormatInt(n, 10)), n)
	})
	e := startLoopEnv(t, addr)
	c := dial(t, e.addr)
	var sent atomic.Int64
	errc := make(chan error, 1)
	go func() {
		if _, err := fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", total); err != nil {
			errc <- err
			return
		}
		b := make([]byte, chunk)
		for sent.Load() < total {
			if _, err := c.Write(b); err != nil {
				errc <- err
				return
			}
			sent.Add(chunk)
		}
		errc <- nil
	}()
	time.Sleep(500 * time.Millisecond)
	if s := sent.Load(); s >= total {
		t.Fatalf("the client sent all %d bytes while the upstream read none: the proxy buffered them", s)
	}
	close(release)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	resp, body := readResp(t, bufio.NewReader(c), http.MethodPost)
	if resp.StatusCode != 200 || body != strconv.Itoa(total) {
		t.Fatalf("upload: %d %q", resp.StatusCode, body)
	}
	e.noHandoffs(t)
}

// keepAliveOrigin is a raw HTTP/1 upstream that hands each request on a connection to
// serve, which writes the answer itself; false closes the connection.
func keepAliveOrigin(t *testing.T, serve func(c net.Conn, req *http.Request) bool) string {
	return rawOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil || !serve(c, req) {
				return
			}
		}
	})
}

// Requests pipelined behind a streamed body (one over the loop's in-memory body size) are
// answered: the body fills the connection's input, so the requests behind it stay in
// the socket, and no new edge tells of them once the client has sent everything.
func TestLoopPipelinedAfterStreamedBody(t *testing.T) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d", r.URL.Path, len(b))
	})
	e := startLoopEnv(t, o.addr())
	c := dial(t, e.addr)
	sizes := []int{100000, 40000, 40000, 40000}
	var sb strings.Builder
	for i, n := range sizes {
		fmt.Fprintf(&sb, "POST /r%d HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", i, n, strings.Repeat("z", n))
	}
	if _, err := io.WriteString(c, sb.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i, n := range sizes {
		_, body := readResp(t, br, http.MethodPost)
		if want := fmt.Sprintf("/r%d %d", i, n); body != want {
			t.Fatalf("response %d = %q, want %q", i, body, want)
		}
	}
}

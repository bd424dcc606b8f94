package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/test/framework"
)

// recorder is a raw HTTP/1 upstream that keeps every request it parsed (headers and body)
// and answers each with 200 and the request path as the body.
type recorder struct {
	srv   *framework.TCPServer
	count atomic.Int64
	mu    sync.Mutex
	reqs  []*http.Request
	fail  atomic.Int64 // answer this many more requests with 503 (then 200)
}

func startRecorder(t *testing.T) *recorder {
	t.Helper()
	r := &recorder{}
	r.srv = framework.StartTCP(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, err := io.ReadAll(req.Body)
			if err != nil {
				return
			}
			req.Body = io.NopCloser(strings.NewReader(string(body)))
			r.count.Add(1)
			r.mu.Lock()
			r.reqs = append(r.reqs, req)
			r.mu.Unlock()
			status, msg := 200, req.URL.Path
			if r.fail.Add(-1) >= 0 {
				status, msg = 503, "fail"
			}
			resp := "HTTP/1.1 " + strconv.Itoa(status) + " X\r\nContent-Length: " + strconv.Itoa(len(msg)) + "\r\n\r\n" + msg
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	})
	return r
}

func (r *recorder) last() *http.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		return nil
	}
	return r.reqs[len(r.reqs)-1]
}

// proxyWith starts mosnlite with one HTTP/1 listener whose proxy filter has extend_config
// extra, routing everything to cluster "up" on hosts.
func proxyWith(t *testing.T, routes []any, extend map[string]any, hosts ...string) string {
	t.Helper()
	listen := framework.FreePort(t)
	cfg := httpProxyConfig(listen, "Http1", "", routes, hosts...)
	if extend != nil {
		var m map[string]any
		if err := json.Unmarshal([]byte(cfg), &m); err != nil {
			t.Fatal(err)
		}
		f := m["servers"].([]any)[0].(map[string]any)["listeners"].([]any)[0].(map[string]any)["filter_chains"].([]any)[0].(map[string]any)["filters"].([]any)[0].(map[string]any)
		f["config"].(map[string]any)["extend_config"] = extend
		b, _ := json.Marshal(m)
		cfg = string(b)
	}
	framework.StartProxy(t, cfg)
	return listen
}

// rawExchange sends req on a new connection and reads until the proxy closes it or
// the deadline passes; it returns everything read.
func rawExchange(t *testing.T, addr, req string, wait time.Duration) string {
	t.Helper()
	c := framework.Dial(t, addr)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

// readResponse reads one response from br (body read fully).
func readResponse(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

func statusOf(s string) int {
	if !strings.HasPrefix(s, "HTTP/1.1 ") || len(s) < 12 {
		return 0
	}
	n, _ := strconv.Atoi(s[9:12])
	return n
}

// TestHTTP1RulesRejectSmuggling sends request-smuggling shapes and malformed heads as raw
// bytes: each gets its error status, the connection is closed, and nothing reaches the
// upstream.
func TestHTTP1RulesRejectSmuggling(t *testing.T) {
	up := startRecorder(t)
	addr := proxyWith(t, []any{routeTo("/", nil)}, nil, up.srv.Addr())

	big := strings.Repeat("a", 1000)
	var many strings.Builder
	for i := 0; i < 101; i++ {
		many.WriteString("X-H" + strconv.Itoa(i) + ": v\r\n")
	}
	var huge strings.Builder
	for huge.Len() < 61<<10 {
		huge.WriteString("X-Big: " + big + "\r\n")
	}
	cases := []struct {
		name string
		req  string
		want []int
	}{
		{"cl_then_te", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []int{400}},
		{"te_then_cl", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", []int{400}},
		{"te_tab_cl", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n", []int{400}},
		{"te_gzip_chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", []int{501, 400}},
		{"te_identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", []int{501, 400}},
		{"te_chunked_twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", []int{400, 501}},
		{"te_two_lines", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []int{400}},
		{"cl_conflict", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nContent-Length: 20\r\n\r\n0123456789", []int{400}},
		{"cl_negative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", []int{400}},
		{"cl_plus", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", []int{400}},
		{"cl_hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", []int{400}},
		{"cl_huge", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", []int{400, 413}},
		{"name_space", "GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", []int{400}},
		{"name_colon_space", "GET / HTTP/1.1\r\nHost: a\r\nX-A : x\r\n\r\n", []int{400}},
		{"value_nul", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", []int{400}},
		{"value_bare_cr", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", []int{400}},
		{"obs_fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n", []int{400}},
		{"bare_lf_head", "GET / HTTP/1.1\nHost: a\n\n", []int{400}},
		{"headers_over_60k", "GET / HTTP/1.1\r\nHost: a\r\n" + huge.String() + "\r\n", []int{431}},
		{"one_header_80k", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 80<<10) + "\r\n\r\n", []int{431}},
		{"headers_101", "GET / HTTP/1.1\r\nHost: a\r\n" + many.String() + "\r\n", []int{431}},
		{"uri_100k", "GET /" + strings.Repeat("u", 100<<10) + " HTTP/1.1\r\nHost: a\r\n\r\n", []int{414, 431, 400}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := up.count.Load()
			out := rawExchange(t, addr, tc.req, 10*time.Second)
			got := statusOf(out)
			ok := false
			for _, w := range tc.want {
				ok = ok || got == w
			}
			if !ok {
				t.Fatalf("status %d, want one of %v; response %.200q", got, tc.want, out)
			}
			if !strings.Contains(strings.ToLower(out), "connection: close") {
				t.Errorf("error response does not close the connection: %.200q", out)
			}
			if n := up.count.Load() - before; n != 0 {
				t.Fatalf("%d request(s) reached the upstream", n)
			}
		})
	}
	// A request under the limits passes (the limits are not simply "reject everything").
	out := rawExchange(t, addr, "GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"+strings.Repeat("X-Big: "+big+"\r\n", 50)+"\r\n", 10*time.Second)
	if statusOf(out) != 200 {
		t.Fatalf("request under the limits: %.200q", out)
	}
}

// TestHTTP1RulesBareLFInChunks: a chunk-size line ending in a bare LF (and a chunk
// extension holding one) is a 400 and the connection closes; the upstream never gets a
// complete request.
func TestHTTP1RulesBareLFInChunks(t *testing.T) {
	up := startRecorder(t)
	addr := proxyWith(t, []any{routeTo("/", nil)}, nil, up.srv.Addr())
	for name, body := range map[string]string{
		"size_line": "5\nhello\r\n0\r\n\r\n",
		"extension": "5;a=b\nc\r\nhello\r\n0\r\n\r\n",
		"last":      "5\r\nhello\r\n0\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			before := up.count.Load()
			out := rawExchange(t, addr, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"+body, 10*time.Second)
			if statusOf(out) != 400 {
				t.Fatalf("want 400, got %.200q", out)
			}
			if n := up.count.Load() - before; n != 0 {
				t.Fatalf("the upstream parsed %d complete request(s)", n)
			}
		})
	}
}

// TestHTTP1RulesHeaderTimeout: a client that sends half a head and stalls gets 408 and
// the connection closes (request_header_timeout from the proxy's extend_config).
func TestHTTP1RulesHeaderTimeout(t *testing.T) {
	up := startRecorder(t)
	addr := proxyWith(t, []any{routeTo("/", nil)}, map[string]any{"request_header_timeout": "1s"}, up.srv.Addr())
	start := time.Now()
	out := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ", 15*time.Second)
	if statusOf(out) != 408 {
		t.Fatalf("want 408 after a stalled head, got %.200q after %v", out, time.Since(start))
	}
	if !strings.Contains(strings.ToLower(out), "connection: close") {
		t.Fatalf("408 must close: %q", out)
	}
	if up.count.Load() != 0 {
		t.Fatal("the partial request reached the upstream")
	}
	// A keep-alive connection that is idle between requests is not a partial head: a
	// request after a pause longer than the header timeout is still served.
	c := framework.Dial(t, addr)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(c)
	for i := 0; i < 2; i++ {
		if _, err := io.WriteString(c, "GET /again HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != "/again" {
			t.Fatalf("keep-alive request %d: %d %q", i, resp.StatusCode, body)
		}
		time.Sleep(1500 * time.Millisecond)
	}
}

// TestHTTP1RulesPipeliningAndHeaders: three pipelined requests in one write are answered
// in order; hop-by-hop headers are stripped and X-Forwarded-For / X-Request-Id added.
func TestHTTP1RulesPipeliningAndHeaders(t *testing.T) {
	up := startRecorder(t)
	addr := proxyWith(t, []any{routeTo("/", nil)}, nil, up.srv.Addr())
	c := framework.Dial(t, addr)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var req strings.Builder
	for _, p := range []string{"/one", "/two", "/three"} {
		req.WriteString("GET " + p + " HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n" +
			"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\nUpgrade-Insecure-Requests: 1\r\n" +
			"X-Forwarded-For: 10.0.0.1\r\nX-Keep: yes\r\n\r\n")
	}
	if _, err := io.WriteString(c, req.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for _, p := range []string{"/one", "/two", "/three"} {
		resp, body := readResponse(t, br, "GET")
		if resp.StatusCode != 200 || body != p {
			t.Fatalf("pipelined %s: %d %q (out of order?)", p, resp.StatusCode, body)
		}
	}
	r := up.last()
	if r == nil {
		t.Fatal("upstream got nothing")
	}
	for _, h := range []string{"X-Hop", "Keep-Alive", "Proxy-Connection", "Te"} {
		if v, ok := r.Header[h]; ok {
			t.Errorf("hop-by-hop %s forwarded: %q", h, v)
		}
	}
	if r.Header.Get("X-Keep") != "yes" || r.Header.Get("Upgrade-Insecure-Requests") != "1" {
		t.Errorf("end-to-end headers lost: %v", r.Header)
	}
	if xff := r.Header.Get("X-Forwarded-For"); xff != "10.0.0.1, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q", xff)
	}
	if rid := r.Header.Get("X-Request-Id"); len(rid) < 16 {
		t.Errorf("X-Request-Id = %q", rid)
	}
}

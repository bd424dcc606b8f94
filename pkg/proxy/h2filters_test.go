package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// h2Logs returns the access logs of an env's proxy (HTTP/2 driver or HTTP/1 proxy).
func (e *h2env) logs() *accesslog.Logs {
	switch h := e.h.(type) {
	case *proxy.H2:
		return h.Proxy().AccessLog()
	case *proxy.Proxy:
		return h.AccessLog()
	}
	return nil
}

// logLines flushes the env's access log and returns its lines once there are at least
// n (or after testTimeout).
func (e *h2env) logLines(t *testing.T, path string, n int) []string {
	t.Helper()
	return logLines(t, e.logs().Flush, path, n)
}

// logLines flushes the access log and reads path until it holds n lines (or the test
// timeout passes). A line is written after its response went out, so a client's next
// request can be logged before it: callers compare lines as a set.
func logLines(t *testing.T, flush func(), path string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		flush()
		b, _ := os.ReadFile(path)
		s := strings.TrimSpace(string(b))
		var lines []string
		if s != "" {
			lines = strings.Split(s, "\n")
		}
		if len(lines) >= n || time.Now().After(deadline) {
			return lines
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func h2req(t *testing.T, c *http.Client, method, url string, body io.Reader, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// TestH2FilterAbortAnswersLocally: a fault abort on an HTTP/2 stream is answered by the
// proxy (status, body) and the upstream sees nothing; a route's per_filter_config turns
// the abort on for its prefix only; the access log flags it FI.
func TestH2FilterAbortAnswersLocally(t *testing.T) {
	o := h2Origin(t, h2echo)
	path := filepath.Join(t.TempDir(), "access.log")
	e := startH2Proxy(t, o.addr(), stream.HTTP2, "",
		withFilters(t, "fault", `{"abort":{"status":503,"percentage":100},"headers":[{"name":"x-abort","value":"1"}]}`),
		withAccessLog(t, path, "%protocol% %response_code% %response_flag% %x-mosn-path% %upstream_cluster%"))
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	for _, p := range []string{"/h2/x", "/h1/x"} {
		resp, body := h2req(t, c, "GET", "http://"+e.addr+p, nil, "X-Abort", "1")
		if resp.StatusCode != 503 || !strings.Contains(body, "fault filter abort") {
			t.Fatalf("%s: %d %q", p, resp.StatusCode, body)
		}
	}
	resp, body := h2req(t, c, "POST", "http://"+e.addr+"/pf/x", strings.NewReader("data"))
	if resp.StatusCode != 418 || !strings.Contains(body, "fault filter abort") {
		t.Fatalf("per_filter_config: %d %q", resp.StatusCode, body)
	}
	if n := o.reqs.Load() + o.conns.Load(); n != 0 {
		t.Fatalf("upstream saw %d requests/connections", n)
	}
	resp, body = h2req(t, c, "GET", "http://"+e.addr+"/h2/ok", nil)
	if resp.StatusCode != 200 || body != "GET /h2/ok " {
		t.Fatalf("no abort header: %d %q", resp.StatusCode, body)
	}
	want := []string{"Http2 503 FI /h2/x -", "Http2 503 FI /h1/x -", "Http2 418 FI /pf/x -", "Http2 200 - /h2/ok c"}
	lines := e.logLines(t, path, len(want))
	if len(lines) != len(want) {
		t.Fatalf("%d lines: %q", len(lines), lines)
	}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("line %d = %q, want %q", i, lines[i], w)
		}
	}
}

// TestH2HeaderMutation: header_mutation edits the forwarded request and the response, for
// HTTP/2 and HTTP/1 upstreams.
func TestH2HeaderMutation(t *testing.T) {
	o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Internal", "secret")
		w.Header().Set("X-Seen-Added", r.Header.Get("X-Added"))
		w.Header().Set("X-Seen-Secret", r.Header.Get("X-Secret"))
		w.Header().Set("X-Seen-Replaced", strings.Join(r.Header.Values("X-Replaced"), ","))
		w.Header().Set("X-Proto", r.Proto)
	})
	e := startH2Proxy(t, o.addr(), stream.HTTP2, "", withFilters(t, "header_mutation", `{
		"request_headers_to_add":[{"header":{"key":"X-Added","value":"yes"}},{"header":{"key":"x-replaced","value":"new"},"append":false}],
		"request_headers_to_remove":["x-secret"],
		"response_headers_to_add":[{"header":{"key":"X-Resp","value":"1"}}],
		"response_headers_to_remove":["x-internal"]}`))
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	for _, tc := range []struct{ path, proto string }{{"/h2/a", "HTTP/2.0"}, {"/h1/a", "HTTP/1.1"}} {
		resp, _ := h2req(t, c, "GET", "http://"+e.addr+tc.path, nil, "X-Secret", "s", "X-Replaced", "old")
		h := resp.Header
		if resp.StatusCode != 200 || h.Get("X-Proto") != tc.proto {
			t.Fatalf("%s: %d %q", tc.path, resp.StatusCode, h.Get("X-Proto"))
		}
		if h.Get("X-Seen-Secret") != "" || h.Get("X-Seen-Added") != "yes" || h.Get("X-Seen-Replaced") != "new" {
			t.Fatalf("%s: upstream saw secret=%q added=%q replaced=%q", tc.path, h.Get("X-Seen-Secret"), h.Get("X-Seen-Added"), h.Get("X-Seen-Replaced"))
		}
		if h.Get("X-Internal") != "" || h.Get("X-Resp") != "1" {
			t.Fatalf("%s: downstream got X-Internal=%q X-Resp=%q", tc.path, h.Get("X-Internal"), h.Get("X-Resp"))
		}
	}
}

// TestH2PayloadLimit: a declared length over the limit is refused before anything is
// forwarded; a streamed body crossing it is cut and answered 413.
func TestH2PayloadLimit(t *testing.T) {
	o := h2Origin(t, h2echo)
	path := filepath.Join(t.TempDir(), "access.log")
	e := startH2Proxy(t, o.addr(), stream.HTTP2, "", withFilters(t, "payload_limit", `{"max_entity_size":8}`),
		withAccessLog(t, path, "%response_code% %response_flag% %x-mosn-path%"))
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	for _, p := range []string{"/h2/a", "/h1/a"} {
		resp, body := h2req(t, c, "POST", "http://"+e.addr+p, strings.NewReader("123456789"))
		if resp.StatusCode != 413 {
			t.Fatalf("%s declared length: %d %q", p, resp.StatusCode, body)
		}
	}
	if n := o.reqs.Load() + o.conns.Load(); n != 0 {
		t.Fatalf("upstream saw %d requests/connections", n)
	}
	for _, p := range []string{"/h2/s", "/h1/s"} {
		pr, pw := io.Pipe()
		go func() {
			_, _ = pw.Write([]byte("12345"))
			_, _ = pw.Write([]byte("67890"))
			_ = pw.Close()
		}()
		resp, body := h2req(t, c, "POST", "http://"+e.addr+p, pr)
		if resp.StatusCode != 413 {
			t.Fatalf("%s streamed: %d %q", p, resp.StatusCode, body)
		}
	}
	resp, body := h2req(t, c, "POST", "http://"+e.addr+"/h2/ok", strings.NewReader("12345678"))
	if resp.StatusCode != 200 || body != "POST /h2/ok 12345678" {
		t.Fatalf("at the limit: %d %q", resp.StatusCode, body)
	}
	want := []string{"200 - /h2/ok", "413 RE /h1/a", "413 RE /h1/s", "413 RE /h2/a", "413 RE /h2/s"}
	lines := e.logLines(t, path, len(want))
	if len(lines) != len(want) {
		t.Fatalf("%d lines: %q", len(lines), lines)
	}
	sort.Strings(lines) // a reset stream may move the client to a new connection (log shard)
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("line %d = %q, want %q", i, lines[i], w)
		}
	}
}

// TestH2AccessLogFlags: one line per stream with protocol Http2, the upstream, byte
// counts and the response flags of the proxy's own answers.
func TestH2AccessLogFlags(t *testing.T) {
	o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/slow") {
			select {
			case <-r.Context().Done():
			case <-time.After(testTimeout):
			}
			return
		}
		h2echo(w, r)
	})
	path := filepath.Join(t.TempDir(), "access.log")
	format := "%protocol% %response_code% %response_flag% %x-mosn-method% %x-mosn-path% %upstream_cluster% %upstream_host% %bytes_received% %bytes_sent% %request_header_x-trace% %response_header_x-proto% %downstream_local_address%"
	e := startH2Proxy(t, o.addr(), stream.HTTP2, "", withAccessLog(t, path, format))
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/h2/a", "hello", 200},
		{"GET", "/h1/b", "", 200},
		{"GET", "/direct", "", 200},
		{"GET", "/empty", "", 503},
		{"GET", "/down", "", 503},
		{"GET", "/slow", "", 504},
	} {
		var rd io.Reader
		if tc.body != "" {
			rd = strings.NewReader(tc.body)
		}
		if resp, body := h2req(t, c, tc.method, "http://"+e.addr+tc.path, rd, "X-Trace", "t"); resp.StatusCode != tc.status {
			t.Fatalf("%s: %d %q", tc.path, resp.StatusCode, body)
		}
	}
	if lines := e.logLines(t, path, 6); len(lines) != 6 {
		t.Fatalf("%d lines:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	// No route: a proxy whose router does not exist (same log file).
	nr := startH2Proxy(t, o.addr(), stream.HTTP2, "", withAccessLog(t, path, format),
		func(c *proxy.Config) { c.RouterName = "missing" })
	if resp, _ := h2req(t, c, "GET", "http://"+nr.addr+"/x", nil); resp.StatusCode != 404 {
		t.Fatalf("no route: %d", resp.StatusCode)
	}
	local := e.addr
	up := o.addr()
	want := []string{
		fmt.Sprintf("Http2 200 - POST /h2/a c %s 5 16 t HTTP/2.0 %s", up, local),
		fmt.Sprintf("Http2 200 - GET /h1/b c %s 0 10 t HTTP/1.1 %s", up, local),
		fmt.Sprintf("Http2 200 LR GET /direct - - 0 11 t - %s", local),
		fmt.Sprintf("Http2 503 UH GET /empty - - 0 19 t - %s", local),
		fmt.Sprintf("Http2 503 UF GET /down dead 127.0.0.1:1 0 23 t - %s", local),
		fmt.Sprintf("Http2 504 UT GET /slow c %s 0 16 t - %s", up, local),
		fmt.Sprintf("Http2 404 NR GET /x - - 0 8 - - %s", nr.addr),
	}
	lines := e.logLines(t, path, len(want))
	if len(lines) != len(want) {
		t.Fatalf("%d lines:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	slices.Sort(lines) // a set: see logLines
	slices.Sort(want)
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("line %d = %q, want %q", i, lines[i], w)
		}
	}
}

// TestH1ToH2FiltersAndLog: on the HTTP/1 → HTTP/2 upstream path the response filters edit
// the response and the access log line is written when the response ends, while the
// downstream connection stays open.
func TestH1ToH2FiltersAndLog(t *testing.T) {
	o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Internal", "secret")
		h2echo(w, r)
	})
	path := filepath.Join(t.TempDir(), "access.log")
	e := startH2Proxy(t, o.addr(), stream.HTTP1, stream.HTTP2,
		withFilters(t, "header_mutation", `{"request_headers_to_add":[{"header":{"key":"X-Added","value":"yes"}}],
			"response_headers_to_add":[{"header":{"key":"X-Resp","value":"1"}}],"response_headers_to_remove":["x-internal"]}`),
		withAccessLog(t, path, "%protocol% %response_code% %response_flag% %x-mosn-path% %upstream_cluster% %response_header_x-proto% %bytes_received%"))
	conn := dial(t, e.addr)
	br := bufio.NewReader(conn)
	if _, err := io.WriteString(conn, "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"); err != nil {
		t.Fatal(err)
	}
	resp, body := readResp(t, br, "POST")
	if resp.StatusCode != 200 || body != "POST /a body" || resp.Header.Get("X-Proto") != "HTTP/2.0" {
		t.Fatalf("%d %q %q", resp.StatusCode, body, resp.Header.Get("X-Proto"))
	}
	if resp.Header.Get("X-Internal") != "" || resp.Header.Get("X-Resp") != "1" {
		t.Fatalf("response filter: X-Internal=%q X-Resp=%q", resp.Header.Get("X-Internal"), resp.Header.Get("X-Resp"))
	}
	// The connection is still open: the line is there already.
	lines := e.logLines(t, path, 1)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "Http1 200 - /a c HTTP/2.0 ") {
		t.Fatalf("after the response: %q", lines)
	}
	if !strings.HasSuffix(lines[0], " 52") { // head 48 + body 4
		t.Errorf("bytes_received in %q", lines[0])
	}
	if _, err := io.WriteString(conn, "GET /b HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != "GET /b " {
		t.Fatalf("second: %d %q", resp.StatusCode, body)
	}
	lines = e.logLines(t, path, 2)
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "Http1 200 - /b c HTTP/2.0 ") {
		t.Fatalf("after the second response: %q", lines)
	}
}

// TestH2FilterDelay: a fault delay holds the stream on its own goroutine and does not
// count against the route timeout (/slow has 200ms); the log flags it DI.
func TestH2FilterDelay(t *testing.T) {
	o := h2Origin(t, h2echo)
	path := filepath.Join(t.TempDir(), "access.log")
	e := startH2Proxy(t, o.addr(), stream.HTTP2, "",
		withFilters(t, "fault", `{"delay":{"fixed_delay":"250ms","percentage":100}}`),
		withAccessLog(t, path, "%response_code% %response_flag% %x-mosn-path%"))
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	start := time.Now()
	resp, body := h2req(t, c, "GET", "http://"+e.addr+"/slow", nil)
	if resp.StatusCode != 200 || body != "GET /slow " {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("answered after %v, before the 250ms delay", d)
	}
	if lines := e.logLines(t, path, 1); len(lines) != 1 || lines[0] != "200 DI /slow" {
		t.Fatalf("log %q", lines)
	}
}

// BenchmarkH2ProxyFilters is BenchmarkH2Proxy with a header_mutation filter (one request
// header added, one response header removed) and an access log to a file.
func BenchmarkH2ProxyFilters(b *testing.B) {
	o := h2Origin(b, func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Length"] = []string{"5"}
		io.WriteString(w, "hello")
	})
	path := filepath.Join(b.TempDir(), "access.log")
	e := startH2Proxy(b, o.addr(), stream.HTTP2, "",
		withFilters(b, "header_mutation", `{"request_headers_to_add":[{"header":{"key":"x-bench","value":"1"}}],"response_headers_to_remove":["content-type"]}`),
		withAccessLog(b, path, ""))
	c := &http.Client{Transport: h2cTransport(b)}
	req, err := http.NewRequest("GET", "http://"+e.addr+"/bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64)
	once := func() {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.ReadFull(resp.Body, buf[:5])
		resp.Body.Close()
		if resp.StatusCode != 200 || n != 5 {
			b.Fatalf("%d %d", resp.StatusCode, n)
		}
	}
	for range 100 {
		once()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		once()
	}
}

// stopResponse is a test filter that answers 502 itself when the upstream's response
// carries X-Block.
type stopResponse struct {
	filter.Passthrough
	h filter.StreamHandler
}

func (s *stopResponse) OnResponseHeaders(_ int, hs stream.Headers, _ bool) filter.Status {
	if _, ok := hs.Get("x-block"); !ok {
		return filter.Continue
	}
	s.h.SendLocalReply(502, blockHeaders, "blocked by filter")
	return filter.Stop
}

func (s *stopResponse) OnDestroy() {}

var blockHeaders = []filter.Header{{Name: "X-Blocked", Value: "1"}}

type stopResponseFactory struct{}

func (stopResponseFactory) NewStreamFilter(h filter.StreamHandler) filter.StreamFilter {
	return &stopResponse{h: h}
}

func withStopResponse(c *proxy.Config) {
	c.StreamFilters = &filter.StreamChain{Types: []string{"stop"}, Factories: []filter.StreamFilterFactory{stopResponseFactory{}}}
}

// TestH2ResponseFilterStop: a filter that stops the response head replaces the upstream's
// answer with its own (status, headers, body) on the HTTP/2 downstream path (HTTP/2 and
// HTTP/1 upstreams) and on the HTTP/1 → HTTP/2 upstream path.
func TestH2ResponseFilterStop(t *testing.T) {
	o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Want-Block") != "" {
			w.Header().Set("X-Block", "1")
		}
		h2echo(w, r)
	})
	e := startH2Proxy(t, o.addr(), stream.HTTP2, "", withStopResponse)
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	for _, p := range []string{"/h2/a", "/h1/a"} {
		resp, body := h2req(t, c, "GET", "http://"+e.addr+p, nil, "X-Want-Block", "1")
		if resp.StatusCode != 502 || body != "blocked by filter" || resp.Header.Get("X-Blocked") != "1" || resp.Header.Get("X-Proto") != "" {
			t.Fatalf("%s: %d %q %v", p, resp.StatusCode, body, resp.Header)
		}
		if resp, body := h2req(t, c, "GET", "http://"+e.addr+p, nil); resp.StatusCode != 200 || body != "GET "+p+" " {
			t.Fatalf("%s unblocked: %d %q", p, resp.StatusCode, body)
		}
	}

	h1 := startH2Proxy(t, o.addr(), stream.HTTP1, stream.HTTP2, withStopResponse)
	conn := dial(t, h1.addr)
	br := bufio.NewReader(conn)
	if _, err := io.WriteString(conn, "GET /a HTTP/1.1\r\nHost: a\r\nX-Want-Block: 1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, body := readResp(t, br, "GET")
	if resp.StatusCode != 502 || body != "blocked by filter" || resp.Header.Get("X-Blocked") != "1" {
		t.Fatalf("H1->H2: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	// The connection stays usable.
	if _, err := io.WriteString(conn, "GET /b HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != "GET /b " {
		t.Fatalf("H1->H2 second: %d %q", resp.StatusCode, body)
	}
}

// TestH1ToH2PayloadLimit: a chunked request body forwarded to an HTTP/2 upstream is cut
// when it crosses the limit, answered 413 and logged RE.
func TestH1ToH2PayloadLimit(t *testing.T) {
	o := h2Origin(t, h2echo)
	path := filepath.Join(t.TempDir(), "access.log")
	e := startH2Proxy(t, o.addr(), stream.HTTP1, stream.HTTP2, withFilters(t, "payload_limit", `{"max_entity_size":8}`),
		withAccessLog(t, path, "%protocol% %response_code% %response_flag% %x-mosn-path%"))
	resp, _ := roundTrip(t, e.addr, "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n5\r\n67890\r\n0\r\n\r\n")
	if resp.StatusCode != 413 {
		t.Fatalf("chunked: %d", resp.StatusCode)
	}
	resp, body := roundTrip(t, e.addr, "POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n12345678")
	if resp.StatusCode != 200 || body != "POST /ok 12345678" {
		t.Fatalf("at the limit: %d %q", resp.StatusCode, body)
	}
	lines := e.logLines(t, path, 2)
	sort.Strings(lines)
	if len(lines) != 2 || lines[0] != "Http1 200 - /ok" || lines[1] != "Http1 413 RE /c" {
		t.Fatalf("log %q", lines)
	}
}

package proxy_test

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/filter/stream/fault"
	"github.com/mosnlite/mosnlite/pkg/filter/stream/headermutation"
	"github.com/mosnlite/mosnlite/pkg/filter/stream/ipaccess"
	"github.com/mosnlite/mosnlite/pkg/filter/stream/payloadlimit"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/network/evloop"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

var testFactories = map[string]filter.StreamFactory{
	fault.Name:          fault.Factory,
	payloadlimit.Name:   payloadlimit.Factory,
	ipaccess.Name:       ipaccess.Factory,
	headermutation.Name: headermutation.Factory,
}

// withFilters configures stream filters given as (type, config JSON) pairs.
func withFilters(t testing.TB, pairs ...string) func(*proxy.Config) {
	t.Helper()
	var tcs []config.TypedConfig
	for i := 0; i+1 < len(pairs); i += 2 {
		tcs = append(tcs, config.TypedConfig{Type: pairs[i], Config: config.RawMessage(pairs[i+1])})
	}
	chain := &filter.StreamChain{}
	for _, tc := range tcs {
		f, err := testFactories[tc.Type](tc.Config)
		if err != nil {
			t.Fatal(err)
		}
		chain.Types = append(chain.Types, tc.Type)
		chain.Factories = append(chain.Factories, f)
	}
	return func(c *proxy.Config) { c.StreamFilters = chain }
}

func withAccessLog(t testing.TB, path, format string) func(*proxy.Config) {
	t.Helper()
	l, err := accesslog.New([]accesslog.Spec{{Path: path, Format: format}}, accesslog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return func(c *proxy.Config) { c.AccessLog = l }
}

func TestFilterAbortAnswersLocally(t *testing.T) {
	o := startOrigin(t, echo)
	e := startProxyRouter(t, o.addr(), "r", withFilters(t, "fault", `{"abort":{"status":418,"percentage":100}}`))
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	for i := 0; i < 2; i++ { // the connection stays usable after a local answer
		if _, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, body := readResp(t, br, http.MethodGet)
		if resp.StatusCode != 418 || !strings.Contains(body, "fault filter abort") {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	}
	if n := o.reqs.Load() + o.conns.Load(); n != 0 {
		t.Fatalf("upstream saw %d requests/connections", n)
	}
}

func TestFilterDelay(t *testing.T) {
	o := startOrigin(t, echo)
	e := startProxyRouter(t, o.addr(), "r", withFilters(t, "fault", `{"delay":{"fixed_delay":"250ms","percentage":100}}`))
	start := time.Now()
	// /slow has a 200ms route timeout: the delay does not count against it.
	resp, _ := roundTrip(t, e.addr, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("answered after %v, before the 250ms delay", d)
	}
}

// TestPayloadLimit: a declared length over max_entity_size is refused from the head and a
// chunked body is counted as it arrives, on both paths; nothing reaches the upstream. On
// the event loops (payload_limit is filter.SizedBodiesOnly) requests with a declared
// length stay there, and only the chunked one is handed to a goroutine.
func TestPayloadLimit(t *testing.T) {
	bothPaths(t, func(t *testing.T, p path) {
		o := startOrigin(t, echo)
		e := p.start(t, o.addr(), withFilters(t, "payload_limit", `{"max_entity_size":8}`))
		resp, _ := roundTrip(t, e.addr, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\n123456789")
		if resp.StatusCode != 413 {
			t.Fatalf("declared length: %d", resp.StatusCode)
		}
		resp, body := roundTrip(t, e.addr, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n12345678")
		if resp.StatusCode != 200 || !strings.Contains(body, "12345678") {
			t.Fatalf("under the limit: %d %q", resp.StatusCode, body)
		}
		if p.loops {
			e.noHandoffs(t)
		}
		resp, _ = roundTrip(t, e.addr, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n5\r\n67890\r\n0\r\n\r\n")
		if resp.StatusCode != 413 {
			t.Fatalf("chunked: %d", resp.StatusCode)
		}
		if n := o.reqs.Load(); n != 1 {
			t.Fatalf("upstream saw %d requests; want 1 (the one under the limit)", n)
		}
		if p.loops {
			if n := e.handoffs(t, "filter_body"); n != 1 {
				t.Fatalf("filter_body handoffs %v; want 1 (the chunked request)", n)
			}
		}
	})
}

// TestIPAccess: a denied client gets 403 from the filter, on both paths (ip_access acts
// on heads alone, so its listener stays on the event loops), and the connection serves
// the next request: the upstream never sees one.
func TestIPAccess(t *testing.T) {
	bothPaths(t, func(t *testing.T, p path) {
		o := startOrigin(t, echo)
		d := p.start(t, o.addr(), withFilters(t, "ip_access",
			`{"default_action":"allow","ips":[{"action":"deny","addrs":["127.0.0.0/8"]}]}`))
		c := dial(t, d.addr)
		br := bufio.NewReader(c)
		for range 2 {
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			if resp, body := readResp(t, br, http.MethodGet); resp.StatusCode != 403 || body != "ip access denied" {
				t.Fatalf("ip_access: %d %q", resp.StatusCode, body)
			}
		}
		if n := o.reqs.Load(); n != 0 {
			t.Fatalf("upstream saw %d requests", n)
		}
		if p.loops {
			d.noHandoffs(t)
		}
	})
}

func TestHeaderMutation(t *testing.T) { bothPaths(t, testHeaderMutation) }

func testHeaderMutation(t *testing.T, p path) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "origin")
		w.Header().Set("X-Seen-Secret", r.Header.Get("X-Secret"))
		w.Header().Set("X-Seen-Added", r.Header.Get("X-Added"))
		w.Header().Set("X-Seen-Replaced", strings.Join(r.Header.Values("X-Replaced"), ","))
	})
	e := p.start(t, o.addr(), withFilters(t, "header_mutation", `{
		"request_headers_to_add":[{"header":{"key":"X-Added","value":"yes"}},{"header":{"key":"X-Replaced","value":"new"},"append":false}],
		"request_headers_to_remove":["X-Secret"],
		"response_headers_to_add":[{"header":{"key":"X-Resp","value":"1"}}],
		"response_headers_to_remove":["Server"]}`))
	resp, _ := roundTrip(t, e.addr, "GET / HTTP/1.1\r\nHost: a\r\nX-Secret: s\r\nX-Replaced: old\r\n\r\n")
	h := resp.Header
	if h.Get("X-Seen-Secret") != "" || h.Get("X-Seen-Added") != "yes" || h.Get("X-Seen-Replaced") != "new" {
		t.Fatalf("upstream saw secret=%q added=%q replaced=%q", h.Get("X-Seen-Secret"), h.Get("X-Seen-Added"), h.Get("X-Seen-Replaced"))
	}
	if h.Get("Server") != "" || h.Get("X-Resp") != "1" {
		t.Fatalf("downstream got Server=%q X-Resp=%q", h.Get("Server"), h.Get("X-Resp"))
	}
	if p.loops {
		e.noHandoffs(t)
	}
}

// TestLoopCapableWithHeadersOnlyFilters: a chain of filters that act on heads alone keeps
// an HTTP/1 listener on the event loops, also with payload_limit (heads alone unless the
// body is chunked) and fault (its delays wait on the loop's timer).
func TestLoopCapableWithHeadersOnlyFilters(t *testing.T) {
	if !evloop.Supported {
		t.Skip("no event loops here")
	}
	for _, tc := range []struct {
		pairs []string
		want  bool
	}{
		{nil, true},
		{[]string{"ip_access", `{"default_action":"allow"}`, "header_mutation", `{"request_headers_to_remove":["x"]}`}, true},
		{[]string{"header_mutation", `{}`, "fault", `{"delay":{"fixed_delay":"1s","percentage":1}}`}, true},
		{[]string{"payload_limit", `{"max_entity_size":8}`}, true},
		{[]string{"payload_limit", `{"max_entity_size":8}`, "ip_access", `{"default_action":"allow"}`}, true},
		{[]string{"payload_limit", `{"max_entity_size":8}`, "fault", `{"delay":{"fixed_delay":"1s","percentage":1}}`}, true},
	} {
		cfg := proxy.Config{Downstream: stream.HTTP1}
		withFilters(t, tc.pairs...)(&cfg)
		px := proxy.New(cfg)
		if got := px.LoopCapable(); got != tc.want {
			t.Errorf("filters %v: LoopCapable = %v, want %v", tc.pairs, got, tc.want)
		}
		_ = px.Close()
	}
}

// headFilter is a HeadersOnly test filter: it counts its instances and their ends, and
// replaces a 500 response with its own 502 answer.
type headFilter struct {
	made, ended atomic.Int64
}

func (f *headFilter) HeadersOnly() {}

func (f *headFilter) NewStreamFilter(h filter.StreamHandler) filter.StreamFilter {
	f.made.Add(1)
	return &headInstance{f: f, h: h}
}

type headInstance struct {
	filter.Passthrough
	f *headFilter
	h filter.StreamHandler
}

func (in *headInstance) OnResponseHeaders(status int, hs stream.Headers, _ bool) filter.Status {
	if status != http.StatusInternalServerError {
		hs.Set("X-Head-Filter", "seen")
		return filter.Continue
	}
	in.h.SendLocalReply(http.StatusBadGateway, []filter.Header{{Name: "X-Head-Filter", Value: "replaced"}}, "replaced")
	return filter.Stop
}

func (in *headInstance) OnDestroy() { in.f.ended.Add(1) }

// TestFilterStopsResponseHead: a filter that stops the response head answers in the
// upstream's place, on both paths; the connection serves the next request, and every
// filter instance is ended exactly once.
func TestFilterStopsResponseHead(t *testing.T) {
	bothPaths(t, func(t *testing.T, p path) {
		o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/fail" {
				w.WriteHeader(http.StatusInternalServerError)
				_, _ = io.WriteString(w, "origin failure")
				return
			}
			_, _ = io.WriteString(w, "ok")
		})
		hf := &headFilter{}
		e := p.start(t, o.addr(), func(c *proxy.Config) {
			c.StreamFilters = &filter.StreamChain{Types: []string{"head"}, Factories: []filter.StreamFilterFactory{hf}}
		})
		c := dial(t, e.addr)
		br := bufio.NewReader(c)
		for _, tc := range []struct{ path, status, header, body string }{
			{"/ok", "200", "seen", "ok"},
			{"/fail", "502", "replaced", "replaced"},
			{"/ok", "200", "seen", "ok"},
		} {
			if _, err := io.WriteString(c, "GET "+tc.path+" HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, body := readResp(t, br, http.MethodGet)
			if strconv.Itoa(resp.StatusCode) != tc.status || resp.Header.Get("X-Head-Filter") != tc.header || body != tc.body {
				t.Fatalf("%s: %d %q %q; want %s %q %q", tc.path, resp.StatusCode, resp.Header.Get("X-Head-Filter"), body, tc.status, tc.header, tc.body)
			}
		}
		// A stream's filters end once its answer is written, which the client may read
		// first.
		testutil.Eventually(t, testTimeout, "3 filter instances made and ended", func() bool {
			return hf.made.Load() == 3 && hf.ended.Load() == 3
		})
		if p.loops {
			e.noHandoffs(t)
		}
	})
}

func TestAccessLog(t *testing.T) {
	o := startOrigin(t, echo)
	path := filepath.Join(t.TempDir(), "access.log")
	e := startProxyRouter(t, o.addr(), "r",
		withAccessLog(t, path, "%protocol% %response_code% %response_flag% %x-mosn-method% %x-mosn-path% %request_header_user-agent% %bytes_received% %upstream_cluster% %upstream_host% %downstream_remote_address%"),
		withFilters(t, "fault", `{"abort":{"status":503,"percentage":100},"headers":[{"name":"x-abort","value":"1"}]}`))
	roundTrip(t, e.addr, "GET /one HTTP/1.1\r\nHost: a\r\nUser-Agent: t\"1\r\n\r\n")
	roundTrip(t, e.addr, "GET /two HTTP/1.1\r\nHost: a\r\nX-Abort: 1\r\n\r\n")
	roundTrip(t, e.addr, "POST /down HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
	lines := logLines(t, e.px.AccessLog().Flush, path, 3)
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	slices.Sort(lines) // a set: see logLines; sorted, they come in the order below
	want := []string{
		"Http1 200 - GET /one t\\x221 ",
		"Http1 503 FI GET /two - ",
		"Http1 503 UF POST /down - ",
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
		}
	}
	if f := strings.Fields(lines[0]); len(f) != 10 || f[7] != "c" || f[8] != o.addr() || !strings.HasPrefix(f[9], "127.0.0.1:") {
		t.Errorf("line 0 fields %q", f)
	}
	if f := strings.Fields(lines[2]); f[6] != "51" { // the head; the body was never read (connect failed first)
		t.Errorf("bytes_received %q in %q", f[6], lines[2])
	}
}

// BenchmarkProxyGETFilters is BenchmarkProxyGET with a header_mutation filter (one
// request header added, one response header removed) and an access log to a file.
func BenchmarkProxyGETFilters(b *testing.B) {
	path := filepath.Join(b.TempDir(), "access.log")
	e := startProxyRouter(b, fastOrigin(b), "r",
		withFilters(b, "header_mutation", `{"request_headers_to_add":[{"header":{"key":"x-bench","value":"1"}}],"response_headers_to_remove":["content-type"]}`),
		withAccessLog(b, path, ""))
	c := dial(b, e.addr)
	_ = c.SetDeadline(time.Time{})
	req := []byte("GET /bench HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	buf := make([]byte, 4096)
	once := func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n := 0
		for !bytes.HasSuffix(buf[:n], []byte("hello")) {
			m, err := c.Read(buf[n:])
			if err != nil {
				b.Fatal(err)
			}
			n += m
		}
	}
	for i := 0; i < 100; i++ {
		once()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		once()
	}
}

// TestAccessLogBadRequest: a request whose head cannot be parsed is logged with its 400
// answer and flag BR, on both paths; its method and path are not known.
func TestAccessLogBadRequest(t *testing.T) { bothPaths(t, accessLogBadRequest) }

func accessLogBadRequest(t *testing.T, p path) {
	o := startOrigin(t, echo)
	logPath := filepath.Join(t.TempDir(), "access.log")
	e := p.start(t, o.addr(), withAccessLog(t, logPath, "%protocol% %response_code% %response_flag% %x-mosn-path% %bytes_received% %upstream_host%"))
	const bad = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n"
	if resp, _ := roundTrip(t, e.addr, bad); resp.StatusCode != 400 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	lines := logLines(t, e.px.AccessLog().Flush, logPath, 1)
	if want := "Http1 400 BR - " + strconv.Itoa(len(bad)) + " -"; len(lines) != 1 || lines[0] != want {
		t.Fatalf("log %q, want one line %q", lines, want)
	}
}

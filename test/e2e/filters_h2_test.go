package e2e

//lint:file-ignore SA1019 x/net/http2 is the HTTP/2 implementation by design (docs/l7-plan.md); its ServeConn and ClientConn API is deprecated in favour of net/http, which has no per-connection ServeConn.

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/mosnlite/mosnlite/test/framework"
)

// filtersH2Config: an Auto listener (HTTP/1 and h2c) with stream filters and an access
// log, forwarding to an HTTP/1 app; per-route filter configs as in filtersConfig.
const filtersH2Config = `{
  "servers": [{
    "listeners": [{
      "name": "filters-h2", "address": "%s",
      "filter_chains": [{"filters": [{"type": "proxy", "config": {
        "downstream_protocol": "Auto", "upstream_protocol": "Http1", "router_config_name": "r"}}]}],
      "stream_filters": [
        {"type": "fault", "config": {"abort": {"status": 500, "percentage": 0}}},
        {"type": "payload_limit", "config": {"max_entity_size": 0}},
        {"type": "header_mutation", "config": {
          "request_headers_to_add": [{"header": {"key": "X-Added", "value": "by-filter"}}],
          "request_headers_to_remove": ["X-Secret"],
          "response_headers_to_add": [{"header": {"key": "X-Resp", "value": "1"}}],
          "response_headers_to_remove": ["X-Internal"]}}
      ],
      "access_logs": [{"log_path": "%s",
        "log_format": "%%protocol%% %%response_code%% %%response_flag%% %%x-mosn-method%% %%x-mosn-path%% %%request_header_x-trace%% %%upstream_cluster%%"}]
    }],
    "routers": [{"router_config_name": "r", "virtual_hosts": [{"name": "vh", "domains": ["*"], "routers": [
      {"match": {"prefix": "/abort"}, "route": {"cluster_name": "app"},
       "per_filter_config": {"fault": {"abort": {"status": 418, "percentage": 100}}}},
      {"match": {"prefix": "/limit"}, "route": {"cluster_name": "app"},
       "per_filter_config": {"payload_limit": {"max_entity_size": 4}}},
      {"match": {"prefix": "/"}, "route": {"cluster_name": "app"}}
    ]}]}]
  }],
  "cluster_manager": {"clusters": [{"name": "app", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN",
    "hosts": [{"address": "%s"}]}]}
}`

func TestStreamFiltersHTTP2(t *testing.T) {
	var hits atomic.Int64
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("X-Internal", "secret")
		w.Header().Set("X-Seen-Added", r.Header.Get("X-Added"))
		w.Header().Set("X-Seen-Secret", r.Header.Get("X-Secret"))
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "app "+r.URL.Path)
	}))
	defer app.Close()
	addr := framework.FreePort(t)
	logPath := filepath.Join(t.TempDir(), "access.log")
	framework.StartProxy(t, fmt.Sprintf(filtersH2Config, addr, logPath, app.Listener.Addr().String()))

	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	do := func(method, path, body string, hdr ...string) (*http.Response, string) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, "http://"+addr+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("%s %s: answered over %s", method, path, resp.Proto)
		}
		return resp, string(b)
	}

	resp, body := do("GET", "/plain", "", "X-Secret", "s", "X-Trace", "t1")
	if resp.StatusCode != 200 || body != "app /plain" {
		t.Fatalf("plain: %d %q", resp.StatusCode, body)
	}
	if h := resp.Header; h.Get("X-Seen-Added") != "by-filter" || h.Get("X-Seen-Secret") != "" || h.Get("X-Internal") != "" || h.Get("X-Resp") != "1" {
		t.Fatalf("header_mutation: %v", h)
	}
	before := hits.Load()
	if resp, body := do("GET", "/abort", ""); resp.StatusCode != 418 || !strings.Contains(body, "fault filter abort") {
		t.Fatalf("abort: %d %q", resp.StatusCode, body)
	}
	if resp, _ := do("POST", "/limit", "12345"); resp.StatusCode != 413 {
		t.Fatalf("payload_limit: %d", resp.StatusCode)
	}
	if resp, _ := do("POST", "/limit", "1234"); resp.StatusCode != 200 {
		t.Fatalf("payload_limit, at the limit: %d", resp.StatusCode)
	}
	if n := hits.Load() - before; n != 1 {
		t.Fatalf("app saw %d requests after the plain one, want 1", n)
	}
	// The same listener over HTTP/1 logs to the same file.
	h1 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer h1.CloseIdleConnections()
	r1, err := h1.Get("http://" + addr + "/abort")
	if err != nil {
		t.Fatal(err)
	}
	r1.Body.Close()
	if r1.StatusCode != 418 || r1.ProtoMajor != 1 {
		t.Fatalf("HTTP/1 abort: %d %s", r1.StatusCode, r1.Proto)
	}

	// Lines of different connections may be flushed in any order.
	want := []string{
		"Http1 418 FI GET /abort - -",
		"Http2 200 - GET /plain t1 app",
		"Http2 200 - POST /limit - app",
		"Http2 413 RE POST /limit - -",
		"Http2 418 FI GET /abort - -",
	}
	var lines []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(logPath)
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) >= len(want) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(lines) != len(want) {
		t.Fatalf("access log has %d lines, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	sort.Strings(lines)
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("access log line %d = %q, want %q", i, lines[i], w)
		}
	}
}

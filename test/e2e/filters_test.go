package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/test/framework"
)

// filtersConfig: one HTTP/1 listener with listener-level stream filters (fault off,
// payload_limit off, header_mutation on) and routes whose per_filter_config turns a
// filter on for their prefix, plus an access log.
const filtersConfig = `{
  "servers": [{
    "listeners": [{
      "name": "filters", "address": "%s",
      "filter_chains": [{"filters": [{"type": "proxy", "config": {
        "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "r"}}]}],
      "stream_filters": [
        {"type": "ip_access", "config": {"default_action": "allow"}},
        {"type": "fault", "config": {"abort": {"status": 500, "percentage": 0}}},
        {"type": "payload_limit", "config": {"max_entity_size": 0}},
        {"type": "header_mutation", "config": {
          "request_headers_to_add": [{"header": {"key": "X-Added", "value": "by-filter"}}],
          "request_headers_to_remove": ["X-Secret"],
          "response_headers_to_add": [{"header": {"key": "X-Resp", "value": "1"}}],
          "response_headers_to_remove": ["X-Internal"]}}
      ],
      "access_logs": [{"log_path": "%s",
        "log_format": "%%protocol%% %%response_code%% %%response_flag%% %%x-mosn-method%% %%x-mosn-path%% %%request_header_x-trace%% %%upstream_cluster%% %%downstream_remote_address%%"}]
    }],
    "routers": [{"router_config_name": "r", "virtual_hosts": [{"name": "vh", "domains": ["*"], "routers": [
      {"match": {"prefix": "/abort"}, "route": {"cluster_name": "app"},
       "per_filter_config": {"fault": {"abort": {"status": 418, "percentage": 100}}}},
      {"match": {"prefix": "/delay"}, "route": {"cluster_name": "app"},
       "per_filter_config": {"fault": {"delay": {"fixed_delay": "300ms", "percentage": 100}}}},
      {"match": {"prefix": "/limit"}, "route": {"cluster_name": "app"},
       "per_filter_config": {"payload_limit": {"max_entity_size": 4}}},
      {"match": {"prefix": "/deny"}, "route": {"cluster_name": "app"},
       "per_filter_config": {"ip_access": {"default_action": "allow", "ips": [{"action": "deny", "addrs": ["127.0.0.1"]}]}}},
      {"match": {"prefix": "/"}, "route": {"cluster_name": "app"}}
    ]}]}]
  }],
  "cluster_manager": {"clusters": [{"name": "app", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN",
    "hosts": [{"address": "%s"}]}]}
}`

func TestStreamFiltersAndAccessLog(t *testing.T) {
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
	logPath := filepath.Join(t.TempDir(), "logs", "access.log")
	framework.StartProxy(t, fmt.Sprintf(filtersConfig, addr, logPath, app.Listener.Addr().String()))

	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
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
		return resp, string(b)
	}

	// header_mutation, both directions.
	resp, body := do("GET", "/plain", "", "X-Secret", "s", "X-Trace", "t1")
	if resp.StatusCode != 200 || body != "app /plain" {
		t.Fatalf("plain: %d %q", resp.StatusCode, body)
	}
	if h := resp.Header; h.Get("X-Seen-Added") != "by-filter" || h.Get("X-Seen-Secret") != "" || h.Get("X-Internal") != "" || h.Get("X-Resp") != "1" {
		t.Fatalf("header_mutation: %v", h)
	}

	// fault abort: the local answer, the app never sees the request.
	before := hits.Load()
	if resp, _ := do("GET", "/abort", ""); resp.StatusCode != 418 {
		t.Fatalf("abort: %d", resp.StatusCode)
	}
	// fault delay: a generous lower bound only.
	start := time.Now()
	if resp, _ := do("GET", "/delay", ""); resp.StatusCode != 200 {
		t.Fatalf("delay: %d", resp.StatusCode)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("delayed request answered after %v", d)
	}
	// payload_limit.
	if resp, _ := do("POST", "/limit", "12345"); resp.StatusCode != 413 {
		t.Fatalf("payload_limit: %d", resp.StatusCode)
	}
	if resp, _ := do("POST", "/limit", "1234"); resp.StatusCode != 200 {
		t.Fatalf("payload_limit, at the limit: %d", resp.StatusCode)
	}
	// ip_access: 127.0.0.1 is denied on /deny.
	if resp, _ := do("GET", "/deny", ""); resp.StatusCode != 403 {
		t.Fatalf("ip_access: %d", resp.StatusCode)
	}
	if n := hits.Load() - before; n != 2 { // /delay and the /limit under the limit
		t.Fatalf("app saw %d requests after the plain one, want 2", n)
	}

	want := []string{
		"Http1 200 - GET /plain t1 app 127.0.0.1:",
		"Http1 418 FI GET /abort - - 127.0.0.1:",
		"Http1 200 DI GET /delay - app 127.0.0.1:",
		"Http1 413 RE POST /limit - - 127.0.0.1:",
		"Http1 200 - POST /limit - app 127.0.0.1:",
		"Http1 403 UAEX GET /deny - - 127.0.0.1:",
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
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("access log line %d = %q, want prefix %q", i, lines[i], w)
		}
	}
}

func TestStreamFilterConfigErrors(t *testing.T) {
	app := "127.0.0.1:1"
	dir := t.TempDir()
	cases := []struct {
		name, from, to, want string
	}{
		{"unknown filter type", `{"type": "payload_limit", "config": {"max_entity_size": 0}}`, `{"type": "gzip"}`,
			`servers[0].listeners[0].stream_filters[2].type: unknown "gzip"`},
		{"unknown access log variable", `%%x-mosn-path%%`, `%%no_such_var%%`,
			`servers[0].listeners[0].access_logs[0].log_format: unknown variable %no_such_var%`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := strings.Replace(filtersConfig, tc.from, tc.to, 1)
			cfg = fmt.Sprintf(cfg, framework.FreePort(t), filepath.Join(dir, "a.log"), app)
			path := filepath.Join(t.TempDir(), "config.json")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out := framework.RunCLI(t, "start", "-c", path)
			if code == 0 || !strings.Contains(out, tc.want) || !strings.Contains(out, "known") {
				t.Fatalf("exit %d, output:\n%s\nwant %q", code, out, tc.want)
			}
		})
	}
}

// TestHeadersOnlyFiltersOnEventLoops: a listener whose stream filters act on heads alone
// (ip_access, header_mutation) is served on the event loops, and the filters work there.
func TestHeadersOnlyFiltersOnEventLoops(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Internal", "secret")
		w.Header().Set("X-Seen-Added", r.Header.Get("X-Added"))
		w.Header().Set("X-Seen-Secret", r.Header.Get("X-Secret"))
		_, _ = io.WriteString(w, "app "+r.URL.Path)
	}))
	defer app.Close()
	addr := framework.FreePort(t)
	cfg := fmt.Sprintf(`{
  "servers": [{
    "listeners": [{
      "name": "filters", "address": %q,
      "filter_chains": [{"filters": [{"type": "proxy", "config": {
        "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "r"}}]}],
      "stream_filters": [
        {"type": "ip_access", "config": {"default_action": "allow"}},
        {"type": "header_mutation", "config": {
          "request_headers_to_add": [{"header": {"key": "X-Added", "value": "by-filter"}}],
          "request_headers_to_remove": ["X-Secret"],
          "response_headers_to_add": [{"header": {"key": "X-Resp", "value": "1"}}],
          "response_headers_to_remove": ["X-Internal"]}}
      ]
    }],
    "routers": [{"router_config_name": "r", "virtual_hosts": [{"name": "vh", "domains": ["*"], "routers": [
      {"match": {"prefix": "/deny"}, "route": {"cluster_name": "app"},
       "per_filter_config": {"ip_access": {"default_action": "allow", "ips": [{"action": "deny", "addrs": ["127.0.0.1"]}]}}},
      {"match": {"prefix": "/"}, "route": {"cluster_name": "app"}}
    ]}]}]
  }],
  "cluster_manager": {"clusters": [{"name": "app", "type": "SIMPLE", "hosts": [{"address": %q}]}]}
}`, addr, app.Listener.Addr().String())
	p := framework.StartProxy(t, cfg)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	get := func(path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Header.Set("X-Secret", "s")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp := get("/plain")
	if h := resp.Header; resp.StatusCode != 200 || h.Get("X-Seen-Added") != "by-filter" || h.Get("X-Seen-Secret") != "" || h.Get("X-Internal") != "" || h.Get("X-Resp") != "1" {
		t.Fatalf("header_mutation: %d %v", resp.StatusCode, h)
	}
	if resp := get("/deny"); resp.StatusCode != 403 {
		t.Fatalf("ip_access: %d", resp.StatusCode)
	}
	if runtime.GOOS == "linux" && !strings.Contains(p.Logs(), "listener serving on event loops") {
		t.Fatal("the listener is not on the event loops")
	}
}

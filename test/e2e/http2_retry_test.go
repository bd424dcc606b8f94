package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/test/framework"
)

// TestHTTP2ToH1Retries: HTTP/2 requests routed to HTTP/1 upstreams follow the route's
// retry policy. Of two hosts one answers 503: every request still ends 200, and the
// failing host saw requests (so they were retried, not just balanced away). A host that
// refuses connections is retried past as well, and a route without a policy passes the
// 503 through.
func TestHTTP2ToH1Retries(t *testing.T) {
	var bad, good atomic.Int64
	badUp := h1Upstream(t, func(w http.ResponseWriter, _ *http.Request) {
		bad.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	goodUp := h1Upstream(t, func(w http.ResponseWriter, _ *http.Request) {
		good.Add(1)
		_, _ = io.WriteString(w, "ok")
	})
	addr := framework.FreePort(t)
	policy := map[string]any{"retry_policy": map[string]any{"retry_on": true, "num_retries": 2, "retry_timeout": "2s"}}
	framework.StartProxy(t, httpProxyConfig(addr, "Http2", "Http1", []any{
		routeTo("/retry", policy),
		routeTo("/", nil),
	}, badUp, goodUp, "127.0.0.1:1"))
	c := h2cClient(t)
	getEach(t, c, "http://"+addr+"/retry", 12, "ok")
	if bad.Load() == 0 {
		t.Fatal("the failing host got no request: nothing was retried")
	}
	// Without a policy the 503 reaches the client.
	saw503 := false
	for range 12 {
		resp, _ := mustDo(t, c, newReq(t, "GET", "http://"+addr+"/none", nil))
		saw503 = saw503 || resp.StatusCode == http.StatusServiceUnavailable
	}
	if !saw503 {
		t.Fatal("no 503 without a retry policy")
	}
}

// TestHTTP2ToH1PerTryTimeout: a try that outlives retry_timeout (the per-try timeout) is abandoned and the
// next host answers; with every try slow the client gets 504 within the route timeout.
func TestHTTP2ToH1PerTryTimeout(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow := h1Upstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	fast := h1Upstream(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "fast") })
	addr := framework.FreePort(t)
	framework.StartProxy(t, httpProxyConfig(addr, "Http2", "Http1", []any{
		routeTo("/", map[string]any{"timeout": "3s", "retry_policy": map[string]any{"retry_on": true, "num_retries": 1, "retry_timeout": "200ms"}}),
	}, slow, fast))
	getEach(t, h2cClient(t), "http://"+addr+"/x", 4, "fast")
}

// TestHTTP2ToH1Mirror: an HTTP/2 request on a mirroring route to an HTTP/1 upstream is
// copied to the mirror cluster; the client gets the main upstream's answer.
func TestHTTP2ToH1Mirror(t *testing.T) {
	main := h1Upstream(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "main") })
	copies := make(chan string, 8)
	shadow := h1Upstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case copies <- r.URL.Path:
		default:
		}
	})
	addr := framework.FreePort(t)
	var cfg map[string]any
	if err := json.Unmarshal([]byte(httpProxyConfig(addr, "Http2", "Http1", []any{
		map[string]any{"match": map[string]any{"prefix": "/"}, "route": map[string]any{"cluster_name": "up"},
			"request_mirror_policies": map[string]any{"cluster": "shadow", "percent": 100}},
	}, main)), &cfg); err != nil {
		t.Fatal(err)
	}
	cm := cfg["cluster_manager"].(map[string]any)
	cm["clusters"] = append(cm["clusters"].([]any), map[string]any{
		"name": "shadow", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "hosts": []any{map[string]any{"address": shadow}},
	})
	raw, _ := json.Marshal(cfg)
	framework.StartProxy(t, string(raw))
	resp, body := mustDo(t, h2cClient(t), newReq(t, "GET", "http://"+addr+"/copied", nil))
	if resp.StatusCode != 200 || body != "main" {
		t.Fatalf("main: %d %q", resp.StatusCode, body)
	}
	select {
	case p := <-copies:
		if p != "/copied" {
			t.Fatalf("mirrored path %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no mirrored request")
	}
}

// TestRetriesToH2Upstream: bodiless requests forwarded to h2c upstreams, from HTTP/1 and
// from HTTP/2 clients, follow the route's retry policy like the HTTP/1 ones: one host
// answers 503, every request still ends 200 and the failing host saw some of them.
func TestRetriesToH2Upstream(t *testing.T) {
	for _, down := range []string{"Http1", "Http2"} {
		t.Run(down, func(t *testing.T) {
			var bad atomic.Int64
			badUp, _ := h2cUpstream(t, func(w http.ResponseWriter, _ *http.Request) {
				bad.Add(1)
				w.WriteHeader(http.StatusServiceUnavailable)
			})
			goodUp, _ := h2cUpstream(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
			addr := framework.FreePort(t)
			framework.StartProxy(t, httpProxyConfig(addr, down, "Http2", []any{
				routeTo("/", map[string]any{"retry_policy": map[string]any{"retry_on": true, "num_retries": 2}}),
			}, badUp, goodUp))
			c := &http.Client{Timeout: 30 * time.Second}
			if down == "Http2" {
				c = h2cClient(t)
			}
			getEach(t, c, "http://"+addr+"/r", 10, "ok")
			if bad.Load() == 0 {
				t.Fatal("the failing host got no request: nothing was retried")
			}
		})
	}
}

// getEach sends n GETs to url and fails unless each is answered 200 with body want.
func getEach(t *testing.T, c *http.Client, url string, n int, want string) {
	t.Helper()
	for i := range n {
		start := time.Now()
		resp, body := mustDo(t, c, newReq(t, "GET", url, nil))
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("request %d: %d %q after %v", i, resp.StatusCode, body, time.Since(start))
		}
	}
}

// TestHTTP2ToH1Bodies: request bodies from an HTTP/2 client reach an HTTP/1 upstream on
// the direct path: with a content-length, streamed without one (chunked, trailers in the
// last chunk), and larger than the stream's flow-control window.
func TestHTTP2ToH1Bodies(t *testing.T) {
	up := h1Upstream(t, echoHandler)
	addr := framework.FreePort(t)
	framework.StartProxy(t, httpProxyConfig(addr, "Http2", "Http1", []any{routeTo("/", nil)}, up))
	c := h2cClient(t)
	url := "http://" + addr + "/up"

	resp, body := mustDo(t, c, newReq(t, "POST", url, strings.NewReader("hello")))
	if resp.StatusCode != 200 || body != "POST /up hello" {
		t.Fatalf("content-length body: %d %q", resp.StatusCode, body)
	}

	pr, pw := io.Pipe()
	req := newReq(t, "POST", url, pr)
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Req-Trailer": nil}
	go func() {
		_, _ = io.WriteString(pw, "stream")
		req.Trailer.Set("X-Req-Trailer", "t1")
		_, _ = io.WriteString(pw, "ed")
		pw.Close()
	}()
	resp, body = mustDo(t, c, req)
	if resp.StatusCode != 200 || body != "POST /up streamed" || resp.Header.Get("X-Got-Trailer") != "t1" {
		t.Fatalf("streamed body: %d %q trailer %q", resp.StatusCode, body, resp.Header.Get("X-Got-Trailer"))
	}

	big := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB: four stream windows
	resp, body = mustDo(t, c, newReq(t, "PUT", url, strings.NewReader(big)))
	if resp.StatusCode != 200 || body != "PUT /up "+big {
		t.Fatalf("1 MiB body: %d, %d bytes back", resp.StatusCode, len(body))
	}
}

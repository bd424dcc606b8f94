package e2e

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/test/framework"
)

// featureProxy starts mosnlite with one HTTP/1 listener, router "r" with vhost-level and
// router-level response headers, the given routes, and clusters name → hosts.
func featureProxy(t *testing.T, routes []any, clusters map[string][]string, clusterExtra map[string]any) string {
	t.Helper()
	listen := framework.FreePort(t)
	var cs []any
	for name, hosts := range clusters {
		hs := []any{}
		for _, h := range hosts {
			hs = append(hs, map[string]any{"address": h})
		}
		c := map[string]any{"name": name, "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "hosts": hs, "connect_timeout": "2s"}
		for k, v := range clusterExtra {
			c[k] = v
		}
		cs = append(cs, c)
	}
	hdr := func(k, v string) any { return map[string]any{"header": map[string]any{"key": k, "value": v}} }
	cfg := map[string]any{
		"servers": []any{map[string]any{
			"default_log_path": "stderr",
			"routers": []any{map[string]any{
				"router_config_name":      "r",
				"response_headers_to_add": []any{hdr("X-Router", "r")},
				"virtual_hosts": []any{map[string]any{
					"name": "v", "domains": []any{"*"}, "routers": routes,
					"response_headers_to_add": []any{hdr("X-Vhost", "v")},
				}},
			}},
			"listeners": []any{map[string]any{
				"name": "l7", "address": listen, "bind_port": true,
				"filter_chains": []any{map[string]any{"filters": []any{map[string]any{
					"type": "proxy", "config": map[string]any{"downstream_protocol": "Http1", "router_config_name": "r"},
				}}}},
			}},
		}},
		"cluster_manager": map[string]any{"clusters": cs},
		"drain":           map[string]any{"timeout": "10s"},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	framework.StartProxy(t, string(b))
	return listen
}

func hdrOpt(k, v string) any { return map[string]any{"header": map[string]any{"key": k, "value": v}} }

// roundTrip sends one raw request on a new connection and reads one response.
func roundTrip(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	c := framework.Dial(t, addr)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	method := strings.SplitN(req, " ", 2)[0]
	return readResponse(t, bufio.NewReader(c), method)
}

// TestHTTP1DirectResponseAndRedirectHeaders: direct_response and redirect answers carry
// the route's, the virtual host's and the router's response_headers_to_add; redirects
// build Location from the request.
func TestHTTP1DirectResponseAndRedirectHeaders(t *testing.T) {
	up := startRecorder(t)
	routes := []any{
		map[string]any{"match": map[string]any{"prefix": "/direct"},
			"direct_response":         map[string]any{"status": 202, "body": "direct"},
			"response_headers_to_add": []any{hdrOpt("X-Route", "d")}},
		map[string]any{"match": map[string]any{"prefix": "/moved"},
			"redirect":                map[string]any{"response_code": 308, "host_redirect": "example.com", "path_redirect": "/new"},
			"response_headers_to_add": []any{hdrOpt("X-Route", "m")}},
		map[string]any{"match": map[string]any{"prefix": "/tls"},
			"redirect": map[string]any{"scheme_redirect": "https"}},
		routeTo("/", nil),
	}
	addr := featureProxy(t, routes, map[string][]string{"up": {up.srv.Addr()}}, nil)

	resp, body := roundTrip(t, addr, "GET /direct HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 202 || body != "direct" {
		t.Fatalf("direct: %d %q", resp.StatusCode, body)
	}
	for k, v := range map[string]string{"X-Route": "d", "X-Vhost": "v", "X-Router": "r"} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("direct response %s = %q, want %q (headers %v)", k, got, v, resp.Header)
		}
	}

	resp, _ = roundTrip(t, addr, "GET /moved/x?q=1 HTTP/1.1\r\nHost: a.test:8080\r\n\r\n")
	if resp.StatusCode != 308 || resp.Header.Get("Location") != "http://example.com/new?q=1" {
		t.Fatalf("redirect: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp.Header.Get("X-Route") != "m" || resp.Header.Get("X-Vhost") != "v" {
		t.Errorf("redirect headers: %v", resp.Header)
	}
	resp, _ = roundTrip(t, addr, "HEAD /tls/p HTTP/1.1\r\nHost: a.test:80\r\n\r\n")
	if resp.StatusCode != 301 || resp.Header.Get("Location") != "https://a.test/tls/p" {
		t.Fatalf("scheme redirect: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if up.count.Load() != 0 {
		t.Fatal("local answers reached the upstream")
	}
}

// failing is an upstream whose first fails requests are answered by how (close the
// connection without a response, or hang), then 200 with the path.
func failing(t *testing.T, fails int64, how string) (*framework.TCPServer, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	left := &atomic.Int64{}
	left.Store(fails)
	srv := framework.StartTCP(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			n.Add(1)
			if left.Add(-1) >= 0 {
				switch how {
				case "reset":
					return
				case "hang":
					_, _ = io.Copy(io.Discard, br) // until the proxy closes
					return
				}
			}
			msg := req.URL.Path
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+itoa(len(msg))+"\r\n\r\n"+msg); err != nil {
				return
			}
		}
	})
	return srv, &n
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestHTTP1Retries: retry_policy retries 5xx exactly num_retries times, retries resets
// and per-try timeouts, moves to another host, and never replays a request with a body.
func TestHTTP1Retries(t *testing.T) {
	flaky := startRecorder(t)
	resets, resetN := failing(t, 1, "reset")
	hangs, hangN := failing(t, 1, "hang")
	bad := startRecorder(t)
	bad.fail.Store(1 << 30)
	good := startRecorder(t)
	retry := func(n int, extra map[string]any) map[string]any {
		p := map[string]any{"retry_on": true, "num_retries": n}
		for k, v := range extra {
			p[k] = v
		}
		return p
	}
	routes := []any{
		map[string]any{"match": map[string]any{"prefix": "/two"}, "route": map[string]any{"cluster_name": "flaky", "retry_policy": retry(2, nil)}},
		map[string]any{"match": map[string]any{"prefix": "/one"}, "route": map[string]any{"cluster_name": "flaky", "retry_policy": retry(1, nil)}},
		map[string]any{"match": map[string]any{"prefix": "/codes"}, "route": map[string]any{"cluster_name": "flaky",
			"retry_policy": retry(3, map[string]any{"retriable_status_codes": []any{502}})}},
		map[string]any{"match": map[string]any{"prefix": "/reset"}, "route": map[string]any{"cluster_name": "resets", "retry_policy": retry(1, nil)}},
		map[string]any{"match": map[string]any{"prefix": "/hang"}, "route": map[string]any{"cluster_name": "hangs", "timeout": "10s",
			"retry_policy": retry(1, map[string]any{"retry_timeout": "300ms"})}},
		map[string]any{"match": map[string]any{"prefix": "/pair"}, "route": map[string]any{"cluster_name": "pair", "retry_policy": retry(1, nil)}},
	}
	addr := featureProxy(t, routes, map[string][]string{
		"flaky":  {flaky.srv.Addr()},
		"resets": {resets.Addr()},
		"hangs":  {hangs.Addr()},
		"pair":   {bad.srv.Addr(), good.srv.Addr()},
	}, nil)

	// Two failures, two retries allowed: the third try answers.
	flaky.fail.Store(2)
	resp, body := roundTrip(t, addr, "GET /two HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 200 || body != "/two" || flaky.count.Load() != 3 {
		t.Fatalf("num_retries 2: %d %q after %d tries", resp.StatusCode, body, flaky.count.Load())
	}
	// Two failures, one retry allowed: exactly two tries, the last 503 is forwarded.
	flaky.count.Store(0)
	flaky.fail.Store(2)
	resp, _ = roundTrip(t, addr, "GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 503 || flaky.count.Load() != 2 {
		t.Fatalf("num_retries 1: %d after %d tries", resp.StatusCode, flaky.count.Load())
	}
	flaky.fail.Store(0)
	// retriable_status_codes without 503: no retry.
	flaky.count.Store(0)
	flaky.fail.Store(1)
	resp, _ = roundTrip(t, addr, "GET /codes HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 503 || flaky.count.Load() != 1 {
		t.Fatalf("unlisted code: %d after %d tries", resp.StatusCode, flaky.count.Load())
	}
	flaky.fail.Store(0)
	// A small body that arrived with the head is kept and replayed.
	flaky.count.Store(0)
	flaky.fail.Store(1)
	resp, body = roundTrip(t, addr, "POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
	if resp.StatusCode != 200 || body != "/two" || flaky.count.Load() != 2 {
		t.Fatalf("small POST: %d after %d tries", resp.StatusCode, flaky.count.Load())
	}
	if r := flaky.last(); r.Method != "POST" || mustRead(r.Body) != "abc" {
		t.Fatalf("replayed POST: %s %q", r.Method, mustRead(r.Body))
	}
	flaky.fail.Store(0)
	// A body sent after 100 Continue: a small one is held whole before it is forwarded (on
	// the event loop), so it is replayed; a large one streams through and is not.
	for _, tc := range []struct {
		size, status int
		tries        int64
	}{{3, 200, 2}, {60000, 503, 1}} {
		flaky.count.Store(0)
		flaky.fail.Store(1)
		func() {
			c := framework.Dial(t, addr)
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(15 * time.Second))
			br := bufio.NewReader(c)
			if _, err := fmt.Fprintf(c, "POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", tc.size); err != nil {
				t.Fatal(err)
			}
			line, err := br.ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
				t.Fatalf("want 100 Continue, got %q %v", line, err)
			}
			if _, err := br.ReadString('\n'); err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(c, strings.Repeat("b", tc.size)); err != nil {
				t.Fatal(err)
			}
			resp, _ := readResponse(t, br, "POST")
			if resp.StatusCode != tc.status || flaky.count.Load() != tc.tries {
				t.Fatalf("%d-byte POST after 100 Continue: %d after %d tries, want %d after %d", tc.size, resp.StatusCode, flaky.count.Load(), tc.status, tc.tries)
			}
		}()
	}
	flaky.fail.Store(0)
	// Connection closed without a response: retried.
	resp, body = roundTrip(t, addr, "GET /reset HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 200 || body != "/reset" || resetN.Load() != 2 {
		t.Fatalf("reset: %d %q after %d tries", resp.StatusCode, body, resetN.Load())
	}
	// First try hangs past retry_timeout: retried within the route timeout.
	resp, body = roundTrip(t, addr, "GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 200 || body != "/hang" || hangN.Load() != 2 {
		t.Fatalf("per-try timeout: %d %q after %d tries", resp.StatusCode, body, hangN.Load())
	}
	// One host always fails: with one retry every request lands on the other.
	for i := 0; i < 6; i++ {
		resp, body = roundTrip(t, addr, "GET /pair HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode != 200 || body != "/pair" {
			t.Fatalf("pair %d: %d %q", i, resp.StatusCode, body)
		}
	}
}

func mustRead(r io.Reader) string {
	b, _ := io.ReadAll(r)
	return string(b)
}

// wsAccept is RFC 6455's Sec-WebSocket-Accept for key.
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// TestHTTP1WebSocketUpgrade: a WebSocket handshake through the proxy; after the 101 the
// bytes are relayed both ways until the client closes, which closes the upstream side.
// An upgrade the upstream refuses is answered normally and the connection is closed.
func TestHTTP1WebSocketUpgrade(t *testing.T) {
	upClosed := make(chan struct{}, 4)
	ws := framework.StartTCP(t, func(c *net.TCPConn) {
		defer func() { upClosed <- struct{}{} }()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.URL.Path == "/refuse" {
			_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
			_, _ = io.Copy(io.Discard, br)
			return
		}
		if !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") || !strings.Contains(strings.ToLower(req.Header.Get("Connection")), "upgrade") {
			_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
			wsAccept(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n")
		_, _ = io.Copy(c, br) // echo
	})
	addr := featureProxy(t, []any{routeTo("/", nil)}, map[string][]string{"up": {ws.Addr()}}, nil)

	c := framework.Dial(t, addr)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	key := "dGhlIHNhbXBsZSBub25jZQ=="
	_, err := io.WriteString(c, "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: "+key+"\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) ||
		!strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || !strings.Contains(strings.ToLower(resp.Header.Get("Connection")), "upgrade") {
		t.Fatalf("handshake: %d %v", resp.StatusCode, resp.Header)
	}
	// A masked text frame "hello" (client to server), then more, echoed back as bytes.
	frame := []byte{0x81, 0x85, 1, 2, 3, 4, 'h' ^ 1, 'e' ^ 2, 'l' ^ 3, 'l' ^ 4, 'o' ^ 1}
	for i := 0; i < 3; i++ {
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(frame))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != string(frame) {
			t.Fatalf("echo %d: %x %v", i, got, err)
		}
	}
	c.Close()
	select {
	case <-upClosed:
	case <-time.After(10 * time.Second):
		t.Fatal("upstream side of the tunnel not closed after the client left")
	}

	// Refused upgrade: the 403 is forwarded, bytes sent after the head are not taken as a
	// pipelined request, and the connection is closed.
	out := rawExchange(t, addr, "GET /refuse HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"+
		"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", 10*time.Second)
	if statusOf(out) != 403 || strings.Count(out, "HTTP/1.1") != 1 {
		t.Fatalf("refused upgrade: %q", out)
	}
}

// TestHTTP1Mirror: request_mirror_policies copies requests, with their bodies, to the
// shadow cluster; the client sees only the main cluster's answers.
func TestHTTP1Mirror(t *testing.T) {
	main := startRecorder(t)
	shadow := startRecorder(t)
	shadow.fail.Store(1 << 30) // the shadow's answers are discarded
	routes := []any{map[string]any{"match": map[string]any{"prefix": "/"},
		"route":                   map[string]any{"cluster_name": "main"},
		"request_mirror_policies": map[string]any{"cluster": "shadow", "percent": 100}}}
	addr := featureProxy(t, routes, map[string][]string{"main": {main.srv.Addr()}, "shadow": {shadow.srv.Addr()}}, nil)
	c := framework.Dial(t, addr)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(c)
	for i := 0; i < 5; i++ {
		if _, err := io.WriteString(c, "GET /m HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != "/m" {
			t.Fatalf("main %d: %d %q", i, resp.StatusCode, body)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for shadow.count.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := shadow.count.Load(); n != 5 {
		t.Fatalf("shadow got %d requests, want 5", n)
	}
	if r := shadow.last(); r.URL.Path != "/m" || r.Header.Get("X-Request-Id") == "" {
		t.Fatalf("mirrored request: %s %v", r.URL.Path, r.Header)
	}
	// A request with a body is mirrored with it.
	if _, err := io.WriteString(c, "POST /m HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"); err != nil {
		t.Fatal(err)
	}
	readResponse(t, br, "POST")
	deadline = time.Now().Add(10 * time.Second)
	for shadow.count.Load() < 6 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r := shadow.last()
	if shadow.count.Load() != 6 || r.Method != "POST" {
		t.Fatalf("shadow after the POST: %d requests, last %v", shadow.count.Load(), r)
	}
	if b, _ := io.ReadAll(r.Body); string(b) != "hi" {
		t.Fatalf("mirrored POST body %q, want %q", b, "hi")
	}
}

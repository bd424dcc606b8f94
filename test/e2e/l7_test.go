package e2e

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/test/framework"
)

// TestMOSNConfigHTTP1 runs MOSN's own configs/mosn_config.json with its ports rewritten:
// a direct-response app listener behind two proxy hops. net/http gets the direct
// response through the first hop (Http1 → Auto → Http1).
func TestMOSNConfigHTTP1(t *testing.T) {
	raw, err := os.ReadFile(framework.RepoPath("pkg", "config", "testdata", "mosn", "mosn_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(raw)
	ports := map[string]string{}
	for _, p := range []string{"2045", "2046", "2047"} {
		ports[p] = framework.FreePort(t)
		cfg = strings.ReplaceAll(cfg, "127.0.0.1:"+p, ports[p])
	}
	_, adminPort, _ := net.SplitHostPort(framework.FreePort(t))
	cfg = strings.ReplaceAll(cfg, "34901", adminPort)
	framework.StartProxy(t, cfg)

	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	const want = "Welcome to MOSN!\nThe Cloud-Native Network Proxy Platform.\n"
	for _, hop := range []string{"2045", "2046", "2047"} {
		for i := 0; i < 3; i++ { // keep-alive on the client and the upstream hops
			resp, err := c.Get("http://" + ports[hop] + "/some/path")
			if err != nil {
				t.Fatalf("hop %s: %v", hop, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || string(body) != want {
				t.Fatalf("hop %s: %d %q %v", hop, resp.StatusCode, body, err)
			}
		}
	}
	// A POST through both hops: the direct response answers, and the connection with an
	// unread body is closed rather than reused.
	resp, err := c.Post("http://"+ports["2045"]+"/", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("POST: %d %q", resp.StatusCode, body)
	}
}

// mosnConfig reads one of MOSN's example configs and rewrites its addresses.
func mosnConfig(t *testing.T, name string, repl map[string]string) string {
	t.Helper()
	raw, err := os.ReadFile(framework.RepoPath("pkg", "config", "testdata", "mosn", name))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(raw)
	for from, to := range repl {
		cfg = strings.ReplaceAll(cfg, from, to)
	}
	return cfg
}

func freePortNumber(t *testing.T) string {
	_, p, _ := net.SplitHostPort(framework.FreePort(t))
	return p
}

// TestMOSNHTTP1ClientServerConfigs runs MOSN's http1_client_config.json and
// http1_server_config.json as two processes in front of an HTTP server (MOSN's example
// layout: client 2045 → server 2046 → app 8080), and auto_server_config.json alone.
func TestMOSNHTTP1ClientServerConfigs(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Hops", r.Header.Get("X-Forwarded-For"))
		_, _ = io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(b))
	}))
	defer app.Close()
	appAddr := strings.TrimPrefix(app.URL, "http://")
	server, client := framework.FreePort(t), framework.FreePort(t)
	framework.StartProxy(t, mosnConfig(t, "http1_server_config.json", map[string]string{
		"127.0.0.1:8080": appAddr, "127.0.0.1:2046": server, "34902": freePortNumber(t),
	}))
	framework.StartProxy(t, mosnConfig(t, "http1_client_config.json", map[string]string{
		"127.0.0.1:2046": server, "127.0.0.1:2045": client, "34901": freePortNumber(t),
	}))
	auto := framework.FreePort(t)
	framework.StartProxy(t, mosnConfig(t, "auto_server_config.json", map[string]string{
		"127.0.0.1:8080": appAddr, "127.0.0.1:2046": auto, "34902": freePortNumber(t),
	}))
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	for _, addr := range []string{client, server, auto} {
		resp, err := c.Post("http://"+addr+"/echo", "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "POST /echo payload" {
			t.Fatalf("%s: %d %q", addr, resp.StatusCode, body)
		}
	}
}

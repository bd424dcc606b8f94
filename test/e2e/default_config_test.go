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

// TestDefaultConfig runs configs/mosnlite.json, the config `make run` starts, with its
// ports rewritten: a request to the egress listener crosses the ingress hop to the
// direct-response app listener, and /demo/ reaches an HTTP upstream with the prefix
// rewritten.
func TestDefaultConfig(t *testing.T) {
	raw, err := os.ReadFile(framework.RepoPath("configs", "mosnlite.json"))
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "upstream saw "+r.URL.Path)
	}))
	defer up.Close()
	cfg := string(raw)
	ports := map[string]string{}
	for _, p := range []string{"2045", "2046", "2047"} {
		ports[p] = framework.FreePort(t)
		cfg = strings.ReplaceAll(cfg, "127.0.0.1:"+p, ports[p])
	}
	cfg = strings.ReplaceAll(cfg, "127.0.0.1:8080", up.Listener.Addr().String())
	_, adminPort, _ := net.SplitHostPort(framework.FreePort(t))
	cfg = strings.ReplaceAll(cfg, "34901", adminPort)
	if strings.Contains(cfg, "127.0.0.1:204") || strings.Contains(cfg, ":8080") {
		t.Fatal("a fixed port was not rewritten")
	}
	framework.StartProxy(t, cfg)

	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := c.Get("http://" + ports["2045"] + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return resp.StatusCode, string(b)
	}
	for i := 0; i < 3; i++ {
		if code, body := get("/"); code != 200 || !strings.HasPrefix(body, "Hello from mosnlite") {
			t.Fatalf("GET /: %d %q", code, body)
		}
	}
	if code, body := get("/demo/hello"); code != 200 || body != "upstream saw /hello" {
		t.Fatalf("GET /demo/hello: %d %q", code, body)
	}
}

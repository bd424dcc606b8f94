package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/extension/builtin"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cfgFor returns a parsed, defaulted, validated config with one tcp_proxy listener on
// 127.0.0.1:0 to upstream, an admin endpoint on 127.0.0.1:0, and the given drain block.
func cfgFor(t *testing.T, upstream, drain string) *config.Config {
	t.Helper()
	js := fmt.Sprintf(`{
	  "servers":[{"listeners":[{"name":"l4","address":"127.0.0.1:0",
	    "filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"up"}}]}]}]}],
	  "cluster_manager":{"clusters":[{"name":"up","hosts":[{"address":%q}]}]},
	  "admin":{"address":{"socket_address":{"address":"127.0.0.1","port_value":0}}},
	  "drain":%s}`, upstream, drain)
	return parseConfig(t, js)
}

// parseConfig parses js, applies the defaults and validates it.
func parseConfig(t *testing.T, js string) *config.Config {
	t.Helper()
	cfg, _, err := config.Parse([]byte(js), config.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.ApplyDefaults()
	if _, err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func echoUpstream(t *testing.T) string {
	return testutil.EchoServer(t, "").Addr()
}

// newServer builds cfg with the built-in extensions and a test logger; opts adjust the
// options.
func newServer(t *testing.T, cfg *config.Config, opts ...func(*Options)) *Server {
	t.Helper()
	ext, err := builtin.NewSet()
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Extensions: ext, Log: zaptest.NewLogger(t), Level: zap.NewAtomicLevel()}
	for _, f := range opts {
		f(&o)
	}
	s, err := New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeAdminAndDrain(t *testing.T) {
	cfg := cfgFor(t, echoUpstream(t), `{"delay":"300ms","timeout":"5s"}`)
	s := newServer(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	admin := "http://" + s.AdminAddr().String()
	testutil.Eventually(t, 10*time.Second, "ready", s.Ready)

	if code, body := get(t, admin+"/ready"); code != 200 || body != "ready\n" {
		t.Fatalf("/ready = %d %q", code, body)
	}
	// One proxied exchange, then the byte counters show it.
	c, err := net.Dial("tcp", s.Addrs()["l4"].String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo = %q, %v", buf, err)
	}
	if _, body := get(t, admin+"/metrics"); !strings.Contains(body, `mosnlite_tcp_proxy_bytes_total{cluster="up",direction="rx",listener="l4"} 4`) {
		t.Fatalf("/metrics lacks the rx byte count:\n%s", testutil.Lines(body, "tcp_proxy"))
	}
	// Runtime log level.
	req, _ := http.NewRequest(http.MethodPut, admin+"/logging", strings.NewReader(`{"level":"debug"}`))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("PUT /logging: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if _, body := get(t, admin+"/logging"); !strings.Contains(body, "debug") {
		t.Fatalf("level not changed: %s", body)
	}
	// Mutations are not GETs.
	if code, _ := get(t, admin+"/api/v1/nope"); code != 404 {
		t.Fatalf("unknown admin path = %d", code)
	}
	if code, _ := get(t, admin+"/api/v1/drain"); code != http.StatusMethodNotAllowed || !s.Ready() {
		t.Fatalf("GET /api/v1/drain = %d, ready %v; want 405 and no drain", code, s.Ready())
	}

	cancel() // SIGTERM: readiness off at once, still accepting during the delay
	testutil.Eventually(t, 10*time.Second, "not ready", func() bool { return !s.Ready() })
	if code, _ := get(t, admin+"/ready"); code != http.StatusServiceUnavailable {
		t.Fatalf("/ready while draining = %d; want 503", code)
	}
	// The open session still works while draining.
	c.Write([]byte("pong"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("echo during drain = %q, %v", buf, err)
	}
	c.Close()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the drain")
	}
}

func TestDrainTimeoutClosesSessions(t *testing.T) {
	cfg := cfgFor(t, echoUpstream(t), `{"timeout":"200ms"}`)
	s := newServer(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	testutil.Eventually(t, 10*time.Second, "ready", s.Ready)
	c, err := net.Dial("tcp", s.Addrs()["l4"].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	io.ReadFull(c, make([]byte, 1))
	cancel()
	select {
	case <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("an idle session held Run past the drain timeout")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("session still open after the drain timeout")
	}
}

func TestNewErrors(t *testing.T) {
	ext, _ := builtin.NewSet()
	for _, tc := range []struct {
		name, json, want string
	}{
		{"proxy router missing", `{"servers":[{"routers":[{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[{"match":{"prefix":"/"},"direct_response":{"status":200}}]}]}],
		  "listeners":[{"name":"h","address":"127.0.0.1:0","filter_chains":[{"filters":[{"type":"proxy","config":{"downstream_protocol":"Http1","router_config_name":"other"}}]}]}]}]}`,
			`servers[0].listeners[0] (h): filter_chains[0].filters[0].config: proxy: router "other" not found in routers`},
		{"cluster-only config builds", `{"cluster_manager":{"clusters":[{"name":"c","lb_type":"LB_ROUNDROBIN","hosts":[{"address":"127.0.0.1:1"}]}]}}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := config.Parse([]byte(tc.json), config.ParseOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cfg.ApplyDefaults()
			s, err := New(cfg, Options{Extensions: ext, Log: zaptest.NewLogger(t)})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New = %v", err)
				}
				s.closeAll()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New error = %v; want it to contain %q", err, tc.want)
			}
		})
	}
}

// A listener that fails to bind leaves no socket open from the listeners before it.
func TestNewReleasesSocketsOnError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free, _ := net.Listen("tcp", "127.0.0.1:0")
	freeAddr := free.Addr().String()
	free.Close()
	js := fmt.Sprintf(`{"servers":[{"listeners":[
	  {"name":"a","address":%q,"filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c"}}]}]},
	  {"name":"b","address":%q,"filter_chains":[{"filters":[{"type":"tcp_proxy","config":{"cluster":"c"}}]}]}]}],
	  "cluster_manager":{"clusters":[{"name":"c","hosts":[{"address":"127.0.0.1:1"}]}]}}`, freeAddr, busy.Addr().String())
	cfg, _, err := config.Parse([]byte(js), config.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.ApplyDefaults()
	ext, _ := builtin.NewSet()
	if _, err := New(cfg, Options{Extensions: ext}); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("New = %v; want address already in use", err)
	}
	ln, err := net.Listen("tcp", freeAddr)
	if err != nil {
		t.Fatalf("listener a's socket was left open: %v", err)
	}
	ln.Close()
}

// TestAdminMethodsAndCase: the admin endpoint's mutations take only their own method (a GET
// of a mutating path is 405 and changes nothing), and paths match case-sensitively (a
// /API/... path is not the /api/... one) (ROBUSTNESS 46).
func TestAdminMethodsAndCase(t *testing.T) {
	s := newServer(t, cfgFor(t, echoUpstream(t), `{"timeout":"1s"}`))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	defer func() { cancel(); <-errc }()
	testutil.Eventually(t, 10*time.Second, "ready", s.Ready)
	admin := "http://" + s.AdminAddr().String()
	c := http.Client{Timeout: 5 * time.Second}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/api/v1/reload", http.StatusMethodNotAllowed},
		{"POST", "/logging", http.StatusMethodNotAllowed},
		{"DELETE", "/logging", http.StatusMethodNotAllowed},
		{"POST", "/ready", http.StatusMethodNotAllowed},
		{"GET", "/API/v1/get_loglevel", http.StatusNotFound},
		{"POST", "/API/v1/reload", http.StatusNotFound},
		{"GET", "/Metrics", http.StatusNotFound},
		{"GET", "/api/v1/get_loglevel", http.StatusOK},
	} {
		req, _ := http.NewRequest(tc.method, admin+tc.path, strings.NewReader(`{"level":"debug"}`))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s = %d; want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
	if _, body := get(t, admin+"/logging"); strings.Contains(body, "debug") {
		t.Fatalf("a refused request changed the log level: %s", body)
	}
}

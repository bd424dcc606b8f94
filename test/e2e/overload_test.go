package e2e

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/test/framework"
)

// TestMemoryLimitPausesAccepting: with GOMEMLIMIT below what the process needs, the
// memory overload check pauses the listener: a client's connection completes in the
// kernel backlog but is not served, the admin endpoint (not a proxied listener) still
// answers and reports the overload, and SIGTERM still stops the process.
func TestMemoryLimitPausesAccepting(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "1MiB")
	up := framework.StartTCP(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	addr := framework.FreePort(t)
	admin := framework.FreePort(t)
	_, ap, _ := net.SplitHostPort(admin)
	adminPort, _ := strconv.Atoi(ap)
	var cfg map[string]any
	if err := json.Unmarshal([]byte(tcpProxyConfig(addr, "LB_ROUNDROBIN", []host{{Address: up.Addr()}}, nil)), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["admin"] = map[string]any{"address": map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": adminPort}}}
	b, _ := json.Marshal(cfg)
	p := framework.StartProxy(t, string(b))
	if !p.WaitLog("listeners stop accepting new connections", 10*time.Second) {
		t.Fatal("no overload logged with a 1 MiB memory limit")
	}
	c := framework.Dial(t, addr)
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := c.Read(make([]byte, 4)); n > 0 || err == nil {
		t.Fatalf("a connection was served while memory is over its limit: %d bytes, %v", n, err)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("admin while overloaded: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "mosnlite_memory_overloaded 1") ||
		!strings.Contains(string(body), `mosnlite_downstream_accept_overload_pauses_total{listener="l4"}`) {
		t.Fatalf("metrics do not report the overload:\n%s", testutil.Lines(string(body), "overload"))
	}
	p.Stop(10 * time.Second)
	if code := p.Wait(5 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM while overloaded", code)
	}
}

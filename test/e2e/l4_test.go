package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mosnlite/mosnlite/test/framework"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		framework.RemoveBinary()
		os.Exit(code)
	}))
}

type host struct {
	Address string `json:"address"`
	Weight  uint32 `json:"weight,omitempty"`
}

// tcpProxyConfig is a one-listener tcp_proxy config in MOSN's format.
func tcpProxyConfig(listen, lbType string, hosts []host, extra map[string]any) string {
	cl := map[string]any{
		"name": "up", "type": "SIMPLE", "lb_type": lbType, "hosts": hosts,
		"connect_timeout": "2s",
	}
	for k, v := range extra {
		cl[k] = v
	}
	cfg := map[string]any{
		"servers": []any{map[string]any{
			"default_log_path": "stderr",
			"listeners": []any{map[string]any{
				"name": "l4", "address": listen, "bind_port": true,
				"filter_chains": []any{map[string]any{"filters": []any{map[string]any{
					"type": "tcp_proxy", "config": map[string]any{"cluster": "up"},
				}}}},
			}},
		}},
		"cluster_manager": map[string]any{"clusters": []any{cl}},
		"drain":           map[string]any{"timeout": "5s"},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TestTCPProxyBothWaysAndHalfClose sends 4 MiB through, half-closes, and expects the echo
// plus the upstream's trailer written after it saw the half-close; on event loops (the
// default on Linux) and with a goroutine per connection (MOSNLITE_EVENT_LOOPS=off).
func TestTCPProxyBothWaysAndHalfClose(t *testing.T) {
	for _, mode := range []string{"on", "off"} {
		t.Run("event-loops-"+mode, func(t *testing.T) {
			t.Setenv("MOSNLITE_EVENT_LOOPS", mode)
			up := framework.EchoServer(t, "BYE")
			addr := framework.FreePort(t)
			p := framework.StartProxy(t, tcpProxyConfig(addr, "LB_ROUNDROBIN", []host{{Address: up.Addr()}}, nil))
			echoHalfClose(t, addr)
			onLoops := strings.Contains(p.Logs(), "listener serving on event loops")
			if want := mode == "on" && runtime.GOOS == "linux"; onLoops != want {
				t.Fatalf("listener on event loops: %v, want %v", onLoops, want)
			}
		})
	}
}

func echoHalfClose(t *testing.T, addr string) {
	t.Helper()
	payload := make([]byte, 4<<20)
	rand.Read(payload)
	c := framework.Dial(t, addr)
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.CloseWrite() // half-close: the upstream must see EOF and still answer
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	want := append(append([]byte{}, payload...), "BYE"...)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d (echo + trailer); equal prefix: %v", len(got), len(want),
			len(got) >= len(payload) && bytes.Equal(got[:len(payload)], payload))
	}
}

// TestTCPProxyUpstreamHalfClose: the upstream finishes writing first; the client still
// sends after reading EOF, and the upstream receives it.
func TestTCPProxyUpstreamHalfClose(t *testing.T) {
	gotAfter := make(chan string, 1)
	up := framework.StartTCP(t, func(c *net.TCPConn) {
		c.Write([]byte("hello"))
		c.CloseWrite()
		b, _ := io.ReadAll(c)
		gotAfter <- string(b)
	})
	addr := framework.FreePort(t)
	framework.StartProxy(t, tcpProxyConfig(addr, "LB_ROUNDROBIN", []host{{Address: up.Addr()}}, nil))

	c := framework.Dial(t, addr)
	defer c.Close()
	b, err := io.ReadAll(c) // until the upstream's half-close arrives as EOF
	if err != nil || string(b) != "hello" {
		t.Fatalf("read = %q, %v; want hello, EOF", b, err)
	}
	if _, err := c.Write([]byte("after-eof")); err != nil {
		t.Fatalf("write after upstream half-close: %v", err)
	}
	c.CloseWrite()
	select {
	case s := <-gotAfter:
		if s != "after-eof" {
			t.Fatalf("upstream got %q after its half-close; want after-eof", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream never received the client's bytes sent after its half-close")
	}
}

// TestTCPProxySendTimeout: with the listener's send_timeout, a client that reads nothing
// of an endless stream is closed by the kernel's clock, and the upstream connection
// behind it closes too (its writes fail), on both serving paths.
func TestTCPProxySendTimeout(t *testing.T) {
	for _, mode := range []string{"on", "off"} {
		t.Run("event-loops-"+mode, func(t *testing.T) {
			t.Setenv("MOSNLITE_EVENT_LOOPS", mode)
			writeErr := make(chan error, 1)
			up := framework.StartTCP(t, func(c *net.TCPConn) {
				_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
				chunk := make([]byte, 1<<20)
				for {
					if _, err := c.Write(chunk); err != nil {
						writeErr <- err
						return
					}
				}
			})
			addr := framework.FreePort(t)
			var cfg map[string]any
			if err := json.Unmarshal([]byte(tcpProxyConfig(addr, "LB_ROUNDROBIN", []host{{Address: up.Addr()}}, nil)), &cfg); err != nil {
				t.Fatal(err)
			}
			cfg["servers"].([]any)[0].(map[string]any)["listeners"].([]any)[0].(map[string]any)["send_timeout"] = "300ms"
			b, _ := json.Marshal(cfg)
			framework.StartProxy(t, string(b))

			c := framework.Dial(t, addr)
			defer c.Close()
			if err := c.SetReadBuffer(16 << 10); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-writeErr:
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("upstream: %v: the proxy kept the stalled client's session", err)
				}
			case <-time.After(40 * time.Second):
				t.Fatal("upstream still writing")
			}
		})
	}
}

// TestTCPProxySkipsDeadHost: one host has nothing listening; every client still gets the
// live host's answer with no error.
func TestTCPProxySkipsDeadHost(t *testing.T) {
	live := framework.NameServer(t, "live", 0, false)
	dead := framework.FreePort(t) // nothing listens there
	addr := framework.FreePort(t)
	framework.StartProxy(t, tcpProxyConfig(addr, "LB_ROUNDROBIN",
		[]host{{Address: dead}, {Address: live.Addr()}}, map[string]any{"max_connect_attempts": 3}))
	for i := 0; i < 10; i++ {
		if got := askName(t, addr, ""); got != "live" {
			t.Fatalf("request %d answered %q; want live", i, got)
		}
	}
}

// askName opens a connection (from src when given), sends one byte, reads the name line.
func askName(t testing.TB, addr, src string) string {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte{'?'}); err != nil {
		t.Fatalf("write: %v", err)
	}
	line, err := framework.ReadLine(c)
	if err != nil {
		t.Fatalf("read name: %v", err)
	}
	return line
}

// TestUDPProxyDatagrams: two clients, 50 datagrams each, all echoed back to the right one,
// each client its own upstream session.
func TestUDPProxyDatagrams(t *testing.T) {
	up := framework.StartUDPEcho(t, "echo:")
	addr := framework.FreeUDPPort(t)
	cfg := map[string]any{
		"servers": []any{map[string]any{
			"listeners": []any{map[string]any{
				"name": "udp", "address": addr, "network": "udp",
				"filter_chains": []any{map[string]any{"filters": []any{map[string]any{
					"type": "udp_proxy", "config": map[string]any{"cluster": "up", "idle_timeout": "5s"},
				}}}},
			}},
		}},
		"cluster_manager": map[string]any{"clusters": []any{map[string]any{
			"name": "up", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN",
			"hosts": []host{{Address: up.Addr()}},
		}}},
	}
	b, _ := json.Marshal(cfg)
	framework.StartProxy(t, string(b))

	for client := 0; client < 2; client++ {
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 2048)
		for i := 0; i < 50; i++ {
			msg := fmt.Sprintf("c%d-m%d", client, i)
			got := udpRoundTrip(t, c, msg, buf)
			if got != "echo:"+msg {
				t.Fatalf("client %d datagram %d: got %q", client, i, got)
			}
		}
	}
	if up.Peers() != 2 {
		t.Fatalf("upstream saw %d proxy sessions; want 2 (one per client)", up.Peers())
	}
}

// udpRoundTrip sends msg and waits for the reply, resending a few times: UDP may drop.
func udpRoundTrip(t testing.TB, c net.Conn, msg string, buf []byte) string {
	t.Helper()
	for try := 0; try < 5; try++ {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatalf("udp write: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n])
		}
	}
	t.Fatalf("no reply to %q after 5 tries", msg)
	return ""
}

// TestMOSNSampleConfigsRun starts MOSN's own tcp_proxy and udp_proxy examples with their
// fixed ports rewritten to free ones.
func TestMOSNSampleConfigsRun(t *testing.T) {
	t.Run("tcp_proxy_config.json", func(t *testing.T) {
		up := framework.EchoServer(t, "")
		listen := framework.FreePort(t)
		cfg := rewrite(t, "tcp_proxy_config.json", map[string]string{
			"127.0.0.1:2045": listen, "127.0.0.1:8080": up.Addr()})
		framework.StartProxy(t, cfg)
		c := framework.Dial(t, listen)
		defer c.Close()
		c.Write([]byte("ping"))
		c.CloseWrite()
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "ping" {
			t.Fatalf("echo through MOSN's tcp_proxy sample = %q, %v", b, err)
		}
	})
	t.Run("udp_proxy_config.json", func(t *testing.T) {
		up := framework.StartUDPEcho(t, "u:")
		listen := framework.FreeUDPPort(t)
		cfg := rewrite(t, "udp_proxy_config.json", map[string]string{
			"127.0.0.1:5301": listen, "127.0.0.1:5300": up.Addr()})
		framework.StartProxy(t, cfg)
		c, err := net.Dial("udp", listen)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := udpRoundTrip(t, c, "hi", make([]byte, 64)); got != "u:hi" {
			t.Fatalf("udp sample: got %q", got)
		}
	})
}

// rewrite loads a MOSN sample config from pkg/config/testdata/mosn and replaces addresses.
func rewrite(t testing.TB, name string, repl map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(framework.RepoPath("pkg", "config", "testdata", "mosn", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for from, to := range repl {
		if !strings.Contains(s, from) {
			t.Fatalf("%s does not contain %s", name, from)
		}
		s = strings.ReplaceAll(s, from, to)
	}
	return s
}

// TestGracefulDrain: on SIGTERM an open session keeps working while new connections are
// refused, and the process exits 0 once the session ends.
func TestGracefulDrain(t *testing.T) {
	up := framework.EchoServer(t, "")
	addr := framework.FreePort(t)
	p := framework.StartProxy(t, tcpProxyConfig(addr, "LB_ROUNDROBIN", []host{{Address: up.Addr()}}, nil))

	c := framework.Dial(t, addr)
	defer c.Close()
	roundTrip := func(msg string) {
		t.Helper()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatalf("write %q: %v", msg, err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q = %q, %v", msg, buf, err)
		}
	}
	roundTrip("before")
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !p.WaitLog("stopped accepting", 10*time.Second) {
		t.Fatalf("no drain log:\n%s", p.Logs())
	}
	roundTrip("during-drain")
	if nc, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		nc.Close()
		t.Fatal("a new connection was accepted while draining")
	}
	c.CloseWrite()
	io.ReadAll(c)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after drain; want 0\n%s", code, p.Logs())
	}
}

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/mosnlite/mosnlite/test/framework"
)

// upgradePath is one proxy process carrying HTTP/1 upgrades: on event loops (the loop
// hands an upgrade request to the goroutine path) or with a goroutine per connection.
type upgradePath struct {
	name string
	addr string
	p    *framework.Proxy
}

// upgradeConfig is one HTTP/1 proxy listener (listener: extra listener fields) routing
// everything to cluster "up" at upstream (route: extra route action fields), with an
// admin endpoint for the leak check.
func upgradeConfig(t *testing.T, listen, upstream string, listener, route map[string]any) string {
	t.Helper()
	l := map[string]any{
		"name": "ws", "address": listen, "bind_port": true,
		"filter_chains": []any{map[string]any{"filters": []any{map[string]any{
			"type": "proxy", "config": map[string]any{
				"downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "ws"},
		}}}},
	}
	for k, v := range listener {
		l[k] = v
	}
	cfg := map[string]any{
		"servers": []any{map[string]any{
			"default_log_path": "stderr",
			"routers": []any{map[string]any{
				"router_config_name": "ws",
				"virtual_hosts": []any{map[string]any{"name": "ws", "domains": []any{"*"},
					"routers": []any{clusterRoute("/", "up", route)}}},
			}},
			"listeners": []any{l},
		}},
		"cluster_manager": map[string]any{"clusters": []any{rpcCluster("up", upstream)}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return framework.WithAdmin(t, string(b))
}

// upgradeProxies starts the same config twice: on event loops, then with
// MOSNLITE_EVENT_LOOPS=off.
func upgradeProxies(t *testing.T, upstream string, listener, route map[string]any) []upgradePath {
	t.Helper()
	loopAddr := framework.FreePort(t)
	pl := framework.StartProxy(t, upgradeConfig(t, loopAddr, upstream, listener, route))
	waitUntil(t, "listener serving on event loops", 10*time.Second, func() bool {
		return strings.Contains(pl.Logs(), "listener serving on event loops")
	})
	t.Setenv("MOSNLITE_EVENT_LOOPS", "off")
	offAddr := framework.FreePort(t)
	po := framework.StartProxy(t, upgradeConfig(t, offAddr, upstream, listener, route))
	paths := []upgradePath{{"loops", loopAddr, pl}, {"goroutines", offAddr, po}}
	return paths
}

// wsEchoServer is a golang.org/x/net/websocket server that echoes every message. Its
// handlers are waited for at cleanup.
func wsEchoServer(t *testing.T) *httptest.Server {
	var wg sync.WaitGroup
	srv := httptest.NewServer(websocket.Handler(func(ws *websocket.Conn) {
		wg.Add(1)
		defer wg.Done()
		_ = ws.SetDeadline(time.Now().Add(30 * time.Second))
		for {
			var msg []byte
			if err := websocket.Message.Receive(ws, &msg); err != nil {
				return
			}
			if err := websocket.Message.Send(ws, msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(func() {
		srv.Close()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("websocket handlers still running 10s after cleanup")
		}
	})
	return srv
}

// wsDial opens a WebSocket session through the proxy at addr.
func wsDial(addr, path string) (*websocket.Conn, error) {
	cfg, err := websocket.NewConfig("ws://"+addr+path, "http://localhost/")
	if err != nil {
		return nil, err
	}
	cfg.Dialer = &net.Dialer{Timeout: 5 * time.Second}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		return nil, err
	}
	_ = ws.SetDeadline(time.Now().Add(20 * time.Second))
	return ws, nil
}

// wsSession sends msgs on ws from one goroutine while it reads the echoes on another, and
// checks each echo byte for byte.
func wsSession(ws *websocket.Conn, msgs [][]byte) error {
	werr := make(chan error, 1)
	go func() {
		for _, m := range msgs {
			if err := websocket.Message.Send(ws, m); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	var rerr error
	for i, m := range msgs {
		var got []byte
		if err := websocket.Message.Receive(ws, &got); err != nil {
			rerr = fmt.Errorf("echo %d of %d (%d bytes): %w", i, len(msgs), len(m), err)
			break
		}
		if !bytes.Equal(got, m) {
			rerr = fmt.Errorf("echo %d of %d: got %d bytes, want %d (%s)", i, len(msgs), len(got), len(m), soakDiff(got, m))
			break
		}
	}
	if rerr != nil {
		_ = ws.Close() // unblocks the writer
	}
	return errors.Join(rerr, <-werr)
}

// TestUpgradeWebSocketConcurrent: 50 concurrent WebSocket sessions (x/net client and
// server) through the proxy, each sending messages of random sizes up to 1 MiB while it
// reads their echoes, on event loops and on goroutines. Every echo is byte-exact, and
// the proxy is back at its baseline once the sessions closed.
func TestUpgradeWebSocketConcurrent(t *testing.T) {
	srv := wsEchoServer(t)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	const sessions, perSession = 50, 4
	for _, up := range upgradeProxies(t, hostOf(srv), nil, nil) {
		t.Run(up.name, func(t *testing.T) {
			// A first session starts what the proxy starts lazily (the loop's host watcher).
			if ws, err := wsDial(up.addr, "/warmup"); err != nil {
				t.Fatal(err)
			} else if err := wsSession(ws, [][]byte{[]byte("warm-up")}); err != nil {
				t.Fatal(err)
			} else {
				ws.Close()
			}
			lc := framework.NewLeakCheck(t, up.p)
			data := make([]byte, 1<<20)
			for i := range data {
				data[i] = byte(rand.N(256))
			}
			var wg sync.WaitGroup
			var failed atomic.Int64
			var moved atomic.Int64
			for s := 0; s < sessions; s++ {
				rng := rand.New(rand.NewPCG(seed, uint64(s)))
				msgs := make([][]byte, perSession)
				for i := range msgs {
					n := 1 + rng.IntN(64<<10)
					if rng.IntN(4) == 0 {
						n = 1 + rng.IntN(1<<20)
					}
					off := rng.IntN(len(data) - n + 1)
					msgs[i] = data[off : off+n]
					moved.Add(2 * int64(n))
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					ws, err := wsDial(up.addr, fmt.Sprintf("/echo/%d", s))
					if err != nil {
						failed.Add(1)
						t.Errorf("session %d: dial: %v", s, err)
						return
					}
					defer ws.Close()
					if err := wsSession(ws, msgs); err != nil {
						failed.Add(1)
						t.Errorf("session %d: %v", s, err)
					}
				}()
			}
			wg.Wait()
			t.Logf("%d sessions, %d failed, %d MiB relayed", sessions, failed.Load(), moved.Load()>>20)
			lc.Check(t)
		})
	}
}

// rawUpgrade is the head of an upgrade request to a generic protocol.
const rawUpgrade = "GET /tunnel HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\n"

// TestUpgradeEarlyBytes: bytes a client writes together with its upgrade request (before
// the 101) reach the upstream in order right after the head, whatever they look like (a
// request head, binary); bytes the upstream writes together with its 101 reach the client
// right after it. Sizes from a few bytes to more than one read, on both paths.
func TestUpgradeEarlyBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	bin := make([]byte, 300<<10)
	for i := range bin {
		bin[i] = byte(rng.IntN(256))
	}
	cases := []struct {
		name      string
		fromDown  []byte
		fromUp    []byte
		afterDown []byte
	}{
		{"small", []byte("client-early"), []byte("upstream-early"), []byte("later")},
		{"request_shaped", []byte("GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"), []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), []byte("x")},
		{"large", bin, bin[:200<<10], bin[1000:2000]},
	}
	type got struct {
		early, later []byte
		err          error
	}
	results := make(chan got, 8)
	var want atomic.Pointer[[2]int] // lengths the upstream reads: early, later
	up := framework.StartTCP(t, func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReaderSize(c, 64<<10)
		req, err := http.ReadRequest(br)
		if err != nil {
			results <- got{err: err}
			return
		}
		cs := cases[0]
		for _, k := range cases {
			if req.URL.Path == "/"+k.name {
				cs = k
			}
		}
		out := append([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\n"), cs.fromUp...)
		if _, err := c.Write(out); err != nil {
			results <- got{err: err}
			return
		}
		n := want.Load()
		g := got{early: make([]byte, n[0]), later: make([]byte, n[1])}
		if _, err := io.ReadFull(br, g.early); err != nil {
			g.err = fmt.Errorf("early bytes: %w", err)
		} else if _, err := io.ReadFull(br, g.later); err != nil {
			g.err = fmt.Errorf("later bytes: %w", err)
		}
		results <- g
		if g.err == nil {
			_, _ = c.Write([]byte("bye"))
			_, _ = io.Copy(io.Discard, br)
		}
	})
	for _, p := range upgradeProxies(t, up.Addr(), nil, nil) {
		for _, cs := range cases {
			t.Run(p.name+"/"+cs.name, func(t *testing.T) {
				want.Store(&[2]int{len(cs.fromDown), len(cs.afterDown)})
				c := framework.Dial(t, p.addr)
				defer c.Close()
				head := strings.Replace(rawUpgrade, "/tunnel", "/"+cs.name, 1)
				if _, err := c.Write(append([]byte(head), cs.fromDown...)); err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReader(c)
				resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
				if err != nil || resp.StatusCode != 101 {
					t.Fatalf("handshake: %v %v", resp, err)
				}
				early := make([]byte, len(cs.fromUp))
				if _, err := io.ReadFull(br, early); err != nil || !bytes.Equal(early, cs.fromUp) {
					t.Fatalf("bytes behind the 101: %v (%s)", err, soakDiff(early, cs.fromUp))
				}
				if _, err := c.Write(cs.afterDown); err != nil {
					t.Fatal(err)
				}
				var g got
				select {
				case g = <-results:
				case <-time.After(15 * time.Second):
					t.Fatal("upstream never got the client's bytes")
				}
				if g.err != nil {
					t.Fatalf("upstream: %v", g.err)
				}
				if !bytes.Equal(g.early, cs.fromDown) {
					t.Errorf("bytes behind the upgrade request: %s", soakDiff(g.early, cs.fromDown))
				}
				if !bytes.Equal(g.later, cs.afterDown) {
					t.Errorf("bytes after the switch: %s", soakDiff(g.later, cs.afterDown))
				}
				bye := make([]byte, 3)
				if _, err := io.ReadFull(br, bye); err != nil || string(bye) != "bye" {
					t.Errorf("after the exchange: %q %v", bye, err)
				}
			})
		}
	}
}

// upgradeRefuser is a net/http server that refuses every upgrade: /refuse200 with a 200,
// /big with a 400 and 4 MiB of body, anything else with a 400; keep-alive. A request
// without Upgrade gets "plain <path>". It records which connection served each request.
type upgradeRefuser struct {
	*httptest.Server
	mu    sync.Mutex
	conns map[string][]string // remote address → paths served on it
}

var upgradeRefuseBig = bytes.Repeat([]byte("refused-upgrade-body/"), (4<<20)/21)

func startUpgradeRefuser(t *testing.T) *upgradeRefuser {
	u := &upgradeRefuser{conns: map[string][]string{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.conns[r.RemoteAddr] = append(u.conns[r.RemoteAddr], r.URL.Path)
		u.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		switch {
		case r.Header.Get("Upgrade") == "":
			_, _ = io.WriteString(w, "plain "+r.URL.Path)
		case r.URL.Path == "/refuse200":
			_, _ = io.WriteString(w, "no switch, here is a page")
		case r.URL.Path == "/big":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write(upgradeRefuseBig)
		default:
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, "websocket not offered here")
		}
	}))
	t.Cleanup(u.Close)
	return u
}

// servedAfter reports the requests an upstream connection served after path.
func (u *upgradeRefuser) servedAfter(path string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, paths := range u.conns {
		for i, p := range paths {
			if p == path && i < len(paths)-1 {
				return strings.Join(paths[i+1:], ",")
			}
		}
	}
	return ""
}

// TestUpgradeRefused: an upstream that answers an upgrade request with a 200 or a 400
// and a body, keeping its connection alive. The client gets that answer intact, then,
// as Envoy does after a failed upgrade (RFC 9110 §7.8 lets the upstream stay on HTTP/1,
// but the proxy cannot know what the upstream made of the bytes behind the request), a
// clean close: "Connection: close" and a FIN, never a reset. The upstream connection is
// not reused, and a new connection is served normally. The x/net client reports the
// refusal as a bad status.
func TestUpgradeRefused(t *testing.T) {
	u := startUpgradeRefuser(t)
	for _, p := range upgradeProxies(t, hostOf(u.Server), nil, nil) {
		t.Run(p.name, func(t *testing.T) {
			if ws, err := wsDial(p.addr, "/ws"); err == nil {
				ws.Close()
				t.Error("x/net client: refused upgrade taken as a WebSocket")
			} else if de := (*websocket.DialError)(nil); !errors.As(err, &de) || de.Err != websocket.ErrBadStatus {
				t.Errorf("x/net client: %v, want a bad status", err)
			}
			for _, tc := range []struct {
				path, body string
				status     int
			}{
				{"/refuse200", "no switch, here is a page", 200},
				{"/refuse400", "websocket not offered here", 400},
			} {
				c := framework.Dial(t, p.addr)
				head := strings.Replace(rawUpgrade, "/tunnel", tc.path, 1)
				if _, err := io.WriteString(c, head); err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReader(c)
				resp, body := readResponse(t, br, "GET")
				if resp.StatusCode != tc.status || body != tc.body || !resp.Close {
					t.Errorf("%s: %d %q close=%v, want %d %q with Connection: close", tc.path, resp.StatusCode, body, resp.Close, tc.status, tc.body)
				}
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
					t.Errorf("%s: after the answer %q %v, want a clean EOF", tc.path, rest, err)
				}
				c.Close()
				next := "/next-after" + tc.path
				if resp, body := roundTripOn(t, p.addr, "GET "+next+" HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "plain "+next {
					t.Errorf("%s: next request %d %q", tc.path, resp.StatusCode, body)
				}
				if s := u.servedAfter(tc.path); s != "" {
					t.Errorf("%s: the refused upgrade's upstream connection was reused: %s", tc.path, s)
				}
			}
		})
	}
}

// TestUpgradeRefusedPipelined: a client pipelines a plain request behind an upgrade
// request (HTTP/1.1 lets it: the server may refuse the upgrade and stay on HTTP/1), and
// the upstream refuses with a 400 and a 4 MiB body. The proxy closes the connection
// after the 400, so the pipelined request may go unanswered, but the 400 must arrive
// whole, followed by a FIN: closing a socket that still holds unread bytes makes the
// kernel send a reset and drop what the client has not taken yet (the proxy closes
// lingering: network.Conn.CloseLinger).
func TestUpgradeRefusedPipelined(t *testing.T) {
	u := startUpgradeRefuser(t)
	for _, p := range upgradeProxies(t, hostOf(u.Server), nil, nil) {
		t.Run(p.name, func(t *testing.T) {
			c := framework.Dial(t, p.addr)
			defer c.Close()
			if _, err := io.WriteString(c, strings.Replace(rawUpgrade, "/tunnel", "/big", 1)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // the proxy is forwarding the 400 by now
			if _, err := io.WriteString(c, "GET /pipelined HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond) // the client reads late
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatalf("response head: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			if resp.StatusCode != 400 || err != nil || !bytes.Equal(body, upgradeRefuseBig) {
				t.Fatalf("refused upgrade: %d, %d of %d body bytes, %v", resp.StatusCode, len(body), len(upgradeRefuseBig), err)
			}
			rest, err := io.ReadAll(br)
			if err != nil {
				t.Fatalf("after the 400: %v, want a clean EOF", err)
			}
			if len(rest) > 0 && !strings.Contains(string(rest), "plain /pipelined") {
				t.Fatalf("after the 400: %q", rest)
			}
		})
	}
}

// roundTripOn sends one raw request on a new connection and reads its response.
func roundTripOn(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	c := framework.Dial(t, addr)
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return readResponse(t, bufio.NewReader(c), "GET")
}

// tunnelUpstream answers an upgrade request on each connection with a 101 and then runs
// the behaviour its path names (/close/<name>) on the connection; br holds what was read
// past the request head.
func tunnelUpstream(t *testing.T, behave map[string]func(c *net.TCPConn, br *bufio.Reader)) *framework.TCPServer {
	return framework.StartTCP(t, func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReaderSize(c, 64<<10)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		f := behave[strings.TrimPrefix(req.URL.Path, "/close/")]
		if f == nil {
			_, _ = io.WriteString(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\n"); err != nil {
			return
		}
		f(c, br)
	})
}

// tunnelOpen opens a tunnel through the proxy at addr and returns the client's side of it.
func tunnelOpen(t *testing.T, addr, name string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c := framework.Dial(t, addr)
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, strings.Replace(rawUpgrade, "/tunnel", "/close/"+name, 1)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	return c, br
}

// closeBound is how long one side of a tunnel may take to see the other side's close.
const closeBound = 5 * time.Second

// TestUpgradeClose: either side of a tunnel closing, half-closing or resetting is seen
// by the other side within closeBound (the proxy ends both sides when either ends, as
// Envoy's HTTP/1 connection manager does), bytes sent before a close arrive, and the
// proxy is back at its baseline afterwards. The last case is an upstream that stopped
// reading while the client, whose bytes it no longer takes, leaves.
func TestUpgradeClose(t *testing.T) {
	pattern := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	ended := make(chan string, 16)                              // how an upstream's read ended, per case
	release := make(chan struct{})                              // lets the stalled upstream read again
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	readToEnd := func(name string, c *net.TCPConn, br *bufio.Reader) {
		start := time.Now()
		_ = c.SetReadDeadline(start.Add(closeBound))
		_, err := io.Copy(io.Discard, br)
		ended <- fmt.Sprintf("%s: %v after %s", name, err, time.Since(start).Round(time.Millisecond))
	}
	behave := map[string]func(c *net.TCPConn, br *bufio.Reader){
		"client_close":     func(c *net.TCPConn, br *bufio.Reader) { readToEnd("client_close", c, br) },
		"client_reset":     func(c *net.TCPConn, br *bufio.Reader) { readToEnd("client_reset", c, br) },
		"client_halfclose": func(c *net.TCPConn, br *bufio.Reader) { readToEnd("client_halfclose", c, br) },
		"upstream_close": func(c *net.TCPConn, br *bufio.Reader) {
			_, _ = c.Write(pattern)
		},
		"upstream_reset": func(c *net.TCPConn, br *bufio.Reader) {
			_, _ = c.Write([]byte("x"))
			_ = c.SetLinger(0)
		},
		"upstream_halfclose": func(c *net.TCPConn, br *bufio.Reader) {
			_, _ = c.Write(pattern)
			_ = c.CloseWrite()
			readToEnd("upstream_halfclose", c, br)
		},
		"client_leaves_stalled_upstream": func(c *net.TCPConn, br *bufio.Reader) {
			select { // reads nothing until the test is done
			case <-release:
			case <-time.After(15 * time.Second):
			}
			_ = c.SetReadDeadline(time.Now().Add(closeBound))
			_, _ = io.Copy(io.Discard, br)
		},
	}
	up := tunnelUpstream(t, behave)
	wantEnd := func(t *testing.T, name string) {
		t.Helper()
		select {
		case s := <-ended:
			if !strings.HasPrefix(s, name+": <nil>") && !(strings.HasPrefix(s, name+": ") && strings.Contains(s, "reset")) {
				t.Errorf("upstream side: %s, want EOF or a reset", s)
			}
		case <-time.After(closeBound + 2*time.Second):
			t.Errorf("upstream side: no end seen")
		}
	}
	// clientEnd checks that the client's side ends within closeBound, with want before it.
	clientEnd := func(t *testing.T, c net.Conn, br *bufio.Reader, want []byte, reset bool) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(closeBound))
		got, err := io.ReadAll(br)
		switch {
		case isTimeout(err):
			t.Errorf("client side: no end seen within %s (%d bytes)", closeBound, len(got))
		case err != nil && !reset:
			t.Errorf("client side: %v, want EOF", err)
		case want != nil && !bytes.Equal(got, want):
			t.Errorf("client side: %s", soakDiff(got, want))
		}
	}
	for _, p := range upgradeProxies(t, up.Addr(), nil, nil) {
		t.Run(p.name, func(t *testing.T) {
			// Warm-up: the loop's host watcher starts with the first request.
			wc, wbr := tunnelOpen(t, p.addr, "upstream_close")
			clientEnd(t, wc, wbr, pattern, false)
			wc.Close()
			lc := framework.NewLeakCheck(t, p.p)
			lc.Wait = closeBound
			cases := []struct {
				name string
				run  func(t *testing.T, c *net.TCPConn, br *bufio.Reader)
			}{
				{"client_close", func(t *testing.T, c *net.TCPConn, br *bufio.Reader) {
					_, _ = c.Write([]byte("ping"))
					c.Close()
					wantEnd(t, "client_close")
				}},
				{"client_reset", func(t *testing.T, c *net.TCPConn, br *bufio.Reader) {
					_ = c.SetLinger(0)
					c.Close()
					wantEnd(t, "client_reset")
				}},
				{"client_halfclose", func(t *testing.T, c *net.TCPConn, br *bufio.Reader) {
					_, _ = c.Write([]byte("ping"))
					_ = c.CloseWrite()
					wantEnd(t, "client_halfclose")
					clientEnd(t, c, br, nil, false)
				}},
				{"upstream_close", func(t *testing.T, c *net.TCPConn, br *bufio.Reader) {
					clientEnd(t, c, br, pattern, false)
				}},
				{"upstream_reset", func(t *testing.T, c *net.TCPConn, br *bufio.Reader) {
					clientEnd(t, c, br, nil, true)
				}},
				{"upstream_halfclose", func(t *testing.T, c *net.TCPConn, br *bufio.Reader) {
					clientEnd(t, c, br, pattern, false)
					wantEnd(t, "upstream_halfclose")
				}},
				{"client_leaves_stalled_upstream", func(t *testing.T, c *net.TCPConn, br *bufio.Reader) {
					// Fill the path to the upstream until a write blocks, then leave
					// with a reset: a FIN would wait behind the bytes the proxy does
					// not take, in the client's kernel.
					chunk := make([]byte, 256<<10)
					_ = c.SetWriteDeadline(time.Now().Add(time.Second))
					for i := 0; i < 256; i++ {
						if _, err := c.Write(chunk); err != nil {
							break
						}
					}
					_ = c.SetLinger(0)
					c.Close()
				}},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					c, br := tunnelOpen(t, p.addr, tc.name)
					tc.run(t, c, br)
					c.Close()
					if err := lc.Settle(); err != nil {
						t.Errorf("after %s: %v", tc.name, err)
					}
				})
			}
		})
	}
	releaseOnce.Do(func() { close(release) })
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// wsEcho sends msg on ws and checks its echo.
func wsEcho(ws *websocket.Conn, msg string) error {
	if err := websocket.Message.Send(ws, msg); err != nil {
		return err
	}
	var got string
	if err := websocket.Message.Receive(ws, &got); err != nil {
		return err
	}
	if got != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// TestUpgradeRouteTimeout: the route timeout (300ms here) does not bound a tunnel, as in
// Envoy, which turns the route timeout off for upgrades: a WebSocket that stays silent
// for longer, or keeps talking for longer, lives on.
func TestUpgradeRouteTimeout(t *testing.T) {
	srv := wsEchoServer(t)
	for _, p := range upgradeProxies(t, hostOf(srv), nil, map[string]any{"timeout": "300ms"}) {
		t.Run(p.name, func(t *testing.T) {
			ws, err := wsDial(p.addr, "/long")
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			time.Sleep(time.Second)
			if err := wsEcho(ws, "after a silent second"); err != nil {
				t.Fatalf("after 1s of silence: %v", err)
			}
			for i := 0; i < 12; i++ {
				time.Sleep(100 * time.Millisecond)
				if err := wsEcho(ws, fmt.Sprintf("message %d", i)); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
			}
		})
	}
}

// TestUpgradeIdleTimeout: the listener's connection_idle_timeout ("closes a connection
// with no traffic", docs/config.md) applies to a tunnel as it does to tcp_proxy's
// sessions: one with no bytes either way for longer is closed on both sides; one with
// traffic more often lives on. Envoy bounds an idle upgraded stream too (its stream idle
// timeout, 5 minutes by default).
func TestUpgradeIdleTimeout(t *testing.T) {
	srv := wsEchoServer(t)
	for _, p := range upgradeProxies(t, hostOf(srv), map[string]any{"connection_idle_timeout": "500ms"}, nil) {
		t.Run(p.name, func(t *testing.T) {
			busy, err := wsDial(p.addr, "/busy")
			if err != nil {
				t.Fatal(err)
			}
			defer busy.Close()
			for i := 0; i < 15; i++ {
				time.Sleep(100 * time.Millisecond)
				if err := wsEcho(busy, fmt.Sprintf("message %d", i)); err != nil {
					t.Fatalf("a tunnel with traffic every 100ms, message %d: %v", i, err)
				}
			}
			idle, err := wsDial(p.addr, "/idle")
			if err != nil {
				t.Fatal(err)
			}
			defer idle.Close()
			_ = idle.SetReadDeadline(time.Now().Add(3 * time.Second))
			var msg []byte
			err = websocket.Message.Receive(idle, &msg)
			if isTimeout(err) {
				t.Fatalf("a silent tunnel still open after 3s with connection_idle_timeout 500ms")
			}
			if !errors.Is(err, io.EOF) {
				t.Errorf("silent tunnel: %v, want EOF", err)
			}
		})
	}
}

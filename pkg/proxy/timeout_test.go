package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// TestRequestHeaderTimeout: a head that stays incomplete longer than
// RequestHeaderTimeout is answered 408 and the connection closes.
func TestRequestHeaderTimeout(t *testing.T) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	e := startProxyRouter(t, o.addr(), "r", func(c *proxy.Config) { c.RequestHeaderTimeout = 200 * time.Millisecond })
	c := dial(t, e.addr)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nX-Half"); err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(out), "HTTP/1.1 408 ") || !strings.Contains(string(out), "Connection: close") {
		t.Fatalf("want 408 and close, got %q", out)
	}
	if o.reqs.Load() != 0 {
		t.Fatal("partial head reached the upstream")
	}
	// A complete head arriving in pieces within the limit is served.
	c = dial(t, e.addr)
	for _, p := range []string{"GET / HT", "TP/1.1\r\nHost: a\r\n", "\r\n"} {
		if _, err := io.WriteString(c, p); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	br := bufio.NewReader(c)
	if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("pieces: %d %q", resp.StatusCode, body)
	}
	// Idle between requests longer than the limit: not a partial head.
	time.Sleep(400 * time.Millisecond)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 200 {
		t.Fatalf("after idle: %d", resp.StatusCode)
	}
}

// TestIdleUpstreamSweep: an idle upstream connection older than IdleTimeout is closed by
// the proxy's coarse sweep timer, without another request using the pool.
func TestIdleUpstreamSweep(t *testing.T) {
	var closed atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				closed.Add(1)
			}
		},
		ReadHeaderTimeout: testTimeout,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	e := startProxyRouter(t, ln.Addr().String(), "r", func(c *proxy.Config) { c.IdleTimeout = 200 * time.Millisecond })
	if resp, body := roundTrip(t, e.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	deadline := time.Now().Add(testTimeout)
	for closed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if closed.Load() == 0 {
		t.Fatal("idle upstream connection was not closed after IdleTimeout")
	}
}

// TestHeadOverBufferLimit: with per_connection_buffer_limit_bytes below the head size
// limit, a request head that does not end within the buffer limit is answered 431 and
// the connection closes, on both paths (the loop held up to 96 KiB regardless, and the
// goroutine path closed without an answer). The limit is checked between reads, as for
// every ReadLoop, so a head is refused once a read leaves more than the limit unparsed:
// here 40 KiB against 8 KiB. A head within the limit, and a body larger than it (which
// streams), are served.
func TestHeadOverBufferLimit(t *testing.T) {
	bothPaths(t, func(t *testing.T, p path) {
		o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, "ok "+strconv.FormatInt(n, 10))
		})
		p.conn = func(c *network.ListenerConfig) { c.Conn.BufferLimit = 8 << 10 }
		e := p.start(t, o.addr())
		big := "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 40<<10) + "\r\n\r\n"
		c := dial(t, e.addr)
		if _, err := io.WriteString(c, big); err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(c)
		if !strings.HasPrefix(string(out), "HTTP/1.1 431 ") || !strings.Contains(string(out), "Connection: close") {
			t.Fatalf("40 KiB head with an 8 KiB buffer limit: want 431 and close, got %.200q", out)
		}
		if o.reqs.Load() != 0 {
			t.Fatal("the head over the limit reached the upstream")
		}
		small := "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 4<<10) + "\r\n\r\n"
		if resp, body := roundTrip(t, e.addr, small); resp.StatusCode != 200 || body != "ok 0" {
			t.Fatalf("4 KiB head: %d %q", resp.StatusCode, body)
		}
		post := "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 40000\r\n\r\n" + strings.Repeat("p", 40000)
		if resp, body := roundTrip(t, e.addr, post); resp.StatusCode != 200 || body != "ok 40000" {
			t.Fatalf("40,000-byte body: %d %q", resp.StatusCode, body)
		}
	})
}

// TestSendTimeoutClosesStalledClient (ROBUSTNESS 28b): a client that asks for an endless
// response and reads none of it is closed after the listener's send_timeout, with that
// reason, and the upstream connection behind it is closed too (the origin's write
// fails), long before the connection idle timeout.
func TestSendTimeoutClosesStalledClient(t *testing.T) {
	bothPaths(t, func(t *testing.T, p path) {
		written := make(chan error, 1)
		o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
			chunk := make([]byte, 64<<10)
			for {
				if _, err := w.Write(chunk); err != nil {
					written <- err
					return
				}
			}
		})
		p.conn = func(c *network.ListenerConfig) { c.SendTimeout = 300 * time.Millisecond }
		e := p.start(t, o.addr())
		c := dial(t, e.addr)
		if err := c.(*net.TCPConn).SetReadBuffer(16 << 10); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-written:
		case <-time.After(testTimeout):
			t.Fatal("the origin is still writing: the stalled client's connection was kept")
		}
		closes := e.m.ConnCloses.WithLabelValues("l", string(network.CloseSendTimeout))
		testutil.Eventually(t, testTimeout, "send_timeout close counted", func() bool { return counterValue(t, closes) == 1 })
	})
}

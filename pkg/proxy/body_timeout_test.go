package proxy_test

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/proxy"
)

// TestRequestBodyTimeout: a request body that stops arriving for RequestBodyTimeout is
// answered 408 (connection closed) and the incomplete request is dropped upstream; a
// body trickled in pieces, each gap within the timeout, is delivered whole although it
// takes longer than the timeout in all.
func TestRequestBodyTimeout(t *testing.T) {
	const timeout = 400 * time.Millisecond
	bodies := make(chan string, 2)
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			bodies <- "error: " + err.Error()
			return
		}
		bodies <- string(b)
		_, _ = io.WriteString(w, "ok")
	})
	e := startProxyRouter(t, o.addr(), "r", func(c *proxy.Config) { c.RequestBodyTimeout = timeout })

	// Trickled: 8 pieces, one every timeout/4.
	c := dial(t, e.addr)
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 80\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	for range 8 {
		time.Sleep(timeout / 4)
		if _, err := io.WriteString(c, "0123456789"); err != nil {
			t.Fatal(err)
		}
	}
	br := bufio.NewReader(c)
	if resp, body := readResp(t, br, "POST"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("trickled body: %d %q", resp.StatusCode, body)
	}
	if got := <-bodies; got != strings.Repeat("0123456789", 8) {
		t.Fatalf("upstream got %q", got)
	}

	// Stalled: 10 of 100 bytes, then nothing.
	c = dial(t, e.addr)
	start := time.Now()
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789"); err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(out), "HTTP/1.1 408 ") || !strings.Contains(string(out), "Connection: close") {
		t.Fatalf("stalled body: want 408 and close, got %q", out)
	}
	if waited := time.Since(start); waited < timeout {
		t.Fatalf("408 after %v, before the %v body timeout", waited, timeout)
	}
	select {
	case got := <-bodies:
		if !strings.HasPrefix(got, "error: ") {
			t.Fatalf("upstream read a complete body %q from a stalled request", got)
		}
	case <-time.After(testTimeout):
		t.Fatal("the upstream request was not dropped")
	}
}

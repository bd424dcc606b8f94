package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestUpgradeTunnelUpstreamCloses: after a 101 the bytes flow both ways, bytes the
// upstream sent right behind its 101 arrive, and the upstream closing ends the
// downstream connection.
func TestUpgradeTunnelUpstreamCloses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-test\r\nConnection: Upgrade\r\n\r\nhello")
		buf := make([]byte, 4)
		if _, err := io.ReadFull(br, buf); err != nil {
			return
		}
		_, _ = c.Write(buf) // echo once, then close
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	e := startProxy(t, ln.Addr().String())
	c := dial(t, e.addr)
	if _, err := io.WriteString(c, "GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "x-test" {
		t.Fatalf("101: %v %v", resp, err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "hello" {
		t.Fatalf("early bytes %q %v", got, err)
	}
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br) // the upstream's echo, then EOF when it closed
	if err != nil || string(rest) != "ping" {
		t.Fatalf("echo and close: %q %v", rest, err)
	}
}

// TestUpgradeRefused: an upstream that answers an upgrade request with a plain 200 ends
// the downstream connection after the answer (bytes the client sent ahead of the switch
// are never parsed as a request, here or upstream), and its own connection is not
// returned to the pool: the next request opens a new one (ROBUSTNESS 5b).
func TestUpgradeRefused(t *testing.T) { bothPaths(t, upgradeRefused) }

func upgradeRefused(t *testing.T, p path) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "no switch") })
	e := p.start(t, o.addr())
	c := dial(t, e.addr)
	early := "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	if _, err := io.WriteString(c, "GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\n"+early); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("refused upgrade: %v %v; want 200 with Connection: close", resp, err)
	}
	if body, err := io.ReadAll(resp.Body); err != nil || string(body) != "no switch" {
		t.Fatalf("body %q %v", body, err)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the answer: %q %v; want EOF", rest, err)
	}
	if resp, body := roundTrip(t, e.addr, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "no switch" {
		t.Fatalf("next request: %d %q", resp.StatusCode, body)
	}
	if n := o.reqs.Load(); n != 2 {
		t.Errorf("upstream served %d requests, want 2 (the early bytes must not reach it)", n)
	}
	if n := o.conns.Load(); n != 2 {
		t.Errorf("upstream saw %d connections, want 2: the connection behind a refused upgrade was reused", n)
	}
}

// TestUpgradeWithBodyServedPlain: an upgrade request with a body (curl --http2 -d sends
// `Upgrade: h2c` with its POST) is served as the plain HTTP/1.1 request it also is: the
// upstream gets the body without the upgrade fields, and the client's connection stays
// usable for the next request.
func TestUpgradeWithBodyServedPlain(t *testing.T) { bothPaths(t, upgradeWithBodyServedPlain) }

func upgradeWithBodyServedPlain(t *testing.T, p path) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "%s %q %q %q", r.URL.Path, b, r.Header.Get("Upgrade"), r.Header.Get("Http2-Settings"))
	})
	e := p.start(t, o.addr())
	c := dial(t, e.addr)
	const up = "POST /one HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n" +
		"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Length: 5\r\n\r\nhello"
	if _, err := io.WriteString(c, up+"GET /two HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for _, want := range []string{`/one "hello" "" ""`, `/two "" "" ""`} {
		resp, body := readResp(t, br, "GET")
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
}

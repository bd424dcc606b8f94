package proxy_test

import (
	"bufio"
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

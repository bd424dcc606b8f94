package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs the server in the background on a free loopback port; the returned stop
// cancels it and returns run's error.
func start(t *testing.T, mode string) (net.Addr, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"-listen", "127.0.0.1:0", "-mode", mode, "-name", "t1", "-grace", "2s"}, io.Discard, ready)
	}()
	select {
	case a := <-ready:
		return a, func() error { cancel(); return <-errc }
	case err := <-errc:
		cancel()
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("server did not start within 10s")
	}
	return nil, nil
}

func TestHTTP(t *testing.T) {
	addr, stop := start(t, "http")
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	base := "http://" + addr.String()

	resp, err := c.Get(base + "/?x=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Hello from t1") || !strings.Contains(string(body), "GET /?x=1 HTTP/1.1") {
		t.Fatalf("GET / = %d %q", resp.StatusCode, body)
	}

	resp, err = c.Post(base+"/echo", "text/plain", strings.NewReader("ping"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ping" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("POST /echo = %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}

	resp, err = c.Get(base + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("GET /nope = %d, want 404", resp.StatusCode)
	}
	c.CloseIdleConnections()
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

func TestTCPEcho(t *testing.T) {
	addr, stop := start(t, "tcp-echo")
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := bytes.Repeat([]byte("abc"), 100000)
	go func() { _, _ = c.Write(msg); _ = c.(*net.TCPConn).CloseWrite() }()
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %d bytes, err %v; want %d bytes back", len(got), err, len(msg))
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

func TestTCPEchoStopClosesIdleConns(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- serveTCPEcho(ctx, ln, 50*time.Millisecond) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serveTCPEcho did not return after the grace period")
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after stop")
	}
}

func TestUDPEcho(t *testing.T) {
	addr, stop := start(t, "udp-echo")
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 100)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := c.Write([]byte("dgram")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			if string(buf[:n]) != "dgram" {
				t.Fatalf("echo = %q", buf[:n])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no echo within 10s: %v", err)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

func TestBadMode(t *testing.T) {
	err := run(context.Background(), []string{"-mode", "carrier-pigeon"}, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "known: http, tcp-echo, udp-echo") {
		t.Fatalf("run = %v", err)
	}
}

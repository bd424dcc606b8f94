package http2_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"

	h2 "github.com/mosnlite/mosnlite/pkg/stream/http2"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// h2cServer serves h2c (prior knowledge) on 127.0.0.1:0 and counts its connections.
func h2cServer(t *testing.T) (string, *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := new(atomic.Int64)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Path) }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				n.Add(1)
			}
		},
		Protocols: new(http.Protocols),
	}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), n
}

func TestPoolReusesAndReplaces(t *testing.T) {
	addr, conns := h2cServer(t)
	p := h2.NewPool(h2.PoolOptions{IdleTimeout: 200 * time.Millisecond})
	defer p.Close()
	if p.Get(addr) != nil {
		t.Fatal("empty pool returned a connection")
	}
	var dones atomic.Int64
	dial := func() {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		cc, pooled, err := p.Add(raw, addr, func() { dones.Add(1) })
		if err != nil || !pooled {
			t.Fatal(err)
		}
		do(t, cc.RoundTrip, addr, "/first")
	}
	dial()
	for i := range 5 {
		cc := p.Get(addr)
		if cc == nil {
			t.Fatalf("request %d: no pooled connection", i)
		}
		do(t, cc.RoundTrip, addr, "/again")
	}
	if conns.Load() != 1 || p.Len(addr) != 1 {
		t.Fatalf("connections %d, pooled %d; want 1, 1", conns.Load(), p.Len(addr))
	}
	// Idle expiry: the connection closes itself, done runs, Get drops it.
	deadline := time.Now().Add(10 * time.Second)
	for dones.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if dones.Load() != 1 {
		t.Fatal("idle connection not closed")
	}
	if p.Get(addr) != nil || p.Len(addr) != 0 {
		t.Fatal("a closed connection was handed out or kept")
	}
}

func do(t *testing.T, rt func(*http.Request) (*http.Response, error), addr, path string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	resp, err := rt(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != path {
		t.Fatalf("got %q want %q", b, path)
	}
}

// clientConn is what the tests use of a pooled connection.
type clientConn interface {
	RoundTrip(*http.Request) (*http.Response, error)
	Close() error
}

// add dials addr and adds the connection to p; the channel is closed once the pool is
// done with the connection.
func add(t *testing.T, p *h2.Pool, addr string) (clientConn, bool, <-chan struct{}) {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	cc, pooled, err := p.Add(raw, addr, func() { close(closed) })
	if err != nil {
		t.Fatal(err)
	}
	return cc, pooled, closed
}

// waitClosed fails the test with msg when closed is not closed within 10s.
func waitClosed(t *testing.T, closed <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal(msg)
	}
}

func TestPoolCloseClosesIdle(t *testing.T) {
	addr, _ := h2cServer(t)
	p := h2.NewPool(h2.PoolOptions{})
	cc, _, closed := add(t, p, addr)
	do(t, cc.RoundTrip, addr, "/x")
	p.Close()
	waitClosed(t, closed, "Close left an idle connection open")
	// After Close a new connection serves the caller's stream and is not pooled.
	cc2, pooled, closed2 := add(t, p, addr)
	if pooled {
		t.Fatal("Add after Close pooled the connection")
	}
	do(t, cc2.RoundTrip, addr, "/y")
	cc2.Close()
	waitClosed(t, closed2, "a connection made after Close stayed open")
	if p.Len(addr) != 0 {
		t.Fatal("pooled after Close")
	}
}

// TestPoolAcquireOneDialPerBurst: concurrent streams to a cold host share one dialled
// connection, and each gets a reserved stream on it.
func TestPoolAcquireOneDialPerBurst(t *testing.T) {
	addr, conns := h2cServer(t)
	p := h2.NewPool(h2.PoolOptions{})
	defer p.Close()
	var dials atomic.Int64
	dial := func(ctx context.Context) (net.Conn, string, func(), error) {
		dials.Add(1)
		var d net.Dialer
		raw, err := d.DialContext(ctx, "tcp", addr)
		return raw, addr, func() {}, err
	}
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc, pooled, err := p.Acquire(t.Context(), addr, dial)
			if err != nil || !pooled {
				errs <- fmt.Errorf("Acquire %d: pooled %v, %v", i, pooled, err)
				return
			}
			req, _ := http.NewRequest("GET", "http://"+addr+"/burst", nil)
			resp, err := cc.RoundTrip(req)
			if err != nil {
				errs <- err
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if dials.Load() != 1 || conns.Load() != 1 || p.Len(addr) != 1 {
		t.Fatalf("dials %d, server conns %d, pooled %d; want 1, 1, 1", dials.Load(), conns.Load(), p.Len(addr))
	}
	// A dial error comes back as it is.
	errDial := errors.New("no route")
	_, _, err := p.Acquire(t.Context(), "127.0.0.1:1", func(context.Context) (net.Conn, string, func(), error) {
		return nil, "", nil, errDial
	})
	if !errors.Is(err, errDial) {
		t.Fatalf("dial error: %v", err)
	}
}

// TestPoolDropsGoingAway: a connection whose server sent GOAWAY is not handed out again.
func TestPoolDropsGoingAway(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Path) }),
		Protocols: new(http.Protocols),
	}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	addr := ln.Addr().String()
	p := h2.NewPool(h2.PoolOptions{})
	defer p.Close()
	cc, _, closed := add(t, p, addr)
	do(t, cc.RoundTrip, addr, "/before")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	go func() { _ = srv.Shutdown(ctx) }() // sends GOAWAY, then closes idle connections
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("connection not closed after GOAWAY")
	}
	if got := p.Get(addr); got != nil {
		t.Fatalf("after GOAWAY: Get = %v; want nil", got)
	}
	testutil.Eventually(t, 10*time.Second, "the sweeper to drop the closed connection", func() bool { return p.Len(addr) == 0 })
}

// TestPoolDropsGoAwayAtOnce: a GOAWAY received while a stream is open drops the
// connection from the pool as x/net processes it (Transport.ConnPool's MarkDead), not at
// the next sweep: the pool stops counting it while its stream finishes.
func TestPoolDropsGoAwayAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			<-release
			io.WriteString(w, r.URL.Path)
		}),
		Protocols: new(http.Protocols),
	}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	addr := ln.Addr().String()
	p := h2.NewPool(h2.PoolOptions{IdleTimeout: time.Hour}) // sweeps once a second
	defer p.Close()
	cc, _, closed := add(t, p, addr)
	served := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+addr+"/slow", nil)
		resp, err := cc.RoundTrip(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		served <- err
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the server")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	go func() { _ = srv.Shutdown(ctx) }() // GOAWAY; the open stream may finish
	//lint:ignore SA1019 the pool's connections are x/net's (pool.go)
	state := cc.(interface{ State() http2.ClientConnState })
	testutil.Eventually(t, 10*time.Second, "the client to process GOAWAY", func() bool { return state.State().Closing })
	if n := p.Len(addr); n != 0 {
		t.Fatalf("pooled after GOAWAY = %d; want 0 at once", n)
	}
	if got := p.Get(addr); got != nil {
		t.Fatal("a going-away connection was handed out")
	}
	close(release)
	if err := <-served; err != nil {
		t.Fatalf("the stream open at GOAWAY failed: %v", err)
	}
	waitClosed(t, closed, "connection not closed after its last stream")
}

func TestRequestView(t *testing.T) {
	r, _ := http.NewRequest("POST", "http://h.example:8080/a/b?x=1", nil)
	r.RequestURI = "/a/b?x=1"
	r.Header.Set("Service", "svc")
	v := h2.Request{R: r}
	if v.Host() != "h.example:8080" || v.Path() != "/a/b?x=1" || v.Method() != "POST" {
		t.Fatalf("%q %q %q", v.Host(), v.Path(), v.Method())
	}
	for _, name := range []string{"service", "Service", "SERVICE"} {
		if got, ok := v.Header(name); !ok || got != "svc" {
			t.Fatalf("Header(%q) = %q %v", name, got, ok)
		}
	}
	if p, _ := v.Variable("x-mosn-path"); p != "/a/b" {
		t.Fatalf("path var %q", p)
	}
	if q, _ := v.Variable("x-mosn-querystring"); q != "x=1" {
		t.Fatalf("query var %q", q)
	}
	r.Header.Set("Content-Type", "application/grpc")
	if got, ok := v.Header("content-type"); !ok || got != "application/grpc" {
		t.Fatalf("content-type: %q %v", got, ok)
	}
	if allocs := testing.AllocsPerRun(100, func() { _, _ = v.Header("service"); _, _ = v.Header("content-TYPE"); _ = v.Path() }); allocs != 0 {
		t.Fatalf("%v allocs", allocs)
	}
}

func TestCopyHeadersDropsHopByHop(t *testing.T) {
	src := http.Header{
		"Connection":        {"X-Private, close"},
		"X-Private":         {"secret"},
		"Keep-Alive":        {"timeout=5"},
		"Transfer-Encoding": {"chunked"},
		"Upgrade":           {"h2c"},
		"Te":                {"trailers"},
		"Content-Type":      {"text/plain"},
		"X-Keep":            {"1", "2"},
	}
	dst := http.Header{}
	if !h2.CopyHeaders(dst, src) {
		t.Fatal("TE: trailers not reported")
	}
	var names []string
	for k := range dst {
		names = append(names, k)
	}
	if len(dst) != 2 || dst.Get("Content-Type") != "text/plain" || strings.Join(dst["X-Keep"], ",") != "1,2" {
		t.Fatalf("copied %v", names)
	}
}

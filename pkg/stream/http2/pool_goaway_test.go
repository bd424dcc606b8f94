package http2_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	h2 "github.com/mosnlite/mosnlite/pkg/stream/http2"
)

// TestPoolAcquireRedialsAfterSetupGoAway: a server that sends its SETTINGS and a
// graceful GOAWAY on a new connection, and closes it before answering the pool's PING
// (it shut down as the connection started), costs the caller one more dial, not a
// failed request: the second connection serves.
func TestPoolAcquireRedialsAfterSetupGoAway(t *testing.T) {
	addr, _ := h2cServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	goneAway := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			goneAway <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, preface); err != nil {
			goneAway <- err
			return
		}
		fr := http2.NewFramer(c, c)
		if err := fr.WriteSettings(); err != nil {
			goneAway <- err
			return
		}
		goneAway <- fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	}()
	p := h2.NewPool(h2.PoolOptions{})
	defer p.Close()
	var dials atomic.Int64
	dial := func(ctx context.Context) (net.Conn, string, func(), error) {
		to := addr
		if dials.Add(1) == 1 {
			to = ln.Addr().String() // the first connection goes to the server shutting down
		}
		var d net.Dialer
		raw, err := d.DialContext(ctx, "tcp", to)
		return raw, addr, func() {}, err
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	cc, _, err := p.Acquire(ctx, addr, dial)
	if err != nil {
		t.Fatalf("Acquire after a GOAWAY during setup: %v (dials %d)", err, dials.Load())
	}
	if err := <-goneAway; err != nil {
		t.Fatal(err)
	}
	if dials.Load() != 2 {
		t.Fatalf("dials %d; want 2", dials.Load())
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/after", nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "/after" {
		t.Fatalf("body %q", b)
	}
}

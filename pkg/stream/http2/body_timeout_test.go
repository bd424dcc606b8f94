package http2_test

import (
	"errors"
	"io"
	"testing"
	"time"

	"golang.org/x/net/http2"

	h2 "github.com/mosnlite/mosnlite/pkg/stream/http2"
)

// A client that sends HEADERS and part of a body, then nothing, has its stream reset
// (CANCEL) once the handler waited BodyTimeout for more: the handler's Read returns
// ErrBodyTimeout. A body that keeps arriving, each gap shorter than the timeout, is read
// whole even though it takes several timeouts in all.
func TestServerBodyTimeout(t *testing.T) {
	const timeout = 400 * time.Millisecond
	type result struct {
		n   int64
		err error
	}
	got := make(chan result, 2)
	rc, _ := serve(t, h2.ServerOptions{BodyTimeout: timeout}, handlerFunc(func(st *h2.ServerStream) {
		n, err := io.Copy(io.Discard, st)
		got <- result{n, err}
		if err == nil {
			_ = st.WriteHeaders(204, true, nil)
		}
	}))

	// Stream 1 trickles: a chunk every timeout/4, 8 chunks (twice the timeout in all).
	rc.headers(1, false, post("/trickle")...)
	for i := range 8 {
		if err := rc.fr.WriteData(1, i == 7, []byte("0123456789")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(timeout / 4)
	}
	select {
	case r := <-got:
		if r.err != nil || r.n != 80 {
			t.Fatalf("trickled body: read %d bytes, %v; want 80, nil", r.n, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("trickled body: handler did not finish")
	}

	// Stream 3 stalls after its first chunk.
	rc.headers(3, false, post("/stall")...)
	if err := rc.fr.WriteData(3, false, []byte("part")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		f := rc.next()
		if rst, ok := f.(*http2.RSTStreamFrame); ok {
			if rst.StreamID != 3 || rst.ErrCode != http2.ErrCodeCancel {
				t.Fatalf("got %v, want RST_STREAM(CANCEL) on stream 3", rst)
			}
			break
		}
	}
	if waited := time.Since(start); waited < timeout {
		t.Fatalf("stream reset after %v, before the %v body timeout", waited, timeout)
	}
	select {
	case r := <-got:
		if !errors.Is(r.err, h2.ErrBodyTimeout) || r.n != 4 {
			t.Fatalf("stalled body: read %d bytes, %v; want 4, ErrBodyTimeout", r.n, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stalled body: handler's Read did not return")
	}
}

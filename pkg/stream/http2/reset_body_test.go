package http2_test

import (
	"errors"
	"io"
	"testing"
	"time"

	"golang.org/x/net/http2"

	h2 "github.com/mosnlite/mosnlite/pkg/stream/http2"
)

// TestServerResetDropsUnreadBody: a client sends a whole request body and then resets the
// stream before the handler read it. The stream's unread bytes are gone, so the handler's
// Read must fail with ErrStreamReset, never end in a clean EOF that passes a truncated
// (here empty) body for the whole one.
func TestServerResetDropsUnreadBody(t *testing.T) {
	reset := make(chan struct{})
	got := make(chan string, 1)
	rc, _ := serve(t, h2.ServerOptions{}, handlerFunc(func(st *h2.ServerStream) {
		if st.OnReset(func() { close(reset) }) {
			select { // the reset is in (after the body's frames) before the handler reads
			case <-reset:
			case <-time.After(5 * time.Second):
				got <- "the reset did not arrive"
				return
			}
		}
		b, err := io.ReadAll(st)
		if err != nil {
			got <- "error: " + err.Error()
			if !errors.Is(err, h2.ErrStreamReset) {
				got <- "error is not ErrStreamReset"
			}
			return
		}
		got <- "body: " + string(b)
	}))
	rc.headers(1, false, post("/")...)
	if err := rc.fr.WriteData(1, false, []byte("hello ")); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteData(1, true, []byte("world")); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		if g != "error: "+h2.ErrStreamReset.Error() {
			t.Fatalf("handler read %q after the reset; want ErrStreamReset", g)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's read did not return")
	}
}

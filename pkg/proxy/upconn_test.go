package proxy

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// upPair returns an upConn over a loopback TCP connection and the connection's far end.
func upPair(t *testing.T) (*upConn, net.Conn) {
	c, far := testutil.Pair(t, "tcp")
	return &upConn{raw: c, done: func() {}}, far
}

// TestUpConnDeadlineCoarse: a bound already armed within the slack after the new one is
// kept; one outside it, or before the new bound, is moved; zero lifts it.
func TestUpConnDeadlineCoarse(t *testing.T) {
	u, _ := upPair(t)
	t0 := time.Now().Add(32 * time.Second) // slack capped at maxDeadlineSlack
	u.deadline(t0)
	if got := u.armed.Sub(t0); got < maxDeadlineSlack-time.Millisecond || got > maxDeadlineSlack {
		t.Fatalf("armed %v after the bound, want the slack %v", got, maxDeadlineSlack)
	}
	armed := u.armed
	u.deadline(t0.Add(400 * time.Millisecond)) // within the slack: kept
	if !u.armed.Equal(armed) {
		t.Fatalf("a bound within the slack was re-armed")
	}
	u.deadline(t0.Add(2 * time.Second)) // past the armed bound: moved, never early
	if !u.armed.After(t0.Add(2 * time.Second)) {
		t.Fatalf("armed %v, before the bound asked for", u.armed.Sub(t0))
	}
	u.deadline(time.Now().Add(time.Second)) // far earlier than armed: moved back
	if d := time.Until(u.armed); d > time.Second+time.Second/16 {
		t.Fatalf("armed %v from now for a 1 s bound", d)
	}
	u.deadline(time.Time{})
	if !u.armed.IsZero() {
		t.Fatal("zero did not lift the bound")
	}
}

// TestUpConnDeadlineNeverEarly: a read under a bound fails no earlier than the bound; a
// lifted bound does not fire.
func TestUpConnDeadlineNeverEarly(t *testing.T) {
	u, far := upPair(t)
	bound := time.Now().Add(80 * time.Millisecond)
	u.deadline(bound)
	if _, err := u.io().Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read under the bound: %v, want a deadline error", err)
	}
	if now := time.Now(); now.Before(bound) {
		t.Fatalf("bound fired %v early", bound.Sub(now))
	}

	u.deadline(time.Now().Add(30 * time.Millisecond))
	u.deadline(time.Time{})
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, _ = far.Write([]byte("x"))
	}()
	_ = far.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := u.io().Read(make([]byte, 1)); err != nil {
		t.Fatalf("read after the bound was lifted: %v", err)
	}
}

// TestUpConnProbeLiftsPassedBound: an idle pooled connection whose bound passed is still
// alive; the probe must not fail on the bound, and a closed peer is still seen.
func TestUpConnProbeLiftsPassedBound(t *testing.T) {
	u, far := upPair(t)
	u.deadline(time.Now().Add(10 * time.Millisecond))
	time.Sleep(30 * time.Millisecond)
	if !u.Probe() {
		t.Fatal("an open connection whose bound passed probed dead")
	}
	if !u.armed.IsZero() {
		t.Fatal("the passed bound was not lifted")
	}
	far.Close()
	deadline := time.Now().Add(5 * time.Second)
	for u.Probe() {
		if time.Now().After(deadline) {
			t.Fatal("a connection closed by its peer probed alive")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

package network

import (
	"context"
	"testing"
	"time"
)

// A listener built with Inherit serves the old listener's socket: a connection queued
// while neither accepts is served by the new one once the old is closed.
func TestListenerInheritsSocket(t *testing.T) {
	oc := testConfig(t, "old", nil)
	oc.Handler = echo(oc.Conn.Pool)
	old, err := NewListener(oc)
	if err != nil {
		t.Fatal(err)
	}
	f, err := old.File()
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, "new", nil)
	cfg.Handler = echo(cfg.Conn.Pool)
	cfg.Inherit = f
	l, err := NewListener(cfg)
	if err != nil {
		old.Close()
		t.Fatal(err)
	}
	if l.Addr().String() != old.Addr().String() {
		t.Fatalf("inherited address %v; want %v", l.Addr(), old.Addr())
	}
	c := dial(t, old.Addr()) // queued in the shared backlog
	old.Close()
	startServing(t, l)
	if got, err := roundTrip(c, "hello", 5*time.Second); err != nil || got != "hello" {
		t.Fatalf("round trip through the inherited socket = %q, %v", got, err)
	}
	// The old listener's Serve, if started now, ends at once: its socket is closed.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := old.Serve(ctx); err != nil {
		t.Fatalf("old Serve after Close = %v", err)
	}
}

func TestListenerFileNeedsTCP(t *testing.T) {
	cfg := testConfig(t, "virtual", nil)
	cfg.Handler = echo(cfg.Conn.Pool)
	cfg.BindPort = false
	cfg.Address = "127.0.0.1:1"
	l, err := NewListener(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.File(); err == nil {
		t.Fatal("File of a virtual listener succeeded")
	}
}

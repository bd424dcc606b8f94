package testutil

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Peer is a loopback TCP listener that keeps the server side of every connection it
// accepts and hands it to the test (Accept), which can then write to it, read from it or
// close it. At cleanup the listener and every accepted connection are closed.
type Peer struct {
	Addr string // "127.0.0.1:port"

	ln    net.Listener
	got   chan net.Conn
	stop  chan struct{}
	mu    sync.Mutex
	conns []net.Conn
}

// StartPeer listens on 127.0.0.1:0 until cleanup.
func StartPeer(t testing.TB) *Peer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Peer{Addr: ln.Addr().String(), ln: ln, got: make(chan net.Conn, 64), stop: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			select {
			case p.got <- c:
			case <-p.stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(p.stop)
		_ = ln.Close()
		<-done
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			_ = c.Close()
		}
	})
	return p
}

// Accept returns the server side of the next accepted connection, in accept order. It
// fails the test when none comes within d.
func (p *Peer) Accept(t testing.TB, d time.Duration) net.Conn {
	t.Helper()
	select {
	case c := <-p.got:
		return c
	case <-time.After(d):
		t.Fatalf("no connection accepted on %s within %v", p.Addr, d)
		return nil
	}
}

package connpool_test

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testTimeout = 10 * time.Second

// peer is a loopback listener that keeps the server side of every connection it
// accepts, so a test can write to it or close it.
type peer struct {
	ln    net.Listener
	addr  string
	mu    sync.Mutex
	conns []net.Conn
	got   chan net.Conn
}

func newPeer(t testing.TB) *peer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{ln: ln, addr: ln.Addr().String(), got: make(chan net.Conn, 64)}
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
			p.got <- c
		}
	}()
	t.Cleanup(func() {
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

// dial connects to the peer and returns the client side and the server side.
func (p *peer) dial(t testing.TB) (*testConn, net.Conn) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", p.addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case srv := <-p.got:
		c := &testConn{raw: raw, addr: p.addr}
		t.Cleanup(func() { _ = raw.Close() })
		return c, srv
	case <-time.After(testTimeout):
		t.Fatal("peer did not accept")
		return nil, nil
	}
}

// testConn is a ping-pong connection that counts its closes (the release a cluster's
// max_connections unit would get).
type testConn struct {
	raw    net.Conn
	addr   string
	closes atomic.Int32
}

func (c *testConn) NetConn() net.Conn { return c.raw }

func (c *testConn) Close() error {
	c.closes.Add(1)
	return c.raw.Close()
}

func (c *testConn) closed() bool { return c.closes.Load() > 0 }

// eventually polls cond until it holds or the test timeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

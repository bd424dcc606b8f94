package connpool_test

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/connpool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testTimeout = 10 * time.Second

// peer is a loopback listener that keeps the server side of every connection it
// accepts, so a test can write to it or close it.
type peer struct {
	*testutil.Peer
	addr string
}

func newPeer(t testing.TB) *peer {
	t.Helper()
	p := testutil.StartPeer(t)
	return &peer{Peer: p, addr: p.Addr}
}

// dial connects to the peer and returns the client side and the server side.
func (p *peer) dial(t testing.TB) (*testConn, net.Conn) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", p.addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	return &testConn{raw: raw, addr: p.addr}, p.Accept(t, testTimeout)
}

// testConn is a ping-pong connection that counts its closes (the release a cluster's
// max_connections unit would get).
type testConn struct {
	raw    net.Conn
	addr   string
	closes atomic.Int32
	stale  atomic.Bool // its host left the cluster or is down (PingPongOptions.Stale)
}

// staleConn is PingPongOptions.Stale for testConns.
func staleConn(c connpool.Conn) bool { return c.(*testConn).stale.Load() }

func (c *testConn) NetConn() net.Conn { return c.raw }

func (c *testConn) Close() error {
	c.closes.Add(1)
	return c.raw.Close()
}

func (c *testConn) closed() bool { return c.closes.Load() > 0 }

// concurrently runs work(g) on n goroutines and fails the test with the errors they
// return, once all are done.
func concurrently(t *testing.T, n int, work func(g int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := work(g); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

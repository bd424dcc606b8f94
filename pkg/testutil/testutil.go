// Package testutil holds the small loopback helpers that the tests of many packages share:
// polling a condition with a deadline (Eventually), dialing with bounded I/O (DialConn), a
// listener that hands accepted connections to the test (Peer) and a TCP upstream serving
// each connection with a handler (StartTCP, EchoServer). Everything listens on 127.0.0.1
// with a free port and is closed when the test ends.
//
// It is for tests only: no non-test code imports it. It imports only the standard library,
// so the tests of any package under pkg/, internal ones too, and test/framework may use it.
package testutil

import (
	"net"
	"testing"
	"time"
)

// Eventually polls cond until it holds, failing the test when it still does not after d.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// DialConn connects to addr, failing the test when that takes longer than d, and bounds
// the connection's reads and writes by the same d from now. The connection is closed at
// cleanup.
func DialConn(t testing.TB, addr string, d time.Duration) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(d))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Pair returns the two ends of a stream connection on network ("tcp" on 127.0.0.1:0, or
// "unix" on a socket in the test's temporary directory): the dialled end first. Both are
// closed at cleanup.
func Pair(t testing.TB, network string) (dialled, accepted net.Conn) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = t.TempDir() + "/pair.sock"
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-ch
	if s == nil {
		c.Close()
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

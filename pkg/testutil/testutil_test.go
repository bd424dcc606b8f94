package testutil_test

import (
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mosnlite/mosnlite/pkg/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPeerHandsAcceptedConnectionsInOrder(t *testing.T) {
	p := testutil.StartPeer(t)
	for _, msg := range []string{"first", "second"} {
		c := testutil.DialConn(t, p.Addr, 5*time.Second)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		s := p.Accept(t, 5*time.Second)
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(s, got); err != nil || string(got) != msg {
			t.Fatalf("server side read %q, %v; want %q", got, err, msg)
		}
	}
}

func TestEchoServerEchoesThenWritesTrailer(t *testing.T) {
	s := testutil.EchoServer(t, "bye")
	c := testutil.DialConn(t, s.Addr(), 5*time.Second)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hellobye" {
		t.Fatalf("read %q, %v; want %q", got, err, "hellobye")
	}
	if n := s.Conns.Load(); n != 1 {
		t.Fatalf("Conns = %d, want 1", n)
	}
}

func TestStartTCPCloseEndsHandlers(t *testing.T) {
	var done atomic.Bool
	s := testutil.StartTCP(t, func(c *net.TCPConn) {
		_, _ = io.Copy(io.Discard, c) // returns when Close closes the connection
		done.Store(true)
	})
	testutil.DialConn(t, s.Addr(), 5*time.Second)
	testutil.Eventually(t, 5*time.Second, "the connection accepted", func() bool { return s.Conns.Load() == 1 })
	s.Close()
	if !done.Load() {
		t.Fatal("Close returned before the handler did")
	}
}

func TestBufferConcurrentWriteAndRead(t *testing.T) {
	var b testutil.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			_, _ = b.Write([]byte("x"))
		}
	}()
	for range 100 {
		_ = b.String() // -race reports an unsynchronised read
	}
	<-done
	if got := len(b.String()); got != 100 {
		t.Fatalf("len = %d, want 100", got)
	}
}

func TestFreeAddrNeverRepeats(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		for _, a := range []string{testutil.FreeAddr(t), "udp " + testutil.FreeUDPAddr(t)} {
			if seen[a] {
				t.Fatalf("%s handed out twice", a)
			}
			seen[a] = true
		}
	}
}

func TestRefusedAddrRefuses(t *testing.T) {
	a, b := testutil.RefusedAddr(t), testutil.RefusedAddr(t)
	if a == b {
		t.Fatalf("two calls returned %s", a)
	}
	if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
		c.Close()
		t.Fatalf("connect to %s succeeded", a)
	} else if !strings.Contains(err.Error(), "refused") {
		t.Fatalf("connect to %s: %v; want connection refused", a, err)
	}
}

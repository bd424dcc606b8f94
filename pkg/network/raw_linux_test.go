package network

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mosnlite/mosnlite/pkg/network/evloop"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// loopEcho is a RawHandler that echoes on the loop; declines the sockets decline says.
type loopEcho struct {
	decline    func(a Accepted) bool
	forced     atomic.Int32
	noDelayOff atomic.Int32 // accepted sockets without TCP_NODELAY
}

func (h *loopEcho) ServeRaw(a Accepted) bool {
	if h.decline != nil && h.decline(a) {
		return false
	}
	s := &echoSession{h: h}
	if v, err := unix.GetsockoptInt(a.FD, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v == 0 {
		h.noDelayOff.Add(1)
	}
	s.c.Init(a, s)
	var err error
	if s.tok, err = a.Loop.Add(a.FD, s); err != nil {
		s.c.Close(CloseError, false)
	}
	return true
}

type echoSession struct {
	h   *loopEcho
	c   RawConn
	tok evloop.Token
}

func (s *echoSession) OnEvents(uint32) {
	for {
		n, err := evloop.Read(s.c.FD, s.c.Loop.Buf)
		if n > 0 {
			evloop.Write(s.c.FD, s.c.Loop.Buf[:n]) // tests send less than a socket buffer
			continue
		}
		if err == nil || !errors.Is(err, syscall.EAGAIN) {
			s.c.Loop.Forget(s.tok)
			s.c.Close(CloseRemote, false)
		}
		return
	}
}

func (s *echoSession) ForceClose(r CloseReason) {
	s.h.forced.Add(1)
	s.c.Loop.Forget(s.tok)
	s.c.Close(r, false)
}

func loopConfig(t *testing.T, name string, loops int) (ListenerConfig, *loopEcho) {
	t.Helper()
	g, err := evloop.NewGroup(loops, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close) // after the listener's cleanup (registered later, runs first)
	cfg := testConfig(t, name, nil)
	cfg.Handler = echo(cfg.Conn.Pool)
	h := &loopEcho{}
	cfg.RawHandler, cfg.Loops = h, g
	return cfg, h
}

// A listener with loops accepts on them: connections are served by the RawHandler, counted
// as active while open, and their closes counted by reason.
func TestRawListenerServesOnLoops(t *testing.T) {
	for _, loops := range []int{1, 2} {
		cfg, h := loopConfig(t, "raw", loops)
		l := serve(t, cfg)
		if !l.rawOK() {
			t.Fatal("listener with loops and a RawHandler does not use them")
		}
		var conns []net.Conn
		for range 8 {
			c := dial(t, l.Addr())
			if got, err := roundTrip(c, "ping", 5*time.Second); err != nil || got != "ping" {
				t.Fatalf("%d loops: echo %q, %v", loops, got, err)
			}
			conns = append(conns, c)
		}
		if n := l.ActiveConns(); n != 8 {
			t.Fatalf("ActiveConns = %d with 8 open, want 8", n)
		}
		for _, c := range conns {
			c.Close()
		}
		testutil.Eventually(t, 5*time.Second, "sessions to close", func() bool { return l.ActiveConns() == 0 })
		if n := closes(cfg.Metrics, "raw", CloseRemote); n != 8 {
			t.Fatalf("closes{remote} = %v, want 8", n)
		}
		if n := value(cfg.Metrics.DownstreamCxTotal.WithLabelValues("raw")); n != 8 {
			t.Fatalf("cx_total = %v, want 8", n)
		}
		if n := h.noDelayOff.Load(); n != 0 {
			t.Fatalf("%d accepted sockets without TCP_NODELAY", n)
		}
	}
}

// A socket the RawHandler declines is served by Handler on a goroutine, as a Conn.
func TestRawListenerDeclineFallsBack(t *testing.T) {
	cfg, h := loopConfig(t, "decline", 1)
	h.decline = func(Accepted) bool { return true }
	served := make(chan struct{}, 1)
	pool := cfg.Conn.Pool
	cfg.Handler = handlerFunc(func(ctx context.Context, c *Conn) {
		served <- struct{}{}
		echo(pool).ServeConn(ctx, c)
	})
	l := serve(t, cfg)
	c := dial(t, l.Addr())
	if got, err := roundTrip(c, "x", 5*time.Second); err != nil || got != "x" {
		t.Fatalf("declined socket: %q, %v", got, err)
	}
	select {
	case <-served:
	default:
		t.Fatal("Handler did not serve the declined socket")
	}
	c.Close()
	testutil.Eventually(t, 5*time.Second, "conn to close", func() bool { return l.ActiveConns() == 0 })
}

// max_connections holds on loops too: accepting pauses (counted once per pause) and
// resumes when a connection closes.
func TestRawListenerMaxConnections(t *testing.T) {
	cfg, _ := loopConfig(t, "rawmax", 1)
	cfg.MaxConnections = 2
	l := serve(t, cfg)
	overflow := cfg.Metrics.DownstreamCxOverflow.WithLabelValues("rawmax")
	c1, c2 := dial(t, l.Addr()), dial(t, l.Addr())
	for _, c := range []net.Conn{c1, c2} {
		if got, err := roundTrip(c, "x", 5*time.Second); err != nil || got != "x" {
			t.Fatalf("first two conns: %q, %v", got, err)
		}
	}
	c3 := dial(t, l.Addr())
	if _, err := roundTrip(c3, "y", 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("conn 3 served while 2 of 2 are open: err %v", err)
	}
	if n := value(overflow); n != 1 {
		t.Fatalf("overflow = %v after one pause (retried every %v), want 1", n, pausedRetry)
	}
	c1.Close()
	c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 1)
	if _, err := io.ReadFull(c3, got); err != nil || string(got) != "y" {
		t.Fatalf("conn 3 after a slot freed: %q, %v", got, err)
	}
}

// A drain that runs out of time has the loops force-close their connections (the owner's
// ForceClose, reason drain), and Drain returns once they are closed.
func TestRawListenerDrainForceCloses(t *testing.T) {
	cfg, h := loopConfig(t, "rawdrain", 2)
	l, cancel, errc := serveTest(t, cfg)
	var conns []net.Conn
	for range 4 {
		c := dial(t, l.Addr())
		if _, err := roundTrip(c, "x", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// Closed listener: new connections are refused (the socket left every loop first).
	if c, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("dial succeeded after the listener closed")
	}
	ctx, dcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer dcancel()
	l.Drain(ctx)
	if n := h.forced.Load(); n != 4 {
		t.Fatalf("ForceClose called %d times, want 4", n)
	}
	if n := closes(cfg.Metrics, "rawdrain", CloseDrain); n != 4 {
		t.Fatalf("closes{drain} = %v, want 4", n)
	}
	for _, c := range conns {
		if err := waitClosedByPeer(c, 5*time.Second); err != nil {
			t.Fatalf("client not closed by drain: %v", err)
		}
	}
}

// Listeners without loops, with TLS or with original_dst keep their goroutines.
func TestRawListenerEligibility(t *testing.T) {
	cfg, _ := loopConfig(t, "elig", 1)
	for _, tc := range []struct {
		name string
		edit func(c *ListenerConfig)
		want bool
	}{
		{"plain", func(*ListenerConfig) {}, true},
		{"no loops", func(c *ListenerConfig) { c.Loops = nil }, false},
		{"no raw handler", func(c *ListenerConfig) { c.RawHandler = nil }, false},
		{"original_dst", func(c *ListenerConfig) { c.OriginalDst = "redirect" }, false},
	} {
		c := cfg
		tc.edit(&c)
		l, err := NewListener(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.rawOK(); got != tc.want {
			t.Errorf("%s: rawOK = %v, want %v", tc.name, got, tc.want)
		}
		l.Close()
	}
}

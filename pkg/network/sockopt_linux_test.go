package network

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// TestTProxyNeedsPrivilege drops CAP_NET_ADMIN and CAP_NET_RAW from one OS thread and binds
// a tproxy listener on it: the error must say what is missing.
func TestTProxyNeedsPrivilege(t *testing.T) {
	t.Parallel()
	errc := make(chan error, 1)
	go func() {
		// The thread keeps the reduced capabilities; it is never unlocked, so the runtime
		// discards it when this goroutine exits.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		for _, c := range []uint{unix.CAP_NET_ADMIN, unix.CAP_NET_RAW} {
			data[c/32].Effective &^= 1 << (c % 32)
		}
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		cfg := testConfig(t, "tproxy", echo(buffer.NewPool()))
		cfg.OriginalDst = "tproxy"
		l, err := NewListener(cfg)
		if err == nil {
			l.Close()
		}
		errc <- err
	}()
	err := <-errc
	if err == nil || !strings.Contains(err.Error(), "IP_TRANSPARENT") || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Fatalf("tproxy listener without privilege: %v; want an IP_TRANSPARENT error naming CAP_NET_ADMIN", err)
	}
	t.Log(err)
}

// TestSendTimeout: a client that stops reading while the proxy has bytes for it is closed
// after the listener's send_timeout, with that reason and its metric; the accepted socket
// carries the option (inherited from the listening one), and a connection with nothing to
// send outlives the timeout.
func TestSendTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	cfg := testConfig(t, "send-timeout", nil)
	cfg.SendTimeout = timeout
	cfg.Conn.BufferLimit = 256 << 10
	pool := cfg.Conn.Pool
	type result struct {
		opt    int
		reason CloseReason
	}
	results := make(chan result, 2)
	cfg.Handler = handlerFunc(func(ctx context.Context, c *Conn) {
		var r result
		rc, err := c.Raw().(syscall.Conn).SyscallConn()
		if err == nil {
			_ = rc.Control(func(fd uintptr) {
				r.opt, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
			})
		}
		// "flood" asks for endless bytes; anything else is echoed.
		c.ReadLoop(func(b *buffer.IoBuffer) error {
			if string(b.Bytes()) == "flood" {
				b.Drain(b.Len())
				return flood(c, pool)
			}
			out := pool.NewBuffer(0)
			out.Write(b.Bytes())
			b.Drain(b.Len())
			return c.Write(out)
		})
		r.reason = c.CloseReason()
		results <- r
	})
	l := serve(t, cfg)

	quiet := dial(t, l.Addr())
	stalled := dial(t, l.Addr())
	if err := stalled.(*net.TCPConn).SetReadBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	if _, err := stalled.Write([]byte("flood")); err != nil {
		t.Fatal(err)
	}
	// The stalled client never reads: the proxy's bytes fill both socket buffers, the
	// window closes, and the kernel gives up after the timeout.
	select {
	case r := <-results:
		if r.reason != CloseSendTimeout {
			t.Fatalf("stalled conn closed with %q; want send_timeout", r.reason)
		}
		if r.opt != int(timeout/time.Millisecond) {
			t.Errorf("accepted socket's TCP_USER_TIMEOUT = %d ms; want %d", r.opt, timeout/time.Millisecond)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a client that reads nothing was not closed")
	}
	testutil.Eventually(t, 5*time.Second, "send_timeout close counted", func() bool {
		return closes(cfg.Metrics, "send-timeout", CloseSendTimeout) == 1
	})
	// The quiet connection had nothing to send for longer than the timeout: still served.
	if got, err := roundTrip(quiet, "still here", 5*time.Second); err != nil || got != "still here" {
		t.Fatalf("idle conn after the send timeout: %q, %v", got, err)
	}
}

// TestSendTimeoutFollowsInheritedSocket: a replacement listener that takes over the
// socket applies its own send_timeout (here: off, and then a new value), not the old one's.
func TestSendTimeoutFollowsInheritedSocket(t *testing.T) {
	userTimeout := func(l *Listener) int {
		t.Helper()
		rc, err := l.ln.(*net.TCPListener).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var opt int
		var gerr error
		_ = rc.Control(func(fd uintptr) { opt, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT) })
		if gerr != nil {
			t.Fatal(gerr)
		}
		return opt
	}
	prev := testConfig(t, "old", echo(buffer.NewPool()))
	prev.SendTimeout = 3 * time.Second
	l, err := NewListener(prev)
	if err != nil {
		t.Fatal(err)
	}
	if got := userTimeout(l); got != 3000 {
		t.Fatalf("TCP_USER_TIMEOUT = %d; want 3000", got)
	}
	for _, want := range []time.Duration{0, 1500 * time.Millisecond} {
		f, err := l.File()
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(t, "new", echo(buffer.NewPool()))
		cfg.SendTimeout = want
		cfg.Inherit = f
		next, err := NewListener(cfg)
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		l = next
		if got := userTimeout(l); got != int(want/time.Millisecond) {
			t.Fatalf("inherited socket's TCP_USER_TIMEOUT = %d; want %d", got, want/time.Millisecond)
		}
	}
	l.Close()
}

// flood writes 64 KiB buffers to c until a write fails.
func flood(c *Conn, pool *buffer.Pool) error {
	for {
		out := pool.NewBuffer(64 << 10)
		out.Write(make([]byte, 64<<10))
		if err := c.Write(out); err != nil {
			return err
		}
	}
}

// TestTLSSendTimeout: send_timeout holds behind TLS too: a client that completes the
// handshake, asks for a flood and reads none of it is closed with reason send_timeout
// (the ETIMEDOUT comes wrapped by crypto/tls).
func TestTLSSendTimeout(t *testing.T) {
	t.Parallel()
	pool := buffer.NewPool()
	reasons := make(chan CloseReason, 1)
	h := handlerFunc(func(ctx context.Context, c *Conn) {
		c.ReadLoop(func(b *buffer.IoBuffer) error {
			b.Drain(b.Len())
			return flood(c, pool)
		})
		reasons <- c.CloseReason()
	})
	l, ccfg := tlsListener(t, h, nil, func(c *ListenerConfig) {
		c.SendTimeout = 200 * time.Millisecond
		c.Conn.BufferLimit = 256 << 10
	})
	raw, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.(*net.TCPConn).SetReadBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, ccfg)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("flood")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-reasons:
		if r != CloseSendTimeout {
			t.Fatalf("closed with %q; want send_timeout", r)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a TLS client that reads nothing was not closed")
	}
}

// TestSendTimeoutFollowsHandoff: a connection handed by original_dst to another listener
// gets that listener's send_timeout, not the accepting socket's.
func TestSendTimeoutFollowsHandoff(t *testing.T) {
	t.Parallel()
	x := NewIndex()
	cfg := testConfig(t, "outbound", tagHandler("direct"))
	cfg.Index, cfg.SendTimeout = x, 3*time.Second
	l := tproxyListener(t, cfg)
	port := l.Addr().(*net.TCPAddr).Port
	vc := testConfig(t, "app", handlerFunc(func(_ context.Context, c *Conn) {
		opt := -1
		if rc, err := c.Raw().(syscall.Conn).SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { opt, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT) })
		}
		b := buffer.NewPool().NewBuffer(0)
		fmt.Fprintf(b, "%d\n", opt)
		c.Write(b)
		c.Close(CloseLocal)
	}))
	vc.BindPort, vc.Address, vc.SendTimeout = false, fmt.Sprintf("0.0.0.0:%d", port), 7*time.Second
	v, err := NewListener(vc)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []*Listener{l, v} {
		if err := x.Add(l); err != nil {
			t.Fatal(err)
		}
	}
	if got := readAll(t, dial(t, l.Addr())); got != "7000" {
		t.Fatalf("handed-off connection's TCP_USER_TIMEOUT = %q ms; want 7000 (the target listener's)", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v.Drain(ctx)
}

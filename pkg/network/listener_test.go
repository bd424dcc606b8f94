package network

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

type packetEcho struct{}

func (packetEcho) ServePackets(ctx context.Context, pc net.PacketConn) error {
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		pc.WriteTo(buf[:n], from)
	}
}

func TestEcho(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "echo.sock")
	for _, tc := range []struct{ name, network, address string }{
		{"tcp", "tcp", "127.0.0.1:0"},
		{"unix", "unix", sock},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, tc.name, nil)
			cfg.Handler = echo(cfg.Conn.Pool)
			cfg.Network, cfg.Address = tc.network, tc.address
			l := serve(t, cfg)
			var wg sync.WaitGroup
			for i := range 4 {
				wg.Go(func() {
					c := dial(t, l.Addr())
					for j := range 20 {
						msg := strings.Repeat(fmt.Sprintf("%d/%d;", i, j), 50+j*100)
						if got, err := roundTrip(c, msg, 5*time.Second); err != nil || got != msg {
							t.Errorf("conn %d message %d: %v (got %d bytes, want %d)", i, j, err, len(got), len(msg))
							return
						}
					}
				})
			}
			wg.Wait()
			if got := value(cfg.Metrics.DownstreamCxTotal.WithLabelValues(tc.name)); got != 4 {
				t.Errorf("downstream_connections_total = %v; want 4", got)
			}
		})
	}
}

func TestUnixSocketFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")

	// A stale socket file (nobody listening) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	cfg := testConfig(t, "unix", nil)
	cfg.Handler = echo(cfg.Conn.Pool)
	cfg.Network, cfg.Address = "unix", path
	l, err := NewListener(cfg)
	if err != nil {
		t.Fatalf("NewListener over a stale socket: %v", err)
	}
	// A live socket is not stolen.
	if _, err := NewListener(cfg); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second listener on a live socket: %v; want EADDRINUSE", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Serve(ctx) }()
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after close: %v; want it removed", err)
	}

	// A regular file is never removed.
	file := filepath.Join(dir, "plain")
	os.WriteFile(file, []byte("x"), 0o600)
	cfg.Address = file
	if _, err := NewListener(cfg); err == nil || !strings.Contains(err.Error(), "not a unix socket") {
		t.Errorf("listener over a regular file: %v; want a 'not a unix socket' error", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("regular file removed: %v", err)
	}
}

func TestUDPListener(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "udp", nil)
	cfg.Network = "udp"
	cfg.PacketHandler = packetEcho{}
	l := serve(t, cfg)
	c := dial(t, l.Addr())
	for i := range 5 {
		msg := fmt.Sprintf("datagram %d", i)
		if got, err := roundTrip(c, msg, 5*time.Second); err != nil || got != msg {
			t.Fatalf("datagram %d: %q, %v", i, got, err)
		}
	}
}

func TestReusePort(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "a", echo(buffer.NewPool()))
	cfg.ReusePort = true
	a := serve(t, cfg)
	cfg.Name, cfg.Address, cfg.Metrics = "b", a.Addr().String(), metrics.New()
	b := serve(t, cfg)
	if a.Addr().String() != b.Addr().String() {
		t.Fatalf("addresses differ: %v %v", a.Addr(), b.Addr())
	}
	c := dial(t, a.Addr())
	if got, err := roundTrip(c, "hi", 5*time.Second); err != nil || got != "hi" {
		t.Fatalf("echo: %q, %v", got, err)
	}
}

func TestNewListenerErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		mod  func(*ListenerConfig)
		want string
	}{
		{"no handler", func(c *ListenerConfig) { c.Handler = nil }, "no connection handler"},
		{"udp without packet handler", func(c *ListenerConfig) { c.Network = "udp" }, "no packet handler"},
		{"unknown network", func(c *ListenerConfig) { c.Network = "sctp" }, `network "sctp"`},
		{"original_dst on udp", func(c *ListenerConfig) {
			c.Network, c.PacketHandler, c.OriginalDst = "udp", packetEcho{}, "redirect"
		}, "only for tcp"},
		{"bad original_dst", func(c *ListenerConfig) { c.OriginalDst = "magic" }, `use_original_dst "magic"`},
		{"virtual with hostname", func(c *ListenerConfig) { c.BindPort, c.Address = false, "localhost:80" }, "want ip:port"},
		{"negative max", func(c *ListenerConfig) { c.MaxConnections = -1 }, "max_connections"},
		{"bad address", func(c *ListenerConfig) { c.Address = "256.0.0.1:1" }, "256.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "bad", echo(buffer.NewPool()))
			tc.mod(&cfg)
			l, err := NewListener(cfg)
			if err == nil {
				l.Close()
				t.Fatalf("NewListener: nil error; want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `listener "bad"`) {
				t.Fatalf("NewListener: %v; want it to name the listener and contain %q", err, tc.want)
			}
		})
	}
}

func TestMaxConnectionsPauseResume(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "max", nil)
	cfg.Handler = echo(cfg.Conn.Pool)
	cfg.MaxConnections = 2
	l := serve(t, cfg)
	overflow := cfg.Metrics.DownstreamCxOverflow.WithLabelValues("max")

	c1, c2 := dial(t, l.Addr()), dial(t, l.Addr())
	for _, c := range []net.Conn{c1, c2} {
		if got, err := roundTrip(c, "x", 5*time.Second); err != nil || got != "x" {
			t.Fatalf("first two conns: %q, %v", got, err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "accepting to pause", func() bool { return value(overflow) == 1 })
	c3 := dial(t, l.Addr()) // completes in the kernel backlog
	if _, err := roundTrip(c3, "y", 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("conn 3 served while 2 of 2 are open: err %v", err)
	}
	if n := l.ActiveConns(); n != 2 {
		t.Fatalf("ActiveConns = %d; want 2", n)
	}
	c1.Close()
	c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 1)
	if _, err := io.ReadFull(c3, got); err != nil || string(got) != "y" {
		t.Fatalf("conn 3 after a slot freed: %q, %v", got, err)
	}
	// Paused again (2 of 2): one more count for the second pause, not one per attempt.
	testutil.Eventually(t, 5*time.Second, "second pause", func() bool { return value(overflow) == 2 })
}

func TestHandlerPanicClosesOnlyThatConn(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "panic", nil)
	pool := cfg.Conn.Pool
	cfg.Log = zap.NewNop() // the stack trace is expected
	cfg.Handler = handlerFunc(func(ctx context.Context, c *Conn) {
		c.ReadLoop(func(b *buffer.IoBuffer) error {
			if b.Bytes()[0] == 'p' {
				panic("handler bug")
			}
			out := pool.NewBuffer(0)
			out.Write(b.Bytes())
			b.Drain(b.Len())
			return c.Write(out)
		})
	})
	l := serve(t, cfg)
	good, bad := dial(t, l.Addr()), dial(t, l.Addr())
	if got, err := roundTrip(good, "a", 5*time.Second); err != nil || got != "a" {
		t.Fatalf("good conn: %q, %v", got, err)
	}
	bad.Write([]byte("p"))
	if err := waitClosedByPeer(bad, 5*time.Second); err != nil {
		t.Fatalf("panicking conn not closed: %v", err)
	}
	if got, err := roundTrip(good, "b", 5*time.Second); err != nil || got != "b" {
		t.Fatalf("good conn after the panic: %q, %v", got, err)
	}
	if got, err := roundTrip(dial(t, l.Addr()), "c", 5*time.Second); err != nil || got != "c" {
		t.Fatalf("new conn after the panic: %q, %v", got, err)
	}
	if n := value(cfg.Metrics.ConnPanics.WithLabelValues("panic")); n != 1 {
		t.Errorf("connection_panics_total = %v; want 1", n)
	}
	testutil.Eventually(t, 5*time.Second, "close counted as error", func() bool { return closes(cfg.Metrics, "panic", CloseError) == 1 })
}

// TestIdleTimeout is timing-based, so it does not run in parallel with other tests and
// leaves the active connection a wide margin (it is quiet for at most 50 ms of a 400 ms
// timeout).
func TestIdleTimeout(t *testing.T) {
	const idle = 400 * time.Millisecond
	cfg := testConfig(t, "idle", nil)
	cfg.Conn.IdleTimeout = idle
	reasons := make(chan CloseReason, 2)
	pool := cfg.Conn.Pool
	cfg.Handler = handlerFunc(func(ctx context.Context, c *Conn) {
		c.ReadLoop(func(b *buffer.IoBuffer) error {
			out := pool.NewBuffer(0)
			out.Write(b.Bytes())
			b.Drain(b.Len())
			return c.Write(out)
		})
		reasons <- c.CloseReason()
	})
	l := serve(t, cfg)

	quiet, busy := dial(t, l.Addr()), dial(t, l.Addr())
	start := time.Now()
	// busy sends every 50 ms for 3 idle periods; quiet sends nothing.
	for time.Since(start) < 3*idle {
		if got, err := roundTrip(busy, "k", 5*time.Second); err != nil || got != "k" {
			t.Fatalf("active conn closed after %v: %q, %v", time.Since(start), got, err)
		}
		time.Sleep(50 * time.Millisecond) // pacing the traffic, not an assertion
	}
	if err := waitClosedByPeer(quiet, 5*time.Second); err != nil {
		t.Fatalf("idle conn still open: %v", err)
	}
	select {
	case r := <-reasons:
		if r != CloseIdleTimeout {
			t.Fatalf("idle conn closed with %q; want idle_timeout", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler did not return")
	}
	if got, err := roundTrip(busy, "z", 5*time.Second); err != nil || got != "z" {
		t.Fatalf("active conn: %q, %v", got, err)
	}
	testutil.Eventually(t, 5*time.Second, "idle close counted", func() bool { return closes(cfg.Metrics, "idle", CloseIdleTimeout) == 1 })
}

func TestServeReturnsAndDrainWaitsThenForceCloses(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "drain", nil)
	cfg.Handler = handlerFunc(func(ctx context.Context, c *Conn) {
		// Finishes when the client says bye; otherwise only when closed.
		c.ReadLoop(func(b *buffer.IoBuffer) error {
			if strings.Contains(string(b.Bytes()), "bye") {
				return io.EOF
			}
			return nil
		})
	})
	l, cancel, errc := serveTest(t, cfg)
	polite, stubborn := dial(t, l.Addr()), dial(t, l.Addr())
	testutil.Eventually(t, 5*time.Second, "two conns", func() bool { return l.ActiveConns() == 2 })

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after ctx ended")
	}
	if _, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		t.Error("socket still accepting after Serve returned")
	}
	if n := l.ActiveConns(); n != 2 {
		t.Fatalf("ActiveConns after Serve returned = %d; want 2 (open conns keep running)", n)
	}

	// Drain waits for the polite conn, then force-closes the stubborn one at its deadline.
	dctx, dcancel := context.WithCancel(context.Background())
	drained := make(chan struct{})
	go func() { l.Drain(dctx); close(drained) }()
	polite.Write([]byte("bye"))
	testutil.Eventually(t, 5*time.Second, "polite conn done", func() bool { return l.ActiveConns() == 1 })
	select {
	case <-drained:
		t.Fatal("Drain returned while a conn is open and its ctx is live")
	default:
	}
	dcancel()
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return after its ctx ended")
	}
	if err := waitClosedByPeer(stubborn, 5*time.Second); err != nil {
		t.Fatalf("stubborn conn not closed: %v", err)
	}
	if n := closes(cfg.Metrics, "drain", CloseDrain); n != 1 {
		t.Errorf("closes{reason=drain} = %v; want 1", n)
	}
	if n := l.ActiveConns(); n != 0 {
		t.Errorf("ActiveConns = %d; want 0", n)
	}
}

// TestDrainClosesConnectionsBetweenRequests: Drain closes at once, with reason drain, a
// connection whose handler marked it between requests (SetIdle), and waits for one in the
// middle of a request; a handler that acts on bytes it read later first asks Busy.
func TestDrainClosesConnectionsBetweenRequests(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "drain_idle", nil)
	refused, started := make(chan struct{}, 2), make(chan struct{}, 1)
	pool := buffer.NewPool()
	cfg.Handler = handlerFunc(func(ctx context.Context, c *Conn) {
		// A line is a request, answered at once; "slow" is answered when "go" follows.
		c.SetIdle()
		c.ReadLoop(func(b *buffer.IoBuffer) error {
			if !c.Busy() {
				refused <- struct{}{}
				return io.EOF
			}
			line := string(b.Bytes())
			if line == "slow\n" {
				started <- struct{}{}
			}
			if !strings.HasSuffix(line, "\n") || line == "slow\n" {
				return nil // the request is not complete
			}
			b.Drain(b.Len())
			buf := pool.NewBuffer(8)
			buf.Write([]byte("ok\n"))
			if err := c.Write(buf); err != nil {
				return err
			}
			c.SetIdle()
			return nil
		})
	})
	l, cancel, errc := serveTest(t, cfg)
	idle, busy := dial(t, l.Addr()), dial(t, l.Addr())
	br := bufio.NewReader(idle)
	idle.Write([]byte("one\n"))
	if line, err := br.ReadString('\n'); err != nil || line != "ok\n" {
		t.Fatalf("first request: %q %v", line, err)
	}
	busy.Write([]byte("slow\n"))
	select {
	case <-started: // the handler is in the middle of a request
	case <-time.After(5 * time.Second):
		t.Fatal("the slow request did not arrive")
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	drained := make(chan struct{})
	go func() { l.Drain(context.Background()); close(drained) }()
	if err := waitClosedByPeer(idle, 5*time.Second); err != nil {
		t.Fatalf("the connection between requests was not closed by the drain: %v", err)
	}
	select {
	case <-drained:
		t.Fatal("Drain returned while a request is in progress")
	case <-time.After(50 * time.Millisecond):
	}
	busy.Write([]byte("go\n"))
	if line, err := bufio.NewReader(busy).ReadString('\n'); err != nil || line != "ok\n" {
		t.Fatalf("the request in progress during the drain: %q %v", line, err)
	}
	busy.Close()
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return after the last connection ended")
	}
	if n := closes(cfg.Metrics, "drain_idle", CloseDrain); n != 1 {
		t.Errorf("closes{reason=drain} = %v; want 1 (the idle connection)", n)
	}
	if len(refused) != 0 {
		t.Error("a handler was refused (Busy false) though no bytes came after the drain closed it")
	}
}

func TestVirtualListener(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, "virtual", echo(buffer.NewPool()))
	cfg.BindPort, cfg.Address = false, "0.0.0.0:9080"
	l, err := NewListener(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if l.Addr() != nil {
		t.Errorf("virtual Addr() = %v; want nil", l.Addr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Serve(ctx) }()
	select {
	case err := <-errc:
		t.Fatalf("virtual Serve returned early: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// goroutineID is the running goroutine's number, from its stack header.
func goroutineID() uint64 {
	var buf [64]byte
	s := strings.TrimPrefix(string(buf[:runtime.Stack(buf[:], false)]), "goroutine ")
	id, _ := strconv.ParseUint(s[:strings.IndexByte(s, ' ')], 10, 64)
	return id
}

// TestConnGoroutinesReused: a connection goroutine that finished serves the next
// connection instead of exiting; the handler's context is the connection's own
// (OwnsContext). At most maxIdleWorkers goroutines wait, and none once the listener closed.
func TestConnGoroutinesReused(t *testing.T) {
	t.Parallel()
	type seen struct {
		id   uint64
		owns bool
	}
	served := make(chan seen, 1)
	cfg := testConfig(t, "reuse", handlerFunc(func(ctx context.Context, c *Conn) {
		served <- seen{goroutineID(), c.OwnsContext(ctx) && !c.OwnsContext(context.Background())}
	}))
	l, cancel, errc := serveTest(t, cfg)
	ids := map[uint64]bool{}
	for i := range 10 {
		c := dial(t, l.Addr())
		s := <-served
		ids[s.id] = true
		if !s.owns {
			t.Errorf("conn %d: OwnsContext(handler's ctx) = false", i)
		}
		if err := waitClosedByPeer(c, 5*time.Second); err != nil {
			t.Fatalf("conn %d not closed: %v", i, err)
		}
		testutil.Eventually(t, 5*time.Second, "the goroutine to wait for work", func() bool { return l.workers.idle.Load() == 1 })
	}
	// One goroutine served them all (two if the runtime ran the accept before the
	// finished goroutine got to wait).
	if len(ids) > 2 {
		t.Errorf("10 sequential connections served by %d goroutines, want 1", len(ids))
	}

	// A burst above the bound: the extra goroutines exit once their connections end.
	release := make(chan struct{})
	var started sync.WaitGroup
	const burst = maxIdleWorkers + 16
	started.Add(burst)
	cfgBurst := testConfig(t, "reuse-burst", handlerFunc(func(ctx context.Context, c *Conn) {
		started.Done()
		<-release
	}))
	lb, err := NewListener(cfgBurst)
	if err != nil {
		t.Fatal(err)
	}
	startServing(t, lb)
	for range burst {
		dial(t, lb.Addr())
	}
	started.Wait()
	close(release)
	testutil.Eventually(t, 5*time.Second, "idle goroutines at the bound", func() bool {
		return lb.workers.idle.Load() == maxIdleWorkers && lb.ActiveConns() == 0
	})

	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "idle goroutines to exit after close", func() bool { return l.workers.idle.Load() == 0 })
}

// TestOverloadPausesAccepting: while Overloaded reports true the listener accepts
// nothing (a client's connection waits in the kernel backlog, unserved), counting the
// pause once; once it reports false the waiting connection is served. On goroutines and
// on an event loop.
func TestOverloadPausesAccepting(t *testing.T) {
	for _, loops := range []bool{false, true} {
		t.Run(map[bool]string{false: "goroutines", true: "loops"}[loops], func(t *testing.T) {
			var over atomic.Bool
			var cfg ListenerConfig
			if loops {
				cfg, _ = loopConfig(t, "over", 1)
			} else {
				cfg = testConfig(t, "over", nil)
				cfg.Handler = echo(cfg.Conn.Pool)
			}
			cfg.Overloaded = over.Load
			l := serve(t, cfg)
			pauses := cfg.Metrics.AcceptOverload.WithLabelValues("over")
			c1 := dial(t, l.Addr())
			if got, err := roundTrip(c1, "x", 5*time.Second); err != nil || got != "x" {
				t.Fatalf("before overload: %q, %v", got, err)
			}
			over.Store(true)        // seen at the next accept: no wait needed
			c2 := dial(t, l.Addr()) // completes in the kernel backlog
			if _, err := roundTrip(c2, "y", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("a connection was served while overloaded: err %v", err)
			}
			if got, err := roundTrip(c1, "z", 5*time.Second); err != nil || got != "z" {
				t.Fatalf("an open connection stopped being served while overloaded: %q, %v", got, err)
			}
			if n := value(pauses); n != 1 {
				t.Fatalf("overload pauses = %v, want 1 (one per pause, not per retry)", n)
			}
			over.Store(false)
			c2.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, 1)
			if _, err := io.ReadFull(c2, got); err != nil || string(got) != "y" {
				t.Fatalf("the waiting connection after the overload ended: %q, %v", got, err)
			}
		})
	}
}

//go:build linux

package cluster_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// rawConnect connects a non-blocking socket to ap as an event loop does: connect, poll
// for writability up to timeout, read SO_ERROR. It returns the socket (closed at cleanup)
// or the error, and whether the timeout expired.
func rawConnect(t *testing.T, ap netip.AddrPort, timeout time.Duration) (fd int, timedOut bool, err error) {
	t.Helper()
	if !ap.Addr().Is4() {
		t.Fatalf("rawConnect: %v is not IPv4", ap)
	}
	fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	err = unix.Connect(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())})
	if err == nil {
		return fd, false, nil
	}
	if !errors.Is(err, unix.EINPROGRESS) {
		return -1, false, &net.OpError{Op: "connect", Net: "tcp", Err: err}
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return -1, true, nil
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			continue // the deadline check above ends the wait
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			t.Fatal(err)
		}
		if soErr != 0 {
			return -1, false, &net.OpError{Op: "connect", Net: "tcp", Err: unix.Errno(soErr)}
		}
		return fd, false, nil
	}
}

// runAttempts drives a through its attempts with rawConnect, as an event loop would, and
// returns the connected host and its done func, or Next's error (a then abandoned).
func runAttempts(t *testing.T, a *cluster.Attempts) (*cluster.Host, func(lb.DoneInfo), error) {
	t.Helper()
	for range 64 {
		h, ap, err := a.Next()
		if err != nil {
			a.Abandon()
			return nil, nil, err
		}
		if h.Addr() != ap.String() {
			t.Fatalf("Next returned %s with address %v", h.Addr(), ap)
		}
		if _, timedOut, err := rawConnect(t, ap, a.ConnectTimeout()); err != nil || timedOut {
			a.Failed(err, timedOut, false)
			continue
		}
		h, done := a.Connected()
		return h, done, nil
	}
	t.Fatal("Next kept returning hosts")
	return nil, nil, nil
}

// applied is a new Manager with options o and cfgs applied, and its clusters in cfgs' order.
func applied(t *testing.T, o cluster.Options, cfgs ...config.Cluster) (*cluster.Manager, *metrics.Set, []*cluster.Cluster) {
	t.Helper()
	m, mt := newManager(t, o)
	if err := m.Apply(cfgs); err != nil {
		t.Fatal(err)
	}
	cs := make([]*cluster.Cluster, len(cfgs))
	for i, cfg := range cfgs {
		cs[i] = get(t, m, cfg.Name)
	}
	return m, mt, cs
}

func TestAttemptsConnect(t *testing.T) {
	live := liveServer(t)
	m, mt := newManager(t, cluster.Options{})
	cfg := simple("a", "", live)
	cfg.ConnectTimeout = dur(750 * time.Millisecond)
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "a")
	var a cluster.Attempts
	if err := c.StartAttempts(&a, &lb.Request{}); err != nil {
		t.Fatal(err)
	}
	if a.ConnectTimeout() != 750*time.Millisecond {
		t.Fatalf("ConnectTimeout = %v; want the cluster's 750ms", a.ConnectTimeout())
	}
	if n, _ := c.Usage(cluster.MaxConnections); n != 1 {
		t.Fatalf("max_connections in use while dialling = %d; want 1", n)
	}
	h, done, err := runAttempts(t, &a)
	if err != nil {
		t.Fatal(err)
	}
	if h.Addr() != live || a.Err() != nil {
		t.Fatalf("connected to %s (attempt errors %v); want %s without failures", h.Addr(), a.Err(), live)
	}
	if h.Stats().Conns() != 1 || h.Stats().Active() != 1 {
		t.Fatalf("host conns %d active %d while open; want 1, 1", h.Stats().Conns(), h.Stats().Active())
	}
	if v := value(mt.UpstreamCxActive.WithLabelValues("a")); v != 1 {
		t.Fatalf("upstream_connections_active = %v; want 1", v)
	}
	a.Abandon() // a no-op after Connected: the connection keeps its unit
	if n, _ := c.Usage(cluster.MaxConnections); n != 1 {
		t.Fatalf("max_connections in use after Connected and Abandon = %d; want 1", n)
	}
	done(lb.DoneInfo{})
	if n, _ := c.Usage(cluster.MaxConnections); n != 0 {
		t.Fatalf("max_connections in use after done = %d", n)
	}
	if h.Stats().Conns() != 0 || h.Stats().Active() != 0 {
		t.Fatalf("host conns %d active %d after done", h.Stats().Conns(), h.Stats().Active())
	}
	if v := value(mt.UpstreamCxTotal.WithLabelValues("a")); v != 1 {
		t.Fatalf("upstream_connections_total = %v; want 1", v)
	}
	if v := value(mt.UpstreamCxActive.WithLabelValues("a")); v != 0 {
		t.Fatalf("upstream_connections_active = %v after done", v)
	}
}

// A refused host is followed by another one; the failure is counted, logged and fed to
// outlier detection (threshold 1: it ejects the host), and stays in Err.
func TestAttemptsSkipRefusedHost(t *testing.T) {
	dead, live := deadAddr(t), liveServer(t)
	m, mt := newManager(t, cluster.Options{})
	od := &config.OutlierDetection{Consecutive5xx: 1, BaseEjectionTime: dur(time.Minute)}
	if err := m.Apply([]config.Cluster{withOutlier(simple("r", lb.RoundRobin, dead, live), od)}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "r")
	for i := range 2 { // round robin starts on the dead host in one of two dials
		var a cluster.Attempts
		if err := c.StartAttempts(&a, &lb.Request{}); err != nil {
			t.Fatal(err)
		}
		h, done, err := runAttempts(t, &a)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if h.Addr() != live {
			t.Fatalf("dial %d connected to %s; want %s", i, h.Addr(), live)
		}
		done(lb.DoneInfo{})
		if a.Err() == nil {
			continue
		}
		var de *cluster.DialError
		if !errors.As(a.Err(), &de) || len(de.Attempts) != 1 || !strings.Contains(de.Attempts[0].Error(), dead) ||
			!errors.Is(a.Err(), unix.ECONNREFUSED) {
			t.Fatalf("attempt errors %v; want one refusal naming %s", a.Err(), dead)
		}
		if v := value(mt.UpstreamCxConnectFail.WithLabelValues("r", dead)); v != 1 {
			t.Fatalf("connect failures of %s = %v; want 1", dead, v)
		}
		if hh := hostByAddr(t, c, dead).Health(); !hh.Ejected {
			t.Fatalf("dead host health %+v; want ejected after one failure (threshold 1)", hh)
		}
		if n, _ := c.Usage(cluster.MaxConnections); n != 0 {
			t.Fatalf("max_connections in use after done = %d", n)
		}
		return
	}
	t.Fatal("the dead host was never tried first")
}

// A failure the caller caused (callerGaveUp) is counted but says nothing about the host.
func TestAttemptsCallerGaveUp(t *testing.T) {
	dead := deadAddr(t)
	m, mt := newManager(t, cluster.Options{})
	od := &config.OutlierDetection{Consecutive5xx: 1, BaseEjectionTime: dur(time.Minute)}
	if err := m.Apply([]config.Cluster{withOutlier(simple("g", "", dead, "127.0.0.1:1"), od)}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "g")
	var a cluster.Attempts
	if err := c.StartAttempts(&a, &lb.Request{}); err != nil {
		t.Fatal(err)
	}
	h, _, err := a.Next()
	if err != nil {
		t.Fatal(err)
	}
	a.Failed(context.Canceled, false, true)
	a.Abandon()
	if !errors.Is(a.Err(), context.Canceled) || !strings.Contains(a.Err().Error(), h.Addr()+": context canceled") {
		t.Fatalf("Err = %v; want the cancellation, prefixed with %s", a.Err(), h.Addr())
	}
	if v := value(mt.UpstreamCxConnectFail.WithLabelValues("g", h.Addr())); v != 1 {
		t.Fatalf("connect failures = %v; want 1", v)
	}
	if !h.Healthy() {
		t.Fatalf("host %s ejected by a failure the caller caused: %+v", h.Addr(), h.Health())
	}
	if n, _ := c.Usage(cluster.MaxConnections); n != 0 {
		t.Fatalf("max_connections in use after Abandon = %d", n)
	}
}

func TestAttemptsMaxConnectAttempts(t *testing.T) {
	dead := []string{deadAddr(t), deadAddr(t), deadAddr(t), deadAddr(t)}
	cx, cy := simple("x", lb.RoundRobin, dead...), simple("y", lb.Random, dead[:2]...)
	cx.MaxConnectAttempts, cy.MaxConnectAttempts = 3, 3
	_, mt, cs := applied(t, cluster.Options{}, cx, cy)
	x, y := cs[0], cs[1]
	var a cluster.Attempts
	if err := x.StartAttempts(&a, &lb.Request{}); err != nil {
		t.Fatal(err)
	}
	_, _, err := runAttempts(t, &a)
	var de *cluster.DialError
	if !errors.As(err, &de) || len(de.Attempts) != 3 || de.NoMoreHosts {
		t.Fatalf("err = %v; want a DialError with 3 attempts", err)
	}
	seen := map[string]bool{}
	for _, e := range de.Attempts {
		for _, d := range dead {
			if strings.Contains(e.Error(), d) {
				seen[d] = true
			}
		}
	}
	if len(seen) != 3 || !strings.Contains(err.Error(), `cluster "x"`) || !strings.Contains(err.Error(), "after 3 attempt(s)") {
		t.Fatalf("error %q: want cluster x, 3 attempts on 3 distinct hosts (found %d)", err, len(seen))
	}
	if err.Error() != a.Err().Error() {
		t.Fatalf("Next's error %q differs from Err %q", err, a.Err())
	}
	var total float64
	for _, d := range dead {
		total += value(mt.UpstreamCxConnectFail.WithLabelValues("x", d))
	}
	if total != 3 {
		t.Fatalf("connect failures counted = %v; want 3", total)
	}
	if n, _ := x.Usage(cluster.MaxConnections); n != 0 {
		t.Fatalf("max_connections in use after Abandon = %d", n)
	}

	// Two hosts: each is tried once, then no other healthy host is left.
	if err := y.StartAttempts(&a, &lb.Request{}); err != nil {
		t.Fatal(err)
	}
	_, _, err = runAttempts(t, &a)
	if !errors.As(err, &de) || len(de.Attempts) != 2 || !de.NoMoreHosts || !strings.Contains(err.Error(), "no other healthy host") {
		t.Fatalf("err = %v; want 2 attempts then no other host", err)
	}
}

// connect_timeout expiring (timedOut, no socket error) gives Dial's connect_timeout error.
func TestAttemptsConnectTimeout(t *testing.T) {
	cfg := simple("t", "", fullBacklog(t))
	cfg.ConnectTimeout, cfg.MaxConnectAttempts = dur(100*time.Millisecond), 1
	_, _, cs := applied(t, cluster.Options{}, cfg)
	var a cluster.Attempts
	if err := cs[0].StartAttempts(&a, &lb.Request{}); err != nil {
		t.Fatal(err)
	}
	defer a.Abandon()
	h, ap, err := a.Next()
	if err != nil {
		t.Fatal(err)
	}
	if _, timedOut, err := rawConnect(t, ap, a.ConnectTimeout()); !timedOut {
		t.Skipf("connect to a full backlog did not hang (err %v); cannot test connect_timeout here", err)
	}
	a.Failed(nil, true, false)
	err = a.Err()
	want := h.Addr() + ": connect_timeout 100ms"
	if !strings.Contains(err.Error(), want) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want %q wrapping context.DeadlineExceeded", err, want)
	}
	if _, _, err := a.Next(); !errors.As(err, new(*cluster.DialError)) {
		t.Fatalf("Next after max_connect_attempts 1 = %v; want the DialError", err)
	}
}

func TestAttemptsOverflow(t *testing.T) {
	live := liveServer(t)
	m, mt := newManager(t, cluster.Options{})
	if err := m.Apply([]config.Cluster{withBreakers(simple("b", "", live), config.CircuitBreaker{MaxConnections: new(uint32(1))})}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "b")
	var a1, a2 cluster.Attempts
	if err := c.StartAttempts(&a1, &lb.Request{}); err != nil {
		t.Fatal(err)
	}
	err := c.StartAttempts(&a2, &lb.Request{})
	if !errors.Is(err, cluster.ErrOverflow) || !strings.Contains(err.Error(), "max_connections 1") {
		t.Fatalf("second StartAttempts = %v; want ErrOverflow naming max_connections 1", err)
	}
	if _, _, _, err := c.Dial(t.Context(), &lb.Request{}); !errors.Is(err, cluster.ErrOverflow) {
		t.Fatalf("Dial while Attempts hold the unit = %v; want ErrOverflow", err)
	}
	if v := value(mt.UpstreamOverflow.WithLabelValues("b", "connections")); v != 2 {
		t.Fatalf("overflow counter = %v; want 2", v)
	}
	a1.Abandon() // gives the unit back
	if err := c.StartAttempts(&a2, &lb.Request{}); err != nil {
		t.Fatalf("StartAttempts after Abandon: %v", err)
	}
	_, done, err := runAttempts(t, &a2)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartAttempts(&a1, &lb.Request{}); !errors.Is(err, cluster.ErrOverflow) {
		t.Fatalf("StartAttempts while a connection is open = %v; want ErrOverflow", err)
	}
	done(lb.DoneInfo{}) // the connection's end gives the unit back
	if err := c.StartAttempts(&a1, &lb.Request{}); err != nil {
		t.Fatalf("StartAttempts after done: %v", err)
	}
	a1.Abandon()
	if n, _ := c.Usage(cluster.MaxConnections); n != 0 {
		t.Fatalf("max_connections in use at the end = %d", n)
	}
}

// nowAndWait is a manager with two clusters on one live host: "now" (pick_timeout 0, a
// pick never waits) and "wait" (pick_timeout 10s).
func nowAndWait(t *testing.T) (live string, m *cluster.Manager, mt *metrics.Set) {
	t.Helper()
	live = liveServer(t)
	m, mt = newManager(t, cluster.Options{})
	now := simple("now", "", live)
	now.PickTimeout = dur(0)
	wait := simple("wait", "", live)
	wait.PickTimeout = dur(10 * time.Second)
	if err := m.Apply([]config.Cluster{now, wait}); err != nil {
		t.Fatal(err)
	}
	return live, m, mt
}

func TestAttemptsNoHealthyHost(t *testing.T) {
	live, m, mt := nowAndWait(t)

	// pick_timeout 0: the first Next fails at once.
	c := get(t, m, "now")
	c.SetHostHealth(live, false)
	var a cluster.Attempts
	if err := c.StartAttempts(&a, &lb.Request{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Next(); !errors.Is(err, cluster.ErrNoHealthyUpstream) || a.CanWait() {
		t.Fatalf("Next = %v, CanWait %v; want ErrNoHealthyUpstream, no wait", err, a.CanWait())
	}
	a.Abandon()
	if v := value(mt.UpstreamNoHealthy.WithLabelValues("now")); v != 1 {
		t.Fatalf("upstream_no_healthy_host_total = %v; want 1", v)
	}

	// pick_timeout 10s: Next fails without waiting, CanWait, and WaitPick waits.
	c = get(t, m, "wait")
	c.SetHostHealth(live, false)
	if err := c.StartAttempts(&a, &lb.Request{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, _, err := a.Next(); !errors.Is(err, cluster.ErrNoHealthyUpstream) || !a.CanWait() {
		t.Fatalf("Next = %v, CanWait %v; want ErrNoHealthyUpstream and CanWait", err, a.CanWait())
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Next took %v; it must not wait", took)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	err := a.WaitPick(ctx)
	cancel()
	if !errors.Is(err, cluster.ErrNoHealthyUpstream) || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) < 30*time.Millisecond {
		t.Fatalf("WaitPick with a 30ms ctx = %v after %v; want it to wait for the ctx", err, time.Since(start))
	}
	errc := make(chan error, 1)
	go func() { errc <- a.WaitPick(t.Context()) }()
	c.SetHostHealth(live, true)
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("WaitPick after the host came up: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitPick did not wake when the host came up")
	}
	h, done, err := runAttempts(t, &a)
	if err != nil || h.Addr() != live {
		t.Fatalf("after WaitPick: %v, %v; want a connection to %s", h, err, live)
	}
	done(lb.DoneInfo{})
	if n, _ := c.Usage(cluster.MaxConnections); n != 0 || h.Stats().Active() != 0 {
		t.Fatalf("in use after done: max_connections %d, host active %d", n, h.Stats().Active())
	}
}

// Clusters a raw connect cannot serve are refused, with nothing held.
func TestAttemptsNotRaw(t *testing.T) {
	live := liveServer(t)
	d := newPipeDialer()
	custom, _ := newManager(t, cluster.Options{Dial: d.Dial})
	if err := custom.Apply([]config.Cluster{simple("c", "", live)}); err != nil {
		t.Fatal(err)
	}
	m, _ := newManager(t, cluster.Options{})
	tlsCfg := simple("tls", "", live)
	tlsCfg.TLSContext = &config.TLSConfig{Status: true, InsecureSkip: true}
	_, port, _ := net.SplitHostPort(live)
	if err := m.Apply([]config.Cluster{tlsCfg, simple("named", "", "localhost:"+port), simple("raw", "", live)}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*cluster.Cluster{get(t, custom, "c"), get(t, m, "tls"), get(t, m, "named")} {
		var a cluster.Attempts
		if err := c.StartAttempts(&a, &lb.Request{}); err != cluster.ErrNotRaw {
			t.Fatalf("%s: StartAttempts = %v; want ErrNotRaw", c.Name(), err)
		}
		a.Abandon()
		if n, _ := c.Usage(cluster.MaxConnections); n != 0 {
			t.Fatalf("%s: max_connections in use after ErrNotRaw = %d", c.Name(), n)
		}
	}
	// Dial serves them all.
	for _, c := range []*cluster.Cluster{get(t, custom, "c"), get(t, m, "named")} {
		conn, _, done, err := c.Dial(t.Context(), &lb.Request{})
		if err != nil {
			t.Fatalf("%s: Dial: %v", c.Name(), err)
		}
		conn.Close()
		done(lb.DoneInfo{})
	}

	// A host given by name that appears after StartAttempts: Next refuses it.
	c := get(t, m, "raw")
	var a cluster.Attempts
	if err := c.StartAttempts(&a, &lb.Request{}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddOrUpdate(simple("raw", "", "localhost:"+port)); err != nil {
		t.Fatal(err)
	}
	if get(t, m, "raw") != c {
		t.Fatal("AddOrUpdate replaced the cluster")
	}
	if _, _, err := a.Next(); !errors.Is(err, cluster.ErrNotRaw) || !strings.Contains(err.Error(), "localhost:"+port) {
		t.Fatalf("Next on a named host = %v; want ErrNotRaw naming it", err)
	}
	a.Abandon()
	if n, _ := c.Usage(cluster.MaxConnections); n != 0 || c.Hosts()[0].Stats().Active() != 0 {
		t.Fatalf("in use after Abandon: max_connections %d, host active %d", n, c.Hosts()[0].Stats().Active())
	}
}

// Abandon returns an outstanding pick and the unit, once.
func TestAttemptsAbandonIdempotent(t *testing.T) {
	live := liveServer(t)
	m, _ := newManager(t, cluster.Options{})
	if err := m.Apply([]config.Cluster{simple("i", "", live)}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "i")
	var a cluster.Attempts
	a.Abandon() // never started: nothing to do
	if err := c.StartAttempts(&a, &lb.Request{}); err != nil {
		t.Fatal(err)
	}
	h, _, err := a.Next()
	if err != nil {
		t.Fatal(err)
	}
	if h.Stats().Active() != 1 {
		t.Fatalf("host active %d with a pick outstanding; want 1", h.Stats().Active())
	}
	for range 3 {
		a.Abandon()
		if n, _ := c.Usage(cluster.MaxConnections); n != 0 || h.Stats().Active() != 0 {
			t.Fatalf("after Abandon: max_connections %d, host active %d; want 0, 0", n, h.Stats().Active())
		}
	}
	if a.Err() != nil {
		t.Fatalf("Err = %v after no failed attempt", a.Err())
	}
	// The Attempts can start again.
	if err := c.StartAttempts(&a, &lb.Request{}); err != nil {
		t.Fatal(err)
	}
	a.Abandon()
}

func TestAttemptsDoNotAllocate(t *testing.T) {
	m, _ := newManager(t, cluster.Options{})
	if err := m.Apply([]config.Cluster{simple("z", lb.RoundRobin, "10.0.0.1:80", "10.0.0.2:80")}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "z")
	var a cluster.Attempts
	r := &lb.Request{}
	allocs := testing.AllocsPerRun(200, func() {
		if err := c.StartAttempts(&a, r); err != nil {
			panic(err)
		}
		if _, _, err := a.Next(); err != nil {
			panic(err)
		}
		_, done := a.Connected()
		done(lb.DoneInfo{})
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per StartAttempts+Next+Connected+done; want 0", allocs)
	}
	if n, _ := c.Usage(cluster.MaxConnections); n != 0 {
		t.Fatalf("max_connections in use = %d", n)
	}
}

func BenchmarkAttempts(b *testing.B) {
	m := cluster.NewManager(cluster.Options{})
	if err := m.Apply([]config.Cluster{simple("z", lb.RoundRobin, "10.0.0.1:80", "10.0.0.2:80")}); err != nil {
		b.Fatal(err)
	}
	c, _ := m.Get("z")
	r := &lb.Request{}
	b.ReportAllocs()
	for b.Loop() {
		var a cluster.Attempts
		if err := c.StartAttempts(&a, r); err != nil {
			b.Fatal(err)
		}
		if _, _, err := a.Next(); err != nil {
			b.Fatal(err)
		}
		_, done := a.Connected()
		done(lb.DoneInfo{})
	}
}

// PickNow never waits: with no host up it fails with ErrWouldWait when pick_timeout lets
// a pick wait (counting nothing), and as Pick does when it does not.
func TestPickNow(t *testing.T) {
	live, m, mt := nowAndWait(t)
	c := get(t, m, "wait")
	h, done, err := c.PickNow(&lb.Request{})
	if err != nil || h.Addr() != live {
		t.Fatalf("PickNow with the host up = %v, %v", h, err)
	}
	done(lb.DoneInfo{})
	c.SetHostHealth(live, false)
	start := time.Now()
	if _, _, err := c.PickNow(&lb.Request{}); !errors.Is(err, cluster.ErrWouldWait) || time.Since(start) > time.Second {
		t.Fatalf("PickNow with no host up, pick_timeout 10s = %v after %v; want ErrWouldWait at once", err, time.Since(start))
	}
	if v := value(mt.UpstreamNoHealthy.WithLabelValues("wait")); v != 0 {
		t.Fatalf("upstream_no_healthy_host_total = %v; want 0 (nothing failed yet)", v)
	}
	c = get(t, m, "now")
	c.SetHostHealth(live, false)
	if _, _, err := c.PickNow(&lb.Request{}); !errors.Is(err, cluster.ErrNoHealthyUpstream) {
		t.Fatalf("PickNow with no host up, pick_timeout 0 = %v; want ErrNoHealthyUpstream", err)
	}
}

// StartAttemptsHost's first attempt goes to the host given; after it fails the next
// attempt picks another one.
func TestStartAttemptsHost(t *testing.T) {
	live := liveServer(t)
	dead := deadAddr(t)
	m, _ := newManager(t, cluster.Options{})
	cfg := simple("h", "LB_ROUNDROBIN", live, dead)
	cfg.MaxConnectAttempts = 2
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "h")
	var first *cluster.Host
	for _, h := range c.Hosts() {
		if h.Addr() == dead {
			first = h
		}
	}
	for range 3 { // whatever the balancer's turn
		var a cluster.Attempts
		if err := c.StartAttemptsHost(&a, &lb.Request{}, first); err != nil {
			t.Fatal(err)
		}
		h, ap, err := a.Next()
		if err != nil || h != first || ap.String() != dead {
			t.Fatalf("first attempt = %v %v %v; want the given host %s", h, ap, err, dead)
		}
		a.Failed(errors.New("refused"), false, false)
		h, _, err = a.Next()
		if err != nil || h.Addr() != live {
			t.Fatalf("second attempt = %v %v; want %s", h, err, live)
		}
		a.Failed(errors.New("test"), false, true)
		a.Abandon()
	}
	if n, _ := c.Usage(cluster.MaxConnections); n != 0 {
		t.Fatalf("max_connections in use at the end = %d", n)
	}
}

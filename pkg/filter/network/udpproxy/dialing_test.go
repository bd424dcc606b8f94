package udpproxy_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/filter/network/udpproxy"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// localhostHost returns "localhost:port" for an upstream on 127.0.0.1:port. Go's resolver
// answers "localhost" from /etc/hosts (no DNS query); the test is skipped when the first
// address is not 127.0.0.1, which is where the dialer would send the datagrams.
func localhostHost(t *testing.T, up *udpServer) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", "localhost")
	if err != nil || len(ips) == 0 || ips[0].Unmap().String() != "127.0.0.1" {
		t.Skipf("localhost resolves to %v (%v), not 127.0.0.1 first", ips, err)
	}
	return net.JoinHostPort("localhost", strconv.Itoa(up.pc.LocalAddr().(*net.UDPAddr).Port))
}

// heldDial is a dialer whose dials, while hold is set, wait until release is closed (or
// their context ends), then fail with fail if set, else dial for real.
type heldDial struct {
	hold    atomic.Bool
	fail    atomic.Pointer[error]
	calls   atomic.Int32
	entered chan string
	release chan struct{}
	once    sync.Once
}

func newHeldDial(t *testing.T) *heldDial {
	d := &heldDial{entered: make(chan string, 64), release: make(chan struct{})}
	t.Cleanup(d.open)
	return d
}

func (d *heldDial) open() { d.once.Do(func() { close(d.release) }) }

func (d *heldDial) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.calls.Add(1)
	if d.hold.Load() {
		select {
		case d.entered <- addr:
		default: // nobody waits for so many
		}
		select {
		case <-d.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := d.fail.Load(); err != nil {
		return nil, *err
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func (d *heldDial) setup(f *udpproxy.Filter) { f.SetDial(d.dial) }

// waitEntered waits for a held dial to start.
func (d *heldDial) waitEntered(t *testing.T) string {
	t.Helper()
	select {
	case a := <-d.entered:
		return a
	case <-time.After(testTimeout):
		t.Fatal("no dial started")
		return ""
	}
}

// TestNamedHostDialDoesNotHoldReadLoop: a cluster host given by name is dialled off the
// listener's read loop. While a new client's dial is held, an existing client's datagrams
// are still forwarded and answered; once the dial ends, the datagrams the new client sent
// meanwhile go out in order.
func TestNamedHostDialDoesNotHoldReadLoop(t *testing.T) {
	up := startUDPServer(t, "", echo)
	d := newHeldDial(t)
	e := newEnvWith(t, `{"cluster":"c1"}`, d.setup, cluster1(localhostHost(t, up)))
	a, b := e.client(), e.client()
	if got := string(exchange(t, a, []byte("a1"))); got != "echo:a1" {
		t.Fatalf("a got %q", got)
	}
	d.hold.Store(true)
	for i := 1; i <= 3; i++ {
		if _, err := b.Write(fmt.Appendf(nil, "b%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if addr := d.waitEntered(t); addr != e.clusterHost(t) {
		t.Fatalf("dialled %q", addr)
	}
	// b's dial is held: a's session must be served meanwhile. A few microseconds of work;
	// 5s is only a bound.
	if _, err := a.Write([]byte("a2")); err != nil {
		t.Fatal(err)
	}
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := a.Read(buf)
	if err != nil {
		t.Fatalf("client a's datagram was held while client b's session dialled: %v", err)
	}
	if got := string(buf[:n]); got != "echo:a2" {
		t.Fatalf("a got %q", got)
	}
	d.open()
	for i := 1; i <= 3; i++ {
		if got, want := string(recv(t, b)), fmt.Sprintf("echo:b%d", i); got != want {
			t.Fatalf("b got %q, want %q (queued datagrams in order)", got, want)
		}
	}
	if got := string(exchange(t, b, []byte("b4"))); got != "echo:b4" {
		t.Fatalf("b got %q after its dial", got)
	}
	if s, act := e.sessions(), e.active(); s != 2 || act != 2 {
		t.Errorf("sessions=%v active=%v, want 2 and 2", s, act)
	}
	if rx := e.counter(e.m.UDPProxyDatagrams, "rx"); rx != 6 {
		t.Errorf("rx = %v, want 6", rx)
	}
	if n := d.calls.Load(); n != 2 {
		t.Errorf("%d dials, want 2 (one per session)", n)
	}
}

// clusterHost is the address of c1's only host.
func (e *uenv) clusterHost(t *testing.T) string {
	t.Helper()
	cl, ok := e.clusters.Get("c1")
	if !ok || len(cl.Hosts()) != 1 {
		t.Fatal("c1 has not one host")
	}
	return cl.Hosts()[0].Addr()
}

// summary answers a datagram with its length and first byte, so large datagrams get small
// replies.
func summary(pc net.PacketConn, b []byte, from net.Addr) {
	first := byte('-')
	if len(b) > 0 {
		first = b[0]
	}
	pc.WriteTo(fmt.Appendf(nil, "%d:%c", len(b), first), from)
}

// TestDialingQueueBounded: a dialing session queues at most 64 datagrams and 256 KiB of
// payload; the rest are dropped and counted as session_dialing. When the dial ends the
// queued ones are sent, in order.
func TestDialingQueueBounded(t *testing.T) {
	up := startUDPServer(t, "", summary)
	// The queues reach the upstream as one burst of about 250 KB: more than a default
	// receive buffer holds.
	if err := up.pc.(*net.UDPConn).SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	d := newHeldDial(t)
	e := newEnvWith(t, `{"cluster":"c1"}`, d.setup, cluster1(localhostHost(t, up)))
	d.hold.Store(true)
	small, big := e.client(), e.client()
	// 70 small datagrams: 64 queued, 6 dropped.
	for i := range 70 {
		if _, err := small.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	d.waitEntered(t)
	// 8 of 40000 bytes: 6 queued (240000 bytes), 2 dropped (a 7th would pass 256 KiB).
	payload := make([]byte, 40000)
	for i := range 8 {
		payload[0] = 'A' + byte(i)
		if _, err := big.Write(payload); err != nil {
			t.Fatal(err)
		}
	}
	d.waitEntered(t)
	testutil.Eventually(t, testTimeout, "8 datagrams dropped as session_dialing", func() bool {
		return e.dropped("session_dialing") == 8
	})
	if rx := e.counter(e.m.UDPProxyDatagrams, "rx"); rx != 0 {
		t.Fatalf("rx = %v while dialing", rx)
	}
	d.open()
	for i := range 64 {
		if got, want := string(recv(t, small)), fmt.Sprintf("1:%c", byte(i)); got != want {
			t.Fatalf("small reply %d: %q, want %q", i, got, want)
		}
	}
	for i := range 6 {
		if got, want := string(recv(t, big)), fmt.Sprintf("40000:%c", 'A'+byte(i)); got != want {
			t.Fatalf("big reply %d: %q, want %q", i, got, want)
		}
	}
	if rx := e.counter(e.m.UDPProxyDatagrams, "rx"); rx != 70 {
		t.Errorf("rx = %v, want 70 (64 + 6 queued)", rx)
	}
	if got := e.dropped("session_dialing"); got != 8 {
		t.Errorf("session_dialing = %v, want 8", got)
	}
	if got := e.dropped("no_healthy_upstream"); got != 0 {
		t.Errorf("no_healthy_upstream = %v, want 0", got)
	}
}

// TestNamedHostDialFailure: a failed dial drops the datagrams queued meanwhile (counted as
// no_healthy_upstream), releases the pick and removes the session; the client's next
// datagram dials again. One dial per session, not one per datagram.
func TestNamedHostDialFailure(t *testing.T) {
	up := startUDPServer(t, "", echo)
	d := newHeldDial(t)
	e := newEnvWith(t, `{"cluster":"c1"}`, d.setup, cluster1(localhostHost(t, up)))
	a := e.client()
	barrier(t, a)
	d.hold.Store(true)
	fail := errors.New("resolver down")
	d.fail.Store(&fail)
	c := e.client()
	for range 3 {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	d.waitEntered(t)
	barrier(t, a) // the three are queued
	d.open()
	testutil.Eventually(t, testTimeout, "3 datagrams dropped", func() bool { return e.dropped("no_healthy_upstream") == 3 })
	testutil.Eventually(t, testTimeout, "the pick released", func() bool {
		cl, _ := e.clusters.Get("c1")
		return cl.Hosts()[0].Stats().Active() == 1 // a's
	})
	if s, act := e.sessions(), e.active(); s != 1 || act != 1 {
		t.Fatalf("sessions=%v active=%v after a failed dial, want a's only", s, act)
	}
	if !logged(e, "udp_proxy: dial upstream") {
		t.Error("the failed dial was not logged")
	}
	d.fail.Store(nil)
	if got := string(exchange(t, c, []byte("y"))); got != "echo:y" {
		t.Fatalf("after the failed dial: got %q", got)
	}
	if n := d.calls.Load(); n != 3 {
		t.Errorf("%d dials, want 3 (a's, the failed one, then one for the next datagram)", n)
	}
	if s := e.sessions(); s != 2 {
		t.Errorf("sessions = %v, want 2", s)
	}
}

// barrier exchanges a datagram on a client whose session is up: the listener's socket is
// read in order, so every datagram sent before it has been read once its reply is back.
func barrier(t *testing.T, a *net.UDPConn) {
	t.Helper()
	if got := string(exchange(t, a, []byte("sync"))); got != "echo:sync" {
		t.Fatalf("barrier client got %q", got)
	}
}

// TestDialingSessionCountsTowardMaxSessions: a session still dialing takes one of
// max_sessions, and a new client meanwhile is dropped (max_sessions) at once.
func TestDialingSessionCountsTowardMaxSessions(t *testing.T) {
	up := startUDPServer(t, "", echo)
	d := newHeldDial(t)
	e := newEnvWith(t, `{"cluster":"c1","max_sessions":1}`, d.setup, cluster1(localhostHost(t, up)))
	d.hold.Store(true)
	a, b := e.client(), e.client()
	if _, err := a.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	d.waitEntered(t)
	if _, err := b.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, testTimeout, "b dropped as max_sessions", func() bool { return e.dropped("max_sessions") == 1 })
	d.open()
	if got := string(recv(t, a)); got != "echo:a" {
		t.Fatalf("a got %q", got)
	}
	if n := d.calls.Load(); n != 1 {
		t.Errorf("%d dials, want 1", n)
	}
}

// TestCloseWhileDialing: closing the listener ends a session that is dialing: the dial's
// context ends, the queued datagrams are counted as dropped, the pick is released, and no
// goroutine is left (goleak).
func TestCloseWhileDialing(t *testing.T) {
	up := startUDPServer(t, "", echo)
	d := newHeldDial(t)
	e := newEnvWith(t, `{"cluster":"c1"}`, d.setup, cluster1(localhostHost(t, up)))
	a := e.client()
	barrier(t, a)
	d.hold.Store(true)
	c := e.client()
	for range 2 {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	d.waitEntered(t)
	barrier(t, a) // both are queued
	e.stop()      // the held dial waits for its context only
	if got := e.dropped("no_healthy_upstream"); got != 2 {
		t.Errorf("no_healthy_upstream = %v, want the 2 queued datagrams", got)
	}
	if act := e.active(); act != 0 {
		t.Errorf("active = %v", act)
	}
	cl, _ := e.clusters.Get("c1")
	if n := cl.Hosts()[0].Stats().Active(); n != 0 {
		t.Errorf("%d picks not done", n)
	}
}

// TestDialEndingAfterCloseIsClosed: a dial that ignores its context and returns a socket
// after the listener closed: that socket is closed, not leaked.
func TestDialEndingAfterCloseIsClosed(t *testing.T) {
	up := startUDPServer(t, "", echo)
	var (
		mu    sync.Mutex
		got   *net.UDPConn
		enter = make(chan struct{}, 1)
	)
	setup := func(f *udpproxy.Filter) {
		f.SetDial(func(ctx context.Context, network, addr string) (net.Conn, error) {
			enter <- struct{}{}
			<-ctx.Done() // the listener closed; the dial ends now anyway
			var nd net.Dialer
			c, err := nd.DialContext(context.Background(), network, addr)
			if err == nil {
				mu.Lock()
				got = c.(*net.UDPConn)
				mu.Unlock()
			}
			return c, err
		})
	}
	e := newEnvWith(t, `{"cluster":"c1"}`, setup, cluster1(localhostHost(t, up)))
	c := e.client()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-enter:
	case <-time.After(testTimeout):
		t.Fatal("no dial started")
	}
	e.stop()
	mu.Lock()
	uc := got
	mu.Unlock()
	if uc == nil {
		t.Fatal("the dial returned no socket")
	}
	if _, err := uc.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on the late dial's socket: %v, want it closed", err)
	}
	if act, s := e.active(), e.sessions(); act != 0 {
		t.Errorf("active = %v (sessions %v)", act, s)
	}
}

// TestNamedHostRealDialer: with the real dialer, a host given as localhost:port (resolved
// from /etc/hosts) carries datagrams both ways, its session expires when idle, and the
// next datagram starts a new one.
func TestNamedHostRealDialer(t *testing.T) {
	up := startUDPServer(t, "", echo)
	e := newEnv(t, `{"cluster":"c1","idle_timeout":"200ms"}`, cluster1(localhostHost(t, up)))
	c := e.client()
	for i := range 3 {
		msg := fmt.Sprintf("m%d", i)
		if got := string(exchange(t, c, []byte(msg))); got != "echo:"+msg {
			t.Fatalf("got %q", got)
		}
	}
	testutil.Eventually(t, testTimeout, "the session to expire", func() bool { return e.active() == 0 })
	if got := string(exchange(t, c, []byte("again"))); got != "echo:again" {
		t.Fatalf("after expiry got %q", got)
	}
	if s := e.sessions(); s != 2 {
		t.Errorf("sessions = %v, want 2", s)
	}
}

// TestDialingQueueListenerBound: the listener's dialing sessions together queue at most
// the listener's bound (here lowered to 100 KB): three clients of 40 KB datagrams get five
// queued in all, not six each; what is dropped is counted as session_dialing, and the
// bound is free again once the dials end.
func TestDialingQueueListenerBound(t *testing.T) {
	up := startUDPServer(t, "", summary)
	if err := up.pc.(*net.UDPConn).SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	d := newHeldDial(t)
	var f *udpproxy.Filter
	e := newEnvWith(t, `{"cluster":"c1"}`, func(ff *udpproxy.Filter) {
		f = ff
		d.setup(ff)
		ff.SetDialQueueMax(100_000)
	}, cluster1(localhostHost(t, up)))
	d.hold.Store(true)
	payload := make([]byte, 40000)
	clients := []*net.UDPConn{e.client(), e.client(), e.client()}
	for i, c := range clients {
		for range 2 {
			payload[0] = 'A' + byte(i)
			if _, err := c.Write(payload); err != nil {
				t.Fatal(err)
			}
		}
		d.waitEntered(t)
	}
	testutil.Eventually(t, testTimeout, "4 datagrams dropped as session_dialing", func() bool {
		return e.dropped("session_dialing") == 4
	})
	if q := f.DialQueued(); q != 80000 {
		t.Fatalf("queued %d bytes while dialing, want 80000 (two datagrams under the 100 KB bound)", q)
	}
	d.open()
	for range 2 {
		if got := string(recv(t, clients[0])); got != "40000:A" {
			t.Fatalf("first client's reply: %q", got)
		}
	}
	testutil.Eventually(t, testTimeout, "the queues to drain", func() bool { return f.DialQueued() == 0 })
	if got := e.dropped("session_dialing"); got != 4 {
		t.Errorf("session_dialing = %v, want 4", got)
	}
}

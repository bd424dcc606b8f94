package tcpproxy_test

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// The session's dial policy, in both modes: a refused host and a host whose connect hangs
// past connect_timeout are each skipped for the next host, counted as connect failures,
// and the client is served with no error.
func TestConnectSkipsRefusedAndHangingHosts(t *testing.T) { modes(t, testConnectSkipsBadHosts) }

func testConnectSkipsBadHosts(t *testing.T) {
	good := startUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	refused, hanging := closedAddr(t), testutil.FullBacklog(t)
	cl := simpleCluster("c1", "LB_ROUNDROBIN", refused, hanging, good.addr())
	cl.ConnectTimeout = dur(150 * time.Millisecond)
	e := newEnv(t, cl)
	ln, _ := e.proxy(lnName, `{"cluster":"c1"}`)
	for i := range 3 { // round robin starts each session on another host
		c := dial(t, ln)
		msg := []byte("hello " + itoa(i))
		c.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
			t.Fatalf("session %d: read %q, %v", i, got, err)
		}
		c.Close()
	}
	for _, h := range []string{refused, hanging} {
		if n := value(e.m.UpstreamCxConnectFail.WithLabelValues("c1", h)); n < 1 {
			t.Errorf("connect failures to %s = %v, want >= 1", h, n)
		}
	}
	idle(t, ln)
}

// hostDown serves a tcp_proxy to cluster c1, whose one host u is marked down and whose
// picks wait up to testTimeout for a host.
func hostDown(t *testing.T, u *upstream) (*env, *cluster.Cluster, *network.Listener) {
	t.Helper()
	cl := simpleCluster("c1", "", u.addr())
	cl.PickTimeout = dur(testTimeout)
	e := newEnv(t, cl)
	c1, _ := e.clusters.Get("c1")
	c1.SetHostHealth(u.addr(), false)
	ln, _ := e.proxy(lnName, `{"cluster":"c1"}`)
	return e, c1, ln
}

// With no healthy host, a session waits up to pick_timeout for one (on a goroutine, in loop
// mode); the client's bytes and its half-close, sent meanwhile, reach the host once it is
// up, in order, and the answer comes back. The larger request is more than a goroutine
// session's watch holds (leaveHold): part of it waits in the socket.
func TestWaitsForHealthyHost(t *testing.T) { modes(t, testWaitsForHealthyHost) }

func testWaitsForHealthyHost(t *testing.T) {
	for _, req := range [][]byte{[]byte("request"), randomBytes(t, 40<<10)} {
		u := startUpstream(t, func(c net.Conn) {
			c.SetDeadline(time.Now().Add(testTimeout))
			b, err := io.ReadAll(c) // until the client's FIN
			if err != nil {
				return
			}
			c.Write(append([]byte("got "), b...))
		})
		_, c1, ln := hostDown(t, u)
		c := dial(t, ln)
		c.Write(req)
		c.CloseWrite()
		time.Sleep(50 * time.Millisecond) // the session is waiting for a host by now (if not, it waits later)
		c1.SetHostHealth(u.addr(), true)
		b, err := readAll(c)
		if want := append([]byte("got "), req...); err != nil || !bytes.Equal(b, want) {
			t.Fatalf("client read %d bytes (%.20q), %v; want %d", len(b), b, err, len(want))
		}
		idle(t, ln)
	}
}

// A client that leaves (resets) while its session waits for a host ends the session at
// once, on an event loop and on a goroutine: the wait is cancelled, nothing is left open
// and no upstream connection is made. The wait (pick_timeout) is longer than the test
// waits for it. (A FIN is a half-close, not a leave: TestWaitsForHealthyHost.)
func TestClientLeavesWhileWaitingForHost(t *testing.T) {
	modes(t, func(t *testing.T) {
		u := startUpstream(t, func(c net.Conn) { io.Copy(io.Discard, c) })
		cl := simpleCluster("c1", "", u.addr())
		cl.PickTimeout = dur(10 * testTimeout)
		e := newEnv(t, cl)
		c1, _ := e.clusters.Get("c1")
		c1.SetHostHealth(u.addr(), false)
		ln, _ := e.proxy(lnName, `{"cluster":"c1"}`)
		for _, early := range []string{"", "bytes sent first"} {
			c := dial(t, ln)
			if early != "" {
				c.Write([]byte(early))
			}
			testutil.Eventually(t, testTimeout, "the session to start", func() bool { return ln.ActiveConns() == 1 })
			c.SetLinger(0)
			c.Close() // RST
			idle(t, ln)
		}
		if n := u.Conns.Load(); n != 0 {
			t.Fatalf("the upstream got %d connections from sessions whose clients left", n)
		}
	})
}

// The filter's own max_connect_attempts (MOSN's tcp_proxy field) overrides the cluster's:
// with 1, a session whose pick is a refused host fails instead of trying the next host.
func TestFilterMaxConnectAttempts(t *testing.T) { modes(t, testFilterMaxConnectAttempts) }

func testFilterMaxConnectAttempts(t *testing.T) {
	good := startUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	refused := closedAddr(t)
	e := newEnv(t, simpleCluster("c1", "LB_ROUNDROBIN", refused, good.addr()))
	ln, _ := e.proxy(lnName, `{"cluster":"c1","max_connect_attempts":1}`)
	failed, served := 0, 0
	for range 4 { // round robin: two sessions start on each host
		c := dial(t, ln)
		c.Write([]byte("x"))
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			failed++
		} else {
			served++
		}
		c.Close()
	}
	if failed != 2 || served != 2 {
		t.Fatalf("%d sessions failed and %d served, want 2 and 2 (one attempt each)", failed, served)
	}
	e.waitCloses(lnName, "upstream_connect_failed", 2)
}

// Every way a session ends gives its descriptors back (ROBUSTNESS 44): clean close both
// ways, bulk (spliced), client reset, upstream reset, refused connect, idle timeout and a
// drain; afterwards the process holds the sockets it held before (the listener's and the
// upstreams' listening sockets), and at most the pipes a loop keeps for reuse.
func TestSessionsLeakNoDescriptors(t *testing.T) { modes(t, testSessionsLeakNoDescriptors) }

func testSessionsLeakNoDescriptors(t *testing.T) {
	const size = 512 << 10
	payload := randomBytes(t, size)
	echo := startUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	resetter := startUpstream(t, func(c net.Conn) {
		c.Read(make([]byte, 1))
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	silent := startUpstream(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	refused := closedAddr(t)
	idleCl := simpleCluster("silent", "", silent.addr())
	e := newEnv(t, simpleCluster("echo", "", echo.addr()), simpleCluster("reset", "", resetter.addr()),
		simpleCluster("refused", "", refused), idleCl)
	lnEcho, _ := e.proxy("echo", `{"cluster":"echo"}`)
	lnReset, _ := e.proxy("reset", `{"cluster":"reset"}`)
	lnRefused, _ := e.proxy("refused", `{"cluster":"refused"}`)
	lnIdle, _ := e.proxy("idle", `{"cluster":"silent","idle_timeout":"100ms"}`)
	lnDrain, _ := e.proxy("drain", `{"cluster":"silent"}`)
	lns := []*network.Listener{lnEcho, lnReset, lnRefused, lnIdle, lnDrain}
	sockets0, pipes0 := openFDs(t)

	for range 4 { // clean exchanges, one of them bulk
		c := dial(t, lnEcho)
		c.Write([]byte("hi"))
		io.ReadFull(c, make([]byte, 2))
		c.CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()
	}
	bulk := dial(t, lnEcho)
	go func() { bulk.Write(payload); bulk.CloseWrite() }()
	if n, _ := io.Copy(io.Discard, bulk); n != size {
		t.Fatalf("bulk echo: %d bytes back, want %d", n, size)
	}
	bulk.Close()
	cr := dial(t, lnEcho) // client reset
	cr.Write([]byte("x"))
	io.ReadFull(cr, make([]byte, 1))
	cr.SetLinger(0)
	cr.Close()
	ur := dial(t, lnReset) // upstream reset
	ur.Write([]byte("x"))
	readAll(ur)
	ur.Close()
	rf := dial(t, lnRefused) // connect refused
	readAll(rf)
	rf.Close()
	it := dial(t, lnIdle) // idle timeout
	it.Write([]byte("x"))
	readAll(it)
	it.Close()
	for _, ln := range lns[:4] {
		idle(t, ln)
	}
	dr := dial(t, lnDrain) // still open at the drain
	dr.Write([]byte("x"))
	testutil.Eventually(t, testTimeout, "the drain listener's session", func() bool { return lnDrain.ActiveConns() == 1 })
	e.stop(0)
	readAll(dr)
	dr.Close()

	var sockets, pipes int
	testutil.Eventually(t, testTimeout, "descriptors back to the baseline", func() bool {
		sockets, pipes = openFDs(t)
		// The listeners' sockets are closed by the stop: below the baseline by that many.
		return sockets <= sockets0-len(lns)
	})
	if pipes-pipes0 > 2*16 {
		t.Errorf("%d pipe descriptors more than before: more than a loop keeps", pipes-pipes0)
	}
}

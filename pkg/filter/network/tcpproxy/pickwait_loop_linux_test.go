package tcpproxy_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/network/evloop"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// waitPickGoroutine is in the stack of the goroutine a loop session waits for a host on
// (loopSession.waitPick starts it through Attempts.GoWaitPick).
const waitPickGoroutine = "created by github.com/mosnlite/mosnlite/pkg/upstream/cluster.(*Attempts).GoWaitPick"

// A loop session that waits for a host (its pick runs on a goroutine and posts the result
// to the loop) gives back its max_connections unit and its pick's request on the host
// however it ends: the host comes up and the session runs; the loop's group is closed
// during the wait; the listener drains during the wait; the wait's result is posted and
// the loop stops before running it (a stopping loop drops what was posted and not yet
// run: evloop's stop, called from Group.Close, sets closed, and run then exits with
// the functions still queued in posted).
func TestLoopPickWaitReleasesAttempts(t *testing.T) {
	if !evloop.Supported {
		t.Skip("no event loops on this platform")
	}
	t.Run("host comes up", func(t *testing.T) {
		e, c1, ln, u := waitingSession(t)
		c := dial(t, ln)
		waitForHost(t, c1)
		c1.SetHostHealth(u.addr(), true)
		c.Write([]byte("ping"))
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil || !bytes.Equal(b, []byte("ping")) {
			t.Fatalf("echo: %q, %v", b, err)
		}
		c.Close()
		idle(t, ln)
		e.stop(0)
		attemptsReleased(t, c1)
	})
	t.Run("loop closed while waiting", func(t *testing.T) {
		e, c1, ln, _ := waitingSession(t)
		dial(t, ln)
		waitForHost(t, c1)
		e.loops.Close()
		attemptsReleased(t, c1)
	})
	t.Run("drained while waiting", func(t *testing.T) {
		e, c1, ln, _ := waitingSession(t)
		dial(t, ln)
		waitForHost(t, c1)
		e.stop(0)
		attemptsReleased(t, c1)
	})
	t.Run("result posted, loop stopped before running it", func(t *testing.T) {
		e, c1, ln, u := waitingSession(t)
		dial(t, ln)
		waitForHost(t, c1)
		lp := e.loops.Loops()[0]
		// A holds the loop while B and then the group's stop are queued, so that they run
		// in one batch: B makes the host healthy and returns once the wait's goroutine has
		// posted its result (queued behind that batch) and exited; stop runs next.
		holding, release := make(chan struct{}), make(chan struct{})
		if !lp.Post(func() { close(holding); <-release }) {
			t.Fatal("loop refused a post")
		}
		<-holding
		bDone := make(chan error, 1)
		lp.Post(func() {
			c1.SetHostHealth(u.addr(), true)
			bDone <- waitStacks(false, waitPickGoroutine)
		})
		closed := make(chan struct{})
		go func() {
			e.loops.Close()
			close(closed)
		}()
		err := waitStacks(true, "evloop.(*Group).Close", "sync.(*WaitGroup).Wait")
		close(release)
		if err != nil {
			t.Fatalf("the group's stop was not posted: %v", err)
		}
		select {
		case <-closed:
		case <-time.After(testTimeout):
			t.Fatal("the loops did not stop")
		}
		if err := <-bDone; err != nil {
			t.Fatalf("the wait did not end: %v", err)
		}
		attemptsReleased(t, c1)
	})
}

// waitingSession serves a tcp_proxy on an event loop to cluster c1, whose one host (an
// echo server) is down and whose picks wait up to testTimeout for a host.
func waitingSession(t *testing.T) (*env, *cluster.Cluster, *network.Listener, *upstream) {
	t.Helper()
	loopMode.Store(t, true)
	t.Cleanup(func() { loopMode.Delete(t) })
	u := startUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	e, c1, ln := hostDown(t, u)
	return e, c1, ln, u
}

// waitForHost waits until a session holds a max_connections unit and waits for a host.
func waitForHost(t *testing.T, c1 *cluster.Cluster) {
	t.Helper()
	testutil.Eventually(t, testTimeout, "a session to wait for a host", func() bool {
		conns, _ := c1.Usage(cluster.MaxConnections)
		pending, _ := c1.Usage(cluster.MaxPendingRequests)
		return conns == 1 && pending == 1
	})
}

// attemptsReleased waits until the wait's goroutine is gone, then checks that c1's
// breakers are back to 0 and no pick is outstanding on its host.
func attemptsReleased(t *testing.T, c1 *cluster.Cluster) {
	t.Helper()
	if err := waitStacks(false, waitPickGoroutine); err != nil {
		t.Fatal(err)
	}
	for _, b := range []cluster.Breaker{cluster.MaxConnections, cluster.MaxPendingRequests} {
		if n, _ := c1.Usage(b); n != 0 {
			t.Errorf("%s in use: %d, want 0", b.Setting(), n)
		}
	}
	for _, h := range c1.Hosts() {
		if n := h.Stats().Active(); n != 0 {
			t.Errorf("host %s: %d picks not done, want 0", h.Addr(), n)
		}
	}
}

// waitStacks waits up to testTimeout until some goroutine's stack holds every one of
// frags (present), or until none does (!present).
func waitStacks(present bool, frags ...string) error {
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(testTimeout)
	for {
		n := runtime.Stack(buf, true)
		if n == len(buf) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		found := false
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			all := true
			for _, f := range frags {
				all = all && strings.Contains(g, f)
			}
			found = found || all
		}
		if found == present {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("no goroutine changed: " + strings.Join(frags, ", "))
		}
		time.Sleep(time.Millisecond)
	}
}

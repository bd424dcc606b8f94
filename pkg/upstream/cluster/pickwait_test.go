package cluster_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// recovering is a cluster "r" over a refusing host and a live one, both marked down, with
// a long pick_timeout: the dead host comes up first.
func recovering(t *testing.T) (c *cluster.Cluster, dead, live string, failures func() float64) {
	t.Helper()
	dead, live = deadAddr(t), liveServer(t)
	cfg := simple("r", lb.RoundRobin, dead, live)
	cfg.PickTimeout = dur(20 * time.Second)
	_, mt, cs := applied(t, cluster.Options{}, cfg)
	c = cs[0]
	c.SetHostHealth(dead, false)
	c.SetHostHealth(live, false)
	return c, dead, live, func() float64 { return value(mt.UpstreamCxConnectFail.WithLabelValues("r", dead)) }
}

// A dial whose first pick waited for a host, and whose host then refused, waits again
// (within the request's time) for another host to come up instead of failing at once.
func TestDialRetryWaitsForHost(t *testing.T) {
	c, dead, live, failures := recovering(t)
	type res struct {
		conn net.Conn
		h    *cluster.Host
		done func(lb.DoneInfo)
		err  error
	}
	out := make(chan res, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	go func() {
		conn, h, done, err := c.Dial(ctx, &lb.Request{})
		out <- res{conn, h, done, err}
	}()
	time.Sleep(20 * time.Millisecond) // let the pick wait (not an assertion's timing)
	c.SetHostHealth(dead, true)
	testutil.Eventually(t, 5*time.Second, "the dead host tried", func() bool { return failures() == 1 })
	select {
	case r := <-out:
		t.Fatalf("Dial ended after the only healthy host refused, with another host down: %v, %v", r.h, r.err)
	case <-time.After(50 * time.Millisecond): // it is waiting (not an assertion's timing)
	}
	c.SetHostHealth(live, true)
	select {
	case r := <-out:
		if r.err != nil || r.h.Addr() != live {
			t.Fatalf("Dial = %v, %v; want a connection to %s", r.h, r.err, live)
		}
		r.conn.Close()
		r.done(lb.DoneInfo{})
	case <-time.After(5 * time.Second):
		t.Fatal("Dial did not wake when the live host came up")
	}
	if n, _ := c.Usage(cluster.MaxPendingRequests); n != 0 {
		t.Fatalf("max_pending_requests in use after the dial: %d", n)
	}

	// The wait ends with the request's time: the attempts' error, the refusal listed.
	c.SetHostHealth(live, false)
	ctx2, cancel2 := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel2()
	_, _, _, err := c.Dial(ctx2, &lb.Request{})
	var de *cluster.DialError
	if !errors.As(err, &de) || len(de.Attempts) != 1 || ctx2.Err() == nil {
		t.Fatalf("Dial with a 100ms ctx = %v; want the DialError of the refused attempt after the ctx ended", err)
	}
}

// With every host tried there is nothing to wait for: the dial fails at once, as before.
func TestDialRetryNoWaitWhenAllTried(t *testing.T) {
	dead := []string{deadAddr(t), deadAddr(t)}
	cfg := simple("a", lb.RoundRobin, dead...)
	cfg.PickTimeout = dur(20 * time.Second)
	_, _, cs := applied(t, cluster.Options{}, cfg)
	start := time.Now()
	_, _, _, err := cs[0].Dial(t.Context(), &lb.Request{})
	var de *cluster.DialError
	if !errors.As(err, &de) || len(de.Attempts) != 2 || !de.NoMoreHosts {
		t.Fatalf("Dial = %v; want the DialError of both hosts", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("Dial took %v: it waited for a host although every host was tried", took)
	}
}

// The event-loop form (Attempts, as tcp_proxy's loop drives it): after the refusal, Next
// fails with CanWait, and WaitPick waits for the untried host.
func TestAttemptsRetryWaitPick(t *testing.T) {
	c, dead, live, _ := recovering(t)
	c.SetHostHealth(dead, true)
	var a cluster.Attempts
	if err := c.StartAttempts(&a, &lb.Request{}); err != nil {
		t.Fatal(err)
	}
	defer a.Abandon()
	h, ap, err := a.Next()
	if err != nil || h.Addr() != dead {
		t.Fatalf("first Next = %v, %v; want %s", h, err, dead)
	}
	_, timedOut, err := rawConnect(t, ap, a.ConnectTimeout())
	if err == nil || timedOut {
		t.Fatalf("connect to the dead host: %v (timed out %v); want refused", err, timedOut)
	}
	a.Failed(err, false, false)
	_, _, err = a.Next()
	var de *cluster.DialError
	if !errors.As(err, &de) || !a.CanWait() {
		t.Fatalf("Next after the refusal = %v, CanWait %v; want the DialError and CanWait", err, a.CanWait())
	}
	errc := make(chan error, 1)
	go func() { errc <- a.WaitPick(t.Context()) }()
	time.Sleep(20 * time.Millisecond) // let it wait (not an assertion's timing)
	c.SetHostHealth(live, true)
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("WaitPick after the live host came up: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitPick did not wake when the live host came up")
	}
	h, done, err := runAttempts(t, &a)
	if err != nil || h.Addr() != live {
		t.Fatalf("after WaitPick: %v, %v; want a connection to %s", h, err, live)
	}
	done(lb.DoneInfo{})
	if n, _ := c.Usage(cluster.MaxConnections); n != 0 {
		t.Fatalf("max_connections in use after done: %d", n)
	}

	// A WaitPick that gives up reports the attempts and leaves nothing held.
	c.SetHostHealth(live, false)
	if err := c.StartAttempts(&a, &lb.Request{}); err != nil {
		t.Fatal(err)
	}
	if _, ap, err = a.Next(); err != nil {
		t.Fatal(err)
	}
	_, _, err = rawConnect(t, ap, a.ConnectTimeout())
	a.Failed(err, false, false)
	if _, _, err := a.Next(); err == nil || !a.CanWait() {
		t.Fatalf("Next = %v, CanWait %v", err, a.CanWait())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	if err := a.WaitPick(ctx); !errors.As(err, &de) || len(de.Attempts) != 1 {
		t.Fatalf("WaitPick with a 30ms ctx = %v; want the DialError", err)
	}
	a.Abandon()
	if n, _ := c.Usage(cluster.MaxConnections); n != 0 {
		t.Fatalf("max_connections in use after Abandon: %d", n)
	}
	if n, _ := c.Usage(cluster.MaxPendingRequests); n != 0 {
		t.Fatalf("max_pending_requests in use: %d", n)
	}
}

//go:build linux

package cluster_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// fullBacklog returns the address of a listening socket whose accept queue is full, so the
// kernel drops further SYNs and a connect to it hangs until its timeout.
func fullBacklog(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*syscall.SockaddrInet4).Port)).String()
	// Fill the accept queue (backlog 0 holds one connection); never accepted.
	for range 2 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break // the queue is full
		}
		t.Cleanup(func() { c.Close() })
	}
	return addr
}

// The default dialer enforces connect_timeout from the deadline alone (no timer context)
// and the error says so; the caller's ctx still cancels a connect in progress.
func TestConnectTimeoutDefaultDialer(t *testing.T) {
	addr := fullBacklog(t)
	m, _ := newManager(t, cluster.Options{})
	cfg := simple("t", "", addr)
	cfg.ConnectTimeout = dur(100 * time.Millisecond)
	cfg.MaxConnectAttempts = 1
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c, _, _, err := get(t, m, "t").Dial(t.Context(), &lb.Request{})
	took := time.Since(start)
	if err == nil {
		c.Close()
		t.Skip("the kernel accepted a connection beyond the backlog; cannot test a hanging connect here")
	}
	if !strings.Contains(err.Error(), "connect_timeout 100ms") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want connect_timeout 100ms", err)
	}
	if took < 90*time.Millisecond || took > 3*time.Second {
		t.Fatalf("dial took %v; want about 100ms", took)
	}

	cfg.ConnectTimeout = dur(10 * time.Second)
	if err := m.Apply([]config.Cluster{cfg}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	c, _, _, err = get(t, m, "t").Dial(ctx, &lb.Request{})
	took = time.Since(start)
	if err == nil {
		c.Close()
		t.Fatal("dial succeeded")
	}
	if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "connect_timeout") {
		t.Fatalf("err = %v; want canceled", err)
	}
	if took > 3*time.Second {
		t.Fatalf("cancelled dial took %v", took)
	}
}

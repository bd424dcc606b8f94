//go:build linux

package cluster_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

func fullBacklog(t *testing.T) string { return testutil.FullBacklog(t) }

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

package cluster_test

import (
	"testing"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// TestDialHostDialsThePickedHost: DialHost's first attempt goes to the host the caller
// picked, not to a second pick of the balancer (round robin would alternate), and a dead
// picked host still falls back to another one.
func TestDialHostDialsThePickedHost(t *testing.T) {
	a, b, dead := liveServer(t), liveServer(t), deadAddr(t)
	m, _ := newManager(t, cluster.Options{})
	if err := m.Apply([]config.Cluster{simple("c", lb.RoundRobin, a, b, dead)}); err != nil {
		t.Fatal(err)
	}
	c := get(t, m, "c")
	byAddr := map[string]*cluster.Host{}
	for _, h := range c.Hosts() {
		byAddr[h.Addr()] = h
	}
	for i := range 6 {
		want := byAddr[b]
		conn, h, done, err := c.DialHost(t.Context(), &lb.Request{}, want)
		if err != nil {
			t.Fatalf("DialHost %d: %v", i, err)
		}
		if h != want {
			t.Fatalf("DialHost %d connected to %s; want %s", i, h.Addr(), b)
		}
		conn.Close()
		done(lb.DoneInfo{})
	}
	conn, h, done, err := c.DialHost(t.Context(), &lb.Request{}, byAddr[dead])
	if err != nil || h.Addr() == dead {
		t.Fatalf("DialHost to a dead host: %v, %v", h, err)
	}
	conn.Close()
	done(lb.DoneInfo{})
}

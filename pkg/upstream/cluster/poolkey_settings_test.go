package cluster_test

import (
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/network/tlstest"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// TestPoolKeyFollowsConnectionSettings: a cluster update that changes how its connections
// are made (tls_context on or off, its server name, its ALPN) gives the hosts new pool
// keys, reports the old keys stale and the old *Hosts removed, so that pools stop handing
// out connections made with the old settings; the hosts keep their state (health). An
// update that changes nothing connection-related keeps the keys, and a cluster removed and
// added again under its name gets new ones.
func TestPoolKeyFollowsConnectionSettings(t *testing.T) {
	ca := tlstest.NewCA(t)
	const a, b = "10.0.0.1:80", "10.0.0.2:80"
	m, _ := newManager(t, cluster.Options{})
	base := func() config.Cluster { return simple("c", "", a, b) }
	apply := func(what string, cfg config.Cluster) *cluster.Cluster {
		t.Helper()
		if err := m.Apply([]config.Cluster{cfg}); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return get(t, m, "c")
	}
	byAddr := func(c *cluster.Cluster) map[string]*cluster.Host {
		out := map[string]*cluster.Host{}
		for _, h := range c.Hosts() {
			out[h.Addr()] = h
		}
		return out
	}
	old := byAddr(apply("plain", base()))

	// Updates that leave the connections as they are: same keys, nothing stale.
	kept := []struct {
		what string
		mod  func(*config.Cluster)
	}{
		{"weight", func(c *config.Cluster) { c.Hosts[0].Weight = 5 }},
		{"lb_type", func(c *config.Cluster) { c.LBType = "LB_RANDOM" }},
		{"health_check", func(c *config.Cluster) { c.HealthCheck = fastHC("tcp") }},
		{"outlier_detection", func(c *config.Cluster) { c.OutlierDetection = &config.OutlierDetection{Consecutive5xx: 3} }},
		{"circuit_breakers", func(c *config.Cluster) {
			n := uint32(7)
			c.CircuitBreakers = []config.CircuitBreaker{{MaxConnections: &n}}
		}},
		{"connect_timeout", func(c *config.Cluster) { c.ConnectTimeout = dur(time.Second) }},
		{"host added", func(c *config.Cluster) { c.Hosts = append(c.Hosts, config.Host{Address: "10.0.0.3:80"}) }},
		{"tls_context off", func(c *config.Cluster) { c.TLSContext = &config.TLSConfig{ServerName: "x.test"} }},
	}
	for _, u := range kept {
		cfg := base()
		u.mod(&cfg)
		now := byAddr(apply(u.what, cfg))
		for addr, h := range old {
			if now[addr].PoolKey() != h.PoolKey() || m.PoolKeyStale(h.PoolKey()) || h.Removed() {
				t.Fatalf("after a %s update: %s key %q -> %q, old key stale %v, old host removed %v; want kept",
					u.what, addr, h.PoolKey(), now[addr].PoolKey(), m.PoolKeyStale(h.PoolKey()), h.Removed())
			}
		}
	}
	get(t, m, "c").SetHostHealth(b, false)

	// Updates that change the connections: new keys, the old ones stale.
	withTLS := func(tc config.TLSConfig) config.Cluster {
		c := base()
		tc.Status, tc.CACert = true, ca.PEM
		c.TLSContext = &tc
		return c
	}
	changed := []struct {
		what string
		cfg  config.Cluster
	}{
		{"tls on", withTLS(config.TLSConfig{})},
		{"server_name", withTLS(config.TLSConfig{ServerName: "one.test"})},
		{"another server_name", withTLS(config.TLSConfig{ServerName: "two.test"})},
		{"alpn", withTLS(config.TLSConfig{ServerName: "two.test", ALPN: "h2"})},
		{"tls off", base()},
	}
	for _, u := range changed {
		now := byAddr(apply(u.what, u.cfg))
		for addr, h := range old {
			n := now[addr]
			if n.PoolKey() == h.PoolKey() || !m.PoolKeyStale(h.PoolKey()) || !h.Removed() {
				t.Fatalf("after a %s update: %s key %q -> %q, old key stale %v, old host removed %v; want a new key, the old stale",
					u.what, addr, h.PoolKey(), n.PoolKey(), m.PoolKeyStale(h.PoolKey()), h.Removed())
			}
			if n.Removed() || m.PoolKeyStale(n.PoolKey()) != (addr == b) {
				t.Fatalf("after a %s update: new host %s removed %v, key stale %v", u.what, addr, n.Removed(), m.PoolKeyStale(n.PoolKey()))
			}
		}
		if now[b].Healthy() {
			t.Fatalf("after a %s update: the host marked down came back up (its state was not kept)", u.what)
		}
		old = now
	}

	// Removed and added again: the same config, new keys.
	if err := m.Remove("c"); err != nil {
		t.Fatal(err)
	}
	now := byAddr(apply("re-added", base()))
	if h := old[a]; now[a].PoolKey() == h.PoolKey() || !m.PoolKeyStale(h.PoolKey()) {
		t.Fatalf("re-added cluster: key %q -> %q, old key stale %v; want a new key", h.PoolKey(), now[a].PoolKey(), m.PoolKeyStale(h.PoolKey()))
	}
}

// Package cluster manages upstream clusters: their hosts (static, or resolved by
// STRICT_DNS), health, balancer snapshots, host picking with a bounded wait, and dialing
// with connect timeout and retry over other hosts.
//
// The Manager has one writer lock and lock-free readers: Apply, AddOrUpdate and Remove
// serialize on a mutex and publish a new immutable name → *Cluster map through an
// atomic.Pointer, which Get only loads. Each Cluster likewise publishes an immutable
// snapshot (hosts, picker over the healthy ones), so Pick takes no lock.
//
// Types: SIMPLE and EDS use the listed hosts (EDS until an xDS client feeds it);
// STRICT_DNS resolves each listed name every dns_refresh_rate (see Run); ORIGINAL_DST uses
// the listed hosts with LB_ORIGINAL_DST by default — creating hosts on demand for unknown
// destinations, as Envoy's ORIGINAL_DST cluster does, is not implemented.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// LBRegistry resolves lb_type names (extension.Registry[lb.Factory] implements it).
type LBRegistry interface {
	Get(name string) (lb.Factory, error)
}

// Resolver resolves STRICT_DNS names (*net.Resolver implements it).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Options are the Manager's dependencies; every field may be left zero.
type Options struct {
	LBs      LBRegistry // nil: lb.Builtins()
	Resolver Resolver   // nil: net.DefaultResolver
	// Dial opens upstream connections; nil: a net.Dialer. It must honour ctx (the
	// connect timeout is a ctx deadline).
	Dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	Metrics *metrics.Set // nil: a private set
	Log     *zap.Logger  // nil: no logging
	Now     func() time.Time
	Rand    func() uint64 // must be safe for concurrent use
}

// Manager owns the clusters.
type Manager struct {
	o        Options
	clusters atomicMap

	mu       sync.Mutex      // serializes writers
	runCtx   context.Context // non-nil while Run is running
	running  bool
	wg       sync.WaitGroup // DNS refreshers and health checkers
	checkers atomic.Int64   // running health-checker goroutines

	hostsChanged atomic.Pointer[chan struct{}] // HostsChanged's channel
}

// NewManager returns an empty manager. It starts no goroutine; Run does.
func NewManager(o Options) *Manager {
	if o.LBs == nil {
		o.LBs = builtinLBs{}
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.Dial == nil {
		// No TCP keepalive by default (Go enables it: four setsockopt calls per dial).
		o.Dial = defaultDial // cluster.go
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Uint64
	}
	m := &Manager{o: o}
	m.clusters.store(map[string]*Cluster{})
	ch := make(chan struct{})
	m.hostsChanged.Store(&ch)
	return m
}

// HostsChanged returns a channel closed at the next change of a cluster's hosts: a host
// added or removed, marked down or up, a cluster rebuilt or removed. A user that keeps
// state per host, such as a pool of idle connections, waits on it, calls HostsChanged
// again for the next change, then looks at the hosts it holds (Host.Removed,
// Host.Healthy). It takes no lock.
func (m *Manager) HostsChanged() <-chan struct{} { return *m.hostsChanged.Load() }

// hostsDidChange wakes HostsChanged's waiters.
func (m *Manager) hostsDidChange() {
	ch := make(chan struct{})
	close(*m.hostsChanged.Swap(&ch))
}

// Get returns the named cluster; it takes no lock.
func (m *Manager) Get(name string) (*Cluster, bool) {
	c, ok := m.clusters.load()[name]
	return c, ok
}

// PoolKeyStale reports whether connections pooled under key (a Host.PoolKey) must carry
// no new request: the key's cluster is gone, has no host at that address any more, has
// it down, or was updated with other connection settings (its hosts have other keys).
// Connection pools ask it when HostsChanged signals and on their sweeps; it takes no lock.
func (m *Manager) PoolKeyStale(key string) bool {
	i := strings.LastIndexByte(key, '|') // name|gen|addr
	if i < 0 {
		return false
	}
	j := strings.LastIndexByte(key[:i], '|')
	if j < 0 {
		return false
	}
	c, ok := m.Get(key[:j])
	if !ok {
		return true
	}
	addr := key[i+1:]
	for _, h := range c.snap.Load().hosts {
		if h.addr == addr {
			return h.key != key || h.Removed() || !h.Healthy()
		}
	}
	return true
}

// Names returns the cluster names, sorted.
func (m *Manager) Names() []string {
	cs := m.clusters.load()
	names := make([]string, 0, len(cs))
	for n := range cs {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Apply makes the cluster set exactly cfgs, all or nothing: every config is validated and
// every balancer resolved first; on any error nothing changes and the error names each
// bad cluster. Clusters whose config is unchanged are kept as they are (hosts, health,
// in-flight counts, DNS refresher); changed ones keep the state of hosts whose address
// stays; clusters absent from cfgs are removed (waiting picks fail, refreshers stop).
// cfgs must not be modified afterwards.
func (m *Manager) Apply(cfgs []config.Cluster) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	sets, err := m.prepareAll(cfgs)
	if err != nil {
		return err
	}
	old := m.clusters.load()
	next := make(map[string]*Cluster, len(sets))
	for _, s := range sets {
		next[s.cfg.Name] = m.commit(old[s.cfg.Name], s)
	}
	m.clusters.store(next)
	for name, c := range old {
		if next[name] != c {
			m.drop(c)
		}
	}
	return nil
}

// Check validates cfgs as Apply would (the same errors) and changes nothing.
func (m *Manager) Check(cfgs []config.Cluster) error {
	_, err := m.prepareAll(cfgs)
	return err
}

// AddOrUpdate adds one cluster or replaces the config of the one with that name (all or
// nothing, as Apply).
func (m *Manager) AddOrUpdate(cfg config.Cluster) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	sets, err := m.prepareAll([]config.Cluster{cfg})
	if err != nil {
		return err
	}
	old := m.clusters.load()
	next := make(map[string]*Cluster, len(old)+1)
	for n, c := range old {
		next[n] = c
	}
	next[cfg.Name] = m.commit(old[cfg.Name], sets[0])
	m.clusters.store(next)
	return nil
}

// Remove removes the named cluster: picks waiting on it fail and its refresher stops.
func (m *Manager) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.clusters.load()
	c, ok := old[name]
	if !ok {
		return fmt.Errorf("cluster %q: not found", name)
	}
	next := make(map[string]*Cluster, len(old))
	for n, x := range old {
		if n != name {
			next[n] = x
		}
	}
	m.clusters.store(next)
	m.drop(c)
	return nil
}

func (m *Manager) prepareAll(cfgs []config.Cluster) ([]*settings, error) {
	var errs []error
	sets := make([]*settings, 0, len(cfgs))
	seen := map[string]int{}
	for i, cfg := range cfgs {
		if j, dup := seen[cfg.Name]; dup && cfg.Name != "" {
			errs = append(errs, fmt.Errorf("cluster %q: defined twice (clusters[%d] and clusters[%d])", cfg.Name, j, i))
			continue
		}
		seen[cfg.Name] = i
		s, err := prepare(cfg, &m.o)
		if err != nil {
			if cfg.Name == "" {
				err = fmt.Errorf("clusters[%d]: %w", i, err)
			}
			errs = append(errs, err)
			continue
		}
		sets = append(sets, s)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return sets, nil
}

// commit installs s into c (or a new cluster); it cannot fail. m.mu is held.
func (m *Manager) commit(c *Cluster, s *settings) *Cluster {
	if c != nil && sameConfig(c.currentSettings(), s) {
		return c
	}
	verb := "cluster updated"
	if c == nil {
		c = newCluster(m, s.cfg.Name)
		verb = "cluster added"
	}
	fresh := c.snap.Load() == nil
	if c.update(s) {
		m.startRefresher(c)
	}
	if fresh && m.runCtx != nil {
		c.attach(m.runCtx)
	}
	c.log.Info(verb, zap.String("type", s.typ), zap.String("lb_type", s.lbType), zap.Int("hosts", len(s.hosts)))
	return c
}

func (m *Manager) drop(c *Cluster) {
	c.remove()
	c.log.Info("cluster removed")
}

func (c *Cluster) currentSettings() *settings {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.set
}

// Run runs the clusters' background work, including that of clusters added while Run runs:
// one STRICT_DNS refresher per STRICT_DNS cluster, which stops when the cluster is removed
// or its DNS settings change (a new one starts), and one active health checker per host of
// each cluster with a health_check, which stops when its host leaves, the cluster is
// removed or its health_check changes. Run returns nil when ctx is done and all of them
// have ended. Before Run, STRICT_DNS clusters have no hosts from names (picks wait up to
// pick_timeout) and no host is health-checked (hosts keep their current health).
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return errors.New("cluster manager: Run already running")
	}
	m.running, m.runCtx = true, ctx
	for _, c := range m.clusters.load() {
		m.startRefresher(c)
		c.attach(ctx)
	}
	m.mu.Unlock()

	<-ctx.Done()
	m.mu.Lock()
	m.runCtx = nil // refreshers' and checkers' contexts derive from ctx: all cancelled
	for _, c := range m.clusters.load() {
		c.detach() // and no cluster starts a checker any more
	}
	m.mu.Unlock()
	m.wg.Wait()
	m.mu.Lock()
	m.running = false
	m.mu.Unlock()
	return nil
}

// startRefresher stops c's refresher, if any, and starts a new one if c is STRICT_DNS
// and Run is running. m.mu is held.
func (m *Manager) startRefresher(c *Cluster) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dnsGen++
	if c.stopDNS != nil {
		c.stopDNS()
		c.stopDNS = nil
	}
	if c.removed || c.set.typ != config.ClusterStrictDNS || m.runCtx == nil {
		return
	}
	ctx, cancel := context.WithCancel(m.runCtx)
	c.stopDNS = cancel
	r := &refresher{c: c, gen: c.dnsGen, set: c.set}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer cancel()
		r.run(ctx)
	}()
}

type builtinLBs struct{}

func (builtinLBs) Get(name string) (lb.Factory, error) {
	var known []string
	for _, n := range lb.Builtins() {
		if n.Name == name {
			return n.Factory, nil
		}
		known = append(known, n.Name)
	}
	return nil, fmt.Errorf("load balancer %q: unknown (known: %v)", name, known)
}

// atomicMap is the published name → cluster map; a stored map is never modified.
type atomicMap struct {
	p atomic.Pointer[map[string]*Cluster]
}

func (a *atomicMap) load() map[string]*Cluster   { return *a.p.Load() }
func (a *atomicMap) store(m map[string]*Cluster) { a.p.Store(&m) }

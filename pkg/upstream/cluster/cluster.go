package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/log"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// ErrNoHealthyUpstream is wrapped by Pick and Dial when no host was up within the pick
// timeout (or the request's deadline).
var ErrNoHealthyUpstream = errors.New("no healthy upstream")

// ErrOverflow is wrapped by Dial when the cluster's max_connections circuit breaker is open
// (Envoy's UO: answer at once, 503-class).
var ErrOverflow = errors.New("upstream overflow")

// Host is one upstream endpoint of a cluster. A *Host is immutable; its health and
// balancer state (Stats) live in state shared by every *Host with the same address in the
// cluster, so they survive rebuilds that change weights or other hosts.
type Host struct {
	addr     string
	ap       netip.AddrPort // addr parsed, when it is ip:port (dialled without resolving)
	hostname string
	weight   uint32
	meta     map[string]string
	st       *hostState
	gen      uint64 // the cluster's connection-settings generation when h was made
	key      string // PoolKey
}

type hostState struct {
	stats lb.HostStats
	c     *Cluster
	addr  string
	// key is the PoolKey of the host under connection-settings generation keyGen, kept
	// so that a rebuild that leaves the generation alone makes no new string. Under c.mu.
	key    string
	keyGen uint64
	// down holds the reasons the host is down (downAdmin, downActive, downOutlier); 0 is
	// up. Written only with c.mu held, read without.
	down    atomic.Uint32
	checked atomic.Bool   // has passed an active health check
	fails   atomic.Uint32 // consecutive failures, for outlier detection
	removed atomic.Bool   // left the cluster (or the cluster was removed): set once, under c.mu
	// connectFail is the host's upstream_connect_failures_total child, made at its first
	// failure under c.mu unless the host is removed (its series is then deleted).
	connectFail atomic.Pointer[prometheus.Counter]

	// Outlier detection, guarded by c.mu.
	ejections   uint32 // ejection count (the time multiplier), decayed per interval up
	ejectGen    uint64 // bumped when an ejection ends, so a stale timer does nothing
	ejectTimer  *time.Timer
	unejectedAt time.Time
}

// Reasons a host is down (hostState.down bits).
const (
	downAdmin   uint32 = 1 << iota // SetHostHealth(addr, false)
	downActive                     // failed active health checks
	downOutlier                    // ejected by outlier detection
)

// Health says why a host is down, if it is; the host is up when no field is set.
type Health struct {
	AdminDown         bool // marked down with SetHostHealth
	FailedActiveCheck bool // failed unhealthy_threshold active checks (or its first one)
	Ejected           bool // ejected by outlier detection
}

// Up reports whether no reason holds the host down.
func (h Health) Up() bool { return !h.AdminDown && !h.FailedActiveCheck && !h.Ejected }

var _ lb.Host = (*Host)(nil)

// Addr returns the host's dial address, "ip:port" (or "name:port" for a SIMPLE host
// configured by name, which the dialer resolves).
func (h *Host) Addr() string { return h.addr }

// PoolKey names the host's connections in connection pools: its cluster's name, the
// cluster's connection-settings generation and its address ("name|gen|addr"). Two
// clusters may list one address with different settings (TLS server name, connect
// timeout, circuit breakers), so their connections are not shared; and an update of the
// cluster that changes how its connections are made (tls_context), or a cluster removed
// and added again, gives new keys, so connections made before are not reused
// (Manager.PoolKeyStale reports the old keys, Removed the old *Hosts). An update that
// changes nothing connection-related (weights, balancer, health checks, hosts added or
// removed) keeps the keys. The key is made when the *Host is: reading it does not allocate.
func (h *Host) PoolKey() string { return h.key }

// Weight returns the configured weight (at least 1).
func (h *Host) Weight() uint32 { return h.weight }

// Stats returns the host's live balancer state.
func (h *Host) Stats() *lb.HostStats { return &h.st.stats }

// Healthy reports whether the host is up: not marked down by SetHostHealth, by active
// health checks or by outlier detection.
func (h *Host) Healthy() bool { return h.st.down.Load() == 0 }

// Removed reports whether the host has left its cluster (a config or EDS update dropped
// its address, or the cluster was removed), or its cluster's connection settings changed
// since h was made (the cluster's hosts are then new *Hosts with new pool keys). A host
// that comes back is a new *Host: the old one stays removed, so connections made to it
// are not reused. It takes no lock.
func (h *Host) Removed() bool { return h.st.removed.Load() || h.gen != h.st.c.connGen.Load() }

// Health returns the reasons the host is down, if any.
func (h *Host) Health() Health {
	d := h.st.down.Load()
	return Health{AdminDown: d&downAdmin != 0, FailedActiveCheck: d&downActive != 0, Ejected: d&downOutlier != 0}
}

// ReportResult feeds outlier detection with the outcome of a use of the host that Dial
// does not see: ok false for a failure that is the host's fault (an L7 proxy reports a
// 5xx or a reset; tcp_proxy need not report anything, Dial already records connect
// failures), ok true for a success, which resets the host's consecutive-failure count.
// It takes no lock unless the failure ejects the host; it is a no-op when the cluster has
// no outlier_detection or the host has left the cluster.
func (h *Host) ReportResult(ok bool) { h.st.c.recordResult(h.st, ok) }

// Hostname returns the configured hostname (for STRICT_DNS hosts, the name resolved).
func (h *Host) Hostname() string { return h.hostname }

// Metadata returns the configured metadata; callers must not modify it.
func (h *Host) Metadata() map[string]string { return h.meta }

// String returns the address.
func (h *Host) String() string { return h.addr }

// Cluster is a named set of hosts with a balancer. Readers load an immutable snapshot
// (hosts, picker over the healthy ones) without locking; rebuilds serialize on mu and
// publish a new snapshot, closing the old snapshot's changed channel so that waiting picks
// look again.
type Cluster struct {
	name string
	m    *Manager
	log  *zap.Logger
	snap atomic.Pointer[snapshot]

	cxTotal   prometheus.Counter
	cxActive  prometheus.Gauge
	noHealthy prometheus.Counter
	hostsG    prometheus.Gauge
	healthyG  prometheus.Gauge
	dnsFail   prometheus.Counter
	hcPass    prometheus.Counter
	hcFail    prometheus.Counter
	ejectionC prometheus.Counter
	ejectedG  prometheus.Gauge
	fastDial  bool         // Options.Dial is defaultDial: ip:port hosts are dialled by fastDialer
	lastWarn  atomic.Int64 // unix nanos of the last connect-failure warning
	muted     atomic.Int64 // connect failures logged at debug only since then
	breakers  [numBreakers]breaker
	budget    retryBudget // retry_budget (retrybudget.go)
	// The proxy's counts (CountRetry, CountRetryBufferOverflow, CountMirror), made at
	// their first use (counterOnce).
	retries, retryBuffer counterOnce
	mirrors              [numMirrorResults]counterOnce

	// gone is set when the cluster is removed; sweeping while a late sweep of its series
	// is under way (sweepSeries).
	gone, sweeping atomic.Bool
	// connGen is the generation of the settings the cluster's connections are made with
	// (connSettingsEqual): a new value, from connGens, when the cluster is made and when
	// an update changes them. Its hosts' pool keys carry it. Written under mu.
	connGen atomic.Uint64

	mu      sync.Mutex // guards the fields below and serializes rebuilds
	set     *settings
	states  map[string]*hostState
	dns     map[string][]netip.Addr // STRICT_DNS: last good answer per configured address
	dnsGen  uint64                  // bumped when refreshers are replaced; stale results are dropped
	stopDNS context.CancelFunc
	removed bool
	runCtx  context.Context       // Manager.Run's ctx while it runs (health checkers derive from it)
	checks  map[string]*hostCheck // running health checkers by host address
	ejected int                   // hosts ejected by outlier detection
}

type snapshot struct {
	set     *settings
	hosts   []*Host
	healthy []lb.Host
	picker  lb.Picker
	changed chan struct{} // closed when this snapshot is replaced
	removed bool
	named   bool // some host is a name (SIMPLE), which only Options.Dial resolves: not raw-dialable
}

func newCluster(m *Manager, name string) *Cluster {
	mt := m.o.Metrics
	mt.DeleteCluster(name) // a name used again starts at 0, whatever came late for the old one
	c := &Cluster{
		name:      name,
		m:         m,
		log:       m.o.Log.With(zap.String(log.FieldCluster, name)),
		cxTotal:   mt.UpstreamCxTotal.WithLabelValues(name),
		cxActive:  mt.UpstreamCxActive.WithLabelValues(name),
		noHealthy: mt.UpstreamNoHealthy.WithLabelValues(name),
		hostsG:    mt.UpstreamHosts.WithLabelValues(name),
		healthyG:  mt.UpstreamHostsHealthy.WithLabelValues(name),
		dnsFail:   mt.DNSResolveFailures.WithLabelValues(name),
		hcPass:    mt.UpstreamHealthChecks.WithLabelValues(name, "success"),
		hcFail:    mt.UpstreamHealthChecks.WithLabelValues(name, "failure"),
		ejectionC: mt.UpstreamEjections.WithLabelValues(name),
		ejectedG:  mt.UpstreamHostsEjected.WithLabelValues(name),
		states:    map[string]*hostState{},
		dns:       map[string][]netip.Addr{},
		checks:    map[string]*hostCheck{},
		fastDial:  isDefaultDial(m.o.Dial),
	}
	for b := range c.breakers {
		c.breakers[b].overflow = mt.UpstreamOverflow.WithLabelValues(name, Breaker(b).String())
	}
	c.budget.init(m.o.Now, mt.UpstreamOverflow.WithLabelValues(name, budgetLabel))
	return c
}

// Name returns the cluster's name.
func (c *Cluster) Name() string { return c.name }

// Hosts returns the cluster's current hosts, healthy or not.
func (c *Cluster) Hosts() []*Host { return slices.Clone(c.snap.Load().hosts) }

// HealthyHosts returns how many hosts are up now; with none, a pick waits (pick_timeout).
func (c *Cluster) HealthyHosts() int { return len(c.snap.Load().healthy) }

// update installs new settings and rebuilds. It reports whether the DNS refresher must be
// restarted. Called with the manager's lock held.
func (c *Cluster) update(s *settings) (restartDNS bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.set
	if old != nil && old.hc != nil && s.hc != nil && reflect.DeepEqual(old.cfg.HealthCheck, s.cfg.HealthCheck) {
		s.hc = old.hc // same checks: keep the running checkers
	}
	c.set = s
	if old == nil || !connSettingsEqual(old, s) {
		// Before the rebuild: until the new hosts are published, the old ones report
		// Removed, so no pool takes a connection made with the old settings meanwhile.
		c.connGen.Store(connGens.Add(1))
	}
	for b := range c.breakers {
		c.breakers[b].limit.Store(s.limits[b])
	}
	c.budget.configure(s.budget)
	if s.hc == nil { // checks off: their verdicts no longer hold
		for _, st := range c.states {
			st.down.Store(st.down.Load() &^ downActive)
			st.checked.Store(false)
		}
	}
	if s.outlier == nil { // detection off: end every ejection
		for _, st := range c.states {
			c.endEjectionLocked(st)
		}
	}
	if s.typ != config.ClusterStrictDNS {
		clear(c.dns)
	} else {
		keep := map[string]bool{}
		for _, h := range s.hosts {
			keep[h.addr] = true
		}
		maps.DeleteFunc(c.dns, func(k string, _ []netip.Addr) bool { return !keep[k] })
	}
	c.rebuildLocked()
	return old == nil || !dnsTargetsEqual(old, s)
}

// remove marks the cluster removed: its refresher stops and waiting picks fail.
func (c *Cluster) remove() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return
	}
	c.removed = true
	c.dnsGen++
	if c.stopDNS != nil {
		c.stopDNS()
		c.stopDNS = nil
	}
	c.stopChecksLocked()
	for _, st := range c.states {
		c.endEjectionLocked(st)
		st.removed.Store(true)
	}
	old := c.snap.Load()
	c.snap.Store(&snapshot{set: c.set, picker: lb.NewRoundRobin(nil, lb.Options{}), changed: make(chan struct{}), removed: true})
	if old != nil {
		close(old.changed)
	}
	c.m.hostsDidChange()
	// Its series leave with it. Connections that outlive it update the children c holds,
	// which are no longer exported, so they do not bring a series back (at -1).
	c.m.o.Metrics.DeleteCluster(c.name)
	c.gone.Store(true)
}

// sweepSeries deletes a removed cluster's series again once no unit of its circuit
// breakers is held, that is once the requests and connections that outlived it ended:
// a user that counts per event with a label lookup may have made one again (the proxy's
// retries, mirrors and overflows count on the cluster's held children: CountRetry and
// the like). Release calls it; a name that serves again keeps its series.
func (c *Cluster) sweepSeries() {
	for b := range c.breakers {
		if c.breakers[b].n.Load() != 0 {
			return
		}
	}
	if !c.sweeping.CompareAndSwap(false, true) {
		return
	}
	go func() { // Release may run under a caller's locks; m.mu orders this with a re-add
		defer c.sweeping.Store(false)
		c.m.mu.Lock()
		defer c.m.mu.Unlock()
		if _, ok := c.m.clusters.load()[c.name]; !ok {
			c.m.o.Metrics.DeleteCluster(c.name)
		}
	}()
}

// rebuildLocked recomputes the host list from settings and DNS answers, keeps the state
// of hosts whose address stays, builds the picker over healthy hosts and publishes.
func (c *Cluster) rebuildLocked() {
	s := c.set
	var prev map[string]*Host
	var wasHealthy map[*hostState]bool // in the previous snapshot's healthy set
	if old := c.snap.Load(); old != nil {
		prev = make(map[string]*Host, len(old.hosts))
		for _, h := range old.hosts {
			prev[h.addr] = h
		}
		wasHealthy = make(map[*hostState]bool, len(old.healthy))
		for _, h := range old.healthy {
			wasHealthy[h.(*Host).st] = true
		}
	}
	var hosts []*Host
	seen := map[string]bool{}
	gen := c.connGen.Load()
	add := func(addr, hostname string, spec *hostSpec) {
		if seen[addr] {
			return // two DNS names answered the same address: first entry wins
		}
		seen[addr] = true
		st := c.states[addr]
		if st == nil {
			st = &hostState{c: c, addr: addr}
			c.states[addr] = st
		}
		if st.key == "" || st.keyGen != gen {
			st.key, st.keyGen = c.name+"|"+strconv.FormatUint(gen, 10)+"|"+addr, gen
		}
		if h := prev[addr]; h != nil && h.st == st && h.gen == gen && h.weight == spec.weight && h.hostname == hostname && maps.Equal(h.meta, spec.meta) {
			hosts = append(hosts, h)
			return
		}
		ap, _ := netip.ParseAddrPort(addr) // invalid (zero) for a name
		hosts = append(hosts, &Host{addr: addr, ap: ap, hostname: hostname, weight: spec.weight, meta: spec.meta, st: st, gen: gen, key: st.key})
	}
	for i := range s.hosts {
		spec := &s.hosts[i]
		if s.typ != config.ClusterStrictDNS || spec.ip.IsValid() {
			add(spec.addr, spec.hostname, spec)
			continue
		}
		name := spec.hostname
		if name == "" {
			name = spec.host
		}
		for _, ip := range c.dns[spec.addr] {
			add(netip.AddrPortFrom(ip, spec.port).String(), name, spec)
		}
	}
	maps.DeleteFunc(c.states, func(a string, st *hostState) bool {
		if seen[a] {
			return false
		}
		c.endEjectionLocked(st) // a host that leaves takes its ejection with it
		st.removed.Store(true)
		// and its per-host series: under endpoint churn they would pile up for good
		c.m.o.Metrics.UpstreamCxConnectFail.DeleteLabelValues(c.name, a)
		return true
	})
	var healthy []lb.Host
	named := false
	for _, h := range hosts {
		if h.Healthy() {
			healthy = append(healthy, h)
			if prev[h.addr] != nil && !wasHealthy[h.st] {
				h.st.stats.ResetPeakEWMA() // back up: its old latency estimate is stale
			}
		}
		named = named || !h.ap.IsValid()
	}
	next := &snapshot{set: s, hosts: hosts, healthy: healthy, picker: s.factory(healthy, s.lbOpts), changed: make(chan struct{}), named: named}
	old := c.snap.Swap(next)
	if old != nil {
		close(old.changed)
	}
	c.hostsG.Set(float64(len(hosts)))
	c.healthyG.Set(float64(len(healthy)))
	c.syncChecksLocked()
	c.m.hostsDidChange()
}

// SetHostHealth marks the host with address addr down or lifts that mark (unknown
// addresses are ignored); it is one reason among three, so a host marked up here stays
// down while active health checks or outlier detection hold it down. If the host's health
// changes, the picker is rebuilt and waiting picks wake.
func (c *Cluster) SetHostHealth(addr string, up bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.states[addr]
	if st == nil || c.removed || !c.markLocked(st, downAdmin, !up) {
		return
	}
	if ce := c.log.Check(zap.InfoLevel, "host health set"); ce != nil {
		ce.Write(zap.String(log.FieldHost, addr), zap.Bool("up", up), zap.Bool("healthy", st.down.Load() == 0))
	}
}

// markLocked sets (down) or clears one down reason of st and rebuilds the picker when the
// host's health changes. It reports whether the reason changed.
func (c *Cluster) markLocked(st *hostState, reason uint32, down bool) bool {
	old := st.down.Load()
	next := old &^ reason
	if down {
		next |= reason
	}
	if next == old {
		return false
	}
	st.down.Store(next)
	if (old == 0) != (next == 0) {
		c.rebuildLocked()
	}
	return true
}

// Pick chooses a healthy host. When none is up it waits for the host set to change, up to
// the cluster's pick_timeout and the ctx deadline, then fails with an error wrapping
// ErrNoHealthyUpstream. The fast path does not allocate. done must be called once.
func (c *Cluster) Pick(ctx context.Context, r *lb.Request) (*Host, func(lb.DoneInfo), error) {
	s := c.snap.Load()
	h, done, err := s.picker.Pick(ctx, r)
	if err == nil {
		return c.own(h, done)
	}
	return c.pickSlow(ctx, r, s, err)
}

// ErrWouldWait is PickNow's answer when no host is up and the cluster's pick_timeout lets
// a pick wait for one: a caller that cannot block hands the request to one that can Pick.
var ErrWouldWait = errors.New("no healthy host now; a pick may wait (pick_timeout)")

// PickNow is Pick without the wait for a host to come up, for callers that cannot block
// (an event loop). Where Pick would wait it fails with ErrWouldWait and counts nothing;
// its other failures are Pick's.
func (c *Cluster) PickNow(r *lb.Request) (*Host, func(lb.DoneInfo), error) {
	s := c.snap.Load()
	h, done, err := s.picker.Pick(context.Background(), r)
	if err == nil {
		return c.own(h, done)
	}
	if err := c.pickFailed(s, err, s.set.pickTimeout); err != nil {
		return nil, nil, err
	}
	return nil, nil, ErrWouldWait
}

func (c *Cluster) own(h lb.Host, done func(lb.DoneInfo)) (*Host, func(lb.DoneInfo), error) {
	ch, ok := h.(*Host)
	if !ok { // a balancer that invents hosts is a bug in that balancer
		done(lb.DoneInfo{})
		return nil, nil, fmt.Errorf("cluster %q: balancer returned a foreign host %v", c.name, h)
	}
	return ch, done, nil
}

func (c *Cluster) pickSlow(ctx context.Context, r *lb.Request, s *snapshot, err error) (*Host, func(lb.DoneInfo), error) {
	wait := s.set.pickTimeout
	if err := c.pickFailed(s, err, wait); err != nil {
		return nil, nil, err
	}
	// The pick waits for a healthy host: the only queue a request joins in mosnlite, which
	// max_pending_requests bounds. Beyond it a pick fails at once, as an overflow.
	if !c.TryAcquire(MaxPendingRequests) {
		_, limit := c.Usage(MaxPendingRequests)
		return nil, nil, fmt.Errorf("cluster %q: %w: %d picks already wait for a healthy host (max_pending_requests)", c.name, ErrOverflow, limit)
	}
	defer c.Release(MaxPendingRequests)
	t := time.NewTimer(wait) // pickFailed refused a zero wait
	defer t.Stop()
	for {
		select {
		case <-s.changed:
		case <-t.C:
			return nil, nil, c.noHost(s, fmt.Sprintf("waited pick_timeout %v", wait))
		case <-ctx.Done():
			c.noHealthy.Inc()
			return nil, nil, fmt.Errorf("cluster %q: %w (%d hosts, %d healthy): %w", c.name, ErrNoHealthyUpstream, len(s.hosts), len(s.healthy), context.Cause(ctx))
		}
		s = c.snap.Load()
		var h lb.Host
		var done func(lb.DoneInfo)
		if h, done, err = s.picker.Pick(ctx, r); err == nil {
			return c.own(h, done)
		}
		if err := c.pickFailed(s, err, wait); err != nil {
			return nil, nil, err
		}
	}
}

// pickFailed is the error of a pick from s that failed with err, or nil when the pick may
// wait (up to wait, the pick_timeout) for the host set to change.
func (c *Cluster) pickFailed(s *snapshot, err error, wait time.Duration) error {
	switch {
	case !errors.Is(err, lb.ErrNoHost):
		return fmt.Errorf("cluster %q: pick: %w", c.name, err)
	case s.removed:
		return fmt.Errorf("cluster %q: %w: cluster removed", c.name, ErrNoHealthyUpstream)
	case wait <= 0:
		return c.noHost(s, "pick_timeout 0")
	}
	return nil
}

func (c *Cluster) noHost(s *snapshot, why string) error {
	c.noHealthy.Inc()
	return fmt.Errorf("cluster %q: %w (%d hosts, %d healthy; %s)", c.name, ErrNoHealthyUpstream, len(s.hosts), len(s.healthy), why)
}

// Dial picks a host and connects to it over TCP within connect_timeout. A failed dial is
// counted (upstream_connect_failures_total{cluster,host}), logged at debug (and at warn at
// most every warnEvery), and the next pick skips the hosts already tried
// (Request.Attempt is incremented for each pick) until max_connect_attempts distinct hosts
// have failed or no untried host is left; the error then lists every attempt. The first
// pick waits for a host as Pick does; a later pick that finds no untried host up while an
// untried host is down waits as long (pick_timeout, and ctx) for one to come up.
//
// On success the connection counts as active (upstream_connections_active, the host's
// Conns, which LB_LEAST_CONNECTION reads, and the max_connections circuit breaker) until
// done is called: call done once, when the connection is finished with.
//
// When max_connections connections are open (or being dialled), Dial fails at once with an
// error wrapping ErrOverflow. A failed connect counts against the host for outlier
// detection (unless ctx ended); a successful one does not reset its count (the caller
// reports the outcome of what it sends: Host.ReportResult).
func (c *Cluster) Dial(ctx context.Context, r *lb.Request) (net.Conn, *Host, func(lb.DoneInfo), error) {
	return c.DialHost(ctx, r, nil)
}

// DialHost is Dial with the first attempt on host, which the caller already picked for a
// request (nil: Dial's own pick). The later attempts, up to max_connect_attempts, go to
// other hosts as with Dial. A proxy that picks a host and then needs a connection to it
// uses DialHost, so that the balancer's choice, not a second pick, decides where the
// request goes.
func (c *Cluster) DialHost(ctx context.Context, r *lb.Request, host *Host) (net.Conn, *Host, func(lb.DoneInfo), error) {
	return c.DialLimit(ctx, r, host, 0)
}

// DialLimit is DialHost with at most maxAttempts attempts instead of the cluster's
// max_connect_attempts (a caller's own limit, such as tcp_proxy's max_connect_attempts);
// maxAttempts <= 0 keeps the cluster's.
func (c *Cluster) DialLimit(ctx context.Context, r *lb.Request, host *Host, maxAttempts int) (net.Conn, *Host, func(lb.DoneInfo), error) {
	if !c.TryAcquire(MaxConnections) {
		return nil, nil, nil, c.overflowError(MaxConnections)
	}
	conn, h, done, err := c.dial(ctx, r, host, maxAttempts)
	if err != nil {
		c.Release(MaxConnections)
	}
	return conn, h, done, err
}

// dial runs Dial's attempts (Attempts, attempts.go) with blocking connects through dialHost.
func (c *Cluster) dial(ctx context.Context, r *lb.Request, first *Host, maxAttempts int) (net.Conn, *Host, func(lb.DoneInfo), error) {
	if r == nil {
		r = &lb.Request{}
	}
	var a Attempts
	a.init(c, c.snap.Load(), r)
	a.Limit(maxAttempts)
	if first != nil {
		a.h, a.done, a.pending = first, func(lb.DoneInfo) {}, true // the caller's pick accounts for the request
	}
	set := a.s.set
	for {
		h, err := a.next(ctx, true)
		if err != nil {
			return nil, nil, nil, err
		}
		conn, err := c.dialHost(ctx, set.connectTimeout, h)
		if err == nil && set.tls != nil { // tls.go: the handshake gets connect_timeout too
			conn, err = clientTLS(ctx, conn, set.tls.Config(), h, time.Now().Add(set.connectTimeout))
		}
		if err == nil {
			h, done := a.connected()
			return conn, h, c.connDone(h, done), nil
		}
		a.failed(err, ctx.Err() != nil) // our caller giving up says nothing about the host
		if ctx.Err() != nil {
			return nil, nil, nil, a.Err()
		}
	}
}

// DialError is Dial's error when every attempt failed. errors.Is and errors.As see each
// attempt's error (for instance context.DeadlineExceeded for a connect timeout).
type DialError struct {
	Cluster     string
	Attempts    []error // one per host tried, in order; each names its host
	NoMoreHosts bool    // stopped early: no untried healthy host was left
}

func (e *DialError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster %q: connect failed after %d attempt(s)", e.Cluster, len(e.Attempts))
	for i, err := range e.Attempts {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		b.WriteString(sep)
		b.WriteString(err.Error())
	}
	if e.NoMoreHosts {
		b.WriteString("; no other healthy host to try")
	}
	return b.String()
}

// Unwrap returns the attempts' errors.
func (e *DialError) Unwrap() []error { return e.Attempts }

// pickUntried asks the balancer again (Attempt incremented per pick) a bounded number of
// times for a host not yet tried; if it keeps answering tried hosts, a picker of the same
// kind is built over the untried healthy hosts. nil when there is none.
func (c *Cluster) pickUntried(ctx context.Context, req *lb.Request, tried []*Host) (*Host, func(lb.DoneInfo)) {
	s := c.snap.Load()
	isTried := func(h lb.Host) bool {
		return slices.ContainsFunc(tried, func(t *Host) bool { return t.addr == h.Addr() })
	}
	for range min(2*len(s.healthy), 16) {
		req.Attempt++
		h, done, err := s.picker.Pick(ctx, req)
		if err != nil {
			break
		}
		if !isTried(h) {
			if ch, done, err := c.own(h, done); err == nil {
				return ch, done
			}
			return nil, nil
		}
		done(lb.DoneInfo{})
	}
	rest := slices.DeleteFunc(slices.Clone(s.healthy), isTried)
	if len(rest) == 0 {
		return nil, nil
	}
	req.Attempt++
	h, done, err := s.set.factory(rest, s.set.lbOpts).Pick(ctx, req)
	if err != nil {
		return nil, nil
	}
	ch, done, err := c.own(h, done)
	if err != nil {
		return nil, nil
	}
	return ch, done
}

func (c *Cluster) dialHost(ctx context.Context, timeout time.Duration, h *Host) (net.Conn, error) {
	var (
		conn     net.Conn
		err      error
		timedOut bool
	)
	if c.fastDial && h.ap.IsValid() && ctx.Done() != nil {
		// The default dialer, to an ip:port: DialTCP with the parsed address skips the
		// address parsing and resolver path (and the stack growth it causes on a fresh
		// connection goroutine); the connect deadline becomes a write deadline on the
		// connecting socket (the poller's timer), so there is no timer context, no timer
		// and no child context per dial. ctx still cancels the connect.
		dctx := &deadlineCtx{Context: ctx, deadline: time.Now().Add(timeout)}
		tc, derr := fastDialer.DialTCP(dctx, "tcp", netip.AddrPort{}, h.ap)
		if derr == nil {
			conn = tc
		}
		err = derr
		timedOut = err != nil && ctx.Err() == nil && dctx.Err() != nil
	} else {
		dctx, cancel := context.WithTimeout(ctx, timeout)
		conn, err = c.m.o.Dial(dctx, "tcp", h.addr)
		timedOut = err != nil && ctx.Err() == nil && errors.Is(dctx.Err(), context.DeadlineExceeded)
		cancel()
	}
	if err == nil && conn == nil {
		err = errors.New("dialer returned no connection")
	}
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, connectError(h, timeout, err, timedOut)
	}
	return conn, nil
}

// connectError is a failed connect's error naming h: timedOut (connect_timeout expired)
// gives a connectTimeoutError, other errors get the address prefixed unless they name it.
func connectError(h *Host, timeout time.Duration, err error, timedOut bool) error {
	switch {
	case timedOut:
		if err == nil {
			err = os.ErrDeadlineExceeded
		}
		return &connectTimeoutError{addr: h.addr, timeout: timeout, err: err}
	case err == nil:
		return fmt.Errorf("%s: connect failed", h.addr)
	case !strings.Contains(err.Error(), h.addr):
		return fmt.Errorf("%s: %w", h.addr, err)
	}
	return err
}

// connectTimeoutError is a dial that connect_timeout ended; errors.Is sees the dialer's
// error and context.DeadlineExceeded.
type connectTimeoutError struct {
	addr    string
	timeout time.Duration
	err     error
}

func (e *connectTimeoutError) Error() string {
	return fmt.Sprintf("%s: connect_timeout %v: %v", e.addr, e.timeout, e.err)
}

func (e *connectTimeoutError) Unwrap() []error { return []error{e.err, context.DeadlineExceeded} }

// defaultDial is Options.Dial's default: a net.Dialer without TCP keepalive (Go enables
// it: four setsockopt calls per dial).
func defaultDial(ctx context.Context, network, addr string) (net.Conn, error) {
	return defaultDialer.DialContext(ctx, network, addr)
}

var (
	defaultDialer = &net.Dialer{KeepAlive: -1}
	// fastDialer dials a parsed ip:port for defaultDial's clusters. DialTCP binds the
	// socket to its (zero) local address first; bindNoPort keeps that bind from searching
	// for a port.
	fastDialer = &net.Dialer{KeepAlive: -1, Control: bindNoPort}
	// defaultDialPC identifies defaultDial among Options.Dial values.
	defaultDialPC = reflect.ValueOf(defaultDial).Pointer()
)

// isDefaultDial reports whether dial is defaultDial, which fastDialer may stand in for.
func isDefaultDial(dial func(context.Context, string, string) (net.Conn, error)) bool {
	return canDialNoPort && dial != nil && reflect.ValueOf(dial).Pointer() == defaultDialPC
}

// deadlineCtx is ctx with the connect deadline added. Its Done is ctx's: it is only given
// to fastDialer, which enforces Deadline itself as the socket's write deadline (a dialer
// that waits for Done alone would not see the deadline; those get context.WithTimeout).
type deadlineCtx struct {
	context.Context
	deadline time.Time
}

func (d *deadlineCtx) Deadline() (time.Time, bool) {
	if p, ok := d.Context.Deadline(); ok && p.Before(d.deadline) {
		return p, true
	}
	return d.deadline, true
}

func (d *deadlineCtx) Err() error {
	if err := d.Context.Err(); err != nil {
		return err
	}
	if !time.Now().Before(d.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// connDone counts a new connection to h, made for the pick whose done is done, and returns
// the func that ends it (a second call is ignored).
func (c *Cluster) connDone(h *Host, done func(lb.DoneInfo)) func(lb.DoneInfo) {
	c.connOpened(h)
	var once atomic.Bool
	return func(di lb.DoneInfo) {
		if !once.Swap(true) {
			c.connClosed(h, done, di)
		}
	}
}

// connOpened counts a new connection to h as active.
func (c *Cluster) connOpened(h *Host) {
	c.cxTotal.Inc()
	c.cxActive.Inc()
	h.st.stats.ConnOpened()
}

// connClosed ends what connOpened counted, releases the connection's max_connections unit
// and calls its pick's done.
func (c *Cluster) connClosed(h *Host, done func(lb.DoneInfo), di lb.DoneInfo) {
	h.st.stats.ConnClosed()
	c.cxActive.Dec()
	c.Release(MaxConnections)
	done(di)
}

// warnEvery rate-limits connect-failure warnings per cluster; every failure is logged at
// debug and counted.
const warnEvery = 10 * time.Second

func (c *Cluster) connectFailed(h *Host, err error) {
	c.connectFailCounter(h.st).Inc()
	if ce := c.log.Check(zap.DebugLevel, "upstream connect failed"); ce != nil {
		ce.Write(zap.String(log.FieldHost, h.addr), zap.Error(err))
	}
	now := c.m.o.Now().UnixNano()
	last := c.lastWarn.Load()
	if now-last < int64(warnEvery) || !c.lastWarn.CompareAndSwap(last, now) {
		c.muted.Add(1)
		return
	}
	c.log.Warn("upstream connect failed", zap.String(log.FieldHost, h.addr), zap.Error(err),
		zap.Int64("suppressed", c.muted.Swap(0)))
}

// discardCounter takes the connect failures of a host removed before its first one.
var discardCounter = prometheus.NewCounter(prometheus.CounterOpts{Name: "discard"})

// connectFailCounter returns st's connect-failure child, made once: a failure that ends
// after its host left (or its cluster was removed) must not make the deleted series again.
func (c *Cluster) connectFailCounter(st *hostState) prometheus.Counter {
	if p := st.connectFail.Load(); p != nil {
		return *p
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := st.connectFail.Load(); p != nil {
		return *p
	}
	if st.removed.Load() {
		return discardCounter
	}
	ctr := c.m.o.Metrics.UpstreamCxConnectFail.WithLabelValues(c.name, st.addr)
	st.connectFail.Store(&ctr)
	return ctr
}

// MirrorResult is the result label of upstream_mirrors_total.
type MirrorResult uint8

// Results of a mirrored request.
const (
	MirrorSent    MirrorResult = iota // the mirror cluster answered (the answer is discarded)
	MirrorDropped                     // not sent: the queue was full or the body too large
	MirrorFailed                      // sent, or meant to be, and failed
	numMirrorResults
)

// String returns the metric label: sent, dropped or failed.
func (r MirrorResult) String() string {
	switch r {
	case MirrorSent:
		return "sent"
	case MirrorDropped:
		return "dropped"
	case MirrorFailed:
		return "failed"
	}
	return fmt.Sprintf("MirrorResult(%d)", uint8(r))
}

// CountRetry counts a retry of a request to the cluster (upstream_retries_total).
func (c *Cluster) CountRetry() {
	c.count(&c.retries, c.m.o.Metrics.UpstreamRetries, "")
}

// CountRetryBufferOverflow counts a request not sent again because its body outgrew the
// retry buffer (upstream_overflow_total{breaker="retry_buffer"}).
func (c *Cluster) CountRetryBufferOverflow() {
	c.count(&c.retryBuffer, c.m.o.Metrics.UpstreamOverflow, retryBufferLabel)
}

// CountOverflow counts a refusal of b that its TryAcquire did not count (a limit the
// caller enforces itself, such as an HTTP/2 pool's connections per host).
func (c *Cluster) CountOverflow(b Breaker) { c.breakers[b].overflow.Inc() }

// CountMirror counts a request mirrored to the cluster (upstream_mirrors_total).
func (c *Cluster) CountMirror(r MirrorResult) {
	if r < numMirrorResults {
		c.count(&c.mirrors[r], c.m.o.Metrics.UpstreamMirrors, r.String())
	}
}

// retryBufferLabel is the breaker label of requests not retried for their body's size.
const retryBufferLabel = "retry_buffer"

// counterOnce holds a cluster's child of a counter vector counted per event by another
// package, made at its first count rather than with the cluster (a cluster never retried
// or mirrored to has no such series). It is made under c.mu unless the cluster is
// removed: a count that comes after the removal (a request that outlived it) goes to
// discardCounter instead of making the deleted series again; one made before is deleted
// with the cluster and stays held. Counting takes no lock after the first count.
type counterOnce struct {
	p atomic.Pointer[prometheus.Counter]
}

// count increments h's child of vec, labelled with the cluster and label ("": none).
func (c *Cluster) count(h *counterOnce, vec *prometheus.CounterVec, label string) {
	if p := h.p.Load(); p != nil {
		(*p).Inc()
		return
	}
	c.countFirst(h, vec, label)
}

func (c *Cluster) countFirst(h *counterOnce, vec *prometheus.CounterVec, label string) {
	c.mu.Lock()
	p := h.p.Load()
	if p == nil {
		ctr := discardCounter
		switch {
		case c.removed:
		case label == "":
			ctr = vec.WithLabelValues(c.name)
		default:
			ctr = vec.WithLabelValues(c.name, label)
		}
		p = &ctr
		h.p.Store(p)
	}
	c.mu.Unlock()
	(*p).Inc()
}

// Package server builds a running mosnlite from a config: clusters, network filters and
// listeners, plus the admin endpoint. It is the only package that wires the others together.
//
// New opens every socket (so a port conflict fails start-up, before anything serves) but
// starts no goroutine; Run serves until its context ends, then drains: readiness turns false,
// listeners keep accepting for the drain delay, then stop accepting, then open sessions get
// up to the drain timeout to finish before they are closed.
//
// At run time the configuration changes per owner ("static" = the file, "xds",
// "dubbo_registry"; dynamic.go): each change validates and builds first and changes nothing
// on error. Listeners (listeners.go) whose config is unchanged keep their sockets and
// connections; a changed tcp listener on the same address takes over the old socket; a
// removed one stops accepting and drains in the background.
package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/extension"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/network/evloop"
	"github.com/mosnlite/mosnlite/pkg/overload"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// Options are the server's dependencies.
type Options struct {
	Extensions *extension.Set
	Log        *zap.Logger
	Level      zap.AtomicLevel // served by the admin endpoint; zero value: not changeable
	Metrics    *metrics.Set    // nil: a fresh set
	// AdminAddress overrides the config's admin address ("" keeps it; "-" disables admin).
	AdminAddress string
	// Load re-reads the config source (the -c file, parsed, defaulted and validated as at
	// start) for SIGHUP and POST /api/v1/reload; nil: reload has no source.
	Load func() (*config.Config, error)
	// ServiceNode and ServiceCluster identify this proxy to an xDS control plane
	// (--service-node, --service-cluster).
	ServiceNode, ServiceCluster string
	// NoEventLoops serves every listener with a goroutine per connection; by default
	// tcp_proxy listeners run on event loops (pkg/network/evloop) where the platform has
	// them (--event-loops).
	NoEventLoops bool
}

// Server is a built configuration. Its clusters, routers and listeners change at run time
// through SetClusters, SetClusterHosts, SetRouters, SetRoutes, SetListeners and Reload,
// which serialize on mu; request paths never take mu.
type Server struct {
	cfg     *config.Config
	opts    Options
	ext     *extension.Set
	log     *zap.Logger
	metrics *metrics.Set
	pool    *buffer.Pool
	load    func() (*config.Config, error)

	clusters *cluster.Manager
	mem      *overload.Memory // nil without a memory limit (GOMEMLIMIT)
	routers  *router.Tables
	index    *network.Index
	admin    *admin
	loops    *evloop.Group // started with the first listener that uses it; nil: none

	running atomic.Bool  // Run serves and is not draining
	holds   atomic.Int64 // HoldReady holders not yet released

	drainOnce sync.Once
	drainReq  chan struct{} // closed by Drain: Run drains as on ctx's end

	mu          sync.Mutex                           // serializes configuration changes; guards the fields below
	clusterCfgs map[string][]config.Cluster          // owner → clusters
	routerCfgs  map[string][]config.RouterCfg        // owner → router configs
	routes      map[string]map[string][]config.Route // router → owner → routes placed first
	live        map[string]*liveListener             // listener name → listener
	order       map[string][]string                  // owner → listener names in config order
	drain       config.Drain                         // the static config's drain block
	run         *runState                            // set while Run serves
	stopped     bool                                 // Run is draining or done: listeners are final
	drains      sync.WaitGroup                       // background drains of removed listeners
	lingering   map[string]lingerCluster             // clusters a reload dropped, kept a while (applyStatic)
	lingerTimer *time.Timer                          // sweeps lingering; nil: none armed
}

// runState is Run's serving machinery, which listeners added later join.
type runState struct {
	ctx    context.Context // cancelled when Run stops accepting
	wg     sync.WaitGroup  // Serve goroutines
	failed chan error      // first listener failure
}

// emptyServer is a Server for cfg with nothing built yet; o has its defaults filled in.
func emptyServer(cfg *config.Config, o Options) *Server {
	return &Server{
		cfg:         cfg,
		opts:        o,
		ext:         o.Extensions,
		log:         o.Log,
		metrics:     o.Metrics,
		pool:        buffer.NewPool(),
		load:        o.Load,
		index:       network.NewIndex(),
		drainReq:    make(chan struct{}),
		routers:     new(router.Tables),
		clusterCfgs: map[string][]config.Cluster{},
		routerCfgs:  map[string][]config.RouterCfg{},
		routes:      map[string]map[string][]config.Route{},
		live:        map[string]*liveListener{},
		order:       map[string][]string{},
		drain:       cfg.Drain,
	}
}

// New builds everything the config describes and binds its sockets (the static owner's
// clusters, routers and listeners). On error nothing is left open.
func New(cfg *config.Config, o Options) (_ *Server, err error) {
	if o.Extensions == nil {
		return nil, errors.New("server: no extensions")
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	s := emptyServer(cfg, o)
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()
	if lim := overload.Limit(); lim > 0 {
		// With a memory limit, listeners stop accepting near it (overload.PauseAt).
		s.mem = overload.NewMemory(lim, o.Log.Named("overload"), o.Metrics.MemoryOverloaded)
		o.Log.Info("memory limit set: listeners pause accepting near it", zap.Uint64("limit_bytes", lim))
	}
	s.clusters = cluster.NewManager(cluster.Options{
		LBs:     o.Extensions.LoadBalancers,
		Metrics: o.Metrics,
		Log:     o.Log.Named("cluster"),
	})
	cs := cloneClusters(cfg.ClusterManager.Clusters)
	if err := s.clusters.Apply(cs); err != nil {
		return nil, fmt.Errorf("cluster_manager: %w", err)
	}
	s.clusterCfgs[OwnerStatic] = cs
	s.routers.Replace(nil)
	if len(cfg.Servers) > 0 {
		rs := slices.Clone(cfg.Servers[0].Routers)
		tables, err := router.Build(rs)
		if err != nil {
			return nil, fmt.Errorf("servers[0].routers: %w", err)
		}
		if err := checkPerFilter(rs, o.Extensions, "servers[0].routers"); err != nil {
			return nil, err
		}
		s.routers.Replace(tables)
		s.routerCfgs[OwnerStatic] = rs
		s.addRegistryRouter() // registry.go: before the listeners that name it
		s.mu.Lock()
		p, err := s.planListeners(OwnerStatic, cfg.Servers[0].Listeners, "servers[0].listeners")
		if err == nil {
			err = s.commitListeners(p)
		}
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	s.metrics.ConfigLastReload.Set(float64(time.Now().UnixNano()) / 1e9) // the start is the first load
	addr := o.AdminAddress
	if addr == "" && cfg.Admin != nil {
		sa := cfg.Admin.Address.SocketAddress
		addr = net.JoinHostPort(sa.Address, fmt.Sprint(sa.PortValue))
	}
	if addr != "" && addr != "-" {
		if s.admin, err = newAdmin(addr, s, o.Level); err != nil {
			return nil, fmt.Errorf("admin: %w", err)
		}
	}
	return s, s.initRegistry(s.initXDS()) // xds.go, registry.go; on error the deferred closeAll releases everything
}

// Options returns the options the server was built with (ServiceNode, ServiceCluster).
func (s *Server) Options() Options { return s.opts }

// Addrs maps each listener's name to its bound address (nil for virtual listeners).
func (s *Server) Addrs() map[string]net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]net.Addr, len(s.live))
	for name, ll := range s.live {
		m[name] = ll.ln.Addr()
	}
	return m
}

// AdminAddr is the admin endpoint's bound address, or nil when admin is off.
func (s *Server) AdminAddr() net.Addr {
	if s.admin == nil {
		return nil
	}
	return s.admin.ln.Addr()
}

// Clusters exposes the cluster manager (admin, tests).
func (s *Server) Clusters() *cluster.Manager { return s.clusters }

// Ready reports whether the server serves, is not draining, and no HoldReady holder is
// still waiting for its first configuration.
func (s *Server) Ready() bool { return s.running.Load() && s.holds.Load() == 0 }

func (s *Server) drainTimeout() time.Duration { return drainTimeoutOf(s.drain) }

// drainTimeoutOf is d's timeout, or the default.
func drainTimeoutOf(d config.Drain) time.Duration {
	if t := d.Timeout.D(); t > 0 {
		return t
	}
	return config.DefaultDrainTimeout
}

// listenersInOrder returns the live listeners, owners in name order, each owner's in
// config order. s.mu is held.
func (s *Server) listenersInOrder() []*liveListener {
	var out []*liveListener
	for _, owner := range slices.Sorted(maps.Keys(s.order)) {
		for _, name := range s.order[owner] {
			if ll, ok := s.live[name]; ok && ll.owner == owner {
				out = append(out, ll)
			}
		}
	}
	return out
}

// overloaded is the memory overload check for listeners and proxies; nil without a
// memory limit.
func (s *Server) overloaded() func() bool {
	if s.mem == nil {
		return nil
	}
	return s.mem.Overloaded
}

// Run serves until ctx ends, then drains as the config's drain block says and returns.
// Listeners added while it runs are served and drained the same way.
func (s *Server) Run(ctx context.Context) error {
	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServing()
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBg()

	s.mu.Lock()
	if s.run != nil || s.stopped {
		s.mu.Unlock()
		return errors.New("server: Run called twice")
	}
	r := &runState{ctx: serveCtx, failed: make(chan error, 1)}
	s.run = r
	lls := s.listenersInOrder()
	for _, ll := range lls {
		s.startServing(ll)
	}
	s.mu.Unlock()

	var bg errgroup.Group
	bg.Go(func() error { return s.clusters.Run(bgCtx) })
	bg.Go(func() error { return s.runXDS(bgCtx) })      // xds.go
	bg.Go(func() error { return s.runRegistry(bgCtx) }) // registry.go
	if s.admin != nil {
		bg.Go(func() error { return s.admin.run(bgCtx) })
	}
	if s.mem != nil {
		bg.Go(func() error { s.mem.Run(bgCtx); return nil })
	}
	s.running.Store(true)
	s.log.Info("mosnlite serving", zap.Int("listeners", len(lls)),
		zap.Int("clusters", len(s.clusters.Names())))

	// A listener that fails (not by our cancel) fails the whole server.
	var runErr error
	select {
	case <-ctx.Done():
	case <-s.drainReq:
		s.log.Info("drain requested through the admin endpoint")
	case runErr = <-r.failed:
	}

	// Drain. Readiness goes off, and the filters tell their clients at once (HTTP/1
	// Connection: close, HTTP/2 GOAWAY, bolt go-away, dubbo readonly), so that clients
	// that came through a load balancer move to other instances during the delay, while
	// the listeners still accept.
	s.running.Store(false)
	s.mu.Lock()
	delay := s.drain.Delay.D()
	timeout := s.drainTimeout()
	lls = s.listenersInOrder()
	s.mu.Unlock()
	goAwayFilters(lls)
	if delay > 0 && runErr == nil {
		s.log.Info("draining: readiness off, still accepting", zap.Duration("delay", delay))
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case runErr = <-r.failed:
		}
		t.Stop()
	}
	s.mu.Lock()
	s.stopped = true // listeners are final from here on
	lls = s.listenersInOrder()
	s.mu.Unlock()
	stopServing()
	r.wg.Wait()
	s.log.Info("draining: stopped accepting, waiting for open sessions", zap.Duration("timeout", timeout))
	// Again for listeners added during the delay. The filters are closed (idle upstream
	// connections and access logs with them) once their sessions ended.
	goAwayFilters(lls)
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	var drains sync.WaitGroup
	for _, ll := range lls {
		drains.Go(func() { ll.ln.Drain(dctx) })
	}
	drains.Wait()
	cancel()
	closeFilters(lls)
	s.drains.Wait() // listeners removed earlier, each bounded by the drain timeout
	s.closeLoops()
	stopBg()
	if err := bg.Wait(); err != nil && !errors.Is(err, context.Canceled) && runErr == nil {
		runErr = err
	}
	s.log.Info("mosnlite stopped")
	return runErr
}

// Drain starts the graceful shutdown that the end of Run's context (SIGTERM) starts:
// readiness off, clients told to go, listeners closed after drain.delay, sessions given
// drain.timeout, then Run returns (and the process exits). For a pod's preStop hook,
// through the admin endpoint POST /api/v1/drain. It returns at once; more calls do
// nothing more.
func (s *Server) Drain() { s.drainOnce.Do(func() { close(s.drainReq) }) }

// goAwayFilters starts the graceful drain of the filters that have one (GoAway).
func goAwayFilters(lls []*liveListener) {
	for _, ll := range lls {
		if g, ok := ll.closer.(interface{ GoAway() }); ok {
			g.GoAway()
		}
	}
}

// closeFilters closes the filters that hold resources of their own.
func closeFilters(lls []*liveListener) {
	for _, ll := range lls {
		if ll.closer != nil {
			_ = ll.closer.Close()
		}
	}
}

// closeAll releases sockets of a server that failed to build (or, in tests, was never
// run).
func (s *Server) closeAll() {
	s.mu.Lock()
	lls := s.listenersInOrder()
	for _, ll := range s.live {
		if !slices.Contains(lls, ll) {
			lls = append(lls, ll)
		}
	}
	s.live = map[string]*liveListener{}
	s.stopped = true
	if s.lingerTimer != nil {
		s.lingerTimer.Stop()
		s.lingerTimer = nil
	}
	s.mu.Unlock()
	closeFilters(lls)
	for _, ll := range lls {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		ll.ln.Drain(ctx)
		ll.ln.Close()
	}
	s.drains.Wait()
	s.closeLoops()
	if s.admin != nil {
		s.admin.ln.Close()
	}
}

// eventLoops returns the server's event loops, starting them on first use; nil when they
// are off or this platform has none (listeners then use goroutines). Called with mu held.
func (s *Server) eventLoops() *evloop.Group {
	if s.loops != nil || s.opts.NoEventLoops || !evloop.Supported {
		return s.loops
	}
	g, err := evloop.NewGroup(0, s.log.Named("evloop"))
	if err != nil {
		s.log.Warn("event loops unavailable; tcp_proxy and HTTP/1 listeners use goroutines", zap.Error(err))
		s.opts.NoEventLoops = true
		return nil
	}
	s.loops = g
	return g
}

// closeLoops stops the event loops, after every listener using them drained.
func (s *Server) closeLoops() {
	s.mu.Lock()
	g := s.loops
	s.loops = nil
	s.mu.Unlock()
	if g != nil {
		g.Close()
	}
}

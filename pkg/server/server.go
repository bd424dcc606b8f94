// Package server builds a running mosnlite from a config: clusters, network filters and
// listeners, plus the admin endpoint. It is the only package that wires the others together.
//
// New opens every socket (so a port conflict fails start-up, before anything serves) but
// starts no goroutine; Run serves until its context ends, then drains: readiness turns false,
// listeners keep accepting for the drain delay, then stop accepting, then open sessions get
// up to the drain timeout to finish before they are closed.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/extension"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/log"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network"
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
}

// Server is a built configuration.
type Server struct {
	cfg       *config.Config
	log       *zap.Logger
	metrics   *metrics.Set
	pool      *buffer.Pool
	clusters  *cluster.Manager
	routers   *router.Tables
	closers   []io.Closer // filters holding resources beyond their connections (proxy's idle upstream pool)
	index     *network.Index
	listeners []*network.Listener
	admin     *admin
	ready     atomic.Bool
}

// New builds everything the config describes and binds its sockets. On error nothing is
// left open.
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
	s := &Server{
		cfg:     cfg,
		log:     o.Log,
		metrics: o.Metrics,
		pool:    buffer.NewPool(),
		index:   network.NewIndex(),
	}
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()
	s.clusters = cluster.NewManager(cluster.Options{
		LBs:     o.Extensions.LoadBalancers,
		Metrics: o.Metrics,
		Log:     o.Log.Named("cluster"),
	})
	if err := s.clusters.Apply(cfg.ClusterManager.Clusters); err != nil {
		return nil, fmt.Errorf("cluster_manager: %w", err)
	}
	s.routers = new(router.Tables)
	if len(cfg.Servers) > 0 {
		tables, err := router.Build(cfg.Servers[0].Routers)
		if err != nil {
			return nil, fmt.Errorf("servers[0].routers: %w", err)
		}
		s.routers.Replace(tables)
		for i := range cfg.Servers[0].Listeners {
			lc := &cfg.Servers[0].Listeners[i]
			l, err := s.buildListener(lc, o.Extensions)
			if err != nil {
				return nil, fmt.Errorf("servers[0].listeners[%d] (%s): %w", i, lc.Name, err)
			}
			s.listeners = append(s.listeners, l)
			if err := s.index.Add(l); err != nil {
				return nil, fmt.Errorf("servers[0].listeners[%d] (%s): %w", i, lc.Name, err)
			}
		}
	}
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
	return s, nil
}

func (s *Server) buildListener(lc *config.Listener, ext *extension.Set) (*network.Listener, error) {
	if len(lc.FilterChains) == 0 {
		return nil, errors.New("filter_chains: none")
	}
	// filter_chain_match is not supported: chain 0 serves every connection, and
	// validation warns about the others.
	fc := lc.FilterChains[0]
	if len(fc.Filters) != 1 {
		return nil, fmt.Errorf("filter_chains[0].filters: want exactly one terminal filter, have %d", len(fc.Filters))
	}
	fcfg := fc.Filters[0]
	factory, err := ext.NetworkFilters.Get(fcfg.Type)
	if err != nil {
		return nil, fmt.Errorf("filter_chains[0].filters[0].type: %w (not available in this build)", err)
	}
	lg := s.log.Named("listener").With(zap.String(log.FieldListener, lc.Name))
	nf, err := factory(fcfg.Config, filter.Deps{
		Clusters: s.clusters,
		Pool:     s.pool,
		Metrics:  s.metrics,
		Log:      lg,
		Listener: lc,
		Routers:  s.routers,
	})
	if err != nil {
		return nil, fmt.Errorf("filter_chains[0].filters[0].config: %w", err)
	}
	if c, ok := nf.(io.Closer); ok {
		s.closers = append(s.closers, c)
	}
	netw := lc.Network
	if netw == "" {
		netw = "tcp"
	}
	od := lc.UseOriginalDst
	for _, lf := range lc.ListenerFilters {
		if lf.Type != "original_dst" {
			return nil, fmt.Errorf("listener_filters: %q is not available in this build", lf.Type)
		}
		var oc config.OriginalDstFilterConfig
		if len(lf.Config) > 0 {
			if err := config.Unmarshal(lf.Config, &oc); err != nil {
				return nil, fmt.Errorf("listener_filters: original_dst: %w", err)
			}
		}
		if od == config.OriginalDstOff {
			od = config.OriginalDst(oc.Type)
			if od == config.OriginalDstOff {
				od = config.OriginalDstRedirect
			}
		}
	}
	idle := lc.ConnectionIdleTimeout.Or(config.DefaultConnectionIdleTimeout)
	if fcfg.Type != "proxy" {
		// L4 filters keep their own idle timers (tcp_proxy/udp_proxy idle_timeout) and bypass
		// the connection's read loop, so the connection-level timer would misfire.
		idle = 0
	}
	lcfg := network.ListenerConfig{
		Name:           lc.Name,
		Network:        netw,
		Address:        lc.Address,
		BindPort:       lc.BindsPort(),
		ReusePort:      lc.ReusePort,
		MaxConnections: lc.MaxConnections,
		OriginalDst:    od,
		Conn: network.ConnOptions{
			Pool:        s.pool,
			IdleTimeout: idle,
			BufferLimit: int(lc.PerConnBufferLimitBytes),
			Log:         lg,
		},
		Index:   s.index,
		Metrics: s.metrics,
		Log:     lg,
	}
	switch netw {
	case "udp":
		ph, ok := nf.(network.PacketHandler)
		if !ok {
			return nil, fmt.Errorf("filter %q cannot serve a udp listener", fcfg.Type)
		}
		lcfg.PacketHandler = ph
	default:
		h, ok := nf.(network.Handler)
		if !ok {
			return nil, fmt.Errorf("filter %q cannot serve a %s listener", fcfg.Type, netw)
		}
		lcfg.Handler = h
	}
	return network.NewListener(lcfg)
}

// Addrs maps each listener's name to its bound address (nil for virtual listeners).
func (s *Server) Addrs() map[string]net.Addr {
	m := make(map[string]net.Addr, len(s.listeners))
	for _, l := range s.listeners {
		m[l.Name()] = l.Addr()
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

// Ready reports whether the server serves and is not draining.
func (s *Server) Ready() bool { return s.ready.Load() }

// Run serves until ctx ends, then drains as the config's drain block says and returns.
func (s *Server) Run(ctx context.Context) error {
	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServing()
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBg()

	var serving, bg errgroup.Group
	for _, l := range s.listeners {
		serving.Go(func() error { return l.Serve(serveCtx) })
	}
	bg.Go(func() error { return s.clusters.Run(bgCtx) })
	if s.admin != nil {
		bg.Go(func() error { return s.admin.run(bgCtx) })
	}
	s.ready.Store(true)
	s.log.Info("mosnlite serving", zap.Int("listeners", len(s.listeners)),
		zap.Int("clusters", len(s.clusters.Names())))

	// A listener that fails (not by our cancel) fails the whole server.
	failed := make(chan error, 1)
	go func() { failed <- serving.Wait() }()
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-failed:
		if runErr == nil {
			runErr = errors.New("server: listeners stopped")
		}
	}

	// Drain.
	s.ready.Store(false)
	delay := s.cfg.Drain.Delay.D()
	timeout := s.cfg.Drain.Timeout.D()
	if timeout <= 0 {
		timeout = config.DefaultDrainTimeout
	}
	if delay > 0 && runErr == nil {
		s.log.Info("draining: readiness off, still accepting", zap.Duration("delay", delay))
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case runErr = <-failed:
		}
		t.Stop()
	}
	stopServing()
	if err := <-failedOrDone(failed, runErr); err != nil && runErr == nil {
		runErr = err
	}
	s.log.Info("draining: stopped accepting, waiting for open sessions", zap.Duration("timeout", timeout))
	// Idle upstream connections would keep the next hop's sessions (often this same
	// process) open for the whole drain.
	s.closeFilters()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	var drains errgroup.Group
	for _, l := range s.listeners {
		drains.Go(func() error { l.Drain(dctx); return nil })
	}
	drains.Wait()
	cancel()
	stopBg()
	if err := bg.Wait(); err != nil && !errors.Is(err, context.Canceled) && runErr == nil {
		runErr = err
	}
	s.log.Info("mosnlite stopped")
	return runErr
}

// failedOrDone returns a channel that yields the listeners' final error: the value already
// taken from failed when runErr came from it, or the next one.
func failedOrDone(failed chan error, runErr error) <-chan error {
	if runErr != nil {
		c := make(chan error, 1)
		c <- nil
		return c
	}
	return failed
}

// closeFilters closes the filters that hold resources of their own.
func (s *Server) closeFilters() {
	for _, c := range s.closers {
		_ = c.Close()
	}
}

// closeAll releases sockets of a server that failed to build.
func (s *Server) closeAll() {
	s.closeFilters()
	for _, l := range s.listeners {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		l.Drain(ctx)
		l.Close()
	}
	if s.admin != nil {
		s.admin.ln.Close()
	}
}

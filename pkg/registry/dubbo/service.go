// Package dubbo is MOSN's Dubbo registry endpoint: a Dubbo application POSTs /pub (I provide
// this service) or /sub (I consume it) to its sidecar, and the sidecar writes the registry
// and builds the clusters and routes that carry the calls.
//
// Registries: ZooKeeper (github.com/go-zookeeper/zk), laid out as Dubbo itself writes it so
// Dubbo applications on the same ZooKeeper see what mosnlite publishes and the other way
// round; and an embedded one ("local", the default when the request names no address) that
// serves the same API inside one process.
//
// /pub registers a provider URL with the sidecar's ingress address (server_ip:server_port);
// /sub registers a consumer URL, watches the interface's providers and keeps one cluster per
// service key (group/interface:version) whose hosts are the providers' ip:port, plus a route
// on the "service" header (and "version"/"group" when given) in the egress router. The
// clusters and routes are applied through the server's runtime config API under the owner
// "dubbo_registry"; a call either applies fully or changes nothing.
package dubbo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
)

// Owner is the owner name of what the registry applies through the server API.
const Owner = "dubbo_registry"

// Applier is the part of the server's runtime config API the registry uses
// (*server.Server implements it).
type Applier interface {
	SetClusters(owner string, cs []config.Cluster) error
	SetClusterHosts(cluster string, hosts []config.Host) error
	SetRouters(owner string, rs []config.RouterCfg) error
	SetRoutes(owner, router string, routes []config.Route) error
}

// Deps are the registry's dependencies.
type Deps struct {
	Applier Applier
	Log     *zap.Logger
	Metrics *metrics.Set // nil: a fresh set
	// CreateRouter: no config defines the router named by router_config_name, so the
	// registry creates it (one "*" virtual host) when it starts, as MOSN does.
	CreateRouter bool
}

// Service serves the API and keeps the registry state.
type Service struct {
	cfg   Config
	apply Applier
	log   *zap.Logger
	met   *metrics.Set
	ln    net.Listener
	srv   *http.Server
	dial  func(addr string) (backend, error)

	mu      sync.Mutex
	closed  bool
	local   *local
	zks     map[string]backend       // ZooKeeper address → session
	dialing map[string]*dialCall     // ZooKeeper address → its first connection, in progress
	pubs    map[string]*publication  // registry key + "|" + service key
	subs    map[string]*subscription // cluster name → subscription
	applied []config.Cluster         // what the server has, sorted by name
	routes  []config.Route           // the routes the server has
	create  bool
}

type publication struct {
	b       backend
	url     *URL
	methods string
}

// subscription is one cluster: a service key subscribed through one or more registries.
type subscription struct {
	sel  Selector
	regs map[string]*subReg // registry key → its consumer node and watch
}

type subReg struct {
	b        backend
	consumer *URL
	methods  string
	stop     func()
	hosts    []string // providers' ip:port, sorted
}

// New checks cfg and binds the API socket; Run serves it.
func New(cfg Config, d Deps) (*Service, error) {
	if d.Applier == nil {
		return nil, errors.New("dubbo registry: no applier")
	}
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.Metrics == nil {
		d.Metrics = metrics.New()
	}
	addr := net.JoinHostPort(cfg.APIAddress, strconv.Itoa(cfg.APIPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dubbo registry: api: %w", err)
	}
	s := &Service{
		cfg:     cfg,
		apply:   d.Applier,
		log:     d.Log,
		met:     d.Metrics,
		ln:      ln,
		local:   newLocal(),
		zks:     map[string]backend{},
		dialing: map[string]*dialCall{},
		pubs:    map[string]*publication{},
		subs:    map[string]*subscription{},
		create:  d.CreateRouter,
	}
	rt := cfg.RegistryTimeout.Or(DefaultRegistryTimeout)
	st := cfg.SessionTimeout.Or(DefaultSessionTimeout)
	s.dial = func(addr string) (backend, error) { return dialZooKeeper(addr, rt, st, d.Log) }
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		ErrorLog:          zap.NewStdLog(d.Log),
	}
	return s, nil
}

// Addr is the API's bound address.
func (s *Service) Addr() net.Addr { return s.ln.Addr() }

// Close releases the socket of a service that never ran.
func (s *Service) Close() error { return s.ln.Close() }

// Run creates the router when asked to, serves the API until ctx ends, then ends every
// registry session (ZooKeeper drops this sidecar's nodes).
func (s *Service) Run(ctx context.Context) error {
	if s.create {
		err := s.apply.SetRouters(Owner, []config.RouterCfg{{
			RouterConfigName: s.cfg.RouterConfigName,
			VirtualHosts:     []config.VirtualHost{{Name: s.cfg.RouterConfigName, Domains: []string{"*"}}},
		}})
		if err != nil {
			s.ln.Close()
			return fmt.Errorf("dubbo registry: router %q: %w", s.cfg.RouterConfigName, err)
		}
	}
	s.log.Info("dubbo registry API serving", zap.Stringer("address", s.ln.Addr()),
		zap.String("router", s.cfg.RouterConfigName))
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	var err error
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if e := s.srv.Shutdown(sctx); e != nil {
			s.srv.Close()
		}
		cancel()
		<-errc
	case err = <-errc:
		err = fmt.Errorf("dubbo registry: api: %w", err)
	}
	s.shutdown()
	return err
}

// shutdown stops the watches and closes the registries (outside the lock: a watch may be
// waiting for it to deliver a change).
func (s *Service) shutdown() {
	s.mu.Lock()
	s.closed = true
	for _, sub := range s.subs {
		for _, r := range sub.regs {
			r.stop()
		}
	}
	bs := []backend{s.local}
	for _, b := range s.zks {
		bs = append(bs, b)
	}
	s.mu.Unlock()
	for _, b := range bs {
		b.Close()
	}
}

// registryRef names the registry a request uses.
type registryRef struct {
	kind string // "zookeeper" or "local"
	addr string
}

func (r registryRef) key() string {
	if r.kind == "local" {
		return "local"
	}
	return r.kind + "://" + r.addr
}

// dialCall is a registry's first connection, shared by the calls that wait for it.
type dialCall struct {
	done chan struct{}
	b    backend
	err  error
}

var errShuttingDown = errors.New("the registry is shutting down")

// backend returns the registry r names, connecting on first use. It is called without
// s.mu: a ZooKeeper that does not answer holds up, for up to registry_timeout, only the
// calls that use it, not the other registries' calls nor their watches. One connection
// is made per address; the calls that come meanwhile wait for it and share its result.
func (s *Service) backend(r registryRef) (backend, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errShuttingDown
	}
	if r.kind == "local" {
		s.mu.Unlock()
		return s.local, nil
	}
	if b, ok := s.zks[r.addr]; ok {
		s.mu.Unlock()
		return b, nil
	}
	if d, ok := s.dialing[r.addr]; ok {
		s.mu.Unlock()
		<-d.done
		return d.b, d.err
	}
	d := &dialCall{done: make(chan struct{})}
	s.dialing[r.addr] = d
	s.mu.Unlock()
	b, err := s.dial(r.addr)
	s.mu.Lock()
	delete(s.dialing, r.addr)
	switch {
	case err != nil:
	case s.closed:
		b.Close() // shutdown did not see it
		b, err = nil, errShuttingDown
	default:
		s.zks[r.addr] = b
	}
	s.mu.Unlock()
	d.b, d.err = b, err
	close(d.done)
	return b, err
}

// ClusterName is the cluster /sub keeps for a selector: Dubbo's service key.
func ClusterName(sel Selector) string { return sel.Key() }

func (s *Service) baseParams(sel Selector, methods string) map[string]string {
	p := map[string]string{
		"application": s.cfg.Application,
		"dubbo":       "2.0.2",
		"interface":   sel.Interface,
		"methods":     methods,
		"pid":         strconv.Itoa(os.Getpid()),
		"timestamp":   strconv.FormatInt(time.Now().UnixMilli(), 10),
	}
	if sel.Group != "" {
		p["group"] = sel.Group
	}
	if sel.Version != "" {
		p["version"] = sel.Version
	}
	return p
}

// providerURL is what /pub registers: the sidecar's ingress address serving sel.
func (s *Service) providerURL(sel Selector, methods string) *URL {
	p := s.baseParams(sel, methods)
	p["anyhost"] = "true"
	p["deprecated"] = "false"
	p["dynamic"] = "true"
	p["generic"] = "false"
	p["side"] = "provider"
	return &URL{
		Protocol: "dubbo",
		Host:     net.JoinHostPort(s.cfg.ServerIP, strconv.Itoa(s.cfg.ServerPort)),
		Path:     sel.Interface,
		Params:   p,
	}
}

// consumerURL is what /sub registers.
func (s *Service) consumerURL(sel Selector, methods string) *URL {
	p := s.baseParams(sel, methods)
	p["category"] = "consumers"
	p["check"] = "false"
	p["side"] = "consumer"
	return &URL{Protocol: "consumer", Host: s.cfg.ServerIP, Path: sel.Interface, Params: p}
}

func (s *Service) publish(r registryRef, sel Selector, methods string) error {
	b, err := s.backend(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errShuttingDown
	}
	id := r.key() + "|" + sel.Key()
	old := s.pubs[id]
	if old != nil && old.methods == methods {
		return nil
	}
	u := s.providerURL(sel, methods)
	if err := b.Register(u); err != nil {
		return err
	}
	if old != nil {
		if err := b.Unregister(old.url); err != nil {
			// The new node is in; leaving the old one would advertise twice.
			if err2 := b.Unregister(u); err2 != nil {
				s.log.Warn("dubbo registry: cannot take back a new provider node", zap.Error(err2))
			}
			return err
		}
	}
	s.pubs[id] = &publication{b: b, url: u, methods: methods}
	s.log.Info("dubbo registry: published", zap.String("registry", r.key()), zap.String("url", u.String()))
	return nil
}

func (s *Service) unpublish(r registryRef, sel Selector) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := r.key() + "|" + sel.Key()
	p := s.pubs[id]
	if p == nil {
		return nil
	}
	if err := p.b.Unregister(p.url); err != nil {
		return err
	}
	delete(s.pubs, id)
	s.log.Info("dubbo registry: unpublished", zap.String("registry", r.key()), zap.String("url", p.url.String()))
	return nil
}

func (s *Service) subscribe(r registryRef, sel Selector, methods string) error {
	b, err := s.backend(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errShuttingDown
	}
	name, key := ClusterName(sel), r.key()
	sub := s.subs[name]
	if sub != nil {
		if reg := sub.regs[key]; reg != nil {
			if reg.methods == methods {
				return nil
			}
			// Same subscriber, new method list: replace the consumer node.
			u := s.consumerURL(sel, methods)
			if err := b.Register(u); err != nil {
				return err
			}
			if err := b.Unregister(reg.consumer); err != nil {
				s.log.Warn("dubbo registry: cannot remove the old consumer node", zap.Error(err))
			}
			reg.consumer, reg.methods = u, methods
			return nil
		}
	}
	consumer := s.consumerURL(sel, methods)
	if err := b.Register(consumer); err != nil {
		return err
	}
	reg := &subReg{b: b, consumer: consumer, methods: methods}
	initial, stop, err := b.Watch(sel.Interface, func(urls []*URL) { s.providersChanged(name, key, reg, urls) })
	if err != nil {
		s.undoRegister(b, consumer)
		return err
	}
	reg.stop, reg.hosts = stop, hostsOf(sel, initial)
	created := sub == nil
	if created {
		sub = &subscription{sel: sel, regs: map[string]*subReg{}}
		s.subs[name] = sub
	}
	sub.regs[key] = reg
	if err := s.applyLocked(false); err != nil {
		delete(sub.regs, key)
		if created {
			delete(s.subs, name)
		}
		stop()
		s.undoRegister(b, consumer)
		return err
	}
	s.log.Info("dubbo registry: subscribed", zap.String("registry", key), zap.String("cluster", name),
		zap.Strings("hosts", reg.hosts))
	return nil
}

func (s *Service) undoRegister(b backend, u *URL) {
	if err := b.Unregister(u); err != nil {
		s.log.Warn("dubbo registry: cannot take back a consumer node", zap.String("url", u.String()), zap.Error(err))
	}
}

func (s *Service) unsubscribe(r registryRef, sel Selector) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	name, key := ClusterName(sel), r.key()
	sub := s.subs[name]
	if sub == nil || sub.regs[key] == nil {
		return nil
	}
	reg := sub.regs[key]
	delete(sub.regs, key)
	if len(sub.regs) == 0 {
		delete(s.subs, name)
	}
	if err := s.applyLocked(true); err != nil {
		sub.regs[key] = reg
		s.subs[name] = sub
		return err
	}
	reg.stop()
	s.undoRegister(reg.b, reg.consumer)
	s.log.Info("dubbo registry: unsubscribed", zap.String("registry", key), zap.String("cluster", name))
	return nil
}

// providersChanged is a watch's report: the providers of one subscription changed.
func (s *Service) providersChanged(name, key string, reg *subReg, urls []*URL) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := s.subs[name]
	if s.closed || sub == nil || sub.regs[key] != reg {
		return // unsubscribed meanwhile
	}
	hosts := hostsOf(sub.sel, urls)
	if slices.Equal(hosts, reg.hosts) {
		return
	}
	reg.hosts = hosts
	all := sub.hosts()
	i, ok := slices.BinarySearchFunc(s.applied, name, func(c config.Cluster, n string) int { return strings.Compare(c.Name, n) })
	if !ok || slices.Equal(hostAddrs(s.applied[i].Hosts), all) {
		return
	}
	if err := s.apply.SetClusterHosts(name, toHosts(all)); err != nil {
		s.met.RegistryUpdates.WithLabelValues("failure").Inc()
		s.log.Error("dubbo registry: cannot update the cluster's hosts", zap.String("cluster", name), zap.Error(err))
		return
	}
	s.applied[i].Hosts = toHosts(all)
	s.met.RegistryUpdates.WithLabelValues("success").Inc()
	s.log.Info("dubbo registry: providers changed", zap.String("cluster", name), zap.Strings("hosts", all))
}

// hosts is the union of the providers every registry reports, sorted.
func (sub *subscription) hosts() []string {
	var all []string
	for _, r := range sub.regs {
		all = append(all, r.hosts...)
	}
	slices.Sort(all)
	return slices.Compact(all)
}

func hostsOf(sel Selector, urls []*URL) []string {
	var hs []string
	for _, u := range urls {
		if !sel.Matches(u) {
			continue
		}
		if hp, err := u.hostPort(); err == nil {
			hs = append(hs, hp)
		}
	}
	slices.Sort(hs)
	return slices.Compact(hs)
}

func toHosts(addrs []string) []config.Host {
	hs := make([]config.Host, len(addrs))
	for i, a := range addrs {
		hs[i] = config.Host{Address: a}
	}
	return hs
}

func hostAddrs(hs []config.Host) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Address
	}
	return out
}

// desired is the clusters and routes the subscriptions call for, in a stable order.
func (s *Service) desired() ([]config.Cluster, []config.Route) {
	names := make([]string, 0, len(s.subs))
	for n := range s.subs {
		names = append(names, n)
	}
	slices.Sort(names)
	cs := make([]config.Cluster, 0, len(names))
	for _, n := range names {
		cs = append(cs, config.Cluster{
			Name:   n,
			Type:   "SIMPLE",
			LBType: "LB_RANDOM", // MOSN's choice for registry clusters
			Hosts:  toHosts(s.subs[n].hosts()),
		})
	}
	// The most specific routes first: a request with a version or group finds its own
	// cluster before the interface's catch-all one.
	rs := make([]config.Route, 0, len(names))
	for _, n := range names {
		rs = append(rs, route(n, s.subs[n].sel))
	}
	slices.SortStableFunc(rs, func(a, b config.Route) int { return len(b.Match.Headers) - len(a.Match.Headers) })
	if len(rs) == 0 {
		rs = nil // SetRoutes: nil removes the owner's routes
	}
	return cs, rs
}

var exact = new(bool) // false: HeaderMatcher.Regex off

func route(cluster string, sel Selector) config.Route {
	hs := []config.HeaderMatcher{{Name: "service", Value: sel.Interface, Regex: exact}}
	if sel.Version != "" && sel.Version != "*" {
		hs = append(hs, config.HeaderMatcher{Name: "version", Value: sel.Version, Regex: exact})
	}
	switch {
	case sel.Group == "" || sel.Group == "*":
	case strings.Contains(sel.Group, ","):
		var alts []string
		for _, g := range strings.Split(sel.Group, ",") {
			alts = append(alts, regexp.QuoteMeta(g))
		}
		hs = append(hs, config.HeaderMatcher{Name: "group", Value: strings.Join(alts, "|")})
	default:
		hs = append(hs, config.HeaderMatcher{Name: "group", Value: sel.Group, Regex: exact})
	}
	return config.Route{
		Match: config.RouteMatch{Headers: hs},
		Route: &config.RouteAction{ClusterName: cluster},
	}
}

// applyLocked hands the desired clusters and routes to the server, all or nothing. Adding,
// clusters go first so no route names a missing cluster; removing, routes go first.
func (s *Service) applyLocked(removing bool) error {
	cs, rs := s.desired()
	if removing {
		if err := s.apply.SetRoutes(Owner, s.cfg.RouterConfigName, rs); err != nil {
			return fmt.Errorf("routes: %w", err)
		}
		if err := s.apply.SetClusters(Owner, cs); err != nil {
			if err2 := s.apply.SetRoutes(Owner, s.cfg.RouterConfigName, s.routes); err2 != nil {
				s.log.Error("dubbo registry: cannot restore the routes", zap.Error(err2))
			}
			return fmt.Errorf("clusters: %w", err)
		}
	} else {
		if err := s.apply.SetClusters(Owner, cs); err != nil {
			return fmt.Errorf("clusters: %w", err)
		}
		if err := s.apply.SetRoutes(Owner, s.cfg.RouterConfigName, rs); err != nil {
			if err2 := s.apply.SetClusters(Owner, s.applied); err2 != nil {
				s.log.Error("dubbo registry: cannot restore the clusters", zap.Error(err2))
			}
			return fmt.Errorf("routes: %w", err)
		}
	}
	s.applied, s.routes = cs, rs
	return nil
}

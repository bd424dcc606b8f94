package server

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/router"
)

// Owners of configuration. Each owns a set of clusters, routers, routes and listeners;
// names are unique across owners.
const (
	OwnerStatic        = "static" // the config file (New, Reload)
	OwnerXDS           = "xds"
	OwnerDubboRegistry = "dubbo_registry"
)

// dynamicMarker makes Validate treat references to clusters and routers defined
// elsewhere (another owner) as warnings.
var dynamicMarker = config.RawMessage(`{"owners":true}`)

// SetClusters replaces owner's clusters with cs, all or nothing. Clusters whose config is
// unchanged keep everything; changed ones keep the state of hosts whose address stays. An
// EDS cluster sent again without hosts keeps the hosts SetClusterHosts gave it. Removing a
// cluster a route still names is allowed (its requests get no-cluster answers) and logged.
func (s *Server) SetClusters(owner string, cs []config.Cluster) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs = cloneClusters(cs)
	c := &config.Config{ClusterManager: config.ClusterManager{Clusters: cs}, DynamicResources: dynamicMarker}
	c.ApplyDefaults()
	if _, err := c.Validate(); err != nil {
		return fmt.Errorf("%s clusters: %w", owner, err)
	}
	prev := map[string]config.Cluster{}
	for _, cl := range s.clusterCfgs[owner] {
		prev[cl.Name] = cl
	}
	for i := range cs {
		if o := s.clusterOwner(cs[i].Name); o != "" && o != owner {
			return fmt.Errorf("%s clusters[%d]: cluster %q is already defined by %s; names are unique across owners", owner, i, cs[i].Name, o)
		}
		if p, ok := prev[cs[i].Name]; ok && cs[i].Type == config.ClusterEDS && len(cs[i].Hosts) == 0 && len(p.Hosts) > 0 {
			cs[i].Hosts = p.Hosts
		}
	}
	next := maps.Clone(s.clusterCfgs)
	next[owner] = cs
	all := flatClusters(next)
	linger := s.nextLingering(all, nil, 0)
	if err := s.clusters.Apply(withLingering(all, linger)); err != nil {
		return fmt.Errorf("%s clusters: %w", owner, err)
	}
	s.clusterCfgs = next
	s.setLingering(linger)
	s.warnDangling(prev, cs)
	return nil
}

// SetClusterHosts gives one cluster (of any owner) a new host list; hosts whose address
// stays keep their state (health, ejection, in-flight counts).
func (s *Server) SetClusterHosts(cluster string, hosts []config.Host) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	owner := s.clusterOwner(cluster)
	if owner == "" {
		return fmt.Errorf("cluster %q: not found", cluster)
	}
	cs := slices.Clone(s.clusterCfgs[owner])
	i := slices.IndexFunc(cs, func(c config.Cluster) bool { return c.Name == cluster })
	cs[i].Hosts = slices.Clone(hosts)
	c := &config.Config{ClusterManager: config.ClusterManager{Clusters: []config.Cluster{cs[i]}}, DynamicResources: dynamicMarker}
	c.ApplyDefaults()
	if _, err := c.Validate(); err != nil {
		return fmt.Errorf("cluster %q hosts: %w", cluster, err)
	}
	cs[i] = c.ClusterManager.Clusters[0]
	if err := s.clusters.AddOrUpdate(cs[i]); err != nil {
		return fmt.Errorf("cluster %q hosts: %w", cluster, err)
	}
	s.clusterCfgs = maps.Clone(s.clusterCfgs)
	s.clusterCfgs[owner] = cs
	return nil
}

// SetRouters replaces owner's router configs; all route tables are rebuilt and swapped
// atomically. On error nothing changes.
func (s *Server) SetRouters(owner string, rs []config.RouterCfg) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs = slices.Clone(rs)
	c := &config.Config{Servers: []config.Server{{Routers: rs}}, DynamicResources: dynamicMarker}
	if _, err := c.Validate(); err != nil {
		return fmt.Errorf("%s routers: %w", owner, err)
	}
	for i := range rs {
		if o := s.routerOwner(rs[i].RouterConfigName); o != "" && o != owner {
			return fmt.Errorf("%s routers[%d]: router %q is already defined by %s; names are unique across owners", owner, i, rs[i].RouterConfigName, o)
		}
	}
	next := maps.Clone(s.routerCfgs)
	next[owner] = rs
	tables, err := composeTables(next, s.routes)
	if err != nil {
		return fmt.Errorf("%s routers: %w", owner, err)
	}
	s.routers.Replace(tables)
	s.routerCfgs = next
	s.warnMissingRouters()
	return nil
}

// SetRoutes places owner's routes first in the named router's "*" virtual host (or its
// first one); nil removes them. The router is rebuilt from its own config plus every
// owner's routes (owners in name order), then swapped in.
func (s *Server) SetRoutes(owner, routerName string, routes []config.Route) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := maps.Clone(s.routes)
	byOwner := maps.Clone(next[routerName])
	if byOwner == nil {
		byOwner = map[string][]config.Route{}
	}
	if routes == nil {
		delete(byOwner, owner)
	} else {
		if s.routerOwner(routerName) == "" {
			return fmt.Errorf("%s routes: router %q: not found", owner, routerName)
		}
		routes = slices.Clone(routes)
		c := &config.Config{DynamicResources: dynamicMarker, Servers: []config.Server{{Routers: []config.RouterCfg{{
			RouterConfigName: routerName,
			VirtualHosts:     []config.VirtualHost{{Name: owner, Domains: []string{"*"}, Routers: routes}},
		}}}}}
		if _, err := c.Validate(); err != nil {
			return fmt.Errorf("%s routes for router %q: %w", owner, routerName, relabel(err, "servers[0].routers[0].virtual_hosts[0].routers", "routes"))
		}
		byOwner[owner] = routes
	}
	if len(byOwner) == 0 {
		delete(next, routerName)
	} else {
		next[routerName] = byOwner
	}
	tables, err := composeTables(s.routerCfgs, next)
	if err != nil {
		return fmt.Errorf("%s routes for router %q: %w", owner, routerName, err)
	}
	s.routers.Replace(tables)
	s.routes = next
	return nil
}

// SetListeners replaces owner's listeners: unchanged ones (same canonical JSON) keep their
// sockets and connections; changed ones are rebuilt (a new filter; on the same address the
// old socket stops accepting and the new one binds it); removed ones stop accepting and
// drain; new ones serve at once when Run runs. Everything is built before anything changes.
func (s *Server) SetListeners(owner string, ls []config.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("server: stopped; listeners cannot change")
	}
	ls = slices.Clone(ls)
	c := &config.Config{DynamicResources: dynamicMarker, Servers: []config.Server{{Listeners: ls, Routers: s.allRouterCfgs()}},
		ClusterManager: config.ClusterManager{Clusters: flatClusters(s.clusterCfgs)}}
	c.ApplyDefaults()
	if _, err := c.Validate(); err != nil {
		return fmt.Errorf("%s listeners: %w", owner, relabel(err, "servers[0].listeners", "listeners"))
	}
	p, err := s.planListeners(owner, ls, "listeners")
	if err != nil {
		return fmt.Errorf("%s %w", owner, err)
	}
	return s.commitListeners(p)
}

// HoldReady keeps /ready false until release is called (idempotent), for an owner whose
// first configuration is still on its way.
func (s *Server) HoldReady(owner string) (release func()) {
	s.holds.Add(1)
	s.log.Info("readiness held", zap.String("owner", owner))
	var once sync.Once
	return func() {
		once.Do(func() {
			s.holds.Add(-1)
			s.log.Info("readiness released", zap.String("owner", owner))
		})
	}
}

// Reload replaces the static owner's clusters, routers and listeners with cfg's, all or
// nothing (cfg is defaulted and validated here; validation errors are a config.Problems
// naming each JSON path). The counter mosnlite_config_reloads_total counts the outcome.
func (s *Server) Reload(cfg *config.Config) error {
	err := s.reload(cfg)
	s.countReload(err)
	return err
}

func (s *Server) countReload(err error) {
	if err != nil {
		s.metrics.ConfigReloads.WithLabelValues("failure").Inc()
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				s.log.Error("config reload failed", zap.String("path", p.Path), zap.String("problem", p.Msg))
			}
		} else {
			s.log.Error("config reload failed", zap.Error(err))
		}
		return
	}
	s.metrics.ConfigReloads.WithLabelValues("success").Inc()
	s.metrics.ConfigLastReload.Set(float64(time.Now().UnixNano()) / 1e9)
	s.log.Info("config reloaded")
}

// ReloadFromSource re-reads the config with Options.Load and reloads it (SIGHUP, POST
// /api/v1/reload). A config that cannot be read or parsed counts as a failed reload.
func (s *Server) ReloadFromSource() error {
	if s.load == nil {
		err := errors.New("reload: no config source")
		s.countReload(err)
		return err
	}
	cfg, err := s.load()
	if err != nil {
		s.countReload(err)
		return err
	}
	return s.Reload(cfg)
}

func (s *Server) reload(cfg *config.Config) error {
	if cfg == nil {
		return errors.New("reload: no config")
	}
	cfg.ApplyDefaults()
	if _, err := cfg.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("reload: server stopped")
	}
	var rs []config.RouterCfg
	var ls []config.Listener
	if len(cfg.Servers) > 0 {
		rs, ls = cfg.Servers[0].Routers, cfg.Servers[0].Listeners
	}
	if err := checkPerFilter(rs, s.ext, "servers[0].routers"); err != nil {
		return err
	}
	if err := s.applyStatic(cfg.ClusterManager.Clusters, rs, ls, cfg.Drain); err != nil {
		return err
	}
	if !reflect.DeepEqual(cfg.Admin, s.cfg.Admin) {
		s.log.Warn("reload: the admin block changed; it takes effect at the next start")
	}
	return nil
}

// applyStatic swaps in the static owner's config, all or nothing. s.mu is held.
func (s *Server) applyStatic(cs []config.Cluster, rs []config.RouterCfg, ls []config.Listener, drain config.Drain) error {
	const owner = OwnerStatic
	cs, rs, ls = cloneClusters(cs), slices.Clone(rs), slices.Clone(ls)
	for i := range cs {
		if o := s.clusterOwner(cs[i].Name); o != "" && o != owner {
			return fmt.Errorf("cluster_manager.clusters[%d]: cluster %q (static) is already defined by %s; names are unique across owners", i, cs[i].Name, o)
		}
	}
	for i := range rs {
		if o := s.routerOwner(rs[i].RouterConfigName); o != "" && o != owner {
			return fmt.Errorf("servers[0].routers[%d]: router %q (static) is already defined by %s; names are unique across owners", i, rs[i].RouterConfigName, o)
		}
	}
	nextClusters := maps.Clone(s.clusterCfgs)
	nextClusters[owner] = cs
	all := flatClusters(nextClusters)
	if err := s.clusters.Check(all); err != nil {
		return fmt.Errorf("cluster_manager: %w", err)
	}
	nextRouters := maps.Clone(s.routerCfgs)
	nextRouters[owner] = rs
	tables, err := composeTables(nextRouters, s.routes)
	if err != nil {
		return fmt.Errorf("servers[0].routers: %w", err)
	}
	// New listeners may name routers that only this change brings: publish those first.
	// No running listener names them, so nothing serves differently until the swap.
	oldTables := map[string]*router.Table{}
	for _, n := range s.routers.Names() {
		t, _ := s.routers.Get(n)
		oldTables[n] = t
	}
	superset := maps.Clone(oldTables)
	for n, t := range tables {
		if _, ok := superset[n]; !ok {
			superset[n] = t
		}
	}
	s.routers.Replace(superset)
	p, err := s.planListeners(owner, ls, "servers[0].listeners")
	if err != nil {
		s.routers.Replace(oldTables)
		return err
	}
	// Make before break: the clusters this change drops linger for the drain timeout.
	// Requests still arrive on the connections of the listeners it replaces, routed by
	// the tables they had, and a request matched just before the swap looks its cluster
	// up just after it: neither may find the cluster gone.
	prevClusters := s.clusterCfgs[owner]
	linger := s.nextLingering(all, droppedClusters(prevClusters, cs), drainTimeoutOf(drain))
	if err := s.clusters.Apply(withLingering(all, linger)); err != nil {
		p.discard()
		s.routers.Replace(oldTables)
		return fmt.Errorf("cluster_manager: %w", err)
	}
	s.clusterCfgs = nextClusters
	s.setLingering(linger)
	// The listeners this change replaces drain with the routes they have: they are told
	// to go before their routers may be dropped (a draining proxy keeps the table it had).
	goAwayFilters(p.retire)
	s.routers.Replace(tables)
	s.routerCfgs = nextRouters
	s.drain = drain
	err = s.commitListeners(p)
	s.warnDangling(mapClusters(prevClusters), cs)
	s.warnMissingRouters()
	return err
}

// composeTables builds every owner's routers with the owners' extra routes in place.
func composeTables(routerCfgs map[string][]config.RouterCfg, routes map[string]map[string][]config.Route) (map[string]*router.Table, error) {
	var all []config.RouterCfg
	for _, owner := range slices.Sorted(maps.Keys(routerCfgs)) {
		for _, rc := range routerCfgs[owner] {
			all = append(all, withRoutes(rc, routes[rc.RouterConfigName]))
		}
	}
	return router.Build(all)
}

// withRoutes returns rc with the owners' routes first in its "*" virtual host (or its
// first one; a router without virtual hosts gets a "*" one).
func withRoutes(rc config.RouterCfg, byOwner map[string][]config.Route) config.RouterCfg {
	if len(byOwner) == 0 {
		return rc
	}
	var extra []config.Route
	for _, owner := range slices.Sorted(maps.Keys(byOwner)) {
		extra = append(extra, byOwner[owner]...)
	}
	rc.VirtualHosts = slices.Clone(rc.VirtualHosts)
	if len(rc.VirtualHosts) == 0 {
		rc.VirtualHosts = []config.VirtualHost{{Name: "dynamic", Domains: []string{"*"}}}
	}
	at := 0
	for i, vh := range rc.VirtualHosts {
		if slices.Contains(vh.Domains, "*") {
			at = i
			break
		}
	}
	vh := &rc.VirtualHosts[at]
	vh.Routers = append(slices.Clip(extra), vh.Routers...)
	return rc
}

func (s *Server) clusterOwner(name string) string {
	for owner, cs := range s.clusterCfgs {
		for i := range cs {
			if cs[i].Name == name {
				return owner
			}
		}
	}
	return ""
}

func (s *Server) routerOwner(name string) string {
	for owner, rs := range s.routerCfgs {
		for i := range rs {
			if rs[i].RouterConfigName == name {
				return owner
			}
		}
	}
	return ""
}

func (s *Server) allRouterCfgs() []config.RouterCfg {
	var all []config.RouterCfg
	for _, owner := range slices.Sorted(maps.Keys(s.routerCfgs)) {
		all = append(all, s.routerCfgs[owner]...)
	}
	return all
}

func flatClusters(m map[string][]config.Cluster) []config.Cluster {
	var all []config.Cluster
	for _, owner := range slices.Sorted(maps.Keys(m)) {
		all = append(all, m[owner]...)
	}
	return all
}

func mapClusters(cs []config.Cluster) map[string]config.Cluster {
	m := make(map[string]config.Cluster, len(cs))
	for _, c := range cs {
		m[c.Name] = c
	}
	return m
}

// cloneClusters copies cs deeply enough that ApplyDefaults (host weights) does not write
// into the caller's slices.
func cloneClusters(cs []config.Cluster) []config.Cluster {
	cs = slices.Clone(cs)
	for i := range cs {
		cs[i].Hosts = slices.Clone(cs[i].Hosts)
	}
	return cs
}

// relabel rewrites the path prefix of validation problems made on a synthetic config so
// they name the caller's argument, in the path and in the message (which may name another
// path: "already bound by the listener at ...").
func relabel(err error, from, to string) error {
	var ps config.Problems
	if !errors.As(err, &ps) {
		return err
	}
	out := make(config.Problems, len(ps))
	for i, p := range ps {
		if rest, ok := strings.CutPrefix(p.Path, from); ok {
			p.Path = to + rest
		}
		p.Msg = strings.ReplaceAll(p.Msg, from, to)
		out[i] = p
	}
	return out
}

// warnDangling logs clusters that were removed while a route or listener still names
// them. s.mu is held.
func (s *Server) warnDangling(prev map[string]config.Cluster, now []config.Cluster) {
	if len(prev) == 0 {
		return
	}
	kept := mapClusters(now)
	var gone []string
	for name := range prev {
		if _, ok := kept[name]; !ok {
			gone = append(gone, name)
		}
	}
	if len(gone) == 0 {
		return
	}
	refs := s.clusterRefs()
	for _, name := range gone {
		if by, ok := refs[name]; ok {
			s.log.Warn("cluster removed while still referenced; its requests get no-cluster answers",
				zap.String("cluster", name), zap.String("referenced_by", by))
		}
	}
}

// clusterRefs maps cluster names to one thing that references them. s.mu is held.
func (s *Server) clusterRefs() map[string]string {
	refs := map[string]string{}
	for _, rc := range s.allRouterCfgs() {
		rc = withRoutes(rc, s.routes[rc.RouterConfigName])
		for _, vh := range rc.VirtualHosts {
			for _, r := range vh.Routers {
				if r.Route == nil {
					continue
				}
				by := fmt.Sprintf("router %q virtual host %q", rc.RouterConfigName, vh.Name)
				if r.Route.ClusterName != "" {
					refs[r.Route.ClusterName] = by
				}
				for _, w := range r.Route.WeightedClusters {
					refs[w.Cluster.Name] = by
				}
			}
		}
	}
	for name, ll := range s.live {
		for _, fc := range ll.cfg.FilterChains {
			for _, f := range fc.Filters {
				var c struct {
					Cluster string `json:"cluster"`
				}
				if (f.Type == config.FilterTCPProxy || f.Type == config.FilterUDPProxy) && config.Unmarshal(f.Config, &c) == nil && c.Cluster != "" {
					refs[c.Cluster] = fmt.Sprintf("listener %q", name)
				}
			}
		}
	}
	return refs
}

// warnMissingRouters logs proxy listeners whose router is gone. s.mu is held.
func (s *Server) warnMissingRouters() {
	for name, ll := range s.live {
		for _, fc := range ll.cfg.FilterChains {
			for _, f := range fc.Filters {
				var pc config.ProxyConfig
				if f.Type != config.FilterProxy || config.Unmarshal(f.Config, &pc) != nil {
					continue
				}
				if _, ok := s.routers.Get(pc.RouterConfigName); !ok {
					s.log.Warn("listener's router is gone; its requests get no-route answers",
						zap.String("listener", name), zap.String("router", pc.RouterConfigName))
				}
			}
		}
	}
}

// lingerCluster is a cluster a static reload dropped, kept in the cluster manager until
// until (see applyStatic).
type lingerCluster struct {
	cfg   config.Cluster
	until time.Time
}

// droppedClusters returns the clusters of prev that now does not name.
func droppedClusters(prev, now []config.Cluster) []config.Cluster {
	var out []config.Cluster
	for _, c := range prev {
		if !slices.ContainsFunc(now, func(n config.Cluster) bool { return n.Name == c.Name }) {
			out = append(out, c)
		}
	}
	return out
}

// nextLingering returns the lingering set once all is applied: the current one less the
// clusters all names again, plus dropped, kept for d. s.mu is held.
func (s *Server) nextLingering(all, dropped []config.Cluster, d time.Duration) map[string]lingerCluster {
	if len(s.lingering) == 0 && len(dropped) == 0 {
		return nil
	}
	next := make(map[string]lingerCluster, len(s.lingering)+len(dropped))
	for n, l := range s.lingering {
		next[n] = l
	}
	until := time.Now().Add(d)
	for _, c := range dropped {
		next[c.Name] = lingerCluster{cfg: c, until: until}
	}
	for _, c := range all {
		delete(next, c.Name)
	}
	return next
}

// withLingering returns all and then the lingering clusters, in name order.
func withLingering(all []config.Cluster, linger map[string]lingerCluster) []config.Cluster {
	if len(linger) == 0 {
		return all
	}
	out := slices.Clone(all)
	for _, n := range slices.Sorted(maps.Keys(linger)) {
		out = append(out, linger[n].cfg)
	}
	return out
}

// setLingering makes linger the lingering set, logs the clusters that start to linger,
// and arms the sweep for the first to expire. s.mu is held.
func (s *Server) setLingering(linger map[string]lingerCluster) {
	var started []string
	for n := range linger {
		if _, ok := s.lingering[n]; !ok {
			started = append(started, n)
		}
	}
	if len(started) > 0 {
		slices.Sort(started)
		s.log.Info("clusters dropped by the new config stay until its replaced listeners drained",
			zap.Strings("clusters", started), zap.Time("until", linger[started[0]].until))
	}
	s.lingering = linger
	if s.lingerTimer != nil {
		s.lingerTimer.Stop()
		s.lingerTimer = nil
	}
	if len(linger) == 0 || s.stopped {
		return
	}
	var first time.Time
	for _, l := range linger {
		if first.IsZero() || l.until.Before(first) {
			first = l.until
		}
	}
	s.lingerTimer = time.AfterFunc(time.Until(first), s.sweepLingering)
}

// sweepLingering removes the lingering clusters whose time is up.
func (s *Server) sweepLingering() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	now := time.Now()
	next := make(map[string]lingerCluster, len(s.lingering))
	var gone []string
	for n, l := range s.lingering {
		if now.Before(l.until) {
			next[n] = l
		} else {
			gone = append(gone, n)
		}
	}
	if len(gone) > 0 {
		slices.Sort(gone)
		if err := s.clusters.Apply(withLingering(flatClusters(s.clusterCfgs), next)); err != nil {
			// Removals only: not expected. They are tried again at the next change.
			s.log.Error("removing the clusters dropped by a reload failed", zap.Strings("clusters", gone), zap.Error(err))
		} else {
			s.log.Info("clusters dropped by a reload removed", zap.Strings("clusters", gone))
		}
	}
	s.setLingering(next)
}

package server

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/extension"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// Check builds what New builds from cfg, short of binding sockets and starting anything:
// the clusters (as Apply would take them), the routers, every static listener's network
// filter with its stream filter chain, TLS contexts and timeouts, and the dubbo_registry
// entry. It returns the errors New would stop at (every listener's, not only the first),
// each with its JSON path, one per line, so that
// `mosnlite validate` refuses what `start` refuses, with one exception: a stream filter
// type the format knows but this build lacks (MOSN's mirror) is left out here, for the
// caller to warn about (MOSN's own sample configs name it; start refuses it). Certificate
// files are read; no listener is bound, no event loop or health check runs and no name
// is resolved.
func Check(cfg *config.Config, ext *extension.Set) error {
	if ext == nil {
		return fmt.Errorf("server: no extensions")
	}
	s := emptyServer(cfg, Options{Extensions: ext, NoEventLoops: true, Log: zap.NewNop(), Metrics: metrics.New()})
	s.clusters = cluster.NewManager(cluster.Options{LBs: ext.LoadBalancers, Metrics: s.metrics, Log: s.log})
	var errs []error
	if err := s.clusters.Check(cloneClusters(cfg.ClusterManager.Clusters)); err != nil {
		errs = append(errs, fmt.Errorf("cluster_manager: %w", err))
	}
	if len(cfg.Servers) > 0 {
		rs := slices.Clone(cfg.Servers[0].Routers)
		if tables, err := router.Build(rs); err != nil {
			errs = append(errs, fmt.Errorf("servers[0].routers: %w", err))
		} else {
			s.routers.Replace(tables)
			s.routerCfgs[OwnerStatic] = rs
			s.addRegistryRouter() // as New: the listener that names the registry's router builds
		}
		if err := checkPerFilter(cfg.Servers[0].Routers, ext, "servers[0].routers"); err != nil {
			errs = append(errs, err)
		}
		ls := cfg.Servers[0].Listeners
		for i := range ls {
			lc := withDefaults(&ls[i])
			lc.StreamFilters = slices.DeleteFunc(slices.Clone(lc.StreamFilters), func(f config.TypedConfig) bool {
				return Unbuilt(ext, f.Type)
			})
			_, nf, err := s.buildFilter(lc, ext)
			closeFilter(nf)
			if err != nil {
				errs = append(errs, fmt.Errorf("servers[0].listeners[%d] (%s): %w", i, lc.Name, err))
			}
		}
	}
	if _, _, err := registryConfig(cfg); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Unbuilt reports whether typ is a stream filter type the config format knows and this
// build does not implement (retired types are skipped by every build): validate warns
// about it, start refuses it.
func Unbuilt(ext *extension.Set, typ string) bool {
	if slices.Contains(config.RetiredStreamFilterTypes, typ) || !slices.Contains(config.StreamFilterTypes, typ) {
		return false
	}
	_, err := ext.StreamFilters.Get(typ)
	return err != nil
}

// checkPerFilter decodes every route's per_filter_config entry with its stream filter's
// own decoder. At run time an entry that does not decode is skipped (the listener's config
// applies, pkg/filter.RouteConfigs), so this is where it is refused, with its JSON path.
// Types this build does not have are left to validation's warnings.
func checkPerFilter(rs []config.RouterCfg, ext *extension.Set, path string) error {
	var errs []error
	for i, rc := range rs {
		for j, vh := range rc.VirtualHosts {
			for k, r := range vh.Routers {
				for _, name := range slices.Sorted(maps.Keys(r.PerFilterConfig)) {
					mk, err := ext.StreamFilters.Get(name)
					if err != nil {
						continue
					}
					if _, err := mk(r.PerFilterConfig[name]); err != nil {
						errs = append(errs, fmt.Errorf("%s[%d].virtual_hosts[%d].routers[%d].per_filter_config.%s: %w", path, i, j, k, name, err))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

package server

import (
	"context"
	"fmt"
	"maps"
	"sync"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/registry/dubbo"
)

// registry.go wires the Dubbo registry endpoint (pkg/registry/dubbo) into the server: New
// calls initRegistry, which reads extends[] and, for a "dubbo_registry" entry, checks its
// config and binds the API socket (so a port conflict fails start-up); Run calls runRegistry
// in its background group, so the API stops with the server. The registry applies its
// clusters and routes through SetClusters, SetClusterHosts, SetRouters and SetRoutes under
// the owner "dubbo_registry".

// registries holds each server's registry between New and Run.
var registries sync.Map // *Server → *dubbo.Service

var _ dubbo.Applier = (*Server)(nil)

// initRegistry builds the registry when prev (the error of the init steps before it) is
// nil and the config asks for one. On its own failure it releases what the earlier steps
// left for Run.
func (s *Server) initRegistry(prev error) error {
	if prev != nil {
		return prev
	}
	svc, err := s.buildRegistry()
	if err != nil {
		xdsClients.Delete(s) // built by initXDS for a Run that will not come
		return err
	}
	if svc != nil {
		registries.Store(s, svc)
	}
	return nil
}

// registryConfig finds the config's dubbo_registry entry and decodes it: i is its index in
// extends, -1 when there is none.
func registryConfig(cfg *config.Config) (i int, c dubbo.Config, err error) {
	i = -1
	for j, e := range cfg.Extends {
		if e.Type != dubbo.ExtendType {
			continue
		}
		if i >= 0 {
			return i, c, fmt.Errorf("extends[%d]: a second %s entry; one registry endpoint serves them all", j, dubbo.ExtendType)
		}
		i = j
	}
	if i < 0 {
		return i, c, nil
	}
	if c, err = dubbo.ParseConfig(cfg.Extends[i].Config); err != nil {
		return i, c, fmt.Errorf("extends[%d].config: %w", i, err)
	}
	return i, c, nil
}

func (s *Server) buildRegistry() (*dubbo.Service, error) {
	i, c, err := registryConfig(s.cfg)
	if err != nil || i < 0 {
		return nil, err
	}
	if !c.Enabled() {
		s.log.Info("dubbo registry: enable is false; not started")
		return nil, nil
	}
	s.mu.Lock()
	defined := s.routerOwner(c.RouterConfigName) != ""
	s.mu.Unlock()
	svc, err := dubbo.New(c, dubbo.Deps{
		Applier:      s,
		Log:          s.log.Named("dubbo_registry"),
		Metrics:      s.metrics,
		CreateRouter: !defined,
	})
	if err != nil {
		return nil, fmt.Errorf("extends[%d]: %w", i, err)
	}
	return svc, nil
}

// addRegistryRouter creates the registry's router (router_config_name, default "dubbo") as
// the dubbo_registry owner's when no config defines it, as MOSN does at start, so the egress
// listener that names it can be built. Config errors are left for initRegistry to report.
func (s *Server) addRegistryRouter() {
	for _, e := range s.cfg.Extends {
		if e.Type != dubbo.ExtendType {
			continue
		}
		c, err := dubbo.ParseConfig(e.Config)
		if err != nil || !c.Enabled() || s.routerOwner(c.RouterConfigName) != "" {
			return
		}
		next := maps.Clone(s.routerCfgs)
		next[OwnerDubboRegistry] = []config.RouterCfg{{
			RouterConfigName: c.RouterConfigName,
			VirtualHosts:     []config.VirtualHost{{Name: c.RouterConfigName, Domains: []string{"*"}}},
		}}
		tables, err := composeTables(next, s.routes)
		if err != nil {
			return
		}
		s.routers.Replace(tables)
		s.routerCfgs = next
		return
	}
}

// runRegistry serves the server's registry API, if any, until ctx ends.
func (s *Server) runRegistry(ctx context.Context) error {
	v, ok := registries.LoadAndDelete(s)
	if !ok {
		return nil
	}
	return v.(*dubbo.Service).Run(ctx)
}

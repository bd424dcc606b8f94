package config

// extendRouters adds the routers an extends entry creates at run time, so listeners may
// name them: dubbo_registry creates its router_config_name ("dubbo", MOSN's dubbo egress
// router) when no config defines it, as MOSN does.
func (v *validator) extendRouters(routers map[string]string) {
	for i, e := range v.c.Extends {
		if e.Type != "dubbo_registry" {
			continue
		}
		var rc struct {
			RouterConfigName string `json:"router_config_name"`
		}
		if len(e.Config) > 0 && Unmarshal(e.Config, &rc) != nil {
			continue // the registry reports its own config errors at start
		}
		if rc.RouterConfigName == "" {
			rc.RouterConfigName = "dubbo"
		}
		if _, ok := routers[rc.RouterConfigName]; !ok {
			routers[rc.RouterConfigName] = index("extends", i)
		}
	}
}

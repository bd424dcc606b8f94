package cluster

import "github.com/mosnlite/mosnlite/pkg/config"

// Config returns the configuration the cluster currently runs with (a copy of the struct;
// its slices and maps are shared and must not be modified). Callers read settings that
// belong to them, such as conn_pool_size for the multiplexed RPC pool.
func (c *Cluster) Config() config.Cluster { return c.snap.Load().set.cfg }

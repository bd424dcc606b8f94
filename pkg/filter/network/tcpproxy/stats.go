package tcpproxy

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mosnlite/mosnlite/pkg/filter"
)

// clusterStats are the resolved metric children for one (listener, cluster) pair.
type clusterStats struct {
	rx, tx   prometheus.Counter // rx: client → upstream; tx: upstream → client
	sessions prometheus.Counter
}

// statsCache resolves label children once per cluster name, so sessions only do atomic adds.
// The map is per filter (per listener), written on the first session to a cluster.
type statsCache struct {
	d        filter.Deps
	listener string
	m        sync.Map // cluster name → *clusterStats
	discard  *clusterStats
}

func newStatsCache(d filter.Deps, listener string) *statsCache {
	c := &statsCache{d: d, listener: listener}
	if d.Metrics == nil {
		nop := prometheus.NewCounter(prometheus.CounterOpts{Name: "discard"})
		c.discard = &clusterStats{rx: nop, tx: nop, sessions: nop}
	}
	return c
}

func (c *statsCache) get(cluster string) *clusterStats {
	if c.discard != nil {
		return c.discard
	}
	if v, ok := c.m.Load(cluster); ok {
		return v.(*clusterStats)
	}
	m := c.d.Metrics
	st := &clusterStats{
		rx:       m.TCPProxyBytes.WithLabelValues(c.listener, cluster, "rx"),
		tx:       m.TCPProxyBytes.WithLabelValues(c.listener, cluster, "tx"),
		sessions: m.TCPProxySessions.WithLabelValues(c.listener, cluster),
	}
	v, _ := c.m.LoadOrStore(cluster, st)
	return v.(*clusterStats)
}

package tcpproxy

import (
	"io"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/metrics"
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
	closed   atomic.Bool // the filter was closed: no new series
}

// nopStats counts nowhere.
var nopStats = func() *clusterStats {
	nop := prometheus.NewCounter(prometheus.CounterOpts{Name: "discard"})
	return &clusterStats{rx: nop, tx: nop, sessions: nop}
}()

func newStatsCache(d filter.Deps, listener string) *statsCache {
	c := &statsCache{d: d, listener: listener}
	if d.Metrics == nil {
		c.discard = nopStats
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
	if c.closed.Load() {
		return nopStats // a session that outlived the filter's Close: do not make the series again
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

// The series are labelled with the listener and the cluster, and the metrics set deletes
// them with the listener (DeleteListener). A listener whose config changes keeps its name
// and gets a new filter; a cluster the new routes no longer name would keep its series,
// never updated again, for the listener's life. So each open filter counts the clusters
// its routes name, per listener, and a filter's Close (the server calls it once its
// listener was replaced or removed and has drained) deletes the series of the clusters
// that no other open filter of that listener names.

type routedKey struct {
	m        *metrics.Set
	listener string
}

var routed struct {
	mu sync.Mutex
	n  map[routedKey]map[string]int // open filters whose routes name the cluster
}

// clusterNames returns the distinct clusters f's routes name.
func (f *Filter) clusterNames() []string {
	var out []string
	for _, r := range f.routes {
		dup := false
		for _, n := range out {
			dup = dup || n == r.cluster
		}
		if !dup {
			out = append(out, r.cluster)
		}
	}
	return out
}

// openSeries counts f's clusters for its listener (Factory).
func (f *Filter) openSeries() {
	if f.stats.discard != nil {
		return
	}
	k := routedKey{f.stats.d.Metrics, f.listener}
	routed.mu.Lock()
	defer routed.mu.Unlock()
	if routed.n == nil {
		routed.n = map[routedKey]map[string]int{}
	}
	byName := routed.n[k]
	if byName == nil {
		byName = map[string]int{}
		routed.n[k] = byName
	}
	for _, name := range f.clusterNames() {
		byName[name]++
	}
}

var _ io.Closer = (*Filter)(nil)

// Close implements io.Closer: the filter serves no more sessions. The series of the
// clusters no other open filter of the listener routes to are deleted. Idempotent.
func (f *Filter) Close() error {
	if f.stats.discard != nil || f.stats.closed.Swap(true) {
		return nil
	}
	m := f.stats.d.Metrics
	k := routedKey{m, f.listener}
	routed.mu.Lock()
	defer routed.mu.Unlock()
	byName := routed.n[k]
	for _, name := range f.clusterNames() {
		if byName[name]--; byName[name] > 0 {
			continue
		}
		delete(byName, name)
		m.TCPProxyBytes.DeleteLabelValues(f.listener, name, "rx")
		m.TCPProxyBytes.DeleteLabelValues(f.listener, name, "tx")
		m.TCPProxySessions.DeleteLabelValues(f.listener, name)
	}
	if len(byName) == 0 {
		delete(routed.n, k)
	}
	return nil
}

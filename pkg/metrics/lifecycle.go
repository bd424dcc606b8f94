package metrics

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// Series of a removed cluster or listener are deleted with it (DeleteCluster,
// DeleteListener), so that config churn does not grow the metric set for good.
//
// Components resolve their children once, when they are built, and keep them. A deleted
// child is no longer exported but stays usable: a connection that outlives its cluster or
// listener still decrements the gauge it incremented, on the child it holds, and that
// update goes nowhere instead of creating the series again at -1. The next WithLabelValues
// for the same labels (a cluster re-added under the same name) makes a fresh child at 0.

// scopedVec is a vector with a cluster or listener label.
type scopedVec struct {
	vec interface {
		DeleteLabelValues(lvs ...string) bool
		DeletePartialMatch(labels prometheus.Labels) int
	}
	only bool // the scope label is the vector's only label: delete by value, no scan
}

// scope files v under the entity whose removal deletes its series. A vector labelled with
// both a listener and a cluster (the L4 filters' series) is a listener's: it leaves with
// the listener (a tcp_proxy filter also deletes, when it is closed, the series of clusters
// no open filter of its listener routes to).
func (f *factory) scope(v scopedVec, labels []string) {
	v.only = len(labels) == 1
	switch {
	case slices.Contains(labels, "listener"):
		f.byListener = append(f.byListener, v)
	case slices.Contains(labels, "cluster"):
		f.byCluster = append(f.byCluster, v)
	}
}

// DeleteCluster deletes the series of cluster name: those labelled with the cluster and no
// listener (upstream_*, dns_resolve_failures_total; per host ones included). The cluster
// manager calls it when it removes the cluster, and when it builds one, so that a name
// used again starts at 0 even if a late update made a series again in between.
func (s *Set) DeleteCluster(name string) { deleteScope(s.byCluster, "cluster", name) }

// DeleteListener deletes the series of listener name (downstream_*, tcp_proxy_*,
// udp_proxy_*, rpc_*, ...). The server calls it when a listener is removed, not when it is
// replaced by one of the same name, and again once the removed listener has drained.
func (s *Set) DeleteListener(name string) { deleteScope(s.byListener, "listener", name) }

func deleteScope(vs []scopedVec, label, value string) {
	for _, v := range vs {
		if v.only {
			v.vec.DeleteLabelValues(value)
		} else {
			v.vec.DeletePartialMatch(prometheus.Labels{label: value})
		}
	}
}

package metrics_test

import (
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mosnlite/mosnlite/pkg/metrics"
)

var variableLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)

// labelsOf returns the variable labels of a vector's only Desc.
func labelsOf(t *testing.T, c prometheus.Collector) []string {
	t.Helper()
	ch := make(chan *prometheus.Desc, 1)
	c.Describe(ch)
	close(ch)
	m := variableLabels.FindStringSubmatch((<-ch).String())
	if m == nil || m[1] == "" {
		return nil
	}
	return strings.Split(m[1], ",")
}

// count gathers s and counts the series with label=value.
func count(t *testing.T, s *metrics.Set, label, value string) int {
	t.Helper()
	mfs, err := s.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if slices.ContainsFunc(m.GetLabel(), func(lp *dto.LabelPair) bool { return lp.GetName() == label && lp.GetValue() == value }) {
				n++
			}
		}
	}
	return n
}

// TestDeleteCoversEveryScopedVector makes a series in every vector of the Set that has a
// cluster or listener label (found by reflection, so a vector added later is covered),
// then removes the cluster and the listener: nothing labelled with them is left, and a
// cluster or listener of another name keeps its series.
func TestDeleteCoversEveryScopedVector(t *testing.T) {
	s := metrics.New()
	v := reflect.ValueOf(s).Elem()
	perScope := map[string]int{}
	byName := map[string]bool{} // vectors with a cluster or listener label
	for i := range v.NumField() {
		if !v.Type().Field(i).IsExported() {
			continue
		}
		var c prometheus.Collector
		switch vec := v.Field(i).Interface().(type) {
		case *prometheus.CounterVec:
			c = vec
		case *prometheus.GaugeVec:
			c = vec
		default:
			continue // the registry, plain counters and gauges
		}
		labels := labelsOf(t, c)
		if !slices.Contains(labels, "cluster") && !slices.Contains(labels, "listener") {
			continue
		}
		for _, name := range []string{"gone", "kept"} {
			lvs := make([]string, len(labels))
			for j, l := range labels {
				lvs[j] = "v-" + l
				if l == "cluster" || l == "listener" {
					lvs[j] = name
				}
			}
			switch vec := c.(type) {
			case *prometheus.CounterVec:
				vec.WithLabelValues(lvs...).Inc()
			case *prometheus.GaugeVec:
				vec.WithLabelValues(lvs...).Inc()
			default:
				t.Fatalf("%s: unexpected collector %T", v.Type().Field(i).Name, c)
			}
		}
		for _, l := range labels {
			perScope[l]++
		}
		byName[v.Type().Field(i).Name] = true
	}
	if perScope["cluster"] < 10 || perScope["listener"] < 10 {
		t.Fatalf("found %d cluster and %d listener vectors; the reflection misses some", perScope["cluster"], perScope["listener"])
	}
	keptCluster, keptListener := count(t, s, "cluster", "kept"), count(t, s, "listener", "kept")

	gone := count(t, s, "listener", "gone")
	s.DeleteCluster("gone")
	// A listener's L4 series name a cluster too: they leave with the listener, not here.
	if n := count(t, s, "listener", "gone"); n != gone {
		t.Fatalf("DeleteCluster took %d series that have a listener label", gone-n)
	}
	if n, l4 := count(t, s, "cluster", "gone"), perScope["cluster"]+perScope["listener"]-len(byName); n != l4 {
		t.Fatalf("after DeleteCluster, %d series name the cluster; want only the %d that have a listener label too", n, l4)
	}
	s.DeleteListener("gone")
	if n := count(t, s, "cluster", "gone"); n != 0 {
		t.Fatalf("%d series of the removed cluster are left", n)
	}
	if n := count(t, s, "listener", "gone"); n != 0 {
		t.Fatalf("%d series of the removed listener are left", n)
	}
	if n := count(t, s, "cluster", "kept"); n != keptCluster {
		t.Fatalf("another cluster has %d series after the removal; want %d", n, keptCluster)
	}
	if n := count(t, s, "listener", "kept"); n != keptListener {
		t.Fatalf("another listener has %d series after the removal; want %d", n, keptListener)
	}
}

// TestHeldChildAfterDelete: a child kept by a component that outlives its cluster takes
// late updates without exporting them; the name used again starts at 0.
func TestHeldChildAfterDelete(t *testing.T) {
	s := metrics.New()
	active := s.UpstreamCxActive.WithLabelValues("c")
	active.Inc()
	s.DeleteCluster("c")
	active.Dec() // the connection closes after the removal
	if n := count(t, s, "cluster", "c"); n != 0 {
		t.Fatalf("a late update on a held child exported %d series", n)
	}
	var m dto.Metric
	if err := s.UpstreamCxActive.WithLabelValues("c").Write(&m); err != nil {
		t.Fatal(err)
	}
	if v := m.GetGauge().GetValue(); v != 0 {
		t.Fatalf("cluster c again: upstream_connections_active %v; want 0", v)
	}
}

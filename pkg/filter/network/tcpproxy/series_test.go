package tcpproxy_test

import (
	"io"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mosnlite/mosnlite/pkg/network"
)

// A listener whose tcp_proxy config changes keeps its name and gets a new filter; the
// server closes the old one (io.Closer) once it has drained. The series of a cluster the
// new routes no longer name are then deleted; those of a cluster the new filter still
// routes to stay and keep counting. A new filter closed without serving (a config change
// that failed) deletes nothing the serving filter uses.
func TestClosedFilterDeletesSeriesOfDroppedClusters(t *testing.T) {
	modes(t, func(t *testing.T) {
		echo := startUpstream(t, func(c net.Conn) { io.Copy(c, c) })
		e := newEnv(t, simpleCluster("c1", "", echo.addr()), simpleCluster("c2", "", echo.addr()))
		h := &lazyHandler{}
		ln := e.listen(lnName, h)
		// Loopback clients go to c1; c2 is named too (the fallback).
		old := e.build(lnName, `{"routes":[{"cluster":"c1","source_addrs":[{"address":"127.0.0.0","length":8}]}],"cluster":"c2"}`)
		h.set(old)
		exchange(t, ln)
		if n, ok := exported(e.m.TCPProxySessions, "c1"); !ok || n != 1 {
			t.Fatalf("sessions{c1} = %v (exported: %v), want 1", n, ok)
		}

		cur := e.build(lnName, `{"cluster":"c2"}`) // the routes change: c1 is dropped
		h.set(cur)
		exchange(t, ln)
		closeFilter(old)
		for _, v := range []prometheus.Collector{e.m.TCPProxySessions, e.m.TCPProxyBytes} {
			if _, ok := exported(v, "c1"); ok {
				t.Errorf("a series of c1, which the listener no longer routes to, is still exported")
			}
		}
		exchange(t, ln)
		if n, ok := exported(e.m.TCPProxySessions, "c2"); !ok || n != 2 {
			t.Errorf("sessions{c2} = %v (exported: %v), want 2", n, ok)
		}

		closeFilter(e.build(lnName, `{"cluster":"c2"}`)) // built, never served
		exchange(t, ln)
		if n, ok := exported(e.m.TCPProxySessions, "c2"); !ok || n != 3 {
			t.Errorf("after a discarded build: sessions{c2} = %v (exported: %v), want 3", n, ok)
		}
		if n, ok := exported(e.m.TCPProxyBytes, "c2"); !ok || n != 3*2 {
			t.Errorf("after a discarded build: bytes{c2,rx} = %v (exported: %v), want 6", n, ok)
		}
	})
}

// exchange runs one session through ln: 2 bytes each way.
func exchange(t *testing.T, ln *network.Listener) {
	t.Helper()
	c := dial(t, ln)
	c.Write([]byte("hi"))
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	idle(t, ln)
}

// closeFilter closes f as the server closes a filter it retires: when it is an io.Closer.
func closeFilter(f any) {
	if c, ok := f.(io.Closer); ok {
		c.Close()
	}
}

// exported reads v's series for listener lnName and cluster (direction rx for bytes)
// without creating it: false when it is not exported.
func exported(v prometheus.Collector, cluster string) (float64, bool) {
	ch := make(chan prometheus.Metric, 64)
	go func() { v.Collect(ch); close(ch) }()
	var val float64
	found := false
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range d.Label {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["listener"] == lnName && labels["cluster"] == cluster &&
			(labels["direction"] == "" || labels["direction"] == "rx") {
			val, found = d.Counter.GetValue(), true
		}
	}
	return val, found
}

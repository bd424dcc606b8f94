package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// seriesOf gathers m and returns the series of metric mosnlite_<name> that have
// label=value, as "name{labels} value". It makes no child, as a label lookup would.
func seriesOf(t *testing.T, m *metrics.Set, name, label, value string) []string {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != "mosnlite_"+name {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					out = append(out, fmt.Sprintf("%s%v %v", name, s.GetLabel(), s.GetCounter().GetValue()))
					break
				}
			}
		}
	}
	return out
}

// hold takes a max_requests unit of cluster name, as a request still in flight does, and
// gives it back at cleanup: until then a removed cluster's series are not swept again,
// so a series a late count makes again stays to be seen.
func hold(t *testing.T, e *env, name string) *cluster.Cluster {
	t.Helper()
	cl, ok := e.clusters.Get(name)
	if !ok || !cl.TryAcquire(cluster.MaxRequests) {
		t.Fatalf("cannot take a request unit of cluster %s", name)
	}
	t.Cleanup(func() { cl.Release(cluster.MaxRequests) })
	return cl
}

// TestRetryAfterClusterRemovedMakesNoSeries: a request whose cluster is removed while
// its try is upstream gets a 503 afterwards and is retried; the retry, counted on the
// cluster it holds, does not make upstream_retries_total{cluster} again.
func TestRetryAfterClusterRemovedMakesNoSeries(t *testing.T) {
	in, release := make(chan struct{}, 1), make(chan struct{})
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case in <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	e := startProxyWith(t, `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
	 {"match":{"prefix":"/"},"route":{"cluster_name":"c","retry_policy":{"retry_on":true,"num_retries":1}}}]}]}`,
		`[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+o.addr()+`"}]}]`)
	hold(t, e, "c")

	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	c := dial(t, e.addr)
	go func() {
		if _, err := io.WriteString(c, "GET /r HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			done <- result{err: err}
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			done <- result{err: err}
			return
		}
		_ = resp.Body.Close()
		done <- result{status: resp.StatusCode}
	}()
	select {
	case <-in:
	case <-time.After(testTimeout):
		t.Fatal("the request did not reach the upstream")
	}
	if err := e.clusters.Apply(nil); err != nil {
		t.Fatal(err)
	}
	if s := seriesOf(t, e.m, "upstream_retries_total", "cluster", "c"); len(s) > 0 {
		t.Fatalf("cluster c removed; series stay: %v", s)
	}
	close(release)
	select {
	case r := <-done:
		if r.err != nil || r.status < 500 {
			t.Fatalf("the request after its cluster's removal: status %d, %v; want a 5xx", r.status, r.err)
		}
	case <-time.After(testTimeout):
		t.Fatal("no response")
	}
	if s := seriesOf(t, e.m, "upstream_retries_total", "cluster", "c"); len(s) > 0 {
		t.Fatalf("cluster c removed; a retry of a request that outlived it made its series again: %v", s)
	}
}

// notMirrored is the log message of a mirror to a cluster the manager does not have.
const notMirrored = "proxy: request not mirrored: no such cluster"

// TestMirrorToMissingClusterMakesNoSeries: a mirror to a cluster removed since it
// served, or to one that never existed, counts nothing in upstream_mirrors_total (no
// series with its name) and is logged, as a warning the first time.
func TestMirrorToMissingClusterMakesNoSeries(t *testing.T) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	core, logs := observer.New(zapcore.DebugLevel)
	routes := `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
	 {"match":{"prefix":"/unknown"},"route":{"cluster_name":"c"},"request_mirror_policies":{"cluster":"nosuch","percent":100}},
	 {"match":{"prefix":"/"},"route":{"cluster_name":"c"},"request_mirror_policies":{"cluster":"shadow","percent":100}}]}]}`
	cs := `[{"name":"c","type":"SIMPLE","hosts":[{"address":"` + o.addr() + `"}]},
	  {"name":"shadow","type":"SIMPLE","hosts":[{"address":"` + o.addr() + `"}]}]`
	e := startEnv(t, routes, cs, "r", func(c *proxy.Config) { c.Downstream = stream.HTTP1; c.Log = zap.New(core) })
	get := func(path string) {
		t.Helper()
		if resp, body := roundTrip(t, e.addr, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("GET %s: %d %q", path, resp.StatusCode, body)
		}
	}
	// mirrored waits until the mirror to cluster name is logged as not sent, or has a
	// series, and fails in the second case.
	mirrored := func(name string) *observer.LoggedEntry {
		t.Helper()
		var logged *observer.LoggedEntry
		testutil.Eventually(t, testTimeout, "the mirror to "+name+" handled", func() bool {
			for _, le := range logs.FilterMessage(notMirrored).AllUntimed() {
				if le.ContextMap()["cluster"] == name {
					logged = &le
					return true
				}
			}
			return len(seriesOf(t, e.m, "upstream_mirrors_total", "cluster", name)) > 0
		})
		if s := seriesOf(t, e.m, "upstream_mirrors_total", "cluster", name); len(s) > 0 {
			t.Fatalf("mirror to cluster %s, not in the manager, made series: %v", name, s)
		}
		return logged
	}

	shadow := hold(t, e, "shadow")
	get("/sent")
	testutil.Eventually(t, testTimeout, "mirror counted as sent", func() bool {
		return len(seriesOf(t, e.m, "upstream_mirrors_total", "cluster", "shadow")) == 1 &&
			counterValue(t, e.m.UpstreamMirrors.WithLabelValues("shadow", "sent")) == 1
	})
	testutil.Eventually(t, testTimeout, "the mirror's connection closed", func() bool {
		n, _ := shadow.Usage(cluster.MaxConnections)
		return n == 0
	})
	if err := e.clusters.Apply([]config.Cluster{e.clusterConfig(t, "c")}); err != nil {
		t.Fatal(err)
	}
	if s := seriesOf(t, e.m, "upstream_mirrors_total", "cluster", "shadow"); len(s) > 0 {
		t.Fatalf("cluster shadow removed; series stay: %v", s)
	}
	get("/removed")
	if le := mirrored("shadow"); le.Level != zapcore.WarnLevel {
		t.Fatalf("first mirror to a missing cluster logged at %v; want a warning", le.Level)
	}
	get("/unknown")
	if le := mirrored("nosuch"); le.Level != zapcore.DebugLevel {
		t.Fatalf("second mirror to a missing cluster within the warning interval logged at %v; want debug", le.Level)
	}
}

// clusterConfig returns the config cluster name was built from.
func (e *env) clusterConfig(t *testing.T, name string) config.Cluster {
	t.Helper()
	cl, ok := e.clusters.Get(name)
	if !ok {
		t.Fatalf("no cluster %s", name)
	}
	return cl.Config()
}

// TestListenerSeriesStayGoneAfterDelete: once the listener's series are deleted (the
// server removed it), a protocol error or an event-loop hand-off on a connection that
// outlived the removal does not make protocol_errors_total or
// http1_loop_handoffs_total{listener} again. Before, they count on the same series.
func TestListenerSeriesStayGoneAfterDelete(t *testing.T) { bothPaths(t, listenerSeriesStayGone) }

func listenerSeriesStayGone(t *testing.T, p path) {
	o := startOrigin(t, echo)
	e := p.start(t, o.addr())
	names := []string{"protocol_errors_total", "http1_loop_handoffs_total"}
	served := func(c io.ReadWriter, br *bufio.Reader, path string) {
		t.Helper()
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if resp, _ := readResp(t, br, http.MethodGet); resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
	}
	smuggle := func(c io.ReadWriter, br *bufio.Reader) {
		t.Helper()
		_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
		if resp, _ := readResp(t, br, http.MethodPost); resp.StatusCode != 400 {
			t.Fatalf("malformed request: %d", resp.StatusCode)
		}
	}

	// Before the removal: counted on the listener's series.
	c0 := dial(t, e.addr)
	br0 := bufio.NewReader(c0)
	if p.loops {
		served(c0, br0, "/direct") // handed to a goroutine: local_answer
		if n := e.handoffs(t, "local_answer"); n != 1 {
			t.Fatalf("http1_loop_handoffs_total{local_answer} %v; want 1", n)
		}
	}
	smuggle(c0, br0)
	if n := counter(t, e, "Http1"); n != 1 {
		t.Fatalf("protocol_errors_total{Http1} %v; want 1", n)
	}

	// Connections open when the listener goes: one served on the loop path, if any.
	c1, c2 := dial(t, e.addr), dial(t, e.addr)
	br1, br2 := bufio.NewReader(c1), bufio.NewReader(c2)
	served(c1, br1, "/")
	served(c2, br2, "/")
	if s := seriesOf(t, e.m, "protocol_errors_total", "listener", "l"); len(s) == 0 {
		t.Fatal("no protocol_errors_total series for listener l before its removal")
	}
	e.m.DeleteListener("l")
	for _, n := range names {
		if s := seriesOf(t, e.m, n, "listener", "l"); len(s) > 0 {
			t.Fatalf("listener l deleted; series stay: %v", s)
		}
	}
	if p.loops {
		served(c1, br1, "/direct") // a hand-off
	}
	smuggle(c1, br1) // on the goroutine path
	smuggle(c2, br2) // on the loop path, if any
	// A connection accepted while the listener drains, whose first bytes are not HTTP/1
	// (Auto only: an HTTP/1 listener answers 400 as above).
	if !p.loops {
		c3 := dial(t, e.addr)
		_, _ = c3.Write([]byte{0xda, 0xbb, 0xc2, 0, 0, 0, 0, 0})
		if _, err := c3.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("not HTTP/1: want EOF, got %v", err)
		}
	}
	var back []string
	for _, n := range names {
		back = append(back, seriesOf(t, e.m, n, "listener", "l")...)
	}
	if len(back) > 0 {
		t.Fatalf("listener l deleted; events on connections that outlived it made series again: %v", back)
	}
}

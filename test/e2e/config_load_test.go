package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mosnlite/mosnlite/pkg/xds"
	"github.com/mosnlite/mosnlite/pkg/xds/xdstest"
	"github.com/mosnlite/mosnlite/test/framework"
)

// Configuration changes made while traffic flows lose no request: HTTP/1.1 keep-alive
// and h2c clients keep sending GETs, each answer checked (the upstream that answered
// echoes the request's id), while the config changes under them over xDS
// (TestXDSChangesUnderLoad) or by SIGHUP reloads (TestReloadUnderLoad).
//
// The clients are net/http's: a keep-alive connection the proxy closes between two
// requests (a drained listener's) is retried by the client for an idempotent request, and
// so are the streams an HTTP/2 GOAWAY refused; that is the clean close a proxy may do.
// Every other failure, and every answer that is not 200 with the right id from one of
// the upstreams, counts.
//
// No bolt client: listeners over xDS are http_connection_manager or tcp_proxy only
// (pkg/xds/convert_listener.go), so there is no bolt listener to send to in the xDS test.

// loadUpstream is an HTTP/1 upstream answering "name id" (id: the request's id query
// parameter) a millisecond late, so that requests are in flight when the config changes.
func loadUpstream(t *testing.T, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Millisecond)
		_, _ = io.WriteString(w, name+" "+r.URL.Query().Get("id"))
	}))
	t.Cleanup(s.Close)
	return s
}

// configLoad is the client load: 8 HTTP/1.1 keep-alive workers sharing one transport and
// 4 h2c workers over two connections, each sending GETs until stopped and checking every
// answer.
type configLoad struct {
	listen string
	names  []string // upstream names that may answer
	phase  atomic.Pointer[string]
	h1     *http.Client
	h2     [2]*http.Client

	stop           atomic.Bool
	wg             sync.WaitGroup
	ok, failed     atomic.Int64
	mu             sync.Mutex
	errs           []string       // the first few failures, with the phase they happened in
	failedByPhase  map[string]int // phase → failures
	answeredByName map[string]int // upstream name → answers
}

func startConfigLoad(t *testing.T, listen string, names ...string) *configLoad {
	t.Helper()
	l := &configLoad{
		listen: listen, names: names,
		h1:            &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 10 * time.Second},
		failedByPhase: map[string]int{}, answeredByName: map[string]int{},
	}
	for i := range l.h2 {
		l.h2[i] = h2cClient(t)
		l.h2[i].Timeout = 10 * time.Second
	}
	t.Cleanup(l.h1.CloseIdleConnections)
	l.setPhase("start")
	for i := range 12 {
		c, kind := l.h1, "h1"
		if i >= 8 {
			c, kind = l.h2[i%2], "h2"
		}
		l.wg.Go(func() {
			for n := 0; !l.stop.Load() && n < 1_000_000; n++ {
				id := fmt.Sprintf("%s-%d-%d", kind, i, n)
				name, err := l.get(c, id)
				l.mu.Lock()
				if err != nil {
					l.failed.Add(1)
					phase := *l.phase.Load()
					l.failedByPhase[phase]++
					if len(l.errs) < 5 {
						l.errs = append(l.errs, fmt.Sprintf("during %q: %v", phase, err))
					}
				} else {
					l.ok.Add(1)
					l.answeredByName[name]++
				}
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *configLoad) setPhase(s string) { l.phase.Store(&s) }

// get sends one GET with id and returns the name of the upstream that answered it.
func (l *configLoad) get(c *http.Client, id string) (string, error) {
	resp, err := c.Get("http://" + l.listen + "/load?id=" + id)
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", fmt.Errorf("GET %s: reading the body: %w", id, err)
	}
	name, gotID, _ := strings.Cut(string(b), " ")
	if resp.StatusCode != 200 || gotID != id || !slices.Contains(l.names, name) {
		return "", fmt.Errorf("GET %s: %d %q", id, resp.StatusCode, b)
	}
	return name, nil
}

// waitWorkers waits for a load's stopped workers, failing t after 15 s.
func waitWorkers(t *testing.T, wg *sync.WaitGroup) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("load workers still running 15s after stop")
	}
}

// finish stops the workers, waits for them (bounded), closes the clients' connections
// and fails t if any request failed.
func (l *configLoad) finish(t *testing.T) {
	t.Helper()
	l.stop.Store(true)
	waitWorkers(t, &l.wg)
	l.h1.CloseIdleConnections()
	for _, c := range l.h2 {
		c.CloseIdleConnections()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("load: %d requests answered (by upstream %v), %d failed (by phase %v)", l.ok.Load(), l.answeredByName, l.failed.Load(), l.failedByPhase)
	if l.failed.Load() != 0 {
		t.Errorf("%d requests failed while the config changed; first ones:\n  %s", l.failed.Load(), strings.Join(l.errs, "\n  "))
	}
}

// answered returns how many answers each upstream gave.
func (l *configLoad) answered() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for k, v := range l.answeredByName {
		out[k] = v
	}
	return out
}

// probe sends GETs on new connections until n answers in a row come from upstreams in
// want, failing t after d.
func probe(t *testing.T, listen, what string, want []string, n int, d time.Duration) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(d)
	inRow := 0
	var last string
	for i := 0; inRow < n; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %d answers in a row from %v within %s (last: %s)", what, n, want, d, last)
		}
		id := "probe-" + strconv.Itoa(i)
		resp, err := c.Get("http://" + listen + "/load?id=" + id)
		if err != nil {
			last, inRow = err.Error(), 0
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = fmt.Sprintf("%d %q", resp.StatusCode, b)
		name, gotID, _ := strings.Cut(string(b), " ")
		if resp.StatusCode == 200 && gotID == id && slices.Contains(want, name) {
			inRow++
		} else {
			inRow = 0
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// xdsState is one version of the control plane's config: two EDS clusters, svc and svc2;
// listener ingress on a fixed address whose HTTP connection manager takes its routes from
// RDS route configuration rds ("routes" or "routes-b"); "routes" sends to route and
// "routes-b" to routeB, each a cluster name or "split" (svc 50, svc2 50). Only the route
// configuration in use is in the snapshot: in ADS mode go-control-plane answers an RDS
// request only when it names every route configuration of the snapshot.
type xdsState struct {
	svcHosts, svc2Hosts []string // upstream names
	route, routeB       string
	rds                 string
	svcTimeout          time.Duration
	svcLB               clusterv3.Cluster_LbPolicy
	svc2Timeout         time.Duration
	svc2LB              clusterv3.Cluster_LbPolicy
	svcBufferLimit      uint32 // 0: unset
	broken              bool   // add a cluster mosnlite must reject
}

// target is where the route configuration the listener uses sends.
func (s xdsState) target() string {
	if s.rds == "routes-b" {
		return s.routeB
	}
	return s.route
}

// expected is the set of upstream names the listener's traffic may reach under s.
func (s xdsState) expected() []string {
	target := s.target()
	var out []string
	for _, c := range []string{"svc", "svc2"} {
		if target != c && target != "split" {
			continue
		}
		hosts := s.svcHosts
		if c == "svc2" {
			hosts = s.svc2Hosts
		}
		for _, h := range hosts {
			if !slices.Contains(out, h) {
				out = append(out, h)
			}
		}
	}
	slices.Sort(out)
	return out
}

func xdsRoutes(name, target string) *routev3.RouteConfiguration {
	if target != "split" {
		return xdstest.RouteToCluster(name, target)
	}
	rc := xdstest.RouteToCluster(name, "svc")
	rc.VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_WeightedClusters{
		WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
			{Name: "svc", Weight: wrapperspb.UInt32(50)},
			{Name: "svc2", Weight: wrapperspb.UInt32(50)},
		}},
	}
	return rc
}

// TestXDSChangesUnderLoad runs mosnlite on an ADS bootstrap against go-control-plane's
// server in this process, with HTTP/1.1 and h2c load on the xDS listener, and pushes a new
// snapshot about every 300 ms for some 7 s: endpoints moving between upstreams (EDS),
// weighted clusters and routes moving to the other cluster (RDS), cluster settings
// (connect_timeout, lb_policy, per_connection_buffer_limit_bytes: CDS), the listener
// switching its HTTP connection manager to another route configuration on the same
// address (LDS: the new listener warms until its route configuration has arrived, then
// replaces the old one, whose socket it takes over and whose connections drain with the
// routes they had), and once an invalid cluster, which must be NACKed while the rest of that
// version applies and the old clusters keep serving. Each version is waited for (every
// type's ACK, the CDS NACK) and checked to be in effect (new connections reach the
// upstreams it names). No request may fail; at the end the last version is in effect,
// mosnlite_xds_updates_total counts the ACKs and the NACK, and the process returns to the
// descriptors and goroutines it held before the load once its clients have gone.
func TestXDSChangesUnderLoad(t *testing.T) {
	const node = "mosnlite-config-load"
	ups := map[string]*httptest.Server{"A": loadUpstream(t, "A"), "B": loadUpstream(t, "B"), "C": loadUpstream(t, "C")}
	addrs := func(names []string) []string {
		var out []string
		for _, n := range names {
			out = append(out, hostOf(ups[n]))
		}
		return out
	}
	cp := xdstest.New()
	cpAddr, err := cp.Start(framework.FreePort(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	listen := framework.FreePort(t)

	cluster := func(name string, timeout time.Duration, lb clusterv3.Cluster_LbPolicy) *clusterv3.Cluster {
		c := xdstest.EDSCluster(name)
		c.ConnectTimeout, c.LbPolicy = durationpb.New(timeout), lb
		return c
	}
	version := 0
	push := func(s xdsState) (string, int) {
		t.Helper()
		version++
		v := "v" + strconv.Itoa(version)
		svc := cluster("svc", s.svcTimeout, s.svcLB)
		if s.svcBufferLimit > 0 {
			svc.PerConnectionBufferLimitBytes = wrapperspb.UInt32(s.svcBufferLimit)
		}
		res := xdstest.Resources{}.
			Add(xds.ClusterType, svc, cluster("svc2", s.svc2Timeout, s.svc2LB)).
			Add(xds.EndpointType, xdstest.Assignment("svc", addrs(s.svcHosts)...), xdstest.Assignment("svc2", addrs(s.svc2Hosts)...)).
			Add(xds.ListenerType, xdstest.HTTPListener("ingress", listen, s.rds)).
			Add(xds.RouteType, xdsRoutes(s.rds, s.target()))
		if s.broken {
			res.Add(xds.ClusterType, xdstest.InvalidCluster("broken"))
		}
		from := len(cp.Requests())
		if err := cp.SetSnapshot(node, v, res); err != nil {
			t.Fatal(err)
		}
		return v, from
	}
	waitReq := func(from int, what string, match func(xdstest.Request) bool) xdstest.Request {
		t.Helper()
		r, _, err := cp.WaitRequest(from, 10*time.Second, match)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return r
	}
	allTypes := []string{xds.ClusterType, xds.EndpointType, xds.ListenerType, xds.RouteType}
	// apply pushes s and waits until every type's ACK of it is in (the CDS NACK for a
	// broken one) and new connections reach the upstreams it names.
	apply := func(what string, s xdsState) {
		t.Helper()
		v, from := push(s)
		for _, typ := range allTypes {
			if s.broken && typ == xds.ClusterType {
				nack := waitReq(from, what+": CDS NACK", xdstest.NACKOf(typ))
				if !strings.Contains(nack.Error, "broken") {
					t.Fatalf("%s: NACK %+v does not name the broken cluster", what, nack)
				}
				continue
			}
			waitReq(from, fmt.Sprintf("%s: ACK %s of %s", what, v, typ), xdstest.ACKOf(typ, v))
		}
		probe(t, listen, what, s.expected(), 3, 10*time.Second)
	}

	initial := xdsState{
		svcHosts: []string{"A"}, svc2Hosts: []string{"C"}, route: "svc", routeB: "svc2", rds: "routes",
		svcTimeout: time.Second, svcLB: clusterv3.Cluster_ROUND_ROBIN, svc2Timeout: time.Second, svc2LB: clusterv3.Cluster_ROUND_ROBIN,
	}
	push(initial)
	adminAddr := framework.FreePort(t)
	t.Setenv("MOSNLITE_SERVICE_NODE", node)
	t.Setenv("MOSNLITE_SERVICE_CLUSTER", "e2e")
	p := framework.StartProxy(t, adsBootstrap(adminAddr, cpAddr))
	for _, typ := range allTypes {
		waitReq(0, "ACK v1 of "+typ, xdstest.ACKOf(typ, "v1"))
	}
	probe(t, listen, "first config", []string{"A"}, 3, 20*time.Second)

	// A short warm-up through both clusters, then the baseline: the proxy holds nothing
	// but its listeners, the admin endpoint and the xDS stream.
	warm := initial
	warm.route = "split"
	apply("warm-up", warm)
	l := startConfigLoad(t, listen, "A", "B", "C")
	time.Sleep(300 * time.Millisecond)
	l.finish(t)
	apply("back to the first config", initial)
	dropUpstreams := func() {
		for _, u := range ups {
			u.CloseClientConnections()
		}
	}
	dropUpstreams()
	lc := framework.NewLeakCheckExcept(t, p, cpAddr)

	type step struct {
		what   string
		change func(*xdsState)
	}
	steps := []step{
		{"EDS: svc moves to B", func(s *xdsState) { s.svcHosts = []string{"B"} }},
		{"EDS: svc moves back to A", func(s *xdsState) { s.svcHosts = []string{"A"} }},
		{"EDS: svc on A and B", func(s *xdsState) { s.svcHosts = []string{"A", "B"} }},
		{"RDS: weighted svc/svc2", func(s *xdsState) { s.route = "split" }},
		{"RDS: route to svc2", func(s *xdsState) { s.route = "svc2" }},
		{"CDS: svc2 connect_timeout 2s, LEAST_REQUEST", func(s *xdsState) {
			s.svc2Timeout, s.svc2LB = 2*time.Second, clusterv3.Cluster_LEAST_REQUEST
		}},
		{"RDS: route back to svc", func(s *xdsState) { s.route = "svc" }},
		{"CDS: svc connect_timeout 3s, RANDOM, buffer limit", func(s *xdsState) {
			s.svcTimeout, s.svcLB, s.svcBufferLimit = 3*time.Second, clusterv3.Cluster_RANDOM, 64<<10
		}},
		{"EDS: svc moves to B", func(s *xdsState) { s.svcHosts = []string{"B"} }},
		{"LDS: listener to route configuration routes-b", func(s *xdsState) { s.rds = "routes-b" }},
		{"EDS: svc2 on C and A", func(s *xdsState) { s.svc2Hosts = []string{"A", "C"} }},
		{"LDS: listener back to route configuration routes", func(s *xdsState) { s.rds = "routes" }},
		{"CDS: both clusters back to 1s, ROUND_ROBIN", func(s *xdsState) {
			s.svcTimeout, s.svcLB, s.svcBufferLimit = time.Second, clusterv3.Cluster_ROUND_ROBIN, 0
			s.svc2Timeout, s.svc2LB = time.Second, clusterv3.Cluster_ROUND_ROBIN
		}},
		{"EDS: svc moves to A, svc2 to C", func(s *xdsState) { s.svcHosts, s.svc2Hosts = []string{"A"}, []string{"C"} }},
	}

	l = startConfigLoad(t, listen, "A", "B", "C")
	state, pushes, brokenDone := initial, 0, false
	start := time.Now()
	for i := 0; time.Since(start) < 7*time.Second || !brokenDone; i++ {
		next := time.Now().Add(300 * time.Millisecond)
		st := steps[i%len(steps)]
		if i == len(steps) && !brokenDone {
			// Once, after a full round: an invalid cluster. CDS is NACKed, the other types
			// of that version apply, and the clusters in place keep serving.
			st = step{"CDS: an invalid cluster (NACK)", func(s *xdsState) { s.broken = true }}
			brokenDone = true
			i--
		}
		st.change(&state)
		l.setPhase(st.what)
		apply(st.what, state)
		state.broken = false
		pushes++
		time.Sleep(time.Until(next))
	}
	// The last version: svc on B only, routes (to svc) in place.
	state.svcHosts, state.route, state.rds = []string{"B"}, "svc", "routes"
	l.setPhase("last version")
	apply("last version", state)
	pushes++
	time.Sleep(300 * time.Millisecond)
	l.finish(t)
	t.Logf("%d versions pushed in %s", pushes, time.Since(start).Round(time.Millisecond))
	if got := l.answered(); got["A"] == 0 || got["B"] == 0 || got["C"] == 0 {
		t.Errorf("the load did not reach every upstream as the config moved it: %v", got)
	}

	// The last version is what serves: every answer from B.
	probe(t, listen, "the last version", []string{"B"}, 20, 10*time.Second)
	metrics := func() string {
		t.Helper()
		_, body := getBody(t, "http://"+adminAddr+"/metrics")
		return body
	}
	counts := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^mosnlite_xds_updates_total\{result="(ack|nack)",type="([A-Z]+)"\} (\d+)$`).
		FindAllStringSubmatch(metrics(), -1) {
		counts[m[1]+" "+m[2]], _ = strconv.Atoi(m[3])
	}
	// Every type is ACKed for every version but the broken one's CDS (an RDS response may
	// come twice when the subscription changes), and that one is NACKed (again, paced, if
	// the control plane sends it again before the next version).
	total := version
	for _, typ := range []string{"EDS", "LDS", "RDS"} {
		if counts["ack "+typ] < total {
			t.Errorf("mosnlite_xds_updates_total ack %s = %d, want at least %d (versions pushed); all: %v", typ, counts["ack "+typ], total, counts)
		}
	}
	if counts["ack CDS"] < total-1 || counts["nack CDS"] < 1 {
		t.Errorf("mosnlite_xds_updates_total: CDS ack %d (want at least %d), nack %d (want at least 1); all: %v",
			counts["ack CDS"], total-1, counts["nack CDS"], counts)
	}
	for _, typ := range []string{"EDS", "LDS", "RDS"} {
		if counts["nack "+typ] != 0 {
			t.Errorf("mosnlite_xds_updates_total nack %s = %d, want 0", typ, counts["nack "+typ])
		}
	}

	// Back to the baseline once the clients and the upstream connections are gone: the
	// replaced listeners drained and closed, the rebuilt clusters' pools let go.
	dropUpstreams()
	lc.Check(t)
}

// reloadLoadConfig is a static config: an Auto (HTTP/1.1 and h2c) listener whose router
// sends "/" to route (a cluster name, or "split": a 50/50 a/b), clusters name → upstream
// names with lb_type and connect_timeout, and an admin endpoint. The listener names router:
// a config with another router name replaces the listener (its socket handed over, its
// connections drained) and drops the old router.
func reloadLoadConfig(t *testing.T, listen, admin string, ups map[string]*httptest.Server, router, route string, clusters map[string][]string, lb, timeout string) string {
	t.Helper()
	action := map[string]any{"cluster_name": route}
	if route == "split" {
		action = map[string]any{"weighted_clusters": []any{
			map[string]any{"cluster": map[string]any{"name": "a", "weight": 50}},
			map[string]any{"cluster": map[string]any{"name": "b", "weight": 50}},
		}}
	}
	var cs []any
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range clusters {
			if !yield(k) {
				return
			}
		}
	}) {
		var hosts []any
		for _, u := range clusters[name] {
			hosts = append(hosts, map[string]any{"address": hostOf(ups[u])})
		}
		cs = append(cs, map[string]any{"name": name, "type": "SIMPLE", "lb_type": lb, "connect_timeout": timeout, "hosts": hosts})
	}
	_, port, _ := net.SplitHostPort(admin)
	n, _ := strconv.Atoi(port)
	cfg := map[string]any{
		"servers": []any{map[string]any{
			"default_log_path": "stderr",
			"routers": []any{map[string]any{
				"router_config_name": router,
				"virtual_hosts": []any{map[string]any{"name": "v", "domains": []any{"*"},
					"routers": []any{map[string]any{"match": map[string]any{"prefix": "/"}, "route": action}}}},
			}},
			"listeners": []any{map[string]any{
				"name": "l7", "address": listen, "bind_port": true,
				"filter_chains": []any{map[string]any{"filters": []any{map[string]any{"type": "proxy",
					"config": map[string]any{"downstream_protocol": "Auto", "upstream_protocol": "Http1", "router_config_name": router}}}}},
			}},
		}},
		"cluster_manager": map[string]any{"clusters": cs},
		"admin":           map[string]any{"address": map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": n}}},
		"drain":           map[string]any{"timeout": "5s"},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReloadUnderLoad runs the same HTTP/1.1 and h2c load against a static config and
// reloads it with SIGHUP while it runs: the route moves to a new cluster under a renamed
// router (the listener is replaced and drains while its router is gone), a weighted split
// over two clusters with a new lb_type and connect_timeout (renamed again), a file with an
// invalid field (refused: the last good config keeps serving), the route moving to a new
// cluster c (the router keeps its name), and the clusters no route names any more removed
// (a and b). Each reload is waited for (its log line) and checked to be in effect; the
// metrics count 4 reloads and 1 failure. No request may fail.
func TestReloadUnderLoad(t *testing.T) { reloadUnderLoad(t, false) }

// TestReloadUnderLoadDropsRoutedClusters is TestReloadUnderLoad with the route moving to
// c and a and b removed in one reload (3 reloads).
func TestReloadUnderLoadDropsRoutedClusters(t *testing.T) {
	reloadUnderLoad(t, true)
}

func reloadUnderLoad(t *testing.T, dropTogether bool) {
	ups := map[string]*httptest.Server{"A": loadUpstream(t, "A"), "B": loadUpstream(t, "B"), "C": loadUpstream(t, "C")}
	listen, admin := framework.FreePort(t), framework.FreePort(t)
	p := framework.StartProxy(t, reloadLoadConfig(t, listen, admin, ups, "r1", "a", map[string][]string{"a": {"A"}}, "LB_ROUNDROBIN", "1s"))
	probe(t, listen, "first config", []string{"A"}, 3, 10*time.Second)

	reloads := 0
	reload := func(what, cfg string, want []string) {
		t.Helper()
		if err := os.WriteFile(p.Config, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		reloads++
		if !waitLogCount(p, `"config reloaded"`, reloads, 10*time.Second) {
			t.Fatalf("%s: no %d \"config reloaded\" lines in the log within 10s:\n%s", what, reloads, p.Logs())
		}
		probe(t, listen, what, want, 3, 10*time.Second)
	}

	l := startConfigLoad(t, listen, "A", "B", "C")
	time.Sleep(500 * time.Millisecond)
	l.setPhase("reload 1: router r2 (listener replaced), route to a new cluster b (on B)")
	reload("reload 1", reloadLoadConfig(t, listen, admin, ups, "r2", "b", map[string][]string{"a": {"A"}, "b": {"B"}}, "LB_ROUNDROBIN", "1s"), []string{"B"})
	time.Sleep(500 * time.Millisecond)
	l.setPhase("reload 2: router r3 (listener replaced), split a (A, C) / b (B), LB_RANDOM, connect_timeout 2s")
	reload("reload 2", reloadLoadConfig(t, listen, admin, ups, "r3", "split", map[string][]string{"a": {"A", "C"}, "b": {"B"}}, "LB_RANDOM", "2s"), []string{"A", "B", "C"})
	time.Sleep(500 * time.Millisecond)

	l.setPhase("invalid reload")
	bad := strings.Replace(reloadLoadConfig(t, listen, admin, ups, "r3", "c", map[string][]string{"c": {"C"}}, "LB_ROUNDROBIN", "1s"),
		`"downstream_protocol":"Auto"`, `"downstream_protocol":"Autoo"`, 1)
	if err := os.WriteFile(p.Config, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !p.WaitLog("servers[0].listeners[0].filter_chains[0].filters[0].config.downstream_protocol", 10*time.Second) {
		t.Fatalf("the invalid reload was not refused naming the bad field:\n%s", p.Logs())
	}
	probe(t, listen, "after the invalid reload", []string{"A", "B", "C"}, 10, 10*time.Second)
	time.Sleep(500 * time.Millisecond)

	if dropTogether {
		l.setPhase("reload 3: route to a new cluster c (on C), a and b removed")
		reload("reload 3", reloadLoadConfig(t, listen, admin, ups, "r3", "c", map[string][]string{"c": {"C"}}, "LB_LEAST_REQUEST", "1s"), []string{"C"})
		time.Sleep(500 * time.Millisecond)
	} else {
		l.setPhase("reload 3: route to a new cluster c (on C), LB_LEAST_REQUEST")
		reload("reload 3", reloadLoadConfig(t, listen, admin, ups, "r3", "c", map[string][]string{"a": {"A", "C"}, "b": {"B"}, "c": {"C"}}, "LB_LEAST_REQUEST", "1s"), []string{"C"})
		time.Sleep(500 * time.Millisecond)
		l.setPhase("reload 4: a and b, which no route names any more, removed")
		reload("reload 4", reloadLoadConfig(t, listen, admin, ups, "r3", "c", map[string][]string{"c": {"C"}}, "LB_LEAST_REQUEST", "1s"), []string{"C"})
		time.Sleep(500 * time.Millisecond)
	}
	l.finish(t)
	if got := l.answered(); got["A"] == 0 || got["B"] == 0 || got["C"] == 0 {
		t.Errorf("the load did not reach every upstream as the config moved it: %v", got)
	}
	probe(t, listen, "the last config", []string{"C"}, 20, 10*time.Second)
	_, metrics := getBody(t, "http://"+admin+"/metrics")
	for _, want := range []string{fmt.Sprintf(`mosnlite_config_reloads_total{result="success"} %d`, reloads), `mosnlite_config_reloads_total{result="failure"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

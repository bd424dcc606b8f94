package xds

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/xds/xdstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is an in-memory Target that logs every call in order.
type recorder struct {
	mu        sync.Mutex
	calls     []string
	clusters  map[string]config.Cluster
	hosts     map[string][]config.Host
	routers   map[string]config.RouterCfg
	listeners map[string]config.Listener
	holds     int
	released  chan struct{}
	// failListeners makes SetListeners fail (an apply error rather than a conversion one).
	failListeners bool
}

func newRecorder() *recorder {
	return &recorder{clusters: map[string]config.Cluster{}, hosts: map[string][]config.Host{},
		routers: map[string]config.RouterCfg{}, listeners: map[string]config.Listener{}, released: make(chan struct{})}
}

func (r *recorder) SetClusters(owner string, cs []config.Cluster) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clusters = map[string]config.Cluster{}
	var names []string
	for _, c := range cs {
		r.clusters[c.Name] = c
		names = append(names, c.Name)
	}
	r.calls = append(r.calls, "clusters "+strings.Join(names, ","))
	return nil
}

func (r *recorder) SetClusterHosts(cluster string, hosts []config.Host) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.clusters[cluster]; !ok {
		return fmt.Errorf("cluster %q: not found", cluster)
	}
	r.hosts[cluster] = hosts
	var addrs []string
	for _, h := range hosts {
		addrs = append(addrs, h.Address)
	}
	r.calls = append(r.calls, "hosts "+cluster+"="+strings.Join(addrs, ","))
	return nil
}

func (r *recorder) SetRouters(owner string, rs []config.RouterCfg) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.routers = map[string]config.RouterCfg{}
	var names []string
	for _, c := range rs {
		r.routers[c.RouterConfigName] = c
		n := c.RouterConfigName
		if len(c.VirtualHosts) == 0 {
			n += "(empty)"
		}
		names = append(names, n)
	}
	r.calls = append(r.calls, "routers "+strings.Join(names, ","))
	return nil
}

func (r *recorder) SetListeners(owner string, ls []config.Listener) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failListeners {
		return fmt.Errorf("listener: address in use")
	}
	r.listeners = map[string]config.Listener{}
	var names []string
	for _, l := range ls {
		var pc config.ProxyConfig
		_ = config.Unmarshal(l.FilterChains[0].Filters[0].Config, &pc)
		if _, ok := r.routers[pc.RouterConfigName]; !ok {
			return fmt.Errorf("listener %q: router %q not found", l.Name, pc.RouterConfigName)
		}
		r.listeners[l.Name] = l
		names = append(names, l.Name)
	}
	r.calls = append(r.calls, "listeners "+strings.Join(names, ","))
	return nil
}

func (r *recorder) HoldReady(owner string) func() {
	r.mu.Lock()
	r.holds++
	r.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(r.released) }) }
}

func (r *recorder) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func (r *recorder) Hosts(c string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, h := range r.hosts[c] {
		out = append(out, h.Address)
	}
	return out
}

func (r *recorder) ClusterNames() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for n := range r.clusters {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

const node = "node-1"

// fixture: a control plane, a recorder, and a running client.
type fixture struct {
	cp  *xdstest.ControlPlane
	rec *recorder
	c   *Client
}

func start(t *testing.T, b *Bootstrap) *fixture {
	t.Helper()
	cp := startCP(t)
	return startClient(t, b, cp, cp.Addr())
}

// startCP serves a control plane on an ephemeral port until the test ends.
func startCP(t *testing.T) *xdstest.ControlPlane {
	t.Helper()
	cp := xdstest.New()
	if _, err := cp.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	return cp
}

// startClient runs a client of b (nil: CDS and LDS) to targets, recorded by the fixture's cp.
func startClient(t *testing.T, b *Bootstrap, cp *xdstest.ControlPlane, targets ...string) *fixture {
	t.Helper()
	if b == nil {
		b = &Bootstrap{CDS: true, LDS: true}
	}
	b.Targets = targets
	b.KeepaliveInterval, b.KeepaliveTimeout, b.ConnectTimeout = 10*time.Second, 5*time.Second, time.Second
	rec := newRecorder()
	c, err := New(b, rec, Options{NodeID: node, NodeCluster: "test", Log: zaptest.NewLogger(t),
		BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, NackDelayMax: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
	return &fixture{cp: cp, rec: rec, c: c}
}

func snapshot(t *testing.T, cp *xdstest.ControlPlane, version string, upstream string, extra ...types.Resource) {
	t.Helper()
	res := xdstest.Resources{}.
		Add(ClusterType, xdstest.EDSCluster("svc")).
		Add(EndpointType, xdstest.Assignment("svc", upstream)).
		Add(ListenerType, xdstest.HTTPListener("http", "127.0.0.1:10080", "routes")).
		Add(RouteType, xdstest.RouteToCluster("routes", "svc"))
	for _, r := range extra {
		res.Add(ClusterType, r)
	}
	if err := cp.SetSnapshot(node, version, res); err != nil {
		t.Fatal(err)
	}
}

const wait = 10 * time.Second

func mustWait(t *testing.T, cp *xdstest.ControlPlane, from int, what string, match func(xdstest.Request) bool) (xdstest.Request, int) {
	t.Helper()
	r, i, err := cp.WaitRequest(from, wait, match)
	if err != nil {
		t.Fatalf("%s: %v\nrequests: %+v", what, err, cp.Requests())
	}
	return r, i
}

func index(calls []string, prefix string) int {
	return slices.IndexFunc(calls, func(s string) bool { return strings.HasPrefix(s, prefix) })
}

// TestADSFirstConfigAndOrdering: the first full set is applied in dependency order (CDS
// before EDS, LDS before RDS), every type is ACKed, and readiness is released after.
func TestADSFirstConfigAndOrdering(t *testing.T) {
	f := start(t, nil)
	select {
	case <-f.rec.released:
		t.Fatal("readiness released before any config")
	default:
	}
	snapshot(t, f.cp, "v1", "127.0.0.1:9001")
	_, cdsACK := mustWait(t, f.cp, 0, "CDS ACK", xdstest.ACKOf(ClusterType, "v1"))
	_, ldsACK := mustWait(t, f.cp, 0, "LDS ACK", xdstest.ACKOf(ListenerType, "v1"))
	mustWait(t, f.cp, 0, "EDS ACK", xdstest.ACKOf(EndpointType, "v1"))
	mustWait(t, f.cp, 0, "RDS ACK", xdstest.ACKOf(RouteType, "v1"))

	// The control plane saw the EDS subscription only after the CDS ACK, RDS after LDS.
	reqs := f.cp.Requests()
	firstEDS := slices.IndexFunc(reqs, func(r xdstest.Request) bool { return r.TypeURL == EndpointType })
	firstRDS := slices.IndexFunc(reqs, func(r xdstest.Request) bool { return r.TypeURL == RouteType })
	if firstEDS < cdsACK || firstRDS < ldsACK {
		t.Fatalf("subscription order: EDS at %d (CDS ACK %d), RDS at %d (LDS ACK %d): %+v", firstEDS, cdsACK, firstRDS, ldsACK, reqs)
	}
	if !slices.Equal(reqs[firstEDS].Names, []string{"svc"}) || !slices.Equal(reqs[firstRDS].Names, []string{"routes"}) {
		t.Fatalf("subscriptions: EDS %v RDS %v", reqs[firstEDS].Names, reqs[firstRDS].Names)
	}
	if reqs[0].TypeURL != ClusterType && reqs[0].TypeURL != ListenerType {
		t.Fatalf("first request %s, want CDS or LDS", reqs[0].TypeURL)
	}

	select {
	case <-f.rec.released:
	case <-time.After(wait):
		t.Fatal("readiness not released after the first full config")
	}
	calls := f.rec.Calls()
	ci, hi := index(calls, "clusters svc"), index(calls, "hosts svc=127.0.0.1:9001")
	pi, li := index(calls, "routers routes(empty)"), index(calls, "listeners http")
	ri := slices.Index(calls, "routers routes")
	if ci < 0 || hi < ci || pi < 0 || li < pi || ri < li {
		t.Fatalf("apply order: %q", calls)
	}

	// The endpoint moves: only EDS changes hands.
	snapshot(t, f.cp, "v2", "127.0.0.1:9002")
	mustWait(t, f.cp, 0, "EDS ACK v2", xdstest.ACKOf(EndpointType, "v2"))
	if got := f.rec.Hosts("svc"); !slices.Equal(got, []string{"127.0.0.1:9002"}) {
		t.Fatalf("hosts after v2: %v", got)
	}
	// The snapshot bumps every type's version: wait for all four ACKs before counting.
	for _, typ := range []string{ClusterType, ListenerType, RouteType} {
		mustWait(t, f.cp, 0, "ACK v2 "+typ, xdstest.ACKOf(typ, "v2"))
	}
	if s := f.c.Stats(); s.NACKs != 0 || s.ACKs < 8 {
		t.Fatalf("stats %+v", s)
	}
}

// TestADSNackKeepsOld: an invalid cluster is NACKed with an error_detail, the accepted version
// stays, nothing is applied; a later good version is ACKed and applied.
func TestADSNackKeepsOld(t *testing.T) {
	f := start(t, nil)
	snapshot(t, f.cp, "v1", "127.0.0.1:9001")
	mustWait(t, f.cp, 0, "CDS ACK v1", xdstest.ACKOf(ClusterType, "v1"))
	mustWait(t, f.cp, 0, "EDS ACK v1", xdstest.ACKOf(EndpointType, "v1"))
	before := len(f.rec.Calls())

	snapshot(t, f.cp, "v2", "127.0.0.1:9001", xdstest.InvalidCluster("bad"))
	nack, i := mustWait(t, f.cp, 0, "CDS NACK", xdstest.NACKOf(ClusterType))
	if nack.Version != "v1" || !strings.Contains(nack.Error, `cluster "bad"`) || !strings.Contains(nack.Error, "LOAD_BALANCING_POLICY") {
		t.Fatalf("NACK %+v: want version v1 and an error naming the cluster", nack)
	}
	// The control plane answers the NACK with the same resources; the client NACKs again
	// (paced) and still applies nothing.
	mustWait(t, f.cp, i+1, "second CDS NACK", xdstest.NACKOf(ClusterType))
	for _, c := range f.rec.Calls()[before:] {
		if strings.HasPrefix(c, "clusters") {
			t.Fatalf("clusters applied despite the NACK: %q", f.rec.Calls())
		}
	}
	if got := f.rec.ClusterNames(); !slices.Equal(got, []string{"svc"}) {
		t.Fatalf("clusters %v", got)
	}

	snapshot(t, f.cp, "v3", "127.0.0.1:9001", xdstest.StaticCluster("other", "127.0.0.1:9009"))
	mustWait(t, f.cp, 0, "CDS ACK v3", xdstest.ACKOf(ClusterType, "v3"))
	if got := f.rec.ClusterNames(); !slices.Equal(got, []string{"other", "svc"}) {
		t.Fatalf("clusters after v3: %v", got)
	}
	if got := f.rec.Hosts("svc"); !slices.Equal(got, []string{"127.0.0.1:9001"}) {
		t.Fatalf("svc hosts after v3: %v", got)
	}
}

// TestADSApplyErrorNacks: a target that refuses an update (not a conversion error) gets the
// update NACKed too.
func TestADSApplyErrorNacks(t *testing.T) {
	f := start(t, &Bootstrap{LDS: true})
	f.rec.mu.Lock()
	f.rec.failListeners = true
	f.rec.mu.Unlock()
	snapshot(t, f.cp, "v1", "127.0.0.1:9001")
	nack, _ := mustWait(t, f.cp, 0, "LDS NACK", xdstest.NACKOf(ListenerType))
	if nack.Version != "" || !strings.Contains(nack.Error, "address in use") {
		t.Fatalf("NACK %+v", nack)
	}
	// The routers put in place for the refused listeners were taken back.
	f.rec.mu.Lock()
	n := len(f.rec.routers)
	f.rec.mu.Unlock()
	if n != 0 {
		t.Fatalf("routers left after a refused LDS update: %q", f.rec.Calls())
	}
}

// TestADSReconnect: the control plane goes away (config stays) and comes back on the same
// address; the client reconnects with its versions and ACKs on the new stream.
func TestADSReconnect(t *testing.T) {
	f := start(t, nil)
	snapshot(t, f.cp, "v1", "127.0.0.1:9001")
	mustWait(t, f.cp, 0, "CDS ACK", xdstest.ACKOf(ClusterType, "v1"))
	mustWait(t, f.cp, 0, "RDS ACK", xdstest.ACKOf(RouteType, "v1"))
	mustWait(t, f.cp, 0, "EDS ACK", xdstest.ACKOf(EndpointType, "v1")) // the hosts are in
	f.cp.Stop()
	time.Sleep(300 * time.Millisecond) // a few failed reconnects
	if got := f.rec.Hosts("svc"); !slices.Equal(got, []string{"127.0.0.1:9001"}) {
		t.Fatalf("hosts while the control plane is down: %v", got)
	}
	n := len(f.cp.Requests())
	if _, err := f.cp.Start(""); err != nil {
		t.Fatal(err)
	}
	// A new stream: the first CDS request carries the accepted version and no nonce.
	first, _ := mustWait(t, f.cp, n, "resubscribe", func(r xdstest.Request) bool { return r.TypeURL == ClusterType })
	if first.Version != "v1" || first.Nonce != "" {
		t.Fatalf("resubscription %+v", first)
	}
	mustWait(t, f.cp, n, "EDS resubscribe with names", func(r xdstest.Request) bool {
		return r.TypeURL == EndpointType && slices.Equal(r.Names, []string{"svc"})
	})
	mustWait(t, f.cp, n, "CDS ACK on the new stream", xdstest.ACKOf(ClusterType, "v1"))
	// Changes flow again.
	snapshot(t, f.cp, "v2", "127.0.0.1:9002")
	mustWait(t, f.cp, 0, "EDS ACK v2", xdstest.ACKOf(EndpointType, "v2"))
	if got := f.rec.Hosts("svc"); !slices.Equal(got, []string{"127.0.0.1:9002"}) {
		t.Fatalf("hosts after reconnect: %v", got)
	}
	if s := f.c.Stats(); s.Connects < 2 {
		t.Fatalf("stats %+v", s)
	}
}

// TestADSInitialFetchTimeout: an EDS cluster whose assignment never comes holds readiness only
// until the initial fetch timeout.
func TestADSInitialFetchTimeout(t *testing.T) {
	f := start(t, &Bootstrap{CDS: true, InitialFetchTimeout: 300 * time.Millisecond})
	if err := f.cp.SetSnapshot(node, "v1", xdstest.Resources{}.Add(ClusterType, xdstest.EDSCluster("lonely"))); err != nil {
		t.Fatal(err)
	}
	mustWait(t, f.cp, 0, "CDS ACK", xdstest.ACKOf(ClusterType, "v1"))
	select {
	case <-f.rec.released:
	case <-time.After(wait):
		t.Fatal("readiness still held after the initial fetch timeout")
	}
}

// listenerRouter is the router the recorded listener name uses and whether that router
// has routes (not the placeholder of a route configuration not received yet).
func (r *recorder) listenerRouter(name string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.listeners[name]
	if !ok {
		return "", false
	}
	var pc config.ProxyConfig
	_ = config.Unmarshal(l.FilterChains[0].Filters[0].Config, &pc)
	return pc.RouterConfigName, len(r.routers[pc.RouterConfigName].VirtualHosts) > 0
}

// TestADSListenerWarmsForItsRoutes: a listener changed to name a route configuration not
// received yet warms, as Envoy's do: the old one keeps serving (no placeholder router,
// whose every request is 404, on the listener meanwhile) and both route configurations
// stay subscribed; once the new one arrives the listener is replaced and the old route
// configuration unsubscribed. One whose route configuration never comes replaces the old
// after the initial fetch timeout.
func TestADSListenerWarmsForItsRoutes(t *testing.T) {
	f := start(t, &Bootstrap{LDS: true, InitialFetchTimeout: 2 * time.Second})
	set := func(version, rds string, routes ...string) int {
		t.Helper()
		res := xdstest.Resources{}.Add(ListenerType, xdstest.HTTPListener("http", "127.0.0.1:10080", rds))
		for _, r := range routes {
			res.Add(RouteType, xdstest.RouteToCluster(r, "svc"))
		}
		from := len(f.cp.Requests())
		if err := f.cp.SetSnapshot(node, version, res); err != nil {
			t.Fatal(err)
		}
		return from
	}
	routesNamed := func(names ...string) func(xdstest.Request) bool {
		return func(r xdstest.Request) bool { return r.TypeURL == RouteType && slices.Equal(r.Names, names) }
	}
	uses := func(what, want string) {
		t.Helper()
		if got, full := f.rec.listenerRouter("http"); got != want || !full {
			t.Fatalf("%s: listener uses router %q (with routes: %v), want %q with routes\ncalls: %q", what, got, full, want, f.rec.Calls())
		}
	}
	from := set("v1", "routes", "routes")
	mustWait(t, f.cp, from, "RDS ACK v1", xdstest.ACKOf(RouteType, "v1"))
	uses("v1", "routes")

	// v2 names routes-b, which the control plane does not have yet (it still has routes).
	from = set("v2", "routes-b", "routes")
	mustWait(t, f.cp, from, "LDS ACK v2", xdstest.ACKOf(ListenerType, "v2"))
	mustWait(t, f.cp, from, "RDS ACK v2 still subscribed to routes", func(r xdstest.Request) bool {
		return xdstest.ACKOf(RouteType, "v2")(r) && routesNamed("routes", "routes-b")(r)
	})
	uses("warming", "routes")
	calls := len(f.rec.Calls())

	// routes-b arrives: the listener changes over, routes is unsubscribed.
	from = set("v3", "routes-b", "routes-b")
	mustWait(t, f.cp, from, "RDS ACK v3 subscribed to routes-b only", func(r xdstest.Request) bool {
		return xdstest.ACKOf(RouteType, "v3")(r) && routesNamed("routes-b")(r)
	})
	uses("warmed", "routes-b")
	for _, c := range f.rec.Calls()[calls:] {
		if strings.Contains(c, "routes-b(empty)") {
			t.Fatalf("the placeholder for routes-b was put in place after it arrived: %q", f.rec.Calls()[calls:])
		}
	}

	// routes-c never comes: after the initial fetch timeout the listener changes over to
	// the placeholder, and routes-b is unsubscribed.
	from = set("v4", "routes-c", "routes-b")
	mustWait(t, f.cp, from, "RDS ACK v4 subscribed to both", func(r xdstest.Request) bool {
		return xdstest.ACKOf(RouteType, "v4")(r) && routesNamed("routes-b", "routes-c")(r)
	})
	uses("warming for routes-c", "routes-b")
	mustWait(t, f.cp, from, "RDS subscribed to routes-c only after the timeout", routesNamed("routes-c"))
	if got, full := f.rec.listenerRouter("http"); got != "routes-c" || full {
		t.Fatalf("after the warm timeout: listener uses router %q (with routes: %v), want the routes-c placeholder", got, full)
	}
}

// TestADSReconnectOtherAddress: the ADS cluster (a static_resources cluster with two
// endpoints) gives two addresses. The client uses the first; when that control plane dies
// and stays dead, it reconnects to the second, resubscribes there with the versions it
// accepted, ACKs, and takes updates from it. Meanwhile the config stays applied and
// readiness, released once, is not taken again.
func TestADSReconnectOtherAddress(t *testing.T) {
	cp1, cp2 := startCP(t), startCP(t)
	endpoint := func(addr string) string {
		host, port, _ := strings.Cut(addr, ":")
		return fmt.Sprintf(`{"endpoint": {"address": {"socket_address": {"address": %q, "port_value": %s}}}}`, host, port)
	}
	cfg, _, err := config.Parse([]byte(`{
	  "dynamic_resources": {"lds_config": {"ads": {}}, "cds_config": {"ads": {}},
	    "ads_config": {"api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}},
	  "static_resources": {"clusters": [{"name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
	    "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [`+
		endpoint(cp1.Addr())+`, `+endpoint(cp2.Addr())+`]}]}}]}}`), config.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseBootstrap(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(b.Targets, []string{cp1.Addr(), cp2.Addr()}) {
		t.Fatalf("targets %v", b.Targets)
	}
	f := startClient(t, b, cp1, b.Targets...)
	snapshot(t, cp1, "v1", "127.0.0.1:9001")
	snapshot(t, cp2, "v1", "127.0.0.1:9001")
	mustWait(t, cp1, 0, "CDS ACK", xdstest.ACKOf(ClusterType, "v1"))
	mustWait(t, cp1, 0, "RDS ACK", xdstest.ACKOf(RouteType, "v1"))
	select {
	case <-f.rec.released:
	case <-time.After(wait):
		t.Fatal("readiness not released")
	}
	if n := len(cp2.Requests()); n != 0 {
		t.Fatalf("the second address got %d requests while the first served", n)
	}

	cp1.Stop()
	first, _ := mustWait(t, cp2, 0, "resubscribe on the second address", func(r xdstest.Request) bool { return r.TypeURL == ClusterType })
	if first.Version != "v1" || first.Nonce != "" {
		t.Fatalf("resubscription %+v: want the accepted version v1 and no nonce", first)
	}
	mustWait(t, cp2, 0, "EDS resubscribe with names", func(r xdstest.Request) bool {
		return r.TypeURL == EndpointType && slices.Equal(r.Names, []string{"svc"})
	})
	for _, typ := range []string{ClusterType, EndpointType, ListenerType, RouteType} {
		mustWait(t, cp2, 0, "ACK on the second address "+typ, xdstest.ACKOf(typ, "v1"))
	}
	if got := f.rec.Hosts("svc"); !slices.Equal(got, []string{"127.0.0.1:9001"}) {
		t.Fatalf("hosts after the failover: %v", got)
	}
	snapshot(t, cp2, "v2", "127.0.0.1:9002")
	mustWait(t, cp2, 0, "EDS ACK v2", xdstest.ACKOf(EndpointType, "v2"))
	if got := f.rec.Hosts("svc"); !slices.Equal(got, []string{"127.0.0.1:9002"}) {
		t.Fatalf("hosts after v2 from the second address: %v", got)
	}
	f.rec.mu.Lock()
	holds := f.rec.holds
	f.rec.mu.Unlock()
	if holds != 1 {
		t.Fatalf("readiness held %d times; want once (at New)", holds)
	}
	if s := f.c.Stats(); s.Connects < 2 {
		t.Fatalf("stats %+v", s)
	}
}

// TestReconnectBackoffJitteredAndBounded: the waits between reconnects grow from the base,
// double per attempt, never exceed the cap (nor does a base above it), are spread over
// [d/2, d] rather than all alike (so proxies that lost the same control plane do not
// reconnect in step), and start over from the base after a reset (a stream that got a
// response).
func TestReconnectBackoffJitteredAndBounded(t *testing.T) {
	const base, limit = 100 * time.Millisecond, 800 * time.Millisecond
	for range 50 {
		b := reconnectBackoff{base: base, max: limit}
		for k := range 8 {
			d := min(base<<k, limit)
			if w := b.next(); w < d/2 || w > d {
				t.Fatalf("wait %d = %v; want within [%v, %v]", k, w, d/2, d)
			}
		}
		b.reset()
		if w := b.next(); w < base/2 || w > base {
			t.Fatalf("wait after reset = %v; want within [%v, %v]", w, base/2, base)
		}
	}
	// At the cap: 200 waits, nearly all distinct, in both halves of [cap/2, cap].
	b := reconnectBackoff{base: limit, max: limit}
	seen := map[time.Duration]bool{}
	var low, high int
	for range 200 {
		w := b.next()
		if w < limit/2 || w > limit {
			t.Fatalf("wait at the cap = %v", w)
		}
		seen[w] = true
		if w < 3*limit/4 {
			low++
		} else {
			high++
		}
	}
	if len(seen) < 150 || low == 0 || high == 0 {
		t.Fatalf("waits not jittered: %d distinct of 200, %d in the lower half, %d in the upper", len(seen), low, high)
	}
	b = reconnectBackoff{base: time.Minute, max: limit}
	if w := b.next(); w > limit {
		t.Fatalf("a base above the cap waits %v", w)
	}
}

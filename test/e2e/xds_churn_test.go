package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/mosnlite/mosnlite/pkg/xds"
	"github.com/mosnlite/mosnlite/pkg/xds/xdstest"
	"github.com/mosnlite/mosnlite/test/framework"
)

// Endpoint churn driven over xDS, as a rolling deploy does it (TestXDSEndpointChurn).

// churnServer is an HTTP/1 upstream of the churn test. It answers "name id" with an
// X-Upstream header naming it, after a short random delay (or ?delay=ms), and counts the
// connections open to it.
type churnServer struct {
	name string
	addr string
	srv  *http.Server
	open atomic.Int64
	done chan struct{}
}

func startChurnServer(t *testing.T, name, addr string) *churnServer {
	t.Helper()
	var ln net.Listener
	var err error
	for range 20 { // a port just closed may take a moment to be free again
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &churnServer{name: name, addr: ln.Addr().String(), done: make(chan struct{})}
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d := time.Duration(rand.N(4)) * time.Millisecond
			if ms, err := strconv.Atoi(r.URL.Query().Get("delay")); err == nil {
				d = time.Duration(ms) * time.Millisecond
			}
			time.Sleep(d)
			w.Header().Set("X-Upstream", name)
			_, _ = io.WriteString(w, name+" "+r.URL.Query().Get("id"))
		}),
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.open.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.open.Add(-1)
			}
		},
	}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = s.srv.Close()
		<-s.done
	})
	return s
}

// churnEP is one endpoint of a load assignment.
type churnEP struct {
	s      *churnServer
	weight uint32              // 0: unset
	health corev3.HealthStatus // UNKNOWN: unset
}

// current reports whether the proxy may send new requests to the endpoint.
func (e churnEP) current() bool {
	switch e.health {
	case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_DRAINING, corev3.HealthStatus_TIMEOUT:
		return false
	}
	return true
}

func churnAssignment(name string, eps []churnEP) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, e := range eps {
		lb := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: xdstest.Address(e.s.addr)}},
			HealthStatus:   e.health,
		}
		if e.weight > 0 {
			lb.LoadBalancingWeight = wrapperspb.UInt32(e.weight)
		}
		lbs = append(lbs, lb)
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}

// h2cListener is xdstest.HTTPListener with codec_type HTTP2 (h2c with prior knowledge).
func h2cListener(t *testing.T, name, addr, routes string) *listenerv3.Listener {
	t.Helper()
	l := xdstest.HTTPListener(name, addr, routes)
	f := l.FilterChains[0].Filters[0]
	var hcm hcmv3.HttpConnectionManager
	if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	hcm.CodecType = hcmv3.HttpConnectionManager_HTTP2
	tc, err := anypb.New(&hcm)
	if err != nil {
		t.Fatal(err)
	}
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: tc}
	return l
}

// tcpProxyListener is a listener on addr whose tcp_proxy sends every connection to cluster.
func tcpProxyListener(t *testing.T, name, addr, cluster string) *listenerv3.Listener {
	t.Helper()
	tc, err := anypb.New(&tcpv3.TcpProxy{StatPrefix: name, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.Listener{
		Name:    name,
		Address: xdstest.Address(addr),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tc},
		}}}},
	}
}

// churnRecord is one answered request: when it was sent and who answered it.
type churnRecord struct {
	kind, id, name string
	sent, answered time.Time
}

// churnLoad is the client load: HTTP/1.1 keep-alive workers on the HTTP/1 listener, h2c
// workers sharing one connection on the HTTP/2 listener, and tcp_proxy workers sending one
// request per connection (tcp_proxy binds a connection to one host for its life, so a
// keep-alive connection through it would keep reaching a removed host, as Envoy's do).
type churnLoad struct {
	known func(string) bool
	phase atomic.Pointer[string]

	stop       atomic.Bool
	wg         sync.WaitGroup
	ok, failed atomic.Int64

	mu            sync.Mutex
	records       []churnRecord
	errs          []string
	failedByPhase map[string]int
	clients       []*http.Client
}

func (l *churnLoad) setPhase(s string) { l.phase.Store(&s) }

// get sends GET /churn?id=id (and delay, if not "") and returns the answering upstream.
func (l *churnLoad) get(c *http.Client, base, id, delay string) (string, error) {
	url := base + "/churn?id=" + id
	if delay != "" {
		url += "&delay=" + delay
	}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", fmt.Errorf("GET %s: reading the body: %w", id, err)
	}
	name, gotID, _ := strings.Cut(string(b), " ")
	if resp.StatusCode != 200 || gotID != id || !l.known(name) || resp.Header.Get("X-Upstream") != name {
		return "", fmt.Errorf("GET %s: %d %q (X-Upstream %q)", id, resp.StatusCode, b, resp.Header.Get("X-Upstream"))
	}
	return name, nil
}

// one sends one request and records its outcome.
func (l *churnLoad) one(c *http.Client, base, kind, id, delay string) {
	sent := time.Now()
	name, err := l.get(c, base, id, delay)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failed.Add(1)
		phase := *l.phase.Load()
		l.failedByPhase[phase]++
		if len(l.errs) < 8 {
			l.errs = append(l.errs, fmt.Sprintf("%s during %q: %v", kind, phase, err))
		}
		return
	}
	l.ok.Add(1)
	l.records = append(l.records, churnRecord{kind: kind, id: id, name: name, sent: sent, answered: time.Now()})
}

func startChurnLoad(t *testing.T, known func(string) bool, h1, h2, tcp string) *churnLoad {
	t.Helper()
	l := &churnLoad{known: known, failedByPhase: map[string]int{}}
	l.setPhase("start")
	h1c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 10 * time.Second}
	h2c := h2cClient(t)
	h2c.Timeout = 10 * time.Second
	tcpc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	l.clients = []*http.Client{h1c, h2c, tcpc}
	workers := []struct {
		kind, base string
		c          *http.Client
	}{
		{"h1", "http://" + h1, h1c}, {"h1", "http://" + h1, h1c}, {"h1", "http://" + h1, h1c},
		{"h2", "http://" + h2, h2c}, {"h2", "http://" + h2, h2c},
		{"tcp", "http://" + tcp, tcpc}, {"tcp", "http://" + tcp, tcpc},
	}
	for i, w := range workers {
		l.wg.Go(func() {
			for n := 0; !l.stop.Load() && n < 200_000; n++ {
				l.one(w.c, w.base, w.kind, fmt.Sprintf("%s-%d-%d", w.kind, i, n), "")
			}
		})
	}
	return l
}

// slow sends n requests on each listener that the upstream holds for delay, without
// waiting for them: sent just before a removal, those that reach a removed endpoint are
// in flight when it goes and must complete.
func (l *churnLoad) slow(tag string, n int, delay time.Duration, h1, h2, tcp string) {
	ms := strconv.Itoa(int(delay / time.Millisecond))
	for i := range n {
		for j, kind := range []string{"h1", "h2", "tcp"} {
			base := "http://" + []string{h1, h2, tcp}[j]
			c := l.clients[j]
			if kind == "h1" { // its own connection, so that the workers' pool is not held
				c = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
			}
			l.wg.Go(func() { l.one(c, base, kind, fmt.Sprintf("slow-%s-%s-%d", tag, kind, i), ms) })
		}
	}
}

func (l *churnLoad) finish(t *testing.T) {
	t.Helper()
	l.stop.Store(true)
	waitWorkers(t, &l.wg)
	for _, c := range l.clients {
		c.CloseIdleConnections()
	}
}

// TestXDSEndpointChurn runs a rolling deploy over EDS, pushed by go-control-plane's server,
// under steady load on an HTTP/1 listener, an h2c listener (both through RDS to EDS cluster
// svc) and a tcp_proxy listener (EDS cluster svc-tcp, on the same load assignment). Each
// round starts new upstreams, adds them (with weights) in one snapshot, takes the old
// ones out in a later one and shuts them down gracefully (http.Server.Shutdown) a grace
// period after that snapshot was ACKed. The rounds vary: weights changed in place; one old
// endpoint flapping (UNHEALTHY, then HEALTHY again), then both reported UNHEALTHY and
// DRAINING by health_status before they go; the cluster emptied for 300 ms (less than the
// 1 s pick_timeout, during which a request waits for a host) before the new endpoints fill
// it. Last, an in-place restart: an endpoint removed, its upstream shut down, a new one
// started on the same address and added back. Slow requests are sent just before each
// removal so that some are in flight on the endpoints removed.
//
// No request may fail, and requests sent into the empty cluster must have waited for the
// refill. Every answer must come from an endpoint that was current when the request was
// sent, or became current while it waited: one that the proxy had ACKed as removed (or
// unhealthy) before the request was sent may not answer it. When a removed upstream is
// shut down no connection from the proxy may be open to it any more (its pooled
// connections were closed at the removal, the in-flight ones once their responses ended),
// and its Shutdown must not time out. At the end the proxy holds no more descriptors and
// goroutines than before the load.
func TestXDSEndpointChurn(t *testing.T) {
	const node = "mosnlite-churn"
	const grace = 1500 * time.Millisecond
	cp := xdstest.New()
	cpAddr, err := cp.Start(framework.FreePort(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	listenH1, listenH2, listenTCP := framework.FreePort(t), framework.FreePort(t), framework.FreePort(t)

	var (
		smu     sync.Mutex
		servers = map[string]*churnServer{}
		// events: per upstream name, when it became current (at the push) or stopped
		// being current (at the ACK), in order.
		events = map[string][]churnEvent{}
	)
	known := func(name string) bool {
		smu.Lock()
		defer smu.Unlock()
		return servers[name] != nil
	}
	gen := 0
	startNamed := func(name, addr string) *churnServer {
		s := startChurnServer(t, name, addr)
		smu.Lock()
		servers[s.name] = s
		smu.Unlock()
		return s
	}
	startGen := func(n int) []*churnServer {
		gen++
		var out []*churnServer
		for i := range n {
			out = append(out, startNamed(fmt.Sprintf("g%d%c", gen, 'a'+i), "127.0.0.1:0"))
		}
		return out
	}

	svcTCP := xdstest.EDSCluster("svc-tcp")
	svcTCP.EdsClusterConfig.ServiceName = "svc"
	svcTCP.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	version := 0
	var cur []churnEP // the endpoints of the last snapshot
	push := func(eps []churnEP) (string, int) {
		t.Helper()
		version++
		v := "v" + strconv.Itoa(version)
		res := xdstest.Resources{}.
			Add(xds.ClusterType, xdstest.EDSCluster("svc"), svcTCP).
			Add(xds.EndpointType, churnAssignment("svc", eps)).
			Add(xds.ListenerType, xdstest.HTTPListener("h1", listenH1, "routes"), h2cListener(t, "h2", listenH2, "routes"),
				tcpProxyListener(t, "tcp", listenTCP, "svc-tcp")).
			Add(xds.RouteType, xdstest.RouteToCluster("routes", "svc"))
		from := len(cp.Requests())
		now := time.Now()
		smu.Lock()
		for _, e := range eps {
			if e.current() {
				events[e.s.name] = append(events[e.s.name], churnEvent{now, true})
			}
		}
		smu.Unlock()
		if err := cp.SetSnapshot(node, v, res); err != nil {
			t.Fatal(err)
		}
		return v, from
	}
	// apply pushes eps and waits for the EDS ACK; the endpoints of the previous snapshot
	// that are not current in eps stop being current at the ACK.
	apply := func(what string, eps []churnEP) {
		t.Helper()
		v, from := push(eps)
		if _, _, err := cp.WaitRequest(from, 10*time.Second, xdstest.ACKOf(xds.EndpointType, v)); err != nil {
			t.Fatalf("%s: EDS ACK of %s: %v", what, v, err)
		}
		now := time.Now()
		smu.Lock()
		for _, e := range cur {
			if !slices.ContainsFunc(eps, func(n churnEP) bool { return n.s == e.s && n.current() }) {
				events[e.s.name] = append(events[e.s.name], churnEvent{now, false})
			}
		}
		smu.Unlock()
		cur = eps
	}

	// Shutdowns: each removed upstream goes a grace period after its removal was ACKed.
	type shutdownResult struct {
		name     string
		openAt   int64 // connections open when the grace ended
		err      error
		took     time.Duration
		leftOpen int64
	}
	var (
		sdWG      sync.WaitGroup
		sdMu      sync.Mutex
		sdResults []shutdownResult
		sdQuit    = make(chan struct{})
	)
	t.Cleanup(func() {
		close(sdQuit)
		sdWG.Wait()
	})
	shutdown := func(s *churnServer) {
		r := shutdownResult{name: s.name, openAt: s.open.Load()}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		r.err = s.srv.Shutdown(ctx)
		r.took = time.Since(start)
		cancel()
		r.leftOpen = s.open.Load()
		sdMu.Lock()
		sdResults = append(sdResults, r)
		sdMu.Unlock()
	}
	shutdownLater := func(ss []*churnServer) {
		for _, s := range ss {
			sdWG.Go(func() {
				select {
				case <-time.After(grace):
				case <-sdQuit:
					return
				}
				shutdown(s)
			})
		}
	}

	eps := func(ss []*churnServer, weights ...uint32) []churnEP {
		var out []churnEP
		for i, s := range ss {
			e := churnEP{s: s}
			if i < len(weights) {
				e.weight = weights[i]
			}
			out = append(out, e)
		}
		return out
	}

	old := startGen(2)
	push(eps(old))
	cur = eps(old)
	adminAddr := framework.FreePort(t)
	t.Setenv("MOSNLITE_SERVICE_NODE", node)
	t.Setenv("MOSNLITE_SERVICE_CLUSTER", "e2e")
	p := framework.StartProxy(t, adsBootstrap(adminAddr, cpAddr))
	for _, typ := range []string{xds.ClusterType, xds.EndpointType, xds.ListenerType, xds.RouteType} {
		if _, _, err := cp.WaitRequest(0, 20*time.Second, xdstest.ACKOf(typ, "v1")); err != nil {
			t.Fatalf("ACK v1 of %s: %v\n%s", typ, err, p.Logs())
		}
	}
	// Each listener serves before the load starts.
	first := []string{old[0].name, old[1].name}
	probeGet := func(what string, c *http.Client, base string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for i := 0; ; i++ {
			id := "probe-" + strconv.Itoa(i)
			resp, err := c.Get(base + "/churn?id=" + id)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				name, gotID, _ := strings.Cut(string(b), " ")
				if resp.StatusCode == 200 && gotID == id && slices.Contains(first, name) {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no answer from %v within 15s (last error %v)\n%s", what, first, err, p.Logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	pc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	probeGet("HTTP/1 listener", pc, "http://"+listenH1)
	probeGet("tcp_proxy listener", pc, "http://"+listenTCP)
	h2p := h2cClient(t)
	probeGet("h2c listener", h2p, "http://"+listenH2)
	// Warm-up: a request that waits for a host is handed to a goroutine, whose pool (and
	// its hosts watcher) starts on first use; one empty window before the baseline.
	apply("warm-up: cluster empty", nil)
	var warm sync.WaitGroup
	warmErrs := make(chan error, 3)
	for _, w := range []struct {
		c    *http.Client
		base string
	}{{pc, "http://" + listenH1}, {h2p, "http://" + listenH2}, {pc, "http://" + listenTCP}} {
		warm.Go(func() {
			resp, err := w.c.Get(w.base + "/churn?id=warm")
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			if err != nil {
				warmErrs <- fmt.Errorf("%s: %w", w.base, err)
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	apply("warm-up: refilled", eps(old))
	warm.Wait()
	close(warmErrs)
	for err := range warmErrs {
		t.Errorf("warm-up request sent into the empty cluster: %v", err)
	}
	h2p.CloseIdleConnections()
	// The proxy's baseline once the upstreams closed their idle connections: at the end,
	// with the clients gone, it holds no more (no connection to a removed upstream either).
	dropIdle := func() {
		smu.Lock()
		defer smu.Unlock()
		for range 40 { // a connection that just answered may not be idle yet: again
			open := int64(0)
			for _, s := range servers {
				s.srv.SetKeepAlivesEnabled(false) // closes the idle connections
				s.srv.SetKeepAlivesEnabled(true)
				open += s.open.Load()
			}
			if open == 0 {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	dropIdle()
	lc := framework.NewLeakCheckExcept(t, p, cpAddr)

	l := startChurnLoad(t, known, listenH1, listenH2, listenTCP)
	loadStart := time.Now()
	pause := func() { time.Sleep(churnPause) }
	pause()
	removals := 0
	// remove applies next, which no longer has old as current endpoints, with slow
	// requests in flight, and shuts old down a grace period after the ACK.
	remove := func(what string, next []churnEP, old []*churnServer) {
		t.Helper()
		l.slow(fmt.Sprintf("r%d", removals), 2, 600*time.Millisecond, listenH1, listenH2, listenTCP)
		time.Sleep(50 * time.Millisecond) // the slow requests reach their upstreams
		removals++
		l.setPhase(what)
		apply(what, next)
		shutdownLater(old)
	}
	var emptyWindows [][2]time.Time // from before the empty snapshot to the refill's push
	for round := 1; round <= churnRounds; round++ {
		fresh := startGen(2)
		tag := fmt.Sprintf("round %d: ", round)
		l.setPhase(tag + "new endpoints added")
		apply(tag+"new endpoints added", append(eps(old, 1, 1), eps(fresh, 3, 2)...))
		pause()
		switch round % 4 {
		case 2:
			// One old endpoint flaps (UNHEALTHY, then back); then both are reported
			// unhealthy and draining, then removed.
			l.setPhase(tag + "old endpoint flaps")
			apply(tag+"old endpoint UNHEALTHY", append([]churnEP{{s: old[0], health: corev3.HealthStatus_UNHEALTHY}, {s: old[1]}}, eps(fresh, 3, 2)...))
			pause()
			apply(tag+"old endpoint HEALTHY again", append([]churnEP{{s: old[0], health: corev3.HealthStatus_HEALTHY}, {s: old[1]}}, eps(fresh, 3, 2)...))
			pause()
			sick := []churnEP{
				{s: old[0], health: corev3.HealthStatus_UNHEALTHY},
				{s: old[1], health: corev3.HealthStatus_DRAINING},
			}
			remove(tag+"old endpoints UNHEALTHY/DRAINING", append(sick, eps(fresh, 3, 2)...), old)
			pause()
			l.setPhase(tag + "old endpoints removed")
			apply(tag+"old endpoints removed", eps(fresh, 3, 2))
		case 3:
			// The cluster emptied, then filled with the new endpoints within pick_timeout.
			emptied := time.Now()
			remove(tag+"cluster empty", nil, old)
			time.Sleep(300 * time.Millisecond)
			l.setPhase(tag + "cluster refilled")
			emptyWindows = append(emptyWindows, [2]time.Time{emptied, time.Now()})
			apply(tag+"cluster refilled", eps(fresh, 3, 2))
		case 0:
			// Weights changed in place first.
			l.setPhase(tag + "weights changed")
			apply(tag+"weights changed", append(eps(old, 4, 1), eps(fresh, 1, 5)...))
			pause()
			remove(tag+"old endpoints removed", eps(fresh, 1, 1), old)
		default:
			remove(tag+"old endpoints removed", eps(fresh, 1, 2), old)
		}
		pause()
		old = fresh
	}
	// An in-place restart: one endpoint removed, its upstream shut down after the grace,
	// a new one started on the same address and added back.
	l.setPhase("restart in place: endpoint removed")
	apply("restart in place: endpoint removed", eps(old[1:]))
	time.Sleep(grace)
	shutdown(old[0])
	restarted := startNamed(old[0].name+"-restarted", old[0].addr)
	l.setPhase("restart in place: endpoint back")
	apply("restart in place: endpoint back", append(eps(old[1:]), churnEP{s: restarted}))
	pause()
	l.setPhase("last shutdowns")
	sdWG.Wait()
	pause()
	l.finish(t)
	loadTook := time.Since(loadStart)
	dropIdle()
	lc.Check(t)

	// Every answer from an endpoint current when the request was sent.
	smu.Lock()
	defer smu.Unlock()
	byName := map[string]int{}
	stray := 0
	var strays []string
	for _, r := range l.records {
		byName[r.name]++
		ev := events[r.name]
		// Current when sent, or made current while the request waited (a request sent
		// into an empty cluster waits for a host).
		i := sort.Search(len(ev), func(i int) bool { return !ev[i].at.Before(r.sent) })
		if i > 0 && ev[i-1].current || slices.ContainsFunc(ev[i:], func(e churnEvent) bool { return e.current && e.at.Before(r.answered) }) {
			continue
		}
		stray++
		if len(strays) < 8 {
			why := "before it was pushed"
			if i > 0 {
				why = fmt.Sprintf("%s after its removal was ACKed", r.sent.Sub(ev[i-1].at).Round(time.Microsecond))
			}
			strays = append(strays, fmt.Sprintf("%s %s answered by %s, sent %s", r.kind, r.id, r.name, why))
		}
	}
	slowOnRemoved, emptyWaits := 0, 0
	for _, r := range l.records {
		for _, w := range emptyWindows {
			// Sent before the refill and answered after it: waited for a host.
			if r.sent.After(w[0]) && r.sent.Before(w[1]) && r.answered.After(w[1]) && !strings.HasPrefix(r.id, "slow-") {
				emptyWaits++
			}
		}
	}
	for _, r := range l.records {
		if strings.HasPrefix(r.id, "slow-") {
			ev := events[r.name]
			if len(ev) > 0 && !ev[len(ev)-1].current {
				slowOnRemoved++
			}
		}
	}
	t.Logf("load ran %s, the proxy back at its baseline after %s", loadTook.Round(time.Millisecond), (time.Since(loadStart) - loadTook).Round(time.Millisecond))
	t.Logf("load: %d answered (by upstream %v; %d slow ones by endpoints removed meanwhile; %d waited in an empty cluster), %d failed (by phase %v); %d versions pushed",
		l.ok.Load(), byName, slowOnRemoved, emptyWaits, l.failed.Load(), l.failedByPhase, version)
	if emptyWaits == 0 {
		t.Error("no request waited while the cluster was empty")
	}
	if n := l.failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed during the churn; first ones:\n  %s", n, n+l.ok.Load(), strings.Join(l.errs, "\n  "))
	}
	if stray > 0 {
		t.Errorf("%d answers came from endpoints no longer current when the request was sent; first ones:\n  %s", stray, strings.Join(strays, "\n  "))
	}
	sdMu.Lock()
	defer sdMu.Unlock()
	if len(sdResults) != 2*removals+1 {
		t.Errorf("%d upstreams shut down, want %d", len(sdResults), 2*removals+1)
	}
	for _, r := range sdResults {
		if r.openAt != 0 || r.err != nil || r.leftOpen != 0 {
			t.Errorf("removed upstream %s: %d connections open %s after its removal; Shutdown: %v after %s, %d left open",
				r.name, r.openAt, grace, r.err, r.took.Round(time.Millisecond), r.leftOpen)
		}
	}
	for _, s := range servers {
		if byName[s.name] == 0 {
			t.Errorf("upstream %s answered nothing", s.name)
		}
	}
}

// The churn's rounds and the pause between its steps.
const (
	churnRounds = 16
	churnPause  = 60 * time.Millisecond
)

// churnEvent is a change of an upstream's standing: current (pushed in a snapshot) or not
// (a snapshot without it, or with it unhealthy, ACKed).
type churnEvent struct {
	at      time.Time
	current bool
}

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/mosnlite/mosnlite/test/framework"
	"github.com/mosnlite/mosnlite/test/framework/rpcpeer"
)

// SIGHUP reloads made while bolt and dubbo traffic flows lose no request
// (TestReloadUnderRPCLoad): the RPC version of TestReloadUnderLoad. The clients behave as
// SOFA and Dubbo consumers do: a connection that got the go-away (bolt cmdcode 100, Dubbo's
// readonly event) takes no new request, the ones already sent on it must still be
// answered, and the next request goes on a new connection.

// reloadRPCService is the bolt service the bolt listener routes (dubbo: echoIface).
const reloadRPCService = "svc.reload"

// rpcReloadState is one version of the RPC config: the routers' name prefix (a new one
// replaces both listeners), the cluster each service is routed to, the clusters (name →
// upstream name), and whether the bolt listener's downstream_protocol is misspelt.
type rpcReloadState struct {
	router                string
	boltRoute, dubboRoute string
	clusters              map[string]string
	broken                bool
}

// rpcReloadConfig is s as a static config: a bolt listener and a dubbo listener, each with
// a router of its own (named after s.router), and an admin endpoint.
func rpcReloadConfig(t *testing.T, boltListen, dubboListen, admin string, addrs map[string]string, s rpcReloadState) string {
	t.Helper()
	var routers, listeners []any
	add := func(name, listen string, proxy map[string]any, service, cluster string) {
		router := s.router + "-" + name
		proxy["router_config_name"] = router
		routers = append(routers, map[string]any{
			"router_config_name": router,
			"virtual_hosts": []any{map[string]any{"name": name, "domains": []any{"*"},
				"routers": []any{rpcRoute(cluster, "", hdr{"service", service})}}},
		})
		listeners = append(listeners, map[string]any{
			"name": name, "address": listen, "bind_port": true,
			"filter_chains": []any{map[string]any{"filters": []any{map[string]any{"type": "proxy", "config": proxy}}}},
		})
	}
	boltProto := "bolt"
	if s.broken {
		boltProto = "boltt"
	}
	add("bolt", boltListen, map[string]any{"downstream_protocol": boltProto}, reloadRPCService, s.boltRoute)
	add("dubbo", dubboListen, map[string]any{"downstream_protocol": "X",
		"extend_config": map[string]any{"sub_protocol": "dubbo"}}, echoIface, s.dubboRoute)
	var cs []any
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range s.clusters {
			if !yield(k) {
				return
			}
		}
	}) {
		cs = append(cs, rpcCluster(name, addrs[s.clusters[name]]))
	}
	_, port, _ := net.SplitHostPort(admin)
	n, _ := strconv.Atoi(port)
	cfg := map[string]any{
		"servers":         []any{map[string]any{"default_log_path": "stderr", "routers": routers, "listeners": listeners}},
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

// rpcReloadConn is one multiplexed client connection of either protocol.
type rpcReloadConn struct {
	// call sends the request id with method (the payload names the id) and checks the
	// answer: status success, the id and payload echoed. It returns the upstream's name.
	call   func(ctx context.Context, method, id string) (string, error)
	goAway <-chan struct{}
	done   <-chan struct{}
	close  func() error
	// failed is set when a call on the connection failed: as a real client, the workers
	// send nothing more on it.
	failed atomic.Bool
}

// usable reports whether c may take a new request: no go-away read, no call failed on it,
// and still open.
func (c *rpcReloadConn) usable() bool {
	return !closed(c.goAway) && !c.failed.Load() && !closed(c.done)
}

func dialBoltReload(addr string) (*rpcReloadConn, error) {
	c, err := rpcpeer.DialBolt(addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &rpcReloadConn{
		call: func(ctx context.Context, method, id string) (string, error) {
			content := []byte("bolt request " + id)
			r, err := c.Call(ctx, rpcpeer.BoltRequest(2, reloadRPCService, method, content))
			if err != nil {
				return "", fmt.Errorf("bolt %s: %w", id, err)
			}
			m := r.Message()
			srv, _ := r.Header(rpcpeer.BoltHeaderServer)
			if m.Status != 0 || !bytes.Equal(m.Content, content) {
				return "", fmt.Errorf("bolt %s: status %d server %q content %q, want 0 and %q", id, m.Status, srv, m.Content, content)
			}
			return srv, nil
		},
		goAway: c.GoAway(), done: c.Done(), close: c.Close,
	}, nil
}

func dialDubboReload(addr string) (*rpcReloadConn, error) {
	c, err := rpcpeer.DialDubbo(addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &rpcReloadConn{
		call: func(ctx context.Context, method, id string) (string, error) {
			arg := "dubbo request " + id
			res, err := c.Call(ctx, dubboSvc(echoIface, "", "1.0.0", method), []any{arg}, map[string]string{"seq": id})
			if err != nil {
				return "", fmt.Errorf("dubbo %s: %w", id, err)
			}
			if res.Status != hessian.Response_OK || res.Exception != nil || res.Value != arg || res.Attachments["seq"] != id {
				return "", fmt.Errorf("dubbo %s: status %d exception %v value %v attachments %v, want 20, %q, seq %s",
					id, res.Status, res.Exception, res.Value, res.Attachments, arg, id)
			}
			return res.Attachments[rpcpeer.AttServer], nil
		},
		goAway: c.GoAway(), done: c.Done(), close: c.Close,
	}, nil
}

// rpcReloadSlot is a shared client connection: the workers of a slot send on its current
// connection, and the first to find it told to go away (or closed) dials the next one.
// The old one is left for the proxy to close once its requests are answered.
type rpcReloadSlot struct {
	dial     func() (*rpcReloadConn, error)
	mu       sync.Mutex
	cur      *rpcReloadConn
	all      []*rpcReloadConn
	redialed int
}

func (s *rpcReloadSlot) get() (*rpcReloadConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && s.cur.usable() {
		return s.cur, nil
	}
	c, err := s.dial()
	if err != nil {
		return nil, err
	}
	if s.cur != nil {
		s.redialed++
	}
	s.cur = c
	s.all = append(s.all, c)
	return c, nil
}

func (s *rpcReloadSlot) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.all {
		_ = c.close()
	}
	s.all, s.cur = nil, nil
}

// rpcLoad is the client load: per protocol, workers over two shared connections, each
// sending requests until stopped and checking every answer.
type rpcLoad struct {
	names map[string][]string // protocol → the upstream names that may answer
	slots map[string][]*rpcReloadSlot
	phase atomic.Pointer[string]
	ctx   context.Context

	stop           atomic.Bool
	wg             sync.WaitGroup
	ok, failed     atomic.Int64
	late           atomic.Int64 // answered on a connection that had got its go-away by then
	mu             sync.Mutex
	errs           []string
	failedByPhase  map[string]int
	answeredByName map[string]int
}

func startRPCLoad(t *testing.T, slots map[string][]*rpcReloadSlot, names map[string][]string, workers int) *rpcLoad {
	t.Helper()
	l := &rpcLoad{names: names, slots: slots, ctx: rpcCtx(t, 60*time.Second),
		failedByPhase: map[string]int{}, answeredByName: map[string]int{}}
	l.setPhase("start")
	for proto, ss := range slots {
		for w := range workers {
			slot := ss[w%len(ss)]
			l.wg.Go(func() {
				for n := 0; !l.stop.Load() && n < 1_000_000; n++ {
					id := fmt.Sprintf("%s-%d-%d", proto, w, n)
					l.record(proto, l.send(slot, id))
				}
			})
		}
	}
	return l
}

func (l *rpcLoad) setPhase(s string) { l.phase.Store(&s) }

// send sends request id on the slot's current connection and returns the upstream that
// answered, or the failure.
func (l *rpcLoad) send(slot *rpcReloadSlot, id string) result {
	c, err := slot.get()
	if err != nil {
		return result{err: fmt.Errorf("%s: dialing: %w", id, err)}
	}
	ctx, cancel := context.WithTimeout(l.ctx, 10*time.Second)
	defer cancel()
	name, err := c.call(ctx, "echo", id)
	switch {
	case err != nil:
		c.failed.Store(true)
	case closed(c.goAway):
		l.late.Add(1)
	}
	return result{name: name, err: err}
}

type result struct {
	name string
	err  error
}

func (l *rpcLoad) record(proto string, r result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.err == nil && !slices.Contains(l.names[proto], r.name) {
		r.err = fmt.Errorf("%s answered by %q, not one of %v", proto, r.name, l.names[proto])
	}
	if r.err != nil {
		l.failed.Add(1)
		phase := *l.phase.Load()
		l.failedByPhase[phase]++
		if len(l.errs) < 5 {
			l.errs = append(l.errs, fmt.Sprintf("during %q: %v", phase, r.err))
		}
		return
	}
	l.ok.Add(1)
	l.answeredByName[r.name]++
}

// finish stops the workers, waits for them (bounded), closes every client connection and
// fails t if any request failed. It returns the answers by upstream and the reconnections
// by protocol.
func (l *rpcLoad) finish(t *testing.T) (map[string]int, map[string]int) {
	t.Helper()
	l.stop.Store(true)
	waitWorkers(t, &l.wg)
	redialed := map[string]int{}
	for proto, ss := range l.slots {
		for _, s := range ss {
			s.mu.Lock()
			redialed[proto] += s.redialed
			s.mu.Unlock()
			s.closeAll()
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("load: %d requests answered (by upstream %v, %d after their connection's go-away), reconnections %v, %d failed (by phase %v)",
		l.ok.Load(), l.answeredByName, l.late.Load(), redialed, l.failed.Load(), l.failedByPhase)
	if l.failed.Load() != 0 {
		t.Errorf("%d requests failed while the config changed; first ones:\n  %s", l.failed.Load(), strings.Join(l.errs, "\n  "))
	}
	return maps.Clone(l.answeredByName), redialed
}

// rpcProbe sends requests, each on a new connection, until n answers in a row come from
// upstreams in want, failing t after d.
func rpcProbe(t *testing.T, what string, dial func() (*rpcReloadConn, error), want []string, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	inRow := 0
	var last string
	for i := 0; inRow < n; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %d answers in a row from %v within %s (last: %s)", what, n, want, d, last)
		}
		c, err := dial()
		if err != nil {
			last, inRow = err.Error(), 0
			time.Sleep(10 * time.Millisecond)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		name, err := c.call(ctx, "echo", "probe-"+strconv.Itoa(i))
		cancel()
		_ = c.close()
		switch {
		case err != nil:
			last, inRow = err.Error(), 0
		case !slices.Contains(want, name):
			last, inRow = "answered by "+name, 0
		default:
			inRow++
			continue
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReloadUnderRPCLoad runs bolt and dubbo load (4 workers each over two shared
// multiplexed connections) against a static config with a bolt and a dubbo listener and
// reloads it with SIGHUP while it runs: (1) the routers renamed, so both listeners are
// replaced and drain: the clients get the go-away, reconnect, and the requests in flight
// on the old connections, a slow one among them, are answered; (2) the bolt service moved
// to another cluster; (3) the dubbo service moved and its old cluster removed in the same
// reload; (4) a config with an invalid field, refused. Each reload is waited for (its log
// line) and checked to be in effect on new connections. No request may fail or be answered
// wrong; at the end the last config serves, the metrics count 3 reloads and 1 failure, the
// process holds what it held before the load, and SIGTERM ends it with status 0.
func TestReloadUnderRPCLoad(t *testing.T) {
	const slowDelay = 1500 * time.Millisecond
	bolts, dubbos := map[string]*rpcpeer.BoltServer{}, map[string]*rpcpeer.DubboServer{}
	for _, n := range []string{"bA", "bB"} {
		bolts[n] = startBoltPeer(t, rpcpeer.BoltServerOptions{Name: n, SlowDelay: slowDelay})
	}
	for _, n := range []string{"dA", "dB"} {
		s, err := rpcpeer.StartDubboServer(rpcpeer.DubboServerOptions{Name: n, SlowDelay: slowDelay})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		dubbos[n] = s
	}
	addrs := map[string]string{}
	for n, s := range bolts {
		addrs[n] = s.Addr()
	}
	for n, s := range dubbos {
		addrs[n] = s.Addr()
	}
	dropUpstreams := func() {
		for _, s := range bolts {
			s.CloseConns()
		}
		for _, s := range dubbos {
			s.CloseConns()
		}
	}
	boltListen, dubboListen, admin := framework.FreePort(t), framework.FreePort(t), framework.FreePort(t)
	dialBolt := func() (*rpcReloadConn, error) { return dialBoltReload(boltListen) }
	dialDubbo := func() (*rpcReloadConn, error) { return dialDubboReload(dubboListen) }
	state := rpcReloadState{router: "r1", boltRoute: "ba", dubboRoute: "da",
		clusters: map[string]string{"ba": "bA", "da": "dA"}}
	p := framework.StartProxy(t, rpcReloadConfig(t, boltListen, dubboListen, admin, addrs, state))
	check := func(what string, s rpcReloadState, n int) {
		t.Helper()
		rpcProbe(t, what+": bolt", dialBolt, []string{s.clusters[s.boltRoute]}, n, 10*time.Second)
		rpcProbe(t, what+": dubbo", dialDubbo, []string{s.clusters[s.dubboRoute]}, n, 10*time.Second)
	}
	check("first config", state, 3)
	dropUpstreams()
	lc := framework.NewLeakCheck(t, p)

	reloads := 0
	reload := func(what string, s rpcReloadState) {
		t.Helper()
		if err := os.WriteFile(p.Config, []byte(rpcReloadConfig(t, boltListen, dubboListen, admin, addrs, s)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		reloads++
		if !waitLogCount(p, `"config reloaded"`, reloads, 10*time.Second) {
			t.Fatalf("%s: no %d \"config reloaded\" lines in the log within 10s:\n%s", what, reloads, p.Logs())
		}
		check(what, s, 3)
	}

	slots := map[string][]*rpcReloadSlot{
		"bolt":  {{dial: dialBolt}, {dial: dialBolt}},
		"dubbo": {{dial: dialDubbo}, {dial: dialDubbo}},
	}
	l := startRPCLoad(t, slots, map[string][]string{"bolt": {"bA", "bB"}, "dubbo": {"dA", "dB"}}, 4)
	time.Sleep(time.Second)

	// A slow request on each shared connection, answered after the reload below sent its
	// connection the go-away: the proxy must not drop what a client sent before it.
	var slowWG sync.WaitGroup
	slowAnswers := make(chan string, 4)
	for proto, ss := range slots {
		for i, s := range ss {
			c, err := s.get()
			if err != nil {
				t.Fatal(err)
			}
			slowWG.Go(func() {
				id := fmt.Sprintf("%s-slow-%d", proto, i)
				name, err := c.call(l.ctx, rpcpeer.MethodSlow, id)
				if err == nil && !closed(c.goAway) {
					err = fmt.Errorf("%s: answered before its connection's go-away", id)
				}
				l.record(proto, result{name: name, err: err})
				if err == nil {
					slowAnswers <- id
				}
			})
		}
	}

	l.setPhase("reload 1: routers renamed (both listeners replaced and drained)")
	state.router = "r2"
	reload("reload 1", state)
	time.Sleep(time.Second)

	l.setPhase("reload 2: bolt service moved to cluster bb (bB)")
	state.boltRoute = "bb"
	state.clusters = map[string]string{"ba": "bA", "bb": "bB", "da": "dA"}
	reload("reload 2", state)
	time.Sleep(time.Second)

	l.setPhase("reload 3: dubbo service moved to cluster db (dB), da and ba removed")
	state.dubboRoute = "db"
	state.clusters = map[string]string{"bb": "bB", "db": "dB"}
	reload("reload 3", state)
	time.Sleep(time.Second)

	l.setPhase("reload 4: invalid config (refused)")
	bad := state
	bad.boltRoute, bad.broken = "ba", true
	bad.clusters = map[string]string{"ba": "bA", "db": "dB"}
	if err := os.WriteFile(p.Config, []byte(rpcReloadConfig(t, boltListen, dubboListen, admin, addrs, bad)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !p.WaitLog("servers[0].listeners[0].filter_chains[0].filters[0].config.downstream_protocol", 10*time.Second) {
		t.Fatalf("the invalid reload was not refused naming the bad field:\n%s", p.Logs())
	}
	check("after the invalid reload", state, 10)
	time.Sleep(time.Second)

	slowWG.Wait()
	close(slowAnswers)
	answered, redialed := l.finish(t)
	if n := len(slowAnswers); n != 4 {
		t.Errorf("%d of the 4 slow requests sent before the go-away were answered after it", n)
	}
	for _, n := range []string{"bA", "bB", "dA", "dB"} {
		if answered[n] == 0 {
			t.Errorf("the load did not reach every upstream as the config moved it: %v", answered)
			break
		}
	}
	if redialed["bolt"] < 2 || redialed["dubbo"] < 2 {
		t.Errorf("reconnections after the go-away %v, want each shared connection replaced at least once", redialed)
	}

	// The last good config is what serves.
	check("the last config", state, 20)
	_, metrics := getBody(t, "http://"+admin+"/metrics")
	for _, want := range []string{fmt.Sprintf(`mosnlite_config_reloads_total{result="success"} %d`, reloads), `mosnlite_config_reloads_total{result="failure"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// Back to the baseline once the clients and the upstream connections are gone: the
	// replaced listeners drained and closed, the removed clusters' pools let go.
	dropUpstreams()
	lc.Check(t)

	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0:\n%s", code, p.Logs())
	}
}

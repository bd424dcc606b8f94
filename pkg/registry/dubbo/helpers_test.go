package dubbo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/registry/dubbo/zktest"
	"github.com/mosnlite/mosnlite/pkg/router"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is an Applier that keeps what it was given, checks it as the server would
// (routes name known clusters; the router exists), and fails on demand.
type recorder struct {
	mu       sync.Mutex
	clusters map[string]config.Cluster
	routers  []config.RouterCfg
	routes   map[string][]config.Route // router → routes
	calls    int
	// failures to inject, by method name
	fail map[string]error
}

func newRecorder() *recorder {
	return &recorder{clusters: map[string]config.Cluster{}, routes: map[string][]config.Route{}, fail: map[string]error{}}
}

func (r *recorder) failing(method string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.fail, method)
	} else {
		r.fail[method] = err
	}
}

func (r *recorder) SetClusters(owner string, cs []config.Cluster) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if owner != Owner {
		return fmt.Errorf("owner %q", owner)
	}
	if err := r.fail["SetClusters"]; err != nil {
		return err
	}
	r.clusters = map[string]config.Cluster{}
	for _, c := range cs {
		r.clusters[c.Name] = c
	}
	return nil
}

func (r *recorder) SetClusterHosts(name string, hs []config.Host) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if err := r.fail["SetClusterHosts"]; err != nil {
		return err
	}
	c, ok := r.clusters[name]
	if !ok {
		return fmt.Errorf("cluster %q: not found", name)
	}
	c.Hosts = slices.Clone(hs)
	r.clusters[name] = c
	return nil
}

func (r *recorder) SetRouters(owner string, rs []config.RouterCfg) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.routers = slices.Clone(rs)
	return nil
}

func (r *recorder) SetRoutes(owner, name string, routes []config.Route) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if err := r.fail["SetRoutes"]; err != nil {
		return err
	}
	for _, rt := range routes {
		if _, ok := r.clusters[rt.Route.ClusterName]; !ok {
			return fmt.Errorf("route to unknown cluster %q", rt.Route.ClusterName)
		}
	}
	if routes == nil {
		delete(r.routes, name)
	} else {
		r.routes[name] = slices.Clone(routes)
	}
	return nil
}

func (r *recorder) callCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// hosts returns the cluster's host addresses, or nil and false without the cluster.
func (r *recorder) hosts(name string) ([]string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.clusters[name]
	if !ok {
		return nil, false
	}
	return hostAddrs(c.Hosts), true
}

func (r *recorder) clusterNames() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ns []string
	for n := range r.clusters {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

// route compiles the router's routes into a real table and matches a request carrying hs.
func (r *recorder) route(t *testing.T, routerName string, hs map[string]string) (string, bool) {
	t.Helper()
	r.mu.Lock()
	routes := slices.Clone(r.routes[routerName])
	r.mu.Unlock()
	tables, err := router.Build([]config.RouterCfg{{
		RouterConfigName: routerName,
		VirtualHosts:     []config.VirtualHost{{Name: "all", Domains: []string{"*"}, Routers: routes}},
	}})
	if err != nil {
		t.Fatalf("routes do not build: %v", err)
	}
	rt, ok := tables[routerName].Match(rpcRequest(hs))
	if !ok {
		return "", false
	}
	return rt.ClusterFor(rpcRequest(hs), 0), true
}

type rpcRequest map[string]string

func (rpcRequest) Host() string                     { return "" }
func (rpcRequest) Path() string                     { return "" }
func (rpcRequest) Method() string                   { return "" }
func (r rpcRequest) Header(n string) (string, bool) { v, ok := r[n]; return v, ok }
func (rpcRequest) Variable(string) (string, bool)   { return "", false }

// testConfig is a registry config for tests: API on a free port, ingress 127.0.0.1:port.
func testConfig(t *testing.T, ingressPort int) Config {
	t.Helper()
	raw := fmt.Sprintf(`{"enable":true,"server_port":%d,"api_port":%d,"server_ip":"127.0.0.1","registry_timeout":"5s","session_timeout":"4s"}`,
		ingressPort, freePort(t))
	c, err := ParseConfig(config.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startService runs a Service until the test ends.
func startService(t *testing.T, cfg Config, a Applier) *Service {
	t.Helper()
	s, err := New(cfg, Deps{Applier: a, Log: zaptest.NewLogger(t), CreateRouter: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Run did not return")
		}
	})
	return s
}

var httpClient = &http.Client{Timeout: 20 * time.Second}

// call POSTs body to the service's path and returns the status and the decoded answer.
func call(t *testing.T, s *Service, path string, body any) (int, Response) {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := httpClient.Post("http://"+s.Addr().String()+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var r Response
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("POST %s: answer is not MOSN's JSON: %q", path, raw)
	}
	return resp.StatusCode, r
}

// mustOK calls and fails the test unless the answer is 200 with err_no 0.
func mustOK(t *testing.T, s *Service, path string, body any) {
	t.Helper()
	st, r := call(t, s, path, body)
	if st != http.StatusOK || r.ErrNo != 0 {
		t.Fatalf("POST %s: %d %+v", path, st, r)
	}
}

// req builds a request body.
func req(kind, addr, iface, group, version string, methods ...string) map[string]any {
	svc := map[string]any{"interface": iface, "methods": methods}
	if group != "" {
		svc["group"] = group
	}
	if version != "" {
		svc["version"] = version
	}
	body := map[string]any{"service": svc}
	if kind != "" || addr != "" {
		body["registry"] = map[string]any{"type": kind, "addr": addr}
	}
	return body
}

// zkClient opens a plain ZooKeeper session, as a Dubbo application would.
func zkClient(t *testing.T, addr string) *zk.Conn {
	t.Helper()
	c, closeConn := zktest.Session(t, addr, 4*time.Second)
	zkClosers.Store(c, closeConn)
	return c
}

var zkClosers sync.Map // *zk.Conn → func(): closes and waits for the client's goroutines

func closeZK(c *zk.Conn) {
	if f, ok := zkClosers.Load(c); ok {
		f.(func())()
	}
}

// children lists the URLs under a category node, parsed.
func children(t *testing.T, c *zk.Conn, dir string) []*URL {
	t.Helper()
	names, _, err := c.Children(dir)
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	if err != nil {
		t.Fatalf("children %s: %v", dir, err)
	}
	var out []*URL
	for _, n := range names {
		u, err := ParseNode(n)
		if err != nil {
			t.Fatalf("node %s/%s is not a Dubbo URL: %v", dir, n, err)
		}
		out = append(out, u)
	}
	return out
}

// dubboProvider registers a provider node as a Dubbo application does (ephemeral, on its
// own session) and returns the node's path.
func dubboProvider(t *testing.T, c *zk.Conn, iface, hostPort, group, version string) string {
	t.Helper()
	p := map[string]string{
		"anyhost": "true", "application": "demo-provider", "interface": iface, "methods": "echo,ping",
		"side": "provider", "timestamp": strconv.FormatInt(time.Now().UnixMilli(), 10), "dubbo": "2.0.2",
	}
	if group != "" {
		p["group"] = group
	}
	if version != "" {
		p["version"] = version
	}
	u := &URL{Protocol: "dubbo", Host: hostPort, Path: iface, Params: p}
	dir := ServicePath(iface) + "/providers"
	for _, d := range []string{RootPath, ServicePath(iface), dir} {
		if _, err := c.Create(d, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			t.Fatal(err)
		}
	}
	path := dir + "/" + u.NodeName()
	if _, err := c.Create(path, []byte("10.0.0.1"), zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	return path
}

// cutProxy forwards TCP to a target and can cut every connection and refuse new ones for a
// while: a network partition between the sidecar and ZooKeeper.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.cut(true)
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) Addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		u, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		for _, pair := range [][2]net.Conn{{c, u}, {u, c}} {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				io.Copy(pair[0], pair[1])
				pair[0].Close()
				pair[1].Close()
			}()
		}
	}
}

// cut closes every connection; down: refuse new ones until cut(false).
func (p *cutProxy) cut(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/mosnlite/mosnlite/pkg/registry/dubbo"
	"github.com/mosnlite/mosnlite/pkg/registry/dubbo/zktest"
	"github.com/mosnlite/mosnlite/test/framework"
)

// The ZooKeeper path of the Dubbo registry endpoint when ZooKeeper itself goes away: the
// mosnlite binary publishes and subscribes through a real ZooKeeper server that the tests
// stop and start again on the same port, with its data kept or lost, or start only after
// mosnlite has tried to use it.

// zkOutageSession is the session timeout mosnlite asks for here: short, so that an expired
// session shows within the tests' bounds.
const zkOutageSession = 4 * time.Second

// zkOutageProxy starts mosnlite with registryConfig (egress, ingress → a local
// application named "local-app", the registry API) and short registry timeouts; it
// returns the egress and API addresses and the ingress address /pub advertises.
func zkOutageProxy(t *testing.T) (egress, ingress, api string, p *framework.Proxy) {
	t.Helper()
	app := startDubboPeer(t, "local-app")
	egress, ingress, api = framework.FreePort(t), framework.FreePort(t), framework.FreePort(t)
	var cfg map[string]any
	if err := json.Unmarshal([]byte(registryConfig(egress, ingress, app.Addr(), api, true)), &cfg); err != nil {
		t.Fatal(err)
	}
	ext := cfg["extends"].([]any)[0].(map[string]any)["config"].(map[string]any)
	ext["session_timeout"] = zkOutageSession.String()
	ext["registry_timeout"] = "2s"
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p = framework.StartProxy(t, string(b))
	waitAPI(t, api)
	return egress, ingress, api, p
}

// registryPost POSTs a registry API call and returns its answer.
func registryPost(t *testing.T, api, path string, body map[string]any) (int, dubbo.Response) {
	t.Helper()
	b, _ := json.Marshal(body)
	c := http.Client{Timeout: 20 * time.Second}
	resp, err := c.Post("http://"+api+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var r dubbo.Response
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("POST %s: %d %q is not a registry answer", path, resp.StatusCode, raw)
	}
	return resp.StatusCode, r
}

// zkAddProvider registers hostPort as a provider of regIface, as a Dubbo application does.
func zkAddProvider(t *testing.T, c *zk.Conn, hostPort string) {
	t.Helper()
	u := &dubbo.URL{Protocol: "dubbo", Host: hostPort, Path: regIface, Params: map[string]string{
		"anyhost": "true", "application": "other-app", "interface": regIface, "methods": "echo",
		"side": "provider", "dubbo": "2.0.2", "timestamp": strconv.FormatInt(time.Now().UnixMilli(), 10),
	}}
	for _, d := range []string{dubbo.RootPath, dubbo.ServicePath(regIface), dubbo.ServicePath(regIface) + "/providers"} {
		if _, err := c.Create(d, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			t.Fatal(err)
		}
	}
	if _, err := c.Create(dubbo.NodePath(u), nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
}

// zkHasNode reports whether category (providers, consumers) of regIface lists a URL whose
// host is host.
func zkHasNode(t *testing.T, c *zk.Conn, category, host string) bool {
	t.Helper()
	names, _, err := c.Children(dubbo.ServicePath(regIface) + "/" + category)
	if errors.Is(err, zk.ErrNoNode) {
		return false
	}
	if err != nil {
		t.Fatalf("children of %s: %v", category, err)
	}
	for _, n := range names {
		if u, err := dubbo.ParseNode(n); err == nil && u.Host == host {
			return true
		}
	}
	return false
}

// reaches calls through egress up to n times and reports whether server answered one.
func reaches(t *testing.T, egress, server string, n int) bool {
	t.Helper()
	for range n {
		if got, err := echoThrough(t, egress); err == nil && got == server {
			return true
		}
	}
	return false
}

// allAnswer makes n calls through egress and fails the test on the first that fails.
func allAnswer(t *testing.T, egress, when string, n int) {
	t.Helper()
	for i := range n {
		if _, err := echoThrough(t, egress); err != nil {
			t.Fatalf("%s: call %d through the egress listener failed: %v", when, i, err)
		}
	}
}

// zkPubSub: /pub and /sub through ZooKeeper with "zk-a" (another application's provider)
// listed; calls reach both zk-a and the sidecar's own local-app.
func zkPubSub(t *testing.T, zs *zktest.Server, egress, api string) {
	t.Helper()
	a := startDubboPeer(t, "zk-a")
	other, _ := zktest.Session(t, zs.Addr, 10*time.Second)
	zkAddProvider(t, other, a.Addr())
	body := registryBody(map[string]any{"type": "zookeeper", "addr": zs.Addr})
	registryCall(t, api, "/pub", body)
	registryCall(t, api, "/sub", body)
	for _, s := range []string{"zk-a", "local-app"} {
		if !reaches(t, egress, s, 40) {
			t.Fatalf("40 calls after /sub never reached %s", s)
		}
	}
}

// TestRegistryZKOutageRestart: ZooKeeper stops and starts again with its data while the
// sidecar has published and subscribed, once briefly (the sidecar's session resumes) and
// once for longer than the session timeout. Calls to the known providers go on during the
// outage; afterwards the sidecar's nodes are in ZooKeeper and stay there past the session
// timeout (a node of a session nobody resumed would go), and a provider added then
// reaches the subscribed cluster.
func TestRegistryZKOutageRestart(t *testing.T) {
	t.Parallel() // mostly waiting on ZooKeeper sessions and outages
	zs := zktest.Start(t)
	egress, ingress, api, _ := zkOutageProxy(t)
	zkPubSub(t, zs, egress, api)

	for _, down := range []time.Duration{0, zkOutageSession} {
		zs.Stop()
		allAnswer(t, egress, "ZooKeeper down", 10)
		time.Sleep(down)
		allAnswer(t, egress, "ZooKeeper down for "+down.String(), 10)
		zs.Restart(t, false)

		c, closeC := zktest.Session(t, zs.Addr, 10*time.Second)
		time.Sleep(zkOutageSession + time.Second) // the old session expires unless resumed
		if !zkHasNode(t, c, "providers", ingress) || !zkHasNode(t, c, "consumers", "127.0.0.1") {
			t.Fatalf("outage of %s: the sidecar's provider or consumer node is gone %s after the restart",
				down, zkOutageSession+time.Second)
		}
		name := "zk-after-" + down.String()
		b := startDubboPeer(t, name)
		zkAddProvider(t, c, b.Addr())
		waitUntil(t, "a provider added after the restart to take calls", 20*time.Second, func() bool {
			return reaches(t, egress, name, 20)
		})
		allAnswer(t, egress, "after the restart", 10)
		closeC() // its provider leaves
	}
}

// TestRegistryZKOutageDataLoss: ZooKeeper comes back with an empty data directory (every
// session and node lost). The sidecar must get a new session, write its nodes again and
// watch again; calls to the last known providers go on during the outage. Calls while it
// recovers are counted and logged, not judged: ZooKeeper then lists fewer providers.
func TestRegistryZKOutageDataLoss(t *testing.T) {
	t.Parallel() // mostly waiting on ZooKeeper sessions and outages
	zs := zktest.Start(t)
	egress, ingress, api, p := zkOutageProxy(t)
	zkPubSub(t, zs, egress, api)

	zs.Stop()
	allAnswer(t, egress, "ZooKeeper down", 10)
	zs.Restart(t, true)
	allAnswer(t, egress, "ZooKeeper back, empty", 10)

	c, _ := zktest.Session(t, zs.Addr, 10*time.Second)
	deadline := time.Now().Add(3 * zkOutageSession)
	calls, failed := 0, 0
	for !zkHasNode(t, c, "providers", ingress) || !zkHasNode(t, c, "consumers", "127.0.0.1") {
		calls++
		if _, err := echoThrough(t, egress); err != nil {
			failed++
		}
		time.Sleep(20 * time.Millisecond)
		if time.Now().After(deadline) {
			// A server that lost its data closes the connection of a client that has seen a
			// later zxid than its own; the client logs "authentication failed: EOF".
			refused := strings.Count(p.Logs(), "authentication failed: EOF")
			t.Fatalf("the sidecar's provider node is not back %s after ZooKeeper lost its data "+
				"(%d session requests closed by the server)", 3*zkOutageSession, refused)
		}
	}
	// ZooKeeper now lists no provider but the sidecar's own: the cluster may follow it.
	t.Logf("calls while the sidecar got its nodes back: %d, failed: %d", calls, failed)
	allAnswer(t, egress, "the sidecar's nodes back", 10)
	b := startDubboPeer(t, "zk-b")
	zkAddProvider(t, c, b.Addr())
	waitUntil(t, "a provider added after the restart to take calls", 20*time.Second, func() bool {
		return reaches(t, egress, "zk-b", 10)
	})
}

// TestRegistryZKOutageAtStart: ZooKeeper is not running when the application calls /pub and
// /sub. They answer err_no 1 naming the registry (no hang past registry_timeout); once
// ZooKeeper runs, the same calls succeed and the node is there.
func TestRegistryZKOutageAtStart(t *testing.T) {
	t.Parallel() // mostly waiting on ZooKeeper sessions and outages
	zs := zktest.Start(t)
	zs.Stop() // its port, with nothing listening
	egress, ingress, api, _ := zkOutageProxy(t)
	body := registryBody(map[string]any{"type": "zookeeper", "addr": zs.Addr})
	for _, path := range []string{"/pub", "/sub"} {
		start := time.Now()
		status, r := registryPost(t, api, path, body)
		if status != http.StatusOK || r.ErrNo != 1 || !strings.Contains(r.ErrMsg, zs.Addr) {
			t.Fatalf("%s with ZooKeeper down: %d %+v; want err_no 1 naming %s", path, status, r, zs.Addr)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("%s with ZooKeeper down took %s (registry_timeout 2s)", path, d)
		}
		t.Logf("%s with ZooKeeper down: %s", path, r.ErrMsg)
	}
	zs.Restart(t, false)
	registryCall(t, api, "/pub", body)
	registryCall(t, api, "/sub", body)
	c, _ := zktest.Session(t, zs.Addr, 10*time.Second)
	if !zkHasNode(t, c, "providers", ingress) {
		t.Fatal("no provider node after /pub succeeded")
	}
	if !reaches(t, egress, "local-app", 10) {
		t.Fatal("calls do not reach the sidecar's own provider after /sub")
	}
}

// TestRegistryZKOutageUnpub: /unpub while ZooKeeper is down. Whatever it answers, once
// ZooKeeper is back (with its data) the provider node must not be there, and the
// subscribed cluster must drop the provider.
func TestRegistryZKOutageUnpub(t *testing.T) {
	t.Parallel() // mostly waiting on ZooKeeper sessions and outages
	zs := zktest.Start(t)
	egress, ingress, api, _ := zkOutageProxy(t)
	zkPubSub(t, zs, egress, api)
	body := registryBody(map[string]any{"type": "zookeeper", "addr": zs.Addr})

	zs.Stop()
	status, r := registryPost(t, api, "/unpub", body)
	t.Logf("/unpub with ZooKeeper down: %d %+v", status, r)
	zs.Restart(t, false)

	c, _ := zktest.Session(t, zs.Addr, 10*time.Second)
	// The session resumes with the node in it: the sidecar must delete it. (A session not
	// resumed would expire within the session timeout and take the node along.)
	deadline := time.Now().Add(zkOutageSession + time.Second)
	for zkHasNode(t, c, "providers", ingress) {
		if time.Now().After(deadline) {
			t.Fatalf("the provider node is still there %s after ZooKeeper returned, though /unpub "+
				"was called during the outage (it answered %+v)", zkOutageSession+time.Second, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.ErrNo != 0 {
		// The call failed: the application retries, as it would; that must work now.
		registryCall(t, api, "/unpub", body)
	}
	waitUntil(t, "calls to stop reaching the unpublished provider", 20*time.Second, func() bool {
		return reaches(t, egress, "zk-a", 10) && !reaches(t, egress, "local-app", 20)
	})
	if zkHasNode(t, c, "providers", ingress) {
		t.Fatal("the unpublished provider node came back")
	}
}

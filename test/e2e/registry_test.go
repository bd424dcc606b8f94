package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/mosnlite/mosnlite/pkg/registry/dubbo"
	"github.com/mosnlite/mosnlite/pkg/registry/dubbo/zktest"
	"github.com/mosnlite/mosnlite/test/framework"
	"github.com/mosnlite/mosnlite/test/framework/rpcpeer"
)

// The Dubbo registry endpoint through the mosnlite binary: a config with a dubbo egress
// listener on MOSN's "dubbo" router, a dubbo ingress listener in front of the local
// application, and extends dubbo_registry. After /sub, Dubbo calls through the egress
// listener reach the providers the registry lists.

const regIface = "com.example.RegistryEchoService"

// registryConfig: egress (router "dubbo", filled by /sub), ingress at ingress → app.
// defineRouter: the config defines the "dubbo" router; otherwise the registry creates it,
// as MOSN does.
func registryConfig(egress, ingress, app, api string, defineRouter bool) string {
	_, ingressPort, _ := net.SplitHostPort(ingress)
	_, apiPort, _ := net.SplitHostPort(api)
	listener := func(name, addr, router string) map[string]any {
		return map[string]any{
			"name": name, "address": addr, "bind_port": true,
			"filter_chains": []any{map[string]any{"filters": []any{map[string]any{
				"type": "proxy", "config": map[string]any{"downstream_protocol": "dubbo", "router_config_name": router},
			}}}},
		}
	}
	routers := []any{map[string]any{"router_config_name": "ingress", "virtual_hosts": []any{map[string]any{
		"name": "ingress", "domains": []any{"*"},
		"routers": []any{rpcRoute("local_app", "", hdr{"service", regIface})},
	}}}}
	if defineRouter {
		routers = append(routers, map[string]any{"router_config_name": "dubbo",
			"virtual_hosts": []any{map[string]any{"name": "dubbo", "domains": []any{"*"}}}})
	}
	cfg := map[string]any{
		"servers": []any{map[string]any{
			"default_log_path": "stderr",
			"routers":          routers,
			"listeners":        []any{listener("egress", egress, "dubbo"), listener("ingress", ingress, "ingress")},
		}},
		"cluster_manager": map[string]any{"clusters": []any{rpcCluster("local_app", app)}},
		"extends": []any{map[string]any{"type": "dubbo_registry", "config": map[string]any{
			"enable": true, "server_port": atoi(ingressPort), "api_port": atoi(apiPort), "server_ip": "127.0.0.1",
		}}},
		"drain": map[string]any{"timeout": "5s"},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// registryCall POSTs a registry API call and fails the test unless it succeeds.
func registryCall(t *testing.T, api, path string, body map[string]any) {
	t.Helper()
	if st, r := registryPost(t, api, path, body); st != 200 || r.ErrNo != 0 {
		t.Fatalf("POST %s: %d %+v", path, st, r)
	}
}

func registryBody(registry map[string]any) map[string]any {
	b := map[string]any{"service": map[string]any{"interface": regIface, "methods": []string{"echo"}}}
	if registry != nil {
		b["registry"] = registry
	}
	return b
}

func waitAPI(t *testing.T, api string) {
	t.Helper()
	waitUntil(t, "the registry API", 20*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", api, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// echoThrough calls echo through addr and returns the answering server's name.
func echoThrough(t *testing.T, addr string) (string, error) {
	t.Helper()
	c, err := rpcpeer.DialDubbo(addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	res, err := c.Call(rpcCtx(t, 10*time.Second), dubboSvc(regIface, "", "", "echo"), []any{"hello"}, nil)
	if err != nil {
		return "", err
	}
	if res.Exception != nil || res.Status != 20 {
		return "", fmt.Errorf("status %d: %v", res.Status, res.Exception)
	}
	if res.Value != "hello" {
		return "", fmt.Errorf("value %v", res.Value)
	}
	return res.Attachments[rpcpeer.AttServer], nil
}

// TestRegistryZooKeeperSub: a Dubbo provider registered in ZooKeeper (as a Dubbo
// application writes it) is reachable through the sidecar's egress listener after /sub,
// and is not after /unsub.
func TestRegistryZooKeeperSub(t *testing.T) {
	zs := zktest.Start(t)
	provider := startDubboPeer(t, "zk-provider")
	egress, ingress, api := framework.FreePort(t), framework.FreePort(t), framework.FreePort(t)
	framework.StartProxy(t, registryConfig(egress, ingress, deadAddr(t), api, true))
	waitAPI(t, api)

	conn, ev, err := zk.Connect([]string{zs.Addr}, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		for range ev {
		}
	})
	waitUntil(t, "a zookeeper session", 10*time.Second, func() bool { return conn.State() == zk.StateHasSession })
	u := &dubbo.URL{Protocol: "dubbo", Host: provider.Addr(), Path: regIface, Params: map[string]string{
		"anyhost": "true", "application": "e2e-provider", "interface": regIface, "methods": "echo",
		"side": "provider", "dubbo": "2.0.2", "timestamp": strconv.FormatInt(time.Now().UnixMilli(), 10),
	}}
	for _, d := range []string{dubbo.RootPath, dubbo.ServicePath(regIface), dubbo.ServicePath(regIface) + "/providers"} {
		if _, err := conn.Create(d, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			t.Fatal(err)
		}
	}
	if _, err := conn.Create(dubbo.NodePath(u), nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}

	body := registryBody(map[string]any{"type": "zookeeper", "addr": zs.Addr})
	registryCall(t, api, "/sub", body)
	got, err := echoThrough(t, egress)
	if err != nil || got != "zk-provider" {
		t.Fatalf("call through the egress listener after /sub: %q %v", got, err)
	}
	registryCall(t, api, "/unsub", body)
	if got, err := echoThrough(t, egress); err == nil {
		t.Fatalf("call after /unsub reached %q", got)
	}
}

// TestRegistryLocalPubSub: with the embedded registry, /pub advertises the sidecar's
// ingress listener and /sub routes the egress listener to it: egress → ingress → the
// local application. The config does not define the "dubbo" router (MOSN's style).
func TestRegistryLocalPubSub(t *testing.T) {
	app := startDubboPeer(t, "local-app")
	egress, ingress, api := framework.FreePort(t), framework.FreePort(t), framework.FreePort(t)
	framework.StartProxy(t, registryConfig(egress, ingress, app.Addr(), api, false))
	waitAPI(t, api)

	registryCall(t, api, "/pub", registryBody(nil))
	registryCall(t, api, "/sub", registryBody(nil))
	got, err := echoThrough(t, egress)
	if err != nil || got != "local-app" {
		t.Fatalf("egress → ingress → app: %q %v", got, err)
	}
	registryCall(t, api, "/unpub", registryBody(nil))
	// The provider is gone: the cluster has no host left, so the call fails.
	waitUntil(t, "calls to fail after /unpub", 20*time.Second, func() bool {
		_, err := echoThrough(t, egress)
		return err != nil
	})
}

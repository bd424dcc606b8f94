package dubbo_test

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
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/extension/builtin"
	"github.com/mosnlite/mosnlite/pkg/registry/dubbo"
	"github.com/mosnlite/mosnlite/pkg/registry/dubbo/zktest"
	"github.com/mosnlite/mosnlite/pkg/server"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// TestRealServer runs the registry inside a real *server.Server built from a config with
// extends dubbo_registry: a provider registered in ZooKeeper by a Dubbo application becomes
// a host of the server's cluster; its session ending takes it out; /unsub removes the
// cluster; a clash with a config cluster's name is refused and changes nothing.
func TestRealServer(t *testing.T) {
	zs := zktest.Start(t)
	api := freeAddr(t)
	_, apiPort, _ := net.SplitHostPort(api)
	const iface = "com.example.EchoService"
	raw := fmt.Sprintf(`{
	  "servers": [{"routers": [{"router_config_name": "dubbo", "virtual_hosts": [{"name": "dubbo", "domains": ["*"]}]}]}],
	  "cluster_manager": {"clusters": [{"name": "com.example.Taken", "type": "SIMPLE", "hosts": [{"address": "127.0.0.1:9"}]}]},
	  "extends": [{"type": "dubbo_registry", "config": {"enable": true, "server_port": 2046, "api_port": %s, "server_ip": "127.0.0.1"}}]
	}`, apiPort)
	cfg, _, err := config.Parse([]byte(raw), config.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.ApplyDefaults()
	if _, err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ext, err := builtin.NewSet()
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(cfg, server.Options{Extensions: ext, Log: zaptest.NewLogger(t), Level: zap.NewAtomicLevel(), AdminAddress: "-"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	waitUp(t, api)

	conn, ev, err := zk.Connect([]string{zs.Addr}, 4*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); conn.State() != zk.StateHasSession; {
		if time.Now().After(deadline) {
			t.Fatal("no zookeeper session")
		}
		time.Sleep(10 * time.Millisecond)
	}
	closed := false
	closeConn := func() {
		if !closed {
			closed = true
			conn.Close()
			for range ev {
			}
		}
	}
	t.Cleanup(closeConn)
	provider := &dubbo.URL{Protocol: "dubbo", Host: "10.0.0.7:20880", Path: iface, Params: map[string]string{
		"interface": iface, "methods": "echo", "side": "provider", "anyhost": "true",
		"timestamp": strconv.FormatInt(time.Now().UnixMilli(), 10),
	}}
	for _, d := range []string{"/dubbo", dubbo.ServicePath(iface), dubbo.ServicePath(iface) + "/providers"} {
		if _, err := conn.Create(d, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			t.Fatal(err)
		}
	}
	if _, err := conn.Create(dubbo.NodePath(provider), nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}

	body := fmt.Sprintf(`{"registry":{"type":"zookeeper","addr":%q},"service":{"interface":%q,"methods":["echo"]}}`, zs.Addr, iface)
	if r := post(t, api, "/sub", body); r.ErrNo != 0 {
		t.Fatalf("/sub: %+v", r)
	}
	hosts := func(name string) []string {
		c, ok := s.Clusters().Get(name)
		if !ok {
			return nil
		}
		var out []string
		for _, h := range c.Hosts() {
			out = append(out, h.Addr())
		}
		slices.Sort(out)
		return out
	}
	if got := hosts(iface); !slices.Equal(got, []string{"10.0.0.7:20880"}) {
		t.Fatalf("cluster hosts = %v", got)
	}
	closeConn() // the provider's session ends
	testutil.Eventually(t, 20*time.Second, "the provider's host out of the cluster", func() bool {
		_, ok := s.Clusters().Get(iface)
		return ok && len(hosts(iface)) == 0
	})
	if r := post(t, api, "/unsub", body); r.ErrNo != 0 {
		t.Fatalf("/unsub: %+v", r)
	}
	if _, ok := s.Clusters().Get(iface); ok {
		t.Fatal("cluster still there after /unsub")
	}

	// A name owned by the config: refused, nothing applied.
	taken := `{"service":{"interface":"com.example.Taken","methods":["x"]}}`
	r := post(t, api, "/sub", taken)
	if r.ErrNo != 1 || !strings.Contains(r.ErrMsg, "already defined by static") {
		t.Fatalf("/sub of a taken name: %+v", r)
	}
	if got := hosts("com.example.Taken"); !slices.Equal(got, []string{"127.0.0.1:9"}) {
		t.Fatalf("config cluster changed: %v", got)
	}
}

func freeAddr(t *testing.T) string { return testutil.FreeAddr(t) }

func waitUp(t *testing.T, addr string) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, "the registry API", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func post(t *testing.T, addr, path, body string) dubbo.Response {
	t.Helper()
	c := http.Client{Timeout: 20 * time.Second}
	resp, err := c.Post("http://"+addr+path, "application/json", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r dubbo.Response
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %q", path, b)
	}
	return r
}

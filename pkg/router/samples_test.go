package router_test

import (
	"path/filepath"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/router"
)

// MOSN's own example configs (copied into pkg/config/testdata) build, and their routes
// send the protocol they were written for to their cluster.
func TestMOSNSampleConfigsBuild(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../config/testdata/mosn/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no MOSN samples: %v", err)
	}
	routers, built := 0, 0
	for _, f := range files {
		c, _, err := config.Load(f, config.ParseOptions{})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		c.ApplyDefaults()
		for _, s := range c.Servers {
			routers += len(s.Routers)
			tables, err := router.Build(s.Routers)
			if err != nil {
				t.Errorf("%s: %v", filepath.Base(f), err)
				continue
			}
			built += len(tables)
		}
	}
	if built != routers || built < 17 {
		t.Errorf("built %d of %d route tables; want all (17 or more)", built, routers)
	}

	for _, tc := range []struct {
		file, table string
		r           *req
		cluster     string
		direct      bool
	}{
		{"bolt_server_config.json", "server_router", rpcReq("service", "com.alipay.test.TestService:1.0"), "serverCluster", false},
		{"dubbo_client_config.json", "client_router", rpcReq("service", "org.apache.dubbo.UserProvider", "method", "GetUser"), "clientCluster", false},
		{"http1_client_config.json", "client_router", httpReq("127.0.0.1:2045", "/index.html"), "clientCluster", false},
		{"mosn_config.json", "application", httpReq("localhost", "/"), "", true},
		{"tproxy_egress_config.json", "general_router", httpReq("any", "/x"), "", true},
		{"mirror_http2_dubbo_config.json", "20882", rpcReq("service", "s"), "dubbo_provider_cluster", false},
	} {
		c, _, err := config.Load(filepath.Join("../config/testdata/mosn", tc.file), config.ParseOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tables, err := router.Build(c.Servers[0].Routers)
		if err != nil {
			t.Fatal(err)
		}
		rt, ok := tables[tc.table].Match(tc.r)
		if !ok {
			t.Errorf("%s %s: no route for %+v", tc.file, tc.table, tc.r)
			continue
		}
		_, direct := rt.DirectResponse()
		if got := rt.ClusterFor(tc.r, 0); got != tc.cluster || direct != tc.direct {
			t.Errorf("%s %s: cluster %q direct %v; want %q %v", tc.file, tc.table, got, direct, tc.cluster, tc.direct)
		}
	}
}

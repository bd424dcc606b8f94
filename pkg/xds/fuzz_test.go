package xds

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/xds/xdstest"
)

// FuzzXDSResource decodes arbitrary bytes as the resource a control plane sends (the first
// byte picks the type: cluster, assignment, listener, route configuration) and converts
// it as the ADS client does, then checks the converted config the way an update is checked
// before it is applied: the client must return an error (a NACK) or a config, never panic
// (ROBUSTNESS 26). Seeds are the resources the other tests send.
func FuzzXDSResource(f *testing.F) {
	seed := func(kind byte, m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte{kind}, b...))
	}
	seed(0, xdstest.EDSCluster("svc"))
	seed(0, xdstest.StaticCluster("static", "127.0.0.1:8080", "127.0.0.1:8081"))
	seed(0, xdstest.InvalidCluster("bad"))
	seed(1, xdstest.Assignment("svc", "127.0.0.1:9000", "127.0.0.1:9001"))
	seed(2, xdstest.HTTPListener("http", "127.0.0.1:8080", "routes"))
	seed(2, xdstest.HTTPListener("inline", "127.0.0.1:8081", ""))
	seed(3, xdstest.RouteToCluster("routes", "svc"))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		kind, b := in[0]%4, in[1:]
		switch kind {
		case 0:
			var c clusterv3.Cluster
			if proto.Unmarshal(b, &c) != nil {
				return
			}
			if cc, err := ConvertCluster(&c); err == nil {
				cfg := &config.Config{ClusterManager: config.ClusterManager{Clusters: []config.Cluster{cc.Cluster}}}
				cfg.ApplyDefaults()
				_, _ = cfg.Validate()
			}
		case 1:
			var la endpointv3.ClusterLoadAssignment
			if proto.Unmarshal(b, &la) != nil {
				return
			}
			_, _ = ConvertLoadAssignment(&la)
		case 2:
			var l listenerv3.Listener
			if proto.Unmarshal(b, &l) != nil {
				return
			}
			if cl, err := ConvertListener(&l); err == nil {
				cfg := &config.Config{Servers: []config.Server{{Listeners: []config.Listener{cl.Listener}, Routers: cl.Routers}}}
				cfg.ApplyDefaults()
				_, _ = cfg.Validate()
			}
		case 3:
			var rc routev3.RouteConfiguration
			if proto.Unmarshal(b, &rc) != nil {
				return
			}
			if rcfg, err := ConvertRouteConfiguration("routes", &rc); err == nil {
				_, _ = router.New(rcfg)
			}
		}
	})
}

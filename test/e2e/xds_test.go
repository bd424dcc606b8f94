package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/mosnlite/mosnlite/pkg/xds"
	"github.com/mosnlite/mosnlite/pkg/xds/xdstest"
	"github.com/mosnlite/mosnlite/test/framework"
)

// TestXDSADS runs mosnlite with only a bootstrap (a static cluster for the control plane and
// dynamic_resources) against go-control-plane's server in this process. It receives a
// listener, its RDS routes, an EDS cluster and its endpoints, and proxies HTTP/1; the
// endpoint moves and traffic follows; an invalid cluster is NACKed while the old config keeps
// serving; the control plane goes away (traffic keeps flowing, /ready stays 200,
// mosnlite_xds_connected reads 0) and comes back on the same port, where the proxy
// reconnects, ACKs again and takes new updates.
func TestXDSADS(t *testing.T) {
	const node = "mosnlite-e2e"
	upstream := func(name string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }))
		t.Cleanup(s.Close)
		return s.Listener.Addr().String()
	}
	upA, upB := upstream("A"), upstream("B")

	cp := xdstest.New()
	cpAddr := framework.FreePort(t)
	if _, err := cp.Start(cpAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	listen := framework.FreePort(t)
	push := func(version, endpoint string, extra ...types.Resource) {
		t.Helper()
		res := xdstest.Resources{}.
			Add(xds.ClusterType, xdstest.EDSCluster("svc")).
			Add(xds.EndpointType, xdstest.Assignment("svc", endpoint)).
			Add(xds.ListenerType, xdstest.HTTPListener("ingress", listen, "routes")).
			Add(xds.RouteType, xdstest.RouteToCluster("routes", "svc"))
		res.Add(xds.ClusterType, extra...)
		if err := cp.SetSnapshot(node, version, res); err != nil {
			t.Fatal(err)
		}
	}
	waitReq := func(from int, what string, match func(xdstest.Request) bool) (xdstest.Request, int) {
		t.Helper()
		r, i, err := cp.WaitRequest(from, 20*time.Second, match)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return r, i
	}
	push("v1", upA)

	adminAddr := framework.FreePort(t)
	cfg := adsBootstrap(adminAddr, cpAddr)
	// StartProxy's extra arguments go before the command; the start flags come from the env.
	t.Setenv("MOSNLITE_SERVICE_NODE", node)
	t.Setenv("MOSNLITE_SERVICE_CLUSTER", "e2e")
	p := framework.StartProxy(t, cfg)

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func() string {
		resp, err := client.Get("http://" + listen + "/hello")
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	eventually := func(what, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		var got string
		for time.Now().Before(deadline) {
			if got = get(); got == want {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("%s: got %q, want %q\nlogs:\n%s", what, got, want, p.Logs())
	}

	// Readiness follows the first full config.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get("http://" + adminAddr + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready never 200\n%s", p.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, typ := range []string{xds.ClusterType, xds.EndpointType, xds.ListenerType, xds.RouteType} {
		waitReq(0, "ACK v1 "+typ, xdstest.ACKOf(typ, "v1"))
	}
	eventually("first config", "200 A")

	// The endpoint moves; traffic follows.
	push("v2", upB)
	waitReq(0, "EDS ACK v2", xdstest.ACKOf(xds.EndpointType, "v2"))
	eventually("endpoint moved", "200 B")

	// An invalid cluster: NACKed, the old config keeps serving.
	push("v3", upB, xdstest.InvalidCluster("broken"))
	nack, _ := waitReq(0, "CDS NACK", xdstest.NACKOf(xds.ClusterType))
	if nack.Version != "v2" || !strings.Contains(nack.Error, "broken") {
		t.Fatalf("NACK %+v", nack)
	}
	for range 5 {
		if got := get(); got != "200 B" {
			t.Fatalf("after the NACK: %q", got)
		}
	}
	push("v4", upB)
	waitReq(0, "CDS ACK v4", xdstest.ACKOf(xds.ClusterType, "v4"))

	// The control plane goes away: traffic keeps flowing, /ready stays 200 (readiness is
	// not taken back once the first config is in) and mosnlite_xds_connected reads 0.
	cp.Stop()
	admin := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get("http://" + adminAddr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		if _, m := admin("/metrics"); strings.Contains(m, "\nmosnlite_xds_connected 0\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosnlite_xds_connected not 0 with the control plane down\n%s", p.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	end := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(end) {
		if got := get(); got != "200 B" {
			t.Fatalf("control plane down: %q", got)
		}
		if code, _ := admin("/ready"); code != 200 {
			t.Fatalf("/ready with the control plane down: %d\n%s", code, p.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, m := admin("/metrics"); !strings.Contains(m, "\nmosnlite_xds_connected 0\n") {
		t.Fatal("mosnlite_xds_connected not 0 during the outage")
	}
	// Back on the same port: the proxy reconnects, ACKs again and takes new updates.
	n := len(cp.Requests())
	if _, err := cp.Start(cpAddr); err != nil {
		t.Fatal(err)
	}
	waitReq(n, "CDS ACK after reconnect", xdstest.ACKOf(xds.ClusterType, "v4"))
	push("v5", upA)
	waitReq(n, "EDS ACK v5", xdstest.ACKOf(xds.EndpointType, "v5"))
	eventually("after reconnect", "200 A")

	resp, err := client.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`mosnlite_xds_updates_total{result="nack",type="CDS"}`, `mosnlite_xds_updates_total{result="ack",type="EDS"}`, "mosnlite_xds_connected 1"} {
		if !strings.Contains(string(m), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// adsBootstrap is a config with only an admin endpoint on adminAddr and an ADS bootstrap
// whose control plane listens on cpAddr.
func adsBootstrap(adminAddr, cpAddr string) string {
	ah, ap, _ := net.SplitHostPort(adminAddr)
	host, port, _ := net.SplitHostPort(cpAddr)
	return fmt.Sprintf(`{
	  "admin": {"address": {"socket_address": {"address": %q, "port_value": %s}}},
	  "dynamic_resources": {
	    "lds_config": {"ads": {}},
	    "cds_config": {"ads": {}},
	    "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
	      "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}
	  },
	  "static_resources": {"clusters": [{
	    "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
	    "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [
	      {"endpoint": {"address": {"socket_address": {"address": %q, "port_value": %s}}}}]}]}
	  }]}
	}`, ah, ap, host, port)
}

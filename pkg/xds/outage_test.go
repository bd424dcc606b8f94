package xds_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zaptest"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/extension/builtin"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/server"
	"github.com/mosnlite/mosnlite/pkg/xds"
	"github.com/mosnlite/mosnlite/pkg/xds/xdstest"
)

// These tests run the client against go-control-plane's server and apply to a real
// *server.Server (with its admin endpoint and metrics), proxying HTTP/1 to upstreams in the
// test, to check how the proxy behaves when the control plane fails or sends bad config.

const proxyNode = "proxy-1"

// proxy is a server fed by an xDS client, both running until the test ends.
type proxy struct {
	s     *server.Server
	c     *xds.Client
	m     *metrics.Set
	admin string // http://host:port
}

func startProxy(t *testing.T, b *xds.Bootstrap) *proxy {
	t.Helper()
	ext, err := builtin.NewSet()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{}
	cfg.ApplyDefaults()
	m := metrics.New()
	s, err := server.New(cfg, server.Options{Extensions: ext, Log: zaptest.NewLogger(t), Metrics: m, AdminAddress: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := xds.New(b, s, xds.Options{NodeID: proxyNode, Log: zaptest.NewLogger(t).Named("xds"), Metrics: m,
		BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone, clientDone := make(chan error, 1), make(chan error, 1)
	go func() { runDone <- s.Run(ctx) }()
	go func() { clientDone <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for _, ch := range []chan error{clientDone, runDone} {
			select {
			case err := <-ch:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("Run did not return")
			}
		}
	})
	return &proxy{s: s, c: c, m: m, admin: "http://" + s.AdminAddr().String()}
}

// connected is the mosnlite_xds_connected gauge.
func (p *proxy) connected() float64 { return metricValue(p.m.XDSConnected) }

// metricValue reads a gauge or a counter.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Gauge != nil {
		return d.GetGauge().GetValue()
	}
	return d.GetCounter().GetValue()
}

// readyCode is the admin endpoint's /ready status.
func (p *proxy) readyCode(t *testing.T) int {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(p.admin + "/ready")
	if err != nil {
		t.Fatalf("GET /ready: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func startControlPlane(t *testing.T, addr string) *xdstest.ControlPlane {
	t.Helper()
	cp := xdstest.New()
	if _, err := cp.Start(addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	return cp
}

// namedUpstream is an HTTP server answering every request with name.
func namedUpstream(t *testing.T, name string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// full is the usual set: EDS cluster svc at upstream (no assignment when upstream is ""),
// listener "http" on listen with RDS route configuration "routes" sending everything to
// routeTo.
func full(listen, upstream, routeTo string) xdstest.Resources {
	res := xdstest.Resources{}.
		Add(xds.ClusterType, xdstest.EDSCluster("svc")).
		Add(xds.ListenerType, xdstest.HTTPListener("http", listen, "routes")).
		Add(xds.RouteType, xdstest.RouteToCluster("routes", routeTo))
	if upstream != "" {
		res.Add(xds.EndpointType, xdstest.Assignment("svc", upstream))
	}
	return res
}

func setSnapshot(t *testing.T, cp *xdstest.ControlPlane, version string, res xdstest.Resources) {
	t.Helper()
	if err := cp.SetSnapshot(proxyNode, version, res); err != nil {
		t.Fatal(err)
	}
}

func waitReq(t *testing.T, cp *xdstest.ControlPlane, from int, what string, match func(xdstest.Request) bool) (xdstest.Request, int) {
	t.Helper()
	r, i, err := cp.WaitRequest(from, 10*time.Second, match)
	if err != nil {
		t.Fatalf("%s: %v\nrequests: %+v", what, err, cp.Requests())
	}
	return r, i
}

// fetch GETs url on a new connection: "status body" or "error: ...".
func fetch(url string) string {
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Sprintf("%d body error: %v", resp.StatusCode, err)
	}
	return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
}

// poll calls cond every 20ms until it holds or within passes; it reports whether it held.
func poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestADSHalfOpenDetectedByKeepalive: the path to the control plane turns into a black hole
// (a relay stops forwarding both ways, no FIN, no RST), with the keepalive the ADS cluster's
// http2_protocol_options.connection_keepalive sets. The client gives the stream up within
// about interval+timeout (mosnlite_xds_connected drops to 0) rather than waiting on it
// forever; meanwhile the proxy keeps serving its config and stays ready. Once the path
// forwards again the client reconnects through it, resubscribes with its accepted versions,
// ACKs on the new stream (the gauge is back to 1) and takes new updates.
func TestADSHalfOpenDetectedByKeepalive(t *testing.T) {
	upA, upB := namedUpstream(t, "A"), namedUpstream(t, "B")
	cp := startControlPlane(t, "127.0.0.1:0")
	relay, err := xdstest.NewRelay(cp.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(relay.Close)
	listen := freeAddr(t)
	setSnapshot(t, cp, "v1", full(listen, upA, "svc"))

	const interval, timeout = 500 * time.Millisecond, 500 * time.Millisecond
	host, port, _ := net.SplitHostPort(relay.Addr())
	cfg, _, err := config.Parse([]byte(fmt.Sprintf(`{
	  "dynamic_resources": {"lds_config": {"ads": {}}, "cds_config": {"ads": {}},
	    "ads_config": {"api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}},
	  "static_resources": {"clusters": [{"name": "xds-grpc", "type": "STATIC", "connect_timeout": "0.5s",
	    "http2_protocol_options": {"connection_keepalive": {"interval": "0.5s", "timeout": "0.5s"}},
	    "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [
	      {"endpoint": {"address": {"socket_address": {"address": %q, "port_value": %s}}}}]}]}}]}}`,
		host, port)), config.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := xds.ParseBootstrap(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if b.KeepaliveInterval != interval || b.KeepaliveTimeout != timeout {
		t.Fatalf("bootstrap keepalive %v/%v", b.KeepaliveInterval, b.KeepaliveTimeout)
	}
	p := startProxy(t, b)

	var ack xdstest.Request
	for _, typ := range []string{xds.ClusterType, xds.EndpointType, xds.ListenerType, xds.RouteType} {
		ack, _ = waitReq(t, cp, 0, "ACK v1 "+typ, xdstest.ACKOf(typ, "v1"))
	}
	if !poll(10*time.Second, func() bool { return p.s.Ready() && p.connected() == 1 }) {
		t.Fatalf("ready %v, connected %v after the first config", p.s.Ready(), p.connected())
	}
	if got := fetch("http://" + listen + "/"); got != "200 A" {
		t.Fatalf("first config: %q", got)
	}
	connects := p.c.Stats().Connects

	relay.BlackHole()
	holed := time.Now()
	// Only the keepalive can notice: nothing is sent on the stream and no socket closes.
	// The bound is interval+timeout plus slack for a loaded machine; without the configured
	// keepalive (gRPC's default is none, the bootstrap's default 30s+10s) this never holds.
	if !poll(interval+timeout+3*time.Second, func() bool { return p.connected() == 0 }) {
		t.Fatalf("half-open stream not given up %v after the black hole (keepalive %v+%v)", time.Since(holed), interval, timeout)
	}
	t.Logf("half-open stream given up after %v", time.Since(holed))
	if d := metricValue(p.m.XDSDisconnects); d != 1 || p.c.Stats().Disconnects != 1 {
		t.Fatalf("mosnlite_xds_disconnects_total %v, stats %+v; want 1", d, p.c.Stats())
	}
	// The client keeps trying (through the black hole, where no stream forms) while the
	// data plane serves the last config and stays ready.
	accepted := relay.Accepted()
	deadline := time.Now().Add(10 * time.Second)
	for relay.Accepted() < accepted+1 {
		if got := fetch("http://" + listen + "/"); got != "200 A" {
			t.Fatalf("during the outage: %q", got)
		}
		if code := p.readyCode(t); code != http.StatusOK {
			t.Fatalf("/ready during the outage: %d", code)
		}
		if c := p.connected(); c != 0 {
			t.Fatalf("mosnlite_xds_connected %v during the outage", c)
		}
		if time.Now().After(deadline) {
			t.Fatal("no reconnect attempt during the outage")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s := p.c.Stats(); s.Connects != connects {
		t.Fatalf("a stream opened through the black hole: %+v", s)
	}

	n := len(cp.Requests())
	relay.Restore()
	first, _ := waitReq(t, cp, n, "resubscribe", func(r xdstest.Request) bool { return r.TypeURL == xds.ClusterType })
	if first.Stream == ack.Stream || first.Version != "v1" || first.Nonce != "" {
		t.Fatalf("resubscription %+v (old stream %d): want a new stream, version v1, no nonce", first, ack.Stream)
	}
	for _, typ := range []string{xds.ClusterType, xds.EndpointType, xds.ListenerType, xds.RouteType} {
		waitReq(t, cp, n, "ACK on the new stream "+typ, xdstest.ACKOf(typ, "v1"))
	}
	if !poll(10*time.Second, func() bool { return p.connected() == 1 }) {
		t.Fatal("mosnlite_xds_connected not back to 1 after the reconnect")
	}
	if s := p.c.Stats(); s.Connects != connects+1 || s.Disconnects != 1 {
		t.Fatalf("stats %+v; want one more connect than %d, one disconnect", s, connects)
	}
	setSnapshot(t, cp, "v2", full(listen, upB, "svc"))
	waitReq(t, cp, n, "EDS ACK v2", xdstest.ACKOf(xds.EndpointType, "v2"))
	if !poll(10*time.Second, func() bool { return fetch("http://"+listen+"/") == "200 B" }) {
		t.Fatalf("after the reconnect: %q", fetch("http://"+listen+"/"))
	}
}

// TestADSDuplicateListenerAddressNacked: one LDS update (through go-control-plane's
// server) with two listeners on the same address:port is NACKed with an error_detail that
// names the address and the clash; the listener already serving keeps serving, nothing
// binds the contested address, the NACK carries the accepted version and
// mosnlite_xds_updates_total{type="LDS",result="nack"} counts it. The next good update is
// applied.
func TestADSDuplicateListenerAddressNacked(t *testing.T) {
	up := namedUpstream(t, "A")
	cp := startControlPlane(t, "127.0.0.1:0")
	listen, contested := freeAddr(t), freeAddr(t)
	setSnapshot(t, cp, "v1", full(listen, up, "svc"))
	p := startProxy(t, &xds.Bootstrap{Targets: []string{cp.Addr()}, CDS: true, LDS: true, ConnectTimeout: time.Second,
		KeepaliveInterval: 10 * time.Second, KeepaliveTimeout: 5 * time.Second})
	waitReq(t, cp, 0, "LDS ACK v1", xdstest.ACKOf(xds.ListenerType, "v1"))
	waitReq(t, cp, 0, "RDS ACK v1", xdstest.ACKOf(xds.RouteType, "v1"))
	if got := fetch("http://" + listen + "/"); got != "200 A" {
		t.Fatalf("v1: %q", got)
	}
	nacks := func() float64 { return metricValue(p.m.XDSUpdates.WithLabelValues("LDS", "nack")) }
	if n := nacks(); n != 0 {
		t.Fatalf("LDS nacks before the bad update: %v", n)
	}

	res := full(listen, up, "svc").Add(xds.ListenerType,
		xdstest.HTTPListener("twin-a", contested, "routes"), xdstest.HTTPListener("twin-b", contested, "routes"))
	setSnapshot(t, cp, "v2", res)
	nack, _ := waitReq(t, cp, 0, "LDS NACK", xdstest.NACKOf(xds.ListenerType))
	// The listeners are applied in name order (http, twin-a, twin-b): the error names the
	// two entries of that list, and no path of the server's internal config.
	if nack.Version != "v1" || !strings.Contains(nack.Error, contested) || !strings.Contains(nack.Error, "already bound") ||
		!strings.Contains(nack.Error, "listeners[1]") || !strings.Contains(nack.Error, "listeners[2]") || strings.Contains(nack.Error, "servers[0]") {
		t.Fatalf("NACK %+v: want version v1 and an error naming listeners[1] and listeners[2] on %s as already bound", nack, contested)
	}
	if n := nacks(); n < 1 {
		t.Fatalf("mosnlite_xds_updates_total{type=LDS,result=nack} = %v", n)
	}
	for range 5 {
		if got := fetch("http://" + listen + "/"); got != "200 A" {
			t.Fatalf("after the NACK: %q", got)
		}
	}
	if c, err := net.DialTimeout("tcp", contested, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s accepts connections: part of the rejected update was applied", contested)
	}
	if _, ok := p.s.Addrs()["twin-a"]; ok {
		t.Fatal("listener twin-a of the rejected update is running")
	}

	setSnapshot(t, cp, "v3", full(listen, up, "svc").Add(xds.ListenerType, xdstest.HTTPListener("twin-a", contested, "routes")))
	waitReq(t, cp, 0, "LDS ACK v3", xdstest.ACKOf(xds.ListenerType, "v3"))
	if got := fetch("http://" + contested + "/"); got != "200 A" {
		t.Fatalf("v3 on %s: %q", contested, got)
	}
}

// TestADSRouteToUnknownCluster: a route configuration whose route names a cluster CDS has
// not delivered is accepted (ACKed, as Envoy does: CDS may bring it later) rather than
// rejected; its requests get a clean 503 "no cluster" at request time, other routes are not
// affected, and once CDS delivers the cluster the same route serves.
func TestADSRouteToUnknownCluster(t *testing.T) {
	up := namedUpstream(t, "A")
	cp := startControlPlane(t, "127.0.0.1:0")
	listen := freeAddr(t)
	setSnapshot(t, cp, "v1", full(listen, up, "ghost"))
	p := startProxy(t, &xds.Bootstrap{Targets: []string{cp.Addr()}, CDS: true, LDS: true, ConnectTimeout: time.Second,
		KeepaliveInterval: 10 * time.Second, KeepaliveTimeout: 5 * time.Second})
	for _, typ := range []string{xds.ClusterType, xds.EndpointType, xds.ListenerType, xds.RouteType} {
		waitReq(t, cp, 0, "ACK v1 "+typ, xdstest.ACKOf(typ, "v1"))
	}
	for _, r := range cp.Requests() {
		if r.NACK {
			t.Fatalf("NACK for a route to an unknown cluster: %+v", r)
		}
	}
	if !poll(10*time.Second, p.s.Ready) {
		t.Fatal("not ready after the first config")
	}
	for range 3 {
		if got := fetch("http://" + listen + "/"); got != "503 no cluster ghost" {
			t.Fatalf("route to an unknown cluster: %q; want 503 no cluster ghost", got)
		}
	}

	setSnapshot(t, cp, "v2", full(listen, up, "ghost").Add(xds.ClusterType, xdstest.StaticCluster("ghost", up)))
	waitReq(t, cp, 0, "CDS ACK v2", xdstest.ACKOf(xds.ClusterType, "v2"))
	if got := fetch("http://" + listen + "/"); got != "200 A" {
		t.Fatalf("after CDS delivered the cluster: %q", got)
	}
}

// TestADSReadinessWithUnreachableControlPlane: with the control plane unreachable from the
// start, /ready stays 503 well past initial_fetch_timeout (that timeout never releases
// readiness before the first CDS and LDS). When the control plane comes up and serves CDS,
// LDS and RDS but not yet the EDS assignment, readiness still waits for it: the initial
// fetch timeout counts from the EDS subscription, not from the start (which would make the
// proxy ready at once with an EDS cluster that has no hosts). The assignment arrives: ready,
// and the proxy serves.
func TestADSReadinessWithUnreachableControlPlane(t *testing.T) {
	up := namedUpstream(t, "A")
	cpAddr, listen := freeAddr(t), freeAddr(t) // nothing listens on cpAddr yet
	const fetchTimeout = 800 * time.Millisecond
	p := startProxy(t, &xds.Bootstrap{Targets: []string{cpAddr}, CDS: true, LDS: true, ConnectTimeout: time.Second,
		KeepaliveInterval: 10 * time.Second, KeepaliveTimeout: 5 * time.Second, InitialFetchTimeout: fetchTimeout})
	if !poll(10*time.Second, func() bool { return p.readyCode(t) == http.StatusServiceUnavailable }) {
		t.Fatal("/ready never answered 503")
	}
	// A negative check needs the time to pass: twice the timeout, polling all along.
	end := time.Now().Add(2 * fetchTimeout)
	for time.Now().Before(end) {
		if p.s.Ready() {
			t.Fatal("ready with the control plane unreachable and no config")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := p.readyCode(t); code != http.StatusServiceUnavailable {
		t.Fatalf("/ready past initial_fetch_timeout with no config: %d", code)
	}

	cp := startControlPlane(t, cpAddr)
	setSnapshot(t, cp, "v1", full(listen, "", "svc")) // no assignment for svc yet
	for _, typ := range []string{xds.ClusterType, xds.ListenerType, xds.RouteType} {
		waitReq(t, cp, 0, "ACK v1 "+typ, xdstest.ACKOf(typ, "v1"))
	}
	waitReq(t, cp, 0, "EDS subscription", func(r xdstest.Request) bool { return r.TypeURL == xds.EndpointType })
	if p.s.Ready() {
		t.Fatal("ready as soon as CDS and LDS arrived, without the EDS assignment (initial fetch timeout counted from the start)")
	}
	setSnapshot(t, cp, "v2", full(listen, up, "svc"))
	waitReq(t, cp, 0, "EDS ACK v2", xdstest.ACKOf(xds.EndpointType, "v2"))
	if !poll(10*time.Second, p.s.Ready) {
		t.Fatal("not ready after the full config")
	}
	if got := fetch("http://" + listen + "/"); got != "200 A" {
		t.Fatalf("after ready: %q", got)
	}
}

package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/test/framework"
	"github.com/mosnlite/mosnlite/test/framework/rpcpeer"
)

// RPC interop through the mosnlite binary: Dubbo frames encoded and decoded by
// dubbo-go-hessian2 on both ends, bolt frames from mosnlite's codec, from a hand-written
// generator covering every field and from a capture of Ant's sofa-bolt-node.

type hdr struct{ name, value string }

// rpcRoute matches headers exactly (service, version, group, ...) and routes to cluster.
func rpcRoute(cluster, timeout string, headers ...hdr) map[string]any {
	var hs []any
	for _, h := range headers {
		hs = append(hs, map[string]any{"name": h.name, "value": h.value, "regex": false})
	}
	route := map[string]any{"cluster_name": cluster}
	if timeout != "" {
		route["timeout"] = timeout
	}
	return map[string]any{"match": map[string]any{"headers": hs}, "route": route}
}

func rpcCluster(name string, addrs ...string) map[string]any {
	var hosts []any
	for _, a := range addrs {
		hosts = append(hosts, map[string]any{"address": a})
	}
	return map[string]any{"name": name, "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN",
		"connect_timeout": "1s", "hosts": hosts}
}

// rpcProxyConfig is one proxy listener (proxy is the filter's config without the router
// name) with one router of routes in its "*" virtual host.
func rpcProxyConfig(listen string, proxy map[string]any, routes, clusters []any) string {
	proxy["router_config_name"] = "rpc_router"
	cfg := map[string]any{
		"servers": []any{map[string]any{
			"default_log_path": "stderr",
			"routers": []any{map[string]any{
				"router_config_name": "rpc_router",
				"virtual_hosts": []any{map[string]any{
					"name": "rpc", "domains": []any{"*"}, "routers": routes,
				}},
			}},
			"listeners": []any{map[string]any{
				"name": "rpc", "address": listen, "bind_port": true,
				"filter_chains": []any{map[string]any{"filters": []any{map[string]any{
					"type": "proxy", "config": proxy,
				}}}},
			}},
		}},
		"cluster_manager": map[string]any{"clusters": clusters},
		"drain":           map[string]any{"timeout": "5s"},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func rpcCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startDubboPeer(t *testing.T, name string) *rpcpeer.DubboServer {
	t.Helper()
	s, err := rpcpeer.StartDubboServer(rpcpeer.DubboServerOptions{Name: name, Record: true, SlowDelay: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func dialDubboPeer(t *testing.T, addr string) *rpcpeer.DubboClient {
	t.Helper()
	c, err := rpcpeer.DialDubbo(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string { return framework.FreePort(t) }

const (
	echoIface   = "com.example.EchoService"
	timeoutSvc  = "com.example.TimeoutService"
	closerSvc   = "com.example.CloserService"
	deadSvc     = "com.example.DeadService"
	unroutedSvc = "com.example.NobodyService"
)

func dubboSvc(path, group, version, method string) hessian.Service {
	return hessian.Service{Path: path, Interface: path, Group: group, Version: version, Method: method}
}

// TestRPCDubboInterop: `downstream_protocol: "X"` with `extend_config.sub_protocol: dubbo`,
// as MOSN writes it. Requests and responses are encoded and decoded by dubbo-go-hessian2.
func TestRPCDubboInterop(t *testing.T) {
	a, b, c, d := startDubboPeer(t, "a"), startDubboPeer(t, "b"), startDubboPeer(t, "c"), startDubboPeer(t, "d")
	listen := framework.FreePort(t)
	routes := []any{
		rpcRoute("A", "", hdr{"service", echoIface}, hdr{"group", "g1"}),
		rpcRoute("B", "", hdr{"service", echoIface}, hdr{"version", "2.0.0"}),
		rpcRoute("C", "", hdr{"service", echoIface}),
		rpcRoute("A", "300ms", hdr{"service", timeoutSvc}),
		rpcRoute("D", "", hdr{"service", closerSvc}),
		rpcRoute("DEAD", "", hdr{"service", deadSvc}),
	}
	clusters := []any{rpcCluster("A", a.Addr()), rpcCluster("B", b.Addr()), rpcCluster("C", c.Addr()),
		rpcCluster("D", d.Addr()), rpcCluster("DEAD", deadAddr(t))}
	proxy := framework.StartProxy(t, rpcProxyConfig(listen, map[string]any{
		"downstream_protocol": "X", "extend_config": map[string]any{"sub_protocol": "dubbo"},
	}, routes, clusters))
	cl := dialDubboPeer(t, listen)
	ctx := rpcCtx(t, 60*time.Second)

	t.Run("200_in_flight_one_connection", func(t *testing.T) {
		const n = 200
		payload := strings.Repeat("p", 1024)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				arg := fmt.Sprintf("req-%d-%s", i, payload[:i%1024])
				res, err := cl.Call(ctx, dubboSvc(echoIface, "g1", "1.0.0", "echo"),
					[]any{arg, int64(i), []byte(payload)}, map[string]string{"seq": strconv.Itoa(i)})
				if err != nil {
					errs <- fmt.Errorf("call %d: %w", i, err)
					return
				}
				l, _ := res.Value.([]any)
				if res.Status != hessian.Response_OK || res.Exception != nil || len(l) != 3 || l[0] != arg ||
					l[1] != int64(i) || !bytes.Equal(l[2].([]byte), []byte(payload)) {
					errs <- fmt.Errorf("call %d: status %d value %.80v exception %v", i, res.Status, res.Value, res.Exception)
					return
				}
				if res.Attachments[rpcpeer.AttServer] != "a" || res.Attachments["seq"] != strconv.Itoa(i) {
					errs <- fmt.Errorf("call %d: attachments %v", i, res.Attachments)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if u := cl.Unmatched.Load(); u != 0 {
			t.Errorf("%d responses matched no request id", u)
		}
		// The server saw the library's encoding intact: path, version and attachments.
		var seen int
		for _, r := range a.Recorded() {
			if r.Attachments["seq"] != "" {
				seen++
				if r.Path != echoIface || r.Version != "1.0.0" || r.Method != "echo" || r.Attachments["group"] != "g1" ||
					r.Attachments["interface"] != echoIface || r.Types != "Ljava/lang/String;J[B" {
					t.Fatalf("server a decoded %+v", r)
				}
			}
		}
		if seen != n {
			t.Errorf("server a recorded %d requests, want %d", seen, n)
		}
	})

	t.Run("group_version_routing", func(t *testing.T) {
		for _, c := range []struct{ group, version, want string }{
			{"g1", "1.0.0", "a"}, {"g1", "2.0.0", "a"}, {"", "2.0.0", "b"}, {"g2", "2.0.0", "b"},
			{"g2", "1.0.0", "c"}, {"", "1.0.0", "c"},
		} {
			res, err := cl.Call(ctx, dubboSvc(echoIface, c.group, c.version, "echo"), []any{"r"}, nil)
			if err != nil {
				t.Fatalf("group %q version %q: %v", c.group, c.version, err)
			}
			if got := res.Attachments[rpcpeer.AttServer]; got != c.want || res.Value != "r" {
				t.Errorf("group %q version %q: answered by %q (value %v status %d), want %q",
					c.group, c.version, got, res.Value, res.Status, c.want)
			}
		}
	})

	t.Run("exception_and_error_status_pass_through", func(t *testing.T) {
		res, err := cl.Call(ctx, dubboSvc(echoIface, "g1", "1.0.0", rpcpeer.MethodFail), []any{"x"}, nil)
		if err != nil || res.Status != hessian.Response_OK || res.Exception == nil ||
			!strings.Contains(res.Exception.Error(), "fail requested") {
			t.Errorf("fail: %+v %v", res, err)
		}
		res, err = cl.Call(ctx, dubboSvc(echoIface, "g1", "1.0.0", rpcpeer.MethodError), []any{"x"}, nil)
		if err != nil || res.Status != hessian.Response_SERVICE_ERROR || res.Exception == nil ||
			!strings.Contains(res.Exception.Error(), "error requested") {
			t.Errorf("error: %+v %v", res, err)
		}
	})

	t.Run("oneway_reaches_server", func(t *testing.T) {
		before := b.Oneways.Load()
		for i := 0; i < 20; i++ {
			if err := cl.Oneway(dubboSvc(echoIface, "", "2.0.0", "notify"), []any{"ow" + strconv.Itoa(i)}, nil); err != nil {
				t.Fatal(err)
			}
		}
		waitUntil(t, "20 one-way calls at server b", 10*time.Second, func() bool { return b.Oneways.Load() == before+20 })
		// Nothing answers a one-way call: the connection carries on with no stray frame.
		if _, err := cl.Call(ctx, dubboSvc(echoIface, "", "2.0.0", "echo"), []any{"after"}, nil); err != nil {
			t.Fatal(err)
		}
		if u := cl.Unmatched.Load(); u != 0 {
			t.Errorf("%d stray responses", u)
		}
	})

	t.Run("heartbeat_answered", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			res, err := cl.Heartbeat(ctx)
			if err != nil || !res.Heartbeat || res.Status != hessian.Response_OK {
				t.Fatalf("heartbeat %d: %+v %v", i, res, err)
			}
		}
	})

	t.Run("oneway_event_not_answered", func(t *testing.T) {
		ev, err := rpcpeer.EncodeDubboHeartbeat(cl.NextID())
		if err != nil {
			t.Fatal(err)
		}
		ev[2] &^= 0x40 // an event request without the two-way bit: nobody answers it
		if err := cl.WriteRaw(ev); err != nil {
			t.Fatal(err)
		}
		if res, err := cl.Heartbeat(ctx); err != nil || !res.Heartbeat {
			t.Fatalf("heartbeat after a one-way event: %+v %v", res, err)
		}
		if u := cl.Unmatched.Load(); u != 0 {
			t.Errorf("a one-way event was answered (%d stray responses)", u)
		}
	})

	t.Run("unreadable_body_fails_request_not_connection", func(t *testing.T) {
		id := cl.NextID()
		frame := make([]byte, 16, 20)
		frame[0], frame[1], frame[2] = 0xda, 0xbb, 0xc2
		binary.BigEndian.PutUint64(frame[4:], uint64(id))
		frame = append(frame, 0xff, 0xfe, 0xfd, 0xfc) // not a hessian2 string
		binary.BigEndian.PutUint32(frame[12:], 4)
		res, err := cl.RoundTrip(ctx, id, frame)
		if err != nil || res.Status == hessian.Response_OK {
			t.Fatalf("%+v %v (want an error status)", res, err)
		}
		if res.Status != hessian.Response_SERVICE_ERROR {
			t.Logf("unreadable body answered with status %d (PROTOCOLS.md: 70)", res.Status)
		}
		if _, err := cl.Call(ctx, dubboSvc(echoIface, "g1", "1.0.0", "echo"), []any{"x"}, nil); err != nil {
			t.Fatalf("connection after the bad body: %v", err)
		}
	})

	t.Run("no_route", func(t *testing.T) {
		res, err := cl.Call(ctx, dubboSvc(unroutedSvc, "", "1.0.0", "echo"), []any{"x"}, nil)
		if err != nil || res.Status != hessian.Response_SERVICE_NOT_FOUND || res.Exception == nil {
			t.Errorf("no route: %+v %v (want status 60 with a message)", res, err)
		}
	})

	t.Run("no_healthy_upstream", func(t *testing.T) {
		res, err := cl.Call(ctx, dubboSvc(deadSvc, "", "1.0.0", "echo"), []any{"x"}, nil)
		if err != nil || res.Status == hessian.Response_OK || res.Exception == nil {
			t.Errorf("dead upstream: %+v %v (want an error status with a message)", res, err)
		} else if res.Status != hessian.Response_SERVICE_NOT_FOUND {
			t.Logf("dead upstream answered with status %d (PROTOCOLS.md: 60)", res.Status)
		}
	})

	t.Run("upstream_timeout", func(t *testing.T) {
		start := time.Now()
		res, err := cl.Call(ctx, dubboSvc(timeoutSvc, "", "1.0.0", rpcpeer.MethodSlow), []any{"x"}, nil)
		if err != nil || (res.Status != hessian.Response_CLIENT_TIMEOUT && res.Status != hessian.Response_SERVER_TIMEOUT) {
			t.Fatalf("timeout: %+v %v (want status 30 or 31)", res, err)
		}
		if el := time.Since(start); el >= 3*time.Second {
			t.Errorf("timeout answered after %s: the upstream's own answer came first", el)
		}
	})

	t.Run("request_own_timeout_attachment", func(t *testing.T) {
		svc := dubboSvc(closerSvc, "", "1.0.0", rpcpeer.MethodSlow) // route without a timeout
		svc.Timeout = 200 * time.Millisecond                        // the library writes the "timeout" attachment
		start := time.Now()
		res, err := cl.Call(ctx, svc, []any{"x"}, nil)
		if err != nil || (res.Status != hessian.Response_CLIENT_TIMEOUT && res.Status != hessian.Response_SERVER_TIMEOUT) {
			t.Fatalf("%+v %v (want status 30 or 31)", res, err)
		}
		if el := time.Since(start); el >= 3*time.Second {
			t.Errorf("answered after %s: the attachment's 200ms was not applied", el)
		}
	})

	t.Run("upstream_closed_mid_request", func(t *testing.T) {
		const n = 20
		before := d.Requests.Load()
		results := make(chan error, n+1)
		call := func(method string) {
			res, err := cl.Call(ctx, dubboSvc(closerSvc, "", "1.0.0", method), []any{"x"}, nil)
			switch {
			case err != nil:
				results <- err
			case res.Status == hessian.Response_OK:
				results <- fmt.Errorf("%s: status 20 from a closed upstream: %+v", method, res)
			default:
				results <- nil
			}
		}
		for i := 0; i < n; i++ {
			go call(rpcpeer.MethodSlow)
		}
		waitUntil(t, "20 slow requests at server d", 10*time.Second, func() bool { return d.Requests.Load() >= before+n })
		go call(rpcpeer.MethodClose)
		for i := 0; i < n+1; i++ {
			if err := <-results; err != nil {
				t.Errorf("pending request: %v", err)
			}
		}
		// The proxy dials again for the next request.
		res, err := cl.Call(ctx, dubboSvc(closerSvc, "", "1.0.0", "echo"), []any{"again"}, nil)
		if err != nil || res.Value != "again" {
			t.Errorf("after the close: %+v %v", res, err)
		}
	})

	t.Run("frame_of_2MiB_both_ways", func(t *testing.T) {
		// Under Dubbo's 8 MiB payload limit: forwarded and answered like any other frame.
		c5 := dialDubboPeer(t, listen)
		payload := bytes.Repeat([]byte("0123456789abcdef"), 128<<10)
		res, err := c5.Call(ctx, dubboSvc(echoIface, "g1", "1.0.0", "echo"), []any{payload}, nil)
		if err != nil {
			t.Fatalf("2 MiB request: %v", err)
		}
		if v, _ := res.Value.([]byte); res.Status != hessian.Response_OK || !bytes.Equal(v, payload) {
			t.Fatalf("2 MiB request: status %d, value intact %v", res.Status, bytes.Equal(v, payload))
		}
	})

	t.Run("oversized_frame_closes_connection", func(t *testing.T) {
		c2 := dialDubboPeer(t, listen)
		h := make([]byte, 16, 64)
		h[0], h[1], h[2] = 0xda, 0xbb, 0xc2
		binary.BigEndian.PutUint64(h[4:], 1)
		binary.BigEndian.PutUint32(h[12:], 9<<20) // over Dubbo's 8 MiB default
		h = append(h, "SMALLBODY"...)
		if err := c2.WriteRaw(h); err != nil {
			t.Fatal(err)
		}
		select {
		case <-c2.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("connection still open 10s after an oversized frame header")
		}
		// Other connections are unaffected.
		if _, err := cl.Call(ctx, dubboSvc(echoIface, "g1", "1.0.0", "echo"), []any{"still"}, nil); err != nil {
			t.Fatal(err)
		}
	})

	if proxy.Wait(0) != -1 {
		t.Fatalf("mosnlite exited")
	}
}

func startBoltPeer(t *testing.T, o rpcpeer.BoltServerOptions) *rpcpeer.BoltServer {
	t.Helper()
	if o.SlowDelay == 0 {
		o.SlowDelay = 3 * time.Second
	}
	s, err := rpcpeer.StartBoltServer(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func dialBoltPeer(t *testing.T, addr string) *rpcpeer.BoltClient {
	t.Helper()
	c, err := rpcpeer.DialBolt(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// captureFrames reads a capture (lines "C>S hex" / "S>C hex") and returns the whole frames
// of each direction, reassembled by the bolt codec.
func captureFrames(t *testing.T, path string) (requests, responses [][]byte) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cs, sc []byte
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		dir, hx, _ := strings.Cut(strings.TrimSpace(line), " ")
		b, err := hex.DecodeString(strings.TrimSpace(hx))
		if err != nil {
			t.Fatal(err)
		}
		if dir == "C>S" {
			cs = append(cs, b...)
		} else {
			sc = append(sc, b...)
		}
	}
	split := func(b []byte) [][]byte {
		var out [][]byte
		codec := bolt.New(bolt.Options{})
		for len(b) > 0 {
			var f xprotocol.Frame
			n, err := codec.Decode(b, &f)
			if err != nil || n == 0 {
				t.Fatalf("capture: %v (n=%d)", err, n)
			}
			out = append(out, b[:n:n])
			b = b[n:]
		}
		return out
	}
	return split(cs), split(sc)
}

// TestRPCBoltInterop: downstream_protocol "bolt"; v1 and v2 frames mixed on one connection.
func TestRPCBoltInterop(t *testing.T) {
	g := rpcpeer.NewBoltGen(42)
	genReqs := g.Requests(72, "svc.gen", true)
	genResps := map[int][]byte{}
	for i := range genReqs {
		r := g.Response(i, &genReqs[i])
		genResps[i] = r.Bytes()
	}
	capReqs, capResps := captureFrames(t, framework.RepoPath("pkg", "protocol", "xprotocol", "bolt", "testdata", "sofa-bolt-node.hex"))
	if len(capReqs) != 3 || len(capResps) != 3 {
		t.Fatalf("capture: %d requests, %d responses", len(capReqs), len(capResps))
	}
	captured := map[string][]byte{} // request with id 0 → response
	for i := range capReqs {
		k := append([]byte(nil), capReqs[i]...)
		rpcpeer.SetBoltID(k, 0)
		captured[string(k)] = capResps[i]
	}
	handler := func(raw []byte, f *xprotocol.Frame) ([]byte, bool) {
		if resp, ok := genRespond(genResps, raw, f); ok {
			return resp, true
		}
		k := append([]byte(nil), raw...)
		rpcpeer.SetBoltID(k, 0)
		if r, ok := captured[string(k)]; ok {
			out := append([]byte(nil), r...)
			rpcpeer.SetBoltID(out, uint32(f.ID))
			return out, true
		}
		return nil, false
	}
	a := startBoltPeer(t, rpcpeer.BoltServerOptions{Name: "a", Record: true, Handler: handler})
	b := startBoltPeer(t, rpcpeer.BoltServerOptions{Name: "b"})
	d := startBoltPeer(t, rpcpeer.BoltServerOptions{Name: "d"})
	var capService string
	{
		var f xprotocol.Frame
		if _, err := bolt.New(bolt.Options{}).Decode(capReqs[0], &f); err != nil {
			t.Fatal(err)
		}
		capService = string(f.Service)
	}
	listen := framework.FreePort(t)
	routes := []any{
		rpcRoute("A", "", hdr{"service", "svc.a"}),
		rpcRoute("B", "", hdr{"service", "svc.b"}),
		rpcRoute("A", "", hdr{"service", "svc.gen"}),
		rpcRoute("A", "", hdr{"service", "test"}), // PROTOCOLS.md's test vector
		rpcRoute("A", "", hdr{"service", capService}),
		rpcRoute("A", "300ms", hdr{"service", "svc.timeout"}),
		rpcRoute("D", "", hdr{"service", "svc.closer"}),
		rpcRoute("DEAD", "", hdr{"service", "svc.dead"}),
	}
	clusters := []any{rpcCluster("A", a.Addr()), rpcCluster("B", b.Addr()), rpcCluster("D", d.Addr()),
		rpcCluster("DEAD", deadAddr(t))}
	proxy := framework.StartProxy(t, rpcProxyConfig(listen, map[string]any{"downstream_protocol": "bolt"}, routes, clusters))
	cl := dialBoltPeer(t, listen)
	ctx := rpcCtx(t, 60*time.Second)

	t.Run("v1_v2_mixed_200_in_flight", func(t *testing.T) {
		const n = 200
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				svc, server := "svc.a", "a"
				if i%3 == 0 {
					svc, server = "svc.b", "b"
				}
				ver := byte(1 + i%2)
				content := bytes.Repeat([]byte{byte(i)}, 1024)
				copy(content, strconv.Itoa(i))
				r, err := cl.Call(ctx, rpcpeer.BoltRequest(ver, svc, "echo", content))
				if err != nil {
					errs <- fmt.Errorf("call %d: %w", i, err)
					return
				}
				m := r.Message()
				if got, _ := r.Header(rpcpeer.BoltHeaderServer); got != server || m.Status != 0 || r.Frame.Version != ver ||
					!bytes.Equal(m.Content, content) || string(m.Class) != rpcpeer.SofaResponseClass {
					errs <- fmt.Errorf("call %d (v%d %s): server %q status %d version %d content ok %v",
						i, ver, svc, got, m.Status, r.Frame.Version, bytes.Equal(m.Content, content))
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if u := cl.Unmatched.Load(); u != 0 {
			t.Errorf("%d responses matched no request id", u)
		}
	})

	t.Run("1000_in_flight_64KiB_each", func(t *testing.T) {
		// 64 MiB in flight each way on one connection: the engine must keep both directions
		// moving under back-pressure (no deadlock, nothing lost or reordered across ids).
		// Its own connection, so that a failure here leaves the other subtests alone.
		c4 := dialBoltPeer(t, listen)
		const n, size = 1000, 64 << 10
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				content := bytes.Repeat([]byte{byte(i), byte(i >> 8)}, size/2)
				r, err := c4.Call(ctx, rpcpeer.BoltRequest(byte(1+i%2), "svc.a", "echo", content))
				if err != nil {
					errs <- fmt.Errorf("call %d: %w", i, err)
					return
				}
				if m := r.Message(); m.Status != 0 || !bytes.Equal(m.Content, content) {
					errs <- fmt.Errorf("call %d: status %d, content intact %v", i, m.Status, bytes.Equal(m.Content, content))
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("frame_of_2MiB_both_ways", func(t *testing.T) {
		// Under bolt's 16 MiB frame limit: forwarded and answered like any other frame.
		c5 := dialBoltPeer(t, listen)
		content := bytes.Repeat([]byte("0123456789abcdef"), 128<<10)
		r, err := c5.Call(ctx, rpcpeer.BoltRequest(2, "svc.a", "echo", content))
		if err != nil {
			t.Fatalf("2 MiB request: %v", err)
		}
		if m := r.Message(); m.Status != 0 || !bytes.Equal(m.Content, content) {
			t.Fatalf("2 MiB request: status %d, content intact %v", m.Status, bytes.Equal(m.Content, content))
		}
	})

	t.Run("client_gone_with_requests_pending", func(t *testing.T) {
		c3 := dialBoltPeer(t, listen)
		before := d.Requests.Load()
		for i := 0; i < 10; i++ {
			if _, err := c3.Send(encodeBolt(t, rpcpeer.BoltRequest(1, "svc.closer", rpcpeer.MethodSlow, nil))); err != nil {
				t.Fatal(err)
			}
		}
		waitUntil(t, "10 slow requests at server d", 10*time.Second, func() bool { return d.Requests.Load() >= before+10 })
		c3.Close()
		// The upstream answers after its delay, to a downstream that is gone; the proxy
		// drops those answers and serves on.
		time.Sleep(3500 * time.Millisecond)
		r, err := cl.Call(ctx, rpcpeer.BoltRequest(2, "svc.closer", "echo", []byte("alive")))
		if err != nil || string(r.Message().Content) != "alive" {
			t.Fatalf("after the client left: %+v %v", r, err)
		}
	})

	t.Run("generated_frames_byte_identical", func(t *testing.T) {
		sent := map[string][]byte{} // seq → frame as sent
		oneways := 0
		for i := range genReqs {
			raw := genReqs[i].Bytes()
			seq := strconv.Itoa(i)
			if genReqs[i].Type == 2 {
				oneways++
				id, err := cl.Send(raw)
				if err != nil {
					t.Fatal(err)
				}
				rpcpeer.SetBoltID(raw, id)
				sent[seq] = raw
				continue
			}
			r, id, err := cl.RoundTrip(ctx, raw)
			if err != nil {
				t.Fatalf("frame %d (v%d ver1 %d switch %#x): %v", i, genReqs[i].Version, genReqs[i].Ver1, genReqs[i].Switch, err)
			}
			rpcpeer.SetBoltID(raw, id)
			sent[seq] = raw
			want := append([]byte(nil), genResps[i]...)
			rpcpeer.SetBoltID(want, id)
			if !bytes.Equal(r.Raw, want) {
				t.Errorf("response to frame %d (v%d ver1 %d switch %#x): %v", i, genReqs[i].Version, genReqs[i].Ver1,
					genReqs[i].Switch, rpcpeer.SameBoltFrame(want, r.Raw))
			}
		}
		waitUntil(t, "every generated frame at server a", 10*time.Second, func() bool {
			return countSeq(a.Recorded()) >= len(genReqs)
		})
		for _, raw := range a.Recorded() {
			var f xprotocol.Frame
			if _, err := bolt.New(bolt.Options{}).Decode(raw, &f); err != nil {
				t.Fatalf("server a got an undecodable frame: %v", err)
			}
			seq, ok := f.Header(rpcpeer.BoltHeaderSeq)
			if !ok {
				continue
			}
			if err := rpcpeer.SameBoltFrame(sent[string(seq)], raw); err != nil {
				t.Errorf("frame %s at the upstream: %v", seq, err)
			}
		}
	})

	t.Run("protocols_md_vector", func(t *testing.T) {
		r, id, err := cl.RoundTrip(ctx, rpcpeer.BoltVector)
		if err != nil {
			t.Fatal(err)
		}
		m := r.Message()
		if uint32(r.Frame.ID) != id || m.Status != 0 || string(m.Content) != "null" || r.Frame.Version != 1 {
			t.Errorf("vector: %+v", m)
		}
	})

	t.Run("sofa_bolt_node_capture", func(t *testing.T) {
		for i, req := range capReqs {
			r, id, err := cl.RoundTrip(ctx, req)
			if err != nil {
				t.Fatalf("captured request %d: %v", i, err)
			}
			want := append([]byte(nil), capResps[i]...)
			rpcpeer.SetBoltID(want, id)
			if !bytes.Equal(r.Raw, want) {
				t.Errorf("captured response %d: %v", i, rpcpeer.SameBoltFrame(want, r.Raw))
			}
		}
	})

	t.Run("heartbeat_answered_every_version", func(t *testing.T) {
		for i := 0; i < 6; i++ {
			hb := g.Heartbeat(i)
			r, id, err := cl.RoundTrip(ctx, hb.Bytes())
			if err != nil {
				t.Fatalf("heartbeat v%d ver1 %d switch %#x: %v", hb.Version, hb.Ver1, hb.Switch, err)
			}
			m := r.Message()
			if r.Frame.Kind != xprotocol.KindHeartbeatReply || uint32(r.Frame.ID) != id || r.Frame.Version != hb.Version ||
				(hb.Version == 2 && (m.Ver1 != hb.Ver1 || m.Switch != hb.Switch)) || !rpcpeer.BoltCRCValid(r.Raw) {
				t.Errorf("heartbeat v%d ver1 %d switch %#x: reply %+v", hb.Version, hb.Ver1, hb.Switch, m)
			}
		}
	})

	t.Run("oneway_reaches_server", func(t *testing.T) {
		before := b.Oneways.Load()
		for i := 0; i < 20; i++ {
			m := rpcpeer.BoltRequest(byte(1+i%2), "svc.b", "notify", []byte("ow"))
			m.Kind = xprotocol.KindOneway
			buf := encodeBolt(t, m)
			if _, err := cl.Send(buf); err != nil {
				t.Fatal(err)
			}
		}
		waitUntil(t, "20 one-ways at server b", 10*time.Second, func() bool { return b.Oneways.Load() == before+20 })
	})

	t.Run("no_route", func(t *testing.T) {
		for _, v := range []byte{1, 2} {
			r, err := cl.Call(ctx, rpcpeer.BoltRequest(v, "svc.nobody", "echo", nil))
			if err != nil || r.Message().Status != bolt.StatusNoProcessor || r.Frame.Version != v {
				t.Errorf("v%d: %+v %v (want status 0x06)", v, r, err)
			}
		}
	})

	t.Run("no_route_reply_keeps_v2_ver1_switch_crc", func(t *testing.T) {
		for _, sw := range []byte{0, 1, 0x81} {
			spec := rpcpeer.BoltSpec{Version: 2, Ver1: 2, Switch: sw, Type: 1, Cmd: 1, Ver2: 3, Codec: 11, Timeout: -1,
				Headers: []rpcpeer.BoltHeader{{Key: []byte("service"), Value: []byte("svc.nobody")}}}
			r, id, err := cl.RoundTrip(ctx, spec.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			m := r.Message()
			if uint32(r.Frame.ID) != id || m.Status != bolt.StatusNoProcessor || r.Frame.Version != 2 || m.Ver1 != 2 ||
				m.Switch != sw || m.Codec != 11 || m.Ver2 != 3 || !rpcpeer.BoltCRCValid(r.Raw) {
				t.Errorf("switch %#x: reply %+v (crc ok %v)", sw, m, rpcpeer.BoltCRCValid(r.Raw))
			}
		}
	})

	t.Run("request_own_timeout_field", func(t *testing.T) {
		m := rpcpeer.BoltRequest(1, "svc.closer", rpcpeer.MethodSlow, nil) // route without a timeout
		m.Timeout = 200
		start := time.Now()
		r, err := cl.Call(ctx, m)
		if err != nil || r.Message().Status != bolt.StatusTimeout {
			t.Fatalf("%+v %v (want status 0x07)", r, err)
		}
		if el := time.Since(start); el >= 3*time.Second {
			t.Errorf("answered after %s: the frame's 200ms was not applied", el)
		}
	})

	t.Run("no_healthy_upstream", func(t *testing.T) {
		r, err := cl.Call(ctx, rpcpeer.BoltRequest(1, "svc.dead", "echo", nil))
		if err != nil || r.Message().Status == 0 {
			t.Fatalf("%+v %v (want an error status)", r, err)
		}
		if s := r.Message().Status; s != bolt.StatusNoProcessor {
			t.Logf("dead upstream answered with status %#x (PROTOCOLS.md: 0x06)", s)
		}
	})

	t.Run("upstream_timeout", func(t *testing.T) {
		start := time.Now()
		r, err := cl.Call(ctx, rpcpeer.BoltRequest(2, "svc.timeout", rpcpeer.MethodSlow, nil))
		if err != nil || r.Message().Status != bolt.StatusTimeout {
			t.Fatalf("%+v %v (want status 0x07)", r, err)
		}
		if el := time.Since(start); el >= 3*time.Second {
			t.Errorf("answered after %s", el)
		}
	})

	t.Run("upstream_closed_mid_request", func(t *testing.T) {
		const n = 20
		before := d.Requests.Load()
		results := make(chan error, n+1)
		call := func(method string, v byte) {
			r, err := cl.Call(ctx, rpcpeer.BoltRequest(v, "svc.closer", method, nil))
			switch {
			case err != nil:
				results <- err
			case r.Message().Status == 0:
				results <- fmt.Errorf("%s: success from a closed upstream", method)
			default:
				results <- nil
			}
		}
		for i := 0; i < n; i++ {
			go call(rpcpeer.MethodSlow, byte(1+i%2))
		}
		waitUntil(t, "20 slow requests at server d", 10*time.Second, func() bool { return d.Requests.Load() >= before+n })
		go call(rpcpeer.MethodClose, 1)
		for i := 0; i < n+1; i++ {
			if err := <-results; err != nil {
				t.Errorf("pending request: %v", err)
			}
		}
		r, err := cl.Call(ctx, rpcpeer.BoltRequest(1, "svc.closer", "echo", []byte("again")))
		if err != nil || string(r.Message().Content) != "again" {
			t.Errorf("after the close: %+v %v", r, err)
		}
	})

	t.Run("oversized_frame_closes_connection", func(t *testing.T) {
		c2 := dialBoltPeer(t, listen)
		h := make([]byte, 22)
		copy(h, rpcpeer.BoltVector[:22])
		binary.BigEndian.PutUint32(h[18:], 0x7fffffff) // contentLen far over 16 MiB
		if err := c2.WriteRaw(append(h, "trickle"...)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-c2.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("connection still open 10s after an oversized frame header")
		}
		if _, err := cl.Call(ctx, rpcpeer.BoltRequest(1, "svc.a", "echo", nil)); err != nil {
			t.Fatal(err)
		}
	})

	if u := cl.Unmatched.Load(); u != 0 {
		t.Errorf("%d responses matched no request id", u)
	}
	if proxy.Wait(0) != -1 {
		t.Fatalf("mosnlite exited")
	}
}

func genRespond(resps map[int][]byte, raw []byte, f *xprotocol.Frame) ([]byte, bool) {
	v, ok := f.Header(rpcpeer.BoltHeaderSeq)
	if !ok {
		return nil, false
	}
	seq, err := strconv.Atoi(string(v))
	if err != nil {
		return nil, false
	}
	r, ok := resps[seq]
	if !ok {
		return nil, false
	}
	out := append([]byte(nil), r...)
	rpcpeer.SetBoltID(out, uint32(f.ID))
	return out, true
}

func countSeq(frames [][]byte) int {
	n := 0
	for _, raw := range frames {
		var f xprotocol.Frame
		if _, err := bolt.New(bolt.Options{}).Decode(raw, &f); err == nil {
			if _, ok := f.Header(rpcpeer.BoltHeaderSeq); ok {
				n++
			}
		}
	}
	return n
}

func encodeBolt(t *testing.T, m bolt.Message) []byte {
	t.Helper()
	b, err := rpcpeer.EncodeBolt(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

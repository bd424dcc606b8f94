package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/extension/builtin"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/filter/network/proxy"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/network/evloop"
	"github.com/mosnlite/mosnlite/pkg/proxy/proxytest"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

const testTimeout = 10 * time.Second

func TestRegistry(t *testing.T) {
	reg, err := proxy.Registry()
	if err != nil {
		t.Fatal(err)
	}
	want := []stream.Protocol{stream.HTTP2, stream.Bolt, stream.BoltV2, stream.Dubbo, stream.HTTP1}
	if got := reg.Names(); !slices.Equal(got, want) {
		t.Fatalf("sniffing order %v, want %v", got, want)
	}
	for _, p := range want {
		r, err := reg.Lookup(p)
		if err != nil {
			t.Fatal(err)
		}
		if wantPool := stream.Multiplex; p == stream.HTTP1 && r.PoolMode != stream.PingPong || p != stream.HTTP1 && r.PoolMode != wantPool {
			t.Errorf("%s: pool mode %v", p, r.PoolMode)
		}
	}
	for _, in := range []string{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "PRI * HTTP/2.0\r\n", "\x01\x01", "\x02", "\xda\xbb", "GET / HTTP/1.1\r\n", "\x16\x03"} {
		p, more := reg.Sniff([]byte(in), nil)
		wp, wmore := stream.Sniff([]byte(in), nil)
		if p != wp || more != wmore {
			t.Errorf("Sniff(%q) = %q, %v; stream.Sniff says %q, %v", in, p, more, wp, wmore)
		}
	}
}

// TestXProtocolRegistrationChecked: the RPC server factory refuses a registration whose
// pool mode the engine cannot serve, or whose statuses the codec does not answer with.
func TestXProtocolRegistrationChecked(t *testing.T) {
	ext, err := builtin.NewSet()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := proxy.Registry()
	if err != nil {
		t.Fatal(err)
	}
	bolt, err := reg.Lookup(stream.Bolt)
	if err != nil {
		t.Fatal(err)
	}
	p := proxy.Params{Config: config.ProxyConfig{RouterConfigName: "r"}, Deps: filter.Deps{Routers: tables(t), Codecs: ext.Codecs}}
	s, err := bolt.Factory(p, bolt)
	if err != nil {
		t.Fatal(err)
	}
	if s.Protocol() != stream.Bolt {
		t.Fatalf("Protocol() = %s", s.Protocol())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	pingPong := *bolt
	pingPong.PoolMode = stream.PingPong
	if _, err := bolt.Factory(p, &pingPong); err == nil || !strings.Contains(err.Error(), "multiplexes") {
		t.Fatalf("ping-pong bolt: %v", err)
	}
	wrong := *bolt
	wrong.Status = stream.DubboStatus
	if _, err := bolt.Factory(p, &wrong); err == nil || !strings.Contains(err.Error(), "local reply statuses") {
		t.Fatalf("dubbo statuses for bolt: %v", err)
	}
}

// serve runs f on a loopback listener until the test ends, then closes f.
func serve(t *testing.T, f filter.NetworkFilter, m *metrics.Set) string {
	t.Helper()
	if c, ok := f.(io.Closer); ok {
		t.Cleanup(func() { _ = c.Close() }) // after the listener's cleanup
	}
	return proxytest.Serve(t, f.(network.Handler), buffer.NewPool(), m)
}

// serveLoops is serve on one event loop; f must be a network.RawHandler.
func serveLoops(t *testing.T, f filter.NetworkFilter, m *metrics.Set) string {
	t.Helper()
	rh, ok := f.(interface {
		network.Handler
		network.RawHandler
	})
	if !ok {
		t.Fatalf("%T does not serve event loops", f)
	}
	if c, ok := f.(io.Closer); ok {
		t.Cleanup(func() { _ = c.Close() })
	}
	return proxytest.ServeLoops(t, rh, buffer.NewPool(), m)
}

// TestAutoBoundedWait: Auto waits a bounded time for the bytes that decide (a partial
// HTTP/2 preface is not yet HTTP/1), serves HTTP/1 once "PRI " turns out not to start
// the preface, and closes at once what no protocol matches.
func TestAutoBoundedWait(t *testing.T) {
	t.Run("goroutines", func(t *testing.T) { autoBoundedWait(t, serve) })
	// HTTP/1 on an event loop: a connection starts there and moves to a goroutine when
	// its first bytes are not HTTP/1, or its request needs one (the direct response).
	t.Run("loops", func(t *testing.T) {
		if !evloop.Supported {
			t.Skip("no event loops here")
		}
		m := autoBoundedWait(t, serveLoops)
		for reason, want := range map[string]float64{"protocol": 1, "local_answer": 1} {
			var d dto.Metric
			if err := m.HTTPLoopHandoffs.WithLabelValues("", reason).Write(&d); err != nil || d.GetCounter().GetValue() != want {
				t.Fatalf("handoffs(%s) = %v (%v), want %v", reason, d.GetCounter().GetValue(), err, want)
			}
		}
	})
}

func autoBoundedWait(t *testing.T, serve func(*testing.T, filter.NetworkFilter, *metrics.Set) string) *metrics.Set {
	ext, err := builtin.NewSet()
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	f, err := proxy.Factory(config.RawMessage(`{"downstream_protocol":"Auto","router_config_name":"r"}`),
		filter.Deps{Routers: tables(t), Codecs: ext.Codecs, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	proxy.SetSniffTimeout(f, 300*time.Millisecond)
	addr := serve(t, f, m)

	c := testutil.DialConn(t, addr, testTimeout)
	start := time.Now()
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n"); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("partial preface: read %d, %v; want the connection closed", n, err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Fatalf("closed after %v; want the sniff timeout (300ms)", d)
	}

	c = testutil.DialConn(t, addr, testTimeout)
	if _, err := io.WriteString(c, "PRI /x HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK { // the direct response of tables()
		t.Fatalf("HTTP/1 after PRI: %d", resp.StatusCode)
	}

	if n := protocolErrors(t, m); n != 0 {
		t.Fatalf("a sniff timeout counted as a protocol error (%v)", n)
	}

	c = testutil.DialConn(t, addr, testTimeout)
	if _, err := c.Write([]byte("\x16\x03\x01\x00\x05hello")); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("unknown protocol: read %d, %v; want the connection closed", n, err)
	}
	if n := protocolErrors(t, m); n != 1 { // closed on the bytes, not by the timeout
		t.Fatalf("protocol errors %v, want 1", n)
	}
	return m
}

func protocolErrors(t *testing.T, m *metrics.Set) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.ProtocolErrors.WithLabelValues("", string(stream.Auto)).Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

// origin is a raw HTTP/1 upstream: /hang/... is read and never answered, /reset/... is
// read and the connection closed.
type origin struct {
	*testutil.TCPServer
	reqs atomic.Int64
}

func startOrigin(t *testing.T) *origin {
	o := new(origin)
	o.TCPServer = testutil.StartTCP(t, o.serve)
	return o
}

func (o *origin) serve(c *net.TCPConn) {
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			_ = c.Close()
			return
		}
		o.reqs.Add(1)
		if strings.HasPrefix(req.URL.Path, "/reset") {
			_ = c.Close()
			return
		}
		// /hang: no answer; keep reading until the proxy gives up.
	}
}

// TestLocalReplyStatuses: the HTTP status map in pkg/stream is what pkg/proxy answers
// today, HTTP/1 and HTTP/2, for each local-reply cause.
func TestLocalReplyStatuses(t *testing.T) {
	up := startOrigin(t)
	routes := `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
	 {"match":{"prefix":"/dead"},"route":{"cluster_name":"dead"}},
	 {"match":{"prefix":"/empty"},"route":{"cluster_name":"empty"}},
	 {"match":{"prefix":"/hang"},"route":{"cluster_name":"c","timeout":"300ms"}},
	 {"match":{"prefix":"/reset"},"route":{"cluster_name":"c"}},
	 {"match":{"prefix":"/tiny"},"route":{"cluster_name":"tiny","timeout":"500ms"}}]}]}`
	rts := proxytest.Routers(t, routes)
	m := metrics.New()
	mgr := proxytest.Clusters(t, fmt.Sprintf(`[
		{"name":"c","type":"SIMPLE","hosts":[{"address":%q}]},
		{"name":"tiny","type":"SIMPLE","hosts":[{"address":%q}],"circuit_breakers":[{"max_requests":1}]},
		{"name":"empty","type":"SIMPLE","pick_timeout":"0s"},
		{"name":"dead","type":"SIMPLE","connect_timeout":"200ms","hosts":[{"address":"127.0.0.1:1"}]}]`,
		up.Addr(), up.Addr()), m)
	ext, err := builtin.NewSet()
	if err != nil {
		t.Fatal(err)
	}
	d := filter.Deps{Routers: rts, Clusters: mgr, Metrics: m, Pool: buffer.NewPool(), Codecs: ext.Codecs}
	build := func(down string) string {
		f, err := proxy.Factory(config.RawMessage(`{"downstream_protocol":"`+down+`","upstream_protocol":"Http1","router_config_name":"r"}`), d)
		if err != nil {
			t.Fatal(err)
		}
		return serve(t, f, m)
	}
	h1, h2 := build("Http1"), build("Http2")
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	h2c := &http.Client{Timeout: testTimeout, Transport: tr}
	t.Cleanup(h2c.CloseIdleConnections)
	h1get := func(path string) int {
		c := testutil.DialConn(t, h1, testTimeout)
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("HTTP/1 %s: %v", path, err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	h2get := func(path string) int {
		resp, err := h2c.Get("http://" + h2 + path)
		if err != nil {
			t.Fatalf("HTTP/2 %s: %v", path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		cause stream.Cause
		path  string
	}{
		{stream.CauseNoRoute, "/nowhere"},
		{stream.CauseNoHealthyUpstream, "/empty"},
		{stream.CauseNoHealthyUpstream, "/dead"}, // connect failed
		{stream.CauseTimeout, "/hang"},
		{stream.CauseUpstreamReset, "/reset"},
	} {
		want := stream.HTTPStatus(c.cause)
		if got := h1get(c.path); got != want {
			t.Errorf("HTTP/1 %s (%s): %d, status map says %d", c.path, c.cause, got, want)
		}
		if got := h2get(c.path); got != want {
			t.Errorf("HTTP/2 %s (%s): %d, status map says %d", c.path, c.cause, got, want)
		}
	}
	// Codec error: an HTTP/1 request line that does not parse.
	c := testutil.DialConn(t, h1, testTimeout)
	if _, err := io.WriteString(c, "GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if want := stream.HTTPStatus(stream.CauseCodecError); resp.StatusCode != want {
		t.Errorf("HTTP/1 bad request line: %d, status map says %d", resp.StatusCode, want)
	}
	// Overflow: max_requests 1 and one request hanging (the HTTP/2 driver enforces it).
	first := make(chan int, 1)
	before := up.reqs.Load()
	go func() {
		resp, err := h2c.Get("http://" + h2 + "/tiny/1")
		if err != nil {
			first <- 0
			return
		}
		_ = resp.Body.Close()
		first <- resp.StatusCode
	}()
	testutil.Eventually(t, testTimeout, "the first request upstream", func() bool { return up.reqs.Load() != before })
	if got, want := h2get("/tiny/2"), stream.HTTPStatus(stream.CauseOverflow); got != want {
		t.Errorf("HTTP/2 overflow: %d, status map says %d", got, want)
	}
	if got := <-first; got != stream.HTTPStatus(stream.CauseTimeout) {
		t.Errorf("HTTP/2 hanging request: %d", got)
	}
}

package e2e

import (
	"bytes"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/dubbo"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/test/framework"
)

// The multiplexed RPC engine through the binary, with MOSN's bolt and dubbo sample
// configs. The upstreams are real bolt / dubbo servers built from mosnlite's codecs.

// engFrames reads whole frames from a connection.
type engFrames struct {
	c   net.Conn
	xp  xprotocol.Codec
	buf []byte
	tmp []byte
}

func newEngFrames(c net.Conn, xp xprotocol.Codec) *engFrames {
	return &engFrames{c: c, xp: xp, tmp: make([]byte, 64<<10)}
}

func (r *engFrames) next() (*xprotocol.Frame, error) {
	for {
		if len(r.buf) > 0 {
			var f xprotocol.Frame
			n, err := r.xp.Decode(r.buf, &f)
			if err != nil {
				return nil, err
			}
			if n > 0 {
				raw := bytes.Clone(r.buf[:n])
				r.buf = r.buf[n:]
				g := new(xprotocol.Frame)
				_, err := r.xp.Decode(raw, g)
				return g, err
			}
		}
		n, err := r.c.Read(r.tmp)
		r.buf = append(r.buf, r.tmp[:n]...)
		if err != nil {
			return nil, err
		}
	}
}

// engServer is an RPC upstream: it answers heartbeats, never answers service "hang",
// and answers every other request (after the "delay" header's milliseconds for bolt, so
// responses come back out of order) echoing the content. respond builds the answer.
type engServer struct {
	*testutil.TCPServer // Conns counts the connections accepted
	xp                  xprotocol.Codec
	respond             func(f *xprotocol.Frame) []byte
	reqs                atomic.Int64
}

func startEngServer(t *testing.T, xp xprotocol.Codec, respond func(f *xprotocol.Frame) []byte) *engServer {
	t.Helper()
	s := &engServer{xp: xp, respond: respond}
	s.TCPServer = testutil.StartTCP(t, func(c *net.TCPConn) { s.serve(c) })
	return s
}

func (s *engServer) addr() string { return s.Addr() }

func (s *engServer) serve(c net.Conn) {
	var wmu sync.Mutex
	var inner sync.WaitGroup
	defer func() {
		_ = c.Close()
		inner.Wait()
	}()
	write := func(b []byte) {
		wmu.Lock()
		_, _ = c.Write(b)
		wmu.Unlock()
	}
	r := newEngFrames(c, s.xp)
	for {
		f, err := r.next()
		if err != nil {
			return
		}
		switch f.Kind {
		case xprotocol.KindHeartbeat:
			b := buffer.NewPool().NewBuffer(64)
			_ = s.xp.HeartbeatReply(b, f)
			write(bytes.Clone(b.Bytes()))
			b.Release()
			continue
		case xprotocol.KindRequest:
		case xprotocol.KindOneway:
			s.reqs.Add(1)
			continue
		default:
			continue
		}
		s.reqs.Add(1)
		if string(f.Service) == "hang" {
			continue
		}
		out := s.respond(f)
		delay := 0
		if v, ok := f.Header("delay"); ok {
			delay, _ = strconv.Atoi(string(v))
		}
		if delay == 0 {
			write(out)
			continue
		}
		inner.Add(1)
		go func() {
			defer inner.Done()
			time.Sleep(time.Duration(delay) * time.Millisecond)
			write(out)
		}()
	}
}

// boltEcho answers a bolt request with its content, in the request's version.
func boltEcho(f *xprotocol.Frame) []byte {
	req := bolt.MessageOf(f)
	m := bolt.Message{Kind: xprotocol.KindResponse, Version: req.Version, Ver1: req.Ver1, Switch: req.Switch,
		Ver2: req.Ver2, ID: req.ID, Codec: req.Codec, Class: []byte("resp"), Content: req.Content}
	b := buffer.NewPool().NewBuffer(256)
	defer b.Release()
	if err := bolt.New(bolt.Options{}).EncodeMessage(b, &m); err != nil {
		panic(err)
	}
	return bytes.Clone(b.Bytes())
}

func engBolt(t *testing.T, m bolt.Message) []byte {
	t.Helper()
	if m.Kind == 0 {
		m.Kind = xprotocol.KindRequest
	}
	m.Ver2, m.Codec = 1, 1
	if m.Timeout == 0 {
		m.Timeout = -1
	}
	b := buffer.NewPool().NewBuffer(256)
	defer b.Release()
	if err := bolt.New(bolt.Options{}).EncodeMessage(b, &m); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(b.Bytes())
}

func engHdrs(kv ...string) []xprotocol.Header {
	var hs []xprotocol.Header
	for i := 0; i+1 < len(kv); i += 2 {
		hs = append(hs, xprotocol.Header{Key: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	return hs
}

// engBoltChecks runs the bolt checks against a proxy listening on addr whose upstream is up.
func engBoltChecks(t *testing.T, addr string, up *engServer) {
	c := framework.Dial(t, addr)
	defer c.Close()
	r := newEngFrames(c, bolt.New(bolt.Options{}))
	next := func() *xprotocol.Frame {
		t.Helper()
		f, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		return f
	}

	// Many in flight on one connection, v1 and v2 mixed, answered out of order.
	const n = 200
	var all []byte
	for i := 1; i <= n; i++ {
		all = append(all, engBolt(t, bolt.Message{ID: uint32(i), Version: byte(1 + i%2),
			Headers: engHdrs("service", "com.example.Echo", "delay", strconv.Itoa(i%5*3)),
			Content: []byte("payload-" + strconv.Itoa(i))})...)
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for len(seen) < n {
		f := next()
		i := int(f.ID)
		if f.Kind != xprotocol.KindResponse || f.Status != bolt.StatusSuccess || i < 1 || i > n || seen[f.ID] {
			t.Fatalf("response %d: kind %d status %#x (seen %v)", f.ID, f.Kind, f.Status, seen[f.ID])
		}
		if got := string(bolt.MessageOf(f).Content); got != "payload-"+strconv.Itoa(i) || f.Version != byte(1+i%2) {
			t.Fatalf("response %d: content %q version %d", i, got, f.Version)
		}
		seen[f.ID] = true
	}

	// Heartbeats are answered by the proxy.
	for _, v := range []byte{1, 2} {
		if _, err := c.Write(engBolt(t, bolt.Message{Kind: xprotocol.KindHeartbeat, Version: v, ID: 500})); err != nil {
			t.Fatal(err)
		}
		if f := next(); f.Kind != xprotocol.KindHeartbeatReply || f.ID != 500 || f.Version != v {
			t.Fatalf("heartbeat v%d: %+v", v, f)
		}
	}

	// No route: the sample routes need a "service" header.
	if _, err := c.Write(engBolt(t, bolt.Message{ID: 600, Headers: engHdrs("other", "x")})); err != nil {
		t.Fatal(err)
	}
	if f := next(); f.ID != 600 || f.Status != bolt.StatusNoProcessor {
		t.Fatalf("no route: id %d status %#x", f.ID, f.Status)
	}

	// The request's own timeout.
	if _, err := c.Write(engBolt(t, bolt.Message{ID: 601, Timeout: 300, Headers: engHdrs("service", "hang")})); err != nil {
		t.Fatal(err)
	}
	if f := next(); f.ID != 601 || f.Status != bolt.StatusTimeout {
		t.Fatalf("timeout: id %d status %#x", f.ID, f.Status)
	}

	// Upstream closed with requests pending: every one answered ConnectionClosed.
	before := up.reqs.Load()
	all = all[:0]
	for i := 700; i < 710; i++ {
		all = append(all, engBolt(t, bolt.Message{ID: uint32(i), Timeout: 60000, Headers: engHdrs("service", "hang")})...)
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "requests upstream", 10*time.Second, func() bool { return up.reqs.Load() >= before+10 })
	up.CloseConns()
	for k := 0; k < 10; k++ {
		if f := next(); f.ID < 700 || f.ID >= 710 || f.Status != bolt.StatusConnectionClosed {
			t.Fatalf("upstream closed: id %d status %#x", f.ID, f.Status)
		}
	}
	// And the next request gets a new upstream connection.
	if _, err := c.Write(engBolt(t, bolt.Message{ID: 800, Headers: engHdrs("service", "s"), Content: []byte("again")})); err != nil {
		t.Fatal(err)
	}
	if f := next(); f.ID != 800 || f.Status != bolt.StatusSuccess {
		t.Fatalf("after reconnect: id %d status %#x", f.ID, f.Status)
	}

	// An oversized frame closes the connection before its body is sent.
	hdr := engBolt(t, bolt.Message{ID: 900, Headers: engHdrs("service", "s")})[:22]
	hdr[18], hdr[19], hdr[20], hdr[21] = 0x02, 0, 0, 0 // content 32 MiB
	if _, err := c.Write(hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := r.next(); err == nil {
		t.Fatal("oversized frame: connection still open")
	}
}

// TestRPCEngineBoltSamples runs MOSN's bolt_server_config.json and
// bolt_client_config.json as two processes (client 2045 → server 2046 → app 8080).
func TestRPCEngineBoltSamples(t *testing.T) {
	app := startEngServer(t, bolt.New(bolt.Options{}), boltEcho)
	server, client := framework.FreePort(t), framework.FreePort(t)
	framework.StartProxy(t, mosnConfig(t, "bolt_server_config.json", map[string]string{
		"127.0.0.1:8080": app.addr(), "127.0.0.1:2046": server, "34902": freePortNumber(t),
	}))
	framework.StartProxy(t, mosnConfig(t, "bolt_client_config.json", map[string]string{
		"127.0.0.1:2046": server, "127.0.0.1:2045": client, "34901": freePortNumber(t),
	}))
	engBoltChecks(t, client, app)
	if app.Conns.Load() != 2 { // one, and one after the forced close
		t.Fatalf("app saw %d connections, want 2 (multiplexed)", app.Conns.Load())
	}
}

// TestRPCEngineAutoBolt runs MOSN's auto_bolt_config.json: Auto listeners with bolt as
// the sub-protocol, client listener → server listener → app.
func TestRPCEngineAutoBolt(t *testing.T) {
	app := startEngServer(t, bolt.New(bolt.Options{}), boltEcho)
	server, client := framework.FreePort(t), framework.FreePort(t)
	framework.StartProxy(t, mosnConfig(t, "auto_bolt_config.json", map[string]string{
		"127.0.0.1:12199": app.addr(), "127.0.0.1:2046": server, "127.0.0.1:2045": client, "34901": freePortNumber(t),
	}))
	engBoltChecks(t, client, app)
	// A connection starting with a v2 frame is sniffed as boltv2 and served the same way.
	c := framework.Dial(t, client)
	defer c.Close()
	r := newEngFrames(c, bolt.New(bolt.Options{}))
	for i, v := range []byte{2, 1, 2} {
		if _, err := c.Write(engBolt(t, bolt.Message{ID: uint32(i + 1), Version: v, Headers: engHdrs("service", "s")})); err != nil {
			t.Fatal(err)
		}
		f, err := r.next()
		if err != nil || f.ID != uint64(i+1) || f.Status != 0 || f.Version != v {
			t.Fatalf("v%d on a v2 connection: %v %+v", v, err, f)
		}
	}
}

// dubboEcho answers a dubbo request with "ok:<method>".
func dubboEcho(f *xprotocol.Frame) []byte {
	b, err := (&dubbo.Response{ID: f.ID, Value: "ok:" + string(f.Method)}).Bytes()
	if err != nil {
		panic(err)
	}
	return b
}

func engDubboChecks(t *testing.T, addr string) {
	c := framework.Dial(t, addr)
	defer c.Close()
	r := newEngFrames(c, dubbo.New(dubbo.Options{}))
	var all []byte
	const n = 100
	for i := uint64(1); i <= n; i++ {
		b, err := (&dubbo.Request{ID: i << 33, Service: "com.example.Echo", Version: "1.0.0", Group: "g",
			Method: "say" + strconv.Itoa(int(i)), Args: []any{"hello"}}).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	if _, err := c.Write(all); err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for len(seen) < n {
		f, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind != xprotocol.KindResponse || f.Status != dubbo.StatusOK || f.ID>>33 < 1 || f.ID>>33 > n || seen[f.ID] {
			t.Fatalf("response id %#x status %d", f.ID, f.Status)
		}
		seen[f.ID] = true
		if !bytes.Contains(f.Raw, []byte("ok:say"+strconv.Itoa(int(f.ID>>33)))) {
			t.Fatalf("response %d does not carry its method", f.ID>>33)
		}
	}
	hb := buffer.NewPool().NewBuffer(64)
	_ = dubbo.New(dubbo.Options{}).Heartbeat(hb, 7)
	if _, err := c.Write(bytes.Clone(hb.Bytes())); err != nil {
		t.Fatal(err)
	}
	hb.Release()
	if f, err := r.next(); err != nil || f.Kind != xprotocol.KindHeartbeatReply || f.ID != 7 {
		t.Fatalf("heartbeat: %v %+v", err, f)
	}
	b, _ := (&dubbo.Request{ID: 8, Service: "hang", Method: "m", Timeout: 200 * time.Millisecond}).Bytes()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	if f, err := r.next(); err != nil || f.ID != 8 || f.Status != dubbo.StatusClientTimeout {
		t.Fatalf("timeout: %v %+v", err, f)
	}
}

// TestRPCEngineDubboSamples runs MOSN's dubbo_server_config.json and
// dubbo_client_config.json (client 2045 → server 2046 → provider 20880).
func TestRPCEngineDubboSamples(t *testing.T) {
	app := startEngServer(t, dubbo.New(dubbo.Options{}), dubboEcho)
	server, client := framework.FreePort(t), framework.FreePort(t)
	framework.StartProxy(t, mosnConfig(t, "dubbo_server_config.json", map[string]string{
		"127.0.0.1:20880": app.addr(), "127.0.0.1:2046": server,
	}))
	framework.StartProxy(t, mosnConfig(t, "dubbo_client_config.json", map[string]string{
		"127.0.0.1:2046": server, "0.0.0.0:2045": client,
	}))
	engDubboChecks(t, client)
}

// TestRPCEngineMirrorDubboSample runs the dubbo part of mirror_http2_dubbo_config.json:
// its egress_dubbo listener (X with sub_protocol dubbo) and its route's
// request_mirror_policies (30% of the requests copied to dubbo_mirror, whose answers are
// dropped). The HTTP listeners are left out (they need the "mirror" stream filter); the
// listener's own "mirror" stream filter is not applied to RPC (a warning says so).
func TestRPCEngineMirrorDubboSample(t *testing.T) {
	app := startEngServer(t, dubbo.New(dubbo.Options{}), dubboEcho)
	mirror := startEngServer(t, dubbo.New(dubbo.Options{}), dubboEcho)
	listen := framework.FreePort(t)
	raw := mosnConfig(t, "mirror_http2_dubbo_config.json", map[string]string{
		"0.0.0.0:20885": listen, "127.0.0.1:20880": app.addr(), "127.0.0.1:20883": mirror.addr(),
		"34902": freePortNumber(t), "15090": freePortNumber(t),
	})
	var cfg map[string]any
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	srv := cfg["servers"].([]any)[0].(map[string]any)
	var keep []any
	for _, l := range srv["listeners"].([]any) {
		if l.(map[string]any)["name"] == "egress_dubbo" {
			keep = append(keep, l)
		}
	}
	if len(keep) != 1 {
		t.Fatal("egress_dubbo listener not found")
	}
	srv["listeners"] = keep
	out, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), listen) {
		t.Fatal("listener address not rewritten")
	}
	p := framework.StartProxy(t, string(out))
	engDubboChecks(t, listen)
	waitUntil(t, "mirrored requests", 10*time.Second, func() bool { return mirror.reqs.Load() > 0 })
	if m, a := mirror.reqs.Load(), app.reqs.Load(); m >= a {
		t.Fatalf("mirror got %d requests, provider %d: want about 30%%", m, a)
	}
	if !strings.Contains(p.Logs(), "stream filters are not applied to RPC") {
		t.Fatal("no warning about the ignored stream filter")
	}
}

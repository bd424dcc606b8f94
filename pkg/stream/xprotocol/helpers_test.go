package xprotocol_test

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	xproto "github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/pkg/proxy/proxytest"
	"github.com/mosnlite/mosnlite/pkg/stream/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testTimeout = 10 * time.Second

// frameReader reads whole frames from a connection with a codec.
type frameReader struct {
	c   net.Conn
	xp  xproto.Codec
	buf []byte
	tmp []byte
}

func newFrameReader(c net.Conn, xp xproto.Codec) *frameReader {
	return &frameReader{c: c, xp: xp, tmp: make([]byte, 64<<10)}
}

// next returns the next frame, decoded over its own copy of the bytes.
func (r *frameReader) next() (*xproto.Frame, error) {
	for {
		if len(r.buf) > 0 {
			var f xproto.Frame
			n, err := r.xp.Decode(r.buf, &f)
			if err != nil {
				return nil, err
			}
			if n > 0 {
				raw := append([]byte(nil), r.buf[:n]...)
				r.buf = r.buf[n:]
				g := new(xproto.Frame)
				if _, err := r.xp.Decode(raw, g); err != nil {
					return nil, err
				}
				return g, nil
			}
		}
		n, err := r.c.Read(r.tmp)
		r.buf = append(r.buf, r.tmp[:n]...)
		if err != nil {
			return nil, err
		}
	}
}

// boltServer is a real bolt upstream built from the codec. By the request's service:
// "hang" is never answered, "close" closes the connection, "goaway" sends a go-away
// first, "gated" is answered once the test calls release; others are answered (after the
// "delay" header's milliseconds, in a goroutine, so responses come back out of order)
// with the request's content and an "up-id" header (the id the request arrived with).
type boltServer struct {
	ln          net.Listener
	xp          *bolt.Codec
	conns       atomic.Int64
	reqs        atomic.Int64
	heartbeats  atomic.Int64
	noHeartbeat atomic.Bool // do not answer heartbeats
	gate        chan struct{}
	gateOnce    sync.Once
	wg          sync.WaitGroup
	mu          sync.Mutex
	open        map[net.Conn]struct{}
	closed      bool
}

func startBoltServer(t testing.TB) *boltServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &boltServer{ln: ln, xp: bolt.New(bolt.Options{}), open: map[net.Conn]struct{}{}, gate: make(chan struct{})}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.close)
	return s
}

func (s *boltServer) addr() string { return s.ln.Addr().String() }

// release answers the "gated" requests, those held and those to come.
func (s *boltServer) release() { s.gateOnce.Do(func() { close(s.gate) }) }

func (s *boltServer) close() {
	s.release()
	_ = s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.open {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// closeConns closes every accepted connection.
func (s *boltServer) closeConns() {
	s.mu.Lock()
	for c := range s.open {
		_ = c.Close()
	}
	s.mu.Unlock()
}

func (s *boltServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.open[c] = struct{}{}
		s.mu.Unlock()
		s.conns.Add(1)
		s.wg.Add(1)
		go s.serveConn(c)
	}
}

func (s *boltServer) serveConn(c net.Conn) {
	defer s.wg.Done()
	var wmu sync.Mutex
	var inner sync.WaitGroup
	defer func() {
		_ = c.Close()
		inner.Wait()
		s.mu.Lock()
		delete(s.open, c)
		s.mu.Unlock()
	}()
	write := func(m *bolt.Message) {
		b := buffer.NewPool().NewBuffer(256)
		if err := s.xp.EncodeMessage(b, m); err != nil {
			panic(err)
		}
		wmu.Lock()
		_, _ = c.Write(b.Bytes())
		wmu.Unlock()
		b.Release()
	}
	r := newFrameReader(c, s.xp)
	for {
		f, err := r.next()
		if err != nil {
			return
		}
		req := bolt.MessageOf(f)
		switch f.Kind {
		case xproto.KindHeartbeat:
			s.heartbeats.Add(1)
			if !s.noHeartbeat.Load() {
				write(&bolt.Message{Kind: xproto.KindHeartbeatReply, Version: req.Version, Ver1: req.Ver1, Ver2: 1, ID: req.ID, Codec: 1})
			}
			continue
		case xproto.KindRequest, xproto.KindOneway:
		default:
			continue
		}
		s.reqs.Add(1)
		switch string(f.Service) {
		case "hang":
			continue
		case "close":
			return
		case "halfresp": // half of a response frame, then the connection closes
			b := buffer.NewPool().NewBuffer(256)
			if err := s.xp.EncodeMessage(b, &bolt.Message{Kind: xproto.KindResponse, Version: req.Version, Ver1: req.Ver1,
				Ver2: req.Ver2, ID: req.ID, Codec: req.Codec, Class: []byte("resp"), Content: []byte("0123456789abcdef")}); err != nil {
				panic(err)
			}
			wmu.Lock()
			_, _ = c.Write(b.Bytes()[:b.Len()/2])
			wmu.Unlock()
			b.Release()
			return
		case "goaway":
			write(&bolt.Message{Kind: xproto.KindGoAway, Version: 1, Ver2: 1, Codec: 1, Timeout: -1})
		}
		if f.Kind == xproto.KindOneway {
			continue
		}
		delay := 0
		if v, ok := f.Header("delay"); ok {
			delay, _ = strconv.Atoi(string(v))
		}
		resp := &bolt.Message{Kind: xproto.KindResponse, Version: req.Version, Ver1: req.Ver1, Switch: req.Switch,
			Ver2: req.Ver2, ID: req.ID, Codec: req.Codec, Class: []byte("resp"),
			Headers: []xproto.Header{{Key: []byte("up-id"), Value: []byte(strconv.FormatUint(f.ID, 10))}},
			Content: req.Content}
		gated := string(f.Service) == "gated"
		if delay == 0 && !gated {
			write(resp)
			continue
		}
		inner.Add(1)
		go func() {
			defer inner.Done()
			if gated {
				<-s.gate
			}
			time.Sleep(time.Duration(delay) * time.Millisecond)
			write(resp)
		}()
	}
}

// env is an engine serving a loopback listener.
type env struct {
	addr     string
	e        *xprotocol.Engine
	m        *metrics.Set
	clusters *cluster.Manager
}

const testRoutes = `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"headers":[{"name":"service","value":"nope"}]},"direct_response":{"status":200}},
 {"match":{"headers":[{"name":"service","value":"dead"}]},"route":{"cluster_name":"dead"}},
 {"match":{"headers":[{"name":"service","value":"short"}]},"route":{"cluster_name":"c","timeout":"200ms"}},
 {"match":{"headers":[{"name":"service","value":"tiny"}]},"route":{"cluster_name":"tiny"}},
 {"match":{"headers":[{"name":"service","value":"pooled"}]},"route":{"cluster_name":"pool3"}},
 {"match":{"headers":[{"name":"service","value":"empty"}]},"route":{"cluster_name":"empty"}},
 {"match":{"headers":[{"name":"service","value":"grouped"},{"name":"group","value":"g1"}]},"route":{"cluster_name":"c"}},
 {"match":{"headers":[{"name":"service","value":"grouped"}]},"route":{"cluster_name":"dead"}},
 {"match":{"headers":[{"name":"service","value":"[a-z.]+"}]},"route":{"cluster_name":"c"}}
]}]}`

func startEnv(t testing.TB, xp xproto.Codec, upstream string, tune func(*xprotocol.Config)) *env {
	t.Helper()
	rts := proxytest.Routers(t, testRoutes)
	js := fmt.Sprintf(`[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","hosts":[{"address":%q}]},
		{"name":"tiny","type":"SIMPLE","hosts":[{"address":%q}],"circuit_breakers":[{"max_requests":1}]},
		{"name":"empty","type":"SIMPLE","pick_timeout":"3s"},
		{"name":"pool3","type":"SIMPLE","hosts":[{"address":%q}],"conn_pool_size":3},
		{"name":"dead","type":"SIMPLE","connect_timeout":"200ms","pick_timeout":"0s","hosts":[{"address":"127.0.0.1:1"}]}]`, upstream, upstream, upstream)
	m := metrics.New()
	mgr := proxytest.Clusters(t, js, m)
	pool := buffer.NewPool()
	cfg := xprotocol.Config{
		Listener: "l", Codec: xp, Routers: rts, RouterName: "r", Clusters: mgr, Pool: pool, Metrics: m,
		Tick: 20 * time.Millisecond,
	}
	if tune != nil {
		tune(&cfg)
	}
	e := xprotocol.New(cfg)
	t.Cleanup(func() { _ = e.Close() }) // after the listener's cleanup
	return &env{addr: proxytest.Serve(t, e, pool, m), e: e, m: m, clusters: mgr}
}

func (v *env) failures(cause string) float64 {
	return v.failuresOf("bolt", cause)
}

func (v *env) failuresOf(proto, cause string) float64 {
	var m dto.Metric
	if err := v.m.RPCFailures.WithLabelValues("l", proto, cause).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// dial connects to addr; the connection times out with the test and closes at cleanup.
func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	return testutil.DialConn(t, addr, testTimeout)
}

// startPending starts a bolt engine and a client connection with request 1 pending
// upstream (answered after 300ms), and returns the engine and the client's reader.
func startPending(t testing.TB) (*env, *frameReader) {
	t.Helper()
	up := startBoltServer(t)
	v := startEnv(t, bolt.New(bolt.Options{}), up.addr(), nil)
	c := dial(t, v.addr)
	r := newFrameReader(c, bolt.New(bolt.Options{}))
	if _, err := c.Write(boltReq(t, bolt.Message{ID: 1, Headers: hdrs("service", "echo", "delay", "300")})); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, testTimeout, "request upstream", func() bool { return up.reqs.Load() == 1 })
	return v, r
}

// expectDrained reads what a draining engine sends the client of startPending: a
// go-away, then the pending request's answer, then the close.
func expectDrained(t testing.TB, r *frameReader) {
	t.Helper()
	f, err := r.next()
	if err != nil || f.Kind != xproto.KindGoAway {
		t.Fatalf("want a go-away first: %v %+v", err, f)
	}
	if f, err = r.next(); err != nil || f.ID != 1 || f.Status != 0 {
		t.Fatalf("pending request: %v %+v", err, f)
	}
	if _, err = r.next(); !isEOF(err) {
		t.Fatalf("want the connection closed after the drain, got %v", err)
	}
}

// boltReq encodes a bolt request.
func boltReq(t testing.TB, m bolt.Message) []byte {
	t.Helper()
	if m.Kind == 0 {
		m.Kind = xproto.KindRequest
	}
	if m.Ver2 == 0 {
		m.Ver2 = 1
	}
	if m.Codec == 0 {
		m.Codec = 1
	}
	if m.Timeout == 0 {
		m.Timeout = -1
	}
	b := buffer.NewPool().NewBuffer(256)
	defer b.Release()
	if err := bolt.New(bolt.Options{}).EncodeMessage(b, &m); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), b.Bytes()...)
}

func hdrs(kv ...string) []xproto.Header {
	var hs []xproto.Header
	for i := 0; i+1 < len(kv); i += 2 {
		hs = append(hs, xproto.Header{Key: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	return hs
}

// isEOF reports a closed connection.
func isEOF(err error) bool {
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

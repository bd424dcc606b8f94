package xprotocol_test

import (
	"context"
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
	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network"
	xproto "github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream/xprotocol"
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
// first; others are answered (after the "delay" header's milliseconds, in a goroutine, so
// responses come back out of order) with the request's content and an "up-id" header.
type boltServer struct {
	ln          net.Listener
	xp          *bolt.Codec
	conns       atomic.Int64
	reqs        atomic.Int64
	heartbeats  atomic.Int64
	noHeartbeat atomic.Bool // do not answer heartbeats
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
	s := &boltServer{ln: ln, xp: bolt.New(bolt.Options{}), open: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.close)
	return s
}

func (s *boltServer) addr() string { return s.ln.Addr().String() }

func (s *boltServer) close() {
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
		if delay == 0 {
			write(resp)
			continue
		}
		inner.Add(1)
		go func() {
			defer inner.Done()
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
	var rc config.RouterCfg
	if err := config.Unmarshal([]byte(testRoutes), &rc); err != nil {
		t.Fatal(err)
	}
	tables, err := router.Build([]config.RouterCfg{rc})
	if err != nil {
		t.Fatal(err)
	}
	rts := new(router.Tables)
	rts.Replace(tables)
	var cls []config.Cluster
	js := fmt.Sprintf(`[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","hosts":[{"address":%q}]},
		{"name":"tiny","type":"SIMPLE","hosts":[{"address":%q}],"circuit_breakers":[{"max_requests":1}]},
		{"name":"empty","type":"SIMPLE","pick_timeout":"3s"},
		{"name":"pool3","type":"SIMPLE","hosts":[{"address":%q}],"conn_pool_size":3},
		{"name":"dead","type":"SIMPLE","connect_timeout":"200ms","pick_timeout":"0s","hosts":[{"address":"127.0.0.1:1"}]}]`, upstream, upstream, upstream)
	if err := config.Unmarshal([]byte(js), &cls); err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	mgr := cluster.NewManager(cluster.Options{Metrics: m})
	if err := mgr.Apply(cls); err != nil {
		t.Fatal(err)
	}
	pool := buffer.NewPool()
	cfg := xprotocol.Config{
		Listener: "l", Codec: xp, Routers: rts, RouterName: "r", Clusters: mgr, Pool: pool, Metrics: m,
		Tick: 20 * time.Millisecond,
	}
	if tune != nil {
		tune(&cfg)
	}
	e := xprotocol.New(cfg)
	ln, err := network.NewListener(network.ListenerConfig{
		Name: "l", Network: "tcp", Address: "127.0.0.1:0", BindPort: true,
		Conn: network.ConnOptions{Pool: pool, IdleTimeout: time.Minute}, Handler: e, Metrics: m,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = ln.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		dctx, dcancel := context.WithTimeout(context.Background(), 0)
		ln.Drain(dctx)
		dcancel()
		_ = e.Close()
	})
	return &env{addr: ln.Addr().String(), e: e, m: m, clusters: mgr}
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

func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { _ = c.Close() })
	return c
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

// waitFor polls cond up to testTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// isEOF reports a closed connection.
func isEOF(err error) bool {
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

package tcpproxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/filter/network/tcpproxy"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/network/evloop"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds every blocking step of a test.
const testTimeout = 15 * time.Second

func dur(d time.Duration) *config.Duration { v := config.Duration(d); return &v }

// upstream is a TCP server on 127.0.0.1:0 running handle for each accepted connection.
// upstream is a loopback TCP server whose connections handle serves.
type upstream struct{ *testutil.TCPServer }

func startUpstream(t testing.TB, handle func(c net.Conn)) *upstream {
	t.Helper()
	return &upstream{testutil.StartTCP(t, func(c *net.TCPConn) { handle(c) })}
}

func (u *upstream) addr() string { return u.Addr() }

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// env is a tcp_proxy behind a real listener, with a real cluster manager.
type env struct {
	t        testing.TB
	m        *metrics.Set
	clusters *cluster.Manager
	logs     *observer.ObservedLogs
	zl       *zap.Logger
	lns      []*network.Listener
	ctx      context.Context
	cancel   context.CancelFunc
	served   sync.WaitGroup
	stopped  bool
	loops    *evloop.Group // the listeners' event loops, in loop mode (modes)
	// sendTimeout is the send_timeout of listeners started after it is set.
	sendTimeout time.Duration
}

const lnName = "tp"

func newEnv(t testing.TB, clusters ...config.Cluster) *env {
	t.Helper()
	return newEnvAt(t, zapcore.DebugLevel, clusters...)
}

// newEnvAt logs at level and above (benchmarks: info, as in production).
func newEnvAt(t testing.TB, level zapcore.Level, clusters ...config.Cluster) *env {
	t.Helper()
	core, logs := observer.New(level)
	e := &env{t: t, m: metrics.New(), logs: logs, zl: zap.New(core)}
	e.clusters = cluster.NewManager(cluster.Options{Metrics: e.m, Log: e.zl})
	if err := e.clusters.Apply(clusters); err != nil {
		t.Fatal(err)
	}
	if _, ok := loopMode.Load(t); ok {
		g, err := evloop.NewGroup(1, e.zl)
		if err != nil {
			t.Fatal(err)
		}
		e.loops = g
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() { e.stop(0) })
	return e
}

// proxy builds a tcp_proxy from raw JSON and serves it on a new listener named name.
func (e *env) proxy(name, raw string) (*network.Listener, *tcpproxy.Filter) {
	e.t.Helper()
	h := &lazyHandler{}
	ln := e.listen(name, h)
	f := e.build(name, raw)
	h.set(f)
	return ln, f
}

func (e *env) build(name, raw string) *tcpproxy.Filter {
	e.t.Helper()
	nf, err := tcpproxy.Factory(config.RawMessage(raw), filter.Deps{
		Clusters: e.clusters,
		Pool:     buffer.NewPool(),
		Metrics:  e.m,
		Log:      e.log(),
		Listener: &config.Listener{Name: name},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return nf.(*tcpproxy.Filter)
}

func (e *env) log() *zap.Logger { return e.zl }

// listen starts a listener on 127.0.0.1:0 serving h.
func (e *env) listen(name string, h network.Handler) *network.Listener {
	e.t.Helper()
	cfg := network.ListenerConfig{
		Name:     name,
		Network:  "tcp",
		Address:  "127.0.0.1:0",
		BindPort: true,
		Handler:  h,
		Metrics:  e.m,
		Log:      e.log(),

		SendTimeout: e.sendTimeout,
	}
	if rh, ok := h.(network.RawHandler); ok && e.loops != nil {
		cfg.RawHandler, cfg.Loops = rh, e.loops
	}
	ln, err := network.NewListener(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.lns = append(e.lns, ln)
	e.served.Add(1)
	go func() {
		defer e.served.Done()
		if err := ln.Serve(e.ctx); err != nil {
			e.t.Errorf("serve %s: %v", name, err)
		}
	}()
	return ln
}

// stop stops accepting and drains: open sessions get grace, then are closed.
func (e *env) stop(grace time.Duration) {
	if e.stopped {
		return
	}
	e.stopped = true
	e.cancel()
	e.served.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for _, ln := range e.lns {
		ln.Drain(ctx)
	}
	if e.loops != nil {
		e.loops.Close()
		if len(e.lns) > 0 && !e.logged(zapcore.InfoLevel, "listener serving on event loops") {
			e.t.Error("loop mode, but no listener served on event loops")
		}
	}
}

// loopMode holds the tests (*testing.T) whose env serves on event loops.
var loopMode sync.Map

// modes runs a listener-level test twice: with a goroutine per connection (ServeConn)
// and on an event loop (ServeRaw), where the platform has them.
func modes(t *testing.T, test func(t *testing.T)) {
	t.Run("goroutines", test)
	t.Run("loops", func(t *testing.T) {
		if !evloop.Supported {
			t.Skip("no event loops on this platform")
		}
		loopMode.Store(t, true)
		defer loopMode.Delete(t)
		// A small budget makes bulk tests take the loop's resume path (a direction that used
		// its turn continues after the batch) many times. Restored by the first cleanup
		// registered, which runs last: after the env closed its loops.
		old := tcpproxy.SetPumpBudget(64 << 10)
		t.Cleanup(func() { tcpproxy.SetPumpBudget(old) })
		test(t)
	})
}

type lazyHandler struct {
	h atomic.Pointer[tcpproxy.Filter]
}

func (l *lazyHandler) set(f *tcpproxy.Filter) { l.h.Store(f) }
func (l *lazyHandler) ServeConn(ctx context.Context, c *network.Conn) {
	l.h.Load().ServeConn(ctx, c)
}
func (l *lazyHandler) ServeRaw(a network.Accepted) bool { return l.h.Load().ServeRaw(a) }

func simpleCluster(name, lbType string, addrs ...string) config.Cluster {
	c := config.Cluster{Name: name, LBType: lbType, ConnectTimeout: dur(2 * time.Second)}
	for _, a := range addrs {
		c.Hosts = append(c.Hosts, config.Host{Address: a})
	}
	return c
}

func dial(t testing.TB, ln *network.Listener) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func (e *env) bytes(listener, cluster, dir string) float64 {
	return value(e.m.TCPProxyBytes.WithLabelValues(listener, cluster, dir))
}

func (e *env) sessions(listener, cluster string) float64 {
	return value(e.m.TCPProxySessions.WithLabelValues(listener, cluster))
}

func (e *env) closes(listener, reason string) float64 {
	return value(e.m.ConnCloses.WithLabelValues(listener, reason))
}

// waitCloses waits until the listener counted n closes with reason (the count is bumped
// just after the connection leaves ActiveConns), then checks it stays at n.
func (e *env) waitCloses(listener, reason string, n float64) {
	e.t.Helper()
	testutil.Eventually(e.t, testTimeout, "closes{reason="+reason+"} to reach "+strconv.Itoa(int(n)), func() bool {
		return e.closes(listener, reason) >= n
	})
	if got := e.closes(listener, reason); got != n {
		e.t.Errorf("closes{reason=%s} = %v, want %v", reason, got, n)
	}
}

// idle waits until ln has no open connection (every session ended).
func idle(t testing.TB, ln *network.Listener) {
	t.Helper()
	testutil.Eventually(t, testTimeout, "sessions to end", func() bool { return ln.ActiveConns() == 0 })
}

// logged reports whether a log line with this message was written at level or above.
func (e *env) logged(level zapcore.Level, msg string) bool {
	for _, en := range e.logs.All() {
		if en.Message == msg && en.Level >= level {
			return true
		}
	}
	return false
}

// readAll reads c until EOF or an error and returns what it read and the final error (nil
// for EOF).
func readAll(c net.Conn) ([]byte, error) {
	b, err := io.ReadAll(c)
	return b, err
}

func itoa(n int) string { return strconv.Itoa(n) }

// errVoid marks an attempt whose premise the machine broke (say, a 100ms sleep in a test
// peer took longer than the idle timeout under load): its outcome says nothing about the
// proxy.
var errVoid = errors.New("premise broken by scheduling")

func voidf(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errVoid}, a...)...)
}

// retry runs a timing-sensitive scenario up to n times. A void attempt is retried, and a
// test whose every attempt was void is skipped; a real failure fails the test at once,
// unless anyFailure is set (for outcomes a loaded machine can spoil without a detectable
// void), in which case only n failures in a row fail it.
func retry(t *testing.T, n int, anyFailure bool, scenario func() error) {
	t.Helper()
	var last error
	for i := range n {
		err := scenario()
		if err == nil {
			return
		}
		last = err
		if !errors.Is(err, errVoid) && !anyFailure {
			t.Fatal(err)
		}
		t.Logf("attempt %d: %v", i+1, err)
	}
	if errors.Is(last, errVoid) {
		t.Skipf("every attempt void: %v", last)
	}
	t.Fatal(last)
}

// stamps records when a test peer sent something.
type stamps struct {
	mu sync.Mutex
	ts []time.Time
}

func (s *stamps) now() {
	s.mu.Lock()
	s.ts = append(s.ts, time.Now())
	s.mu.Unlock()
}

// maxGap is the longest time between two consecutive stamps.
func (s *stamps) maxGap() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var g time.Duration
	for i := 1; i < len(s.ts); i++ {
		g = max(g, s.ts[i].Sub(s.ts[i-1]))
	}
	return g
}

package udpproxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
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
	"github.com/mosnlite/mosnlite/pkg/filter/network/udpproxy"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testTimeout = 15 * time.Second

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

// errVoid marks an attempt whose premise the machine broke (a 100ms sleep in a test peer
// took longer than the idle timeout under load): its outcome says nothing about the proxy.
var errVoid = errors.New("premise broken by scheduling")

func voidf(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errVoid}, a...)...)
}

// retry runs a timing-sensitive scenario up to n times: a void attempt is retried, a test
// whose every attempt was void is skipped, and a real failure fails the test.
func retry(t *testing.T, n int, scenario func() error) {
	t.Helper()
	var last error
	for i := range n {
		if last = scenario(); last == nil {
			return
		}
		if !errors.Is(last, errVoid) {
			t.Fatal(last)
		}
		t.Logf("attempt %d: %v", i+1, last)
	}
	t.Skipf("every attempt void: %v", last)
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

func dur(d time.Duration) *config.Duration { v := config.Duration(d); return &v }

// udpServer is an upstream on 127.0.0.1:0 that calls handle for each datagram and records
// the source addresses it saw.
type udpServer struct {
	pc      net.PacketConn
	mu      sync.Mutex
	sources map[string]int
	done    chan struct{}
}

func startUDPServer(t *testing.T, addr string, handle func(pc net.PacketConn, b []byte, from net.Addr)) *udpServer {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &udpServer{pc: pc, sources: map[string]int{}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.sources[from.String()]++
			s.mu.Unlock()
			handle(pc, buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-s.done
	})
	return s
}

// echo answers each datagram with "echo:" and the datagram.
func echo(pc net.PacketConn, b []byte, from net.Addr) {
	pc.WriteTo(append([]byte("echo:"), b...), from)
}

func (s *udpServer) addr() string { return s.pc.LocalAddr().String() }

func (s *udpServer) distinctSources() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sources)
}

// uenv is a udp_proxy behind a real udp listener with a real cluster manager.
type uenv struct {
	t        testing.TB
	m        *metrics.Set
	clusters *cluster.Manager
	logs     *observer.ObservedLogs
	ln       *network.Listener
	cancel   context.CancelFunc
	served   chan error
	stopped  bool
}

func newEnv(t testing.TB, raw string, clusters ...config.Cluster) *uenv {
	t.Helper()
	return newEnvWith(t, raw, nil, clusters...)
}

// newEnvWith is newEnv with setup run on the filter before it serves.
func newEnvWith(t testing.TB, raw string, setup func(*udpproxy.Filter), clusters ...config.Cluster) *uenv {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	zl := zap.New(core)
	e := &uenv{t: t, m: metrics.New(), logs: logs, served: make(chan error, 1)}
	e.clusters = cluster.NewManager(cluster.Options{Metrics: e.m, Log: zl})
	if err := e.clusters.Apply(clusters); err != nil {
		t.Fatal(err)
	}
	nf, err := udpproxy.Factory(config.RawMessage(raw), filter.Deps{
		Clusters: e.clusters, Pool: buffer.NewPool(), Metrics: e.m, Log: zl,
		Listener: &config.Listener{Name: "u"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(nf.(*udpproxy.Filter))
	}
	e.ln, err = network.NewListener(network.ListenerConfig{
		Name: "u", Network: "udp", Address: "127.0.0.1:0", BindPort: true,
		PacketHandler: nf.(network.PacketHandler), Metrics: e.m, Log: zl,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.served <- e.ln.Serve(ctx) }()
	t.Cleanup(func() { e.stop() })
	return e
}

// stop cancels the listener and waits for ServePackets to return.
func (e *uenv) stop() {
	if e.stopped {
		return
	}
	e.stopped = true
	e.cancel()
	select {
	case err := <-e.served:
		if err != nil {
			e.t.Errorf("serve: %v", err)
		}
	case <-time.After(testTimeout):
		e.t.Fatal("ServePackets did not return")
	}
}

func (e *uenv) client() *net.UDPConn {
	e.t.Helper()
	c, err := net.DialUDP("udp", nil, e.ln.Addr().(*net.UDPAddr))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func (e *uenv) counter(v *prometheus.CounterVec, labels ...string) float64 {
	return value(v.WithLabelValues(append([]string{"u", "c1"}, labels...)...))
}

func (e *uenv) active() float64 { return value(e.m.UDPProxyActive.WithLabelValues("u", "c1")) }

func (e *uenv) sessions() float64 { return e.counter(e.m.UDPProxySessions) }

func (e *uenv) dropped(reason string) float64 { return e.counter(e.m.UDPProxyDropped, reason) }

// exchange sends b and returns the next datagram the client receives.
func exchange(t *testing.T, c *net.UDPConn, b []byte) []byte {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	return recv(t, c)
}

func recv(t *testing.T, c *net.UDPConn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(testTimeout))
	buf := make([]byte, 70<<10)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func cluster1(addr string) config.Cluster {
	return config.Cluster{Name: "c1", Hosts: []config.Host{{Address: addr}}}
}

func TestDatagramsBothWays(t *testing.T) {
	up := startUDPServer(t, "", echo)
	e := newEnv(t, `{"cluster":"c1"}`, cluster1(up.addr()))
	c := e.client()
	big := bytes.Repeat([]byte("x"), 65000)
	sent := 0
	for _, d := range [][]byte{[]byte("one"), {}, big, []byte("three")} {
		got := exchange(t, c, d)
		if want := append([]byte("echo:"), d...); !bytes.Equal(got, want) {
			t.Fatalf("sent %d bytes, got %d bytes back", len(d), len(got))
		}
		sent += len(d)
	}
	// tx is counted just after the reply is sent.
	testutil.Eventually(t, testTimeout, "4 datagrams counted", func() bool { return e.counter(e.m.UDPProxyDatagrams, "tx") >= 4 })
	if rx, tx := e.counter(e.m.UDPProxyDatagrams, "rx"), e.counter(e.m.UDPProxyDatagrams, "tx"); rx != 4 || tx != 4 {
		t.Errorf("datagrams rx=%v tx=%v, want 4 each", rx, tx)
	}
	if rx, tx := e.counter(e.m.UDPProxyBytes, "rx"), e.counter(e.m.UDPProxyBytes, "tx"); rx != float64(sent) || tx != float64(sent+4*5) {
		t.Errorf("bytes rx=%v tx=%v, want %d and %d", rx, tx, sent, sent+20)
	}
	if n := e.sessions(); n != 1 {
		t.Errorf("sessions = %v, want 1", n)
	}
}

// TestSessionPerClient: two clients get two sessions (two upstream sockets), and each
// gets its own replies.
func TestSessionPerClient(t *testing.T) {
	up := startUDPServer(t, "", echo)
	e := newEnv(t, `{"cluster":"c1"}`, cluster1(up.addr()))
	a, b := e.client(), e.client()
	for range 3 {
		if got := string(exchange(t, a, []byte("a"))); got != "echo:a" {
			t.Fatalf("client a got %q", got)
		}
		if got := string(exchange(t, b, []byte("b"))); got != "echo:b" {
			t.Fatalf("client b got %q", got)
		}
	}
	if n := up.distinctSources(); n != 2 {
		t.Errorf("upstream saw %d source addresses, want 2", n)
	}
	if s, act := e.sessions(), e.active(); s != 2 || act != 2 {
		t.Errorf("sessions=%v active=%v, want 2 and 2", s, act)
	}
}

// TestIdleExpiryThenNewSession: a quiet session ends after idle_timeout; the client's next
// datagram starts a new one on a new upstream socket.
func TestIdleExpiryThenNewSession(t *testing.T) {
	up := startUDPServer(t, "", echo)
	e := newEnv(t, `{"cluster":"c1","idle_timeout":"200ms"}`, cluster1(up.addr()))
	c := e.client()
	start := time.Now() // before the session's last activity
	exchange(t, c, []byte("1"))
	testutil.Eventually(t, testTimeout, "the session to expire", func() bool { return e.active() == 0 })
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("expired after %v, before the 200ms idle timeout", el)
	}
	if got := string(exchange(t, c, []byte("2"))); got != "echo:2" {
		t.Fatalf("after expiry got %q", got)
	}
	if s := e.sessions(); s != 2 {
		t.Errorf("sessions = %v, want 2", s)
	}
	if n := up.distinctSources(); n != 2 {
		t.Errorf("upstream saw %d source addresses, want 2 (a new socket per session)", n)
	}
}

// TestUpstreamTrafficKeepsSession: a session whose client is silent stays while the
// upstream keeps sending: a datagram every 100ms for 1s with idle_timeout 300ms.
func TestUpstreamTrafficKeepsSession(t *testing.T) {
	const idleTimeout = 300 * time.Millisecond
	retry(t, 5, func() error {
		var (
			once sync.Once
			wg   sync.WaitGroup
			sent stamps
		)
		t.Cleanup(wg.Wait)
		up := startUDPServer(t, "", func(pc net.PacketConn, b []byte, from net.Addr) {
			sent.now()
			once.Do(func() {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 10 {
						if _, err := pc.WriteTo([]byte("tick"), from); err != nil {
							return
						}
						sent.now()
						time.Sleep(100 * time.Millisecond)
					}
				}()
			})
		})
		e := newEnv(t, `{"cluster":"c1","idle_timeout":"300ms"}`, cluster1(up.addr()))
		c := e.client()
		c.Write([]byte("subscribe"))
		var err error
		for i := range 10 {
			c.SetReadDeadline(time.Now().Add(testTimeout))
			buf := make([]byte, 16)
			var n int
			if n, err = c.Read(buf); err != nil || string(buf[:n]) != "tick" {
				err = fmt.Errorf("datagram %d: %q, %v", i, buf[:n], err)
				break
			}
		}
		if err == nil && (e.active() != 1 || e.sessions() != 1) {
			err = fmt.Errorf("sessions=%v active=%v, want one session throughout", e.sessions(), e.active())
		}
		if err != nil {
			if g := sent.maxGap(); g >= idleTimeout {
				return voidf("the test's own traffic paused %v", g)
			}
			return fmt.Errorf("session ended while the upstream sent (largest gap %v): %w", sent.maxGap(), err)
		}
		testutil.Eventually(t, testTimeout, "the session to expire once quiet", func() bool { return e.active() == 0 })
		return nil
	})
}

// TestMaxSessions: a new client beyond max_sessions is dropped and counted; existing
// clients are served; the new client gets a session once one ends.
func TestMaxSessions(t *testing.T) {
	retry(t, 3, func() error {
		up := startUDPServer(t, "", echo)
		e := newEnv(t, `{"cluster":"c1","max_sessions":1,"idle_timeout":"500ms"}`, cluster1(up.addr()))
		a, b := e.client(), e.client()
		exchange(t, a, []byte("a"))
		b.Write([]byte("b1"))
		b.Write([]byte("b2"))
		deadline := time.Now().Add(testTimeout)
		for e.dropped("max_sessions") < 2 {
			if e.sessions() > 1 {
				return voidf("a's session expired before b's datagrams were read (loaded machine)")
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("dropped{max_sessions} = %v, want 2", e.dropped("max_sessions"))
			}
			time.Sleep(2 * time.Millisecond)
		}
		if up.distinctSources() != 1 {
			return errors.New("a dropped datagram reached the upstream")
		}
		testutil.Eventually(t, testTimeout, "a's session to expire", func() bool { return e.active() == 0 })
		if got := string(exchange(t, b, []byte("b3"))); got != "echo:b3" {
			return fmt.Errorf("after a slot freed, got %q", got)
		}
		return nil
	})
}

// TestUpstreamRefused: ICMP port unreachable from the upstream neither ends the session
// nor the read loop; once something listens there, datagrams flow.
func TestUpstreamRefused(t *testing.T) {
	probe, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.LocalAddr().String()
	probe.Close()
	e := newEnv(t, `{"cluster":"c1"}`, cluster1(addr))
	c := e.client()
	for i := range 3 {
		c.Write([]byte("lost"))
		want := float64(i + 1)
		testutil.Eventually(t, testTimeout, "the datagram to be sent or counted as dropped", func() bool {
			return e.counter(e.m.UDPProxyDatagrams, "rx")+e.dropped("upstream_write") == want
		})
	}
	if s, act := e.sessions(), e.active(); s != 1 || act != 1 {
		t.Fatalf("sessions=%v active=%v after refusals, want one live session", s, act)
	}
	startUDPServer(t, addr, echo)
	var got []byte
	testutil.Eventually(t, testTimeout, "a reply once the upstream listens", func() bool {
		c.Write([]byte("x"))
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		got = buf[:n]
		return err == nil
	})
	if string(got) != "echo:x" {
		t.Fatalf("got %q", got)
	}
	if n := e.sessions(); n != 1 {
		t.Errorf("sessions = %v, want the same session throughout", n)
	}
}

// TestCancelEndsEverything: cancelling the listener returns ServePackets promptly, ends
// every session (their done funcs run) and leaves no goroutine (goleak checks at exit).
func TestCancelEndsEverything(t *testing.T) {
	up := startUDPServer(t, "", echo)
	e := newEnv(t, `{"cluster":"c1"}`, cluster1(up.addr())) // idle: 60s
	for range 5 {
		exchange(t, e.client(), []byte("hi"))
	}
	if act := e.active(); act != 5 {
		t.Fatalf("active = %v, want 5", act)
	}
	e.stop() // fails the test if ServePackets does not return promptly
	if act := e.active(); act != 0 {
		t.Errorf("active = %v after cancel", act)
	}
	cl, _ := e.clusters.Get("c1")
	for _, h := range cl.Hosts() {
		if n := h.Stats().Active(); n != 0 {
			t.Errorf("host %s: %d picks not done", h.Addr(), n)
		}
	}
}

// TestNoHealthyHost: with no healthy host the datagram is dropped and counted at once —
// the read loop does not wait the cluster's pick_timeout, which would stall every client —
// and service resumes when the host comes back.
func TestNoHealthyHost(t *testing.T) {
	up := startUDPServer(t, "", echo)
	cfg := cluster1(up.addr())
	cfg.PickTimeout = dur(time.Minute)
	e := newEnv(t, `{"cluster":"c1"}`, cfg)
	cl, _ := e.clusters.Get("c1")
	cl.SetHostHealth(up.addr(), false)
	c := e.client()
	c.Write([]byte("x"))
	// Well before the minute the pick could wait.
	testutil.Eventually(t, testTimeout, "the drop to be counted", func() bool { return e.dropped("no_healthy_upstream") == 1 })
	if !logged(e, "udp_proxy: no healthy upstream") {
		t.Error("not logged")
	}
	cl.SetHostHealth(up.addr(), true)
	if got := string(exchange(t, c, []byte("y"))); got != "echo:y" {
		t.Fatalf("got %q", got)
	}
}

func TestUnknownClusterDrops(t *testing.T) {
	e := newEnv(t, `{"cluster":"c1"}`) // no clusters at all
	e.client().Write([]byte("x"))
	testutil.Eventually(t, testTimeout, "the drop to be counted", func() bool { return e.dropped("no_healthy_upstream") == 1 })
	if !logged(e, "udp_proxy: cluster not found") {
		t.Error("not logged")
	}
}

func logged(e *uenv, msg string) bool {
	for _, en := range e.logs.All() {
		if en.Message == msg && en.Level >= zapcore.WarnLevel {
			return true
		}
	}
	return false
}

func TestFactoryErrors(t *testing.T) {
	m := cluster.NewManager(cluster.Options{})
	for _, tc := range []struct {
		raw  string
		deps filter.Deps
		want string
	}{
		{`{}`, filter.Deps{Clusters: m}, "cluster: empty"},
		{`{"cluster":"c"}`, filter.Deps{}, "no cluster manager"},
		{`{"cluster":"c","idle_timeout":"x"}`, filter.Deps{Clusters: m}, "udp_proxy"},
	} {
		_, err := udpproxy.Factory(config.RawMessage(tc.raw), tc.deps)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want one naming %q", tc.raw, err, tc.want)
		}
	}
	if _, err := udpproxy.Factory(nil, filter.Deps{Clusters: m}); err == nil {
		t.Error("empty config accepted")
	}
}

// TestSessionLeavesUnhealthyHost: a client whose session's host is marked down moves to
// a healthy host at its next datagram; while no host is healthy it keeps the session it
// has rather than losing its datagrams.
func TestSessionLeavesUnhealthyHost(t *testing.T) {
	tag := func(name string) func(pc net.PacketConn, b []byte, from net.Addr) {
		return func(pc net.PacketConn, b []byte, from net.Addr) { pc.WriteTo(append([]byte(name+":"), b...), from) }
	}
	a, b := startUDPServer(t, "", tag("a")), startUDPServer(t, "", tag("b"))
	e := newEnv(t, `{"cluster":"c1"}`, config.Cluster{Name: "c1", LBType: "LB_ROUNDROBIN",
		Hosts: []config.Host{{Address: a.addr()}, {Address: b.addr()}}})
	cl, _ := e.clusters.Get("c1")
	c := e.client()
	first := string(exchange(t, c, []byte("1")))
	on, other := a, b
	if first == "b:1" {
		on, other = b, a
	} else if first != "a:1" {
		t.Fatalf("got %q", first)
	}
	// Every host down: the session stays, and so do its replies.
	cl.SetHostHealth(other.addr(), false)
	cl.SetHostHealth(on.addr(), false)
	if got := string(exchange(t, c, []byte("2"))); got != first[:2]+"2" {
		t.Fatalf("with no healthy host: got %q, want the same host's answer", got)
	}
	// The other host is back: the client moves there.
	cl.SetHostHealth(other.addr(), true)
	want := "a:3"
	if on == a {
		want = "b:3"
	}
	if got := string(exchange(t, c, []byte("3"))); got != want {
		t.Fatalf("after its host went down: got %q, want %q", got, want)
	}
	testutil.Eventually(t, testTimeout, "the old session to end", func() bool { return e.active() == 1 })
	if s := e.sessions(); s != 2 {
		t.Fatalf("sessions = %v, want 2 (the old one ended, one new)", s)
	}
	if d := e.dropped("no_healthy_upstream"); d != 0 {
		t.Errorf("%v datagrams counted as dropped; none was", d)
	}
}

// BenchmarkRoundTrip: one client on a warm session sends a datagram and waits for its
// echo. The upstream and the client do not allocate, so allocs/op are the proxy's.
func BenchmarkRoundTrip(b *testing.B) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	b.Cleanup(func() { pc.Close(); <-done })
	e := newEnv(b, `{"cluster":"c1"}`, cluster1(pc.LocalAddr().String()))
	c, err := net.DialUDP("udp", nil, e.ln.Addr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg, buf := make([]byte, 64), make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(testTimeout))
	c.Write(msg) // starts the session
	if _, err := c.Read(buf); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReceiveBufferDropsCounted: an upstream answers one datagram with a burst of large
// replies, faster than the session's reader can hand them on, so the kernel drops some at
// the session socket's full receive buffer. Every reply is accounted for: forwarded (tx)
// or counted as dropped with reason session_receive_buffer when the session closes. The
// listener's socket drops nothing here, and its counter says so.
func TestReceiveBufferDropsCounted(t *testing.T) {
	const burst, size = 400, 60000
	reply := bytes.Repeat([]byte("r"), size)
	up := startUDPServer(t, "", func(pc net.PacketConn, _ []byte, from net.Addr) {
		for range burst {
			pc.WriteTo(reply, from)
		}
	})
	e := newEnv(t, `{"cluster":"c1"}`, cluster1(up.addr()))
	c := e.client()
	if _, err := c.Write([]byte("go")); err != nil {
		t.Fatal(err)
	}
	tx := func() float64 { return e.counter(e.m.UDPProxyDatagrams, "tx") }
	// The burst is over once tx has not moved for a while.
	last, still := -1.0, time.Now()
	testutil.Eventually(t, testTimeout, "the replies forwarded", func() bool {
		if n := tx(); n != last {
			last, still = n, time.Now()
		}
		return last > 0 && time.Since(still) > 300*time.Millisecond
	})
	e.stop() // closes the session: its drops are counted then
	dropped := e.dropped("session_receive_buffer")
	t.Logf("burst of %d: %v forwarded, %v dropped at the session socket", burst, tx(), dropped)
	if dropped == 0 {
		t.Fatalf("no drops counted; the burst of %d × %d bytes should overflow a session socket", burst, size)
	}
	if got := tx() + dropped; got != burst {
		t.Fatalf("forwarded %v + dropped %v = %v; want all %d replies accounted for", tx(), dropped, got, burst)
	}
	if d := e.dropped("listener_receive_buffer"); d != 0 {
		t.Fatalf("listener_receive_buffer = %v; want 0 (one datagram came in)", d)
	}
}

package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/network/tlstest"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/test/framework"
)

// Bolt/dubbo upstream connections that take no requests: the two ways such requests fail
// are counted apart (refused at once: upstream_write_stalled; waited for room up to their
// deadline: upstream_write_timeout), and upstreams behind TLS, whose connections are
// written through crypto/tls rather than raw non-blocking writes, are covered like plain
// ones: a stopped TLS upstream holds up no other cluster and its requests fail in time; a
// TLS upstream that reads slowly is not taken for a stopped one.

// rpcFailures sums p's rpc_failures_total by cause.
func rpcFailures(t *testing.T, p *framework.Proxy) map[string]float64 {
	t.Helper()
	admin, err := p.AdminAddr()
	if err != nil {
		t.Fatal(err)
	}
	w := memWatch{t: t, p: p, admin: admin}
	out := map[string]float64{}
	for k, v := range w.scrape() {
		if !strings.HasPrefix(k, "mosnlite_rpc_failures_total{") {
			continue
		}
		_, c, ok := strings.Cut(k, `cause="`)
		if !ok {
			continue
		}
		c, _, _ = strings.Cut(c, `"`)
		out[c] += v
	}
	return out
}

// checkStallCauses: requests refused busy are counted as upstream_write_stalled, those
// answered with the timeout status as upstream_write_timeout (they waited for room) or
// timeout (forwarded, then expired); both stall causes occurred.
func checkStallCauses(t *testing.T, p *framework.Proxy, busy, timeouts int64) {
	t.Helper()
	var m map[string]float64
	match := func() bool {
		m = rpcFailures(t, p)
		return m["upstream_write_stalled"] == float64(busy) &&
			m["upstream_write_timeout"]+m["timeout"] == float64(timeouts)
	}
	for end := time.Now().Add(3 * time.Second); !match() && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("clients saw %d busy, %d timeouts; rpc_failures_total: upstream_write_stalled %v, upstream_write_timeout %v, timeout %v",
		busy, timeouts, m["upstream_write_stalled"], m["upstream_write_timeout"], m["timeout"])
	if !match() {
		t.Errorf("rpc_failures_total: upstream_write_stalled %v (want the %d busy answers), upstream_write_timeout %v + timeout %v (want the %d timeout answers)",
			m["upstream_write_stalled"], busy, m["upstream_write_timeout"], m["timeout"], timeouts)
	}
	if m["upstream_write_stalled"] == 0 || m["upstream_write_timeout"] == 0 {
		t.Errorf("upstream_write_stalled %v, upstream_write_timeout %v: want both counted (a wait for room that timed out, then refusals)",
			m["upstream_write_stalled"], m["upstream_write_timeout"])
	}
}

// stuckFillers is clients × per requests of 1 MiB for svc with their own timeout.
func stuckFillers(t *testing.T, kit faultKit, svc string, clients, per int, own time.Duration) [][]stallReq {
	all := make([][]stallReq, clients)
	for cl := range clients {
		for i := range per {
			all[cl] = append(all[cl], stallReq{id: kit.downID(i), tag: fmt.Sprintf("s%02d-%04d", cl, i),
				raw: kit.bulk(t, kit.downID(i), svc, 1<<20, own)})
		}
	}
	return all
}

// TestRPCStallCauses: an upstream that reads nothing gets 48 MiB of requests with a 1 s
// timeout of their own, three times its connection's queue. Each is answered with busy or
// the timeout status, and the metric tells the refusals (upstream_write_stalled) from the
// requests that waited for room (upstream_write_timeout).
func TestRPCStallCauses(t *testing.T) {
	for _, kit := range []faultKit{boltKit, dubboKit} {
		t.Run(kit.name, func(t *testing.T) {
			t.Parallel()
			stuck, release := stuckUpstream(t)
			p, addr := faultProxy(t, kit, "30s", map[string][]string{"stuck": {stuck.Addr()}}, nil)
			t.Cleanup(func() { close(release) })
			var fill stallTally
			fill.sendAll(t, kit, addr, stuckFillers(t, kit, "stuck", 6, 8, time.Second), 8*time.Second, false).Wait()
			fill.report(t)
			if fill.ok.Load() != 0 {
				t.Errorf("%d requests answered ok by an upstream that reads nothing", fill.ok.Load())
			}
			checkStallCauses(t, p, fill.busy.Load(), fill.timeout.Load())
		})
	}
}

// stallTLSConfig is a server config with a leaf of ca for 127.0.0.1.
func stallTLSConfig(t *testing.T, ca *tlstest.CA) *tls.Config {
	leaf := ca.Leaf(t, "127.0.0.1")
	cert, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.KeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

// upstreamTLS sets the cluster's tls_context to verify ca's certificates.
func upstreamTLS(ca *tlstest.CA) func(string, map[string]any) {
	return func(_ string, c map[string]any) {
		c["tls_context"] = map[string]any{"status": true, "ca_cert": ca.PEM}
	}
}

// TestRPCStallTLS: bolt and dubbo clusters whose upstreams are TLS.
//   - Stopped: the upstream completes the handshake, then reads nothing. Fillers send
//     48 MiB with a 1 s timeout; meanwhile a client sends, in one write, a request to the
//     stopped upstream and one to a healthy cluster, ten times. The healthy cluster's
//     answers arrive within 3 s each, every request to the stopped one gets busy or the
//     timeout status (some busy: the connection is marked stalled), counted by cause.
//   - SlowReader: the upstream reads 64 KiB every 20-100 ms, about 1 MiB/s (stallUp
//     behind a TLS front), while clients send 24 MiB with a 1 s timeout: requests may
//     time out waiting for room, but none may be refused busy, since the upstream never
//     stops reading. The proxy's TLS writes must count what they wrote part by part, and
//     see what the socket under TLS still holds (Conn.Acked): its kernel reports room
//     only once a third of a send buffer of up to 4 MiB is free.
func TestRPCStallTLS(t *testing.T) {
	for _, kit := range []faultKit{boltKit, dubboKit} {
		t.Run(kit.name+"/Stopped", func(t *testing.T) {
			t.Parallel()
			testStallTLSStopped(t, kit)
		})
		t.Run(kit.name+"/SlowReader", func(t *testing.T) {
			t.Parallel()
			testStallTLSSlowReader(t, kit)
		})
	}
}

func testStallTLSStopped(t *testing.T, kit faultKit) {
	ca := tlstest.NewCA(t)
	srv := stallTLSConfig(t, ca)
	release := make(chan struct{})
	var handshakes atomic.Int32
	stuck := framework.StartTCP(t, func(c *net.TCPConn) {
		_ = c.SetReadBuffer(4096)
		tc := tls.Server(c, srv)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		if tc.Handshake() != nil {
			return
		}
		handshakes.Add(1)
		<-release
	})
	echo := startFaultServer(t, kit)
	echo.onReq = func(fc *faultConn, f *xprotocol.Frame) bool { fc.write(kit.echo(f)); return true }
	p, addr := faultProxy(t, kit, "30s", map[string][]string{"stuck": {stuck.Addr()}, "echo": {echo.Addr()}},
		func(name string, c map[string]any) {
			if name == "stuck" {
				upstreamTLS(ca)(name, c)
			}
		})
	t.Cleanup(func() { close(release) })

	var fill stallTally
	wg := fill.sendAll(t, kit, addr, stuckFillers(t, kit, "stuck", 6, 8, time.Second), 8*time.Second, false)
	c := dialFault(t, kit, addr)
	var slowest time.Duration
	for i := range 10 {
		toStuck, toEcho := kit.downID(100+2*i), kit.downID(101+2*i)
		both := append(kit.bulk(t, toStuck, "stuck", 128<<10, time.Second), kit.bulk(t, toEcho, "echo", 8, time.Second)...)
		start := time.Now()
		_ = c.c.SetWriteDeadline(start.Add(3 * time.Second))
		if _, err := c.c.Write(both); err != nil {
			t.Fatalf("round %d: the proxy did not take 128 KiB: %v", i, err)
		}
		for got := 0; got < 2; got++ {
			f, err := c.next(time.Until(start.Add(3 * time.Second)))
			if err != nil {
				t.Fatalf("round %d: %d of 2 answers within 3 s (a request to a healthy cluster sent behind one to a stopped TLS upstream): %v", i, got, err)
			}
			switch {
			case f.ID == toEcho && f.Status == kit.ok:
				slowest = max(slowest, time.Since(start))
			case f.ID == toStuck && f.Status == kit.busy:
				fill.busy.Add(1)
			case f.ID == toStuck && f.Status == kit.timeout:
				fill.timeout.Add(1)
			default:
				t.Fatalf("round %d: answer id %#x status %d; want ok to %#x, busy or timeout to %#x", i, f.ID, f.Status, toEcho, toStuck)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	wg.Wait()
	fill.report(t)
	t.Logf("stopped TLS upstream: busy %d, timeout %d, ok %d; slowest answer from the healthy cluster %v; %d handshakes",
		fill.busy.Load(), fill.timeout.Load(), fill.ok.Load(), slowest.Round(time.Millisecond), handshakes.Load())
	if handshakes.Load() == 0 {
		t.Fatal("no TLS handshake with the upstream: the case tests nothing")
	}
	if fill.ok.Load() != 0 || fill.busy.Load() == 0 {
		t.Errorf("requests to a stopped TLS upstream: %d ok, %d busy; want none ok and some busy (the connection marked stalled)",
			fill.ok.Load(), fill.busy.Load())
	}
	checkStallCauses(t, p, fill.busy.Load(), fill.timeout.Load())
}

// tlsFront terminates TLS for backend: each connection's bytes are copied both ways over
// a plain connection to it, so a backend that reads slowly slows the TLS connection's reads.
func tlsFront(t *testing.T, cfg *tls.Config, backend string, handshakes *atomic.Int32) *framework.TCPServer {
	return framework.StartTCP(t, func(c *net.TCPConn) {
		_ = c.SetReadBuffer(64 << 10)
		tc := tls.Server(c, cfg)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		if tc.Handshake() != nil {
			return
		}
		_ = tc.SetDeadline(time.Now().Add(time.Minute))
		handshakes.Add(1)
		b, err := net.DialTimeout("tcp", backend, 5*time.Second)
		if err != nil {
			return
		}
		// A small send buffer: the kernel reports room only once a third of it is free,
		// and a large one would stop the copy, and the TLS reads, for seconds at a time.
		_ = b.(*net.TCPConn).SetWriteBuffer(64 << 10)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(tc, b)
			_ = c.Close()
		}()
		_, _ = io.Copy(b, tc)
		_ = b.Close()
		wg.Wait()
	})
}

func testStallTLSSlowReader(t *testing.T, kit faultKit) {
	ca := tlstest.NewCA(t)
	up := startStallUp(t, kit)
	up.mode.Store(upSlow)
	var handshakes atomic.Int32
	front := tlsFront(t, stallTLSConfig(t, ca), up.Addr(), &handshakes)
	_, addr := faultProxy(t, kit, "20s", map[string][]string{"svc": {front.Addr()}}, upstreamTLS(ca))
	t.Cleanup(func() { up.mode.Store(upFull) })
	const own = time.Second
	all := up.fillers(t, "f", 6, 4, own)
	var probes []stallReq
	for i := range 10 {
		probes = append(probes, up.makeReq(t, kit.downID(1000+i), "svc", fmt.Sprintf("q%02d-%04d", 0, i), 200, own))
	}
	var fill, pr stallTally
	wg := fill.sendAll(t, kit, addr, all, 10*time.Second, false)
	time.Sleep(300 * time.Millisecond) // the fillers fill the queue
	c := dialFault(t, kit, addr)
	read0 := up.bytes.Load()
	pr.probeAll(kit, c, probes)
	read := up.bytes.Load() - read0
	wg.Wait()
	fill.report(t)
	pr.report(t)
	for _, e := range up.problems() {
		t.Error("upstream: " + e)
	}
	t.Logf("TLS, upstream reading about 1 MiB/s: fillers ok %d, busy %d, timeout %d; probes ok %d, busy %d, timeout %d; the upstream read %d KiB during the probes; %d handshakes",
		fill.ok.Load(), fill.busy.Load(), fill.timeout.Load(), pr.ok.Load(), pr.busy.Load(), pr.timeout.Load(), read>>10, handshakes.Load())
	if handshakes.Load() == 0 {
		t.Fatal("no TLS handshake with the upstream: the case tests nothing")
	}
	if fill.timeout.Load()+pr.timeout.Load() == 0 {
		t.Errorf("no request timed out: the upstream connection's queue never filled, the case tests nothing")
	}
	if b := fill.busy.Load() + pr.busy.Load(); b != 0 && read > 0 {
		t.Errorf("%d requests refused busy (stalled mark) while the TLS upstream read %d KiB; want none", b, read>>10)
	}
}

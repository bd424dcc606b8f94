package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

func virtualListener(t testing.TB, name, addr string, m *metrics.Set, h Handler) *Listener {
	t.Helper()
	cfg := testConfig(t, name, h)
	cfg.BindPort, cfg.Address, cfg.Metrics = false, addr, m
	l, err := NewListener(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestIndexLookup(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	h := echo(buffer.NewPool())
	exact := virtualListener(t, "exact", "10.0.0.1:80", m, h)
	any4 := virtualListener(t, "any4", "0.0.0.0:80", m, h)
	any6 := virtualListener(t, "any6", "[::]:443", m, h)
	v6 := virtualListener(t, "v6", "[fd00::1]:80", m, h)
	x := NewIndex()
	for _, l := range []*Listener{exact, any4, any6, v6} {
		if err := x.Add(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.Add(exact); err != nil {
		t.Errorf("re-adding the same listener: %v", err)
	}
	if err := x.Add(virtualListener(t, "dup", "10.0.0.1:80", m, h)); err == nil || !strings.Contains(err.Error(), `"exact"`) {
		t.Errorf("duplicate address: %v; want an error naming the holder", err)
	}
	for _, tc := range []struct {
		dst  string
		self *Listener
		want *Listener
	}{
		{"10.0.0.1:80", nil, exact},
		{"[::ffff:10.0.0.1]:80", nil, exact},
		{"10.0.0.2:80", nil, any4},
		{"10.0.0.1:80", exact, any4}, // excluding itself
		{"10.0.0.2:443", nil, any6},  // IPv4 falls back to [::]
		{"[fd00::2]:443", nil, any6},
		{"[fd00::1]:80", nil, v6},
		{"[fd00::2]:80", nil, nil}, // 0.0.0.0 does not take IPv6
		{"10.0.0.2:81", nil, nil},
		{"10.0.0.2:80", any4, nil},
	} {
		got, ok := x.lookup(netip.MustParseAddrPort(tc.dst), tc.self)
		if got != tc.want || ok != (tc.want != nil) {
			t.Errorf("lookup(%s) = %v, %v; want %v", tc.dst, name(got), ok, name(tc.want))
		}
	}
	x.Remove(exact)
	if got, _ := x.Lookup(netip.MustParseAddrPort("10.0.0.1:80")); got != any4 {
		t.Errorf("after Remove: %v; want any4", name(got))
	}
	var nilIndex *Index
	if _, ok := nilIndex.lookup(netip.MustParseAddrPort("10.0.0.1:80"), nil); ok {
		t.Error("nil index found a listener")
	}
	// Non-tcp listeners are not indexed.
	cfg := testConfig(t, "udp", nil)
	cfg.Network, cfg.PacketHandler = "udp", packetEcho{}
	u, err := NewListener(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if err := x.Add(u); err != nil {
		t.Errorf("Add(udp) = %v; want nil (ignored)", err)
	}
}

func name(l *Listener) string {
	if l == nil {
		return "<nil>"
	}
	return l.Name()
}

// tagHandler writes "<tag> <original dst or none>\n" and closes.
func tagHandler(tag string) Handler {
	return handlerFunc(func(_ context.Context, c *Conn) {
		od := "none"
		if ap, ok := c.OriginalDst(); ok {
			od = ap.String()
		}
		b := buffer.NewPool().NewBuffer(0)
		fmt.Fprintf(b, "%s %s %s\n", tag, od, c.ListenerName())
		c.Write(b)
		c.Close(CloseLocal)
	})
}

func readAll(t testing.TB, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// tproxyListener serves cfg as a tproxy original_dst listener until the test ends; it
// skips the test without CAP_NET_ADMIN.
func tproxyListener(t *testing.T, cfg ListenerConfig) *Listener {
	t.Helper()
	cfg.OriginalDst = "tproxy"
	l, err := NewListener(cfg)
	if errors.Is(err, syscall.EPERM) {
		t.Skipf("no CAP_NET_ADMIN for IP_TRANSPARENT: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	startServing(t, l)
	return l
}

// TestOriginalDstTProxyHandoff: with tproxy the original destination is the accepted
// socket's local address, so the hand-off path runs without NAT. The accepting listener
// is 127.0.0.1:P; a virtual listener on 0.0.0.0:P takes the connection.
func TestOriginalDstTProxyHandoff(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	x := NewIndex()
	cfg := testConfig(t, "outbound", tagHandler("direct"))
	cfg.Metrics, cfg.Index = m, x
	l := tproxyListener(t, cfg)
	port := l.Addr().(*net.TCPAddr).Port
	v := virtualListener(t, "app", fmt.Sprintf("0.0.0.0:%d", port), m, tagHandler("virtual"))
	for _, l := range []*Listener{l, v} {
		if err := x.Add(l); err != nil {
			t.Fatal(err)
		}
	}
	// v is not serving: the hand-off runs on the accepting listener's context.
	want := fmt.Sprintf("virtual 127.0.0.1:%d app", port)
	if got := readAll(t, dial(t, l.Addr())); got != want {
		t.Fatalf("got %q; want %q", got, want)
	}
	if n := value(m.DownstreamCxHandoff.WithLabelValues("app")); n != 1 {
		t.Errorf("handoff{app} = %v; want 1", n)
	}
	if n := value(m.DownstreamCxTotal.WithLabelValues("outbound")); n != 1 {
		t.Errorf("total{outbound} = %v; want 1", n)
	}
	testutil.Eventually(t, 5*time.Second, "close counted on the target", func() bool { return closes(m, "app", CloseLocal) == 1 })
	// Drain of the target waits for its handed-off conns.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v.Drain(ctx)
	if v.ActiveConns() != 0 || l.ActiveConns() != 0 {
		t.Errorf("ActiveConns: app %d outbound %d; want 0", v.ActiveConns(), l.ActiveConns())
	}
}

// TestOriginalDstRedirectWithoutNAT: no NAT entry, so the connection is served where it
// was accepted (getsockopt fails, or returns the listener's own address, which is skipped).
func TestOriginalDstRedirectWithoutNAT(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	x := NewIndex()
	cfg := testConfig(t, "redirect", tagHandler("direct"))
	cfg.Metrics, cfg.Index, cfg.OriginalDst = m, x, "redirect"
	l := serve(t, cfg)
	if err := x.Add(l); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, dial(t, l.Addr()))
	if !strings.HasPrefix(got, "direct ") || !strings.HasSuffix(got, " redirect") {
		t.Fatalf("got %q; want it served by the accepting listener", got)
	}
}

// TestOriginalDstRedirectNetns exercises SO_ORIGINAL_DST and IP6T_SO_ORIGINAL_DST for
// real: in a fresh network namespace, iptables nat OUTPUT rules REDIRECT ports 9080 and
// 9999 to 15001, and the test binary re-runs itself inside that namespace.
func TestOriginalDstRedirectNetns(t *testing.T) {
	if os.Getenv(childEnv) == "netns" {
		netnsChild(t)
		return
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install -y iproute2 iptables)", tool)
		}
	}
	ns := fmt.Sprintf("mosnlite-test-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	in := func(args ...string) error {
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := in("ip", "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"9080", "9999"} {
		if err := in("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.1",
			"--dport", port, "-j", "REDIRECT", "--to-ports", "15001"); err != nil {
			t.Skipf("iptables nat unavailable: %v", err)
		}
	}
	v6 := in("ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "::1",
		"--dport", "9080", "-j", "REDIRECT", "--to-ports", "15001") == nil
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe, "-test.run=^TestOriginalDstRedirectNetns$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=netns", fmt.Sprintf("MOSNLITE_NETNS_V6=%v", v6))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "netns child ok") {
		t.Fatalf("child in netns failed: %v\n%s", err, out)
	}
	t.Logf("child output:\n%s", out)
	if !v6 {
		t.Log("ip6tables nat unavailable: IPv6 part skipped")
	}
}

func netnsChild(t *testing.T) {
	m := metrics.New()
	x := NewIndex()
	cfg := testConfig(t, "outbound", tagHandler("direct"))
	cfg.Log = zap.NewNop()
	cfg.Metrics, cfg.Index, cfg.OriginalDst = m, x, "redirect"
	cfg.Address = "[::]:15001" // dual stack: IPv4 arrives v4-mapped (SOL_IP), IPv6 uses SOL_IPV6
	out := serve(t, cfg)
	app4 := virtualListener(t, "app4", "0.0.0.0:9080", m, tagHandler("virtual4"))
	app6 := virtualListener(t, "app6", "[::]:9080", m, tagHandler("virtual6"))
	for _, l := range []*Listener{out, app4, app6} {
		if err := x.Add(l); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		app4.Drain(ctx)
		app6.Drain(ctx)
	}()
	cases := []struct{ dial, want string }{
		{"127.0.0.1:9080", "virtual4 127.0.0.1:9080 app4"},
		{"127.0.0.1:9999", "direct 127.0.0.1:9999 outbound"}, // redirected, no listener there
	}
	if os.Getenv("MOSNLITE_NETNS_V6") == "true" {
		cases = append(cases, struct{ dial, want string }{"[::1]:9080", "virtual6 [::1]:9080 app6"})
	}
	for _, tc := range cases {
		c, err := net.DialTimeout("tcp", tc.dial, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", tc.dial, err)
		}
		got := readAll(t, c)
		c.Close()
		if got != tc.want {
			t.Fatalf("dial %s: got %q; want %q", tc.dial, got, tc.want)
		}
		t.Logf("dial %s -> %s", tc.dial, got)
	}
	// Direct connection (no NAT): served where accepted.
	c := dial(t, out.Addr())
	if got := readAll(t, c); !strings.HasPrefix(got, "direct ") {
		t.Fatalf("direct connection: %q", got)
	}
	if n := value(m.DownstreamCxHandoff.WithLabelValues("app4")); n != 1 {
		t.Fatalf("handoff{app4} = %v; want 1", n)
	}
	fmt.Println("netns child ok")
}

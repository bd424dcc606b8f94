package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/test/framework"
)

// Hostile-client tests of the udp_proxy filter with the real binary and real sockets.
// Datagrams carry "c<client>-s<seq>"; the upstream (udpTagUp) answers
// "<name>@<port>|<payload>", where port is the proxy session socket's source port, so a
// client can tell which host and which session carried its datagram.

// udpTagUp is a UDP upstream that tags each echo with its name and the sender's port.
type udpTagUp struct {
	name  string
	pc    net.PacketConn
	done  chan struct{}
	mu    sync.Mutex
	peers map[string]int  // source address → datagrams
	got   map[string]bool // payloads received
}

func startUDPTag(t testing.TB, addr, name string) *udpTagUp {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	u := &udpTagUp{name: name, pc: pc, done: make(chan struct{}), peers: map[string]int{}, got: map[string]bool{}}
	go func() {
		defer close(u.done)
		buf := make([]byte, 65536)
		for {
			n, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			u.mu.Lock()
			u.peers[a.String()]++
			if n < 64 {
				u.got[string(buf[:n])] = true
			}
			u.mu.Unlock()
			_, port, _ := net.SplitHostPort(a.String())
			out := append([]byte(u.name+"@"+port+"|"), buf[:n]...)
			pc.WriteTo(out, a)
		}
	}()
	t.Cleanup(u.close)
	return u
}

func (u *udpTagUp) Addr() string { return u.pc.LocalAddr().String() }

func (u *udpTagUp) close() { u.pc.Close(); <-u.done }

// Got reports whether the upstream received payload.
func (u *udpTagUp) Got(payload string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.got[payload]
}

func (u *udpTagUp) Peers() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.peers)
}

// udpHostileConfig is one udp_proxy listener on listen to cluster "up" (round robin over
// hosts), with an admin endpoint for leak checks.
func udpHostileConfig(t *testing.T, listen, idle string, hosts ...string) string {
	t.Helper()
	var hs []host
	for _, h := range hosts {
		hs = append(hs, host{Address: h})
	}
	cfg := map[string]any{
		"servers": []any{map[string]any{
			"default_log_path": "stderr",
			"listeners": []any{map[string]any{
				"name": "udp", "address": listen, "network": "udp",
				"filter_chains": []any{map[string]any{"filters": []any{map[string]any{
					"type": "udp_proxy", "config": map[string]any{"cluster": "up", "idle_timeout": idle},
				}}}},
			}},
		}},
		"cluster_manager": map[string]any{"clusters": []any{map[string]any{
			"name": "up", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "hosts": hs,
		}}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return framework.WithAdmin(t, string(b))
}

// readBurst reads client id's echoes until it has burst distinct ones with sequence
// numbers from first on, or a second passes without one. Echoes meant for another client
// fail the test and are counted in wrong.
func readBurst(t *testing.T, c net.Conn, id, first, burst int) (got, wrong int) {
	buf := make([]byte, 2048)
	seen := map[int]bool{}
	for len(seen) < burst {
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err != nil {
			break
		}
		_, gid, seq, ok := udpReply(string(buf[:n]))
		if !ok || gid != id {
			wrong++
			t.Errorf("client %d got %q", id, buf[:n])
			continue
		}
		if seq >= first {
			seen[seq] = true
		}
	}
	return len(seen), wrong
}

// udpReply splits "<name>@<port>|c<id>-s<seq>".
func udpReply(s string) (tag string, id, seq int, ok bool) {
	tag, payload, ok := strings.Cut(s, "|")
	if !ok {
		return "", 0, 0, false
	}
	if _, err := fmt.Sscanf(payload, "c%d-s%d", &id, &seq); err != nil {
		return "", 0, 0, false
	}
	return tag, id, seq, true
}

// errWrongClient marks a reply that belongs to another client.
var errWrongClient = errors.New("reply for another client")

// udpAsk sends "c<id>-s<seq>" up to tries times and returns the tag of its echo. Stale
// echoes of this client's earlier datagrams are skipped; an echo of another client's
// datagram fails with errWrongClient.
func udpAsk(c net.Conn, id, seq, tries int, wait time.Duration) (string, error) {
	msg := fmt.Sprintf("c%d-s%d", id, seq)
	buf := make([]byte, 2048)
	for try := 0; try < tries; try++ {
		if _, err := c.Write([]byte(msg)); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			return "", err
		}
		deadline := time.Now().Add(wait)
		for {
			c.SetReadDeadline(deadline)
			n, err := c.Read(buf)
			if err != nil {
				break // timeout (or a refused error): send again
			}
			tag, gid, gseq, ok := udpReply(string(buf[:n]))
			if !ok || gid != id {
				return "", fmt.Errorf("%w: client %d got %q", errWrongClient, id, buf[:n])
			}
			if gseq == seq {
				return tag, nil
			}
		}
	}
	return "", fmt.Errorf("client %d: no echo of %s after %d tries", id, msg, tries)
}

// udpSockets counts the socket descriptors of pid.
func udpSockets(t testing.TB, pid int) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Skipf("no %s: %v", dir, err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// udpCPU is the user+system CPU time pid has used, in clock ticks.
func udpCPU(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Skipf("no /proc/PID/stat: %v", err)
	}
	// Fields after the ")" that ends the command name: state is field 3, utime 14, stime 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// udpActive reads the udp_proxy_sessions_active gauge from the admin endpoint.
func udpActive(t *testing.T, p *framework.Proxy) int {
	t.Helper()
	admin, err := p.AdminAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, body := getBody(t, "http://"+admin+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if strings.Contains(line, "udp_proxy_sessions_active{") {
			f := strings.Fields(line)
			n, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			return int(n)
		}
	}
	t.Fatalf("/metrics has no udp_proxy_sessions_active")
	return 0
}

func dialUDPClients(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	cs := make([]net.Conn, n)
	for i := range cs {
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs[i] = c
	}
	return cs
}

// TestUDPHostileManyClients: 300 clients (300 source ports) talk at once, 15 datagrams
// each in lock step with resends. Every client gets an echo of each datagram and never
// one of another client's; each client has one session (one upstream source port).
// Then a burst round: each client sends 8 datagrams without waiting; losses are allowed
// (socket buffers overflow), replies to the wrong client are not. After idle_timeout (3s)
// the 300 sessions' sockets and goroutines are gone.
func TestUDPHostileManyClients(t *testing.T) {
	up := startUDPTag(t, "127.0.0.1:0", "a")
	addr := framework.FreeUDPPort(t)
	p := framework.StartProxy(t, udpHostileConfig(t, addr, "3s", up.Addr()))
	lc := framework.NewLeakCheck(t, p)

	const clients, rounds = 300, 15
	cs := dialUDPClients(t, addr, clients)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	tags := make([]map[string]bool, clients)
	for i, c := range cs {
		tags[i] = map[string]bool{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; seq < rounds; seq++ {
				tag, err := udpAsk(c, i, seq, 8, time.Second)
				if err != nil {
					errs <- err
					return
				}
				tags[i][tag] = true
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for i, m := range tags {
		if len(m) != 1 {
			t.Errorf("client %d was carried by %d sessions %v; want 1", i, len(m), m)
		}
	}
	if up.Peers() != clients {
		t.Errorf("upstream saw %d session sockets; want %d", up.Peers(), clients)
	}

	// Burst round.
	const burst = 8
	var got, wrong atomic.Int64
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; seq < burst; seq++ {
				c.Write([]byte(fmt.Sprintf("c%d-s%d", i, 1000+seq)))
			}
			g, w := readBurst(t, c, i, 1000, burst)
			got.Add(int64(g))
			wrong.Add(int64(w))
		}()
	}
	wg.Wait()
	t.Logf("burst: %d of %d datagrams echoed, %d to the wrong client", got.Load(), clients*burst, wrong.Load())
	if got.Load() == 0 {
		t.Errorf("burst: no datagram echoed")
	}
	for _, c := range cs {
		c.Close()
	}
	lc.Check(t)
}

// TestUDPHostileDatagramSizes: an empty datagram and one of 65507 bytes (the largest
// IPv4 UDP payload) each come back exactly, from several clients.
func TestUDPHostileDatagramSizes(t *testing.T) {
	up := framework.StartUDPEcho(t, "")
	addr := framework.FreeUDPPort(t)
	framework.StartProxy(t, udpHostileConfig(t, addr, "30s", up.Addr()))

	cs := dialUDPClients(t, addr, 4)
	buf := make([]byte, 70000)
	for i, c := range cs {
		for _, size := range []int{0, 1, 1472, 9000, 65507, 0} {
			msg := make([]byte, size)
			rand.Read(msg)
			if size >= 16 {
				copy(msg, fmt.Sprintf("c%03d-%06d|", i, size))
			}
			ok := false
			for try := 0; try < 5 && !ok; try++ {
				if _, err := c.Write(msg); err != nil {
					t.Fatalf("client %d: write %d bytes: %v", i, size, err)
				}
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, err := c.Read(buf)
				if err != nil {
					continue
				}
				if !bytes.Equal(buf[:n], msg) {
					t.Fatalf("client %d: sent %d bytes, got %d back (or different bytes)", i, size, n)
				}
				ok = true
			}
			if !ok {
				t.Fatalf("client %d: no echo of a %d-byte datagram", i, size)
			}
		}
	}
	if up.Peers() != len(cs) {
		t.Fatalf("upstream saw %d sessions; want %d", up.Peers(), len(cs))
	}
}

// TestUDPHostileUpstreamDown: the upstream's port is closed (each datagram draws an ICMP
// port unreachable, so the session socket reports ECONNREFUSED). The proxy must not spin
// on the error, and once the upstream comes up on that port the same client gets
// answers; then the upstream goes away and comes back again.
func TestUDPHostileUpstreamDown(t *testing.T) {
	upAddr := framework.FreeUDPPort(t)
	addr := framework.FreeUDPPort(t)
	p := framework.StartProxy(t, udpHostileConfig(t, addr, "30s", upAddr))
	cs := dialUDPClients(t, addr, 3)
	base := udpSockets(t, p.Pid())

	for round := 0; round < 2; round++ {
		// Down: datagrams go nowhere; each draws ECONNREFUSED on the session socket.
		for seq := 0; seq < 20; seq++ {
			for i, c := range cs {
				c.Write([]byte(fmt.Sprintf("c%d-s%d", i, seq)))
			}
			time.Sleep(10 * time.Millisecond)
		}
		cpu0 := udpCPU(t, p.Pid())
		time.Sleep(time.Second)
		// A goroutine spinning on the error would burn about 100 ticks (a whole CPU) in
		// that second; an idle proxy a few at most.
		if d := udpCPU(t, p.Pid()) - cpu0; d > 50 {
			t.Fatalf("round %d: the proxy used %d CPU ticks in 1s with the upstream down (a spin?)", round, d)
		}
		if n := udpSockets(t, p.Pid()); n > base+len(cs) {
			t.Fatalf("round %d: %d sockets; want at most %d (one session per client)", round, n, base+len(cs))
		}

		// Up again on the same port: every client's later datagrams flow.
		up := startUDPTag(t, upAddr, "a")
		for i, c := range cs {
			if _, err := udpAsk(c, i, 100+round, 20, 250*time.Millisecond); err != nil {
				t.Fatalf("round %d: after the upstream came back: %v", round, err)
			}
		}
		up.close()
	}
}

// TestUDPHostileIdleExpiry: with idle_timeout 1s, a session's socket stays while the
// client talks and is closed after 1s of silence (not before); a new datagram starts a
// new session (a new upstream source port); the proxy returns to its baseline of
// descriptors and goroutines.
func TestUDPHostileIdleExpiry(t *testing.T) {
	const idle = time.Second
	up := startUDPTag(t, "127.0.0.1:0", "a")
	addr := framework.FreeUDPPort(t)
	p := framework.StartProxy(t, udpHostileConfig(t, addr, idle.String(), up.Addr()))
	lc := framework.NewLeakCheck(t, p)
	base := udpSockets(t, p.Pid())

	const clients = 20
	cs := dialUDPClients(t, addr, clients)
	first := make([]string, clients)
	for i, c := range cs {
		tag, err := udpAsk(c, i, 0, 5, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		first[i] = tag
	}
	if n := udpSockets(t, p.Pid()); n != base+clients {
		t.Fatalf("%d sockets with %d sessions; want %d", n, clients, base+clients)
	}
	// Client 0 keeps talking for 2.5 idle periods: its session stays.
	for k := 1; k <= 10; k++ {
		time.Sleep(idle / 4)
		tag, err := udpAsk(cs[0], 0, k, 5, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if tag != first[0] {
			t.Fatalf("an active session was replaced: %s then %s", first[0], tag)
		}
	}
	// The other 19 went quiet 2.5s ago: they are gone.
	waitUntil(t, "idle sessions to close", 5*time.Second, func() bool {
		return udpSockets(t, p.Pid()) == base+1
	})
	last := time.Now()
	// Client 0 now goes quiet too: its socket stays for most of idle_timeout ...
	time.Sleep(idle * 6 / 10)
	if n := udpSockets(t, p.Pid()); n != base+1 {
		t.Fatalf("%.1fs after its last datagram (idle_timeout %s) the session's socket is gone: %d sockets",
			time.Since(last).Seconds(), idle, n)
	}
	// ... and is closed after it.
	waitUntil(t, "the last session to close", 5*time.Second, func() bool {
		return udpSockets(t, p.Pid()) == base
	})
	if d := time.Since(last); d < idle*8/10 {
		t.Fatalf("session closed %s after its last datagram; idle_timeout is %s", d, idle)
	}
	// New datagrams start new sessions.
	for i, c := range cs[:3] {
		tag, err := udpAsk(c, i, 99, 5, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if tag == first[i] {
			t.Fatalf("client %d: the expired session's socket %s carried a new datagram", i, tag)
		}
	}
	for _, c := range cs {
		c.Close()
	}
	lc.Check(t)
}

// TestUDPHostileFlood: one client sends 30000 datagrams as fast as it can while 20 others
// talk in lock step; every other client still gets replies.
func TestUDPHostileFlood(t *testing.T) {
	up := startUDPTag(t, "127.0.0.1:0", "a")
	addr := framework.FreeUDPPort(t)
	framework.StartProxy(t, udpHostileConfig(t, addr, "30s", up.Addr()))

	cs := dialUDPClients(t, addr, 21)
	flood := cs[0]
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var fwg sync.WaitGroup
	fwg.Add(2)
	go func() { // send
		defer fwg.Done()
		msg := []byte(strings.Repeat("x", 512))
		for i := 0; i < 30000 && ctx.Err() == nil; i++ {
			copy(msg, fmt.Sprintf("c0-s%d|", i))
			flood.Write(msg)
		}
	}()
	go func() { // drain the flood's echoes so its socket does not fill
		defer fwg.Done()
		buf := make([]byte, 2048)
		for ctx.Err() == nil {
			flood.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			flood.Read(buf)
		}
	}()

	var wg sync.WaitGroup
	got := make([]int, len(cs))
	errs := make(chan error, len(cs))
	for i := 1; i < len(cs); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; seq < 10; seq++ {
				_, err := udpAsk(cs[i], i, seq, 3, 300*time.Millisecond)
				if errors.Is(err, errWrongClient) {
					errs <- err
					return
				}
				if err == nil {
					got[i]++
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	fwg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := 1; i < len(cs); i++ {
		if got[i] == 0 {
			t.Errorf("client %d got no reply during the flood", i)
		}
	}
	t.Logf("replies during the flood: %v", got[1:])
}

// TestUDPHostileTwoHostsSticky: round robin over two hosts; each of 40 clients stays on
// the host of its first datagram, and both hosts get sessions.
func TestUDPHostileTwoHostsSticky(t *testing.T) {
	a := startUDPTag(t, "127.0.0.1:0", "a")
	b := startUDPTag(t, "127.0.0.1:0", "b")
	addr := framework.FreeUDPPort(t)
	framework.StartProxy(t, udpHostileConfig(t, addr, "30s", a.Addr(), b.Addr()))

	cs := dialUDPClients(t, addr, 40)
	first := make([]string, len(cs))
	for seq := 0; seq < 10; seq++ {
		for i, c := range cs {
			tag, err := udpAsk(c, i, seq, 5, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if seq == 0 {
				first[i] = tag
			} else if tag != first[i] {
				t.Fatalf("client %d moved from %s to %s", i, first[i], tag)
			}
		}
	}
	if a.Peers() == 0 || b.Peers() == 0 || a.Peers()+b.Peers() != len(cs) {
		t.Fatalf("sessions per host: a %d, b %d; want both > 0, %d in all", a.Peers(), b.Peers(), len(cs))
	}
}

// TestUDPHostileReload: a SIGHUP with the same config keeps every session (same upstream
// source port); one that changes the listener (idle_timeout) restarts it: clients' next
// datagrams get answers on new sessions, and the old sessions' sockets are closed.
func TestUDPHostileReload(t *testing.T) {
	up := startUDPTag(t, "127.0.0.1:0", "a")
	addr := framework.FreeUDPPort(t)
	cfg := udpHostileConfig(t, addr, "30s", up.Addr())
	p := framework.StartProxy(t, cfg)

	cs := dialUDPClients(t, addr, 10)
	ask := func(seq int) []string {
		t.Helper()
		tags := make([]string, len(cs))
		for i, c := range cs {
			tag, err := udpAsk(c, i, seq, 10, 500*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			tags[i] = tag
		}
		return tags
	}
	reload := func(cfg string, n int) {
		t.Helper()
		if err := os.WriteFile(p.Config, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "config reloaded", 10*time.Second, func() bool {
			return strings.Count(p.Logs(), "config reloaded") >= n
		})
	}
	before := ask(0)
	socks := udpSockets(t, p.Pid())

	reload(cfg, 1)
	after := ask(1)
	for i := range cs {
		if after[i] != before[i] {
			t.Errorf("client %d: an unchanged reload moved its session from %s to %s", i, before[i], after[i])
		}
	}
	if n := udpSockets(t, p.Pid()); n != socks {
		t.Errorf("unchanged reload: %d sockets, before %d", n, socks)
	}

	changed := strings.Replace(cfg, `"idle_timeout":"30s"`, `"idle_timeout":"20s"`, 1)
	if changed == cfg {
		t.Fatal("config has no idle_timeout to change")
	}
	reload(changed, 2)
	again := ask(2)
	for i := range cs {
		if again[i] == before[i] {
			t.Errorf("client %d: still on its old session %s after the listener was replaced", i, before[i])
		}
	}
	waitUntil(t, "old sessions' sockets to close", 10*time.Second, func() bool {
		return udpSockets(t, p.Pid()) == socks
	})
}

// TestUDPHostileSessionChurn: idle_timeout 30ms and 40 clients that each send a datagram
// 28-32ms after their last echo, so datagrams keep arriving as their sessions expire
// (thousands of sessions end and start). A datagram the upstream got must be echoed: the
// proxy must not end a session that has just carried a datagram. A few datagrams lost
// before the upstream are allowed (UDP). Then the proxy returns to its baseline of
// descriptors and goroutines.
func TestUDPHostileSessionChurn(t *testing.T) {
	up := startUDPTag(t, "127.0.0.1:0", "a")
	addr := framework.FreeUDPPort(t)
	p := framework.StartProxy(t, udpHostileConfig(t, addr, "30ms", up.Addr()))
	lc := framework.NewLeakCheck(t, p)
	cs := dialUDPClients(t, addr, 40)
	var lost, dropped, sent atomic.Int64
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for seq := 0; seq < 100; seq++ {
				time.Sleep(time.Duration(28+(seq*7+i)%5) * time.Millisecond)
				msg := fmt.Sprintf("c%d-s%d", i, seq)
				c.Write([]byte(msg))
				sent.Add(1)
				c.SetReadDeadline(time.Now().Add(time.Second))
				ok := false
				for {
					n, err := c.Read(buf)
					if err != nil {
						break
					}
					if _, gid, gseq, _ := udpReply(string(buf[:n])); gid == i && gseq == seq {
						ok = true
						break
					}
				}
				switch {
				case ok:
				case up.Got(msg):
					lost.Add(1)
					t.Errorf("the upstream got and echoed %s; the echo never came back", msg)
				default:
					dropped.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d datagrams: %d echoes lost after the upstream, %d dropped before it; %d upstream sessions",
		sent.Load(), lost.Load(), dropped.Load(), up.Peers())
	if dropped.Load()*100 > sent.Load() {
		t.Errorf("%d of %d datagrams dropped", dropped.Load(), sent.Load())
	}
	for _, c := range cs {
		c.Close()
	}
	lc.Check(t)
	if n := udpActive(t, p); n != 0 {
		t.Errorf("udp_proxy_sessions_active is %d with every session expired", n)
	}
}

// TestUDPHostileHostRemoved: sessions on host a; a SIGHUP reload replaces a with b in
// the cluster, then a goes away. Clients that keep talking (well within idle_timeout)
// must reach b: a session to a host that left its cluster must not carry them on.
func TestUDPHostileHostRemoved(t *testing.T) {
	a := startUDPTag(t, "127.0.0.1:0", "a")
	b := startUDPTag(t, "127.0.0.1:0", "b")
	addr := framework.FreeUDPPort(t)
	cfg := udpHostileConfig(t, addr, "30s", a.Addr())
	p := framework.StartProxy(t, cfg)
	lc := framework.NewLeakCheck(t, p)
	cs := dialUDPClients(t, addr, 5)
	for i, c := range cs {
		tag, err := udpAsk(c, i, 0, 5, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tag, "a@") {
			t.Fatalf("client %d: answered by %s; want a", i, tag)
		}
	}
	if err := os.WriteFile(p.Config, []byte(strings.Replace(cfg, a.Addr(), b.Addr(), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "config reloaded", 10*time.Second, func() bool {
		return strings.Contains(p.Logs(), "config reloaded")
	})
	a.close()
	for seq := 1; seq <= 3; seq++ {
		for i, c := range cs {
			tag, err := udpAsk(c, i, seq, 5, 300*time.Millisecond)
			if err != nil {
				t.Fatalf("after host a left the cluster: %v", err)
			}
			if !strings.HasPrefix(tag, "b@") {
				t.Fatalf("client %d: answered by %s after a left the cluster; want b", i, tag)
			}
		}
	}
	if b.Peers() != len(cs) {
		t.Errorf("host b saw %d sessions; want %d", b.Peers(), len(cs))
	}
	// The sessions to a are closed, not left until idle: only the new ones hold sockets.
	for _, c := range cs {
		c.Close()
	}
	lc.FDSlack, lc.GoroutineSlack = len(cs), len(cs)
	lc.Check(t)
	if n := udpActive(t, p); n != len(cs) {
		t.Errorf("udp_proxy_sessions_active is %d; want %d (the new sessions)", n, len(cs))
	}
}

// TestUDPHostileMaxSessions: max_sessions 4 and 8 clients: 4 get sessions, the others'
// datagrams are dropped, never answered on someone else's session; once the first 4
// expire (idle_timeout 3s) the other 4 get sessions.
func TestUDPHostileMaxSessions(t *testing.T) {
	up := startUDPTag(t, "127.0.0.1:0", "a")
	addr := framework.FreeUDPPort(t)
	cfg := udpHostileConfig(t, addr, "3s", up.Addr())
	limited := strings.Replace(cfg, `"idle_timeout":"3s"`, `"idle_timeout":"3s","max_sessions":4`, 1)
	if limited == cfg {
		t.Fatal("config has no idle_timeout to extend")
	}
	framework.StartProxy(t, limited)
	cs := dialUDPClients(t, addr, 8)
	for i, c := range cs[:4] {
		if _, err := udpAsk(c, i, 0, 5, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cs[4:] {
		if tag, err := udpAsk(c, 4+i, 0, 2, 200*time.Millisecond); err == nil {
			t.Fatalf("client %d answered by %s beyond max_sessions 4", 4+i, tag)
		} else if errors.Is(err, errWrongClient) {
			t.Fatal(err)
		}
	}
	time.Sleep(3500 * time.Millisecond) // the first 4 sessions expire
	for i, c := range cs[4:] {
		if _, err := udpAsk(c, 4+i, 1, 10, 500*time.Millisecond); err != nil {
			t.Fatalf("after the first sessions expired: %v", err)
		}
	}
	if up.Peers() != 8 {
		t.Fatalf("upstream saw %d sessions; want 8", up.Peers())
	}
}

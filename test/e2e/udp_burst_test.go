//go:build linux

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/mosnlite/mosnlite/test/framework"
)

// udpDrops reads the per-socket drop counters of /proc/net/udp (the last column), keyed by
// inode, with each socket's local port, remote port and drops.
func udpDrops(t *testing.T) map[string][3]uint64 {
	t.Helper()
	f, err := os.Open("/proc/net/udp")
	if err != nil {
		t.Skipf("no /proc/net/udp: %v", err)
	}
	defer f.Close()
	m := map[string][3]uint64{}
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 13 {
			continue
		}
		_, hexLocal, _ := strings.Cut(fs[1], ":")
		_, hexRemote, _ := strings.Cut(fs[2], ":")
		local, _ := strconv.ParseUint(hexLocal, 16, 16)
		remote, _ := strconv.ParseUint(hexRemote, 16, 16)
		drops, _ := strconv.ParseUint(fs[len(fs)-1], 10, 64)
		m[fs[9]] = [3]uint64{local, remote, drops}
	}
	return m
}

// udpSNMP returns the host's Udp InErrors and RcvbufErrors from /proc/net/snmp.
func udpSNMP(t *testing.T) (inErr, rcvbuf uint64) {
	t.Helper()
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0, 0
	}
	var names []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "Udp: ") {
			continue
		}
		fs := strings.Fields(l)[1:]
		if names == nil {
			names = fs
			continue
		}
		for i, v := range fs {
			n, _ := strconv.ParseUint(v, 10, 64)
			switch names[i] {
			case "InErrors":
				inErr = n
			case "RcvbufErrors":
				rcvbuf = n
			}
		}
	}
	return inErr, rcvbuf
}

// burstStats is one burst run: datagrams sent, received by the upstream, echoed back to
// their client, and socket drops by stage (from /proc/net/udp).
type burstStats struct {
	sent, atUp, back                                int
	dropListener, dropSessions, dropUp, dropClients uint64
	dropOther, snmpInErrors, snmpRcvbuf             uint64
}

func (s burstStats) String() string {
	return fmt.Sprintf("sent %d, upstream got %d, back %d (%.0f%%); socket drops: listener %d, sessions %d, upstream %d, clients %d, other %d; snmp InErrors +%d RcvbufErrors +%d",
		s.sent, s.atUp, s.back, 100*float64(s.back)/float64(s.sent),
		s.dropListener, s.dropSessions, s.dropUp, s.dropClients, s.dropOther, s.snmpInErrors, s.snmpRcvbuf)
}

// udpReceived is how many datagrams u has received.
func udpReceived(u *udpTagUp) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.peers {
		n += c
	}
	return n
}

func udpPort(t *testing.T, addr string) uint64 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.ParseUint(p, 10, 16)
	return n
}

// udpBurst has each of cs (connected UDP sockets) send burst datagrams "c<i>-s<seq>",
// seq from round*burst, all clients released at once; then each reads its echoes until it
// has them all or a second passes without one. listenPort is the proxy listener's port
// (0: a direct run).
func udpBurst(t *testing.T, cs []net.Conn, up *udpTagUp, listenPort uint64, burst, round int) burstStats {
	t.Helper()
	clientPorts := map[uint64]bool{}
	for _, c := range cs {
		clientPorts[uint64(c.LocalAddr().(*net.UDPAddr).Port)] = true
	}
	upPort := udpPort(t, up.Addr())
	before := udpDrops(t)
	in0, rb0 := udpSNMP(t)
	up0 := udpReceived(up)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		back  int
		start = make(chan struct{})
	)
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgs := make([][]byte, burst)
			for s := range msgs {
				msgs[s] = []byte(fmt.Sprintf("c%d-s%d", i, round*burst+s))
			}
			<-start
			for _, m := range msgs {
				c.Write(m)
			}
			got, _ := readBurst(t, c, i, round*burst, burst)
			mu.Lock()
			back += got
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	in1, rb1 := udpSNMP(t)
	st := burstStats{sent: len(cs) * burst, atUp: udpReceived(up) - up0, back: back,
		snmpInErrors: in1 - in0, snmpRcvbuf: rb1 - rb0}
	for inode, a := range udpDrops(t) {
		d := a[2] - before[inode][2] // a socket new since then counts from 0
		switch {
		case d == 0:
		case listenPort != 0 && a[0] == listenPort:
			st.dropListener += d
		case a[0] == upPort:
			st.dropUp += d
		case clientPorts[a[0]]:
			st.dropClients += d
		case a[1] == upPort:
			st.dropSessions += d // the proxy's sockets connected to the upstream
		default:
			st.dropOther += d
		}
	}
	return st
}

// readBufferOf is c's SO_RCVBUF as the kernel reports it.
func readBufferOf(t *testing.T, c *net.UDPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	rc.Control(func(fd uintptr) { n, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF) })
	return n
}

// growReadBuffers asks a 4 MiB SO_RCVBUF (8 MiB granted by Linux: about 10000 small
// datagrams) for each of cs, and skips the test when net.core.rmem_max caps it lower.
func growReadBuffers(t *testing.T, cs ...net.Conn) {
	t.Helper()
	for _, c := range cs {
		uc := c.(*net.UDPConn)
		if err := uc.SetReadBuffer(4 << 20); err != nil {
			t.Fatal(err)
		}
		if n := readBufferOf(t, uc); n < 4<<20 {
			t.Skipf("SO_RCVBUF is %d (net.core.rmem_max too low): the direct run would lose the burst too", n)
		}
	}
}

// TestUDPBurstProxyVsDirect: clients each send a burst of datagrams at once to a UDP echo
// upstream, straight to it and through udp_proxy. First 300 clients x 8 datagrams with the
// upstream's default receive buffer (the burst round of TestUDPHostileManyClients): both
// lose datagrams at some socket's buffer; only logged. Then the upstream's and the
// clients' sockets get buffers that hold the whole burst, so the direct run carries
// nearly everything; the proxy must carry about as many, for many clients with small
// bursts (new and warm sessions) and for a few clients with large ones, and not lose them
// in its own sockets' buffers.
func TestUDPBurstProxyVsDirect(t *testing.T) {
	up := startUDPTag(t, "127.0.0.1:0", "a")
	addr := framework.FreeUDPPort(t)
	framework.StartProxy(t, udpHostileConfig(t, addr, "30s", up.Addr()))
	listenPort := udpPort(t, addr)

	st := udpBurst(t, dialUDPClients(t, up.Addr(), 300), up, 0, 8, 0)
	t.Logf("default upstream buffer, 300x8, direct: %v", st)
	st = udpBurst(t, dialUDPClients(t, addr, 300), up, listenPort, 8, 0)
	t.Logf("default upstream buffer, 300x8, proxy: %v", st)

	growReadBuffers(t, up.pc.(*net.UDPConn))
	for _, tc := range []struct{ clients, burst, rounds int }{{300, 8, 2}, {2, 1200, 2}} {
		name := fmt.Sprintf("%dx%d", tc.clients, tc.burst)
		dc := dialUDPClients(t, up.Addr(), tc.clients)
		pc := dialUDPClients(t, addr, tc.clients)
		if tc.burst > 100 {
			growReadBuffers(t, append(dc, pc...)...) // a client's default holds about 256
		}
		direct := udpBurst(t, dc, up, 0, tc.burst, 1)
		t.Logf("%s, direct: %v", name, direct)
		for r := 1; r <= tc.rounds; r++ {
			st := udpBurst(t, pc, up, listenPort, tc.burst, r) // round 1 on new sessions
			t.Logf("%s, proxy round %d: %v", name, r, st)
			// Tolerance: 5% fewer than the direct run. Every socket on the path can hold the
			// whole burst (the listener's 8 MiB, a session's 2 MiB), so the proxy loses
			// none: 100% in every measured run, also with a CPU hog. With the proxy's
			// default socket buffers it returned 15-34% (300x8: listener drops) and
			// 45-82% (2x1200: session socket drops).
			if st.back < direct.back*95/100 {
				t.Errorf("%s, round %d: the proxy returned %d datagrams, the direct run %d; want at least 95%% of it (%v)",
					name, r, st.back, direct.back, st)
			}
		}
	}
}

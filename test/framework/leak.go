package framework

import (
	"bufio"
	"cmp"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Leak checks of a running mosnlite process (ROBUSTNESS.md row 44): take a baseline of
// what the process holds, run traffic, close the clients and drop the upstreams'
// connections, then wait (bounded) until the process is back at the baseline.
//
// What is counted:
//   - open file descriptors, from /proc/PID/fd. Sockets are resolved through
//     /proc/PID/net/tcp{,6} to their addresses and TCP state for the report. The admin
//     endpoint's own sockets (its listener and the connections the check makes to it)
//     are left out: the check reads through it.
//   - goroutines, from the admin endpoint's /debug/pprof/goroutine?debug=1 ("goroutine
//     profile: total N" and the stacks grouped with their counts). Goroutines serving a
//     net/http connection (the admin endpoint answering the check itself) and ones not
//     started yet are left out; idle pooled workers are counted apart (pooledGoroutines).
//     Pipes above stdio are counted apart (Resources.Pipes): pools keep them.
//   - the heap in use after a forced GC, from /debug/pprof/heap?gc=1&debug=1 ("# HeapInuse
//     = N"), for a bound across repeated rounds (RecordHeap, CheckHeap), not for a
//     return to a baseline: the heap does not shrink back exactly.
//
// Linux only (/proc); elsewhere NewLeakCheck skips the test.

// DefaultLeakWait bounds how long Check waits for the process to return to its baseline.
const DefaultLeakWait = 10 * time.Second

// pooledGoroutines are the top frames of goroutines that a bounded pool keeps waiting
// for work, holding nothing: a listener's idle connection workers (at most
// maxIdleWorkers, 64, per listener; pkg/network/listener.go). They are counted apart
// (Resources.Pooled) and bounded by LeakCheck.MaxPooled, not compared to the baseline:
// how many wait depends on the last round's peak concurrency.
var pooledGoroutines = []string{
	"github.com/mosnlite/mosnlite/pkg/network.(*workers).loop",
}

// pooledStack reports a stack whose top frame is one of pooledGoroutines.
func pooledStack(stack string) bool {
	fn, _, _ := strings.Cut(strings.TrimPrefix(stack, "\t"), "\t")
	return slices.Contains(pooledGoroutines, fn)
}

// Resources is what the process holds at one moment.
type Resources struct {
	FDs map[int]string // fd → its /proc/PID/fd link target; the admin sockets and pipes left out
	// Pipes are the pipe descriptors above stdio, counted apart: an event loop keeps up
	// to 16 empty splice pipes for reuse (pkg/network/evloop, maxPipes), as many as its
	// peak of sessions splicing at once, and Go's net package pools the pipes of its
	// splice(2) path (closed when a GC drops them). They are bounded by
	// LeakCheck.MaxPipes, not compared to the baseline.
	Pipes      map[int]string
	Goroutines int            // without the admin endpoint's and the pooled ones
	Pooled     int            // idle pooled goroutines (pooledGoroutines)
	Stacks     map[string]int // goroutine stack (functions and lines) → goroutines on it
	sockets    map[string]string
}

// Connections lists the descriptors that are TCP sockets in a state other than LISTEN,
// and sockets not found in /proc/PID/net (unix sockets, say), with their addresses.
func (r Resources) Connections() []string {
	var out []string
	for fd, target := range r.FDs {
		if !strings.HasPrefix(target, "socket:") {
			continue
		}
		s, ok := r.sockets[target]
		if ok && (strings.HasSuffix(s, " LISTEN") || strings.HasPrefix(s, "udp")) {
			continue
		}
		out = append(out, fmt.Sprintf("fd %d %s %s", fd, target, s))
	}
	slices.Sort(out)
	return out
}

// Sockets is the number of socket descriptors in r.
func (r Resources) Sockets() int {
	n := 0
	for _, target := range r.FDs {
		if strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

// LeakCheck compares a proxy's resources to a baseline.
type LeakCheck struct {
	p     *Proxy
	admin string
	peers []string // sockets connected to these are left out (NewLeakCheckExcept)
	http  *http.Client

	// Baseline is what the process held when the check was made (or Rebase ran).
	Baseline Resources
	// FDSlack and GoroutineSlack are how many descriptors and goroutines above the
	// baseline Check accepts; both start at 0.
	FDSlack, GoroutineSlack int
	// MaxPooled bounds Resources.Pooled; 64 (one listener's idle workers) when zero.
	MaxPooled int
	// MaxPipes bounds len(Resources.Pipes); when zero, two descriptors for each of the 16
	// pipes of each event loop the process logged it started (GOMAXPROCS loops, taken as
	// this machine's CPUs when the log does not say).
	MaxPipes int
	// Wait bounds Check's polling; DefaultLeakWait when zero.
	Wait time.Duration
	// HeapSlack is added to twice the first round's heap in CheckHeap; 2 MiB when zero.
	HeapSlack int64

	heaps []int64
}

// NewLeakCheck takes a baseline of p, whose config must enable the admin endpoint
// (WithAdmin). Take it once the proxy is in the state it must return to: a proxy that
// lazily starts long-lived goroutines on first use (a pool's host watcher, say) needs a
// warm-up round first, whose clients are closed and whose upstream connections are
// dropped. The baseline is taken once the process holds no connection (Connections;
// listeners are not connections) and its counts held still for a few polls, waiting up to
// Wait; NewLeakCheck fails t with what it still holds otherwise, so that a leak in the
// warm-up is not taken for the baseline.
func NewLeakCheck(t testing.TB, p *Proxy) *LeakCheck {
	t.Helper()
	return NewLeakCheckExcept(t, p)
}

// NewLeakCheckExcept is NewLeakCheck leaving out, as it does the admin endpoint's, the
// sockets connected to the peers given ("127.0.0.1:N"): a connection the proxy keeps
// for as long as it runs, such as its xDS stream to the control plane.
func NewLeakCheckExcept(t testing.TB, p *Proxy, peers ...string) *LeakCheck {
	t.Helper()
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/fd", p.Pid())); err != nil {
		t.Skipf("no /proc/PID/fd to count descriptors: %v", err)
	}
	admin, err := p.AdminAddr()
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	lc := &LeakCheck{p: p, admin: admin, peers: peers, http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
	t.Cleanup(tr.CloseIdleConnections)
	lc.Rebase(t)
	return lc
}

// Rebase takes the baseline again, as NewLeakCheck does.
func (lc *LeakCheck) Rebase(t testing.TB) {
	t.Helper()
	wait := cmp.Or(lc.Wait, DefaultLeakWait)
	deadline := time.Now().Add(wait)
	var last Resources
	still := 0
	for {
		r, err := lc.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Connections()) == 0 && last.FDs != nil &&
			len(r.FDs) == len(last.FDs) && r.Goroutines == last.Goroutines {
			still++
		} else {
			still = 0
		}
		last = r
		if still == 3 {
			lc.Baseline = r
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosnlite (pid %d) did not come to rest for a baseline within %s: connections %q, %d descriptors, %d goroutines\n%s",
				lc.p.Pid(), wait, r.Connections(), len(r.FDs), r.Goroutines, topStacks(r.Stacks, nil, 8))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Check waits until the process holds no more descriptors and goroutines than the
// baseline (plus the slack), polling for up to Wait, and fails t with what the process
// holds beyond the baseline if it does not get there.
func (lc *LeakCheck) Check(t testing.TB) {
	t.Helper()
	if err := lc.Settle(); err != nil {
		t.Error(err)
	}
}

// Settle is Check returning its failure instead of reporting it.
func (lc *LeakCheck) Settle() error {
	wait := cmp.Or(lc.Wait, DefaultLeakWait)
	deadline := time.Now().Add(wait)
	for {
		r, err := lc.Snapshot()
		if err != nil {
			return err
		}
		if len(r.FDs) <= len(lc.Baseline.FDs)+lc.FDSlack && r.Goroutines <= lc.Baseline.Goroutines+lc.GoroutineSlack &&
			r.Pooled <= cmp.Or(lc.MaxPooled, 64) && len(r.Pipes) <= lc.maxPipes() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mosnlite (pid %d) did not return to its baseline within %s:\n%s", lc.p.Pid(), wait, lc.diff(r))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// maxPipes is MaxPipes, or 2×16 descriptors per event loop (the "listener serving on
// event loops" log line says how many loops; pkg/network/raw_linux.go).
func (lc *LeakCheck) maxPipes() int {
	if lc.MaxPipes > 0 {
		return lc.MaxPipes
	}
	loops := 0
	for _, line := range strings.Split(lc.p.Logs(), "\n") {
		var l struct {
			Msg   string `json:"msg"`
			Loops int    `json:"loops"`
		}
		if strings.Contains(line, `"loops"`) && json.Unmarshal([]byte(line), &l) == nil &&
			l.Msg == "listener serving on event loops" {
			loops = max(loops, l.Loops)
		}
	}
	if loops == 0 {
		loops = runtime.NumCPU()
	}
	return 2 * 16 * loops
}

// Snapshot reads what the process holds now.
func (lc *LeakCheck) Snapshot() (Resources, error) {
	pid := lc.p.Pid()
	// Goroutines first: the admin connection this opens is over before the descriptors
	// are read, or is left out as an admin socket if it is not.
	total, pooled, stacks, err := lc.goroutines()
	if err != nil {
		return Resources{}, err
	}
	socks, err := procSockets(pid)
	if err != nil {
		return Resources{}, err
	}
	_, adminPort, _ := net.SplitHostPort(lc.admin)
	fds, err := procFDs(pid)
	if err != nil {
		return Resources{}, err
	}
	pipes := map[int]string{}
	for fd, target := range fds {
		if s, ok := socks[target]; ok && (strings.Contains(s, ":"+adminPort+" ->") || lc.toPeer(s)) {
			delete(fds, fd)
		}
		if fd > 2 && strings.HasPrefix(target, "pipe:") {
			pipes[fd] = target
			delete(fds, fd)
		}
	}
	return Resources{FDs: fds, Pipes: pipes, Goroutines: total, Pooled: pooled, Stacks: stacks, sockets: socks}, nil
}

// toPeer reports a socket ("tcp 127.0.0.1:1 -> 127.0.0.1:2 ESTABLISHED") connected to one
// of lc.peers.
func (lc *LeakCheck) toPeer(sock string) bool {
	for _, peer := range lc.peers {
		if strings.Contains(sock, "-> "+peer+" ") {
			return true
		}
	}
	return false
}

// adminGoroutine reports a goroutine stack that belongs to the admin endpoint's HTTP
// server: its accept loop, which the check's own requests keep busy, and its connections.
func adminGoroutine(stack string) bool {
	return strings.Contains(stack, "net/http.(*conn).serve") ||
		strings.Contains(stack, "net/http.(*Server).Serve") ||
		strings.Contains(stack, "net/http.(*connReader).backgroundRead")
}

// goroutines reads the goroutine profile: the total without the admin's own goroutines
// and the pooled ones, the pooled ones, and the stacks (function and file:line lines) with
// their counts.
func (lc *LeakCheck) goroutines() (total, pooled int, stacks map[string]int, err error) {
	body, err := lc.get("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, 0, nil, err
	}
	first, rest, _ := strings.Cut(body, "\n")
	if _, err := fmt.Sscanf(first, "goroutine profile: total %d", &total); err != nil {
		return 0, 0, nil, fmt.Errorf("goroutine profile: first line %q: %v", first, err)
	}
	stacks = map[string]int{}
	for _, group := range strings.Split(rest, "\n\n") {
		lines := strings.Split(strings.TrimSpace(group), "\n")
		if len(lines) == 0 || lines[0] == "" {
			continue
		}
		var n int
		if _, err := fmt.Sscanf(lines[0], "%d @", &n); err != nil {
			continue
		}
		var fns []string
		for _, l := range lines[1:] {
			// "#\t0x4a5b6c\truntime.gopark+0x12\t\t/usr/lib/go/src/runtime/proc.go:435"
			f := strings.Fields(l)
			if len(f) < 4 || f[0] != "#" {
				continue
			}
			fn := f[2]
			if i := strings.LastIndex(fn, "+0x"); i > 0 {
				fn = fn[:i]
			}
			fns = append(fns, "\t"+fn+"\t"+f[3])
		}
		stack := strings.Join(fns, "\n")
		// A goroutine with no frame yet has not started: the admin request's own
		// connection reader (net/http's backgroundRead), as a rule. One that leaks runs
		// and blocks somewhere, and shows there.
		if stack == "" || adminGoroutine(stack) {
			total -= n
			continue
		}
		if pooledStack(stack) {
			total -= n
			pooled += n
		}
		stacks[stack] += n
	}
	return total, pooled, stacks, nil
}

func (lc *LeakCheck) get(path string) (string, error) {
	resp, err := lc.http.Get("http://" + lc.admin + path)
	if err != nil {
		return "", fmt.Errorf("admin %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("admin %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("admin %s: %s: %.200s", path, resp.Status, b)
	}
	return string(b), nil
}

// procFDs maps each open descriptor of pid to its link target ("socket:[123]",
// "anon_inode:[eventpoll]", "/dev/null", ...).
func procFDs(pid int) (map[int]string, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	fds := make(map[int]string, len(ents))
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed between the listing and now
		}
		fds[fd] = target
	}
	return fds, nil
}

// tcpStates names the states of /proc/net/tcp (include/net/tcp_states.h).
var tcpStates = map[string]string{
	"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
	"06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}

// procSockets maps "socket:[inode]" to "tcp 127.0.0.1:1 -> 127.0.0.1:2 ESTABLISHED" for
// the TCP and UDP sockets of pid's network namespace.
func procSockets(pid int) (map[string]string, error) {
	m := map[string]string{}
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, proto))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 {
				continue
			}
			state := tcpStates[fs[3]]
			if strings.HasPrefix(proto, "udp") {
				state = ""
			}
			m["socket:["+fs[9]+"]"] = strings.TrimSpace(fmt.Sprintf("%s %s -> %s %s",
				proto, procAddr(fs[1]), procAddr(fs[2]), state))
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

// procAddr decodes "0100007F:1F90" (host byte order per 32-bit word) to "127.0.0.1:8080".
func procAddr(s string) string {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return s
	}
	b, err := hex.DecodeString(h)
	port, err2 := strconv.ParseUint(p, 16, 16)
	if err != nil || err2 != nil || len(b)%4 != 0 {
		return s
	}
	for i := 0; i < len(b); i += 4 { // each 32-bit word is little-endian on the hosts we run on
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return net.JoinHostPort(net.IP(b).String(), strconv.FormatUint(port, 10))
}

// diff describes what r holds beyond the baseline: the counts, the descriptors that are
// new (sockets with their addresses and state), and the goroutine stacks that grew.
func (lc *LeakCheck) diff(r Resources) string {
	base := lc.Baseline
	var b strings.Builder
	fmt.Fprintf(&b, "  descriptors: %d (%d sockets), baseline %d (%d sockets), slack %d; pooled pipe descriptors %d (at most %d)\n",
		len(r.FDs), r.Sockets(), len(base.FDs), base.Sockets(), lc.FDSlack, len(r.Pipes), lc.maxPipes())
	fmt.Fprintf(&b, "  goroutines: %d, baseline %d, slack %d; idle pooled goroutines %d (at most %d)\n",
		r.Goroutines, base.Goroutines, lc.GoroutineSlack, r.Pooled, cmp.Or(lc.MaxPooled, 64))
	var fds []int
	for fd, target := range r.FDs {
		if base.FDs[fd] != target {
			fds = append(fds, fd)
		}
	}
	slices.Sort(fds)
	if len(fds) > 0 {
		b.WriteString("  descriptors not in the baseline:\n")
	}
	for i, fd := range fds {
		if i == 40 {
			fmt.Fprintf(&b, "    ... %d more\n", len(fds)-i)
			break
		}
		target := r.FDs[fd]
		kind := "file"
		switch {
		case strings.HasPrefix(target, "socket:"):
			kind = "socket"
			if s, ok := r.sockets[target]; ok {
				target += " " + s
			} else {
				target += " (not TCP/UDP: unix or other)"
			}
		case strings.HasPrefix(target, "anon_inode:"):
			kind = "other"
		}
		fmt.Fprintf(&b, "    fd %d %s %s\n", fd, kind, target)
	}
	gone := 0
	for fd, target := range base.FDs {
		if r.FDs[fd] != target {
			gone++
		}
	}
	if gone > 0 {
		fmt.Fprintf(&b, "  (%d baseline descriptors closed or reused since)\n", gone)
	}
	grown := map[string]int{}
	for s, n := range r.Stacks {
		if !pooledStack(s) {
			grown[s] = n
		}
	}
	if s := topStacks(grown, base.Stacks, 8); s != "" {
		b.WriteString("  goroutine stacks above the baseline:\n" + s)
	}
	return b.String()
}

// topStacks describes the stacks with more goroutines in now than in base, most first.
func topStacks(now, base map[string]int, top int) string {
	type grown struct {
		stack string
		n     int
	}
	var gs []grown
	for s, n := range now {
		if d := n - base[s]; d > 0 {
			gs = append(gs, grown{s, d})
		}
	}
	slices.SortFunc(gs, func(a, b grown) int {
		if a.n != b.n {
			return b.n - a.n
		}
		return strings.Compare(a.stack, b.stack)
	})
	var b strings.Builder
	for i, g := range gs {
		if i == top {
			fmt.Fprintf(&b, "    ... %d more stacks\n", len(gs)-i)
			break
		}
		fmt.Fprintf(&b, "    +%d (now %d):\n%s\n", g.n, now[g.stack], indent(g.stack, "    "))
	}
	return b.String()
}

func indent(s, pre string) string {
	lines := strings.Split(s, "\n")
	if len(lines) > 16 {
		lines = append(lines[:16], "\t...")
	}
	for i := range lines {
		lines[i] = pre + lines[i]
	}
	return strings.Join(lines, "\n")
}

// HeapInuse forces a GC in the process and returns its heap in use (runtime.MemStats
// HeapInuse), read from the heap profile's trailer.
func (lc *LeakCheck) HeapInuse() (int64, error) {
	body, err := lc.get("/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return 0, err
	}
	i := strings.Index(body, "\n# HeapInuse = ")
	if i < 0 {
		return 0, errors.New("heap profile: no HeapInuse line")
	}
	line, _, _ := strings.Cut(body[i+len("\n# HeapInuse = "):], "\n")
	return strconv.ParseInt(strings.TrimSpace(line), 10, 64)
}

// RecordHeap reads the heap in use after a GC, once per round of traffic.
func (lc *LeakCheck) RecordHeap(t testing.TB) int64 {
	t.Helper()
	h, err := lc.HeapInuse()
	if err != nil {
		t.Fatal(err)
	}
	lc.heaps = append(lc.heaps, h)
	return h
}

// CheckHeap fails t when the heap after the last recorded round is above twice the heap
// after the first plus HeapSlack: a heap that grows with every round of the same traffic
// grows without bound. It needs three rounds or more.
func (lc *LeakCheck) CheckHeap(t testing.TB) {
	t.Helper()
	if len(lc.heaps) < 3 {
		t.Fatalf("CheckHeap: %d rounds recorded, want 3 or more", len(lc.heaps))
	}
	slack := cmp.Or(lc.HeapSlack, 2<<20)
	first, last := lc.heaps[0], lc.heaps[len(lc.heaps)-1]
	if last > 2*first+slack {
		t.Errorf("mosnlite heap in use after GC grew across rounds of the same traffic: %v bytes (limit 2×%d+%d)",
			lc.heaps, first, slack)
	}
}

// AdminAddr is the admin endpoint's address in the proxy's config (admin.address.
// socket_address), as WithAdmin writes it.
func (p *Proxy) AdminAddr() (string, error) {
	raw, err := os.ReadFile(p.Config)
	if err != nil {
		return "", err
	}
	var cfg struct {
		Admin *struct {
			Address struct {
				SocketAddress struct {
					Address   string `json:"address"`
					PortValue uint32 `json:"port_value"`
				} `json:"socket_address"`
			} `json:"address"`
		} `json:"admin"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return "", fmt.Errorf("admin address: config is not JSON: %v", err)
	}
	if cfg.Admin == nil || cfg.Admin.Address.SocketAddress.PortValue == 0 {
		return "", errors.New("the config has no admin endpoint (framework.WithAdmin adds one)")
	}
	sa := cfg.Admin.Address.SocketAddress
	return net.JoinHostPort(cmp.Or(sa.Address, "127.0.0.1"), strconv.Itoa(int(sa.PortValue))), nil
}

// WithAdmin adds an admin endpoint on a free loopback port to a JSON config.
func WithAdmin(t testing.TB, cfg string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(cfg), &m); err != nil {
		t.Fatalf("WithAdmin: %v", err)
	}
	_, port, _ := net.SplitHostPort(FreePort(t))
	n, _ := strconv.Atoi(port)
	m["admin"] = map[string]any{"address": map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": n}}}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

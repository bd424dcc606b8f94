package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/overload"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/test/framework"
)

// TestMemoryLimitPausesAccepting: with GOMEMLIMIT below what the process needs, the
// memory overload check pauses the listener: a client's connection completes in the
// kernel backlog but is not served, the admin endpoint (not a proxied listener) still
// answers and reports the overload, and SIGTERM still stops the process.
func TestMemoryLimitPausesAccepting(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "1MiB")
	up := framework.StartTCP(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	addr := framework.FreePort(t)
	admin := framework.FreePort(t)
	_, ap, _ := net.SplitHostPort(admin)
	adminPort, _ := strconv.Atoi(ap)
	var cfg map[string]any
	if err := json.Unmarshal([]byte(tcpProxyConfig(addr, "LB_ROUNDROBIN", []host{{Address: up.Addr()}}, nil)), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["admin"] = map[string]any{"address": map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": adminPort}}}
	b, _ := json.Marshal(cfg)
	p := framework.StartProxy(t, string(b))
	if !p.WaitLog("listeners stop accepting new connections", 10*time.Second) {
		t.Fatal("no overload logged with a 1 MiB memory limit")
	}
	c := framework.Dial(t, addr)
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := c.Read(make([]byte, 4)); n > 0 || err == nil {
		t.Fatalf("a connection was served while memory is over its limit: %d bytes, %v", n, err)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("admin while overloaded: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "mosnlite_memory_overloaded 1") ||
		!strings.Contains(string(body), `mosnlite_downstream_accept_overload_pauses_total{listener="l4"}`) {
		t.Fatalf("metrics do not report the overload:\n%s", testutil.Lines(string(body), "overload"))
	}
	p.Stop(10 * time.Second)
	if code := p.Wait(5 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM while overloaded", code)
	}
}

// TestMemoryPressureShedsAndRecovers (ROBUSTNESS.md row 45): real traffic takes the
// process to its memory limit and back. Under GOMEMLIMIT=64MiB, HTTP/1 clients that ask
// for large bodies and read none of them (slow readers: the proxy holds what it read from
// the upstream while the client's window is shut) and clients that send request heads of
// nearly the largest size allowed and never end them (the proxy holds each partial head)
// are added until the memory overload check trips. Then: the gauge reads 1 and stays so
// while the traffic is held; a request on a connection accepted before is refused with
// 503 "overloaded"; a new connection waits in the backlog unserved; the admin endpoint
// answers and the process lives. Once the clients close, the overload must end within
// 15 s without anything else happening in the process (no traffic to trigger a
// collection): the gauge goes back to 0, the connection that waited is served, and so is
// a new one. SIGTERM then stops the process with exit code 0.
func TestMemoryPressureShedsAndRecovers(t *testing.T) {
	const (
		limit       = 64 << 20
		slowReaders = 150
		headHeld    = 70 << 10 // what the proxy holds for one partial head (64 KiB buffer and more)
		minBatch    = 10
		maxBatch    = 100
		maxHeads    = 2000 // over twice the limit
		recoverIn   = 15 * time.Second
	)
	t.Setenv("GOMEMLIMIT", strconv.Itoa(limit))
	up := startPressureUpstream(t)
	listen := framework.FreePort(t)
	p := framework.StartProxy(t, framework.WithAdmin(t, pressureConfig(listen, up.addr)))
	admin, err := p.AdminAddr()
	if err != nil {
		t.Fatal(err)
	}
	mem := &memWatch{t: t, p: p, admin: admin}
	if m := mem.scrape(); m["mosnlite_memory_overloaded"] != 0 {
		t.Fatalf("overloaded before any traffic: %s", mem.describe(m))
	}

	// A connection accepted before the pressure, kept open for a request while overloaded.
	keep := framework.Dial(t, listen)
	defer keep.Close()
	keepR := bufio.NewReader(keep)
	if code, body := pressureRequest(t, keep, keepR, "/small"); code != http.StatusOK || body != "ok" {
		t.Fatalf("before the pressure: %d %q, want 200 ok", code, body)
	}

	var pressure []net.Conn
	defer func() {
		for _, c := range pressure {
			c.Close()
		}
	}()
	start := time.Now()
	for range slowReaders {
		c, err := dialSlowReader(listen)
		if err != nil {
			t.Fatalf("slow reader: %v", err)
		}
		pressure = append(pressure, c)
		if _, err := c.Write([]byte("GET /big HTTP/1.1\r\nHost: big\r\n\r\n")); err != nil {
			t.Fatalf("slow reader: %v", err)
		}
	}
	testutil.Eventually(t, 15*time.Second, "every slow reader's response streaming from the upstream", func() bool {
		return up.streaming.Load() >= slowReaders
	})
	m := mem.scrape()
	t.Logf("%d slow readers, %v: %s", slowReaders, time.Since(start).Round(time.Millisecond), mem.describe(m))

	// Heads just under the size limit, without their end: the proxy keeps each one whole
	// while it waits for the rest. Added a batch at a time until the check trips, and
	// again if use falls back under the resume mark while they are all held. Each batch
	// is given a sampling interval to trip the check, and takes about half the room left
	// under the pause mark, so that use ends near the limit rather than far past it.
	head := []byte("GET /small HTTP/1.1\r\nHost: heads\r\nX-Pad: " + strings.Repeat("p", http1.DefaultMaxHeaderBytes-2<<10))
	heads := 0
	var shedAt time.Time
	deadline := time.Now().Add(20 * time.Second)
	for shedAt.IsZero() {
		if heads >= maxHeads || time.Now().After(deadline) {
			t.Fatalf("no overload after %d slow readers and %d heads of %d bytes in %v: %s",
				slowReaders, heads, len(head), time.Since(start).Round(time.Millisecond), mem.describe(mem.scrape()))
		}
		room := overload.PauseAt*limit - memUsed(mem.scrape())
		for range min(max(int(room/2/headHeld), minBatch), maxBatch) {
			c, err := net.DialTimeout("tcp", listen, 5*time.Second)
			if err != nil {
				t.Fatalf("head %d: %v", heads, err)
			}
			pressure = append(pressure, c)
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(head); err != nil {
				t.Fatalf("head %d: %v", heads, err)
			}
			heads++
		}
		if at, ok := mem.tripsWithin(overload.Interval + 100*time.Millisecond); ok && mem.holds(2*time.Second) {
			shedAt = at
		}
	}
	t.Logf("shedding %v after the first client (%d heads, %d slow readers): %s",
		shedAt.Sub(start).Round(time.Millisecond), heads, slowReaders, mem.describe(mem.scrape()))

	// Shedding: the accepted connection gets 503, a new one is not served, the admin
	// endpoint answers, the process lives.
	if code, body := pressureRequest(t, keep, keepR, "/small"); code != http.StatusServiceUnavailable || body != "overloaded" {
		t.Fatalf("while overloaded: %d %q, want 503 overloaded", code, body)
	}
	waiting := framework.Dial(t, listen)
	defer waiting.Close()
	if _, err := waiting.Write([]byte("GET /small HTTP/1.1\r\nHost: waiting\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitingR := bufio.NewReader(waiting)
	waiting.SetReadDeadline(time.Now().Add(time.Second))
	if b, err := waitingR.ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a connection opened while overloaded was served (read %q, %v): %s", b, err, mem.describe(mem.scrape()))
	}
	m = mem.scrape()
	if m["mosnlite_memory_overloaded"] != 1 || m[pauseSeries] < 1 {
		t.Fatalf("the overload ended while the traffic was held: %s", mem.describe(m))
	}
	if code := p.Wait(10 * time.Millisecond); code != -1 {
		t.Fatalf("mosnlite exited with %d under memory pressure", code)
	}

	// Recovery: the clients go, and nothing else runs in the process. The end of the
	// overload is watched in the process's log, not on /metrics: a scrape allocates in
	// the process, and enough scrapes would collect the garbage in its place.
	resumes := strings.Count(p.Logs(), resumedLog)
	for _, c := range pressure {
		c.Close()
	}
	pressure = nil
	released := time.Now()
	if !waitLogCount(p, resumedLog, resumes+1, recoverIn) {
		t.Fatalf("still overloaded %v after every client closed: %s", recoverIn, mem.describe(mem.scrape()))
	}
	recovered := time.Since(released)
	if m := mem.scrape(); m["mosnlite_memory_overloaded"] != 0 {
		t.Fatalf("the overload ended in the log, not on /metrics: %s", mem.describe(m))
	}
	t.Logf("recovered %v after the clients closed: %s", recovered.Round(time.Millisecond), mem.describe(mem.scrape()))
	waiting.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(waitingR, nil)
	if err != nil {
		t.Fatalf("the connection that waited in the backlog: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("the connection that waited in the backlog: %d %q, want 200 ok", resp.StatusCode, body)
	}
	if code, body := getBody(t, "http://"+listen+"/small"); code != http.StatusOK || body != "ok" {
		t.Fatalf("a new request after recovery: %d %q, want 200 ok", code, body)
	}
	t.Logf("peak use %.1f MiB of a %d MiB limit", float64(mem.peak)/(1<<20), limit>>20)
	keep.Close()
	waiting.Close()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
}

const (
	// pauseSeries counts the pauses of the pressure test's listener.
	pauseSeries = `mosnlite_downstream_accept_overload_pauses_total{listener="l7"}`
	// resumedLog is logged when the overload ends (overload.Memory.Check).
	resumedLog = "memory back under its limit: listeners accept again"
)

// waitLogCount waits up to d until the process has logged s n times or more.
func waitLogCount(p *framework.Proxy, s string, n int, d time.Duration) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if strings.Count(p.Logs(), s) >= n {
			return true
		}
	}
	return strings.Count(p.Logs(), s) >= n
}

// pressureUpstream answers /big with pressureBody bytes (more than the sockets between it
// and a client that reads nothing can buffer) and anything else with "ok".
type pressureUpstream struct {
	addr      string
	streaming atomic.Int64 // /big responses whose first bytes were written
}

const pressureBody = 32 << 20

func startPressureUpstream(t *testing.T) *pressureUpstream {
	u := &pressureUpstream{}
	chunk := make([]byte, 64<<10)
	u.addr = h1Upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(pressureBody))
		for sent := 0; sent < pressureBody; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			if sent == 0 {
				u.streaming.Add(1)
			}
		}
	})
	return u
}

// pressureConfig is an HTTP/1 listener "l7" routing everything to upstream, with the
// request-header and route timeouts well past the test, so that only the clients end
// what the proxy holds for them.
func pressureConfig(listen, upstream string) string {
	cfg := map[string]any{
		"servers": []any{map[string]any{
			"default_log_path": "stderr",
			"routers": []any{map[string]any{
				"router_config_name": "r",
				"virtual_hosts": []any{map[string]any{"name": "v", "domains": []any{"*"}, "routers": []any{
					routeTo("/", map[string]any{"timeout": "120s"}),
				}}},
			}},
			"listeners": []any{map[string]any{
				"name": "l7", "address": listen, "bind_port": true,
				"filter_chains": []any{map[string]any{"filters": []any{map[string]any{
					"type": "proxy", "config": map[string]any{
						"downstream_protocol": "Http1", "router_config_name": "r",
						"extend_config": map[string]any{"request_header_timeout": "120s"},
					},
				}}}},
			}},
		}},
		"cluster_manager": map[string]any{"clusters": []any{map[string]any{
			"name": "up", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "connect_timeout": "2s",
			"hosts": []any{map[string]any{"address": upstream}},
		}}},
		"drain": map[string]any{"timeout": "10s"},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// dialSlowReader connects with a small receive buffer, so that a response the client
// does not read stops in the proxy rather than in the client's socket.
func dialSlowReader(addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
		}); err != nil {
			return err
		}
		return serr
	}}
	return d.Dial("tcp", addr)
}

// pressureRequest sends a GET for path on c and reads the answer (status, body).
func pressureRequest(t *testing.T, c net.Conn, r *bufio.Reader, path string) (int, string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: keep\r\n\r\n")); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// memWatch reads the process's memory figures from its admin endpoint and keeps the
// peak of the memory the runtime counts against its limit.
type memWatch struct {
	t     *testing.T
	p     *framework.Proxy
	admin string
	peak  float64
}

// scrape reads /metrics as series → value; a failure fails the test (the admin endpoint
// must answer under memory pressure).
func (w *memWatch) scrape() map[string]float64 {
	w.t.Helper()
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}}
	resp, err := c.Get("http://" + w.admin + "/metrics")
	if err != nil {
		w.t.Fatalf("admin /metrics: %v", err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		i := strings.LastIndexByte(l, ' ')
		if i < 0 || strings.HasPrefix(l, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			m[l[:i]] = v
		}
	}
	if err := sc.Err(); err != nil {
		w.t.Fatalf("admin /metrics: %v", err)
	}
	if u := memUsed(m); u > w.peak {
		w.peak = u
	}
	return m
}

// tripsWithin polls the overload gauge for up to d and reports when it read 1.
func (w *memWatch) tripsWithin(d time.Duration) (at time.Time, ok bool) {
	w.t.Helper()
	for end := time.Now().Add(d); ; time.Sleep(50 * time.Millisecond) {
		if w.scrape()["mosnlite_memory_overloaded"] == 1 {
			return time.Now(), true
		}
		if time.Now().After(end) {
			return time.Time{}, false
		}
	}
}

// holds reports whether the overload lasts d: every sample of the gauge reads 1 and the
// process logs no end of it meanwhile.
func (w *memWatch) holds(d time.Duration) bool {
	w.t.Helper()
	resumes := strings.Count(w.p.Logs(), resumedLog)
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(100 * time.Millisecond)
		if w.scrape()["mosnlite_memory_overloaded"] != 1 || strings.Count(w.p.Logs(), resumedLog) != resumes {
			return false
		}
	}
	return true
}

// memUsed is what overload.Memory compares with the limit: memory mapped by the runtime
// less what it returned to the OS.
func memUsed(m map[string]float64) float64 {
	return m["go_memstats_sys_bytes"] - m["go_memstats_heap_released_bytes"]
}

func (w *memWatch) describe(m map[string]float64) string {
	const mib = 1 << 20
	return fmt.Sprintf("use %.1f MiB (heap in use %.1f MiB, free %.1f MiB, released %.1f MiB), %v collections, overloaded %v, %v pauses",
		memUsed(m)/mib, m["go_memstats_heap_inuse_bytes"]/mib,
		(m["go_memstats_heap_idle_bytes"]-m["go_memstats_heap_released_bytes"])/mib, m["go_memstats_heap_released_bytes"]/mib,
		m["go_gc_duration_seconds_count"], m["mosnlite_memory_overloaded"], m[pauseSeries])
}

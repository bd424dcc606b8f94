//go:build linux

package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// The event loop's wait for a host after a refused connect (loopConn.waitPick): the first
// pick gets a host at once, that host refuses, and the next pick waits on a goroutine
// (Attempts.WaitPick) for a host that is down, as the goroutine path's dial does.

// waitPickFn is how runtime stacks name the goroutine that waits.
const waitPickFn = "cluster.(*Attempts).WaitPick"

// pickWaitEnv is a loop proxy whose cluster "c" has a host that refuses connections (up)
// and an origin (down).
type pickWaitEnv struct {
	*env
	cl      *cluster.Cluster
	dead    string
	o       *origin
	logPath string
}

func startPickWait(t *testing.T, routeTimeout, pickTimeout string) *pickWaitEnv {
	t.Helper()
	o := startOrigin(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "live") })
	dead := testutil.RefusedAddr(t)
	logPath := filepath.Join(t.TempDir(), "access.log")
	e := newTestEnv(t, fmt.Sprintf(`{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
		{"match":{"prefix":"/"},"route":{"cluster_name":"c","timeout":%q}}]}]}`, routeTimeout),
		fmt.Sprintf(`[{"name":"c","type":"SIMPLE","lb_type":"LB_ROUNDROBIN","pick_timeout":%q,
		"hosts":[{"address":%q},{"address":%q}]}]`, pickTimeout, dead, o.addr()),
		"r", true, withAccessLog(t, logPath, "%response_code% %response_flag%"))
	cl, _ := e.clusters.Get("c")
	cl.SetHostHealth(o.addr(), false)
	return &pickWaitEnv{env: e, cl: cl, dead: dead, o: o, logPath: logPath}
}

// refusals is how many connects to the refusing host failed.
func (e *pickWaitEnv) refusals() float64 {
	var d dto.Metric
	_ = e.m.UpstreamCxConnectFail.WithLabelValues("c", e.dead).Write(&d)
	return d.GetCounter().GetValue()
}

// send writes a GET on c and reads its answer on a goroutine.
func send(t *testing.T, c net.Conn, br *bufio.Reader) <-chan answer {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	out := make(chan answer, 1)
	go func() {
		start := time.Now()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			out <- answer{body: err.Error(), after: time.Since(start)}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out <- answer{code: resp.StatusCode, body: string(b), after: time.Since(start)}
	}()
	return out
}

type answer struct {
	code  int
	body  string
	after time.Duration
}

// waiting waits for the request to be refused by the first host and to wait on a
// goroutine, unanswered.
func (e *pickWaitEnv) waiting(t *testing.T, out <-chan answer) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, "the refusing host tried", func() bool { return e.refusals() >= 1 })
	select {
	case a := <-out:
		t.Fatalf("answered %d %q after the only healthy host refused, with another host down", a.code, a.body)
	case <-time.After(100 * time.Millisecond): // still waiting (not an assertion's timing)
	}
	testutil.Eventually(t, 5*time.Second, "a goroutine waiting for a host", func() bool { return testutil.Goroutines(waitPickFn) == 1 })
}

// settled checks that the wait's goroutine ended and gave back what it held.
func (e *pickWaitEnv) settled(t *testing.T, breakers ...cluster.Breaker) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, "the wait's goroutine ended", func() bool { return testutil.Goroutines(waitPickFn) == 0 })
	for _, b := range breakers {
		testutil.Eventually(t, 5*time.Second, fmt.Sprintf("breaker %d released", b), func() bool {
			n, _ := e.cl.Usage(b)
			return n == 0
		})
	}
}

func recv(t *testing.T, out <-chan answer) answer {
	t.Helper()
	select {
	case a := <-out:
		return a
	case <-time.After(testTimeout):
		t.Fatal("no answer")
	}
	return answer{}
}

// The host picked first refuses and the other is down: the loop waits for it and
// answers 200 once it comes up, without handing the connection to a goroutine.
func TestLoopDialRetryWaitsForHost(t *testing.T) {
	e := startPickWait(t, "10s", "10s")
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	out := send(t, c, br)
	e.waiting(t, out)
	e.cl.SetHostHealth(e.o.addr(), true)
	if a := recv(t, out); a.code != 200 || a.body != "live" {
		t.Fatalf("answer %d %q; want 200 from the host that came up", a.code, a.body)
	}
	e.settled(t, cluster.MaxPendingRequests, cluster.MaxRequests)
	// The connection goes on serving.
	if a := recv(t, send(t, c, br)); a.code != 200 || a.body != "live" {
		t.Fatalf("next request: %d %q", a.code, a.body)
	}
	if lines := logLines(t, e.px.AccessLog().Flush, e.logPath, 2); len(lines) != 2 || lines[0] != "200 -" {
		t.Fatalf("access log %q; want a first line %q", lines, "200 -")
	}
	e.noHandoffs(t)
}

// The wait ends with a bound: no host comes up within pick_timeout (503 once it passed,
// logged as a connect failure), or a route timeout shorter than pick_timeout passes (504
// at that timeout). Either way the connection stays usable, as after an immediate answer.
func TestLoopDialRetryWaitBounded(t *testing.T) {
	for _, tc := range []struct {
		name, route, pick string
		code              int
		log               string
	}{
		{"pick_timeout", "10s", "300ms", http.StatusServiceUnavailable, "503 UF"},
		{"route_timeout", "300ms", "10s", http.StatusGatewayTimeout, "504 UT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startPickWait(t, tc.route, tc.pick)
			c := dial(t, e.addr)
			br := bufio.NewReader(c)
			a := recv(t, send(t, c, br))
			if a.code != tc.code {
				t.Fatalf("answer %d %q; want %d", a.code, a.body, tc.code)
			}
			if a.after < 250*time.Millisecond || a.after > 5*time.Second {
				t.Fatalf("%d after %v; want it at the bound (300ms)", a.code, a.after)
			}
			e.settled(t, cluster.MaxConnections, cluster.MaxPendingRequests, cluster.MaxRequests)
			if lines := logLines(t, e.px.AccessLog().Flush, e.logPath, 1); len(lines) != 1 || lines[0] != tc.log {
				t.Fatalf("access log %q; want %q", lines, tc.log)
			}
			e.cl.SetHostHealth(e.o.addr(), true)
			if a := recv(t, send(t, c, br)); a.code != 200 || a.body != "live" {
				t.Fatalf("next request on the connection: %d %q", a.code, a.body)
			}
			e.noHandoffs(t)
		})
	}
}

// A client that leaves during the wait gets no answer; the wait ends at once (its
// goroutine, its breaker units), and the loop serves other connections.
func TestLoopDialRetryWaitClientLeaves(t *testing.T) {
	e := startPickWait(t, "10s", "10s")
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	out := send(t, c, br)
	e.waiting(t, out)
	// Another connection's request waits as well, and is answered once the origin is up.
	c2 := dial(t, e.addr)
	out2 := send(t, c2, bufio.NewReader(c2))
	testutil.Eventually(t, 5*time.Second, "the second request waiting too", func() bool { return testutil.Goroutines(waitPickFn) == 2 })
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if a := recv(t, out); a.code != 0 || a.body != io.ErrUnexpectedEOF.Error() && a.body != io.EOF.Error() {
		t.Fatalf("answered %d %q to a client that left", a.code, a.body)
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read %d bytes (%v) after the close; want EOF", n, err)
	}
	testutil.Eventually(t, 5*time.Second, "the first wait ended", func() bool { return testutil.Goroutines(waitPickFn) == 1 })
	e.cl.SetHostHealth(e.o.addr(), true)
	if a := recv(t, out2); a.code != 200 || a.body != "live" {
		t.Fatalf("the other connection: %d %q", a.code, a.body)
	}
	e.settled(t, cluster.MaxPendingRequests, cluster.MaxRequests)
	if n, _ := e.cl.Usage(cluster.MaxConnections); n != 1 {
		t.Fatalf("max_connections in use = %d; want 1 (the second request's connection, idle)", n)
	}
	lines := logLines(t, e.px.AccessLog().Flush, e.logPath, 2)
	if len(lines) != 2 || (lines[0] != "0 DC" && lines[1] != "0 DC") {
		t.Fatalf("access log %q; want a line %q for the client that left", lines, "0 DC")
	}
	e.noHandoffs(t)
}

// The listener's drain runs out (connections forced closed, loops stopped) during the
// wait: the client gets no answer, and the wait ends with everything it held.
func TestLoopDialRetryWaitForcedClose(t *testing.T) {
	var (
		e   *pickWaitEnv
		out <-chan answer
	)
	var c net.Conn
	t.Run("wait", func(t *testing.T) {
		e = startPickWait(t, "10s", "10s")
		var err error
		if c, err = net.DialTimeout("tcp", e.addr, testTimeout); err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		out = send(t, c, bufio.NewReader(c))
		e.waiting(t, out)
		// The subtest's cleanup drains the listener at once (ForceClose), then stops the loop.
	})
	if c == nil {
		return
	}
	defer c.Close()
	if a := recv(t, out); a.code != 0 {
		t.Fatalf("answered %d %q to a connection forced closed", a.code, a.body)
	}
	e.settled(t, cluster.MaxConnections, cluster.MaxPendingRequests, cluster.MaxRequests)
}

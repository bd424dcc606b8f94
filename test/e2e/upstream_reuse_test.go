package e2e

//lint:file-ignore SA1019 x/net/http2's Transport is the h2c client the other HTTP/2 tests use too.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/test/framework"
)

// TestUpstreamReuse: HTTP/1 upstreams that close pooled keep-alive connections, behind
// both HTTP/1 paths (event loops, goroutines) and an h2c listener, with no retry policy.
// Three upstreams:
//   - idle: net/http with a 50 ms IdleTimeout; clients pause 30-70 ms between bursts, so
//     the proxy often takes a connection the upstream is closing;
//   - raw: answers 1-5 requests per connection, then closes after the last answer, with
//     "Connection: close", with a plain FIN, or with a RST;
//   - rc: answers 1-5 requests, then reads one more in full and closes (FIN or RST)
//     without answering it: the upstream may have acted on that request.
//
// Every request carries a unique id and the upstreams count the ids they read. Correct:
// each answer is the one for its own request, a failure is a clean 502; a GET is answered
// 200 unless the upstream read it and dropped it twice (it is sent again once when a
// reused connection breaks before any answer byte); a POST is never read twice (Go's
// Transport and nginx do not resend a non-idempotent request once it was written). A POST
// may still fail unread when the upstream closes the connection between the proxy's look
// at it and its write: no proxy can tell that from a POST the upstream read, so those are
// only logged.
func TestUpstreamReuse(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	seen := &reuseSeen{m: map[string]int{}}
	idle := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		id := r.Header.Get(reuseIDHeader)
		seen.add(id)
		_, _ = io.WriteString(w, reuseAnswer(id, len(body)))
	}))
	idle.Config.IdleTimeout = 50 * time.Millisecond
	idle.Start()
	t.Cleanup(idle.Close)
	var connSeq atomic.Uint64
	draw := func(readLast bool) (int, int) {
		rng := rand.New(rand.NewPCG(^seed, connSeq.Add(1)))
		if readLast {
			return 1 + rng.IntN(5), 1 + rng.IntN(2)
		}
		return 1 + rng.IntN(5), rng.IntN(3)
	}
	raw := framework.StartTCP(t, func(c *net.TCPConn) {
		n, how := draw(false)
		serveReuseRaw(c, seen, n, how, false)
	})
	rc := framework.StartTCP(t, func(c *net.TCPConn) {
		n, how := draw(true)
		serveReuseRaw(c, seen, n, how, true)
	})

	clusters := map[string]string{"idle": hostOf(idle), "raw": raw.Addr(), "rc": rc.Addr()}
	routes := []any{
		clusterRoute("/idle", "idle", nil), clusterRoute("/raw", "raw", nil), clusterRoute("/rc", "rc", nil),
	}
	a := reuseProxies(t, clusters, routes)
	h2c := h2cClient(t)
	paths := a.paths(h2c, false)
	const workers, bursts = 4, 50
	var mu sync.Mutex
	var all []*reuseReq
	var wg sync.WaitGroup
	for pi, pa := range paths {
		for wi := 0; wi < workers; wi++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w := &reuseWorker{rng: rand.New(rand.NewPCG(seed, uint64(pi*100+wi)))}
				defer w.close()
				var mine []*reuseReq
				for b := 0; b < bursts; b++ {
					target := []string{"idle", "idle", "raw", "rc"}[w.rng.IntN(4)]
					for k := 1 + w.rng.IntN(4); k > 0; k-- {
						r := w.newReq(fmt.Sprintf("%s-%d-%d", pa.name, wi, len(mine)), pa.name, target)
						r.res = pa.do(w, r)
						mine = append(mine, r)
					}
					if target == "idle" {
						time.Sleep(time.Duration(30+w.rng.IntN(41)) * time.Millisecond)
					} else {
						time.Sleep(time.Duration(w.rng.IntN(3)) * time.Millisecond)
					}
				}
				mu.Lock()
				all = append(all, mine...)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	idle.CloseClientConnections()
	raw.CloseConns()
	rc.CloseConns()

	// Outcomes by path, target and method.
	type key struct{ path, target, method string }
	type tally struct{ n, failed, neverSeen, dup, retried int }
	tallies := map[key]*tally{}
	var bugs []string
	for _, r := range all {
		k := key{r.path, r.target, r.method}
		tl := tallies[k]
		if tl == nil {
			tl = &tally{}
			tallies[k] = tl
		}
		tl.n++
		cnt := seen.get(r.id)
		ok := r.res.err == nil && r.res.status == 200
		if !ok {
			tl.failed++
			if cnt == 0 {
				tl.neverSeen++
			}
		}
		switch {
		case ok && r.res.body != reuseAnswer(r.id, len(r.body)):
			bugs = append(bugs, fmt.Sprintf("%s: answer %q is not its own", r, r.res.body))
		case r.res.err == nil && !ok && r.res.status != http.StatusBadGateway:
			bugs = append(bugs, fmt.Sprintf("%s: status %d", r, r.res.status))
		case r.method == "POST" && cnt > 1:
			tl.dup++
			bugs = append(bugs, fmt.Sprintf("%s: the upstream read it %d times (answered %v)", r, cnt, ok))
		case r.method == "GET" && !ok && cnt < 2:
			// Dropped with nothing read, or read once and not sent again.
			bugs = append(bugs, fmt.Sprintf("%s: failed (%v, status %d; the upstream read it %d times)", r, r.res.err, r.res.status, cnt))
		case r.method == "GET" && cnt > 1:
			tl.retried++
		case !ok && cnt == 0:
			t.Logf("%s: 502, not read by the upstream (it closed the connection as the request went out)", r)
		}
	}
	var lines []string
	for k, tl := range tallies {
		lines = append(lines, fmt.Sprintf("%-10s %-4s %-4s %4d requests, %3d failed (%d never read by the upstream), %d duplicated, %d GETs resent",
			k.path, k.target, k.method, tl.n, tl.failed, tl.neverSeen, tl.dup, tl.retried))
	}
	sort.Strings(lines)
	t.Logf("%d requests\n%s", len(all), strings.Join(lines, "\n"))
	sort.Strings(bugs)
	for i, b := range bugs {
		if i == 300 {
			t.Errorf("... %d more", len(bugs)-i)
			break
		}
		t.Error(b)
	}
}

// TestUpstreamReuseClosed: the two cases behind TestUpstreamReuse, one request at a time,
// for each path (event loops, goroutines, h2c, h2c through a stream filter, which takes
// the full HTTP/2 path) and kind of request, with the upstream closing by FIN and by RST.
//   - gone: the upstream answered a request, then closed the connection; the next
//     request comes 20 ms later. The upstream cannot have read it: it must be answered 200
//     (the proxy notices the closed connection, or sends the request on a new one).
//   - read: the upstream answered a request, then read the next one and closed without
//     answering. A GET or PUT may be sent again (then the new connection answers it); a
//     POST must not: 502, read once.
func TestUpstreamReuseClosed(t *testing.T) {
	seen := &reuseSeen{m: map[string]int{}}
	clusters := map[string]string{}
	var routes []any
	for _, c := range []struct {
		name     string
		how      int
		readLast bool
	}{{"gone-fin", 1, false}, {"gone-rst", 2, false}, {"read-fin", 1, true}, {"read-rst", 2, true}} {
		s := framework.StartTCP(t, func(conn *net.TCPConn) { serveReuseRaw(conn, seen, 1, c.how, c.readLast) })
		clusters[c.name] = s.Addr()
		routes = append(routes, clusterRoute("/"+c.name, c.name, nil))
	}
	a := reuseProxies(t, clusters, routes)
	h2c := h2cClient(t)
	kinds := []struct {
		name, method string
		n            int
		chunked      bool
	}{
		{"GET", "GET", 0, false}, {"PUT", "PUT", 100, false}, {"POST-empty", "POST", 0, false},
		{"POST", "POST", 100, false}, {"POST-chunked", "POST", 100, true}, {"POST-big", "POST", 200 << 10, false},
	}
	paths := a.paths(h2c, true)
	readCases, readReused := 0, 0
	defer func() {
		if readReused*2 < readCases {
			t.Errorf("only %d of %d GET/PUT requests to an upstream that reads and closes went on a pooled connection", readReused, readCases)
		}
	}()
	for _, pa := range paths {
		for _, k := range kinds {
			for _, target := range []string{"gone-fin", "gone-rst", "read-fin", "read-rst"} {
				name := pa.name + "/" + k.name + "/" + target
				w := &reuseWorker{}
				warm := &reuseReq{id: name + "/warm", method: "GET", target: target}
				if res := pa.do(w, warm); res.err != nil || res.status != 200 {
					t.Errorf("%s: %v, status %d", warm, res.err, res.status)
				}
				if strings.HasPrefix(target, "gone") {
					time.Sleep(20 * time.Millisecond)
				}
				r := &reuseReq{id: name, method: k.method, target: target,
					body: bytes.Repeat([]byte{'b'}, k.n), chunked: k.chunked}
				res := pa.do(w, r)
				w.close()
				ok, cnt := res.err == nil && res.status == 200, seen.get(r.id)
				switch {
				case ok && res.body != reuseAnswer(r.id, k.n):
					t.Errorf("%s: answer %q is not its own", r, res.body)
				case !ok && (res.err != nil || res.status != http.StatusBadGateway):
					t.Errorf("%s: %v, status %d", r, res.err, res.status)
				case strings.HasPrefix(target, "gone") && !ok:
					t.Errorf("%s: 502, and the upstream never read it (the pooled connection was closed 20 ms before)", r)
				case k.method == "POST" && cnt > 1:
					t.Errorf("%s: the upstream read it %d times (answered %d): a POST the upstream may have acted on was sent again", r, cnt, res.status)
				case k.method != "POST" && ok && strings.HasPrefix(target, "read"):
					// 2: read on the pooled connection, then resent on a new one. 1: it
					// went on a new connection first (the warm-up's connection was not
					// back in the pool yet, seen under heavy load): fine, but not the
					// case under test; most must be.
					readCases++
					switch cnt {
					case 2:
						readReused++
					case 1:
						t.Logf("%s: answered on a new connection; the pooled one was not used", r)
					default:
						t.Errorf("%s: answered 200, the upstream read it %d times", r, cnt)
					}
				}
			}
		}
	}
}

// reuseAddrs are the proxy listeners of reuseProxies.
type reuseAddrs struct {
	h1, h1Off, h2, h2Filters string
}

// reuseProxies starts a proxy with an HTTP/1 listener on event loops and two h2c
// listeners, one with a stream filter (which takes the full HTTP/2 path, h2ToH1), all to
// HTTP/1 upstreams; and one with an HTTP/1 listener on goroutines.
// reusePath is one way a request reaches the proxy: do sends it on a worker's connection.
type reusePath struct {
	name string
	do   func(w *reuseWorker, r *reuseReq) reuseResult
}

// paths are the event-loop and goroutine HTTP/1 listeners and the h2c one, and with
// filters the h2c listener whose stream filters take the full h2ToH1 path.
func (a reuseAddrs) paths(h2c *http.Client, filters bool) []reusePath {
	ps := []reusePath{
		{"loops", func(w *reuseWorker, r *reuseReq) reuseResult { return w.rawDo(a.h1, r) }},
		{"goroutines", func(w *reuseWorker, r *reuseReq) reuseResult { return w.rawDo(a.h1Off, r) }},
		{"h2c", func(w *reuseWorker, r *reuseReq) reuseResult { return h2cReuseDo(h2c, a.h2, r) }},
	}
	if filters {
		ps = append(ps, reusePath{"h2c-filters", func(w *reuseWorker, r *reuseReq) reuseResult { return h2cReuseDo(h2c, a.h2Filters, r) }})
	}
	return ps
}

func reuseProxies(t *testing.T, clusters map[string]string, routes []any) reuseAddrs {
	a := reuseAddrs{h1: framework.FreePort(t), h2: framework.FreePort(t), h2Filters: framework.FreePort(t)}
	h2 := map[string]any{"downstream_protocol": "Http2", "upstream_protocol": "Http1"}
	cfg := soakConfig(t, []soakListener{
		{name: "h1", addr: a.h1, proxy: map[string]any{"downstream_protocol": "Http1", "upstream_protocol": "Http1"}, routes: routes},
		{name: "h2", addr: a.h2, proxy: h2, routes: routes},
		{name: "h2f", addr: a.h2Filters, proxy: h2, routes: routes},
	}, clusters)
	framework.StartProxy(t, withNoopFilter(t, cfg, nil, "h2f"))
	t.Setenv("MOSNLITE_EVENT_LOOPS", "off")
	a.h1Off = framework.FreePort(t)
	framework.StartProxy(t, soakConfig(t, []soakListener{
		{name: "h1", addr: a.h1Off, proxy: map[string]any{"downstream_protocol": "Http1", "upstream_protocol": "Http1"}, routes: routes},
	}, clusters))
	return a
}

const reuseIDHeader = "X-Reuse-Id"

func reuseAnswer(id string, n int) string { return fmt.Sprintf("ok %s %d", id, n) }

// reuseSeen counts the requests the upstreams read, by id.
type reuseSeen struct {
	mu sync.Mutex
	m  map[string]int
}

func (s *reuseSeen) add(id string) {
	s.mu.Lock()
	s.m[id]++
	s.mu.Unlock()
}

func (s *reuseSeen) get(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[id]
}

// serveReuseRaw answers n requests on c, then closes it. Without readLast the last
// answer ends the connection: how 0 sends it with "Connection: close", 1 closes with a
// FIN after it, 2 with a RST. With readLast one more request is read in full (and
// counted) and the connection closes without an answer (how 2: RST, else FIN).
func serveReuseRaw(c *net.TCPConn, seen *reuseSeen, n, how int, readLast bool) {
	br := bufio.NewReader(c)
	for i := 0; ; i++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		id := req.Header.Get(reuseIDHeader)
		seen.add(id)
		if i == n {
			break // readLast: read, not answered
		}
		last := i == n-1 && !readLast
		ans := reuseAnswer(id, len(body))
		hdr := ""
		if last && how == 0 {
			hdr = "Connection: close\r\n"
		}
		if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s", len(ans), hdr, ans); err != nil {
			return
		}
		if last {
			break
		}
	}
	if how == 2 {
		_ = c.SetLinger(0)
	}
}

// reuseReq is one request of a worker and what came of it.
type reuseReq struct {
	id, path, target, method string
	body                     []byte
	chunked                  bool
	res                      reuseResult
}

type reuseResult struct {
	status int
	body   string
	err    error
}

func (r *reuseReq) String() string {
	f := "length"
	if r.chunked {
		f = "chunked"
	}
	return fmt.Sprintf("%s %s /%s (%d bytes, %s)", r.id, r.method, r.target, len(r.body), f)
}

// reuseWorker is one client: an HTTP/1 connection to the proxy kept alive across
// requests (raw socket), or the shared h2c client.
type reuseWorker struct {
	rng *rand.Rand
	c   net.Conn
	br  *bufio.Reader
}

func (w *reuseWorker) close() {
	if w.c != nil {
		_ = w.c.Close()
		w.c = nil
	}
}

// newReq draws a GET (half), or a POST with no body, a small one or (one in ten) a
// 200 KiB one, sent with a length or chunked.
func (w *reuseWorker) newReq(id, path, target string) *reuseReq {
	r := &reuseReq{id: id, path: path, target: target, method: "GET"}
	if w.rng.IntN(2) == 0 {
		return r
	}
	r.method = "POST"
	n := 0
	switch x := w.rng.IntN(10); {
	case x == 0:
		n = 200 << 10
	case x < 3:
	default:
		n = 1 + w.rng.IntN(4096)
	}
	r.body = bytes.Repeat([]byte{'a' + byte(w.rng.IntN(26))}, n)
	r.chunked = n > 0 && w.rng.IntN(2) == 0
	return r
}

// rawDo sends r on the worker's connection to addr (dialled when there is none) and reads
// the answer; the connection is dropped after an error or a "Connection: close".
func (w *reuseWorker) rawDo(addr string, r *reuseReq) reuseResult {
	if w.c == nil {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return reuseResult{err: err}
		}
		w.c, w.br = c, bufio.NewReader(c)
	}
	_ = w.c.SetDeadline(time.Now().Add(5 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s /%s/x HTTP/1.1\r\nHost: reuse\r\n%s: %s\r\n", r.method, r.target, reuseIDHeader, r.id)
	switch {
	case r.chunked:
		half := len(r.body) / 2
		fmt.Fprintf(&b, "Transfer-Encoding: chunked\r\n\r\n")
		for _, p := range [][]byte{r.body[:half], r.body[half:]} {
			if len(p) > 0 {
				fmt.Fprintf(&b, "%x\r\n%s\r\n", len(p), p)
			}
		}
		b.WriteString("0\r\n\r\n")
	case r.method != "GET":
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(r.body))
		b.Write(r.body)
	default:
		b.WriteString("\r\n")
	}
	res := reuseResult{}
	if _, err := w.c.Write(b.Bytes()); err != nil {
		w.close()
		return reuseResult{err: err}
	}
	resp, err := http.ReadResponse(w.br, nil)
	if err != nil {
		w.close()
		return reuseResult{err: err}
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	res.status, res.body, res.err = resp.StatusCode, string(got), err
	if err != nil || resp.Close {
		w.close()
	}
	return res
}

// h2cReuseDo sends r through the h2c client.
func h2cReuseDo(c *http.Client, addr string, r *reuseReq) reuseResult {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var body io.Reader
	if r.method != "GET" {
		body = bytes.NewReader(r.body)
		if r.chunked {
			body = io.MultiReader(body) // no length: sent without content-length
		}
	}
	req, err := http.NewRequestWithContext(ctx, r.method, "http://"+addr+"/"+r.target+"/x", body)
	if err != nil {
		return reuseResult{err: err}
	}
	req.Header.Set(reuseIDHeader, r.id)
	if r.method != "GET" && !r.chunked {
		req.ContentLength = int64(len(r.body))
	}
	resp, err := c.Do(req)
	if err != nil {
		return reuseResult{err: err}
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return reuseResult{status: resp.StatusCode, body: string(got), err: err}
}

// withNoopFilter returns cfg (a soakConfig) with a fault filter that never aborts on the
// listeners named: a listener with a stream filter serves on the goroutine path (HTTP/1)
// or through the filters (HTTP/2). edit, when not nil, changes the decoded config first.
func withNoopFilter(t *testing.T, cfg string, edit func(doc map[string]any), names ...string) string {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal([]byte(cfg), &doc); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(doc)
	}
	for _, l := range doc["servers"].([]any)[0].(map[string]any)["listeners"].([]any) {
		if l := l.(map[string]any); slices.Contains(names, l["name"].(string)) {
			l["stream_filters"] = []any{map[string]any{"type": "fault",
				"config": map[string]any{"abort": map[string]any{"status": 500, "percentage": 0}}}}
		}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

package e2e

//lint:file-ignore SA1019 x/net/http2's Transport is the h2c client the other HTTP/2 tests use too.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/test/framework"
	"github.com/mosnlite/mosnlite/test/framework/rpcpeer"
)

// TestIntegritySoak: the proxy never garbles a request. Concurrent keep-alive clients of
// every protocol (HTTP/1 on event loops, with pipelining on two connections; HTTP/1 on a
// goroutine per connection, in a second process; h2c to h2c; tcp_proxy on event loops and
// on goroutines; bolt; dubbo) send requests whose bodies are slices of one random buffer,
// 0 B to 1 MiB, and whose upstream behaviour the request itself chooses: echo the body
// with the request's id and the SHA-256 of what the upstream received, after 0-50 ms;
// answer 500 (bolt: ServerException, dubbo: a service error) with the same echo; send
// half of the answer and then close the connection (h2: RST_STREAM); or reset before
// answering. The upstreams check the body they got against the SHA-256 the client sent.
//
// Every answer that completes must be byte-exact for its own request: id, status, the
// upstream's SHA-256, the body (and on h2 the trailer). A request whose upstream failed
// on purpose must end in a clean error (a 5xx from the proxy, an error frame, a reset
// stream, a closed connection), never in a complete answer. A request whose upstream
// behaved must succeed; the one exception is bolt and dubbo requests routed to the
// cluster whose upstream cuts connections ("faulty"): a multiplexed upstream connection
// that closes fails every request pending on it, and the proxy answers those with an
// error frame (counted as collateral). After the load the processes must be back at the
// resources they held before it (framework.LeakCheck), and exit 0 on SIGTERM.
//
// The requests each worker sends derive from one seed, logged at the start:
// MOSNLITE_SOAK_SEED=N replays a run's requests (not its timing).
func TestIntegritySoak(t *testing.T) {
	seed := soakSeed(t)
	began := time.Now()
	var phases []string
	phase := func(name string) {
		phases = append(phases, fmt.Sprintf("%s %v", name, time.Since(began).Round(10*time.Millisecond)))
	}
	data := soakData(seed, 0)

	upErrs := &soakNotes{}
	h1Up := httptest.NewServer(soakHTTPHandler(upErrs))
	t.Cleanup(h1Up.Close)
	h2Up := httptest.NewUnstartedServer(soakHTTPHandler(upErrs))
	h2Up.Config.Protocols = new(http.Protocols)
	h2Up.Config.Protocols.SetUnencryptedHTTP2(true)
	h2Up.Start()
	t.Cleanup(h2Up.Close)
	tcpUp := framework.StartTCP(t, func(c *net.TCPConn) { serveSoakTCP(c, upErrs) })
	boltGood := framework.StartTCP(t, func(c *net.TCPConn) { serveSoakBolt(c, upErrs) })
	boltFaulty := framework.StartTCP(t, func(c *net.TCPConn) { serveSoakBolt(c, upErrs) })
	dubboGood := framework.StartTCP(t, func(c *net.TCPConn) { serveSoakDubbo(c, upErrs) })
	dubboFaulty := framework.StartTCP(t, func(c *net.TCPConn) { serveSoakDubbo(c, upErrs) })
	dropUpstreams := func() {
		h1Up.CloseClientConnections()
		h2Up.CloseClientConnections()
		for _, s := range []*framework.TCPServer{tcpUp, boltGood, boltFaulty, dubboGood, dubboFaulty} {
			s.CloseConns()
		}
	}

	h1, h2, tcp, boltL, dubboL := framework.FreePort(t), framework.FreePort(t), framework.FreePort(t),
		framework.FreePort(t), framework.FreePort(t)
	clusters := map[string]string{
		"h1up": hostOf(h1Up), "h2up": hostOf(h2Up), "tcpup": tcpUp.Addr(),
		"bolt-good": boltGood.Addr(), "bolt-faulty": boltFaulty.Addr(),
		"dubbo-good": dubboGood.Addr(), "dubbo-faulty": dubboFaulty.Addr(),
	}
	p := framework.StartProxy(t, soakConfig(t, []soakListener{
		soakHTTPListener("h1", h1, "Http1", "h1up"),
		soakHTTPListener("h2", h2, "Http2", "h2up"),
		soakTCPListener("tcp", tcp, "tcpup"),
		{name: "bolt", addr: boltL, proxy: map[string]any{"downstream_protocol": "bolt"}, routes: []any{
			rpcRoute("bolt-good", "", hdr{"service", soakGoodService}),
			rpcRoute("bolt-faulty", "", hdr{"service", soakFaultyService}),
		}},
		{name: "dubbo", addr: dubboL, proxy: map[string]any{"downstream_protocol": "X",
			"extend_config": map[string]any{"sub_protocol": "dubbo"}}, routes: []any{
			rpcRoute("dubbo-good", "", hdr{"service", soakGoodService}),
			rpcRoute("dubbo-faulty", "", hdr{"service", soakFaultyService}),
		}},
	}, clusters))
	// The HTTP/1 and the tcp_proxy listener run on event loops (logged once they do).
	waitUntil(t, "two listeners serving on event loops", 10*time.Second, func() bool {
		return strings.Count(p.Logs(), "listener serving on event loops") == 2
	})
	// The same HTTP/1 and tcp_proxy listeners with a goroutine per connection.
	t.Setenv("MOSNLITE_EVENT_LOOPS", "off")
	h1Off, tcpOff := framework.FreePort(t), framework.FreePort(t)
	pOff := framework.StartProxy(t, soakConfig(t, []soakListener{
		soakHTTPListener("h1", h1Off, "Http1", "h1up"),
		soakTCPListener("tcp", tcpOff, "tcpup"),
	}, clusters))

	protos := []*soakProto{
		{name: "http1", workers: 8, pipelined: 2, run: soakHTTP1(h1)},
		{name: "http1-goroutines", workers: 4, pipelined: 1, run: soakHTTP1(h1Off)},
		{name: "h2c", workers: 8, run: soakHTTP2(h2)},
		{name: "tcp_proxy", workers: 8, run: soakTCP(tcp)},
		{name: "tcp_proxy-goroutines", workers: 4, run: soakTCP(tcpOff)},
		{name: "bolt", workers: 8, run: soakBolt(boltL)},
		{name: "dubbo", workers: 8, run: soakDubbo(dubboL)},
	}
	for i, pr := range protos {
		pr.seed, pr.index, pr.data, pr.tally = seed, uint64(i+1), data, &soakTally{name: pr.name}
	}

	phase("started")
	// A warm-up without faults: the pools and their watchers exist before the baseline.
	runSoak(protos, soakRound{perWorker: 2})
	for _, pr := range protos {
		if pr.tally.ok.Load() == 0 || pr.tally.failed() {
			t.Fatalf("warm-up: %s", pr.tally.summary())
		}
		pr.tally = &soakTally{name: pr.name}
	}
	phase("warm-up")
	dropUpstreams()
	lc, lcOff := framework.NewLeakCheck(t, p), framework.NewLeakCheck(t, pOff)
	phase("baseline")

	start := time.Now()
	runSoak(protos, soakRound{until: start.Add(soakLoad), faults: true, perWorker: 1 << 30})
	phase("load")
	for _, pr := range protos {
		t.Log(pr.tally.summary())
	}
	for _, pr := range protos {
		if pr.tally.failed() {
			t.Errorf("%s: %d garbled, %d unexpected failures:\n  %s", pr.name, pr.tally.garbled.Load(),
				pr.tally.unexpected.Load(), strings.Join(pr.tally.notes.list(), "\n  "))
		}
		if pr.tally.ok.Load() == 0 {
			t.Errorf("%s: no request answered", pr.name)
		}
	}
	if n := upErrs.n.Load(); n > 0 {
		t.Errorf("the upstreams got %d garbled requests:\n  %s", n, strings.Join(upErrs.list(), "\n  "))
	}
	if t.Failed() {
		t.Fatalf("seed %d", seed)
	}

	dropUpstreams()
	lc.Check(t)
	lcOff.Check(t)
	phase("leak check")
	for _, pp := range []*framework.Proxy{p, pOff} {
		if err := pp.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, pp := range []*framework.Proxy{p, pOff} {
		if code := pp.Wait(15 * time.Second); code != 0 {
			t.Errorf("exit code %d after SIGTERM", code)
		}
	}
	phase("exit")
	t.Logf("at: %s", strings.Join(phases, ", "))
}

// TestIntegrityPipelinedAfterStreamedBody is the soak's first find reduced: pipelined
// HTTP/1 requests in one write, the first with a body that streams (over 48 KiB), the
// next ones read whole. Pumping the streamed body fills the event loop's 96 KiB input
// buffer and leaves the rest of the pipeline in the socket; once the first response is
// out, the next request is partial in the buffer and must be read on, with no new
// readiness edge to say so (on edge-triggered epoll none comes: the client sent it all).
// With a goroutine per connection as well.
func TestIntegrityPipelinedAfterStreamedBody(t *testing.T) {
	up := h1Upstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	for _, loops := range []string{"on", "off"} {
		t.Run("event-loops-"+loops, func(t *testing.T) {
			t.Setenv("MOSNLITE_EVENT_LOOPS", loops)
			listen := framework.FreePort(t)
			framework.StartProxy(t, httpProxyConfig(listen, "Http1", "Http1", []any{routeTo("/", nil)}, up))
			c := framework.Dial(t, listen)
			defer c.Close()
			sizes := []int{100000, 40000, 40000, 40000}
			var out []byte
			for i, n := range sizes {
				out = fmt.Appendf(out, "POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", i, n)
				out = append(out, bytes.Repeat([]byte{byte('a' + i)}, n)...)
			}
			written := make(chan error, 1)
			go func() { // the proxy answers while the pipeline still goes out
				_, err := c.Write(out)
				written <- err
			}()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			for i, n := range sizes {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("response %d of %d: %v", i, len(sizes), err)
				}
				b, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != 200 || !bytes.Equal(b, bytes.Repeat([]byte{byte('a' + i)}, n)) {
					t.Fatalf("response %d: status %d, %d bytes, %v", i, resp.StatusCode, len(b), err)
				}
			}
			if err := <-written; err != nil {
				t.Fatal(err)
			}
		})
	}
}

const (
	soakLoad    = 10 * time.Second // the load phase; every protocol runs at once
	soakMaxBody = 1 << 20
	soakTimeout = 15 * time.Second // bounds every exchange

	soakGoodService   = "soak.Good"
	soakFaultyService = "soak.Faulty"

	hdrSoakID      = "X-Soak-Id"
	hdrSoakMode    = "X-Soak-Mode"
	hdrSoakDelay   = "X-Soak-Delay"
	hdrSoakSHA     = "X-Soak-Sha" // request: of the body sent; answer: of the body received
	hdrSoakLength  = "X-Soak-Length"
	hdrSoakTrailer = "X-Soak-Trailer" // h2 answers without Content-Length: the SHA-256 again
	// hdrSoakFraming "cl" asks for an answer with Content-Length; otherwise it is streamed
	// (HTTP/1 chunked, h2 DATA frames then trailers).
	hdrSoakFraming = "X-Soak-Framing"
)

// soakMode is what the upstream does with a request.
type soakMode int

const (
	modeEcho   soakMode = iota // the body back, status 200 (bolt 0, dubbo 20)
	modeStatus                 // the body back with status 500 (bolt ServerException; dubbo a service error)
	modeCut                    // half of the answer, then the connection closes (h2: RST_STREAM)
	modeReset                  // a reset (h2: RST_STREAM) before any answer
)

var modeNames = [...]string{"echo", "status", "cut", "reset"}

func (m soakMode) String() string { return modeNames[m] }

// failing reports a mode in which the upstream never completes its answer.
func (m soakMode) failing() bool { return m == modeCut || m == modeReset }

// soakReq is one request: what the client sends and what it must get back.
type soakReq struct {
	id      string
	mode    soakMode
	delay   int // ms
	body    []byte
	sum     string // hex SHA-256 of body
	faulty  bool   // bolt, dubbo: sent to the cluster whose upstream cuts connections
	chunks  []int  // HTTP/1: the request goes chunked in these sizes; nil: Content-Length
	cl      bool   // HTTP: the answer has a Content-Length
	version byte   // bolt: 1 or 2
}

func (r *soakReq) String() string {
	framing := "content-length"
	if r.chunks != nil {
		framing = fmt.Sprintf("chunked(%d)", len(r.chunks))
	}
	return fmt.Sprintf("%s mode %s delay %dms body %d B (%s) answer-cl %v faulty %v", r.id, r.mode, r.delay,
		len(r.body), framing, r.cl, r.faulty)
}

// soakSize picks a body size: the edges (0, 1, 100, a 16 KiB frame ± 1, 64 KiB), any up
// to 64 KiB, now and then up to 1 MiB.
func soakSize(rng *rand.Rand) int {
	switch p := rng.IntN(100); {
	case p < 8:
		return 0
	case p < 16:
		return 1
	case p < 28:
		return 100
	case p < 46:
		return 16<<10 - 1 + rng.IntN(3)
	case p < 56:
		return 64 << 10
	case p < 94:
		return 1 + rng.IntN(64<<10)
	default:
		return 1 + rng.IntN(soakMaxBody)
	}
}

// soakKind is which modes a protocol can ask for.
type soakKind int

const (
	kindHTTP soakKind = iota // echo, status, cut, reset
	kindTCP                  // echo, cut, reset: a byte stream has no status
	kindRPC                  // good cluster: echo, status; faulty cluster: echo, cut, reset
)

// genReq derives a request from rng; faults false asks only for answers.
func genReq(rng *rand.Rand, data []byte, id string, kind soakKind, faults bool) *soakReq {
	r := &soakReq{id: id, cl: rng.IntN(2) == 0, version: byte(1 + rng.IntN(2))}
	p := rng.IntN(100)
	switch {
	case !faults:
		r.mode = modeEcho
	case kind == kindRPC:
		if r.faulty = p < 15; r.faulty {
			r.mode = [...]soakMode{modeEcho, modeCut, modeCut, modeReset}[rng.IntN(4)]
		} else if p < 25 {
			r.mode = modeStatus
		}
	case p < 7:
		r.mode = modeCut
	case p < 14:
		r.mode = modeReset
	case p < 22 && kind == kindHTTP:
		r.mode = modeStatus
	}
	if rng.IntN(10) < 6 {
		r.delay = rng.IntN(51)
	}
	n := soakSize(rng)
	if r.mode == modeCut && n < 2 {
		n = 100 // half of it must be short of the whole
	}
	off := rng.IntN(len(data) - n + 1)
	r.body = data[off : off+n]
	sum := sha256.Sum256(r.body)
	r.sum = hex.EncodeToString(sum[:])
	if rng.IntN(3) == 0 {
		r.chunks = []int{}
		for rest := n; rest > 0; {
			c := 1 + rng.IntN(min(rest, 32<<10))
			r.chunks = append(r.chunks, c)
			rest -= c
		}
	}
	return r
}

// soakOutcome classifies one request's end.
type soakOutcome int

const (
	outOK          soakOutcome = iota // an exact echo
	outStatus                         // an exact echo with the error status asked for
	outFailedClean                    // the upstream failed on purpose; the request ended in a clean error
	outCollateral                     // bolt, dubbo: failed with the faulty upstream's connection, cleanly
	outGarbled                        // a complete answer that is not this request's exact answer
	outUnexpected                     // an upstream that behaved, and the request failed
)

// soakNotes keeps a count and the first few descriptions of something that went wrong.
type soakNotes struct {
	n     atomic.Int64
	mu    sync.Mutex
	notes []string
}

func (s *soakNotes) add(format string, args ...any) {
	s.n.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.notes) < 8 {
		s.notes = append(s.notes, fmt.Sprintf(format, args...))
	}
}

func (s *soakNotes) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.notes...)
}

// soakTally counts one protocol's outcomes.
type soakTally struct {
	name                                string
	ok, status, failedClean, collateral atomic.Int64
	garbled, unexpected                 atomic.Int64
	bytes                               atomic.Int64 // request body bytes of the exact answers
	notes                               soakNotes
	modes                               [len(modeNames)]atomic.Int64
	maxBody                             atomic.Int64
	pipelinedBatches, pipelinedRequests atomic.Int64
	reconnects                          atomic.Int64
}

func (s *soakTally) add(r *soakReq, o soakOutcome, detail string) {
	s.modes[r.mode].Add(1)
	switch o {
	case outOK, outStatus:
		if o == outOK {
			s.ok.Add(1)
		} else {
			s.status.Add(1)
		}
		s.bytes.Add(int64(len(r.body)))
		if n := int64(len(r.body)); n > s.maxBody.Load() {
			s.maxBody.Store(n)
		}
	case outFailedClean:
		s.failedClean.Add(1)
	case outCollateral:
		s.collateral.Add(1)
	case outGarbled:
		s.garbled.Add(1)
		s.notes.add("GARBLED %v: %s", r, detail)
	case outUnexpected:
		s.unexpected.Add(1)
		s.notes.add("FAILED %v: %s", r, detail)
	}
}

func (s *soakTally) failed() bool { return s.garbled.Load()+s.unexpected.Load() > 0 }

func (s *soakTally) summary() string {
	return fmt.Sprintf("%-21s %5d exact (%d with the error status asked for, %d MiB, largest %d B); "+
		"%d deliberate failures ended cleanly, %d collateral; %d garbled, %d unexpected failures; "+
		"modes echo/status/cut/reset %d/%d/%d/%d; %d reconnects; %d pipelined batches of %d requests",
		s.name, s.ok.Load()+s.status.Load(), s.status.Load(), s.bytes.Load()>>20, s.maxBody.Load(),
		s.failedClean.Load(), s.collateral.Load(), s.garbled.Load(), s.unexpected.Load(),
		s.modes[0].Load(), s.modes[1].Load(), s.modes[2].Load(), s.modes[3].Load(), s.reconnects.Load(),
		s.pipelinedBatches.Load(), s.pipelinedRequests.Load())
}

// soakRound bounds one run of every protocol's workers.
type soakRound struct {
	until     time.Time // zero: no time bound
	perWorker int       // requests (HTTP/1 pipelined: batches) per worker at most
	faults    bool
}

func (r soakRound) more(i int) bool {
	return i < r.perWorker && (r.until.IsZero() || time.Now().Before(r.until))
}

// soakProto is one protocol's clients. run starts workers goroutines, each drawing its
// requests from rng(w), waits for them, and closes its clients.
type soakProto struct {
	name      string
	workers   int
	pipelined int // HTTP/1: workers that pipeline
	run       func(pr *soakProto, round soakRound)
	seed      uint64
	index     uint64
	data      []byte
	tally     *soakTally
}

func (pr *soakProto) rng(w int) *rand.Rand {
	return rand.New(rand.NewPCG(pr.seed, pr.index<<16|uint64(w)))
}

func (pr *soakProto) id(w, i int) string { return fmt.Sprintf("%s-w%d-%d", pr.name, w, i) }

func runSoak(protos []*soakProto, round soakRound) {
	var wg sync.WaitGroup
	for _, pr := range protos {
		wg.Go(func() { pr.run(pr, round) })
	}
	wg.Wait()
}

// workers runs f(w) for each worker and waits.
func (pr *soakProto) each(f func(w int)) {
	var wg sync.WaitGroup
	for w := range pr.workers {
		wg.Go(func() { f(w) })
	}
	wg.Wait()
}

// ---- config ----

type soakListener struct {
	name, addr string
	filter     string         // "proxy" (the default) or "tcp_proxy"
	proxy      map[string]any // the proxy filter's config, without the router name
	routes     []any
	cluster    string // tcp_proxy
}

func soakHTTPListener(name, addr, proto, cluster string) soakListener {
	return soakListener{name: name, addr: addr,
		proxy:  map[string]any{"downstream_protocol": proto, "upstream_protocol": proto},
		routes: []any{clusterRoute("/", cluster, nil)}}
}

func soakTCPListener(name, addr, cluster string) soakListener {
	return soakListener{name: name, addr: addr, filter: "tcp_proxy", cluster: cluster}
}

// soakConfig is one process's config: the listeners, a router per proxy listener, the
// clusters (name → one host), an admin endpoint.
func soakConfig(t *testing.T, ls []soakListener, clusters map[string]string) string {
	t.Helper()
	var routers, listeners, cs []any
	for _, l := range ls {
		var filter map[string]any
		if l.filter == "tcp_proxy" {
			filter = map[string]any{"type": "tcp_proxy", "config": map[string]any{"cluster": l.cluster}}
		} else {
			pc := map[string]any{"router_config_name": l.name}
			for k, v := range l.proxy {
				pc[k] = v
			}
			filter = map[string]any{"type": "proxy", "config": pc}
			routers = append(routers, map[string]any{
				"router_config_name": l.name,
				"virtual_hosts":      []any{map[string]any{"name": l.name, "domains": []any{"*"}, "routers": l.routes}},
			})
		}
		listeners = append(listeners, map[string]any{
			"name": l.name, "address": l.addr, "bind_port": true,
			"filter_chains": []any{map[string]any{"filters": []any{filter}}},
		})
	}
	for name, addr := range clusters {
		cs = append(cs, rpcCluster(name, addr))
	}
	cfg := map[string]any{
		"servers": []any{map[string]any{
			"default_log_path": "stderr", "routers": routers, "listeners": listeners,
		}},
		"cluster_manager": map[string]any{"clusters": cs},
		"drain":           map[string]any{"timeout": "5s"},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return framework.WithAdmin(t, string(b))
}

// ---- HTTP ----

// soakHTTPHandler is the HTTP/1 and h2c upstream: it reads the whole body, checks it
// against the client's SHA-256, waits the delay, then does what the mode says.
func soakHTTPHandler(errs *soakNotes) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return // the proxy went away; its client sees that
		}
		id := r.Header.Get(hdrSoakID)
		sum := sha256.Sum256(body)
		hexSum := hex.EncodeToString(sum[:])
		if hexSum != r.Header.Get(hdrSoakSHA) {
			errs.add("%s upstream: %s got %d body bytes whose SHA-256 is not the client's", r.Proto, id, len(body))
			http.Error(w, "request body garbled", http.StatusUnprocessableEntity)
			return
		}
		mode, _ := strconv.Atoi(r.Header.Get(hdrSoakMode))
		delay, _ := strconv.Atoi(r.Header.Get(hdrSoakDelay))
		time.Sleep(time.Duration(delay) * time.Millisecond)
		if soakMode(mode) == modeReset {
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
					return
				}
			}
			panic(http.ErrAbortHandler) // h2: RST_STREAM
		}
		h := w.Header()
		h.Set(hdrSoakID, id)
		h.Set(hdrSoakSHA, hexSum)
		h.Set(hdrSoakLength, strconv.Itoa(len(body)))
		cl := r.Header.Get(hdrSoakFraming) == "cl"
		if cl {
			h.Set("Content-Length", strconv.Itoa(len(body)))
		} else if r.ProtoMajor == 2 {
			h.Set("Trailer", hdrSoakTrailer)
		}
		status := http.StatusOK
		if soakMode(mode) == modeStatus {
			status = http.StatusInternalServerError
		}
		w.WriteHeader(status)
		f := w.(http.Flusher)
		if soakMode(mode) == modeCut {
			w.Write(body[:len(body)/2])
			f.Flush()
			panic(http.ErrAbortHandler) // HTTP/1: the connection closes; h2: RST_STREAM
		}
		if cl {
			w.Write(body)
			return
		}
		f.Flush() // streamed: chunked on HTTP/1 even when short
		for rest := body; len(rest) > 0; {
			n := min(len(rest), 1+len(body)/3)
			w.Write(rest[:n])
			f.Flush()
			rest = rest[n:]
		}
		if r.ProtoMajor == 2 {
			h.Set(hdrSoakTrailer, hexSum)
		}
	})
}

// checkHTTP classifies an HTTP request's end: resp and body as read, err the first error
// (the exchange's or the body's).
func checkHTTP(r *soakReq, resp *http.Response, body []byte, err error, h2 bool) (soakOutcome, string) {
	if err != nil {
		if r.mode.failing() && !soakTimedOut(err) {
			return outFailedClean, ""
		}
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return outUnexpected, fmt.Sprintf("status %d, %d body bytes read: %v", status, len(body), err)
	}
	got := resp.Header.Get(hdrSoakID)
	if got == "" {
		if r.mode.failing() && resp.StatusCode >= 500 {
			return outFailedClean, ""
		}
		return outUnexpected, fmt.Sprintf("the proxy answered %d: %.200q", resp.StatusCode, body)
	}
	if got != r.id {
		return outGarbled, fmt.Sprintf("got the answer to %s", got)
	}
	if r.mode.failing() {
		return outGarbled, fmt.Sprintf("a complete %d answer (%d of %d bytes) to a request whose upstream did not complete it",
			resp.StatusCode, len(body), len(r.body))
	}
	want := http.StatusOK
	if r.mode == modeStatus {
		want = http.StatusInternalServerError
	}
	if resp.StatusCode != want {
		return outGarbled, fmt.Sprintf("status %d, want %d", resp.StatusCode, want)
	}
	if s := resp.Header.Get(hdrSoakSHA); s != r.sum {
		return outGarbled, fmt.Sprintf("the upstream got a body of %s bytes with another SHA-256", resp.Header.Get(hdrSoakLength))
	}
	if d := soakDiff(body, r.body); d != "" {
		return outGarbled, "answer body " + d
	}
	if h2 && !r.cl {
		if s := resp.Trailer.Get(hdrSoakTrailer); s != r.sum {
			return outGarbled, fmt.Sprintf("trailer %s %q, want %q", hdrSoakTrailer, s, r.sum)
		}
	}
	if r.mode == modeStatus {
		return outStatus, ""
	}
	return outOK, ""
}

// soakTimedOut reports an error that is a bounded wait running out: a request that hangs
// did not end cleanly, whatever its upstream did.
func soakTimedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// soakDiff describes how got differs from want, or returns "".
func soakDiff(got, want []byte) string {
	if bytes.Equal(got, want) {
		return ""
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf("of %d bytes, want %d: first difference at byte %d", len(got), len(want), i)
}

func (r *soakReq) setHTTPHeaders(h http.Header) {
	h.Set(hdrSoakID, r.id)
	h.Set(hdrSoakMode, strconv.Itoa(int(r.mode)))
	h.Set(hdrSoakDelay, strconv.Itoa(r.delay))
	h.Set(hdrSoakSHA, r.sum)
	if r.cl {
		h.Set(hdrSoakFraming, "cl")
	}
}

// appendHTTP1 appends the request as HTTP/1.1 bytes: Content-Length, or chunked in
// r.chunks.
func (r *soakReq) appendHTTP1(b []byte) []byte {
	b = fmt.Appendf(b, "POST /soak/%s HTTP/1.1\r\nHost: soak\r\n", r.id)
	h := http.Header{}
	r.setHTTPHeaders(h)
	for k, vs := range h {
		b = fmt.Appendf(b, "%s: %s\r\n", k, vs[0])
	}
	if r.chunks == nil {
		b = fmt.Appendf(b, "Content-Length: %d\r\n\r\n", len(r.body))
		return append(b, r.body...)
	}
	b = append(b, "Transfer-Encoding: chunked\r\n\r\n"...)
	rest := r.body
	for _, n := range r.chunks {
		b = fmt.Appendf(b, "%x\r\n", n)
		b = append(append(b, rest[:n]...), "\r\n"...)
		rest = rest[n:]
	}
	return append(b, "0\r\n\r\n"...)
}

// soakHTTP1 is raw HTTP/1.1 clients on keep-alive connections; pipelining workers write
// batches of 1-4 requests at once (a deliberate failure only last in a batch: what comes
// after it on the connection would be lost with it) and read the answers in order.
func soakHTTP1(addr string) func(pr *soakProto, round soakRound) {
	return soakHTTP1Dial(plainDial(addr))
}

// soakHTTP1Dial is soakHTTP1 over the connections dial makes.
func soakHTTP1Dial(dial func() (net.Conn, error)) func(pr *soakProto, round soakRound) {
	return func(pr *soakProto, round soakRound) {
		pr.each(func(w int) {
			rng := pr.rng(w)
			var c net.Conn
			var br *bufio.Reader
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			for i := 0; round.more(i); i++ {
				batch := 1
				if w < pr.pipelined {
					batch = 1 + rng.IntN(4)
				}
				reqs := make([]*soakReq, batch)
				for j := range reqs {
					reqs[j] = genReq(rng, pr.data, pr.id(w, i*4+j), kindHTTP, round.faults && j == batch-1)
				}
				if c == nil {
					var err error
					if c, err = dial(); err != nil {
						for _, r := range reqs {
							pr.tally.add(r, outUnexpected, "dial: "+err.Error())
						}
						return
					}
					br = bufio.NewReaderSize(c, 32<<10)
					pr.tally.reconnects.Add(1)
				}
				if batch > 1 {
					pr.tally.pipelinedBatches.Add(1)
					pr.tally.pipelinedRequests.Add(int64(batch))
				}
				c.SetDeadline(time.Now().Add(soakTimeout))
				var out []byte
				for _, r := range reqs {
					out = r.appendHTTP1(out)
				}
				written := make(chan error, 1)
				go func() { // the proxy answers while the batch is still going out
					_, err := c.Write(out)
					written <- err
				}()
				broken := false
				for _, r := range reqs {
					if broken {
						pr.tally.add(r, outUnexpected, "lost with an earlier request of its pipelined batch")
						continue
					}
					resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
					var body []byte
					if err == nil {
						body, err = io.ReadAll(resp.Body)
						resp.Body.Close()
					}
					o, d := checkHTTP(r, resp, body, err, false)
					pr.tally.add(r, o, d)
					if err != nil || resp.Close {
						broken = true // the rest of the batch is lost with the connection
					}
				}
				if broken {
					c.Close()
				}
				if err := <-written; err != nil && !broken {
					pr.tally.add(reqs[0], outUnexpected, "write: "+err.Error())
					broken = true
					c.Close()
				}
				if broken {
					c = nil
				}
			}
		})
	}
}

// soakHTTP2 is net/http's h2c client, two connections shared by the workers.
func soakHTTP2(addr string) func(pr *soakProto, round soakRound) {
	return func(pr *soakProto, round soakRound) {
		var clients [2]*http.Client
		for k := range clients {
			c, closeAll := leakH2Client()
			c.Timeout = soakTimeout
			clients[k] = c
			defer closeAll()
		}
		pr.each(func(w int) {
			rng := pr.rng(w)
			c := clients[w%2]
			for i := 0; round.more(i); i++ {
				r := genReq(rng, pr.data, pr.id(w, i), kindHTTP, round.faults)
				var body io.Reader = bytes.NewReader(r.body)
				if r.chunks != nil {
					body = onlyReader{body} // no Content-Length
				}
				req, err := http.NewRequest("POST", "http://"+addr+"/soak/"+r.id, body)
				if err != nil {
					panic(err)
				}
				r.setHTTPHeaders(req.Header)
				resp, err := c.Do(req)
				var got []byte
				if err == nil {
					got, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				o, d := checkHTTP(r, resp, got, err, true)
				pr.tally.add(r, o, d)
			}
		})
	}
}

// ---- tcp_proxy ----

// The tcp_proxy exchange: a request is "SOAK", id, mode, delay (ms), length, SHA-256,
// body; the answer is "ECHO", id, length, SHA-256 of what the upstream got, body.
const (
	tcpReqHead  = 4 + 8 + 1 + 2 + 4 + 32
	tcpRespHead = 4 + 8 + 4 + 32
)

func serveSoakTCP(c *net.TCPConn, errs *soakNotes) {
	br := bufio.NewReaderSize(c, 64<<10)
	head := make([]byte, tcpReqHead)
	for {
		c.SetDeadline(time.Now().Add(time.Minute))
		if _, err := io.ReadFull(br, head); err != nil {
			return
		}
		if string(head[:4]) != "SOAK" {
			errs.add("tcp upstream: a request head starting % x", head[:4])
			return
		}
		id := binary.BigEndian.Uint64(head[4:])
		mode := soakMode(head[12])
		delay := time.Duration(binary.BigEndian.Uint16(head[13:])) * time.Millisecond
		n := binary.BigEndian.Uint32(head[15:])
		if n > soakMaxBody {
			errs.add("tcp upstream: request %d declares %d bytes", id, n)
			return
		}
		out := make([]byte, tcpRespHead+int(n))
		body := out[tcpRespHead:]
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		sum := sha256.Sum256(body)
		if !bytes.Equal(sum[:], head[19:51]) {
			errs.add("tcp upstream: request %d: %d body bytes whose SHA-256 is not the client's", id, n)
		}
		copy(out, "ECHO")
		binary.BigEndian.PutUint64(out[4:], id)
		binary.BigEndian.PutUint32(out[12:], n)
		copy(out[16:], sum[:])
		time.Sleep(delay)
		switch mode {
		case modeCut:
			c.Write(out[:len(out)/2])
			return
		case modeReset:
			c.SetLinger(0)
			return
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// soakTCP is one keep-alive connection per worker; it is dialled again after a failure,
// and now and then after a success.
func soakTCP(addr string) func(pr *soakProto, round soakRound) {
	return soakTCPDial(plainDial(addr))
}

// soakTCPDial is soakTCP over the connections dial makes.
func soakTCPDial(dial func() (net.Conn, error)) func(pr *soakProto, round soakRound) {
	return func(pr *soakProto, round soakRound) {
		pr.each(func(w int) {
			rng := pr.rng(w)
			var c net.Conn
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			head := make([]byte, tcpRespHead)
			for i := 0; round.more(i); i++ {
				r := genReq(rng, pr.data, pr.id(w, i), kindTCP, round.faults)
				num := uint64(w)<<40 | uint64(i)
				if c == nil {
					var err error
					if c, err = dial(); err != nil {
						pr.tally.add(r, outUnexpected, "dial: "+err.Error())
						return
					}
					pr.tally.reconnects.Add(1)
				}
				c.SetDeadline(time.Now().Add(soakTimeout))
				out := make([]byte, tcpReqHead, tcpReqHead+len(r.body))
				copy(out, "SOAK")
				binary.BigEndian.PutUint64(out[4:], num)
				out[12] = byte(r.mode)
				binary.BigEndian.PutUint16(out[13:], uint16(r.delay))
				binary.BigEndian.PutUint32(out[15:], uint32(len(r.body)))
				hex.Decode(out[19:], []byte(r.sum))
				out = append(out, r.body...)
				o, d := func() (soakOutcome, string) {
					if _, err := c.Write(out); err != nil {
						if r.mode.failing() && !soakTimedOut(err) {
							return outFailedClean, ""
						}
						return outUnexpected, "write: " + err.Error()
					}
					if _, err := io.ReadFull(c, head); err != nil {
						if r.mode.failing() && !soakTimedOut(err) {
							return outFailedClean, ""
						}
						return outUnexpected, "answer head: " + err.Error()
					}
					if string(head[:4]) != "ECHO" || binary.BigEndian.Uint64(head[4:]) != num ||
						binary.BigEndian.Uint32(head[12:]) != uint32(len(r.body)) || hex.EncodeToString(head[16:48]) != r.sum {
						return outGarbled, fmt.Sprintf("answer head % x", head)
					}
					body := make([]byte, len(r.body))
					if _, err := io.ReadFull(c, body); err != nil {
						if r.mode.failing() && !soakTimedOut(err) {
							return outFailedClean, ""
						}
						return outUnexpected, "answer body: " + err.Error()
					}
					if r.mode.failing() {
						return outGarbled, "a complete answer to a request whose upstream did not complete it"
					}
					if d := soakDiff(body, r.body); d != "" {
						return outGarbled, "answer body " + d
					}
					return outOK, ""
				}()
				pr.tally.add(r, o, d)
				if o != outOK || rng.IntN(30) == 0 {
					c.Close()
					c = nil
				}
			}
		})
	}
}

// ---- bolt and dubbo ----

// soakRPCWriter writes a multiplexed upstream connection's answers, now or after their
// delay, and carries out cut and reset in the order the answers go out.
type soakRPCWriter struct {
	c  *net.TCPConn
	mu sync.Mutex
	wg sync.WaitGroup
}

func (w *soakRPCWriter) send(b []byte, mode soakMode, delay int) {
	if delay == 0 {
		w.do(b, mode)
		return
	}
	w.wg.Go(func() {
		time.Sleep(time.Duration(delay) * time.Millisecond)
		w.do(b, mode)
	})
}

func (w *soakRPCWriter) do(b []byte, mode soakMode) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch mode {
	case modeCut:
		w.c.Write(b[:len(b)/2])
		w.c.Close()
	case modeReset:
		w.c.SetLinger(0)
		w.c.Close()
	default:
		w.c.Write(b)
	}
}

func soakAtoi(v []byte) int {
	n, _ := strconv.Atoi(string(v))
	return n
}

// serveSoakBolt is a bolt upstream: the request's content echoed, in the request's
// version, with headers soak-id and soak-sha (of the content it got); status
// ServerException for modeStatus.
func serveSoakBolt(c *net.TCPConn, errs *soakNotes) {
	codec := bolt.New(bolt.Options{})
	r := newEngFrames(c, codec)
	w := &soakRPCWriter{c: c}
	defer w.wg.Wait()
	for {
		c.SetReadDeadline(time.Now().Add(time.Minute))
		f, err := r.next()
		if err != nil {
			return
		}
		switch f.Kind {
		case xprotocol.KindHeartbeat:
			b := buffer.NewPool().NewBuffer(64)
			_ = codec.HeartbeatReply(b, f)
			w.send(bytes.Clone(b.Bytes()), modeEcho, 0)
			b.Release()
			continue
		case xprotocol.KindRequest:
		default:
			continue
		}
		m := bolt.MessageOf(f)
		id, _ := f.Header("soak-id")
		mode, _ := f.Header("soak-mode")
		delay, _ := f.Header("soak-delay")
		want, _ := f.Header("soak-sha")
		sum := sha256.Sum256(m.Content)
		hexSum := hex.EncodeToString(sum[:])
		if hexSum != string(want) {
			errs.add("bolt upstream: %s got %d content bytes whose SHA-256 is not the client's", id, len(m.Content))
		}
		resp := bolt.Message{Kind: xprotocol.KindResponse, Version: m.Version, Ver1: m.Ver1, Switch: m.Switch,
			Ver2: m.Ver2, ID: m.ID, Codec: m.Codec, Class: []byte(rpcpeer.SofaResponseClass), Content: m.Content,
			Headers: []xprotocol.Header{{Key: []byte("soak-id"), Value: id}, {Key: []byte("soak-sha"), Value: []byte(hexSum)}}}
		if soakMode(soakAtoi(mode)) == modeStatus {
			resp.Status = bolt.StatusServerException
		}
		b, err := rpcpeer.EncodeBolt(resp)
		if err != nil {
			errs.add("bolt upstream: encode the answer to %s: %v", id, err)
			return
		}
		w.send(b, soakMode(soakAtoi(mode)), soakAtoi(delay))
	}
}

// soakRPCConns is a protocol's two client connections, shared by its workers and dialled
// again when one ends.
type soakRPCConns[C interface{ Close() error }] struct {
	mu    sync.Mutex
	conns [2]C
	open  [2]bool
	dial  func() (C, error)
	done  func(C) <-chan struct{}
	tally *soakTally
}

func (s *soakRPCConns[C]) get(w int) (C, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := w % 2
	if s.open[k] {
		if !closed(s.done(s.conns[k])) {
			return s.conns[k], nil
		}
		s.conns[k].Close()
		s.open[k] = false
	}
	c, err := s.dial()
	if err != nil {
		return c, err
	}
	s.tally.reconnects.Add(1)
	s.conns[k], s.open[k] = c, true
	return c, nil
}

func (s *soakRPCConns[C]) closeAll() {
	for k, c := range s.conns {
		if s.open[k] {
			c.Close()
		}
	}
}

// rpcFailure classifies a request the proxy answered itself (an error frame): clean for a
// failing mode, collateral for an echo to the faulty upstream, unexpected otherwise.
func rpcFailure(r *soakReq, detail string) (soakOutcome, string) {
	switch {
	case r.mode.failing():
		return outFailedClean, ""
	case r.faulty:
		return outCollateral, ""
	}
	return outUnexpected, detail
}

func soakBolt(addr string) func(pr *soakProto, round soakRound) {
	conns := func(pr *soakProto) *soakRPCConns[*rpcpeer.BoltClient] {
		return &soakRPCConns[*rpcpeer.BoltClient]{tally: pr.tally,
			dial: func() (*rpcpeer.BoltClient, error) { return rpcpeer.DialBolt(addr, 5*time.Second) },
			done: (*rpcpeer.BoltClient).Done}
	}
	return soakRPC(conns, func(ctx context.Context, c *rpcpeer.BoltClient, r *soakReq, service string) (soakOutcome, string) {
		m := rpcpeer.BoltRequest(r.version, service, "echo", r.body)
		m.Headers = append(m.Headers, engHdrs("soak-id", r.id, "soak-mode", strconv.Itoa(int(r.mode)),
			"soak-delay", strconv.Itoa(r.delay), "soak-sha", r.sum)...)
		resp, err := c.Call(ctx, m)
		return checkBolt(r, resp, err)
	})
}

// soakRPC is the bolt and dubbo clients' workers: multiplexed connections shared by the
// workers (conns), each request sent with call to the good or the faulty service.
func soakRPC[C interface{ Close() error }](conns func(*soakProto) *soakRPCConns[C],
	call func(ctx context.Context, c C, r *soakReq, service string) (soakOutcome, string)) func(pr *soakProto, round soakRound) {
	return func(pr *soakProto, round soakRound) {
		cs := conns(pr)
		defer cs.closeAll()
		pr.each(func(w int) {
			rng := pr.rng(w)
			for i := 0; round.more(i); i++ {
				r := genReq(rng, pr.data, pr.id(w, i), kindRPC, round.faults)
				c, err := cs.get(w)
				if err != nil {
					pr.tally.add(r, outUnexpected, "dial: "+err.Error())
					return
				}
				service := soakGoodService
				if r.faulty {
					service = soakFaultyService
				}
				ctx, cancel := context.WithTimeout(context.Background(), soakTimeout)
				o, d := call(ctx, c, r, service)
				cancel()
				pr.tally.add(r, o, d)
			}
		})
	}
}

func checkBolt(r *soakReq, resp *rpcpeer.BoltResponse, err error) (soakOutcome, string) {
	if err != nil {
		return outUnexpected, err.Error() // the proxy answers every request, if only with an error frame
	}
	m := resp.Message()
	id, ok := resp.Header("soak-id")
	if !ok {
		if m.Status == bolt.StatusSuccess {
			return outGarbled, fmt.Sprintf("a success without soak-id, %d content bytes", len(m.Content))
		}
		return rpcFailure(r, fmt.Sprintf("the proxy answered status %#x: %.200q", m.Status, m.Content))
	}
	if id != r.id {
		return outGarbled, "got the answer to " + id
	}
	if r.mode.failing() {
		return outGarbled, fmt.Sprintf("a complete answer (status %#x, %d of %d bytes) to a request whose upstream did not complete it",
			m.Status, len(m.Content), len(r.body))
	}
	want := bolt.StatusSuccess
	if r.mode == modeStatus {
		want = bolt.StatusServerException
	}
	if m.Status != want || m.Version != r.version {
		return outGarbled, fmt.Sprintf("status %#x version %d, want %#x and %d", m.Status, m.Version, want, r.version)
	}
	if s, _ := resp.Header("soak-sha"); s != r.sum {
		return outGarbled, "the upstream got content with another SHA-256"
	}
	if d := soakDiff(m.Content, r.body); d != "" {
		return outGarbled, "answer content " + d
	}
	if r.mode == modeStatus {
		return outStatus, ""
	}
	return outOK, ""
}

// serveSoakDubbo is a Dubbo provider (frames decoded and encoded by dubbo-go-hessian2):
// the one []byte argument echoed with attachments soak-id and soak-sha; for modeStatus a
// service error whose message names the request.
func serveSoakDubbo(c *net.TCPConn, errs *soakNotes) {
	br := bufio.NewReaderSize(c, 64<<10)
	w := &soakRPCWriter{c: c}
	defer w.wg.Wait()
	for {
		c.SetReadDeadline(time.Now().Add(time.Minute))
		frame, err := rpcpeer.ReadDubboFrame(br, rpcpeer.DubboMaxBody)
		if err != nil {
			return
		}
		h, req, err := rpcpeer.DecodeDubboRequest(frame)
		if err != nil {
			errs.add("dubbo upstream: a request the library cannot decode: %v", err)
			return
		}
		if h.Type&hessian.PackageHeartbeat != 0 {
			if h.Type&hessian.PackageRequest_TwoWay != 0 {
				if b, err := rpcpeer.EncodeDubboHeartbeatReply(h.ID); err == nil {
					w.send(b, modeEcho, 0)
				}
			}
			continue
		}
		id := req.Attachments["soak-id"]
		var body []byte
		if len(req.Args) == 1 {
			body, _ = req.Args[0].([]byte)
		}
		sum := sha256.Sum256(body)
		hexSum := hex.EncodeToString(sum[:])
		if len(req.Args) != 1 || hexSum != req.Attachments["soak-sha"] {
			errs.add("dubbo upstream: %s got %d arguments, %d bytes whose SHA-256 is not the client's", id, len(req.Args), len(body))
		}
		mode := soakMode(soakAtoi([]byte(req.Attachments["soak-mode"])))
		var b []byte
		if mode == modeStatus {
			b, err = rpcpeer.EncodeDubboResponse(h.ID, hessian.Response_SERVICE_ERROR, "soak upstream error for ["+id+"]", nil)
		} else {
			b, err = rpcpeer.EncodeDubboResponse(h.ID, hessian.Response_OK, body, map[string]string{"soak-id": id, "soak-sha": hexSum})
		}
		if err != nil {
			errs.add("dubbo upstream: encode the answer to %s: %v", id, err)
			return
		}
		w.send(b, mode, soakAtoi([]byte(req.Attachments["soak-delay"])))
	}
}

func soakDubbo(addr string) func(pr *soakProto, round soakRound) {
	conns := func(pr *soakProto) *soakRPCConns[*rpcpeer.DubboClient] {
		return &soakRPCConns[*rpcpeer.DubboClient]{tally: pr.tally,
			dial: func() (*rpcpeer.DubboClient, error) { return rpcpeer.DialDubbo(addr, 5*time.Second) },
			done: (*rpcpeer.DubboClient).Done}
	}
	return soakRPC(conns, func(ctx context.Context, c *rpcpeer.DubboClient, r *soakReq, service string) (soakOutcome, string) {
		res, err := c.Call(ctx, dubboSvc(service, "", "1.0.0", "echo"), []any{r.body}, map[string]string{
			"soak-id": r.id, "soak-mode": strconv.Itoa(int(r.mode)), "soak-delay": strconv.Itoa(r.delay), "soak-sha": r.sum})
		return checkDubbo(r, res, err)
	})
}

func checkDubbo(r *soakReq, res *rpcpeer.DubboResult, err error) (soakOutcome, string) {
	if err != nil {
		return outUnexpected, err.Error()
	}
	if res.Status != hessian.Response_OK {
		msg := fmt.Sprint(res.Exception)
		_, named, ok := strings.Cut(msg, "soak upstream error for [")
		if !ok {
			return rpcFailure(r, fmt.Sprintf("the proxy answered status %d: %.200s", res.Status, msg))
		}
		if id, _, _ := strings.Cut(named, "]"); id != r.id {
			return outGarbled, "got the error answer to " + id
		}
		if r.mode != modeStatus {
			return outGarbled, fmt.Sprintf("a service error (status %d) to a request in mode %s", res.Status, r.mode)
		}
		return outStatus, ""
	}
	if id := res.Attachments["soak-id"]; id != r.id {
		return outGarbled, fmt.Sprintf("got the answer to %q", id)
	}
	if r.mode != modeEcho {
		return outGarbled, fmt.Sprintf("a complete success to a request in mode %s", r.mode)
	}
	if res.Exception != nil {
		return outGarbled, fmt.Sprintf("status 20 with exception %v", res.Exception)
	}
	if res.Attachments["soak-sha"] != r.sum {
		return outGarbled, "the upstream got an argument with another SHA-256"
	}
	body, ok := res.Value.([]byte)
	if !ok && res.Value != nil {
		return outGarbled, fmt.Sprintf("value of type %T", res.Value)
	}
	if d := soakDiff(body, r.body); d != "" {
		return outGarbled, "answer value " + d
	}
	return outOK, ""
}

// plainDial dials addr over TCP.
func plainDial(addr string) func() (net.Conn, error) {
	return func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
}

// soakSeed is the soak's seed: MOSNLITE_SOAK_SEED, or a fixed one; it is logged so that a
// failure can be replayed.
func soakSeed(t *testing.T) uint64 {
	seed := uint64(20261124)
	if s := os.Getenv("MOSNLITE_SOAK_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("MOSNLITE_SOAK_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("seed %d (replay with MOSNLITE_SOAK_SEED=%d)", seed, seed)
	return seed
}

// soakData is the random buffer request bodies are sliced from, drawn from seed and a
// stream number of the test's own.
func soakData(seed, stream uint64) []byte {
	data := make([]byte, soakMaxBody+1024)
	src := rand.New(rand.NewPCG(seed, stream))
	for i := 0; i+8 <= len(data); i += 8 {
		binary.LittleEndian.PutUint64(data[i:], src.Uint64())
	}
	return data
}

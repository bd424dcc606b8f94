package e2e

//lint:file-ignore SA1019 x/net/http2's ClientConn is the h2c client the other HTTP/2 tests use too.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
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
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/mosnlite/mosnlite/test/framework"
)

// TestH2Multiplex: many streams share one h2c client connection through the proxy, to an
// HTTP/1 upstream and to an h2c upstream. Each connection carries 150 or 200 streams at
// once (the proxy allows 100 concurrent; the client queues the rest) with request bodies
// of none, a Content-Length, or unknown length streamed through a pipe, and responses of
// up to 1 MiB, fixed-length or streamed. Every body is a function of the request's id and
// the run's seed, so each side checks every byte and that the answer is its own.
//
// A share of the streams end early: the client cancels mid-request-body, right after the
// response head, or mid-response-body (RST_STREAM); the upstream aborts mid-body
// (http.ErrAbortHandler: HTTP/1 cuts the connection, h2 resets the stream). For those the
// client must see an error on that stream only, never a short body read as complete, and
// the upstream's handler must see the cancel and return. One stream per connection reads
// 32 KiB of its 1 MiB answer and stops until every other stream of its connection ended
// (per-stream flow control: its window is 64 KiB), then reads the rest. Every other
// stream must succeed byte-exact, the connection must still carry a large upload and
// download afterwards, and the proxy must return to its baseline of descriptors and
// goroutines (framework.LeakCheck).
//
// MOSNLITE_MUX_SEED=N replays a run's requests (not its timing).
func TestH2Multiplex(t *testing.T) {
	seed := muxSeed(t)
	for _, tc := range []struct{ name, up string }{{"h2-h1", "Http1"}, {"h2-h2", "Http2"}} {
		t.Run(tc.name, func(t *testing.T) { muxRun(t, seed, tc.up) })
	}
}

func muxSeed(t *testing.T) uint64 {
	if s := strings.TrimSpace(os.Getenv("MOSNLITE_MUX_SEED")); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("MOSNLITE_MUX_SEED: %v", err)
		}
		return n
	}
	n := rand.Uint64() >> 1
	t.Logf("MOSNLITE_MUX_SEED=%d", n)
	return n
}

// muxHold bounds how long an upstream handler waits for a cancel that must come.
const muxHold = 8 * time.Second

type muxMode int

const (
	muxOK         muxMode = iota // answered in full
	muxCancelBody                // the client cancels while sending its body
	muxCancelHead                // the client cancels after the head; the upstream holds after it
	muxCancelMid                 // the client cancels mid-body; the upstream holds after part of it
	muxAbort                     // the upstream aborts mid-body
	muxSlow                      // answered in full, read with a pause
	muxModes
)

var muxModeNames = [muxModes]string{"ok", "cancel-body", "cancel-head", "cancel-mid", "upstream-abort", "slow"}

func (m muxMode) String() string { return muxModeNames[m] }

const (
	hdrMuxID      = "X-Mux-Id"
	hdrMuxSeed    = "X-Mux-Seed"
	hdrMuxMode    = "X-Mux-Mode"
	hdrMuxReqLen  = "X-Mux-Req-Len" // the body the client means to send, in full
	hdrMuxRespLen = "X-Mux-Resp-Len"
	hdrMuxPart    = "X-Mux-Part" // hold and abort: response bytes sent first
	hdrMuxRespCL  = "X-Mux-Resp-Cl"
)

// muxData is the n-byte body of request id under seed: tag 'q' its request body, 's' its
// response body.
func muxData(seed uint64, id string, tag byte, n int) []byte {
	h := sha256.New()
	var s [8]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	h.Write(s[:])
	h.Write([]byte{tag})
	h.Write([]byte(id))
	var key [32]byte
	copy(key[:], h.Sum(nil))
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

// muxReq is one stream's plan.
type muxReq struct {
	id      string
	mode    muxMode
	body    int // 0: none, 1: Content-Length, 2: streamed through a pipe (no length)
	reqLen  int
	respLen int
	respCL  bool
	part    int // hold, abort: response bytes the upstream sends first; cancel-body: request bytes sent
}

// muxSize is a body size: mostly small, some up to 256 KiB, a few up to 1 MiB.
func muxSize(rng *rand.Rand) int {
	switch r := rng.IntN(100); {
	case r < 10:
		return 0
	case r < 55:
		return rng.IntN(16 << 10)
	case r < 85:
		return rng.IntN(256 << 10)
	default:
		return rng.IntN(1<<20) + 1
	}
}

func muxPlan(rng *rand.Rand, id string) *muxReq {
	r := &muxReq{id: id, respCL: rng.IntN(2) == 0}
	switch x := rng.IntN(100); {
	case x < 55:
		r.mode = muxOK
	case x < 66:
		r.mode = muxCancelBody
	case x < 76:
		r.mode = muxCancelHead
	case x < 87:
		r.mode = muxCancelMid
	default:
		r.mode = muxAbort
	}
	r.body = rng.IntN(3)
	r.reqLen = muxSize(rng) / 2
	if r.body == 0 {
		r.reqLen = 0
	}
	r.respLen = muxSize(rng)
	switch r.mode {
	case muxCancelBody:
		r.body = 1 + rng.IntN(2) // streamed, with or without a declared length
		r.reqLen = 2 + rng.IntN(300<<10)
		r.part = 1 + rng.IntN(r.reqLen-1)
	case muxCancelHead:
		if r.respCL {
			// The full path sends a fixed-length head with the first body piece.
			r.respLen, r.part = max(r.respLen, 2), 1
		}
	case muxCancelMid, muxAbort:
		r.respLen = max(r.respLen, 2)
		r.part = rng.IntN(r.respLen / 2)
		if r.mode == muxCancelMid {
			r.part++
		}
	}
	return r
}

// ---- upstream ----

// muxUpstream is the HTTP/1 or h2c upstream: it reads the whole request body and checks
// it, then answers as the request's mode says.
type muxUpstream struct {
	*httptest.Server
	inflight  atomic.Int64
	handled   atomic.Int64
	cancelled atomic.Int64 // hold handlers that saw their request's cancel
	cutBodies atomic.Int64 // request bodies that ended in an error (cancelled uploads)
	errs      soakNotes
	mu        sync.Mutex
	started   map[string]chan struct{} // id → closed once its handler runs
	active    map[string]muxMode       // handlers running
}

func newMuxUpstream(t *testing.T, h2 bool) *muxUpstream {
	u := &muxUpstream{started: map[string]chan struct{}{}, active: map[string]muxMode{}}
	s := httptest.NewUnstartedServer(u)
	if h2 {
		s.Config.Protocols = new(http.Protocols)
		s.Config.Protocols.SetUnencryptedHTTP2(true)
	}
	s.Start()
	t.Cleanup(s.Close)
	u.Server = s
	return u
}

// startedCh is closed once the handler of id runs.
func (u *muxUpstream) startedCh(id string) chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	ch, ok := u.started[id]
	if !ok {
		ch = make(chan struct{})
		u.started[id] = ch
	}
	return ch
}

func (u *muxUpstream) begin(id string, m muxMode) {
	ch := u.startedCh(id)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.active[id+"/"+strconv.FormatInt(u.handled.Add(1), 10)] = m
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (u *muxUpstream) end(key string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.active, key)
}

func (u *muxUpstream) activeList() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for k, m := range u.active {
		out = append(out, k+" "+m.String())
	}
	return out
}

func (u *muxUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(hdrMuxID)
	seed, _ := strconv.ParseUint(r.Header.Get(hdrMuxSeed), 10, 64)
	m, _ := strconv.Atoi(r.Header.Get(hdrMuxMode))
	mode := muxMode(m)
	reqLen, _ := strconv.Atoi(r.Header.Get(hdrMuxReqLen))
	respLen, _ := strconv.Atoi(r.Header.Get(hdrMuxRespLen))
	part, _ := strconv.Atoi(r.Header.Get(hdrMuxPart))
	cl := r.Header.Get(hdrMuxRespCL) == "1"

	u.inflight.Add(1)
	defer u.inflight.Add(-1)
	u.begin(id, mode)
	key := id + "/" + strconv.FormatInt(u.handled.Load(), 10)
	defer u.end(key)

	body, err := io.ReadAll(r.Body)
	want := muxData(seed, id, 'q', reqLen)
	if err != nil {
		if mode != muxCancelBody {
			u.errs.add("%s upstream: %s (%s): request body failed after %d of %d bytes: %v", r.Proto, id, mode, len(body), reqLen, err)
		} else {
			u.cutBodies.Add(1)
		}
		if !bytes.HasPrefix(want, body) {
			u.errs.add("%s upstream: %s (%s): the %d request body bytes received are not the client's", r.Proto, id, mode, len(body))
		}
		return
	}
	if !bytes.Equal(body, want) {
		u.errs.add("%s upstream: %s (%s): got a complete request body that is not the client's: %s", r.Proto, id, mode, soakDiff(body, want))
		http.Error(w, "request body garbled", http.StatusUnprocessableEntity)
		return
	}
	resp := muxData(seed, id, 's', respLen)
	h := w.Header()
	h.Set(hdrMuxID, id)
	if cl {
		h.Set("Content-Length", strconv.Itoa(respLen))
	}
	f := w.(http.Flusher)
	switch mode {
	case muxCancelHead, muxCancelMid:
		w.WriteHeader(http.StatusOK)
		w.Write(resp[:part])
		f.Flush()
		select {
		case <-r.Context().Done():
			u.cancelled.Add(1)
		case <-time.After(muxHold):
			u.errs.add("%s upstream: %s (%s, request %d B, answer %d B with length %v, %d sent): the client's cancel did not reach the upstream within %s",
				r.Proto, id, mode, reqLen, respLen, cl, part, muxHold)
		}
		return
	case muxAbort:
		w.WriteHeader(http.StatusOK)
		w.Write(resp[:part])
		f.Flush()
		panic(http.ErrAbortHandler)
	}
	if cl {
		w.Write(resp)
		return
	}
	f.Flush()
	for rest, n := resp, 1+respLen/5; len(rest) > 0; {
		k := min(len(rest), n)
		if _, err := w.Write(rest[:k]); err != nil {
			return
		}
		f.Flush()
		rest = rest[k:]
	}
}

// ---- client ----

// muxTally counts one run's stream outcomes per mode.
type muxTally struct {
	ok, clean, cancelled [muxModes]atomic.Int64
	notReached           atomic.Int64 // cancel-body streams cancelled before their handler ran
	bytes                atomic.Int64 // response bytes checked
	bad                  soakNotes    // garbled answers and unexpected failures
}

func (m *muxTally) summary() string {
	var b strings.Builder
	for i := range muxModes {
		fmt.Fprintf(&b, "%s: %d ok, %d cancelled, %d failed cleanly; ", muxMode(i), m.ok[i].Load(), m.cancelled[i].Load(), m.clean[i].Load())
	}
	fmt.Fprintf(&b, "%d cancelled before reaching the upstream; %d MiB checked; %d bad", m.notReached.Load(), m.bytes.Load()>>20, m.bad.n.Load())
	return b.String()
}

// muxDial opens one h2c client connection to addr whose streams have a 64 KiB receive window.
func muxDial(t *testing.T, addr string) *http2.ClientConn {
	t.Helper()
	t1 := &http.Transport{HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10}}
	tr, err := http2.ConfigureTransports(t1)
	if err != nil {
		t.Fatal(err)
	}
	tr.AllowHTTP = true
	tr.StrictMaxConcurrentStreams = true // queue streams above the server's limit on this connection
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := tr.NewClientConn(c)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

type muxClient struct {
	addr string
	seed uint64
	up   *muxUpstream
	tl   *muxTally
}

// request builds r's request; for a piped body it returns the writer's end and the
// request bytes.
func (mc *muxClient) request(ctx context.Context, r *muxReq) (*http.Request, *io.PipeWriter, []byte) {
	data := muxData(mc.seed, r.id, 'q', r.reqLen)
	var body io.Reader
	var pw *io.PipeWriter
	switch r.body {
	case 1:
		body = bytes.NewReader(data)
	case 2:
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		body = pr
	}
	method := "GET"
	if r.body != 0 {
		method = "POST"
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+mc.addr+"/mux/"+r.id, body)
	if err != nil {
		panic(err)
	}
	if r.body == 2 {
		req.ContentLength = -1
		if r.mode == muxCancelBody && r.part%2 == 0 {
			req.ContentLength = int64(r.reqLen) // a declared length, streamed
		}
	}
	if r.mode == muxCancelBody && r.body == 1 {
		// A declared length, streamed, cut short.
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		req.Body = pr
		req.GetBody = nil
		req.ContentLength = int64(r.reqLen)
	}
	h := req.Header
	h.Set(hdrMuxID, r.id)
	h.Set(hdrMuxSeed, strconv.FormatUint(mc.seed, 10))
	h.Set(hdrMuxMode, strconv.Itoa(int(r.mode)))
	h.Set(hdrMuxReqLen, strconv.Itoa(r.reqLen))
	h.Set(hdrMuxRespLen, strconv.Itoa(r.respLen))
	h.Set(hdrMuxPart, strconv.Itoa(r.part))
	if r.respCL {
		h.Set(hdrMuxRespCL, "1")
	}
	return req, pw, data
}

// pump writes data to pw in pieces of random size, then closes it.
func pump(pw *io.PipeWriter, data []byte, rng *rand.Rand) {
	for len(data) > 0 {
		n := min(len(data), 1+rng.IntN(32<<10))
		if _, err := pw.Write(data[:n]); err != nil {
			return
		}
		data = data[n:]
	}
	pw.Close()
}

// do runs one stream on cc. othersDone (slow streams only) is closed once every other
// stream of the connection ended.
func (mc *muxClient) do(parent context.Context, cc *http2.ClientConn, r *muxReq, rng *rand.Rand, othersDone <-chan struct{}) {
	ctx, cancel := context.WithTimeout(parent, 15*time.Second)
	defer cancel()
	bad := func(format string, args ...any) {
		mc.tl.bad.add("%s (%s, req %d B body %d, resp %d B cl %v part %d): %s", r.id, r.mode, r.reqLen, r.body,
			r.respLen, r.respCL, r.part, fmt.Sprintf(format, args...))
	}
	req, pw, data := mc.request(ctx, r)
	var wrote sync.WaitGroup
	if pw != nil {
		wrote.Add(1)
		wrng := rand.New(rand.NewPCG(rng.Uint64(), 1))
		if r.mode == muxCancelBody {
			started := mc.up.startedCh(r.id)
			go func() {
				defer wrote.Done()
				if _, err := pw.Write(data[:r.part]); err == nil {
					select {
					case <-started:
					case <-time.After(2 * time.Second):
						mc.tl.notReached.Add(1)
					}
				}
				cancel()
				pw.CloseWithError(context.Canceled)
			}()
		} else {
			go func() {
				defer wrote.Done()
				pump(pw, data, wrng)
			}()
		}
	}
	defer wrote.Wait()
	if pw != nil {
		defer pw.CloseWithError(errors.New("stream over"))
	}

	resp, err := cc.RoundTrip(req)
	if r.mode == muxCancelBody {
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			bad("an answer %d (%.100q) to a request whose body was cut short", resp.StatusCode, b)
			return
		}
		mc.tl.cancelled[r.mode].Add(1)
		return
	}
	if err != nil {
		if r.mode == muxAbort && ctx.Err() == nil {
			mc.tl.clean[r.mode].Add(1)
			return
		}
		bad("round trip: %v", err)
		return
	}
	defer resp.Body.Close()
	if got := resp.Header.Get(hdrMuxID); got != r.id || resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		bad("answer %d with id %q: %.200q", resp.StatusCode, got, b)
		return
	}
	want := muxData(mc.seed, r.id, 's', r.respLen)
	switch r.mode {
	case muxCancelHead:
		cancel()
		mc.tl.cancelled[r.mode].Add(1)
		return
	case muxCancelMid:
		k := 1 + rng.IntN(r.part)
		got := make([]byte, k)
		if _, err := io.ReadFull(resp.Body, got); err != nil {
			bad("reading the first %d bytes: %v", k, err)
			return
		}
		if !bytes.Equal(got, want[:k]) {
			bad("the first %d bytes %s", k, soakDiff(got, want[:k]))
			return
		}
		cancel()
		mc.tl.cancelled[r.mode].Add(1)
		return
	case muxSlow:
		got := make([]byte, 32<<10)
		if _, err := io.ReadFull(resp.Body, got); err != nil {
			bad("reading the first 32 KiB: %v", err)
			return
		}
		select {
		case <-othersDone:
		case <-time.After(10 * time.Second):
			bad("the other streams of the connection did not end in 10 s while this one did not read")
		}
		for len(got) < r.respLen {
			n := len(got)
			got = append(got, make([]byte, 16<<10)...)
			k, err := io.ReadFull(resp.Body, got[n:])
			got = got[:n+k]
			if err != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		rest, err := io.ReadAll(resp.Body)
		got = append(got, rest...)
		if err != nil || !bytes.Equal(got, want) {
			bad("body %s, err %v", soakDiff(got, want), err)
			return
		}
		mc.tl.ok[r.mode].Add(1)
		mc.tl.bytes.Add(int64(len(got)))
		return
	}
	got, err := io.ReadAll(resp.Body)
	if r.mode == muxAbort {
		switch {
		case err == nil:
			bad("a clean %d-byte body (the upstream aborted after %d)", len(got), r.part)
		case !bytes.HasPrefix(want, got):
			bad("the %d bytes before the error are not the answer's", len(got))
		case ctx.Err() != nil:
			bad("no end within the stream's deadline: %v", err)
		default:
			mc.tl.clean[r.mode].Add(1)
		}
		return
	}
	if err != nil || !bytes.Equal(got, want) {
		bad("body %s, err %v", soakDiff(got, want), err)
		return
	}
	mc.tl.ok[r.mode].Add(1)
	mc.tl.bytes.Add(int64(len(got)))
}

// conn runs n streams at once on cc, one of them slow.
func (mc *muxClient) conn(ctx context.Context, cc *http2.ClientConn, name string, n int, rng *rand.Rand) {
	var wg, others sync.WaitGroup
	othersDone := make(chan struct{})
	slow := &muxReq{id: name + "-slow", mode: muxSlow, respLen: 1 << 20, respCL: rng.IntN(2) == 0}
	slowRng := rand.New(rand.NewPCG(rng.Uint64(), 2))
	wg.Add(1)
	go func() {
		defer wg.Done()
		mc.do(ctx, cc, slow, slowRng, othersDone)
	}()
	for i := range n - 1 {
		r := muxPlan(rng, fmt.Sprintf("%s-%d", name, i))
		srng := rand.New(rand.NewPCG(rng.Uint64(), 3))
		wg.Add(1)
		others.Add(1)
		go func() {
			defer wg.Done()
			defer others.Done()
			mc.do(ctx, cc, r, srng, nil)
		}()
	}
	others.Wait()
	close(othersDone)
	wg.Wait()
}

// after checks that cc still carries a 2 MiB upload and a 1 MiB answer, and was not
// told to go away.
func (mc *muxClient) after(ctx context.Context, cc *http2.ClientConn, name string) {
	r := &muxReq{id: name + "-after", mode: muxOK, body: 1, reqLen: 2 << 20, respLen: 1 << 20}
	mc.do(ctx, cc, r, rand.New(rand.NewPCG(1, 2)), nil)
	if st := cc.State(); st.Closed || st.Closing {
		mc.tl.bad.add("%s: the client connection is closed or closing after the load: %+v", name, st)
	}
}

func muxRun(t *testing.T, seed uint64, upProto string) {
	up := newMuxUpstream(t, upProto == "Http2")
	listen := framework.FreePort(t)
	p := framework.StartProxy(t, soakConfig(t, []soakListener{{
		name: "mux", addr: listen,
		proxy:  map[string]any{"downstream_protocol": "Http2", "upstream_protocol": upProto},
		routes: []any{clusterRoute("/", "up", map[string]any{"timeout": "30s"})},
	}}, map[string]string{"up": hostOf(up.Server)}))
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	settle := func(what string) {
		t.Helper()
		deadline := time.Now().Add(muxHold + 2*time.Second)
		for up.inflight.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := up.inflight.Load(); n > 0 {
			t.Fatalf("%s: %d upstream handlers still running: %v", what, n, up.activeList())
		}
	}

	// Warm-up without early ends: the pool exists before the baseline.
	warm := &muxClient{addr: listen, seed: seed, up: up, tl: &muxTally{}}
	cc := muxDial(t, listen)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			warm.do(ctx, cc, &muxReq{id: fmt.Sprintf("warm-%d", i), body: i % 3, reqLen: 1000 * i * min(i%3, 1), respLen: 50000 * i}, rand.New(rand.NewPCG(0, uint64(i))), nil)
		}()
	}
	wg.Wait()
	cc.Close()
	if warm.tl.bad.n.Load() > 0 {
		t.Fatalf("warm-up: %s", strings.Join(warm.tl.bad.list(), "\n  "))
	}
	settle("warm-up")
	up.CloseClientConnections()
	lc := framework.NewLeakCheck(t, p)

	mc := &muxClient{addr: listen, seed: seed, up: up, tl: &muxTally{}}
	rng := rand.New(rand.NewPCG(seed, 7))
	streams := 0
	for round, plan := range [][]int{{150, 150}, {200}} {
		var wg sync.WaitGroup
		for k, n := range plan {
			name := fmt.Sprintf("r%dc%d", round, k)
			crng := rand.New(rand.NewPCG(rng.Uint64(), uint64(k)))
			cc := muxDial(t, listen)
			streams += n + 1
			wg.Add(1)
			go func() {
				defer wg.Done()
				mc.conn(ctx, cc, name, n, crng)
				mc.after(ctx, cc, name)
				cc.Close()
			}()
		}
		wg.Wait()
	}
	settle("load")
	t.Logf("%d streams on 3 connections (150, 150 and 200 at once, then one large exchange each): %s", streams, mc.tl.summary())
	t.Logf("upstream: %d requests, %d cut request bodies, %d held handlers saw the cancel",
		up.handled.Load(), up.cutBodies.Load(), up.cancelled.Load())
	if n := mc.tl.bad.n.Load(); n > 0 {
		t.Errorf("%d streams garbled or failed unexpectedly:\n  %s", n, strings.Join(mc.tl.bad.list(), "\n  "))
	}
	if n := up.errs.n.Load(); n > 0 {
		t.Errorf("the upstream saw %d problems:\n  %s", n, strings.Join(up.errs.list(), "\n  "))
	}
	if mc.tl.ok[muxOK].Load() == 0 || mc.tl.cancelled[muxCancelMid].Load() == 0 || mc.tl.clean[muxAbort].Load() == 0 {
		t.Errorf("the load did not exercise every mode: %s", mc.tl.summary())
	}
	if t.Failed() {
		t.Fatalf("MOSNLITE_MUX_SEED=%d", seed)
	}
	up.CloseClientConnections()
	lc.Check(t)
}

// TestH2MultiplexCancelAfterLateHead: 40 streams on one connection whose upstream sends
// the response head 1.2 s after the request, then holds the body until the request is
// cancelled. The client cancels each stream as soon as its head arrives; every upstream
// handler must see its request cancelled (the connection cut on HTTP/1, RST_STREAM on
// h2) within 3 s, not when the route timeout (30 s) runs out.
func TestH2MultiplexCancelAfterLateHead(t *testing.T) {
	const lateStreams = 40
	for _, tc := range []struct{ name, up string }{{"h2-h1", "Http1"}, {"h2-h2", "Http2"}} {
		t.Run(tc.name, func(t *testing.T) {
			var inflight, cancelled atomic.Int64
			var notes soakNotes
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				inflight.Add(1)
				defer inflight.Add(-1)
				select {
				case <-time.After(1200 * time.Millisecond):
				case <-r.Context().Done():
					notes.add("%s: cancelled before the head", r.URL.Path)
					return
				}
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					cancelled.Add(1)
				case <-time.After(3 * time.Second):
					notes.add("%s: the cancel did not reach the upstream within 3 s of the head", r.URL.Path)
				}
			})
			s := httptest.NewUnstartedServer(h)
			if tc.up == "Http2" {
				s.Config.Protocols = new(http.Protocols)
				s.Config.Protocols.SetUnencryptedHTTP2(true)
			}
			s.Start()
			t.Cleanup(s.Close)
			listen := framework.FreePort(t)
			framework.StartProxy(t, soakConfig(t, []soakListener{{
				name: "late", addr: listen,
				proxy:  map[string]any{"downstream_protocol": "Http2", "upstream_protocol": tc.up},
				routes: []any{clusterRoute("/", "up", map[string]any{"timeout": "30s"})},
			}}, map[string]string{"up": hostOf(s)}))
			cc := muxDial(t, listen)
			var wg sync.WaitGroup
			var failed soakNotes
			for i := range lateStreams {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s/late/%d", listen, i), nil)
					resp, err := cc.RoundTrip(req)
					if err != nil {
						failed.add("stream %d: %v", i, err)
						return
					}
					cancel()
					resp.Body.Close()
				}()
			}
			wg.Wait()
			waitUntil(t, "the upstream handlers to return", 8*time.Second, func() bool { return inflight.Load() == 0 })
			if n := failed.n.Load() + notes.n.Load(); n > 0 {
				t.Fatalf("%d of %d streams went wrong:\n  %s", n, lateStreams, strings.Join(append(failed.list(), notes.list()...), "\n  "))
			}
			if st := cc.State(); st.Closed || st.Closing {
				t.Fatalf("client connection closed or closing: %+v", st)
			}
			t.Logf("%d cancels reached the upstream", cancelled.Load())
		})
	}
}

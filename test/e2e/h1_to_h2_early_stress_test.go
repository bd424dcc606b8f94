package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/test/framework"
)

// Stress of the HTTP/1 client to HTTP/2 upstream path when the upstream answers while
// the request body is still arriving (pkg/proxy/h2conv.go h2Early): the RoundTrip
// goroutine writes the answer and the session goroutine goes on reading the body; one
// compare-and-swap decides who takes the response. The cases race the two at many
// points (answer before any body byte is read, after part of it, exactly at its end,
// after EOF) and check every answer byte for byte, then that the connection serves the
// next request or ends cleanly. Each group has its own proxy and origin and ends with a
// leak check.

// esOrigin starts an h2c origin (h2Origin's accept loop) with esServe as its handler.
func esOrigin(t *testing.T) *h2Origin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &h2Origin{addr: ln.Addr().String(), ln: ln, gen: newOriginGen(), conns: map[net.Conn]bool{}, events: make(chan string, 256)}
	o.h = http.HandlerFunc(esServe)
	o.wg.Add(1)
	go o.accept()
	t.Cleanup(o.close)
	return o
}

// esServe answers h1h2Data[:size] with status (200 by default): after reading read
// bytes of the body (-1: up to EOF), after delay ms, with Content-Length unless nolen=1.
// head=1 sends the head first, then reads the whole body, then sends the answer's body.
// rst=N sends the head and N-1 body bytes, then resets the stream.
func esServe(w http.ResponseWriter, r *http.Request) {
	size := qInt(r, "size")
	if r.URL.Query().Get("head") == "1" {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write(h1h2Data[:size])
		return
	}
	if rst := qInt(r, "rst"); rst > 0 { // head (and rst-1 body bytes), then RST_STREAM
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(h1h2Data[:rst-1])
		w.(http.Flusher).Flush()
		time.Sleep(10 * time.Millisecond)
		panic(http.ErrAbortHandler)
	}
	switch read := qInt(r, "read"); {
	case read < 0:
		_, _ = io.Copy(io.Discard, r.Body)
	case read > 0:
		_, _ = io.ReadFull(r.Body, make([]byte, read))
	}
	if d := qInt(r, "delay"); d > 0 {
		select {
		case <-time.After(time.Duration(d) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("X-Es", "1")
	if qInt(r, "nolen") != 1 {
		w.Header().Set("Content-Length", strconv.Itoa(size))
	}
	if st := qInt(r, "status"); st != 0 {
		w.WriteHeader(st)
	}
	for off := 0; off < size; off += 16 << 10 {
		if _, err := w.Write(h1h2Data[off:min(size, off+16<<10)]); err != nil {
			return
		}
	}
}

// esPatch edits the JSON config: the proxy filter's config and the listener.
func esPatch(t *testing.T, cfg string, edit func(pc, l map[string]any)) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(cfg), &m); err != nil {
		t.Fatal(err)
	}
	l := m["servers"].([]any)[0].(map[string]any)["listeners"].([]any)[0].(map[string]any)
	f := l["filter_chains"].([]any)[0].(map[string]any)["filters"].([]any)[0].(map[string]any)
	edit(f["config"].(map[string]any), l)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// esEnv is one group's origin and proxy.
type esEnv struct {
	o       *h2Origin
	p       *framework.Proxy
	addr    string
	logPath string // the access log, when the group has one
}

// esStart starts, for each edit, an origin and a proxy to it over HTTP/2 (edit may
// change its config). The proxies start at once, before any traffic of this test; a
// start that lost its picked port to another socket on the machine is tried again on
// new ports.
func esStart(t *testing.T, edits []func(e *esEnv, pc, l map[string]any)) []*esEnv {
	t.Helper()
	envs := make([]*esEnv, len(edits))
	for i := range edits {
		envs[i] = &esEnv{o: esOrigin(t)}
	}
	var wg sync.WaitGroup
	for i, e := range envs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var msg string
			for try := 0; try < 3 && e.p == nil; try++ {
				b := esTB{TB: t, msg: &msg}
				func() {
					done := make(chan struct{})
					go func() {
						defer close(done)
						e.addr = framework.FreePort(b)
						cfg := framework.WithAdmin(b, httpProxyConfig(e.addr, "Http1", "", []any{routeTo("/", map[string]any{"upstream_protocol": "Http2", "timeout": "20s"})}, e.o.addr))
						if edits[i] != nil {
							cfg = esPatch(t, cfg, func(pc, l map[string]any) { edits[i](e, pc, l) })
						}
						e.p = framework.StartProxy(b, cfg)
					}()
					<-done
				}()
			}
			if e.p == nil {
				t.Errorf("proxy %d did not start: %s", i, msg)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return envs
}

// esTB is t for a goroutine other than the test's: a fatal failure is kept in msg and
// ends that goroutine.
type esTB struct {
	testing.TB
	msg *string
}

func (b esTB) Fatal(args ...any) { *b.msg = fmt.Sprint(args...); runtime.Goexit() }
func (b esTB) Fatalf(format string, args ...any) {
	*b.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (b esTB) FailNow() { *b.msg = "FailNow"; runtime.Goexit() }

// warm sends one request, drops its connections and takes the leak check's baseline.
func (e *esEnv) warm(t *testing.T) *framework.LeakCheck {
	t.Helper()
	c := h1h2Client(t)
	mustDo(t, c, newReq(t, "POST", "http://"+e.addr+"/w?size=10&read=-1", strings.NewReader("warm")))
	c.CloseIdleConnections()
	e.o.drop()
	return framework.NewLeakCheck(t, e.p)
}

// esReq is one request on a raw connection.
type esReq struct {
	method, path string
	proto        string // "HTTP/1.1" by default
	extra        string // more header lines, each ending in \r\n
	up           int    // body length (h1h2Data[1<<20:]...)
	chunked      bool
	none         bool // no body framing at all
}

func (q *esReq) body() []byte { return h1h2Data[1<<20:][:q.up] }

func (q *esReq) head() []byte {
	proto := q.proto
	if proto == "" {
		proto = "HTTP/1.1"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s %s\r\nHost: es\r\n%s", q.method, q.path, proto, q.extra)
	switch {
	case q.none:
	case q.chunked:
		b.WriteString("Transfer-Encoding: chunked\r\n")
	default:
		fmt.Fprintf(&b, "Content-Length: %d\r\n", q.up)
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// bodyBytes is the body as sent (chunked in pieces of 5000 bytes).
func (q *esReq) bodyBytes() []byte {
	if q.none {
		return nil
	}
	if !q.chunked {
		return q.body()
	}
	var b bytes.Buffer
	for rest := q.body(); len(rest) > 0; {
		k := min(len(rest), 5000)
		fmt.Fprintf(&b, "%x\r\n", k)
		b.Write(rest[:k])
		b.WriteString("\r\n")
		rest = rest[k:]
	}
	b.WriteString("0\r\n\r\n")
	return b.Bytes()
}

func (q *esReq) bytes() []byte { return append(q.head(), q.bodyBytes()...) }

// esCheck reads one answer from br and checks it: status 200, the body h1h2Data[:size]
// (none for HEAD), framed as nolen says, and closing as wantClose says.
// A short answer of unknown length may get a Content-Length from x/net.
func esCheck(br *bufio.Reader, method string, size int, nolen, http10, wantClose bool) error {
	req, _ := http.NewRequest(method, "http://es/", nil)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := h1h2Data[:size]
	if method == "HEAD" {
		want = nil
	}
	switch {
	case err != nil:
		return fmt.Errorf("status %d: body after %d bytes: %w", resp.StatusCode, len(got), err)
	case resp.StatusCode != 200 || resp.Header.Get("X-Es") != "1":
		return fmt.Errorf("status %d, X-Es %q: %.200q", resp.StatusCode, resp.Header.Get("X-Es"), got)
	case !bytes.Equal(got, want):
		return fmt.Errorf("%d body bytes (want %d), equal prefix %v", len(got), len(want), bytes.HasPrefix(want, got))
	case resp.Close != wantClose:
		return fmt.Errorf("answer closes the connection: %v, want %v", resp.Close, wantClose)
	case !nolen && method != "HEAD" && resp.ContentLength != int64(size):
		return fmt.Errorf("Content-Length %d, want %d", resp.ContentLength, size)
	case nolen && !http10 && method != "HEAD" && len(resp.TransferEncoding) == 0 && resp.ContentLength != int64(size):
		return errors.New("answer of unknown length neither chunked nor of the right length")
	}
	return nil
}

// esDial connects to addr with a deadline d.
func esDial(t *testing.T, addr string, d time.Duration) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c := framework.Dial(t, addr)
	_ = c.SetDeadline(time.Now().Add(d))
	return c, bufio.NewReader(c)
}

// esEOF checks that the connection carries nothing more and ends.
func esEOF(br *bufio.Reader) error {
	if b, err := br.ReadByte(); err == nil {
		rest, _ := br.Peek(br.Buffered())
		return fmt.Errorf("bytes after the last answer: %q", append([]byte{b}, rest...))
	} else if err != io.EOF {
		return fmt.Errorf("connection not closed cleanly after the answer: %v", err)
	}
	return nil
}

// esNext sends a bodiless GET on the connection and checks its answer (keep-alive).
func esNext(c net.Conn, br *bufio.Reader) error {
	if _, err := io.WriteString(c, "GET /next?size=7 HTTP/1.1\r\nHost: es\r\n\r\n"); err != nil {
		return fmt.Errorf("next request: %w", err)
	}
	if err := esCheck(br, "GET", 7, false, false, false); err != nil {
		return fmt.Errorf("next request: %w", err)
	}
	return nil
}

// esExchange writes q (from a goroutine: the answer may come first) and checks its
// answer; the writer must then finish (the rest of the body is read and dropped).
func esExchange(c net.Conn, br *bufio.Reader, q *esReq, size int, nolen, wantClose bool) error {
	werr := make(chan error, 1)
	go func() { _, err := c.Write(q.bytes()); werr <- err }()
	err := esCheck(br, q.method, size, nolen, q.proto == "HTTP/1.0", wantClose)
	if err != nil {
		_ = c.Close()
	}
	if werr := <-werr; err == nil && werr != nil && !wantClose {
		err = fmt.Errorf("writing the request: %w", werr)
	}
	return err
}

// esMoment is when the origin answers: before reading the body, after part of it,
// right after its last byte (before EOF), after EOF.
func esMoment(i, up int) string {
	switch i % 4 {
	case 0:
		return "read=0"
	case 1:
		return "read=" + strconv.Itoa(min(up, 32<<10))
	case 2:
		return "read=" + strconv.Itoa(up)
	}
	return "read=-1"
}

func TestH1ToH2EarlyStress(t *testing.T) {
	bodyTimeout := func(_ *esEnv, pc, _ map[string]any) {
		pc["extend_config"] = map[string]any{"request_body_timeout": "300ms"}
	}
	hooks := func(e *esEnv, _, l map[string]any) {
		e.logPath = filepath.Join(t.TempDir(), "access.log")
		l["access_logs"] = []any{map[string]any{"log_path": e.logPath, "log_format": "%response_code%|%response_flag%|%bytes_sent%|%x-mosn-path%|%request_header_x-size%"}}
		l["stream_filters"] = []any{
			map[string]any{"type": "payload_limit", "config": map[string]any{"max_entity_size": 64 << 20}},
			map[string]any{"type": "header_mutation", "config": map[string]any{
				"response_headers_to_add": []any{map[string]any{"header": map[string]any{"key": "x-b", "value": "2"}}}}},
		}
	}
	groups := []struct {
		name string
		edit func(e *esEnv, pc, l map[string]any)
		f    func(*testing.T, *esEnv)
	}{
		{"answers", nil, esAnswers}, {"netclient", nil, esNetClient}, {"aborts", nil, esAborts},
		{"pipelined", nil, esPipelined}, {"kinds", nil, esKinds}, {"bodytimeout", bodyTimeout, esBodyTimeout},
		{"halfclose", nil, esHalfClose}, {"upreset", nil, esUpReset}, {"badchunk", nil, esBadChunk},
		{"accesslog", hooks, esAccessLog},
	}
	var edits []func(e *esEnv, pc, l map[string]any)
	for _, g := range groups {
		edits = append(edits, g.edit)
	}
	envs := esStart(t, edits)
	// The groups run at once, each on its own proxy and origin (with its own leak
	// check): most of their time is waiting, which t.Parallel would bound by GOMAXPROCS.
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(g.name, func(t *testing.T) { g.f(t, envs[i]) })
		}()
	}
	wg.Wait()
	// Stopped at once rather than one by one at cleanup.
	for _, e := range envs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.p.Stop(10 * time.Second)
		}()
	}
	wg.Wait()
}

// esAnswers: answers of 0 B to 1 MiB, with and without Content-Length, to uploads of
// 1 B to 600 KiB (Content-Length and chunked), answered at four moments; each exchange on
// a kept-alive raw connection, so the next one checks that the connection goes on.
func esAnswers(t *testing.T, e *esEnv) {
	o, addr, lc := e.o, e.addr, e.warm(t)
	sizes := []int{0, 1, 16 << 10, 70 << 10, 1 << 20}
	ups := []int{1, 64 << 10, 600 << 10}
	var wg sync.WaitGroup
	for _, size := range sizes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, br := esDial(t, addr, 20*time.Second)
			defer c.Close()
			n := 0
			for _, up := range ups {
				for _, chunked := range []bool{false, true} {
					for m := 0; m < 4; m++ {
						{
							n++
							nolen := (n+size)%2 == 1
							path := fmt.Sprintf("/e?size=%d&%s", size, esMoment(m, up))
							if nolen {
								path += "&nolen=1"
							}
							q := &esReq{method: "POST", path: path, up: up, chunked: chunked}
							if err := esExchange(c, br, q, size, nolen, false); err != nil {
								t.Errorf("#%d size %d, upload %d chunked %v, %s: %v", n, size, up, chunked, path, err)
								return
							}
						}
					}
				}
			}
			if err := esNext(c, br); err != nil {
				t.Errorf("size %d: %v", size, err)
			}
		}()
	}
	wg.Wait()
	o.drop()
	lc.Check(t)
}

// esNetClient: net/http's client uploads while the answer comes early; it may close the
// connection after the answer (its body write still going) and dial again.
func esNetClient(t *testing.T, e *esEnv) {
	o, addr, lc := e.o, e.addr, e.warm(t)
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{DisableCompression: true, MaxConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; i < 10; i++ {
				size := []int{0, 1, 16 << 10, 70 << 10, 1 << 20}[r.IntN(5)]
				up := []int{10, 64 << 10, 1 << 20}[r.IntN(3)]
				nolen := r.IntN(2) == 1
				u := fmt.Sprintf("http://%s/e?size=%d&%s", addr, size, esMoment(r.IntN(4), up))
				if nolen {
					u += "&nolen=1"
				}
				var body io.Reader = bytes.NewReader(h1h2Data[:up])
				if r.IntN(2) == 1 {
					body = opaqueReader{body}
				}
				req, _ := http.NewRequest("POST", u, body)
				resp, err := c.Do(req)
				if err != nil {
					t.Errorf("%s upload %d: %v", u, up, err)
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, h1h2Data[:size]) {
					t.Errorf("%s upload %d: status %d, %d bytes (want %d), %v", u, up, resp.StatusCode, len(got), size, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	o.drop()
	lc.Check(t)
}

// esAborts: the client closes or resets its connection mid-upload before the answer,
// during the early answer, or after it while the body is still being sent. The proxy
// must go on serving and get back to its baseline.
func esAborts(t *testing.T, e *esEnv) {
	o, addr, lc := e.o, e.addr, e.warm(t)
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 11))
			for i := 0; i < 18; i++ {
				when, rst, chunked := i%3, r.IntN(2) == 1, r.IntN(2) == 1
				if err := esAbortOnce(t, addr, when, rst, chunked, r); err != nil {
					t.Errorf("#%d when %d rst %v chunked %v: %v", i, when, rst, chunked, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// The proxy still serves.
	c, br := esDial(t, addr, 5*time.Second)
	if err := esNext(c, br); err != nil {
		t.Error(err)
	}
	c.Close()
	o.drop()
	lc.Check(t)
}

func esAbortOnce(t *testing.T, addr string, when int, rst, chunked bool, r *rand.Rand) error {
	c, br := esDial(t, addr, 10*time.Second)
	defer c.Close()
	abort := func() {
		if rst {
			_ = c.SetLinger(0)
		}
		_ = c.Close()
	}
	const up = 1 << 20
	q := &esReq{method: "POST", up: up, chunked: chunked}
	size := 1 << 20
	switch when {
	case 0: // before the answer (the origin waits 40 ms)
		q.path = fmt.Sprintf("/e?size=%d&read=0&delay=40", size)
	case 1: // during the answer
		q.path = fmt.Sprintf("/e?size=%d&read=0", size)
	}
	all := q.bytes()
	sent := len(q.head()) + r.IntN(256<<10)
	if when == 2 { // after the answer, mid-upload; the origin reads at most what was sent
		size = 16 << 10
		q.path = fmt.Sprintf("/e?size=%d&read=%d", size, r.IntN(sent-len(q.head())+1)/2)
		all = q.bytes()
	}
	if _, err := c.Write(all[:sent]); err != nil {
		return err
	}
	switch when {
	case 0:
		time.Sleep(time.Duration(r.IntN(40)) * time.Millisecond)
		abort()
		return nil
	case 1:
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		k := r.IntN(size)
		got := make([]byte, k)
		if _, err := io.ReadFull(resp.Body, got); err != nil || !bytes.Equal(got, h1h2Data[:k]) || resp.StatusCode != 200 {
			return fmt.Errorf("status %d, first %d bytes equal %v, %v", resp.StatusCode, k, bytes.Equal(got, h1h2Data[:k]), err)
		}
		abort()
		return nil
	}
	if err := esCheck(br, "POST", size, false, false, false); err != nil {
		return err
	}
	more := r.IntN(len(all) - sent)
	if _, err := c.Write(all[sent : sent+more]); err != nil {
		return err
	}
	abort()
	return nil
}

// esPipelined: requests pipelined behind an early-answered upload, one of them another
// early-answered (chunked) upload, all written at once; the answers come in order.
func esPipelined(t *testing.T, e *esEnv) {
	o, addr, lc := e.o, e.addr, e.warm(t)
	r := rand.New(rand.NewPCG(3, 3))
	for i := 0; i < 16; i++ {
		a, b := []int{0, 100, 70 << 10, 1 << 20}[r.IntN(4)], []int{1, 16 << 10, 300 << 10}[r.IntN(3)]
		up1, up2 := []int{200 << 10, 1 << 20}[r.IntN(2)], []int{100 << 10, 600 << 10}[r.IntN(2)]
		qs := []*esReq{
			{method: "POST", path: fmt.Sprintf("/e?size=%d&%s", a, esMoment(r.IntN(4), up1)), up: up1},
			{method: "GET", path: "/e?size=5", none: true},
			{method: "POST", path: fmt.Sprintf("/e?size=%d&nolen=1&%s", b, esMoment(r.IntN(4), up2)), up: up2, chunked: true},
			{method: "POST", path: "/e?size=9&read=-1", up: 10},
		}
		sizes := []int{a, 5, b, 9}
		var all []byte
		for _, q := range qs {
			all = append(all, q.bytes()...)
		}
		c, br := esDial(t, addr, 10*time.Second)
		werr := make(chan error, 1)
		go func() { _, err := c.Write(all); werr <- err }()
		for j, q := range qs {
			if err := esCheck(br, q.method, sizes[j], j == 2, false, false); err != nil {
				c.Close()
				<-werr
				t.Fatalf("#%d answer %d (%s %s, upload %d): %v", i, j, q.method, q.path, q.up, err)
			}
		}
		if err := <-werr; err != nil {
			t.Fatalf("#%d: writing: %v", i, err)
		}
		if err := esNext(c, br); err != nil {
			t.Fatalf("#%d: %v", i, err)
		}
		c.Close()
	}
	o.drop()
	lc.Check(t)
}

// esKinds: Expect: 100-continue, HEAD, HTTP/1.0 (with and without keep-alive) and
// Connection: close, each answered early.
func esKinds(t *testing.T, e *esEnv) {
	o, addr, lc := e.o, e.addr, e.warm(t)
	r := rand.New(rand.NewPCG(5, 5))
	for i := 0; i < 40; i++ {
		size := []int{0, 1, 16 << 10, 1 << 20}[r.IntN(4)]
		up := []int{1, 100 << 10, 1 << 20}[r.IntN(3)]
		nolen := r.IntN(2) == 1
		path := fmt.Sprintf("/e?size=%d&%s", size, esMoment(r.IntN(4), up))
		if nolen {
			path += "&nolen=1"
		}
		q := &esReq{method: "POST", path: path, up: up, chunked: r.IntN(2) == 1}
		kind := i % 5
		wantClose := false
		switch kind {
		case 0: // Expect: 100-continue
			q.extra = "Expect: 100-continue\r\n"
		case 1:
			q.method = "HEAD"
		case 2:
			q.proto, q.chunked, wantClose = "HTTP/1.0", false, true
		case 3:
			q.proto, q.chunked, q.extra, wantClose = "HTTP/1.0", false, "Connection: keep-alive\r\n", nolen
			if nolen && size < 16<<10 { // x/net gives a short answer a Content-Length
				size = 16 << 10
				q.path = strings.Replace(q.path, "size=0&", "size=16384&", 1)
				q.path = strings.Replace(q.path, "size=1&", "size=16384&", 1)
			}
		case 4:
			q.extra, wantClose = "Connection: close\r\n", true
		}
		c, br := esDial(t, addr, 10*time.Second)
		var err error
		if kind == 0 {
			err = esExpect(c, br, q, size, nolen)
		} else {
			err = esExchange(c, br, q, size, nolen, wantClose)
		}
		if err == nil && wantClose {
			err = esEOF(br)
		} else if err == nil {
			err = esNext(c, br)
		}
		c.Close()
		if err != nil {
			t.Fatalf("#%d kind %d, %s %s %s upload %d chunked %v: %v", i, kind, q.proto, q.method, q.path, up, q.chunked, err)
		}
	}
	o.drop()
	lc.Check(t)
}

// esExpect sends the head, waits for 100 Continue, then sends the body.
func esExpect(c net.Conn, br *bufio.Reader, q *esReq, size int, nolen bool) error {
	if _, err := c.Write(q.head()); err != nil {
		return err
	}
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		return fmt.Errorf("want 100 Continue, got %q, %v", line, err)
	}
	if line, err = br.ReadString('\n'); err != nil || line != "\r\n" {
		return fmt.Errorf("after 100 Continue: %q, %v", line, err)
	}
	werr := make(chan error, 1)
	go func() { _, err := c.Write(q.bodyBytes()); werr <- err }()
	err = esCheck(br, q.method, size, nolen, false, false)
	if err != nil {
		_ = c.Close()
	}
	if werr := <-werr; err == nil && werr != nil {
		err = werr
	}
	return err
}

// esBodyTimeout: request_body_timeout 300ms. A client sends part of its body, reads the
// early answer and sends no more: the connection ends after the answer with nothing
// behind it (no 408 after a 200). A client that stops sending and does not read a
// large answer gets all of it or a cut one, then the end of the connection, never a
// hang. (On a loaded machine the timeout may also come before the answer: a 408.)
func esBodyTimeout(t *testing.T, e *esEnv) {
	o, addr, lc := e.o, e.addr, e.warm(t)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 3; i++ {
				if err := esTimeoutOnce(t, addr, w%2 == 1, i%2 == 1); err != nil {
					t.Errorf("worker %d #%d: %v", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	o.drop()
	lc.Check(t)
}

func esTimeoutOnce(t *testing.T, addr string, slowReader, chunked bool) error {
	c, br := esDial(t, addr, 10*time.Second)
	defer c.Close()
	size := 70 << 10
	if slowReader {
		size = 6 << 20
		_ = c.SetReadBuffer(32 << 10)
	}
	q := &esReq{method: "POST", path: fmt.Sprintf("/e?size=%d&read=0", size), up: 4 << 20, chunked: chunked}
	all := q.bytes()
	if _, err := c.Write(all[:len(q.head())+1000]); err != nil {
		return err
	}
	if slowReader {
		time.Sleep(700 * time.Millisecond)
	}
	resp, err := http.ReadResponse(br, nil)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		// The timeout came as the answer's head did: the answer, not begun, is cut
		// (h2EarlyEnd) and no 408 is written. Known; see the report of this test.
		t.Logf("slow reader %v: connection closed with no answer", slowReader)
		return nil
	}
	if err != nil {
		return fmt.Errorf("no answer head: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusRequestTimeout {
		// The timeout came before the answer's head (a loaded machine; seen in CI for
		// a slow reader too): a local answer, then the end of the connection.
		t.Logf("slow reader %v: 408 before the answer", slowReader)
		if err != nil || !resp.Close {
			return fmt.Errorf("408: close %v, %v", resp.Close, err)
		}
		return esEOF(br)
	}
	if !bytes.HasPrefix(h1h2Data[:size], got) || resp.StatusCode != 200 {
		return fmt.Errorf("status %d, %d bytes not a prefix of the answer", resp.StatusCode, len(got))
	}
	if err == nil {
		// Whole: then the connection ends, with nothing (no 408) behind the answer.
		if len(got) != size {
			return fmt.Errorf("%d answer bytes, want %d", len(got), size)
		}
		return esEOF(br)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("hang after %d bytes: %v", len(got), err)
	}
	t.Logf("slow reader %v: answer cut after %d of %d bytes by the body timeout", slowReader, len(got), size)
	return nil // cut: the connection ended
}

// esAccessLog: a listener with stream filters (payload_limit sees the body,
// header_mutation the answer) and an access log; one line per request, each 200 with
// the bytes the client got.
func esAccessLog(t *testing.T, e *esEnv) {
	o, p, addr, logPath, lc := e.o, e.p, e.addr, e.logPath, e.warm(t)
	r := rand.New(rand.NewPCG(9, 9))
	requests := 0
	for i := 0; i < 7; i++ {
		c, br := esDial(t, addr, 10*time.Second)
		for j := 0; j < 4; j++ {
			size := []int{0, 1, 16 << 10, 1 << 20}[r.IntN(4)]
			up := []int{1, 100 << 10, 2 << 20}[r.IntN(3)]
			nolen := r.IntN(2) == 1
			path := fmt.Sprintf("/e?size=%d&%s", size, esMoment(r.IntN(4), up))
			if nolen {
				path += "&nolen=1"
			}
			q := &esReq{method: "POST", path: path, up: up, chunked: r.IntN(2) == 1, extra: fmt.Sprintf("X-Size: %d\r\n", size)}
			requests++
			if err := esExchange(c, br, q, size, nolen, false); err != nil {
				t.Fatalf("#%d.%d %s upload %d chunked %v: %v", i, j, path, up, q.chunked, err)
			}
		}
		if i%2 == 1 { // the last one abandoned mid-upload after its answer
			q := &esReq{method: "POST", path: "/e?size=100&read=0", up: 4 << 20, extra: "X-Size: 100\r\n"}
			requests++
			all := q.bytes()
			if _, err := c.Write(all[:len(q.head())+(64<<10)]); err != nil {
				t.Fatal(err)
			}
			if err := esCheck(br, "POST", 100, false, false, false); err != nil {
				t.Fatalf("#%d abandoned upload: %v", i, err)
			}
			_ = c.SetLinger(0)
		}
		c.Close()
	}
	o.drop()
	lc.Check(t)
	p.Stop(5 * time.Second) // flushes the log
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != requests+1 || !strings.HasSuffix(lines[0], "|/w|-") {
		t.Fatalf("%d access log lines for the warm-up and %d requests:\n%s", len(lines), requests, b)
	}
	for _, ln := range lines[1:] {
		f := strings.Split(ln, "|")
		if len(f) != 5 || f[0] != "200" || f[3] != "/e" {
			t.Fatalf("access log line %q", ln)
		}
		size, _ := strconv.Atoi(f[4])
		if sent, _ := strconv.Atoi(f[2]); sent < size || sent > size+size/100+2048 {
			t.Fatalf("access log line %q: bytes_sent %d for a %d-byte answer", ln, sent, size)
		}
	}
}

// esHalfClose: the answer's head comes before the body is read; the client sends its
// whole body, shuts its write side (a half-close) and reads the 8 MiB answer slowly.
// The answer has started: it must come whole, as it does when its head comes after the
// body (h2Respond is not watched).
func esHalfClose(t *testing.T, e *esEnv) {
	o, addr, lc := e.o, e.addr, e.warm(t)
	const size = 8 << 20
	for i := 0; i < 3; i++ {
		c, br := esDial(t, addr, 10*time.Second)
		_ = c.SetReadBuffer(32 << 10)
		q := &esReq{method: "POST", path: fmt.Sprintf("/e?size=%d&head=1", size), up: 3 << 20, chunked: i%2 == 1}
		if _, err := c.Write(q.bytes()); err != nil {
			t.Fatal(err)
		}
		_ = c.CloseWrite()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("#%d: no answer: %v", i, err)
		}
		time.Sleep(700 * time.Millisecond) // the answer waits on the client
		got, err := io.ReadAll(resp.Body)
		c.Close()
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, h1h2Data[:size]) {
			t.Fatalf("#%d chunked upload %v: status %d, %d of %d answer bytes, %v", i, q.chunked, resp.StatusCode, len(got), size, err)
		}
	}
	o.drop()
	lc.Check(t)
}

// esUpReset: the origin sends the head early, then resets the stream, before any body
// byte (the client gets a 502 and the connection goes on) or after some (the answer is
// cut and the connection ends).
func esUpReset(t *testing.T, e *esEnv) {
	o, addr, lc := e.o, e.addr, e.warm(t)
	for i := 0; i < 16; i++ {
		before := i%2 == 0
		rst := 1
		if !before {
			rst = 1 + 1000
		}
		q := &esReq{method: "POST", path: fmt.Sprintf("/e?size=5000&rst=%d", rst), up: 1 << 20, chunked: i%4 < 2}
		c, br := esDial(t, addr, 10*time.Second)
		werr := make(chan error, 1)
		go func() { _, err := c.Write(q.bytes()); werr <- err }()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("#%d rst %d: %v", i, rst, err)
		}
		got, err := io.ReadAll(resp.Body)
		if before {
			if err != nil || resp.StatusCode != http.StatusBadGateway || resp.Close {
				t.Fatalf("#%d reset before the body: status %d close %v, %q, %v", i, resp.StatusCode, resp.Close, got, err)
			}
			if err := <-werr; err != nil {
				t.Fatalf("#%d: writing: %v", i, err)
			}
			if err := esNext(c, br); err != nil {
				t.Fatalf("#%d: %v", i, err)
			}
		} else {
			if err == nil || resp.StatusCode != 200 || !bytes.Equal(got, h1h2Data[:rst-1]) {
				t.Fatalf("#%d reset mid-answer: status %d, %d bytes (want %d then a cut), %v", i, resp.StatusCode, len(got), rst-1, err)
			}
			<-werr
		}
		c.Close()
	}
	o.drop()
	lc.Check(t)
}

// esBadChunk: after its early answer is read, the client's chunked body goes bad; the
// connection ends with nothing written after the answer (no 400).
func esBadChunk(t *testing.T, e *esEnv) {
	o, addr, lc := e.o, e.addr, e.warm(t)
	for i := 0; i < 15; i++ {
		c, br := esDial(t, addr, 10*time.Second)
		q := &esReq{method: "POST", path: fmt.Sprintf("/e?size=%d&read=0", []int{0, 100, 70 << 10}[i%3]), up: 200 << 10, chunked: true}
		body := q.bodyBytes()
		if _, err := c.Write(append(q.head(), body[:5008*(1+i%10)]...)); err != nil { // whole 5000-byte chunks
			t.Fatal(err)
		}
		if err := esCheck(br, "POST", []int{0, 100, 70 << 10}[i%3], false, false, false); err != nil {
			t.Fatalf("#%d: %v", i, err)
		}
		if i%2 == 1 {
			time.Sleep(5 * time.Millisecond)
		}
		_, _ = io.WriteString(c, "zz\r\n")
		if err := esEOF(br); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("#%d: %v", i, err)
		}
		c.Close()
	}
	o.drop()
	lc.Check(t)
}

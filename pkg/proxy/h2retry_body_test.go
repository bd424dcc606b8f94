package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/proxy/proxytest"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// retryEnv is a proxy (the HTTP/2 driver or the HTTP/1 proxy) with its metrics and
// clusters.
type retryEnv struct {
	addr     string
	m        *metrics.Set
	clusters *cluster.Manager
}

// startRetryEnv serves routerJSON (router "r") and clustersJSON with downstream protocol
// down (HTTP2: the HTTP/2 driver; else the HTTP/1 proxy) on 127.0.0.1:0; opts adjust the
// proxy's config.
func startRetryEnv(t testing.TB, routerJSON, clustersJSON string, down stream.Protocol, opts ...func(*proxy.Config)) *retryEnv {
	t.Helper()
	m := metrics.New()
	mgr := proxytest.Clusters(t, clustersJSON, m)
	pool := buffer.NewPool()
	cfg := proxy.Config{Listener: "l", Downstream: down, Routers: proxytest.Routers(t, routerJSON),
		RouterName: "r", Clusters: mgr, Pool: pool, Metrics: m}
	addr, _ := serveProxy(t, cfg, opts...)
	return &retryEnv{addr: addr, m: m, clusters: mgr}
}

// bodyTry is one request an upstream of bodyOrigins received.
type bodyTry struct {
	host, method, path string
	body               []byte
	trailer            string
}

// bodyOrigins starts n upstreams (HTTP/1 and h2c) that record every request with its
// whole body; while fail is positive each request takes one from it and is answered
// 503, the others echo the body.
type bodyOrigins struct {
	origins []*origin
	fail    atomic.Int64
	mu      sync.Mutex
	tries   []bodyTry
}

func startBodyOrigins(t testing.TB, n int) *bodyOrigins {
	t.Helper()
	bo := &bodyOrigins{}
	for range n {
		var o *origin
		o = h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			bo.mu.Lock()
			bo.tries = append(bo.tries, bodyTry{host: o.addr(), method: r.Method, path: r.URL.Path, body: b,
				trailer: r.Trailer.Get("X-Sum")})
			bo.mu.Unlock()
			if bo.fail.Add(-1) >= 0 {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, "try again")
				return
			}
			w.Header().Set("X-Proto", r.Proto)
			_, _ = w.Write(b)
		})
		bo.origins = append(bo.origins, o)
	}
	return bo
}

func (bo *bodyOrigins) hosts() string {
	var hs []string
	for _, o := range bo.origins {
		hs = append(hs, fmt.Sprintf(`{"address":%q}`, o.addr()))
	}
	return strings.Join(hs, ",")
}

func (bo *bodyOrigins) taken() []bodyTry {
	bo.mu.Lock()
	defer bo.mu.Unlock()
	tries := bo.tries
	bo.tries = nil
	return tries
}

const bodyRetryRoutes = `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/h1/"},"route":{"cluster_name":"c","upstream_protocol":"Http1","retry_policy":{"retry_on":true,"num_retries":2}}},
 {"match":{"prefix":"/h2/"},"route":{"cluster_name":"c","upstream_protocol":"Http2","retry_policy":{"retry_on":true,"num_retries":2}}},
 {"match":{"prefix":"/h1none/"},"route":{"cluster_name":"c","upstream_protocol":"Http1"}},
 {"match":{"prefix":"/h2none/"},"route":{"cluster_name":"c","upstream_protocol":"Http2"}}
]}]}`

// post sends body on an HTTP/2 connection to the proxy: with its length, or (unknown)
// as a stream of unknown length with an X-Sum trailer.
func post(t testing.TB, c *http.Client, url string, body []byte, unknown bool) (*http.Response, string) {
	t.Helper()
	var rd io.Reader = bytes.NewReader(body)
	if unknown {
		rd = io.MultiReader(rd) // hides the length
	}
	req, err := http.NewRequest("POST", url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if unknown {
		req.ContentLength = -1
		req.Trailer = http.Header{"X-Sum": {fmt.Sprint(len(body))}}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("POST %s: body: %v", url, err)
	}
	return resp, string(b)
}

// limit64K sets the body kept for retries and mirror copies to 64 KiB, so that the
// bodies over it stay small.
func limit64K(c *proxy.Config) { c.BufferLimit = 64 << 10 }

func randomBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + rand.IntN(26))
	}
	return b
}

func retryCount(t testing.TB, m *metrics.Set, cl string) float64 {
	t.Helper()
	var mv dto.Metric
	if err := m.UpstreamRetries.WithLabelValues(cl).Write(&mv); err != nil {
		t.Fatal(err)
	}
	return mv.GetCounter().GetValue()
}

// TestH2BodyRetriedToNextHost: an HTTP/2 POST answered 503 by one host is retried on
// the other host with its whole body, to an HTTP/1 upstream (the direct path) and to an
// HTTP/2 upstream, with a known length and as a stream of unknown length with a trailer.
func TestH2BodyRetriedToNextHost(t *testing.T) {
	bo := startBodyOrigins(t, 2)
	e := startRetryEnv(t, bodyRetryRoutes, `[{"name":"c","type":"SIMPLE","hosts":[`+bo.hosts()+`]}]`, stream.HTTP2)
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	retries := 0.0
	for _, up := range []string{"h1", "h2"} {
		for _, unknown := range []bool{false, true} {
			body := randomBody(20 << 10)
			bo.fail.Store(1)
			resp, got := post(t, c, "http://"+e.addr+"/"+up+"/upload", body, unknown)
			name := fmt.Sprintf("%s unknown=%v", up, unknown)
			if resp.StatusCode != http.StatusOK || got != string(body) {
				t.Fatalf("%s: %d, %d body bytes back, want 200 and the body", name, resp.StatusCode, len(got))
			}
			tries := bo.taken()
			if len(tries) != 2 || tries[0].host == tries[1].host {
				t.Fatalf("%s: %d tries %v, want 2 on distinct hosts", name, len(tries), tries)
			}
			for i, tr := range tries {
				if tr.method != "POST" || tr.path != "/"+up+"/upload" || !bytes.Equal(tr.body, body) {
					t.Fatalf("%s: try %d got %s %s with %d body bytes", name, i, tr.method, tr.path, len(tr.body))
				}
				if unknown && tr.trailer != fmt.Sprint(len(body)) {
					t.Fatalf("%s: try %d trailer %q", name, i, tr.trailer)
				}
			}
			retries++
			if n := retryCount(t, e.m, "c"); n != retries {
				t.Fatalf("%s: upstream_retries_total %v, want %v", name, n, retries)
			}
		}
	}
}

// TestH2BodyRetryExactCount: num_retries is honoured exactly: with every try answered
// 503, a request with a body is tried 1+num_retries times, each with the whole body, and
// the last answer is passed through. A route without a retry policy tries once.
func TestH2BodyRetryExactCount(t *testing.T) {
	bo := startBodyOrigins(t, 2)
	e := startRetryEnv(t, bodyRetryRoutes, `[{"name":"c","type":"SIMPLE","hosts":[`+bo.hosts()+`]}]`, stream.HTTP2)
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	for _, tc := range []struct {
		path  string
		tries int
	}{{"/h1/", 3}, {"/h2/", 3}, {"/h1none/", 1}, {"/h2none/", 1}} {
		body := randomBody(3000)
		bo.fail.Store(100)
		resp, got := post(t, c, "http://"+e.addr+tc.path+"x", body, false)
		if resp.StatusCode != http.StatusServiceUnavailable || got != "try again" {
			t.Fatalf("%s: %d %q, want the upstream's 503", tc.path, resp.StatusCode, got)
		}
		tries := bo.taken()
		if len(tries) != tc.tries {
			t.Fatalf("%s: %d tries, want %d", tc.path, len(tries), tc.tries)
		}
		for i, tr := range tries {
			if !bytes.Equal(tr.body, body) {
				t.Fatalf("%s: try %d got %d body bytes, want %d", tc.path, i, len(tr.body), len(body))
			}
		}
	}
}

// TestH2BodyOverRetryBuffer: a body larger than the retry buffer (Config.BufferLimit,
// 64 KiB here) is not retried: the first answer is passed through. A body just within it
// still is.
func TestH2BodyOverRetryBuffer(t *testing.T) {
	bo := startBodyOrigins(t, 2)
	e := startRetryEnv(t, bodyRetryRoutes, `[{"name":"c","type":"SIMPLE","hosts":[`+bo.hosts()+`]}]`, stream.HTTP2, limit64K)
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	for _, up := range []string{"h1", "h2"} {
		for _, unknown := range []bool{false, true} {
			name := fmt.Sprintf("%s unknown=%v", up, unknown)
			big := randomBody(64<<10 + 1)
			bo.fail.Store(1)
			resp, got := post(t, c, "http://"+e.addr+"/"+up+"/big", big, unknown)
			if resp.StatusCode != http.StatusServiceUnavailable || got != "try again" {
				t.Fatalf("%s over the limit: %d %q, want the first 503", name, resp.StatusCode, got)
			}
			if tries := bo.taken(); len(tries) != 1 || !bytes.Equal(tries[0].body, big) {
				t.Fatalf("%s over the limit: %d tries, want 1 with the whole body", name, len(tries))
			}
			fits := big[:64<<10]
			bo.fail.Store(1)
			resp, got = post(t, c, "http://"+e.addr+"/"+up+"/fits", fits, unknown)
			if resp.StatusCode != http.StatusOK || got != string(fits) {
				t.Fatalf("%s at the limit: %d, %d bytes", name, resp.StatusCode, len(got))
			}
			if tries := bo.taken(); len(tries) != 2 || !bytes.Equal(tries[1].body, fits) {
				t.Fatalf("%s at the limit: %d tries, want 2", name, len(tries))
			}
		}
	}
}

// TestH2BodyRetryBreaker: with the cluster's max_retries slot taken, a request with a
// body is not retried; once the slot is free it is, and the slot is given back.
func TestH2BodyRetryBreaker(t *testing.T) {
	bo := startBodyOrigins(t, 2)
	e := startRetryEnv(t, bodyRetryRoutes, `[{"name":"c","type":"SIMPLE","hosts":[`+bo.hosts()+`],
	 "circuit_breakers":[{"max_retries":1}]}]`, stream.HTTP2)
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	cl, ok := e.clusters.Get("c")
	if !ok {
		t.Fatal("no cluster c")
	}
	for _, up := range []string{"h1", "h2"} {
		body := randomBody(5000)
		if !cl.TryAcquireRetry() {
			t.Fatalf("%s: cannot take the retry slot", up)
		}
		bo.fail.Store(1)
		resp, _ := post(t, c, "http://"+e.addr+"/"+up+"/b", body, false)
		if n := len(bo.taken()); resp.StatusCode != http.StatusServiceUnavailable || n != 1 {
			t.Fatalf("%s breaker full: %d after %d tries", up, resp.StatusCode, n)
		}
		cl.ReleaseRetry()
		bo.fail.Store(1)
		resp, got := post(t, c, "http://"+e.addr+"/"+up+"/b", body, false)
		if n := len(bo.taken()); resp.StatusCode != http.StatusOK || got != string(body) || n != 2 {
			t.Fatalf("%s slot free: %d after %d tries", up, resp.StatusCode, n)
		}
		if !cl.TryAcquireRetry() {
			t.Fatalf("%s: retry slot leaked", up)
		}
		cl.ReleaseRetry()
	}
}

// TestH2BodyNoRetryAfterResponseStarted: once response bytes went downstream, a failure
// is not retried: the stream is reset and the request was tried once.
func TestH2BodyNoRetryAfterResponseStarted(t *testing.T) {
	var reqs atomic.Int64
	handler := func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // cut the response short
	}
	o1, o2 := h2Origin(t, handler), h2Origin(t, handler)
	e := startRetryEnv(t, bodyRetryRoutes, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+o1.addr()+`"},{"address":"`+o2.addr()+`"}]}]`, stream.HTTP2)
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	for _, up := range []string{"h1", "h2"} {
		reqs.Store(0)
		req, _ := http.NewRequest("POST", "http://"+e.addr+"/"+up+"/cut", strings.NewReader("body"))
		resp, err := c.Do(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Fatalf("%s: a cut response read without error", up)
		}
		if n := reqs.Load(); n != 1 {
			t.Fatalf("%s: %d tries after the response started, want 1", up, n)
		}
	}
}

// TestH2BodyRetryEarlyAnswer: an HTTP/2 upstream that answers 503 after reading only the
// start of the body, while the rest has not even left the client: the retry sends the
// kept start and then the rest as it arrives, so the next host gets the whole body.
// (Over HTTP/1 the direct path sends the whole body before it reads the answer, and
// net/http's HTTP/1 server reads the body before it answers.)
func TestH2BodyRetryEarlyAnswer(t *testing.T) {
	var first atomic.Bool
	answered := make(chan struct{}, 1)
	var mu sync.Mutex
	var got [][]byte
	handler := func(w http.ResponseWriter, r *http.Request) {
		if first.CompareAndSwap(true, false) {
			head := make([]byte, 1024)
			_, _ = io.ReadFull(r.Body, head)
			w.WriteHeader(http.StatusServiceUnavailable)
			w.(http.Flusher).Flush()
			answered <- struct{}{}
			return
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, b)
		mu.Unlock()
		_, _ = w.Write(b)
	}
	o1, o2 := h2Origin(t, handler), h2Origin(t, handler)
	e := startRetryEnv(t, bodyRetryRoutes, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+o1.addr()+`"},{"address":"`+o2.addr()+`"}]}]`, stream.HTTP2)
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	up := "h2"
	first.Store(true)
	body := randomBody(30 << 10)
	pr, pw := io.Pipe()
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); _ = pr.Close() })
	go func() {
		_, _ = pw.Write(body[:4096])
		select {
		case <-answered:
		case <-stop:
		}
		_, _ = pw.Write(body[4096:])
		_ = pw.Close()
	}()
	req, _ := http.NewRequest("POST", "http://"+e.addr+"/"+up+"/early", pr)
	req.ContentLength = int64(len(body))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", up, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(b, body) {
		t.Fatalf("%s: %d, %d bytes back (%v)", up, resp.StatusCode, len(b), err)
	}
	mu.Lock()
	n, last := len(got), got[len(got)-1]
	got = nil
	mu.Unlock()
	if n != 1 || !bytes.Equal(last, body) {
		t.Fatalf("%s: the retried try got %d bytes, want %d", up, len(last), len(body))
	}
}

// TestH2BodyFilterStopNotRetried: a request body that a stream filter stopped half-way,
// after the try had sent part of it, is answered by the filter and not retried, though
// the try ended in a (retriable) stream reset.
func TestH2BodyFilterStopNotRetried(t *testing.T) {
	bo := startBodyOrigins(t, 2)
	e := startRetryEnv(t, bodyRetryRoutes, `[{"name":"c","type":"SIMPLE","hosts":[`+bo.hosts()+`]}]`, stream.HTTP2,
		withFilters(t, "payload_limit", `{"max_entity_size":8}`))
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte("12345"))
		_, _ = pw.Write([]byte("67890"))
		_ = pw.Close()
	}()
	resp, body := h2req(t, c, "POST", "http://"+e.addr+"/h2/s", pr)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("streamed over the limit: %d %q", resp.StatusCode, body)
	}
	if n := retryCount(t, e.m, "c"); n != 0 {
		t.Fatalf("upstream_retries_total %v after a stopped body, want 0", n)
	}
}

// TestH2BodyRetriedAfterUpstreamReset: a try whose stream the upstream reset before any
// answer (status 0) is retried on the next host with the whole body, to an HTTP/1 and to
// an HTTP/2 upstream.
func TestH2BodyRetriedAfterUpstreamReset(t *testing.T) {
	var resets atomic.Int64
	var reqs atomic.Int64
	handler := func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		b, _ := io.ReadAll(r.Body)
		if resets.Add(-1) >= 0 {
			panic(http.ErrAbortHandler) // RST_STREAM over HTTP/2, a closed connection over HTTP/1
		}
		_, _ = w.Write(b)
	}
	o1, o2 := h2Origin(t, handler), h2Origin(t, handler)
	e := startRetryEnv(t, bodyRetryRoutes, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+o1.addr()+`"},{"address":"`+o2.addr()+`"}]}]`, stream.HTTP2)
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	for _, up := range []string{"h1", "h2"} {
		reqs.Store(0)
		resets.Store(1)
		body := randomBody(8 << 10)
		resp, got := post(t, c, "http://"+e.addr+"/"+up+"/reset", body, false)
		if resp.StatusCode != http.StatusOK || got != string(body) || reqs.Load() != 2 {
			t.Fatalf("%s: %d, %d bytes back after %d tries", up, resp.StatusCode, len(got), reqs.Load())
		}
	}
}

package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// mirrored is one request a shadow upstream received.
type mirrored struct {
	method, path, proto string
	body                []byte
}

// shadowOrigin is an h2c (and HTTP/1) upstream that reports every request it receives;
// with hold set it answers only when the request is cancelled.
func shadowOrigin(t testing.TB, hold bool) (*origin, <-chan mirrored) {
	t.Helper()
	ch := make(chan mirrored, 16)
	o := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case ch <- mirrored{method: r.Method, path: r.URL.Path, proto: r.Proto, body: b}:
		default:
		}
		if hold {
			<-r.Context().Done()
			return
		}
		_, _ = io.WriteString(w, "shadow answer")
	})
	return o, ch
}

const mirrorH2Routes = `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/m2/"},"route":{"cluster_name":"c","upstream_protocol":"Http2"},"request_mirror_policies":{"cluster":"shadow","percent":100}},
 {"match":{"prefix":"/none/"},"route":{"cluster_name":"c","upstream_protocol":"Http2"},"request_mirror_policies":{"cluster":"shadow","percent":0}},
 {"match":{"prefix":"/m1/"},"route":{"cluster_name":"c","upstream_protocol":"Http1"},"request_mirror_policies":{"cluster":"shadow","percent":100}}
]}]}`

func mirrorCount(t testing.TB, m *metrics.Set, result string) float64 {
	t.Helper()
	var mv dto.Metric
	if err := m.UpstreamMirrors.WithLabelValues("shadow", result).Write(&mv); err != nil {
		t.Fatal(err)
	}
	return mv.GetCounter().GetValue()
}

func waitMirror(t testing.TB, ch <-chan mirrored) mirrored {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(testTimeout):
		t.Fatal("no mirrored request")
	}
	return mirrored{}
}

// TestMirrorToH2Upstream: a route whose upstream protocol is HTTP/2 mirrors its requests
// to the shadow cluster over HTTP/2 (h2c), from an HTTP/2 and from an HTTP/1 downstream,
// with and without a body: the copy carries method, path and body. The client gets the
// main cluster's answer; the shadow's is discarded.
func TestMirrorToH2Upstream(t *testing.T) {
	main := h2Origin(t, h2echo)
	shadow, seen := shadowOrigin(t, false)
	clusters := `[{"name":"c","type":"SIMPLE","hosts":[{"address":"` + main.addr() + `"}]},
	 {"name":"shadow","type":"SIMPLE","hosts":[{"address":"` + shadow.addr() + `"}]}]`

	e2 := startRetryEnv(t, mirrorH2Routes, clusters, stream.HTTP2)
	c2 := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	body := string(randomBody(10 << 10))
	resp, got := get(t, c2, "POST", "http://"+e2.addr+"/m2/upload?x=1", body)
	if resp.StatusCode != 200 || got != "POST /m2/upload?x=1 "+body || resp.Header.Get("X-Proto") != "HTTP/2.0" {
		t.Fatalf("h2 main answer: %d %.40q", resp.StatusCode, got)
	}
	m := waitMirror(t, seen)
	if m.method != "POST" || m.path != "/m2/upload" || m.proto != "HTTP/2.0" || string(m.body) != body {
		t.Fatalf("h2 mirror got %s %s %s with %d body bytes", m.method, m.path, m.proto, len(m.body))
	}
	testutil.Eventually(t, testTimeout, "mirror counted as sent", func() bool { return mirrorCount(t, e2.m, "sent") == 1 })

	e1 := startRetryEnv(t, mirrorH2Routes, clusters, stream.HTTP1, limit64K)
	resp, got = roundTrip(t, e1.addr, "GET /m2/get HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 200 || got != "GET /m2/get " {
		t.Fatalf("h1 main answer: %d %q", resp.StatusCode, got)
	}
	m = waitMirror(t, seen)
	if m.method != "GET" || m.path != "/m2/get" || m.proto != "HTTP/2.0" || len(m.body) != 0 {
		t.Fatalf("h1 mirror got %s %s %s with %d body bytes", m.method, m.path, m.proto, len(m.body))
	}
	testutil.Eventually(t, testTimeout, "mirror counted as sent", func() bool { return mirrorCount(t, e1.m, "sent") == 1 })
	c1 := client()
	defer c1.CloseIdleConnections()
	resp, got = get(t, c1, "PUT", "http://"+e1.addr+"/m2/put", body)
	if resp.StatusCode != 200 || got != "PUT /m2/put "+body {
		t.Fatalf("h1 main answer with a body: %d %.40q", resp.StatusCode, got)
	}
	m = waitMirror(t, seen)
	if m.method != "PUT" || m.path != "/m2/put" || string(m.body) != body {
		t.Fatalf("h1 mirror got %s %s with %d body bytes", m.method, m.path, len(m.body))
	}
	big := string(randomBody(200 << 10)) // over the buffer: the main request only
	if resp, got = get(t, c1, "PUT", "http://"+e1.addr+"/m2/big", big); resp.StatusCode != 200 || got != "PUT /m2/big "+big {
		t.Fatalf("h1 big body: %d, %d bytes", resp.StatusCode, len(got))
	}
	testutil.Eventually(t, testTimeout, "big body counted as a dropped mirror", func() bool {
		return mirrorCount(t, e1.m, "dropped") == 1
	})

	// percent 0: never mirrored.
	if resp, _ := get(t, c2, "POST", "http://"+e2.addr+"/none/x", "b"); resp.StatusCode != 200 {
		t.Fatalf("unmirrored route: %d", resp.StatusCode)
	}
	if n := shadow.reqs.Load(); n != 3 {
		t.Fatalf("shadow got %d requests, want 3", n)
	}
}

// TestMirrorToH2FireAndForget: a shadow that never answers delays neither the main
// request nor its body; a body over the retry buffer is not mirrored (counted dropped);
// closing the proxy ends the mirrored streams (goleak checks at the end of the package).
func TestMirrorToH2FireAndForget(t *testing.T) {
	main := h2Origin(t, h2echo)
	shadow, seen := shadowOrigin(t, true)
	e := startRetryEnv(t, mirrorH2Routes, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+main.addr()+`"}]},
	 {"name":"shadow","type":"SIMPLE","hosts":[{"address":"`+shadow.addr()+`"}]}]`, stream.HTTP2, limit64K)
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	for i := range 3 {
		start := time.Now()
		resp, got := get(t, c, "POST", "http://"+e.addr+"/m2/ff", "payload")
		if resp.StatusCode != 200 || got != "POST /m2/ff payload" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, got)
		}
		if d := time.Since(start); d > testTimeout/2 {
			t.Fatalf("request %d took %v behind a hanging mirror", i, d)
		}
	}
	if m := waitMirror(t, seen); m.path != "/m2/ff" || string(m.body) != "payload" {
		t.Fatalf("mirror got %s %q", m.path, m.body)
	}
	big := strings.Repeat("z", 64<<10+1)
	resp, got := get(t, c, "POST", "http://"+e.addr+"/m2/big", big)
	if resp.StatusCode != 200 || got != "POST /m2/big "+big {
		t.Fatalf("big: %d, %d bytes", resp.StatusCode, len(got))
	}
	testutil.Eventually(t, testTimeout, "big body counted as a dropped mirror", func() bool {
		return mirrorCount(t, e.m, "dropped") == 1
	})
}

// TestMirrorH2ToH1WithBodies: HTTP/2 requests with bodies routed to an HTTP/1 upstream (the
// direct path) are mirrored with their bodies, with a known length and without one
// (chunked to HTTP/1 upstreams); a body over the kept buffer is not (counted dropped).
func TestMirrorH2ToH1WithBodies(t *testing.T) {
	main := h2Origin(t, h2echo)
	shadow, seen := shadowOrigin(t, false)
	e := startRetryEnv(t, mirrorH2Routes, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+main.addr()+`"}]},
	 {"name":"shadow","type":"SIMPLE","hosts":[{"address":"`+shadow.addr()+`"}]}]`, stream.HTTP2, limit64K)
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	body := string(randomBody(10 << 10))
	if resp, got := get(t, c, "POST", "http://"+e.addr+"/m1/len", body); resp.StatusCode != 200 || got != "POST /m1/len "+body {
		t.Fatalf("main answer: %d %.40q", resp.StatusCode, got)
	}
	if m := waitMirror(t, seen); m.method != "POST" || m.path != "/m1/len" || m.proto != "HTTP/1.1" || string(m.body) != body {
		t.Fatalf("mirror got %s %s %s with %d body bytes", m.method, m.path, m.proto, len(m.body))
	}
	// No length: the stream's body goes chunked to HTTP/1, and so does the copy.
	req, err := http.NewRequest("POST", "http://"+e.addr+"/m1/chunked", io.MultiReader(strings.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != "POST /m1/chunked "+body {
		t.Fatalf("main answer without a length: %d %.40q", resp.StatusCode, got)
	}
	if m := waitMirror(t, seen); m.path != "/m1/chunked" || string(m.body) != body {
		t.Fatalf("mirror got %s with %d body bytes", m.path, len(m.body))
	}
	bigNotMirrored(t, c, e, 64<<10+1, shadow, 2)
}

// TestMirrorH2ToH1FullPath: with stream filters, HTTP/2 streams to HTTP/1 upstreams take
// the full (net/http) path; they are mirrored too, bodies included: the copy carries the
// filters' header edits, as the main upstream got them. A body over the limit is not
// mirrored (counted dropped).
func TestMirrorH2ToH1FullPath(t *testing.T) {
	main := h2Origin(t, h2echo)
	got := make(chan *http.Request, 4)
	shadow := h2Origin(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(b)))
		got <- r
	})
	e := startRetryEnv(t, mirrorH2Routes, `[{"name":"c","type":"SIMPLE","hosts":[{"address":"`+main.addr()+`"}]},
	 {"name":"shadow","type":"SIMPLE","hosts":[{"address":"`+shadow.addr()+`"}]}]`, stream.HTTP2, limit64K,
		withFilters(t, "header_mutation", `{"request_headers_to_add":[{"header":{"key":"X-Added","value":"yes"}}]}`))
	c := &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	body := string(randomBody(10 << 10))
	if resp, out := get(t, c, "POST", "http://"+e.addr+"/m1/full", body); resp.StatusCode != 200 || out != "POST /m1/full "+body {
		t.Fatalf("main answer: %d %.40q", resp.StatusCode, out)
	}
	select {
	case r := <-got:
		b, _ := io.ReadAll(r.Body)
		if r.Method != "POST" || r.URL.Path != "/m1/full" || r.Proto != "HTTP/1.1" || r.Header.Get("X-Added") != "yes" || string(b) != body {
			t.Fatalf("mirror got %s %s %s X-Added=%q with %d body bytes", r.Method, r.URL.Path, r.Proto, r.Header.Get("X-Added"), len(b))
		}
	case <-time.After(testTimeout):
		t.Fatal("no mirrored request")
	}
	bigNotMirrored(t, c, e, 100<<10, shadow, 1)
}

// bigNotMirrored posts a body of n bytes to /m1/big: the main request is answered, its
// mirror is counted dropped, and the shadow has still seen only want requests.
func bigNotMirrored(t *testing.T, c *http.Client, e *retryEnv, n int, shadow *origin, want int64) {
	t.Helper()
	big := strings.Repeat("z", n)
	if resp, out := get(t, c, "POST", "http://"+e.addr+"/m1/big", big); resp.StatusCode != 200 || out != "POST /m1/big "+big {
		t.Fatalf("big: %d, %d bytes", resp.StatusCode, len(out))
	}
	testutil.Eventually(t, testTimeout, "big body counted as a dropped mirror", func() bool {
		return mirrorCount(t, e.m, "dropped") == 1
	})
	if got := shadow.reqs.Load(); got != want {
		t.Fatalf("shadow got %d requests, want %d", got, want)
	}
}

package proxy_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/filter/network/proxy"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/proxy/proxytest"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// bodyServer is an HTTP/1 and h2c upstream that records the sha256 of each request body
// it reads whole; while fail is positive each request takes one from it and is answered
// 503, the others 200.
type bodyServer struct {
	srv  *http.Server
	addr string
	fail *atomic.Int64
	mu   *sync.Mutex
	seen *[][sha256.Size]byte
}

func startBodyServer(t *testing.T, fail *atomic.Int64, mu *sync.Mutex, seen *[][sha256.Size]byte) *bodyServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &bodyServer{addr: ln.Addr().String(), fail: fail, mu: mu, seen: seen}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), Protocols: new(http.Protocols)}
	s.srv.Protocols.SetHTTP1(true)
	s.srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = s.srv.Serve(ln) }()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

func (s *bodyServer) serve(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	*s.seen = append(*s.seen, sha256.Sum256(b))
	s.mu.Unlock()
	if s.fail != nil && s.fail.Add(-1) >= 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ok")
}

func counterOf(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

// TestListenerBufferLimitBoundsRetries: a listener's per_connection_buffer_limit_bytes
// (128 KiB here) bounds the request body kept for retries and mirror copies, for HTTP/2
// and HTTP/1 listeners: a 100 KiB body is retried on the next host and mirrored whole; a
// 256 KiB body is not retried (the first 503 is the answer, counted as
// upstream_overflow_total{retry_buffer}) and not mirrored (counted dropped), though the
// default limit, 1 MiB, would keep it.
func TestListenerBufferLimitBoundsRetries(t *testing.T) {
	var fail atomic.Int64
	var mu sync.Mutex
	var tries, mirrored [][sha256.Size]byte
	taken := func(s *[][sha256.Size]byte) [][sha256.Size]byte {
		mu.Lock()
		defer mu.Unlock()
		got := *s
		*s = nil
		return got
	}
	a, b := startBodyServer(t, &fail, &mu, &tries), startBodyServer(t, &fail, &mu, &tries)
	shadow := startBodyServer(t, nil, &mu, &mirrored)
	routes := `{"router_config_name":"r","virtual_hosts":[{"name":"v","domains":["*"],"routers":[
	 {"match":{"prefix":"/h1/"},"route":{"cluster_name":"c","upstream_protocol":"Http1","retry_policy":{"retry_on":true,"num_retries":1}}},
	 {"match":{"prefix":"/h2/"},"route":{"cluster_name":"c","upstream_protocol":"Http2","retry_policy":{"retry_on":true,"num_retries":1}}},
	 {"match":{"prefix":"/m1/"},"route":{"cluster_name":"one","upstream_protocol":"Http1"},"request_mirror_policies":{"cluster":"shadow","percent":100}},
	 {"match":{"prefix":"/m2/"},"route":{"cluster_name":"one","upstream_protocol":"Http2"},"request_mirror_policies":{"cluster":"shadow","percent":100}}]}]}`
	m := metrics.New()
	mgr := proxytest.Clusters(t, fmt.Sprintf(`[
		{"name":"c","type":"SIMPLE","hosts":[{"address":%q},{"address":%q}]},
		{"name":"one","type":"SIMPLE","hosts":[{"address":%q}]},
		{"name":"shadow","type":"SIMPLE","hosts":[{"address":%q}]}]`, a.addr, b.addr, a.addr, shadow.addr), m)
	d := filter.Deps{Routers: proxytest.Routers(t, routes), Clusters: mgr, Metrics: m, Pool: buffer.NewPool(),
		Listener: &config.Listener{Name: "l", PerConnBufferLimitBytes: 128 << 10}}
	build := func(down string) string {
		f, err := proxy.Factory(config.RawMessage(`{"downstream_protocol":"`+down+`","router_config_name":"r"}`), d)
		if err != nil {
			t.Fatal(err)
		}
		return serve(t, f, m)
	}
	h1, h2 := build("Http1"), build("Http2")
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	h2c := &http.Client{Timeout: testTimeout, Transport: tr}
	t.Cleanup(h2c.CloseIdleConnections)
	h1tr := &http.Transport{}
	h1c := &http.Client{Timeout: testTimeout, Transport: h1tr}
	t.Cleanup(h1tr.CloseIdleConnections)
	post := func(c *http.Client, url string, body []byte) int {
		t.Helper()
		resp, err := c.Post(url, "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("POST %s: %v", url, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	fits, big := make([]byte, 100<<10), make([]byte, 256<<10)
	_, _ = rand.Read(fits)
	_, _ = rand.Read(big)
	fitsSum, bigSum := sha256.Sum256(fits), sha256.Sum256(big)
	overflow := m.UpstreamOverflow.WithLabelValues("c", "retry_buffer")
	for _, tc := range []struct {
		name string
		c    *http.Client
		url  string
	}{
		{"h2 to h1", h2c, "http://" + h2 + "/h1/x"},
		{"h2 to h2", h2c, "http://" + h2 + "/h2/x"},
		{"h1 to h2", h1c, "http://" + h1 + "/h2/x"},
	} {
		fail.Store(1)
		if s := post(tc.c, tc.url, fits); s != http.StatusOK {
			t.Fatalf("%s, 100 KiB: %d, want 200 from the retry", tc.name, s)
		}
		if got := taken(&tries); len(got) != 2 || got[0] != fitsSum || got[1] != fitsSum {
			t.Fatalf("%s, 100 KiB: %d tries, want 2 with the whole body", tc.name, len(got))
		}
		before := counterOf(t, overflow)
		fail.Store(1)
		if s := post(tc.c, tc.url, big); s != http.StatusServiceUnavailable {
			t.Fatalf("%s, 256 KiB: %d, want the first host's 503", tc.name, s)
		}
		if got := taken(&tries); len(got) != 1 || got[0] != bigSum {
			t.Fatalf("%s, 256 KiB: %d tries, want 1 with the whole body", tc.name, len(got))
		}
		if n := counterOf(t, overflow) - before; n != 1 {
			t.Fatalf("%s, 256 KiB: upstream_overflow_total{c,retry_buffer} grew by %v, want 1", tc.name, n)
		}
	}
	fail.Store(0)
	dropped := m.UpstreamMirrors.WithLabelValues("shadow", "dropped")
	for _, tc := range []struct {
		name string
		c    *http.Client
		url  string
	}{
		{"h2 to h1", h2c, "http://" + h2 + "/m1/x"},
		{"h2 to h2", h2c, "http://" + h2 + "/m2/x"},
		{"h1 to h2", h1c, "http://" + h1 + "/m2/x"},
	} {
		if s := post(tc.c, tc.url, fits); s != http.StatusOK {
			t.Fatalf("%s mirror, 100 KiB: %d", tc.name, s)
		}
		testutil.Eventually(t, testTimeout, tc.name+": the 100 KiB copy at the shadow", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(mirrored) > 0
		})
		if got := taken(&mirrored); len(got) != 1 || got[0] != fitsSum {
			t.Fatalf("%s mirror, 100 KiB: the shadow got %d requests, want 1 with the whole body", tc.name, len(got))
		}
		before := counterOf(t, dropped)
		if s := post(tc.c, tc.url, big); s != http.StatusOK {
			t.Fatalf("%s mirror, 256 KiB: %d", tc.name, s)
		}
		testutil.Eventually(t, testTimeout, tc.name+": the 256 KiB copy counted dropped", func() bool {
			return counterOf(t, dropped)-before == 1
		})
		if got := taken(&mirrored); len(got) != 0 {
			t.Fatalf("%s mirror, 256 KiB: the shadow got %d requests, want none", tc.name, len(got))
		}
	}
	taken(&tries)
}

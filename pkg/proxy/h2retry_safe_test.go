package proxy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// safeRetryRoutes: no route has a retry policy. /two/ goes to a refusing host and a
// serving one, /three/ to two refusing hosts and a serving one, /one/ to a refusing
// host alone.
const safeRetryRoutes = `{"router_config_name":"r","virtual_hosts":[{"name":"vh","domains":["*"],"routers":[
 {"match":{"prefix":"/two/"},"route":{"cluster_name":"two","upstream_protocol":"Http2"}},
 {"match":{"prefix":"/three/"},"route":{"cluster_name":"three","upstream_protocol":"Http2"}},
 {"match":{"prefix":"/one/"},"route":{"cluster_name":"one","upstream_protocol":"Http2"}}
]}]}`

func safeRetryClusters(two, three, one []string) string {
	cl := func(name string, hosts []string) string {
		var hs []string
		for _, h := range hosts {
			hs = append(hs, fmt.Sprintf(`{"address":%q}`, h))
		}
		return fmt.Sprintf(`{"name":%q,"type":"SIMPLE","lb_type":"LB_ROUNDROBIN","hosts":[%s]}`, name, strings.Join(hs, ","))
	}
	return "[" + cl("two", two) + "," + cl("three", three) + "," + cl("one", one) + "]"
}

// safeClient is a client of the proxy at addr: h2c to the HTTP/2 driver, else HTTP/1.1.
func safeClient(t testing.TB, down stream.Protocol) *http.Client {
	if down == stream.HTTP2 {
		return &http.Client{Transport: h2cTransport(t), Timeout: testTimeout}
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}
}

func safeDo(t testing.TB, c *http.Client, method, url string, body []byte) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp.StatusCode, b
}

// TestH2UnprocessedRetriedWithoutPolicy: on routes without a retry policy, a request to
// an HTTP/2 upstream that refuses the stream (REFUSED_STREAM) or answers it with a
// graceful GOAWAY that excludes it, whatever its method and with a body of up to the
// default buffer limit (1 MiB), is sent again to the cluster's other hosts, through two
// unprocessing hosts in a row, and the serving host gets each request exactly once with
// its whole body. Each such try counts in upstream_retries_total. HTTP/2 and HTTP/1
// clients (the HTTP/2 driver, and the HTTP/1 proxy's h2 upstream path).
func TestH2UnprocessedRetriedWithoutPolicy(t *testing.T) {
	for _, down := range []stream.Protocol{stream.HTTP2, stream.HTTP1} {
		for _, goaway := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/goaway=%v", down, goaway), func(t *testing.T) {
				a1, a2, a3 := testutil.StartH2Refuser(t, goaway, 0), testutil.StartH2Refuser(t, goaway, 0), testutil.StartH2Refuser(t, goaway, 0)
				bo := startBodyOrigins(t, 1)
				b := bo.origins[0].addr()
				e := startRetryEnv(t, safeRetryRoutes, safeRetryClusters(
					[]string{a1.Addr(), b}, []string{a2.Addr(), a3.Addr(), b}, []string{a1.Addr()}), down)
				c := safeClient(t, down)
				n := 0
				for _, path := range []string{"/two/", "/three/"} {
					for _, tc := range []struct {
						method string
						size   int
					}{{"GET", 0}, {"POST", 3000}, {"PUT", 200 << 10}, {"POST", 1 << 20}} {
						var body []byte
						if tc.size > 0 {
							body = randomBody(tc.size)
						}
						url := fmt.Sprintf("http://%s%s%d", e.addr, path, n)
						n++
						status, got := safeDo(t, c, tc.method, url, body)
						if status != http.StatusOK || !bytes.Equal(got, body) {
							t.Fatalf("%s %s (%d bytes): %d, %d bytes back; want 200 and the body", tc.method, url, tc.size, status, len(got))
						}
						tries := bo.taken()
						if len(tries) != 1 || tries[0].method != tc.method || !bytes.Equal(tries[0].body, body) {
							t.Fatalf("%s %s: the serving host got %d tries, want 1 with the whole body", tc.method, url, len(tries))
						}
					}
				}
				refused := float64(a1.Streams.Load())
				if refused == 0 || a2.Streams.Load()+a3.Streams.Load() == 0 {
					t.Fatalf("streams refused: %d on two, %d+%d on three; the test did not exercise refusals",
						a1.Streams.Load(), a2.Streams.Load(), a3.Streams.Load())
				}
				if got, want := retryCount(t, e.m, "two"), refused; got != want {
					t.Fatalf("upstream_retries_total{two} = %v, want %v (one per refused stream)", got, want)
				}
				if got, want := retryCount(t, e.m, "three"), float64(a2.Streams.Load()+a3.Streams.Load()); got != want {
					t.Fatalf("upstream_retries_total{three} = %v, want %v", got, want)
				}
			})
		}
	}
}

// TestH2UnprocessedRetriesBounded: a cluster whose only host never processes a stream
// gets a request 1+3 times, each on a new connection, and the client gets 502; the
// retries are counted.
func TestH2UnprocessedRetriesBounded(t *testing.T) {
	for _, goaway := range []bool{false, true} {
		t.Run(fmt.Sprintf("goaway=%v", goaway), func(t *testing.T) {
			a := testutil.StartH2Refuser(t, goaway, 0)
			bo := startBodyOrigins(t, 1)
			e := startRetryEnv(t, safeRetryRoutes, safeRetryClusters(
				[]string{bo.origins[0].addr()}, []string{bo.origins[0].addr()}, []string{a.Addr()}), stream.HTTP2)
			c := safeClient(t, stream.HTTP2)
			status, _ := safeDo(t, c, "POST", "http://"+e.addr+"/one/x", randomBody(5000))
			if status != http.StatusBadGateway {
				t.Fatalf("status %d, want 502", status)
			}
			if s, k := a.Streams.Load(), a.Conns.Load(); s != 4 || k != 4 {
				t.Fatalf("the host saw %d streams on %d connections, want 4 on 4", s, k)
			}
			if got := retryCount(t, e.m, "one"); got != 3 {
				t.Fatalf("upstream_retries_total{one} = %v, want 3", got)
			}
		})
	}
}

// TestH2UnprocessedBodyOverReplayLimit: a host that reads more than the 1 MiB replay
// buffer of a body, then refuses the stream, leaves a request that cannot be sent again:
// the client gets 502, the other host gets nothing (no truncated body), and
// upstream_overflow_total{breaker="retry_buffer"} counts it. A body within the buffer,
// refused after half of it was read, is sent again whole.
func TestH2UnprocessedBodyOverReplayLimit(t *testing.T) {
	for _, down := range []stream.Protocol{stream.HTTP2, stream.HTTP1} {
		t.Run(string(down), func(t *testing.T) {
			over := testutil.StartH2Refuser(t, false, 1<<20)
			half := testutil.StartH2Refuser(t, false, 512<<10)
			bo := startBodyOrigins(t, 1)
			b := bo.origins[0].addr()
			e := startRetryEnv(t, safeRetryRoutes, safeRetryClusters(
				[]string{over.Addr(), b}, []string{half.Addr(), b}, []string{b}), down)
			c := safeClient(t, down)
			// The round robin starts at a random host: after a GET (refused by a refusing
			// host, which reads no bodiless stream), the next pick is the refusing host.
			for _, path := range []string{"/two/", "/three/"} {
				if status, _ := safeDo(t, c, "GET", "http://"+e.addr+path+"get", nil); status != http.StatusOK {
					t.Fatalf("GET %s: %d", path, status)
				}
			}
			bo.taken()
			overBefore, halfBefore := over.Streams.Load(), half.Streams.Load()
			before := retryCount(t, e.m, "two")

			status, _ := safeDo(t, c, "POST", "http://"+e.addr+"/two/big", randomBody(1<<20+64<<10))
			if n := over.Streams.Load() - overBefore; n != 1 {
				t.Fatalf("the refusing host saw %d streams, want 1", n)
			}
			if status != http.StatusBadGateway {
				t.Fatalf("status %d, want 502", status)
			}
			if tries := bo.taken(); len(tries) != 0 {
				t.Fatalf("the serving host got %d tries (%d bytes), want none", len(tries), len(tries[0].body))
			}
			if v := counterValue(t, e.m.UpstreamOverflow.WithLabelValues("two", "retry_buffer")); v != 1 {
				t.Fatalf("upstream_overflow_total{two,retry_buffer} = %v, want 1", v)
			}
			if n := retryCount(t, e.m, "two") - before; n != 0 {
				t.Fatalf("upstream_retries_total{two} grew by %v, want 0", n)
			}

			body := randomBody(1 << 20)
			status, got := safeDo(t, c, "POST", "http://"+e.addr+"/three/fits", body)
			if n := half.Streams.Load() - halfBefore; n != 1 {
				t.Fatalf("the refusing host saw %d streams, want 1", n)
			}
			if status != http.StatusOK || !bytes.Equal(got, body) {
				t.Fatalf("a 1 MiB body: %d, %d bytes back; want 200 and the body", status, len(got))
			}
			if tries := bo.taken(); len(tries) != 1 || !bytes.Equal(tries[0].body, body) {
				t.Fatalf("the serving host got %d tries, want 1 with the whole body", len(tries))
			}
		})
	}
}

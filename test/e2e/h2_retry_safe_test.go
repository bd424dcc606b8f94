package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/testutil"
	"github.com/mosnlite/mosnlite/test/framework"
)

// promCounter reads one counter (name with its labels, as /metrics prints them) from
// the admin endpoint; 0 when absent.
func promCounter(t *testing.T, admin, series string) float64 {
	t.Helper()
	_, text := getBody(t, "http://"+admin+"/metrics")
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// TestH2UnprocessedRetriedToNextHost: the built proxy, on a route without a retry
// policy, in front of a cluster of two HTTP/2 upstreams that process no stream (one
// refuses each with REFUSED_STREAM, the other answers it with a graceful GOAWAY naming
// no stream) and one h2c upstream that serves. HTTP/1.1 and h2c clients send GETs,
// POSTs and PUTs, with bodies up to 1 MiB (up to the 1 MiB a retry replays by default):
// every request is answered by the serving upstream, which gets each exactly once and
// whole, and each try sent again counts in upstream_retries_total.
func TestH2UnprocessedRetriedToNextHost(t *testing.T) {
	refuse, goaway := testutil.StartH2Refuser(t, false, 0), testutil.StartH2Refuser(t, true, 0)
	var mu sync.Mutex
	got := map[string]int{} // request id → tries the serving upstream processed
	serving, _ := h2cUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got[r.Header.Get("X-Id")]++
		mu.Unlock()
		sum := sha256.Sum256(b)
		fmt.Fprintf(w, "%s %d %x", r.Method, len(b), sum)
	})
	listen := framework.FreePort(t)
	cfg := httpProxyConfig(listen, "Auto", "Http2", []any{routeTo("/", nil)}, refuse.Addr(), goaway.Addr(), serving)
	p := framework.StartProxy(t, framework.WithAdmin(t, cfg))
	admin, err := p.AdminAddr()
	if err != nil {
		t.Fatal(err)
	}
	h1 := &http.Client{Transport: &http.Transport{}, Timeout: 15 * time.Second}
	t.Cleanup(h1.CloseIdleConnections)
	clients := map[string]*http.Client{"h1": h1, "h2": h2cClient(t)}
	n := 0
	for _, kind := range []string{"h1", "h2"} {
		for _, tc := range []struct {
			method string
			size   int
		}{{"GET", 0}, {"POST", 1 << 10}, {"PUT", 300 << 10}, {"POST", 1 << 20}, {"DELETE", 0}, {"POST", 70 << 10}} {
			n++
			id := fmt.Sprintf("%s-%d", kind, n)
			body := bytes.Repeat([]byte(id), tc.size/len(id)+1)[:tc.size]
			req := newReq(t, tc.method, "http://"+listen+"/x", bytes.NewReader(body))
			req.Header.Set("X-Id", id)
			resp, answer := mustDo(t, clients[kind], req)
			want := fmt.Sprintf("%s %d %x", tc.method, len(body), sha256.Sum256(body))
			if resp.StatusCode != http.StatusOK || answer != want {
				t.Fatalf("%s %s (%d bytes): %d %q, want 200 %q", kind, tc.method, tc.size, resp.StatusCode, answer, want)
			}
			mu.Lock()
			k := got[id]
			mu.Unlock()
			if k != 1 {
				t.Fatalf("%s %s: the serving upstream processed it %d times, want once", kind, tc.method, k)
			}
		}
	}
	unprocessed := refuse.Streams.Load() + goaway.Streams.Load()
	t.Logf("%d requests; %d refused, %d met a GOAWAY", n, refuse.Streams.Load(), goaway.Streams.Load())
	if refuse.Streams.Load() == 0 || goaway.Streams.Load() == 0 {
		t.Fatalf("no stream met one of the unprocessing upstreams (%d refused, %d GOAWAY): nothing was exercised",
			refuse.Streams.Load(), goaway.Streams.Load())
	}
	if v := promCounter(t, admin, `mosnlite_upstream_retries_total{cluster="up"}`); v != float64(unprocessed) {
		t.Fatalf("upstream_retries_total = %v, want %d (one per unprocessed stream)", v, unprocessed)
	}
}

package proxy_test

import (
	"crypto/sha256"
	"net/http"
	"strings"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/stream"
)

// limitCase is one way a request reaches a route of bodyRetryRoutes or mirrorH2Routes.
type limitCase struct {
	name    string
	e       *retryEnv
	c       *http.Client
	path    string
	unknown bool // no length: HTTP/2 DATA frames without content-length, HTTP/1 chunked
}

// limitCases starts a proxy for HTTP/2 clients and one for HTTP/1 clients on routes and
// clusters cl, and returns the paths that keep a request body: HTTP/2 clients to HTTP/1
// (h1: "/h1/" or "/m1/") and to HTTP/2 upstreams (h2: "/h2/" or "/m2/"), and HTTP/1
// clients to HTTP/2 upstreams, with a known length and without; with full, also HTTP/2
// clients to HTTP/1 on the full path (a third proxy, with a stream filter).
func limitCases(t *testing.T, routes, cl, h1, h2 string, full bool) []limitCase {
	e2 := startRetryEnv(t, routes, cl, stream.HTTP2)
	e1 := startRetryEnv(t, routes, cl, stream.HTTP1)
	c2, c1 := safeClient(t, stream.HTTP2), safeClient(t, stream.HTTP1)
	cases := []limitCase{
		{"h2 to h1", e2, c2, h1, false},
		{"h2 to h1 no length", e2, c2, h1, true},
		{"h2 to h2", e2, c2, h2, false},
		{"h2 to h2 no length", e2, c2, h2, true},
		{"h1 to h2", e1, c1, h2, false},
		{"h1 to h2 chunked", e1, c1, h2, true},
	}
	if full {
		f := startRetryEnv(t, routes, cl, stream.HTTP2,
			withFilters(t, "header_mutation", `{"request_headers_to_add":[{"header":{"key":"X-Added","value":"yes"}}]}`))
		cases = append(cases, limitCase{"h2 to h1 full path", f, c2, h1, false},
			limitCase{"h2 to h1 full path no length", f, c2, h1, true})
	}
	return cases
}

// TestH2RetryBodyWithinBufferLimit: with the default buffer limit (1 MiB), a retry
// policy retry of a request with a 512 KiB body, answered 503 by the first host, sends
// the whole body to the second host, on every path that keeps the body.
func TestH2RetryBodyWithinBufferLimit(t *testing.T) {
	bo := startBodyOrigins(t, 2)
	cl := `[{"name":"c","type":"SIMPLE","hosts":[` + bo.hosts() + `]}]`
	body := randomBody(512 << 10)
	sum := sha256.Sum256(body)
	for _, tc := range limitCases(t, bodyRetryRoutes, cl, "/h1/up", "/h2/up", false) {
		before := retryCount(t, tc.e.m, "c")
		bo.fail.Store(1)
		resp, got := post(t, tc.c, "http://"+tc.e.addr+tc.path, body, tc.unknown)
		if resp.StatusCode != http.StatusOK || sha256.Sum256([]byte(got)) != sum {
			t.Fatalf("%s: %d, %d bytes back; want 200 and the body", tc.name, resp.StatusCode, len(got))
		}
		tries := bo.taken()
		if len(tries) != 2 || tries[0].host == tries[1].host {
			t.Fatalf("%s: %d tries, want 2 on distinct hosts", tc.name, len(tries))
		}
		for i, tr := range tries {
			if sha256.Sum256(tr.body) != sum {
				t.Fatalf("%s: try %d got %d body bytes, not the %d sent", tc.name, i, len(tr.body), len(body))
			}
		}
		if n := retryCount(t, tc.e.m, "c") - before; n != 1 {
			t.Fatalf("%s: upstream_retries_total grew by %v, want 1", tc.name, n)
		}
		if v := counterValue(t, tc.e.m.UpstreamOverflow.WithLabelValues("c", "retry_buffer")); v != 0 {
			t.Fatalf("%s: upstream_overflow_total{retry_buffer} = %v, want 0", tc.name, v)
		}
	}
}

// TestH2RetryBodyOverBufferLimit: a request whose 2 MiB body outgrows the default buffer
// limit is not retried: the client gets the first host's 503, the other host gets
// nothing, and the retry it missed is counted as upstream_overflow_total{retry_buffer}.
func TestH2RetryBodyOverBufferLimit(t *testing.T) {
	bo := startBodyOrigins(t, 2)
	cl := `[{"name":"c","type":"SIMPLE","hosts":[` + bo.hosts() + `]}]`
	body := randomBody(2 << 20)
	sum := sha256.Sum256(body)
	for _, tc := range limitCases(t, bodyRetryRoutes, cl, "/h1/big", "/h2/big", false) {
		before := retryCount(t, tc.e.m, "c")
		over := tc.e.m.UpstreamOverflow.WithLabelValues("c", "retry_buffer")
		overBefore := counterValue(t, over)
		bo.fail.Store(1)
		resp, got := post(t, tc.c, "http://"+tc.e.addr+tc.path, body, tc.unknown)
		if resp.StatusCode != http.StatusServiceUnavailable || got != "try again" {
			t.Fatalf("%s: %d %.40q, want the first host's 503", tc.name, resp.StatusCode, got)
		}
		if tries := bo.taken(); len(tries) != 1 || sha256.Sum256(tries[0].body) != sum {
			t.Fatalf("%s: %d tries, want 1 with the whole body", tc.name, len(tries))
		}
		if n := retryCount(t, tc.e.m, "c") - before; n != 0 {
			t.Fatalf("%s: upstream_retries_total grew by %v, want 0", tc.name, n)
		}
		if n := counterValue(t, over) - overBefore; n != 1 {
			t.Fatalf("%s: upstream_overflow_total{c,retry_buffer} grew by %v, want 1", tc.name, n)
		}
	}
}

// TestH2MirrorBodyWithinBufferLimit: with the default buffer limit, a mirrored request
// with a 512 KiB body reaches the shadow cluster whole, on every path that mirrors
// bodies: to HTTP/2 upstreams (from HTTP/2 and HTTP/1 clients), HTTP/2 clients to HTTP/1
// upstreams on the direct path and, with stream filters, on the full path.
func TestH2MirrorBodyWithinBufferLimit(t *testing.T) {
	main := h2Origin(t, h2echo)
	shadow, seen := shadowOrigin(t, false)
	cl := `[{"name":"c","type":"SIMPLE","hosts":[{"address":"` + main.addr() + `"}]},
	 {"name":"shadow","type":"SIMPLE","hosts":[{"address":"` + shadow.addr() + `"}]}]`
	body := randomBody(512 << 10)
	sum := sha256.Sum256(body)
	cases := limitCases(t, mirrorH2Routes, cl, "/m1/up", "/m2/up", true)
	for _, tc := range cases {
		resp, got := post(t, tc.c, "http://"+tc.e.addr+tc.path, body, tc.unknown)
		if want := "POST " + tc.path + " "; resp.StatusCode != http.StatusOK || !strings.HasPrefix(got, want) ||
			sha256.Sum256([]byte(got[len(want):])) != sum {
			t.Fatalf("%s: main answer %d with %d bytes", tc.name, resp.StatusCode, len(got))
		}
		m := waitMirror(t, seen)
		if m.method != "POST" || m.path != tc.path || sha256.Sum256(m.body) != sum {
			t.Fatalf("%s: mirror got %s %s with %d body bytes, want the %d sent", tc.name, m.method, m.path, len(m.body), len(body))
		}
	}
	for _, tc := range cases {
		if v := mirrorCount(t, tc.e.m, "dropped"); v != 0 {
			t.Fatalf("%s: mirrors dropped = %v, want 0", tc.name, v)
		}
	}
}

// TestH2MirrorBodyAtBufferLimit: a body of exactly the default buffer limit (1 MiB) is
// mirrored whole, and one a byte over it is not (counted dropped), on every path that
// mirrors bodies; on the full path the head and chunk framing the copy also holds do
// not let a larger body through.
func TestH2MirrorBodyAtBufferLimit(t *testing.T) {
	main := h2Origin(t, h2echo)
	shadow, seen := shadowOrigin(t, false)
	cl := `[{"name":"c","type":"SIMPLE","hosts":[{"address":"` + main.addr() + `"}]},
	 {"name":"shadow","type":"SIMPLE","hosts":[{"address":"` + shadow.addr() + `"}]}]`
	over := randomBody(1<<20 + 1)
	fits := over[:1<<20]
	sum := sha256.Sum256(fits)
	cases := limitCases(t, mirrorH2Routes, cl, "/m1/up", "/m2/up", true)
	for _, tc := range cases {
		before := mirrorCount(t, tc.e.m, "dropped")
		if resp, got := post(t, tc.c, "http://"+tc.e.addr+tc.path, over, tc.unknown); resp.StatusCode != http.StatusOK ||
			len(got) != len("POST "+tc.path+" ")+len(over) {
			t.Fatalf("%s, a byte over: main answer %d with %d bytes", tc.name, resp.StatusCode, len(got))
		}
		if n := mirrorCount(t, tc.e.m, "dropped") - before; n != 1 {
			t.Fatalf("%s, a byte over: mirrors dropped grew by %v, want 1", tc.name, n)
		}
		// A copy of the larger body, sent anyway, would come before this one.
		if resp, _ := post(t, tc.c, "http://"+tc.e.addr+tc.path, fits, tc.unknown); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s, at the limit: main answer %d", tc.name, resp.StatusCode)
		}
		if m := waitMirror(t, seen); sha256.Sum256(m.body) != sum {
			t.Fatalf("%s, at the limit: mirror got %d body bytes, want the %d sent", tc.name, len(m.body), len(fits))
		}
	}
}

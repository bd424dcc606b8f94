package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/stream"
)

// BenchmarkH1ToH2 is one keep-alive HTTP/1 client connection sending requests through
// the HTTP/1 proxy to an h2c upstream (route /h2/), one at a time: a GET, and POSTs whose
// body the upstream reads before it answers (the common order). allocs/op counts the
// whole process: the raw client, the proxy (session, x/net client) and the x/net origin.
func BenchmarkH1ToH2(b *testing.B) {
	o := h2Origin(b, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header()["Content-Length"] = []string{"5"}
		_, _ = io.WriteString(w, "hello")
	})
	e := startH2Proxy(b, o.addr(), stream.HTTP1, stream.HTTP2)
	for _, tc := range []struct {
		name string
		body int
	}{{"GET", -1}, {"POST", 7}, {"POST64K", 64 << 10}} {
		b.Run(tc.name, func(b *testing.B) {
			req := []byte("GET /h2/bench HTTP/1.1\r\nHost: bench\r\n\r\n")
			if tc.body >= 0 {
				req = []byte("POST /h2/bench HTTP/1.1\r\nHost: bench\r\nContent-Length: " + strconv.Itoa(tc.body) + "\r\n\r\n")
				req = append(req, bytes.Repeat([]byte{'x'}, tc.body)...)
			}
			benchRequests(b, e.addr, req)
		})
	}
}

package proxy_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/stream"
)

// BenchmarkH2Proxy is one HTTP/2 client connection sending GETs through the HTTP/2
// driver to an h2c upstream. allocs/op counts the whole process: the x/net client, the
// proxy (x/net server + client) and the x/net origin.
func BenchmarkH2Proxy(b *testing.B) {
	o := h2Origin(b, func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Length"] = []string{"5"}
		io.WriteString(w, "hello")
	})
	e := startH2Proxy(b, o.addr(), stream.HTTP2, "")
	c := &http.Client{Transport: h2cTransport(b)}
	req, err := http.NewRequest("GET", "http://"+e.addr+"/bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64)
	once := func() {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.ReadFull(resp.Body, buf[:5])
		resp.Body.Close()
		if resp.StatusCode != 200 || n != 5 {
			b.Fatalf("%d %d", resp.StatusCode, n)
		}
	}
	for range 100 {
		once()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		once()
	}
}

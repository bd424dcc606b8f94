package proxy_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"

	"golang.org/x/net/http2/hpack"

	"github.com/mosnlite/mosnlite/pkg/stream"
	h2stream "github.com/mosnlite/mosnlite/pkg/stream/http2"
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

// BenchmarkH2ToH1Direct is one HTTP/2 connection sending GETs, 8 in flight, through the
// HTTP/2 driver's direct path to an HTTP/1 origin. The client writes pre-encoded frames
// and scans the answers by hand, and the origin answers from a fixed buffer, so neither
// allocates per request: allocs/op is the proxy's.
func BenchmarkH2ToH1Direct(b *testing.B) {
	e := startH2Proxy(b, fastOrigin(b), stream.HTTP2, stream.HTTP1)
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	// Preface, empty SETTINGS, a SETTINGS ACK and a large connection window.
	pre := append([]byte(h2stream.ClientPreface), 0, 0, 0, 4, 0, 0, 0, 0, 0)
	pre = append(pre, 0, 0, 0, 4, 1, 0, 0, 0, 0)
	pre = append(pre, 0, 0, 4, 8, 0, 0, 0, 0, 0, 0x7f, 0xff, 0, 0)
	if _, err := c.Write(pre); err != nil {
		b.Fatal(err)
	}
	// The first block adds the fields to the decoder's table, as real clients do; every
	// later one is then the same few index bytes.
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	encode := func() []byte {
		hb.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "bench"}, {":path", "/bench"}, {"user-agent", "bench"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		return bytes.Clone(hb.Bytes())
	}
	first, block := encode(), encode()
	first = append([]byte{0, 0, byte(len(first)), 1, 0x5, 0, 0, 0, 1}, first...)
	if _, err := c.Write(first); err != nil {
		b.Fatal(err)
	}
	const inflight = 8
	req := make([]byte, 0, inflight*(9+len(block)))
	rd := bufio.NewReaderSize(c, 64<<10)
	var fh [9]byte
	next := uint32(3)
	ends := 0
	round := func() {
		req = req[:0]
		for range inflight {
			req = append(req, 0, 0, byte(len(block)), 1, 0x5, byte(next>>24), byte(next>>16), byte(next>>8), byte(next))
			req = append(req, block...)
			next += 2
		}
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < inflight; {
			if _, err := io.ReadFull(rd, fh[:]); err != nil {
				b.Fatal(err)
			}
			n := int(fh[0])<<16 | int(fh[1])<<8 | int(fh[2])
			if _, err := rd.Discard(n); err != nil {
				b.Fatal(err)
			}
			switch {
			case fh[3] == 3 || fh[3] == 7:
				b.Fatalf("frame type %d (reset or goaway)", fh[3])
			case (fh[3] == 0 || fh[3] == 1) && fh[4]&1 != 0:
				got++
			}
		}
		ends += inflight
	}
	for fin := false; !fin; { // the first request's answer
		if _, err := io.ReadFull(rd, fh[:]); err != nil {
			b.Fatal(err)
		}
		n := int(fh[0])<<16 | int(fh[1])<<8 | int(fh[2])
		_, _ = rd.Discard(n)
		fin = (fh[3] == 0 || fh[3] == 1) && fh[4]&1 != 0
	}
	for range 20 {
		round()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += inflight {
		round()
	}
	if ends == 0 {
		b.Fatal("no responses")
	}
}

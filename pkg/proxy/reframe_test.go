package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// A chunked body in forms RFC 9112 allows but parsers read differently: an extension with
// whitespace before its ";" (Go's server refuses it: "invalid byte in chunk length"), a
// size with more than 16 digits (Go: "http chunk length too large"), extensions with
// quoted values, a trailer. Its data is "hello, " + 26 letters + "!".
const oddChunked = "5 ;ext=1\r\nhello\r\n" +
	"0000000000000000002;a=\"q;x\";b\r\n, \r\n" +
	"1A\r\nabcdefghijklmnopqrstuvwxyz\r\n" +
	"1\r\n!\r\n" +
	"0 ;last\r\nX-Sum: 34\r\n\r\n"

const oddChunkedData = "hello, abcdefghijklmnopqrstuvwxyz!"

// TestChunkedRequestReframed: the proxy forwards a chunked request body in canonical
// framing (sizes in plain hex, no extensions), as Envoy and nginx re-frame theirs, so an
// upstream whose parser is stricter or different (here Go's net/http) reads the body the
// proxy read, trailer included; pipelined behind it, a second request is not disturbed.
// Without the re-framing the upstream answers 400.
func TestChunkedRequestReframed(t *testing.T) { bothPaths(t, chunkedRequestReframed) }

func chunkedRequestReframed(t *testing.T, p path) {
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, string(b)+"|"+r.Trailer.Get("X-Sum"))
	})
	e := p.start(t, o.addr())
	c := dial(t, e.addr)
	head := "POST /odd HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
	// In two writes split inside a rewritten size line, then a pipelined GET.
	raw := head + oddChunked
	cut := len(head) + strings.Index(oddChunked, "0000") + 7
	if _, err := io.WriteString(c, raw[:cut]); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, raw[cut:]+"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if resp, body := readResp(t, br, http.MethodPost); resp.StatusCode != 200 || body != oddChunkedData+"|34" {
		t.Fatalf("odd chunked request: %d %q", resp.StatusCode, body)
	}
	if resp, body := readResp(t, br, http.MethodGet); resp.StatusCode != 200 || body != "|" {
		t.Fatalf("the request after it: %d %q", resp.StatusCode, body)
	}
}

// TestChunkedResponseReframed: the same for a chunked response on its way to the client,
// which reads it with Go's chunked reader.
func TestChunkedResponseReframed(t *testing.T) { bothPaths(t, chunkedResponseReframed) }

func chunkedResponseReframed(t *testing.T, p path) {
	addr := rawOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"+oddChunked)
		}
	})
	e := p.start(t, addr)
	c := dial(t, e.addr)
	br := bufio.NewReader(c)
	for range 2 { // the second answer on a reused upstream connection
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != oddChunkedData || resp.Trailer.Get("X-Sum") != "34" {
			t.Fatalf("odd chunked response: %q %v, trailer %q", b, err, resp.Trailer.Get("X-Sum"))
		}
	}
	// What went out is canonical (a plain size, such as 1A, is kept as it came): the raw
	// bytes of one more answer.
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || len(resp.TransferEncoding) != 1 {
		t.Fatalf("third answer: %d %v", resp.StatusCode, resp.TransferEncoding)
	}
	var raw strings.Builder
	for {
		line, err := br.ReadString('\n')
		raw.WriteString(line)
		if err != nil || line == "\r\n" {
			break
		}
	}
	want := "5\r\nhello\r\n2\r\n, \r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n1\r\n!\r\n0\r\nX-Sum: 34\r\n\r\n"
	if raw.String() != want {
		t.Fatalf("forwarded framing %q, want %q", raw.String(), want)
	}
}

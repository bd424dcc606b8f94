package http1

import (
	"bytes"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

// FuzzHTTP1Parse parses b as a request head and as a response head (flags: bit 0 HEAD
// request, bit 1 CONNECT request). It checks that the parsers never panic, that n stays
// within b, that a head parses the same alone and is "need more" when cut short, and that
// serializing a parsed head gives bytes that parse back to the same message.
func FuzzHTTP1Parse(f *testing.F) {
	for _, s := range []string{
		typicalRequest, typicalResponse,
		req("POST http://a:1/x?y HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Connection: te, x", "TE: trailers", "x: 1"),
		req("GET /ws HTTP/1.1", "Host: a", "Connection: upgrade", "Upgrade: websocket", "X-Forwarded-For: 1.2.3.4"),
		req("CONNECT a:443 HTTP/1.1", "Host: a:443"),
		req("GET / HTTP/1.0", "Content-Length: 3", "Content-Length: 3"),
		"\r\n" + req("OPTIONS * HTTP/1.1", "Host:", "Expect: 100-continue"),
		"HTTP/1.1 101 Switching\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
		"HTTP/1.0 304 \r\nContent-Length: 10\r\n\r\n",
		req("POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Transfer-Encoding: chunked"),
	} {
		f.Add([]byte(s), uint8(0))
	}
	f.Fuzz(func(t *testing.T, b []byte, flags uint8) {
		lim := Limits{MaxHeaderBytes: 4096, MaxHeaders: 20, MaxRequestLine: 512}
		var h RequestHead
		n, err := ParseRequestHead(b, lim, &h)
		checkN(t, b, n, err)
		if err == nil && n > 0 {
			checkRequest(t, b[:n], lim, &h)
		}
		r := ResponseHead{HeadRequest: flags&1 != 0, ConnectRequest: flags&2 != 0}
		n, err = ParseResponseHead(b, lim, &r)
		checkN(t, b, n, err)
		if err == nil && n > 0 {
			checkResponse(t, b[:n], lim, &r)
		}
	})
}

func checkN(t *testing.T, b []byte, n int, err error) {
	t.Helper()
	if n < 0 || n > len(b) || (err != nil && n != 0) {
		t.Fatalf("n = %d, err = %v for %d bytes", n, err, len(b))
	}
	if err != nil && StatusCode(err) < 400 {
		t.Fatalf("error %v with status %d", err, StatusCode(err))
	}
}

// prefixes checks that every cut of a complete head is "need more".
func prefixes(t *testing.T, b []byte, parse func([]byte) (int, error)) {
	t.Helper()
	for _, k := range []int{0, 1, len(b) / 3, len(b) / 2, len(b) - 2, len(b) - 1} {
		if k < 0 || k >= len(b) {
			continue
		}
		if n, err := parse(b[:k]); n != 0 || err != nil {
			t.Fatalf("prefix %d of %q: n %d err %v; want need more", k, b, n, err)
		}
	}
}

var bigLimits = Limits{MaxHeaderBytes: 1 << 20, MaxHeaders: 1000, MaxRequestLine: 1 << 20}

func checkRequest(t *testing.T, b []byte, lim Limits, h *RequestHead) {
	var again RequestHead
	if n, err := ParseRequestHead(b, lim, &again); n != len(b) || err != nil || !sameRequest(h, &again) {
		t.Fatalf("alone: n %d err %v", n, err)
	}
	prefixes(t, b, func(p []byte) (int, error) { return ParseRequestHead(p, lim, &again) })

	// Parse, serialize, parse: the same message, end to end.
	var out buffer.IoBuffer
	if err := AppendRequestHead(&out, h, nil); err != nil {
		t.Fatalf("serialize %q: %v", b, err)
	}
	var re RequestHead
	n, err := ParseRequestHead(out.Bytes(), bigLimits, &re)
	if err != nil || n != out.Len() {
		t.Fatalf("reparse of %q\nfrom %q: n %d err %v", out.Bytes(), b, n, err)
	}
	target := h.Target
	if target[0] == '?' {
		target = append([]byte("/"), target...)
	}
	switch {
	case !bytes.Equal(re.Method, h.Method), !bytes.Equal(re.Target, target), !bytes.Equal(re.Host, h.Host),
		re.ContentLength != h.ContentLength, re.Chunked != h.Chunked, re.Body != h.Body,
		re.ProtoMinor != 1, !re.KeepAlive, re.Upgrade,
		h.ProtoMinor == 1 && re.Expect100 != h.Expect100:
		t.Fatalf("round trip of %q\ngave %q", b, out.Bytes())
	}
	sameEndToEnd(t, h.Headers, re.Headers, b, out.Bytes())

	// With edits: still valid.
	e := Edits{Upgrade: true, XForwardedFor: []byte("10.0.0.1"), RequestID: []byte("id"), Connection: ConnClose,
		Add: Headers{{Name: []byte("X-Added"), Value: []byte("v")}}}
	out.Reset()
	if err := AppendRequestHead(&out, h, &e); err != nil {
		t.Fatal(err)
	}
	if n, err := ParseRequestHead(out.Bytes(), bigLimits, &re); err != nil || n != out.Len() || re.Upgrade != h.Upgrade || re.KeepAlive {
		t.Fatalf("reparse with edits of %q: n %d err %v", out.Bytes(), n, err)
	}
}

func checkResponse(t *testing.T, b []byte, lim Limits, h *ResponseHead) {
	again := ResponseHead{HeadRequest: h.HeadRequest, ConnectRequest: h.ConnectRequest}
	if n, err := ParseResponseHead(b, lim, &again); n != len(b) || err != nil || again.Status != h.Status || again.Body != h.Body {
		t.Fatalf("alone: n %d err %v", n, err)
	}
	prefixes(t, b, func(p []byte) (int, error) { return ParseResponseHead(p, lim, &again) })

	var out buffer.IoBuffer
	if err := AppendResponseHead(&out, h, &Edits{Upgrade: true}); err != nil {
		t.Fatalf("serialize %q: %v", b, err)
	}
	re := ResponseHead{HeadRequest: h.HeadRequest, ConnectRequest: h.ConnectRequest}
	n, err := ParseResponseHead(out.Bytes(), bigLimits, &re)
	if err != nil || n != out.Len() {
		t.Fatalf("reparse of %q\nfrom %q: n %d err %v", out.Bytes(), b, n, err)
	}
	switch {
	case re.Status != h.Status, !bytes.Equal(re.Reason, h.Reason), re.ContentLength != h.ContentLength,
		re.Chunked != h.Chunked, re.Body != h.Body, re.ProtoMinor != 1,
		re.Upgrade != h.Upgrade, re.KeepAlive != (h.Body != BodyClose):
		t.Fatalf("round trip of %q\ngave %q", b, out.Bytes())
	}
	sameEndToEnd(t, h.Headers, re.Headers, b, out.Bytes())
}

// sameEndToEnd compares the fields a proxy forwards unchanged.
func sameEndToEnd(t *testing.T, a, b Headers, in, out []byte) {
	t.Helper()
	var i, j int
	for {
		for i < len(a) && hopByHop(a, i) {
			i++
		}
		for j < len(b) && hopByHop(b, j) {
			j++
		}
		if i == len(a) || j == len(b) {
			break
		}
		if !bytes.Equal(a[i].Name, b[j].Name) || !bytes.Equal(a[i].Value, b[j].Value) {
			t.Fatalf("field %d %q: %q != %q\nin %q\nout %q", i, a[i].Name, a[i].Value, b[j].Value, in, out)
		}
		i, j = i+1, j+1
	}
	if i != len(a) || j != len(b) {
		t.Fatalf("field lists differ\nin %q\nout %q", in, out)
	}
}

func hopByHop(hs Headers, i int) bool {
	switch kindOf(hs[i].Name) {
	case kindHost, kindConnection, kindKeepAlive, kindProxyConnection, kindTE, kindTransferEncoding, kindContentLength, kindUpgrade:
		return true
	}
	return namedByConnection(hs, hs[i].Name)
}

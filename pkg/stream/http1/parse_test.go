package http1

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const typicalRequest = "GET /api/v1/users/42?fields=name,email HTTP/1.1\r\n" +
	"Host: service.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n" +
	"Accept: application/json, text/plain, */*\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Accept-Language: en-US,en;q=0.9\r\n" +
	"Connection: keep-alive\r\n" +
	"Cookie: session=0123456789abcdef; theme=dark\r\n" +
	"Referer: https://service.example.com/app\r\n" +
	"X-Forwarded-For: 10.0.0.1\r\n" +
	"X-Request-Id: 5f1b6c1e-5a0b-4d2c-9a7e-2f6d0c2b7a11\r\n" +
	"\r\n"

const typicalResponse = "HTTP/1.1 200 OK\r\n" +
	"Date: Mon, 27 Jul 2026 12:28:53 GMT\r\n" +
	"Server: upstream/1.0\r\n" +
	"Content-Type: application/json; charset=utf-8\r\n" +
	"Content-Length: 1024\r\n" +
	"Cache-Control: no-cache, no-store, must-revalidate\r\n" +
	"Vary: Accept-Encoding\r\n" +
	"X-Content-Type-Options: nosniff\r\n" +
	"X-Frame-Options: DENY\r\n" +
	"X-Request-Id: 5f1b6c1e-5a0b-4d2c-9a7e-2f6d0c2b7a11\r\n" +
	"Connection: keep-alive\r\n" +
	"\r\n"

// req builds a request head from a request line and field lines, CRLF-terminated.
func req(line string, fields ...string) string {
	var b strings.Builder
	b.WriteString(line + "\r\n")
	for _, f := range fields {
		b.WriteString(f + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v; want %v", err, want)
	}
	if want != nil && StatusCode(err) != StatusCode(want) {
		t.Fatalf("status %d; want %d", StatusCode(err), StatusCode(want))
	}
}

func TestParseRequestHead(t *testing.T) {
	type check func(t *testing.T, h *RequestHead)
	eq := func(t *testing.T, what string, got []byte, want string) {
		t.Helper()
		if string(got) != want {
			t.Fatalf("%s = %q; want %q", what, got, want)
		}
	}
	for _, tc := range []struct {
		name   string
		in     string
		err    *Error
		status int
		check  check
	}{
		{name: "typical", in: typicalRequest, check: func(t *testing.T, h *RequestHead) {
			eq(t, "method", h.Method, "GET")
			eq(t, "target", h.Target, "/api/v1/users/42?fields=name,email")
			eq(t, "host", h.Host, "service.example.com")
			if h.ProtoMinor != 1 || !h.KeepAlive || h.ContentLength != -1 || h.Chunked || h.Body != BodyNone || len(h.Headers) != 10 {
				t.Fatalf("head %+v", h)
			}
			eq(t, "headers[2].Value", h.Headers[2].Value, "application/json, text/plain, */*")
		}},
		{name: "content length", in: req("POST /p HTTP/1.1", "Host: a", "Content-Length: 5"), check: func(t *testing.T, h *RequestHead) {
			if h.ContentLength != 5 || h.Body != BodyLength || h.Chunked {
				t.Fatalf("head %+v", h)
			}
		}},
		{name: "content length zero", in: req("POST /p HTTP/1.1", "Host: a", "Content-Length: 0"), check: func(t *testing.T, h *RequestHead) {
			if h.ContentLength != 0 || h.Body != BodyNone {
				t.Fatalf("head %+v", h)
			}
		}},
		{name: "content length leading zeros", in: req("POST /p HTTP/1.1", "Host: a", "Content-Length: 007"), check: func(t *testing.T, h *RequestHead) {
			if h.ContentLength != 7 {
				t.Fatalf("cl %d", h.ContentLength)
			}
		}},
		{name: "content length max int64", in: req("POST /p HTTP/1.1", "Host: a", "Content-Length: 9223372036854775807"), check: func(t *testing.T, h *RequestHead) {
			if h.ContentLength != 1<<63-1 {
				t.Fatalf("cl %d", h.ContentLength)
			}
		}},
		{name: "identical duplicate content length collapsed", in: req("POST /p HTTP/1.1", "Host: a", "Content-Length: 10", "Content-Length: 10"), check: func(t *testing.T, h *RequestHead) {
			if h.ContentLength != 10 {
				t.Fatalf("cl %d", h.ContentLength)
			}
		}},
		{name: "chunked", in: req("POST /p HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"), check: func(t *testing.T, h *RequestHead) {
			if !h.Chunked || h.Body != BodyChunked || h.ContentLength != -1 {
				t.Fatalf("head %+v", h)
			}
		}},
		{name: "chunked case and whitespace", in: req("POST /p HTTP/1.1", "Host: a", "transfer-encoding:\t CHUNKED \t"), check: func(t *testing.T, h *RequestHead) {
			if !h.Chunked {
				t.Fatal("not chunked")
			}
		}},
		{name: "value whitespace trimmed, inner kept", in: req("GET / HTTP/1.1", "Host: a", "X:  a \t b  "), check: func(t *testing.T, h *RequestHead) {
			eq(t, "x", h.Headers[1].Value, "a \t b")
		}},
		{name: "empty value", in: req("GET / HTTP/1.1", "Host: a", "X:"), check: func(t *testing.T, h *RequestHead) {
			eq(t, "x", h.Headers[1].Value, "")
		}},
		{name: "obs-text value", in: req("GET / HTTP/1.1", "Host: a", "X: caf\xc3\xa9\xff"), check: func(t *testing.T, h *RequestHead) {
			eq(t, "x", h.Headers[1].Value, "caf\xc3\xa9\xff")
		}},
		{name: "http/1.0 default close", in: req("GET / HTTP/1.0"), check: func(t *testing.T, h *RequestHead) {
			if h.ProtoMinor != 0 || h.KeepAlive || h.Host != nil {
				t.Fatalf("head %+v", h)
			}
		}},
		{name: "http/1.0 keep-alive", in: req("GET / HTTP/1.0", "Connection: Keep-Alive"), check: func(t *testing.T, h *RequestHead) {
			if !h.KeepAlive {
				t.Fatal("not keep-alive")
			}
		}},
		{name: "http/1.1 close", in: req("GET / HTTP/1.1", "Host: a", "Connection: foo, close"), check: func(t *testing.T, h *RequestHead) {
			if h.KeepAlive {
				t.Fatal("keep-alive")
			}
		}},
		{name: "http/1.2 as 1.1", in: req("GET / HTTP/1.2", "Host: a"), check: func(t *testing.T, h *RequestHead) {
			if h.ProtoMinor != 1 {
				t.Fatal("minor")
			}
		}},
		{name: "expect 100", in: req("PUT / HTTP/1.1", "Host: a", "Expect: 100-Continue", "Content-Length: 3"), check: func(t *testing.T, h *RequestHead) {
			if !h.Expect100 {
				t.Fatal("no expect")
			}
		}},
		{name: "expect 100 ignored in 1.0", in: req("PUT / HTTP/1.0", "Expect: 100-continue"), check: func(t *testing.T, h *RequestHead) {
			if h.Expect100 {
				t.Fatal("expect")
			}
		}},
		{name: "upgrade", in: req("GET /ws HTTP/1.1", "Host: a", "Connection: Upgrade", "Upgrade: websocket"), check: func(t *testing.T, h *RequestHead) {
			if !h.Upgrade {
				t.Fatal("no upgrade")
			}
		}},
		{name: "upgrade field without connection token", in: req("GET /ws HTTP/1.1", "Host: a", "Upgrade: websocket"), check: func(t *testing.T, h *RequestHead) {
			if h.Upgrade {
				t.Fatal("upgrade")
			}
		}},
		{name: "upgrade ignored in 1.0", in: req("GET /ws HTTP/1.0", "Connection: upgrade", "Upgrade: websocket"), check: func(t *testing.T, h *RequestHead) {
			if h.Upgrade {
				t.Fatal("upgrade")
			}
		}},
		{name: "absolute form", in: req("GET http://Example.com:8080/a/b?c=d HTTP/1.1", "Host: other"), check: func(t *testing.T, h *RequestHead) {
			eq(t, "target", h.Target, "/a/b?c=d")
			eq(t, "host", h.Host, "Example.com:8080")
			eq(t, "scheme", h.Scheme, "http")
		}},
		{name: "absolute form no path", in: req("GET https://a HTTP/1.1", "Host: a"), check: func(t *testing.T, h *RequestHead) {
			eq(t, "target", h.Target, "/")
		}},
		{name: "absolute form query only", in: req("GET http://a?x=1 HTTP/1.1", "Host: a"), check: func(t *testing.T, h *RequestHead) {
			eq(t, "target", h.Target, "?x=1")
		}},
		{name: "connect", in: req("CONNECT example.com:443 HTTP/1.1", "Host: example.com:443"), check: func(t *testing.T, h *RequestHead) {
			eq(t, "target", h.Target, "example.com:443")
			eq(t, "authority", h.Authority, "example.com:443")
		}},
		{name: "connect ipv6", in: req("CONNECT [::1]:443 HTTP/1.1", "Host: [::1]:443")},
		{name: "options star", in: req("OPTIONS * HTTP/1.1", "Host: a"), check: func(t *testing.T, h *RequestHead) {
			eq(t, "target", h.Target, "*")
		}},
		{name: "leading empty lines skipped", in: "\r\n\r\n" + req("GET / HTTP/1.1", "Host: a")},
		{name: "empty host", in: req("GET / HTTP/1.1", "Host:"), check: func(t *testing.T, h *RequestHead) {
			if h.Host == nil || len(h.Host) != 0 {
				t.Fatalf("host %q", h.Host)
			}
		}},
		{name: "extension method", in: req("PROPFIND /x HTTP/1.1", "Host: a")},
		{name: "te trailers", in: req("GET / HTTP/1.1", "Host: a", "TE: trailers")},

		// Smuggling (ROBUSTNESS rows 1-3).
		{name: "cl then te", in: req("POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Transfer-Encoding: chunked"), err: ErrLengthAndChunked, status: 400},
		{name: "te then cl", in: req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Content-Length: 5"), err: ErrLengthAndChunked, status: 400},
		{name: "cl te with tab", in: req("POST / HTTP/1.1", "Host: a", "Content-Length:\t5", "Transfer-Encoding:\tchunked"), err: ErrLengthAndChunked, status: 400},
		{name: "cl and te gzip", in: req("POST / HTTP/1.1", "Host: a", "Content-Length: 5", "Transfer-Encoding: gzip"), err: ErrLengthAndChunked, status: 400},
		{name: "te space before colon", in: req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding : chunked"), err: ErrBadHeaderName, status: 400},
		{name: "te gzip chunked", in: req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip, chunked"), err: ErrUnsupportedCoding, status: 501},
		{name: "te identity", in: req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: identity"), err: ErrUnsupportedCoding, status: 501},
		{name: "te gzip", in: req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip"), err: ErrUnsupportedCoding, status: 501},
		{name: "te chunked chunked", in: req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked, chunked"), err: ErrBadTransferEncoding, status: 400},
		{name: "te chunked gzip", in: req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked, gzip"), err: ErrBadTransferEncoding, status: 400},
		{name: "te chunked with params", in: req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked;q=1"), err: ErrBadTransferEncoding, status: 400},
		{name: "te two lines", in: req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), err: ErrBadTransferEncoding, status: 400},
		{name: "te two lines gzip", in: req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip", "Transfer-Encoding: chunked"), err: ErrBadTransferEncoding, status: 400},
		{name: "te empty", in: req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding:"), err: ErrBadTransferEncoding, status: 400},
		{name: "te garbage", in: req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: \"chunked\""), err: ErrBadTransferEncoding, status: 400},
		{name: "te xchunked", in: req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: xchunked"), err: ErrUnsupportedCoding, status: 501},
		{name: "te in http/1.0", in: req("POST / HTTP/1.0", "Transfer-Encoding: chunked"), err: ErrBadTransferEncoding, status: 400},
		{name: "cl conflicting", in: req("POST / HTTP/1.1", "Host: a", "Content-Length: 10", "Content-Length: 20"), err: ErrConflictingLength, status: 400},
		{name: "cl list", in: req("POST / HTTP/1.1", "Host: a", "Content-Length: 5, 5"), err: ErrBadContentLength, status: 400},
		{name: "cl negative", in: req("POST / HTTP/1.1", "Host: a", "Content-Length: -1"), err: ErrBadContentLength, status: 400},
		{name: "cl plus", in: req("POST / HTTP/1.1", "Host: a", "Content-Length: +5"), err: ErrBadContentLength, status: 400},
		{name: "cl hex", in: req("POST / HTTP/1.1", "Host: a", "Content-Length: 0x10"), err: ErrBadContentLength, status: 400},
		{name: "cl 2^63", in: req("POST / HTTP/1.1", "Host: a", "Content-Length: 9223372036854775808"), err: ErrBadContentLength, status: 400},
		{name: "cl huge", in: req("POST / HTTP/1.1", "Host: a", "Content-Length: 99999999999999999999999999"), err: ErrBadContentLength, status: 400},
		{name: "cl empty", in: req("POST / HTTP/1.1", "Host: a", "Content-Length:"), err: ErrBadContentLength, status: 400},
		{name: "cl inner space", in: req("POST / HTTP/1.1", "Host: a", "Content-Length: 1 0"), err: ErrBadContentLength, status: 400},

		// Field syntax (row 6).
		{name: "name with space", in: req("GET / HTTP/1.1", "Host: a", "Bad Name: x"), err: ErrBadHeaderName, status: 400},
		{name: "space before colon", in: req("GET / HTTP/1.1", "Host : a"), err: ErrBadHeaderName, status: 400},
		{name: "name with NUL", in: req("GET / HTTP/1.1", "Host: a", "X\x00Y: x"), err: ErrBadHeaderName, status: 400},
		{name: "name non-tchar", in: req("GET / HTTP/1.1", "Host: a", "X(Y): x"), err: ErrBadHeaderName, status: 400},
		{name: "name non-ascii", in: req("GET / HTTP/1.1", "Host: a", "X\xc3\xa9: x"), err: ErrBadHeaderName, status: 400},
		{name: "empty name", in: req("GET / HTTP/1.1", "Host: a", ": x"), err: ErrBadHeaderName, status: 400},
		{name: "no colon", in: req("GET / HTTP/1.1", "Host: a", "X"), err: ErrBadHeaderName, status: 400},
		{name: "value NUL", in: req("GET / HTTP/1.1", "Host: a", "X: a\x00b"), err: ErrBadHeaderValue, status: 400},
		{name: "value bare CR", in: req("GET / HTTP/1.1", "Host: a", "X: a\rb"), err: ErrBareCR, status: 400},
		{name: "value bare LF", in: "GET / HTTP/1.1\r\nHost: a\r\nX: a\nb\r\n\r\n", err: ErrBareLF, status: 400},
		{name: "value CTL", in: req("GET / HTTP/1.1", "Host: a", "X: a\x01b"), err: ErrBadHeaderValue, status: 400},
		{name: "value DEL", in: req("GET / HTTP/1.1", "Host: a", "X: a\x7fb"), err: ErrBadHeaderValue, status: 400},
		{name: "obs-fold", in: req("GET / HTTP/1.1", "Host: a", "X: a", " b"), err: ErrObsFold, status: 400},
		{name: "obs-fold tab", in: req("GET / HTTP/1.1", "Host: a", "X: a", "\tb"), err: ErrObsFold, status: 400},
		{name: "whitespace after request line", in: req("GET / HTTP/1.1", " Host: a"), err: ErrObsFold, status: 400},
		{name: "bad connection token", in: req("GET / HTTP/1.1", "Host: a", "Connection: a b"), err: ErrBadHeaderValue, status: 400},
		{name: "bare LF head", in: "GET / HTTP/1.1\nHost: a\n\n", err: ErrBareLF, status: 400},
		{name: "bare LF after fields", in: "GET / HTTP/1.1\r\nHost: a\r\n\n", err: ErrBareLF, status: 400},
		{name: "bare LF field line end", in: "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", err: ErrBareLF, status: 400},
		{name: "leading bare LF", in: "\n" + req("GET / HTTP/1.1", "Host: a"), err: ErrBareLF, status: 400},

		// Host.
		{name: "missing host", in: req("GET / HTTP/1.1", "X: a"), err: ErrMissingHost, status: 400},
		{name: "duplicate host", in: req("GET / HTTP/1.1", "Host: a", "Host: a"), err: ErrDuplicateHost, status: 400},
		{name: "duplicate host differing", in: req("GET / HTTP/1.1", "Host: a", "host: b"), err: ErrDuplicateHost, status: 400},
		{name: "host with userinfo", in: req("GET / HTTP/1.1", "Host: u@a"), err: ErrBadHost, status: 400},
		{name: "host with slash", in: req("GET / HTTP/1.1", "Host: a/b"), err: ErrBadHost, status: 400},
		{name: "host with space", in: req("GET / HTTP/1.1", "Host: a b"), err: ErrBadHost, status: 400},

		// Request line.
		{name: "bad method", in: req("G(T / HTTP/1.1", "Host: a"), err: ErrBadMethod, status: 400},
		{name: "empty method", in: req(" / HTTP/1.1", "Host: a"), err: ErrBadMethod, status: 400},
		{name: "double space", in: req("GET  / HTTP/1.1", "Host: a"), err: ErrBadRequestLine, status: 400},
		{name: "tab separator", in: req("GET\t/ HTTP/1.1", "Host: a"), err: ErrBadMethod, status: 400},
		{name: "trailing space", in: req("GET / HTTP/1.1 ", "Host: a"), err: ErrBadVersion, status: 400},
		{name: "missing version", in: req("GET /", "Host: a"), err: ErrBadRequestLine, status: 400},
		{name: "method only", in: req("GET", "Host: a"), err: ErrBadRequestLine, status: 400},
		{name: "connect empty port", in: req("CONNECT a: HTTP/1.1", "Host: a"), err: ErrBadTarget, status: 400},
		{name: "connect empty host", in: req("CONNECT :443 HTTP/1.1", "Host: a"), err: ErrBadTarget, status: 400},
		{name: "connect bad port", in: req("CONNECT a:44x HTTP/1.1", "Host: a"), err: ErrBadTarget, status: 400},
		{name: "empty line with bare CR", in: "GET / HTTP/1.1\r\nHost: a\r\n\rX\r\n\r\n", err: ErrBareCR, status: 400},
		{name: "lowercase version", in: req("GET / http/1.1", "Host: a"), err: ErrBadVersion, status: 400},
		{name: "version garbage", in: req("GET / HTTP/1.x", "Host: a"), err: ErrBadVersion, status: 400},
		{name: "version 2", in: req("GET / HTTP/2.0", "Host: a"), err: ErrVersionNotSupported, status: 505},
		{name: "h2 preface", in: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", err: ErrVersionNotSupported, status: 505},
		{name: "version 0.9", in: req("GET / HTTP/0.9", "Host: a"), err: ErrVersionNotSupported, status: 505},
		{name: "target with fragment", in: req("GET /a#b HTTP/1.1", "Host: a"), err: ErrBadTarget, status: 400},
		{name: "target with NUL", in: req("GET /a\x00b HTTP/1.1", "Host: a"), err: ErrBadTarget, status: 400},
		{name: "target non-ascii", in: req("GET /caf\xc3\xa9 HTTP/1.1", "Host: a"), err: ErrBadTarget, status: 400},
		{name: "target relative", in: req("GET a/b HTTP/1.1", "Host: a"), err: ErrBadTarget, status: 400},
		{name: "star not options", in: req("GET * HTTP/1.1", "Host: a"), err: ErrBadTarget, status: 400},
		{name: "connect origin form", in: req("CONNECT /x HTTP/1.1", "Host: a"), err: ErrBadTarget, status: 400},
		{name: "connect no port", in: req("CONNECT example.com HTTP/1.1", "Host: a"), err: ErrBadTarget, status: 400},
		{name: "absolute form userinfo", in: req("GET http://u:p@a/ HTTP/1.1", "Host: a"), err: ErrBadTarget, status: 400},
		{name: "absolute form empty authority", in: req("GET http:///x HTTP/1.1", "Host: a"), err: ErrBadTarget, status: 400},
		{name: "absolute form bad scheme", in: req("GET 1http://a/ HTTP/1.1", "Host: a"), err: ErrBadTarget, status: 400},
		{name: "tls client hello", in: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", err: ErrBadMethod, status: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h RequestHead
			n, err := ParseRequestHead([]byte(tc.in+"TRAILING"), Limits{}, &h)
			if tc.err != nil {
				wantErr(t, err, tc.err)
				if StatusCode(err) != tc.status || n != 0 {
					t.Fatalf("status %d n %d; want %d 0", StatusCode(err), n, tc.status)
				}
				return
			}
			if err != nil || n != len(tc.in) {
				t.Fatalf("n, err = %d, %v; want %d, nil", n, err, len(tc.in))
			}
			if tc.check != nil {
				tc.check(t, &h)
			}
		})
	}
}

func TestParseResponseHead(t *testing.T) {
	for _, tc := range []struct {
		name       string
		in         string
		head, conn bool
		err        *Error
		status     int
		body       Body
		cl         int64
		keepAlive  bool
		upgrade    bool
	}{
		{name: "typical", in: typicalResponse, body: BodyLength, cl: 1024, keepAlive: true},
		{name: "chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", body: BodyChunked, cl: -1, keepAlive: true},
		{name: "close delimited", in: "HTTP/1.1 200 OK\r\nX: y\r\n\r\n", body: BodyClose, cl: -1},
		{name: "http/1.0 keep-alive with length", in: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", body: BodyLength, cl: 1, keepAlive: true},
		{name: "http/1.0 default close", in: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", body: BodyLength, cl: 1},
		{name: "connection close", in: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", body: BodyLength, cl: 1},
		{name: "204 no body", in: "HTTP/1.1 204 No Content\r\n\r\n", body: BodyNone, cl: -1, keepAlive: true},
		{name: "304 with length", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", body: BodyNone, cl: 100, keepAlive: true},
		{name: "100 continue", in: "HTTP/1.1 100 Continue\r\n\r\n", body: BodyNone, cl: -1, keepAlive: true},
		{name: "103 early hints", in: "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n", body: BodyNone, cl: -1, keepAlive: true},
		{name: "101 switching", in: "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", body: BodyNone, cl: -1, keepAlive: true, upgrade: true},
		{name: "head response", in: "HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", head: true, body: BodyNone, cl: 500, keepAlive: true},
		{name: "head response chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", head: true, body: BodyNone, cl: -1, keepAlive: true},
		{name: "connect 200", in: "HTTP/1.1 200 Connection Established\r\n\r\n", conn: true, body: BodyNone, cl: -1, keepAlive: true, upgrade: true},
		{name: "connect 407", in: "HTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\n", conn: true, body: BodyNone, cl: 0, keepAlive: true},
		{name: "no reason", in: "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", body: BodyNone, cl: 0, keepAlive: true},
		{name: "no reason no space", in: "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", body: BodyNone, cl: 0, keepAlive: true},
		{name: "zero length", in: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", body: BodyNone, cl: 0, keepAlive: true},

		{name: "cl and te", in: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", err: ErrLengthAndChunked, status: 400},
		{name: "te gzip", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", err: ErrUnsupportedCoding, status: 501},
		{name: "te in 1.0", in: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", err: ErrBadTransferEncoding, status: 400},
		{name: "conflicting cl", in: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", err: ErrConflictingLength, status: 400},
		{name: "status 99", in: "HTTP/1.1 099 X\r\n\r\n", err: ErrBadStatusLine, status: 400},
		{name: "status 600", in: "HTTP/1.1 600 X\r\n\r\n", err: ErrBadStatusLine, status: 400},
		{name: "status short", in: "HTTP/1.1 20 X\r\n\r\n", err: ErrBadStatusLine, status: 400},
		{name: "status 4 digits", in: "HTTP/1.1 2000 X\r\n\r\n", err: ErrBadStatusLine, status: 400},
		{name: "bad version", in: "HTTX/1.1 200 OK\r\n\r\n", err: ErrBadVersion, status: 400},
		{name: "version 2", in: "HTTP/2.0 200 OK\r\n\r\n", err: ErrVersionNotSupported, status: 505},
		{name: "reason with NUL", in: "HTTP/1.1 200 O\x00K\r\n\r\n", err: ErrBadStatusLine, status: 400},
		{name: "bare LF", in: "HTTP/1.1 200 OK\nContent-Length: 0\n\n", err: ErrBareLF, status: 400},
		{name: "obs-fold", in: "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", err: ErrObsFold, status: 400},
		{name: "leading empty line", in: "\r\nHTTP/1.1 200 OK\r\n\r\n", err: ErrBadStatusLine, status: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := ResponseHead{HeadRequest: tc.head, ConnectRequest: tc.conn}
			n, err := ParseResponseHead([]byte(tc.in+"BODY"), Limits{}, &h)
			if tc.err != nil {
				wantErr(t, err, tc.err)
				if StatusCode(err) != tc.status {
					t.Fatalf("status %d; want %d", StatusCode(err), tc.status)
				}
				return
			}
			if err != nil || n != len(tc.in) {
				t.Fatalf("n, err = %d, %v; want %d, nil", n, err, len(tc.in))
			}
			if h.Body != tc.body || h.ContentLength != tc.cl || h.KeepAlive != tc.keepAlive || h.Upgrade != tc.upgrade {
				t.Fatalf("body %d cl %d keepalive %v upgrade %v; want %d %d %v %v", h.Body, h.ContentLength, h.KeepAlive, h.Upgrade, tc.body, tc.cl, tc.keepAlive, tc.upgrade)
			}
			if h.HeadRequest != tc.head || h.ConnectRequest != tc.conn {
				t.Fatal("inputs changed")
			}
		})
	}
}

func TestResponseStatusAndReason(t *testing.T) {
	var h ResponseHead
	if _, err := ParseResponseHead([]byte("HTTP/1.0 404 Not  Found\r\n\r\n"), Limits{}, &h); err != nil {
		t.Fatal(err)
	}
	if h.Status != 404 || string(h.Reason) != "Not  Found" || h.ProtoMinor != 0 {
		t.Fatalf("%d %q %d", h.Status, h.Reason, h.ProtoMinor)
	}
}

func TestPipelinedHeads(t *testing.T) {
	a := req("POST /a HTTP/1.1", "Host: a", "Content-Length: 3")
	b := req("GET /b HTTP/1.1", "Host: b")
	c := req("GET /c HTTP/1.1", "Host: c", "Connection: close")
	buf := []byte(a + "xyz" + b + c)
	var h RequestHead
	n, err := ParseRequestHead(buf, Limits{}, &h)
	if err != nil || n != len(a) || string(h.Target) != "/a" || h.ContentLength != 3 {
		t.Fatalf("first: %d %v %q", n, err, h.Target)
	}
	buf = buf[n+int(h.ContentLength):]
	n, err = ParseRequestHead(buf, Limits{}, &h)
	if err != nil || n != len(b) || string(h.Target) != "/b" || !h.KeepAlive || h.ContentLength != -1 {
		t.Fatalf("second: %d %v %q", n, err, h.Target)
	}
	buf = buf[n:]
	n, err = ParseRequestHead(buf, Limits{}, &h)
	if err != nil || n != len(c) || string(h.Target) != "/c" || h.KeepAlive || string(h.Host) != "c" {
		t.Fatalf("third: %d %v %q", n, err, h.Target)
	}

	// Responses back to back.
	r1 := "HTTP/1.1 100 Continue\r\n\r\n"
	r2 := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
	rb := []byte(r1 + r2 + "ok")
	var rh ResponseHead
	n, err = ParseResponseHead(rb, Limits{}, &rh)
	if err != nil || n != len(r1) || rh.Status != 100 {
		t.Fatalf("interim: %d %v %d", n, err, rh.Status)
	}
	n, err = ParseResponseHead(rb[n:], Limits{}, &rh)
	if err != nil || n != len(r2) || rh.Status != 200 || rh.ContentLength != 2 {
		t.Fatalf("final: %d %v %d", n, err, rh.Status)
	}
}

// TestSplitEveryOffset feeds every prefix of a head: need more until the head is
// complete, then the same result as parsing it whole.
func TestSplitEveryOffset(t *testing.T) {
	for _, in := range []string{
		typicalRequest,
		"\r\n" + req("POST http://a:1/x HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Expect: 100-continue"),
		req("GET / HTTP/1.0"),
		req("OPTIONS * HTTP/1.1", "Host: a", "X:"),
		req("GET / HTTP/1.1", "Host: a", "X-Big: "+strings.Repeat("b", 5000), "X-After: \tc"), // above directParseMax
	} {
		var whole RequestHead
		wn, err := ParseRequestHead([]byte(in), Limits{}, &whole)
		if err != nil || wn != len(in) {
			t.Fatalf("whole: %d %v", wn, err)
		}
		for k := 0; k < len(in); k++ {
			var h RequestHead
			n, err := ParseRequestHead([]byte(in[:k]), Limits{}, &h)
			if n != 0 || err != nil {
				t.Fatalf("prefix %d of %q: n %d err %v; want need more", k, in, n, err)
			}
		}
		var h RequestHead
		n, err := ParseRequestHead([]byte(in+"GET"), Limits{}, &h)
		if n != wn || err != nil || !sameRequest(&h, &whole) {
			t.Fatalf("with extra bytes: %d %v", n, err)
		}
	}
	for _, in := range []string{typicalResponse, "HTTP/1.1 204 \r\n\r\n", "HTTP/1.0 200\r\n\r\n",
		"HTTP/1.1 200 OK\r\nSet-Cookie: " + strings.Repeat("c", 5000) + "\r\n\r\n"} {
		var whole ResponseHead
		wn, err := ParseResponseHead([]byte(in), Limits{}, &whole)
		if err != nil || wn != len(in) {
			t.Fatalf("whole: %d %v", wn, err)
		}
		for k := 0; k < len(in); k++ {
			var h ResponseHead
			if n, err := ParseResponseHead([]byte(in[:k]), Limits{}, &h); n != 0 || err != nil {
				t.Fatalf("prefix %d of %q: n %d err %v; want need more", k, in, n, err)
			}
		}
	}
}

// TestEarlyErrors checks that an incomplete head fails as soon as its received bytes
// show the error, without waiting for the rest.
func TestEarlyErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		err  *Error
	}{
		{"tls", "\x16\x03\x01\x02\x00", ErrBadMethod},
		{"space first", " GET", ErrBadMethod},
		{"bad target prefix", "GET /a\x00", ErrBadTarget},
		{"bad request line", "GET / HTTP/1.1 x\r\n", ErrBadVersion},
		{"bare LF request line", "GET / HTTP/1.1\n", ErrBareLF},
		{"bare LF field", "GET / HTTP/1.1\r\nHost: a\n", ErrBareLF},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\n b", ErrObsFold},
		{"too many", "GET / HTTP/1.1\r\n" + strings.Repeat("X: y\r\n", 101), ErrTooManyHeaders},
		{"long line", "GET /" + strings.Repeat("a", 9000), ErrRequestLineTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h RequestHead
			_, err := ParseRequestHead([]byte(tc.in), Limits{}, &h)
			wantErr(t, err, tc.err)
		})
	}
	var r ResponseHead
	_, err := ParseResponseHead([]byte("SSH-2.0"), Limits{}, &r)
	wantErr(t, err, ErrBadVersion)

	// Above directParseMax an incomplete head is checked line by line, not parsed.
	big := "X-Big: " + strings.Repeat("b", directParseMax) + "\r\n"
	for _, tc := range []struct {
		name string
		in   string
		err  *Error
	}{
		{"bad request line", "GET / HTTP/1.1 x\r\n" + big, ErrBadVersion},
		{"bare LF request line", "GET / HTTP/1.1\n" + big, ErrBareLF},
		{"bare LF field", "GET / HTTP/1.1\r\n" + big + "A: b\nc", ErrBareLF},
		{"obs-fold", "GET / HTTP/1.1\r\n" + big + " c\r\n", ErrObsFold},
		{"obs-fold partial", "GET / HTTP/1.1\r\n" + big + " c", ErrObsFold},
		{"long request line", "GET /" + strings.Repeat("a", DefaultMaxRequestLine) + " HTTP/1.1\r\n" + big, ErrRequestLineTooLong},
		{"too many", "GET / HTTP/1.1\r\n" + big + strings.Repeat("X: y\r\n", 100), ErrTooManyHeaders},
	} {
		t.Run("large "+tc.name, func(t *testing.T) {
			var h RequestHead
			_, err := ParseRequestHead([]byte(tc.in), Limits{}, &h)
			wantErr(t, err, tc.err)
		})
	}
	if n, err := ParseRequestHead([]byte("GET / HTTP/1.1\r\n"+big), Limits{}, &h0); n != 0 || err != nil {
		t.Fatalf("large valid prefix: %d %v", n, err)
	}
	_, err = ParseResponseHead([]byte("HTTP/1.1 200 "+strings.Repeat("r", DefaultMaxRequestLine)+"\r\n\r\n"), Limits{}, &r)
	wantErr(t, err, ErrRequestLineTooLong)
}

var h0 RequestHead

func TestLimits(t *testing.T) {
	line := func(n int) string { // a request line of exactly n bytes
		return "GET /" + strings.Repeat("a", n-len("GET / HTTP/1.1")) + " HTTP/1.1"
	}
	parse := func(in string, lim Limits) error {
		var h RequestHead
		n, err := ParseRequestHead([]byte(in), lim, &h)
		if err == nil && n != len(in) {
			return errors.New("need more")
		}
		return err
	}
	// Request line (row 7): just under, at, over; complete and incomplete.
	if err := parse(req(line(DefaultMaxRequestLine), "Host: a"), Limits{}); err != nil {
		t.Fatalf("line at limit: %v", err)
	}
	wantErr(t, parse(req(line(DefaultMaxRequestLine+1), "Host: a"), Limits{}), ErrRequestLineTooLong)
	wantErr(t, parse(line(DefaultMaxRequestLine+1), Limits{}), ErrRequestLineTooLong)
	wantErr(t, parse("GET /"+strings.Repeat("a", 100<<10), Limits{}), ErrRequestLineTooLong)
	if err := parse(req(line(100), "Host: a"), Limits{MaxRequestLine: 100}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, parse(req(line(101), "Host: a"), Limits{MaxRequestLine: 100}), ErrRequestLineTooLong)

	// Header count (row 8).
	fields := func(n int) []string {
		f := []string{"Host: a"}
		for i := 1; i < n; i++ {
			f = append(f, "X-H: v")
		}
		return f
	}
	if err := parse(req("GET / HTTP/1.1", fields(100)...), Limits{}); err != nil {
		t.Fatalf("100 fields: %v", err)
	}
	wantErr(t, parse(req("GET / HTTP/1.1", fields(101)...), Limits{}), ErrTooManyHeaders)
	wantErr(t, parse(req("GET / HTTP/1.1", fields(6)...), Limits{MaxHeaders: 5}), ErrTooManyHeaders)

	// Head size: exactly at the limit passes, one byte over fails, complete or not.
	head := func(size int) string {
		base := req("GET / HTTP/1.1", "Host: a", "X: ")
		return req("GET / HTTP/1.1", "Host: a", "X: "+strings.Repeat("v", size-len(base)))
	}
	for _, lim := range []int{DefaultMaxHeaderBytes, 64 << 10, 1000} {
		l := Limits{MaxHeaderBytes: lim}
		if err := parse(head(lim), l); err != nil {
			t.Fatalf("head of %d at limit: %v", lim, err)
		}
		if err := parse(head(lim-1), l); err != nil {
			t.Fatalf("head of %d under limit: %v", lim-1, err)
		}
		wantErr(t, parse(head(lim+1), l), ErrHeadTooLarge)
		// Unterminated and already over: fails without waiting.
		wantErr(t, parse(head(lim + 1)[:lim+1], l), ErrHeadTooLarge)
		if err := parse(head(lim + 1)[:lim-1], l); err == nil || err.Error() != "need more" {
			t.Fatalf("unterminated under limit: %v", err)
		}
	}
	// One 80 KiB field.
	wantErr(t, parse(req("GET / HTTP/1.1", "Host: a", "X: "+strings.Repeat("v", 80<<10)), Limits{}), ErrHeadTooLarge)
	// Endless empty lines before the request line are bounded too.
	wantErr(t, parse(strings.Repeat("\r\n", DefaultMaxHeaderBytes/2), Limits{}), ErrHeadTooLarge)

	// Body limit (row 9) at header time.
	lim := Limits{MaxBodyBytes: 100}
	if err := parse(req("POST / HTTP/1.1", "Host: a", "Content-Length: 100"), lim); err != nil {
		t.Fatal(err)
	}
	wantErr(t, parse(req("POST / HTTP/1.1", "Host: a", "Content-Length: 101"), lim), ErrBodyTooLarge)
	var rh ResponseHead
	_, err := ParseResponseHead([]byte("HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n"), lim, &rh)
	wantErr(t, err, ErrBodyTooLarge)
}

func TestHeadersReused(t *testing.T) {
	var h RequestHead
	in := []byte(typicalRequest)
	if _, err := ParseRequestHead(in, Limits{}, &h); err != nil {
		t.Fatal(err)
	}
	p := &h.Headers[0]
	if _, err := ParseRequestHead([]byte(req("GET / HTTP/1.1", "Host: b")), Limits{}, &h); err != nil {
		t.Fatal(err)
	}
	if &h.Headers[0] != p || len(h.Headers) != 1 || string(h.Host) != "b" {
		t.Fatal("headers slice not reused or stale")
	}
	// Slices are capped: appending to one cannot overwrite the input.
	if cap(h.Headers[0].Value) != len(h.Headers[0].Value) || cap(h.Method) != len(h.Method) {
		t.Fatal("slices not capped")
	}
}

func TestParseAllocs(t *testing.T) {
	in := []byte(typicalRequest)
	var h RequestHead
	var r ResponseHead
	rin := []byte(typicalResponse)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ParseRequestHead(in, Limits{}, &h); err != nil {
			t.Fatal(err)
		}
		if _, err := ParseResponseHead(rin, Limits{}, &r); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per parse", allocs)
	}
}

func sameRequest(a, b *RequestHead) bool {
	if !bytes.Equal(a.Method, b.Method) || !bytes.Equal(a.Target, b.Target) || !bytes.Equal(a.Host, b.Host) ||
		a.ProtoMinor != b.ProtoMinor || a.ContentLength != b.ContentLength || a.Chunked != b.Chunked ||
		a.KeepAlive != b.KeepAlive || a.Expect100 != b.Expect100 || a.Upgrade != b.Upgrade || len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if !bytes.Equal(a.Headers[i].Name, b.Headers[i].Name) || !bytes.Equal(a.Headers[i].Value, b.Headers[i].Value) {
			return false
		}
	}
	return true
}

// TestScanValue compares the word-at-a-time scan with a byte loop on every control byte
// at every position.
func TestScanValue(t *testing.T) {
	slow := func(p []byte, i int) int {
		for i < len(p) && vchar[p[i]] {
			i++
		}
		return i
	}
	for _, c := range []byte{0, 1, '\t', '\n', '\r', 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0xff} {
		for n := 0; n < 20; n++ {
			for pos := 0; pos < n; pos++ {
				p := bytes.Repeat([]byte{'a'}, n)
				p[pos] = c
				for start := 0; start <= n; start++ {
					if got, want := scanValue(p, start), slow(p, start); got != want {
						t.Fatalf("byte %#x at %d of %d from %d: %d; want %d", c, pos, n, start, got, want)
					}
				}
			}
		}
	}
	p := []byte("ab\x80\x7f\x20\x1f\x00\t\tzz\x7fc\x01\r\n")
	for start := range p {
		if got, want := scanValue(p, start), slow(p, start); got != want {
			t.Fatalf("mixed from %d: %d; want %d", start, got, want)
		}
	}
}

func TestNeedMoreAllocs(t *testing.T) {
	small := []byte(typicalRequest[:len(typicalRequest)-3])
	large := []byte(req("GET / HTTP/1.1", "Host: a", "X: "+strings.Repeat("v", 3*directParseMax))[:2*directParseMax])
	var h RequestHead
	if _, err := ParseRequestHead([]byte(typicalRequest), Limits{}, &h); err != nil {
		t.Fatal(err)
	}
	n := testing.AllocsPerRun(50, func() {
		for _, b := range [][]byte{small, large} {
			if n, err := ParseRequestHead(b, Limits{}, &h); n != 0 || err != nil {
				t.Fatal(n, err)
			}
		}
		_ = StatusCode(ErrBareLF)
	})
	if n != 0 {
		t.Fatalf("%v allocs", n)
	}
}

// TestNeedMoreKeepsHeaderStorage: a head that arrives in pieces must not lose the reused
// Headers backing array on the need-more returns, or every trickled head allocates.
func TestNeedMoreKeepsHeaderStorage(t *testing.T) {
	full := []byte("GET /a HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n")
	var h RequestHead
	if n, err := ParseRequestHead(full, Limits{}, &h); n == 0 || err != nil {
		t.Fatalf("warm-up parse = %d, %v", n, err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, cut := range []int{5, 20, 30} {
			if n, err := ParseRequestHead(full[:cut], Limits{}, &h); n != 0 || err != nil {
				t.Fatalf("partial parse = %d, %v", n, err)
			}
		}
		if n, err := ParseRequestHead(full, Limits{}, &h); n == 0 || err != nil {
			t.Fatalf("parse = %d, %v", n, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("need-more then parse allocates %v times; want 0", allocs)
	}
	var r ResponseHead
	resp := []byte("HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 0\r\n\r\n")
	ParseResponseHead(resp, Limits{}, &r)
	allocs = testing.AllocsPerRun(100, func() {
		ParseResponseHead(resp[:10], Limits{}, &r)
		if n, err := ParseResponseHead(resp, Limits{}, &r); n == 0 || err != nil {
			t.Fatalf("response parse = %d, %v", n, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("response need-more then parse allocates %v times; want 0", allocs)
	}
}

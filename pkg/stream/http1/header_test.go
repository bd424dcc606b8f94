package http1

import (
	"errors"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

func TestHeadersLookup(t *testing.T) {
	hs := Headers{
		{Name: []byte("Content-Type"), Value: []byte("text/plain")},
		{Name: []byte("X-A"), Value: []byte("1")},
		{Name: []byte("x-a"), Value: []byte("2")},
		{Name: []byte("Connection"), Value: []byte("keep-alive, Upgrade")},
		{Name: []byte("connection"), Value: []byte(" , close ,")},
	}
	if v, ok := hs.Get("content-TYPE"); !ok || string(v) != "text/plain" {
		t.Fatalf("Get = %q %v", v, ok)
	}
	if _, ok := hs.Get("content-typ"); ok || hs.Has("X-B") || !hs.Has("X-a") {
		t.Fatal("Get/Has of absent")
	}
	var vals []string
	for i := hs.Index("X-A", 0); i >= 0; i = hs.Index("X-A", i+1) {
		vals = append(vals, string(hs[i].Value))
	}
	if len(vals) != 2 || vals[0] != "1" || vals[1] != "2" {
		t.Fatalf("Index iteration %v", vals)
	}
	for tok, want := range map[string]bool{"upgrade": true, "CLOSE": true, "keep-alive": true, "keep": false, "": false} {
		if hs.HasToken("connection", tok) != want {
			t.Errorf("HasToken(%q) != %v", tok, want)
		}
	}
	if !EqualFold([]byte("Content-Length"), "content-length") || EqualFold([]byte("Content-Lengtx"), "content-length") ||
		EqualFold([]byte("a"), "ab") || EqualFold([]byte("\xc1"), "\xe1") {
		t.Fatal("EqualFold")
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = hs.Get("connection"); _ = hs.HasToken("Connection", "close") }); n != 0 {
		t.Fatalf("lookup allocates %v", n)
	}
}

func serializeRequest(t *testing.T, in string, e *Edits) string {
	t.Helper()
	var h RequestHead
	if _, err := ParseRequestHead([]byte(in), Limits{}, &h); err != nil {
		t.Fatalf("parse %q: %v", in, err)
	}
	var b buffer.IoBuffer
	if err := AppendRequestHead(&b, &h, e); err != nil {
		t.Fatalf("AppendRequestHead: %v", err)
	}
	return string(b.Bytes())
}

func TestAppendRequestHead(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		e    *Edits
		want string
	}{
		{
			name: "hop-by-hop removed",
			in: req("GET /x?y HTTP/1.1", "Host: a", "Connection: keep-alive, X-Hop, te", "Keep-Alive: timeout=5",
				"Proxy-Connection: keep-alive", "X-Hop: 1", "TE: trailers, deflate", "Upgrade: websocket", "Accept: */*", "x-hop: 2"),
			want: req("GET /x?y HTTP/1.1", "Host: a", "TE: trailers", "Accept: */*", "Connection: te"),
		},
		{
			name: "te with close",
			in:   req("GET / HTTP/1.1", "Host: a", "TE: trailers", "Connection: TE"),
			e:    &Edits{Connection: ConnClose},
			want: req("GET / HTTP/1.1", "Host: a", "TE: trailers", "Connection: close, te"),
		},
		{
			name: "te without trailers dropped",
			in:   req("GET / HTTP/1.1", "Host: a", "TE: gzip"),
			want: req("GET / HTTP/1.1", "Host: a"),
		},
		{
			name: "content length rewritten once",
			in:   req("POST / HTTP/1.1", "Content-Length: 005", "Host: a", "X: y", "Content-Length: 5"),
			want: req("POST / HTTP/1.1", "Host: a", "X: y", "Content-Length: 5"),
		},
		{
			name: "chunked kept",
			in:   req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "X: y"),
			want: req("POST / HTTP/1.1", "Host: a", "X: y", "Transfer-Encoding: chunked"),
		},
		{
			name: "chunked to length",
			in:   req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"),
			e:    &Edits{Framing: FramingLength, ContentLength: 42},
			want: req("POST / HTTP/1.1", "Host: a", "Content-Length: 42"),
		},
		{
			name: "length to chunked",
			in:   req("POST / HTTP/1.1", "Host: a", "Content-Length: 3"),
			e:    &Edits{Framing: FramingChunked},
			want: req("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"),
		},
		{
			name: "framing none",
			in:   req("POST / HTTP/1.1", "Host: a", "Content-Length: 3"),
			e:    &Edits{Framing: FramingNone},
			want: req("POST / HTTP/1.1", "Host: a"),
		},
		{
			name: "http/1.0 forwarded as 1.1 with empty host",
			in:   req("GET / HTTP/1.0", "Connection: keep-alive", "A: b"),
			want: req("GET / HTTP/1.1", "Host: ", "A: b"),
		},
		{
			name: "absolute form to origin form",
			in:   req("GET http://up:81 HTTP/1.1", "Host: ignored", "A: b"),
			want: req("GET / HTTP/1.1", "Host: up:81", "A: b"),
		},
		{
			name: "absolute form query only",
			in:   req("GET http://up?q=1 HTTP/1.1", "Host: up"),
			want: req("GET /?q=1 HTTP/1.1", "Host: up"),
		},
		{
			name: "host first",
			in:   req("GET / HTTP/1.1", "A: b", "hOsT: x"),
			want: req("GET / HTTP/1.1", "Host: x", "A: b"),
		},
		{
			name: "edits",
			in:   req("GET /old HTTP/1.1", "Host: a", "X-Forwarded-For: 1.1.1.1", "X-Forwarded-For: 2.2.2.2", "X-Drop: 1"),
			e: &Edits{Target: []byte("/new?x"), Host: []byte("up:8080"), Connection: ConnClose, XForwardedFor: []byte("3.3.3.3"),
				RequestID: []byte("rid-1"), Remove: []string{"x-drop"}, Add: Headers{{Name: []byte("X-Added"), Value: []byte("v")}}},
			want: req("GET /new?x HTTP/1.1", "Host: up:8080", "X-Forwarded-For: 1.1.1.1", "X-Forwarded-For: 2.2.2.2, 3.3.3.3",
				"Connection: close", "X-Request-Id: rid-1", "X-Added: v"),
		},
		{
			name: "xff added, request id kept",
			in:   req("GET / HTTP/1.1", "Host: a", "x-request-id: abc"),
			e:    &Edits{XForwardedFor: []byte("10.0.0.1"), RequestID: []byte("new"), Connection: ConnKeepAlive},
			want: req("GET / HTTP/1.1", "Host: a", "x-request-id: abc", "Connection: keep-alive", "X-Forwarded-For: 10.0.0.1"),
		},
		{
			name: "xff empty value",
			in:   req("GET / HTTP/1.1", "Host: a", "X-Forwarded-For:"),
			e:    &Edits{XForwardedFor: []byte("10.0.0.1")},
			want: req("GET / HTTP/1.1", "Host: a", "X-Forwarded-For: 10.0.0.1"),
		},
		{
			name: "connection cannot hide the request id or xff",
			in:   req("GET / HTTP/1.1", "Host: a", "Connection: X-Request-Id, X-Forwarded-For", "X-Request-Id: spoof", "X-Forwarded-For: 6.6.6.6"),
			e:    &Edits{XForwardedFor: []byte("10.0.0.1"), RequestID: []byte("real")},
			want: req("GET / HTTP/1.1", "Host: a", "X-Forwarded-For: 10.0.0.1", "X-Request-Id: real"),
		},
		{
			name: "upgrade tunnelled",
			in:   req("GET /ws HTTP/1.1", "Host: a", "Connection: Upgrade, X-Other", "Upgrade: websocket", "X-Other: 1", "Sec-WebSocket-Key: k"),
			e:    &Edits{Upgrade: true},
			want: req("GET /ws HTTP/1.1", "Host: a", "Upgrade: websocket", "Sec-WebSocket-Key: k", "Connection: upgrade"),
		},
		{
			name: "upgrade not tunnelled",
			in:   req("GET /ws HTTP/1.1", "Host: a", "Connection: Upgrade", "Upgrade: websocket"),
			want: req("GET /ws HTTP/1.1", "Host: a"),
		},
		{
			name: "connect",
			in:   req("CONNECT a:443 HTTP/1.1", "Host: a:443"),
			want: req("CONNECT a:443 HTTP/1.1", "Host: a:443"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := serializeRequest(t, tc.in, tc.e); got != tc.want {
				t.Fatalf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestAppendResponseHead(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		head bool
		e    *Edits
		want string
	}{
		{
			name: "typical",
			in:   typicalResponse,
			want: "HTTP/1.1 200 OK\r\nDate: Mon, 27 Jul 2026 12:28:53 GMT\r\nServer: upstream/1.0\r\n" +
				"Content-Type: application/json; charset=utf-8\r\nCache-Control: no-cache, no-store, must-revalidate\r\n" +
				"Vary: Accept-Encoding\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n" +
				"X-Request-Id: 5f1b6c1e-5a0b-4d2c-9a7e-2f6d0c2b7a11\r\nContent-Length: 1024\r\n\r\n",
		},
		{
			name: "http/1.0 upstream, keep-alive client",
			in:   "HTTP/1.0 404 Not Found\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
			e:    &Edits{Connection: ConnKeepAlive},
			want: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
		},
		{
			name: "head response keeps length",
			in:   "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
			head: true,
			want: "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
		},
		{
			name: "close delimited re-chunked",
			in:   "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
			e:    &Edits{Framing: FramingChunked},
			want: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		},
		{
			name: "101 tunnel",
			in:   "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n",
			e:    &Edits{Upgrade: true},
			want: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\nConnection: upgrade\r\n\r\n",
		},
		{
			name: "empty reason",
			in:   "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
			want: "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := ResponseHead{HeadRequest: tc.head}
			if _, err := ParseResponseHead([]byte(tc.in), Limits{}, &h); err != nil {
				t.Fatal(err)
			}
			var b buffer.IoBuffer
			if err := AppendResponseHead(&b, &h, tc.e); err != nil {
				t.Fatal(err)
			}
			if got := string(b.Bytes()); got != tc.want {
				t.Fatalf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestAppendHeadBadEdits(t *testing.T) {
	var h RequestHead
	if _, err := ParseRequestHead([]byte(typicalRequest), Limits{}, &h); err != nil {
		t.Fatal(err)
	}
	for name, e := range map[string]*Edits{
		"target with space":   {Target: []byte("/a b")},
		"empty target":        {Target: []byte{}},
		"host with CRLF":      {Host: []byte("a\r\nX: y")},
		"xff with LF":         {XForwardedFor: []byte("1.1.1.1\nX: y")},
		"request id with NUL": {RequestID: []byte("a\x00")},
		"added name":          {Add: Headers{{Name: []byte("X Y"), Value: []byte("v")}}},
		"added value":         {Add: Headers{{Name: []byte("X"), Value: []byte("v\r\n")}}},
		"added value padded":  {Add: Headers{{Name: []byte("X"), Value: []byte(" v")}}},
		"negative length":     {Framing: FramingLength, ContentLength: -1},
		"framing":             {Framing: 9},
	} {
		var b buffer.IoBuffer
		if err := AppendRequestHead(&b, &h, e); !errors.Is(err, ErrBadEdit) || b.Len() != 0 {
			t.Errorf("%s: err %v, wrote %d bytes", name, err, b.Len())
		}
	}
	var b buffer.IoBuffer
	if err := AppendResponseHead(&b, &ResponseHead{Status: 42}, nil); !errors.Is(err, ErrBadEdit) {
		t.Errorf("status 42: %v", err)
	}
	if err := AppendResponseHead(&b, &ResponseHead{Status: 200, Reason: []byte("a\r\n")}, nil); !errors.Is(err, ErrBadEdit) {
		t.Errorf("reason: %v", err)
	}
}

func TestAppendHeadAllocs(t *testing.T) {
	var h RequestHead
	if _, err := ParseRequestHead([]byte(typicalRequest), Limits{}, &h); err != nil {
		t.Fatal(err)
	}
	var r ResponseHead
	if _, err := ParseResponseHead([]byte(typicalResponse), Limits{}, &r); err != nil {
		t.Fatal(err)
	}
	e := &Edits{XForwardedFor: []byte("10.1.2.3"), RequestID: []byte("id"), Connection: ConnClose,
		Remove: []string{"cookie"}, Add: Headers{{Name: []byte("X-Via"), Value: []byte("mosnlite")}}}
	pool := buffer.NewPool()
	dst := pool.NewBuffer(4096)
	defer dst.Release()
	n := testing.AllocsPerRun(100, func() {
		dst.Reset()
		if err := AppendRequestHead(dst, &h, e); err != nil {
			t.Fatal(err)
		}
		if err := AppendResponseHead(dst, &r, e); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("%v allocs per serialize", n)
	}
}

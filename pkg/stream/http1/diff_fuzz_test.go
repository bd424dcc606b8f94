package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

// Differential fuzzing of message framing against Go's net/http, an independent HTTP/1
// implementation. Request smuggling and response splitting need two parsers that end
// the same bytes in different places; these fuzzers look for exactly that:
//
//   - On the input: when mosnlite and net/http both take a whole message from it, they
//     must end it at the same byte with the same body. When net/http ends a message that
//     mosnlite still reads, or rejects one mosnlite accepts, the difference must be one
//     of the documented goStricter cases below.
//   - On what the proxy forwards: the head as AppendRequestHead/AppendResponseHead
//     writes it for the next hop, then the body bytes mosnlite's framing gives the
//     message (chunked framing is forwarded as received, as the proxy does). net/http
//     must read exactly that message: the same method, target, Host or status, the same
//     body, and nothing left over (a leftover would be a smuggled second message).
//
// mosnlite is stricter than net/http in many places (bare LF, obs-fold, whitespace
// before the colon, Transfer-Encoding with Content-Length or in HTTP/1.0, several Host
// lines, chunk-size lines with trailing whitespace, empty lines before a status line).
// That is never a desync: mosnlite rejects the message and closes the connection.

// FuzzRequestFramingDiff parses b as a request with mosnlite and net/http.
func FuzzRequestFramingDiff(f *testing.F) {
	for _, s := range diffRequestSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var h RequestHead
		n, err := ParseRequestHead(b, Limits{}, &h)
		lead := leadingCRLF(b)
		g := goReadRequest(b[lead:])
		g.end += lead
		switch {
		case err != nil:
			return // mosnlite rejects: nothing is forwarded
		case n == 0:
			if g.err == nil {
				t.Fatalf("net/http ends a request at %d where mosnlite still reads the head\n%q", g.end, b)
			}
			return
		}
		m := mosnBody(b, n, h.Headers, h.Body, h.ContentLength, false)
		if m.err != nil {
			return // a chunked body mosnlite rejects: the upstream connection is closed
		}
		compareOriginal(t, b, m, g, string(h.Method))
		checkForwardedRequest(t, b, &h, m)
	})
}

// FuzzResponseFramingDiff parses b as a response with mosnlite and net/http; method
// (0 GET, 1 HEAD, 2 CONNECT) is the request it answers.
func FuzzResponseFramingDiff(f *testing.F) {
	for _, s := range diffResponseSeeds() {
		for m := uint8(0); m < 3; m++ {
			f.Add([]byte(s), m)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, method uint8) {
		reqMethod := [...]string{"GET", "HEAD", "CONNECT"}[method%3]
		h := ResponseHead{HeadRequest: reqMethod == "HEAD", ConnectRequest: reqMethod == "CONNECT"}
		n, err := ParseResponseHead(b, Limits{}, &h)
		g := goReadResponse(b, reqMethod)
		switch {
		case err != nil:
			return
		case n == 0:
			if g.err == nil {
				t.Fatalf("net/http ends a response at %d where mosnlite still reads the head\n%q", g.end, b)
			}
			return
		}
		if h.Upgrade && h.Status != 101 {
			// A 2xx answer to CONNECT: the bytes after the head belong to the tunnel
			// (RFC 9112 §6.3 rule 2). http.ReadResponse does not know the rule (net/http's
			// Transport handles CONNECT before it reads a body), so only the heads are
			// compared.
			if g.head && g.status != h.Status {
				t.Fatalf("status %d, net/http %d\n%q", h.Status, g.status, b)
			}
			checkForwardedResponse(t, b, &h, reqMethod, mosnFrame{head: n, end: n, complete: true, hs: h.Headers})
			return
		}
		m := mosnBody(b, n, h.Headers, h.Body, h.ContentLength, true)
		if m.err != nil {
			return
		}
		compareOriginal(t, b, m, g, "")
		if g.head && g.status != h.Status {
			t.Fatalf("status %d, net/http %d\n%q", h.Status, g.status, b)
		}
		checkForwardedResponse(t, b, &h, reqMethod, m)
	})
}

// mosnFrame is where mosnlite's framing ends a message at the start of some bytes.
type mosnFrame struct {
	head     int    // head length
	end      int    // end of what the proxy forwards: the head and the body bytes taken
	complete bool   // the message ends at end (a close-delimited body ends at EOF)
	body     []byte // the body's content (chunk data decoded)
	err      error  // the chunked decoder rejects the body
	hs       Headers
	chunked  bool
}

// goStricter is goStricter for this message in b; it logs the difference it allows.
func (m *mosnFrame) goStricter(t *testing.T, b []byte, err error) string {
	t.Helper()
	why := goStricter(err, m.hs, b[m.head:m.end], m.chunked)
	if why != "" {
		t.Logf("allowed: net/http is stricter (%s): %v", why, err)
	}
	return why
}

// mosnBody frames the body after a head of n bytes as the proxy does.
func mosnBody(b []byte, n int, hs Headers, kind Body, cl int64, response bool) mosnFrame {
	m := mosnFrame{head: n, end: n, hs: hs, chunked: kind == BodyChunked}
	switch kind {
	case BodyNone:
		m.complete = true
	case BodyLength:
		if int64(len(b)-n) >= cl {
			m.end, m.complete = n+int(cl), true
		} else {
			m.end = len(b)
		}
		m.body = b[n:m.end]
	case BodyClose:
		if !response {
			panic("close-delimited request")
		}
		m.end, m.complete, m.body = len(b), true, b[n:]
	case BodyChunked:
		var cr ChunkedReader
		cr.Reset(Limits{})
		for {
			data, used, done, err := cr.Next(b[m.end:])
			if err != nil {
				m.err = err
				return m
			}
			m.body = append(m.body, data...)
			m.end += used
			if done {
				m.complete = true
				break
			}
			if used == 0 && len(data) == 0 {
				break // need more
			}
		}
	}
	return m
}

// goMessage is what net/http makes of some bytes.
type goMessage struct {
	err    error // from reading the head or the body
	head   bool  // the head was read (err is the body's)
	method string
	uri    string // request target as received
	host   string
	status int
	body   []byte
	end    int // bytes taken by the message, when err is nil
}

// goReader buffers all of b for net/http, so that no difference comes from the size of
// its bufio.Reader (a trailer section or a chunk-size line must fit in it).
func goReader(b []byte) (*bytes.Reader, *bufio.Reader) {
	r := bytes.NewReader(b)
	return r, bufio.NewReaderSize(r, len(b)+16)
}

// goReadRequest reads a request with net/http. url.ParseRequestURI checks a target's
// percent-escapes and host:port syntax, where mosnlite checks its bytes and form only
// (RFC 9112 §3.2) and forwards it as received: a target has no framing role. When the
// target is all net/http refuses, the message is read again with "/" in its place, so
// that its framing is still compared; uri keeps the target received.
func goReadRequest(b []byte) goMessage {
	g := goReadRequestAs(b)
	var ue *url.Error
	if !errors.As(g.err, &ue) {
		return g
	}
	// net/http splits the request line at its first two spaces (it read both).
	i := bytes.IndexByte(b, ' ')
	j := i + 1 + bytes.IndexByte(b[i+1:], ' ')
	alt := append(append(append([]byte(nil), b[:i+1]...), '/'), b[j:]...)
	g = goReadRequestAs(alt)
	g.end += len(b) - len(alt)
	g.uri = string(b[i+1 : j])
	return g
}

func goReadRequestAs(b []byte) goMessage {
	var g goMessage
	r, br := goReader(b)
	req, err := http.ReadRequest(br)
	if err != nil {
		g.err = err
		return g
	}
	g.head, g.method, g.uri, g.host = true, req.Method, req.RequestURI, req.Host
	g.body, g.err = io.ReadAll(req.Body)
	g.end = len(b) - r.Len() - br.Buffered()
	return g
}

func goReadResponse(b []byte, method string) goMessage {
	var g goMessage
	r, br := goReader(b)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		g.err = err
		return g
	}
	g.head, g.status = true, resp.StatusCode
	g.body, g.err = io.ReadAll(resp.Body)
	g.end = len(b) - r.Len() - br.Buffered()
	return g
}

// compareOriginal checks that mosnlite and net/http end the message in b at the same
// place. method is a request's method, "" for a response.
func compareOriginal(t *testing.T, b []byte, m mosnFrame, g goMessage, method string) {
	t.Helper()
	if !m.complete {
		if g.err == nil {
			t.Fatalf("desync: net/http ends the message at %d, mosnlite needs more than %d bytes\n%q", g.end, len(b), b)
		}
		return
	}
	if g.err != nil {
		if m.goStricter(t, b, g.err) != "" {
			return
		}
		t.Fatalf("net/http rejects a message mosnlite ends at %d (head %d): %v\n%q", m.end, m.head, g.err, b)
	}
	if g.end != m.end || !bytes.Equal(g.body, m.body) {
		t.Fatalf("desync: mosnlite ends the message at %d with a %d-byte body, net/http at %d with %d bytes\n%q",
			m.end, len(m.body), g.end, len(g.body), b)
	}
	if method != "" && g.method != method {
		t.Fatalf("method %q, net/http %q\n%q", method, g.method, b)
	}
}

// checkForwardedRequest checks what the proxy sends upstream for the request in b.
func checkForwardedRequest(t *testing.T, b []byte, h *RequestHead, m mosnFrame) {
	t.Helper()
	// The edits the proxy makes (pkg/proxy session.go): a request id, X-Forwarded-For,
	// Expect taken out, Upgrade kept when it tunnels.
	e := Edits{XForwardedFor: []byte("192.0.2.1"), RequestID: []byte("0123456789abcdef"), Upgrade: h.Upgrade}
	if h.Expect100 {
		e.Remove = []string{"Expect"}
	}
	var out buffer.IoBuffer
	if err := AppendRequestHead(&out, h, &e); err != nil {
		t.Fatalf("serialize %q: %v", b, err)
	}
	_, _ = out.Write(b[m.head:m.end])
	fwd := out.Bytes()
	g := goReadRequest(fwd)
	if !g.head {
		if m.goStricter(t, b, g.err) != "" {
			return
		}
		t.Fatalf("net/http rejects the forwarded head: %v\nin  %q\nout %q", g.err, b, fwd)
	}
	target := string(h.Target)
	if target == "" || target[0] == '?' {
		target = "/" + target
	}
	host := string(h.Host)
	if isConnect(h.Method) {
		// net/http takes a CONNECT's host from the target, through url.Parse, which
		// unescapes it; the target is compared as it is.
		host = g.host
	}
	if g.method != string(h.Method) || g.uri != target || g.host != host {
		t.Fatalf("forwarded %s %s host %q; net/http %s %s host %q\nin  %q\nout %q",
			h.Method, target, host, g.method, g.uri, g.host, b, fwd)
	}
	checkForwardedBody(t, b, fwd, m, g)
}

// checkForwardedResponse checks what the proxy sends downstream for the response in b.
func checkForwardedResponse(t *testing.T, b []byte, h *ResponseHead, reqMethod string, m mosnFrame) {
	t.Helper()
	// As pkg/proxy: "Connection: close" when the body ends with the connection, the
	// Upgrade fields kept on a 101 it tunnels.
	e := Edits{Upgrade: h.Status == 101}
	if h.Body == BodyClose {
		e.Connection = ConnClose
	}
	var out buffer.IoBuffer
	if err := AppendResponseHead(&out, h, &e); err != nil {
		t.Fatalf("serialize %q: %v", b, err)
	}
	_, _ = out.Write(b[m.head:m.end])
	fwd := out.Bytes()
	g := goReadResponse(fwd, reqMethod)
	if !g.head {
		if m.goStricter(t, b, g.err) != "" {
			return
		}
		t.Fatalf("net/http rejects the forwarded head: %v\nin  %q\nout %q", g.err, b, fwd)
	}
	if g.status != h.Status {
		t.Fatalf("forwarded status %d, net/http %d\nin  %q\nout %q", h.Status, g.status, b, fwd)
	}
	if h.Upgrade && h.Status != 101 {
		return // a CONNECT tunnel: see FuzzResponseFramingDiff
	}
	checkForwardedBody(t, b, fwd, m, g)
}

// checkForwardedBody: net/http reads the forwarded body as mosnlite framed it, to the
// last byte; an incomplete body must stay incomplete.
func checkForwardedBody(t *testing.T, b, fwd []byte, m mosnFrame, g goMessage) {
	t.Helper()
	if !m.complete {
		if g.err == nil {
			t.Fatalf("desync: net/http ends the forwarded message at %d, mosnlite's body is not over\nin  %q\nout %q",
				g.end, b, fwd)
		}
		return
	}
	if g.err != nil {
		if m.goStricter(t, b, g.err) != "" {
			return
		}
		t.Fatalf("net/http rejects the forwarded body: %v\nin  %q\nout %q", g.err, b, fwd)
	}
	if !bytes.Equal(g.body, m.body) {
		t.Fatalf("forwarded body %q, net/http reads %q\nin  %q\nout %q", m.body, g.body, b, fwd)
	}
	if g.end != len(fwd) {
		t.Fatalf("smuggling: net/http leaves %d forwarded bytes for a next message\nin  %q\nout %q",
			len(fwd)-g.end, b, fwd)
	}
}

// goStricter names the deliberate differences where net/http rejects a message mosnlite
// accepts, or "" when err is not one of them. None changes where a message ends: net/http
// refuses a message that mosnlite (and RFC 9112) frame unambiguously, so a net/http peer
// answers 400 and closes instead of reading another message from the bytes. hs are the
// message's fields as mosnlite parsed them; body is its body as received (chunk framing
// included), nil when it has none.
func goStricter(err error, hs Headers, body []byte, chunked bool) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "multiple Content-Length headers") && sameLengths(hs):
		// net/http compares repeated Content-Length values as strings; mosnlite as
		// decimal values ("5" and "05" are the same length), which RFC 9110 §8.6 allows,
		// and forwards one normalized Content-Length.
		return "repeated Content-Length spelled differently"
	case strings.Contains(msg, "bad trailer key") && announcesFraming(hs):
		// A Trailer field announcing Content-Length, Transfer-Encoding or Trailer. Trailer
		// fields never frame a message (mosnlite reads the trailer section and forwards it
		// unchanged); RFC 9110 §6.5.1 forbids sending such trailers, not announcing them.
		return "Trailer field names a framing field"
	}
	if !chunked {
		return ""
	}
	lines := chunkLines(body)
	switch {
	case strings.Contains(msg, "http chunk length too large") && anyLine(lines, longSize):
		// More than 16 hex digits: leading zeros (mosnlite rejects a size above 2^63-1).
		// chunk-size = 1*HEXDIG (RFC 9112 §7.1) does not bound the digits.
		return "chunk size with leading zeros"
	case strings.Contains(msg, "invalid byte in chunk length") && anyLine(lines, bwsBeforeExt):
		// chunk-ext = *( BWS ";" ... ) (RFC 9112 §7.1.1): whitespace may precede ';'.
		// net/http takes the chunk size as everything before the first ';'.
		return "whitespace before a chunk extension"
	case strings.Contains(msg, "too much non-data") && anyLine(lines, hasExt):
		// net/http's limit on chunk extension bytes per data byte (a DoS guard).
		return "chunk extension overhead"
	}
	return ""
}

// sameLengths reports whether all Content-Length fields in hs hold the same number.
func sameLengths(hs Headers) bool {
	n := int64(-1)
	for i := hs.Index("Content-Length", 0); i >= 0; i = hs.Index("Content-Length", i+1) {
		v, ok := parseContentLength(hs[i].Value)
		if !ok || (n >= 0 && v != n) {
			return false
		}
		n = v
	}
	return n >= 0
}

// announcesFraming reports whether a Trailer field in hs names Content-Length,
// Transfer-Encoding or Trailer.
func announcesFraming(hs Headers) bool {
	found := false
	for i := hs.Index("Trailer", 0); i >= 0 && !found; i = hs.Index("Trailer", i+1) {
		forList(hs[i].Value, func(e []byte) bool {
			found = EqualFold(e, "content-length") || EqualFold(e, "transfer-encoding") || EqualFold(e, "trailer")
			return found
		})
	}
	return found
}

// chunkLines returns the chunk-size lines (without CRLF) of a chunked body that
// mosnlite's decoder accepted, up to the last chunk or the end of body.
func chunkLines(body []byte) [][]byte {
	var lines [][]byte
	for len(body) > 0 {
		k := bytes.Index(body, []byte("\r\n"))
		if k < 0 {
			break
		}
		line := body[:k]
		lines = append(lines, line)
		size, _, err := chunkSizeDigits(line)
		if err != nil || size == 0 || size > int64(len(body)) {
			break
		}
		body = body[min(int64(len(body)), int64(k)+2+size+2):]
	}
	return lines
}

func anyLine(lines [][]byte, fn func([]byte) bool) bool {
	for _, l := range lines {
		if fn(l) {
			return true
		}
	}
	return false
}

func longSize(l []byte) bool {
	_, n, _ := chunkSizeDigits(l)
	return n > 16
}

// bwsBeforeExt: whitespace between the chunk size and a ';'.
func bwsBeforeExt(l []byte) bool {
	_, n, _ := chunkSizeDigits(l)
	return n < len(l) && (l[n] == ' ' || l[n] == '\t') && bytes.IndexByte(l, ';') > n
}

func hasExt(l []byte) bool { return bytes.IndexByte(l, ';') >= 0 }

// leadingCRLF is the length of the empty lines mosnlite skips before a request line (RFC
// 9112 §2.2). http.ReadRequest does not skip them; the comparison starts after them.
func leadingCRLF(b []byte) int {
	s := 0
	for len(b)-s >= 2 && b[s] == '\r' && b[s+1] == '\n' {
		s += 2
	}
	return s
}

func diffRequestSeeds() []string {
	post := func(fields ...string) string {
		return req("POST /p HTTP/1.1", append([]string{"Host: a"}, fields...)...)
	}
	te := "Transfer-Encoding: chunked"
	next := "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	return []string{
		typicalRequest,
		typicalRequest + next,
		post("Content-Length: 5") + "hello" + next,
		post(te) + "5\r\nhello\r\n0\r\n\r\n" + next,
		// Content-Length and Transfer-Encoding.
		post("Content-Length: 5", te) + "0\r\n\r\n" + next,
		post(te, "Content-Length: 5") + "0\r\n\r\n" + next,
		post(te, "Content-Length: 0") + "5\r\nhello\r\n0\r\n\r\n",
		// Transfer codings.
		post("Transfer-Encoding: gzip, chunked") + "0\r\n\r\n",
		post("Transfer-Encoding: gzip") + "hello",
		post("Transfer-Encoding: xchunked") + "0\r\n\r\n",
		post("Transfer-Encoding: chunked, chunked") + "0\r\n\r\n",
		post(te, te) + "0\r\n\r\n",
		post("Transfer-Encoding: CHUNKED ") + "0\r\n\r\n",
		post("Transfer-Encoding: chunked;q=1") + "0\r\n\r\n",
		post("Transfer-Encoding:\tchunked") + "0\r\n\r\n",
		post("Transfer-Encoding: identity", "Content-Length: 5") + "hello",
		// Content-Length spellings.
		post("Content-Length: +5") + "hello",
		post("Content-Length:  5 ") + "hello",
		post("Content-Length: 5,5") + "hello",
		post("Content-Length: 5, 5") + "hello",
		post("Content-Length: 05") + "hello",
		post("Content-Length: 5", "Content-Length: 05") + "hello",
		post("Content-Length: 5", "Content-Length: 5") + "hello",
		post("Content-Length: 5", "Content-Length: 6") + "hello!",
		post("Content-Length: -1"),
		post("Content-Length: 0x5") + "hello",
		post("Content-Length: 5e0") + "hello",
		post("Content-Length:"),
		post("Content-Length: 99999999999999999999") + "hello",
		post("Content-Length: 9223372036854775807") + "hello",
		post("Content-Length: 10") + "hello",
		// Chunk-size lines.
		post(te) + "5;a=b;c=\"d;e\"\r\nhello\r\n0\r\n\r\n" + next,
		post(te) + "5;\r\nhello\r\n0\r\n\r\n",
		post(te) + "5 ;a\r\nhello\r\n0\r\n\r\n",
		post(te) + "5 \r\nhello\r\n0\r\n\r\n",
		post(te) + "5\nhello\r\n0\r\n\r\n",
		post(te) + "5\r\nhello\n0\r\n\r\n",
		post(te) + "5\r\nhello\r\n0\n\n",
		post(te) + "5\rhello\r\n0\r\n\r\n",
		post(te) + "0x5\r\nhello\r\n0\r\n\r\n",
		post(te) + "-5\r\nhello\r\n0\r\n\r\n",
		post(te) + "fffffffffffffffff\r\nhello\r\n0\r\n\r\n",
		post(te) + "ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
		post(te) + "000000000000000000005\r\nhello\r\n0\r\n\r\n",
		post(te) + "5\r\nhelloXX0\r\n\r\n",
		post(te) + "5\r\nhello\r\n0;ext=\"\\\"\"\r\n\r\n",
		post(te) + "5\r\nhello\r\n0\r\nX-Trailer: v\r\nY: w\r\n\r\n" + next,
		post(te) + "5\r\nhello\r\n0\r\nX-Trailer: v\r\n folded\r\n\r\n",
		post(te) + "5\r\nhello\r\n0\r\nContent-Length: 30\r\n\r\n" + next,
		post(te, "Trailer: Content-Length") + "0\r\nContent-Length: 5\r\n\r\n",
		post(te) + "5\r\nhello\r\n0\r\n",
		post(te) + "5\r\nhel",
		// obs-fold, whitespace before the colon, control bytes.
		post("X: a", " folded", "Content-Length: 5") + "hello",
		post("Content-Length:", " 5") + "hello",
		post("Transfer-Encoding:", " chunked") + "0\r\n\r\n",
		post("Content-Length : 5") + "hello",
		post("Transfer-Encoding : chunked", "Content-Length: 5") + "0\r\n\r\n",
		post("X: a\x00b", "Content-Length: 5") + "hello",
		post("X: a\rb", "Content-Length: 5") + "hello",
		post("Content-Length: 5\r") + "hello",
		post("X: \x80\xff", "Content-Length: 5") + "hello",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\n\r\nhello",
		"POST /p HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello",
		// HTTP/1.0.
		req("POST /p HTTP/1.0", te) + "5\r\nhello\r\n0\r\n\r\n",
		req("POST /p HTTP/1.0", te, "Content-Length: 3") + "abc",
		req("POST /p HTTP/1.0", "Content-Length: 3") + "abc" + next,
		req("GET /p HTTP/1.0") + next,
		req("POST /p HTTP/1.2", "Host: a", "Content-Length: 3") + "abc",
		// Host.
		req("GET / HTTP/1.1", "Host: a", "Host: a"),
		req("GET / HTTP/1.1", "Host: a", "Host: b"),
		req("GET / HTTP/1.1"),
		req("GET http://b:80/x?y HTTP/1.1", "Host: a", "Content-Length: 2") + "hi",
		req("GET http://b:x/ HTTP/1.1", "Host: a"),
		req("GET /%zz HTTP/1.1", "Host: a"),
		req("CONNECT b:443 HTTP/1.1", "Host: a"),
		req("CONNECT a%25b:443 HTTP/1.1", "Host: a"),
		req("OPTIONS * HTTP/1.1", "Host: a", "Content-Length: 1") + "x",
		// Leading empty lines, Expect, Upgrade.
		"\r\n\r\n" + post("Content-Length: 1") + "x",
		post("Expect: 100-continue", "Content-Length: 1") + "x",
		req("GET /ws HTTP/1.1", "Host: a", "Connection: upgrade", "Upgrade: websocket") + "raw",
		post("Connection: content-length", "Content-Length: 2") + "hi",
	}
}

func diffResponseSeeds() []string {
	head := req // a status line and field lines
	te := "Transfer-Encoding: chunked"
	next := "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	return []string{
		typicalResponse,
		head("HTTP/1.1 200 OK", "Content-Length: 5") + "hello" + next,
		head("HTTP/1.1 200 OK", te) + "5;x\r\nhello\r\n0\r\nX: y\r\n\r\n" + next,
		head("HTTP/1.1 200 OK") + "until close",
		head("HTTP/1.0 200 OK", "Content-Length: 2") + "hi",
		head("HTTP/1.0 200 OK", te) + "5\r\nhello\r\n0\r\n\r\n",
		head("HTTP/1.1 200 OK", "Content-Length: 5", te) + "0\r\n\r\n" + next,
		head("HTTP/1.1 200 OK", te, "Content-Length: 5") + "0\r\n\r\n" + next,
		head("HTTP/1.1 200 OK", "Transfer-Encoding: gzip") + "data",
		head("HTTP/1.1 200 OK", "Transfer-Encoding: xchunked") + "0\r\n\r\n",
		head("HTTP/1.1 200 OK", "Transfer-Encoding: gzip, chunked") + "0\r\n\r\n",
		head("HTTP/1.1 200 OK", "Content-Length: 5", "Content-Length: 6") + "hello!",
		head("HTTP/1.1 200 OK", "Content-Length: 5", "Content-Length: 05") + "hello",
		head("HTTP/1.1 200 OK", "Content-Length: +5") + "hello",
		head("HTTP/1.1 200 OK", "Content-Length: 5,5") + "hello",
		head("HTTP/1.1 200 OK", "Content-Length : 5") + "hello",
		head("HTTP/1.1 200 OK", "Content-Length:", " 5") + "hello",
		head("HTTP/1.1 200 OK", "X: a\x00", "Content-Length: 5") + "hello",
		head("HTTP/1.1 200 OK", te) + "5 ;a=b\r\nhello\r\n0\r\n\r\n",
		head("HTTP/1.1 200 OK", te) + "5\nhello\r\n0\r\n\r\n",
		head("HTTP/1.1 200 OK", te) + "0x5\r\nhello\r\n0\r\n\r\n",
		head("HTTP/1.1 200 OK", te) + "00000000000000000005\r\nhello\r\n0\r\n\r\n",
		head("HTTP/1.1 200 OK", te) + "5\r\nhello\r\n0\r\nContent-Length: 9\r\n\r\n" + next,
		head("HTTP/1.1 204 No Content", "Content-Length: 5") + next,
		head("HTTP/1.1 204 No Content", te) + next,
		head("HTTP/1.1 304 Not Modified", "Content-Length: 5") + next,
		head("HTTP/1.1 304 Not Modified", te) + next,
		head("HTTP/1.1 100 Continue") + next,
		head("HTTP/1.1 103 Early Hints", "Content-Length: 5", "Link: </a>") + next,
		head("HTTP/1.1 101 Switching Protocols", "Connection: upgrade", "Upgrade: websocket") + "raw frames",
		head("HTTP/1.1 200 Connection established") + "tunnel bytes",
		head("HTTP/1.1 407 Proxy Auth", "Content-Length: 2") + "no" + next,
		"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\nContent-Length: 1\n\nx",
		"\r\n" + next,
		head("HTTP/1.1 200 OK", te, "Trailer: Transfer-Encoding") + "0\r\nTransfer-Encoding: x\r\n\r\n",
	}
}

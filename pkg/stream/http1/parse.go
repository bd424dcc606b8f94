// Package http1 holds mosnlite's HTTP/1.1 codec: a strict, zero-copy parser for request
// and response heads, chunked body framing, and a serializer that forwards a head with
// the hop-by-hop fields removed.
//
// Everything here is a pure function over []byte (no I/O, no goroutines), so it can be
// fuzzed. Parsed heads alias the input bytes: they are valid until the caller changes
// them. A parser reports "need more bytes" as (0, nil); errors are *Error values whose
// Status is the response code a server answers a bad request with (an error in an
// upstream response is the upstream's fault: answer 502 whatever its Status).
//
// Decisions where RFC 9110/9112 leave a choice (the safest reading for a proxy):
//   - Bare LF is rejected everywhere (start line, field lines, chunk lines), never
//     treated as a line end; so is a bare CR.
//   - Up to MaxHeaderBytes of empty lines (CRLF) before a request line are skipped.
//   - Transfer-Encoding must be one field line whose value is exactly "chunked"
//     (case-insensitive). "chunked" that is repeated, not final or has parameters, an
//     empty or malformed list, several Transfer-Encoding lines, or Transfer-Encoding in an
//     HTTP/1.0 message: 400. Any other coding ("gzip, chunked", "identity"): 501. The same
//     rules apply to responses (a response with another coding is rejected instead of
//     being read until close).
//   - Content-Length and Transfer-Encoding together: 400, in either order.
//   - Content-Length lines repeating the same decimal value are collapsed into one; a
//     different value, a list ("5, 5"), a sign, hex or a value above 2^63-1: 400.
//   - HTTP/1.x with x > 1 is handled as HTTP/1.1 (RFC 9110 §2.5); another major version
//     is 505. Versions are case-sensitive ("HTTP/1.1").
//   - The request target must be origin-form, absolute-form (userinfo rejected),
//     authority-form for CONNECT only, or "*" for OPTIONS only; bytes outside 0x21-0x7E
//     and '#' are rejected.
//   - HTTP/1.1 requests need exactly one Host line; two Host lines are rejected even when
//     equal. With an absolute-form target, Host is the target's authority (RFC 9112 §3.2.2).
//   - Field values may hold SP, HTAB, VCHAR and obs-text; every other control byte
//     (NUL, CR, LF, DEL, ...) is rejected, as is obs-fold and whitespace before the colon.
package http1

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/bits"
)

// Default limits, used for zero fields of Limits.
const (
	DefaultMaxHeaderBytes  = 60 << 10
	DefaultMaxHeaders      = 100
	DefaultMaxRequestLine  = 8 << 10
	DefaultMaxChunkLine    = 4 << 10
	DefaultMaxTrailerBytes = 16 << 10
)

// Limits bound what the parsers accept. A zero field takes its default. Limits are
// checked as bytes arrive: an unterminated head already over a limit fails at once.
type Limits struct {
	// MaxHeaderBytes bounds the whole head: empty lines before it, start line, field
	// lines and the final CRLF (431).
	MaxHeaderBytes int
	// MaxHeaders bounds the number of field lines in a head or a trailer section (431).
	MaxHeaders int
	// MaxRequestLine bounds the request or status line, CRLF excluded (414).
	MaxRequestLine int
	// MaxBodyBytes, when positive, bounds a declared Content-Length and the sum of the
	// chunk sizes of a chunked body (413). Zero: no limit.
	MaxBodyBytes int64
	// MaxChunkLine bounds a chunk-size line with its extensions, CRLF included (400).
	MaxChunkLine int
	// MaxTrailerBytes bounds a trailer section, final CRLF included (431).
	MaxTrailerBytes int
}

func (l *Limits) norm() {
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = DefaultMaxHeaders
	}
	if l.MaxRequestLine <= 0 {
		l.MaxRequestLine = DefaultMaxRequestLine
	}
	if l.MaxChunkLine <= 0 {
		l.MaxChunkLine = DefaultMaxChunkLine
	}
	if l.MaxTrailerBytes <= 0 {
		l.MaxTrailerBytes = DefaultMaxTrailerBytes
	}
	if l.MaxBodyBytes < 0 {
		l.MaxBodyBytes = 0
	}
}

// Error is a protocol error. Status is the code a server answers a request with.
type Error struct {
	Status int
	msg    string
}

func (e *Error) Error() string { return "http1: " + e.msg }

// StatusCode returns the Status of the *Error in err's chain, or 400 when there is none.
// It does not allocate.
func StatusCode(err error) int {
	for err != nil {
		if e, ok := err.(*Error); ok {
			return e.Status
		}
		err = errors.Unwrap(err)
	}
	return 400
}

// Protocol errors. They are values, so returning one never allocates; compare with
// errors.Is.
var (
	ErrRequestLineTooLong  = &Error{414, "request line too long"}
	ErrHeadTooLarge        = &Error{431, "header section too large"}
	ErrTooManyHeaders      = &Error{431, "too many header fields"}
	ErrBadRequestLine      = &Error{400, "malformed request line"}
	ErrBadMethod           = &Error{400, "malformed method"}
	ErrBadTarget           = &Error{400, "malformed request target"}
	ErrBadVersion          = &Error{400, "malformed HTTP version"}
	ErrVersionNotSupported = &Error{505, "HTTP version not supported"}
	ErrBadStatusLine       = &Error{400, "malformed status line"}
	ErrBareLF              = &Error{400, "bare LF line ending"}
	ErrBareCR              = &Error{400, "bare CR"}
	ErrObsFold             = &Error{400, "obsolete line folding"}
	ErrBadHeaderName       = &Error{400, "invalid header field name"}
	ErrBadHeaderValue      = &Error{400, "invalid header field value"}
	ErrMissingHost         = &Error{400, "missing Host header"}
	ErrDuplicateHost       = &Error{400, "more than one Host header"}
	ErrBadHost             = &Error{400, "invalid Host header"}
	ErrBadContentLength    = &Error{400, "invalid Content-Length"}
	ErrConflictingLength   = &Error{400, "conflicting Content-Length values"}
	ErrLengthAndChunked    = &Error{400, "both Content-Length and Transfer-Encoding"}
	ErrBadTransferEncoding = &Error{400, "invalid Transfer-Encoding"}
	ErrUnsupportedCoding   = &Error{501, "unsupported transfer coding"}
	ErrBodyTooLarge        = &Error{413, "body too large"}
)

// Body is how a message body is delimited.
type Body uint8

// Body kinds.
const (
	BodyNone    Body = iota // no body: the message ends with the head
	BodyLength              // ContentLength bytes
	BodyChunked             // chunked transfer coding (ChunkedReader)
	BodyClose               // response read until the connection closes
)

// RequestHead is a parsed request head. The byte slices alias the parsed input.
type RequestHead struct {
	Method []byte
	// Target is the request target as it should be forwarded: path and query for
	// origin-form and absolute-form targets ("/" when an absolute-form target has no path;
	// it starts with '?' when it has only a query), host:port for CONNECT, "*" for
	// OPTIONS *.
	Target []byte
	// Scheme and Authority are set for an absolute-form target; Authority also for
	// CONNECT.
	Scheme, Authority []byte
	// ProtoMinor is 0 for HTTP/1.0, 1 for HTTP/1.1 (and later HTTP/1.x).
	ProtoMinor uint8
	// Headers are the field lines in order, names as received, values without the
	// surrounding whitespace. The slice is reused by the next parse.
	Headers Headers

	// Derived from the fields.
	Host          []byte // Host value, or the absolute-form authority; nil when absent
	ContentLength int64  // -1: none
	Chunked       bool
	Body          Body // BodyNone, BodyLength or BodyChunked
	KeepAlive     bool // the connection may carry another request after this one
	Expect100     bool // HTTP/1.1 "Expect: 100-continue"
	Upgrade       bool // HTTP/1.1 with "Connection: upgrade" and an Upgrade field
}

// ResponseHead is a parsed response head. The byte slices alias the parsed input.
type ResponseHead struct {
	// HeadRequest and ConnectRequest are inputs: the response answers a HEAD (no body
	// whatever the fields say) or a CONNECT request (2xx: the connection becomes a
	// tunnel). Parsing leaves them as they are.
	HeadRequest, ConnectRequest bool

	ProtoMinor uint8
	Status     int
	Reason     []byte
	Headers    Headers

	ContentLength int64 // -1: none; metadata only when Body is BodyNone
	Chunked       bool
	Body          Body
	KeepAlive     bool // the connection may carry another response
	// Upgrade: a 101 or a 2xx answer to CONNECT; the bytes after the head belong to the
	// tunnel.
	Upgrade bool
}

// fields accumulates what the parser derives from the field lines.
type fields struct {
	cl                            int64
	clSeen                        bool
	teLines                       int
	teErr                         *Error
	hosts                         int
	host                          []byte
	connClose, connKeep, connUpgr bool
	upgrade, expect100            bool
}

var crlfcrlf = []byte("\r\n\r\n")

// errMore is the parsers' internal "need more bytes".
var errMore = errors.New("http1: need more bytes")

// directParseMax is how many buffered bytes are parsed outright without first checking
// that they hold a whole head. Above it a SIMD search for the empty line comes first, so
// a head trickled in byte by byte costs O(n) per call in memchr, not a full parse.
const directParseMax = 4 << 10

// window skips empty lines before a request line (RFC 9112 §2.2) and returns their
// length and b cut to MaxHeaderBytes.
func window(b []byte, lim *Limits, request bool) (s int, w []byte, err error) {
	if request {
		for len(b)-s >= 2 && b[s] == '\r' && b[s+1] == '\n' {
			s += 2
		}
		if s < len(b) && b[s] == '\n' {
			return 0, nil, ErrBareLF
		}
	}
	w = b
	if len(w) > lim.MaxHeaderBytes {
		w = w[:lim.MaxHeaderBytes]
	}
	if s > len(w) {
		s = len(w)
	}
	return s, w, nil
}

// incomplete decides what an incomplete head at b[s:] means: an error already visible
// in the lines received (bad or overlong start line, bare LF, obs-fold, too many lines),
// a head over MaxHeaderBytes, or (nil) need more bytes.
func incomplete(b []byte, s int, w []byte, lim *Limits, request bool) error {
	p := w[s:]
	if i := bytes.IndexByte(p, '\n'); i < 0 {
		l := len(p)
		if l > 0 && p[l-1] == '\r' {
			l--
		}
		if l > lim.MaxRequestLine {
			return ErrRequestLineTooLong
		}
		if err := checkStartLine(p[:l], request, false); err != nil {
			return err
		}
	} else {
		if i == 0 || p[i-1] != '\r' {
			return ErrBareLF
		}
		if i-1 > lim.MaxRequestLine {
			return ErrRequestLineTooLong
		}
		if err := checkStartLine(p[:i-1], request, true); err != nil {
			return err
		}
		if err := scanLines(p[i+1:], lim.MaxHeaders); err != nil {
			return err
		}
	}
	if len(b) >= lim.MaxHeaderBytes {
		return ErrHeadTooLarge
	}
	return nil
}

// checkStartLine validates a start line, or the beginning of one (complete false), for
// incomplete's early errors.
func checkStartLine(line []byte, request, complete bool) error {
	if complete {
		if request {
			var h RequestHead
			return h.parseRequestLine(line)
		}
		var h ResponseHead
		return h.parseStatusLine(line)
	}
	if !request {
		if n := min(len(line), 5); string(line[:n]) != "HTTP/"[:n] {
			return ErrBadVersion
		}
		return nil
	}
	i := 0
	for i < len(line) && tchar[line[i]] {
		i++
	}
	if i == len(line) {
		return nil
	}
	if i == 0 || line[i] != ' ' {
		return ErrBadMethod
	}
	for i++; i < len(line) && targetChar[line[i]]; i++ {
	}
	if i < len(line) && line[i] != ' ' {
		return ErrBadTarget
	}
	return nil
}

// scanLines checks the complete field lines at the start of p (no empty line among them)
// for bare LF, obs-fold and their number.
func scanLines(p []byte, maxLines int) error {
	n := 0
	for {
		k := bytes.IndexByte(p, '\n')
		if k < 0 {
			if len(p) > 0 && (p[0] == ' ' || p[0] == '\t') {
				return ErrObsFold
			}
			return nil
		}
		if k == 0 || p[k-1] != '\r' {
			return ErrBareLF
		}
		if p[0] == ' ' || p[0] == '\t' {
			return ErrObsFold
		}
		if n++; n > maxLines {
			return ErrTooManyHeaders
		}
		p = p[k+1:]
	}
}

// ParseRequestHead parses the request head at the start of b into h. It returns the
// number of bytes the head took (empty lines before it included), 0 and nil when b holds
// no complete head yet, or an *Error. h aliases b; its fields mean nothing unless n > 0.
func ParseRequestHead(b []byte, lim Limits, h *RequestHead) (n int, err error) {
	lim.norm()
	s, w, err := window(b, &lim, true)
	if err != nil {
		return 0, err
	}
	if len(w)-s > directParseMax && !bytes.Contains(w[s:], crlfcrlf) {
		return 0, incomplete(b, s, w, &lim, true)
	}
	n, err = h.parse(w[s:], &lim)
	if err == errMore {
		return 0, incomplete(b, s, w, &lim, true)
	}
	if err != nil {
		return 0, err
	}
	return s + n, nil
}

// startLine splits off the start line (request or status line), which must end in CRLF and
// fit MaxRequestLine; next is where the header fields begin.
func startLine(p []byte, lim *Limits) (line []byte, next int, err error) {
	i := bytes.IndexByte(p, '\n')
	if i < 0 {
		return nil, 0, errMore
	}
	if i == 0 || p[i-1] != '\r' {
		return nil, 0, ErrBareLF
	}
	if i-1 > lim.MaxRequestLine {
		return nil, 0, ErrRequestLineTooLong
	}
	return p[:i-1], i + 1, nil
}

func (h *RequestHead) parse(p []byte, lim *Limits) (int, error) {
	hs := h.Headers[:0]
	*h = RequestHead{ContentLength: -1, Headers: hs} // keep the storage across need-more
	line, next, err := startLine(p, lim)
	if err != nil {
		return 0, err
	}
	if err := h.parseRequestLine(line); err != nil {
		return 0, err
	}
	f := fields{cl: -1}
	end, err := parseFields(p, next, lim.MaxHeaders, &hs, &f, true)
	h.Headers = hs
	if err != nil {
		return 0, err
	}
	if err := h.derive(&f, lim); err != nil {
		return 0, err
	}
	return end, nil
}

func (h *RequestHead) derive(f *fields, lim *Limits) error {
	if f.teLines > 0 {
		switch {
		case f.clSeen:
			return ErrLengthAndChunked
		case h.ProtoMinor == 0 || f.teLines > 1:
			return ErrBadTransferEncoding
		case f.teErr != nil:
			return f.teErr
		}
		h.Chunked = true
		h.Body = BodyChunked
	} else if f.clSeen {
		h.ContentLength = f.cl
		if lim.MaxBodyBytes > 0 && f.cl > lim.MaxBodyBytes {
			return ErrBodyTooLarge
		}
		if f.cl > 0 {
			h.Body = BodyLength
		}
	}
	switch {
	case f.hosts > 1:
		return ErrDuplicateHost
	case f.hosts == 0 && h.ProtoMinor == 1:
		return ErrMissingHost
	}
	if h.Authority == nil || isConnect(h.Method) {
		h.Host = f.host
	} else {
		h.Host = h.Authority
	}
	if h.ProtoMinor == 1 {
		h.KeepAlive = !f.connClose
		h.Expect100 = f.expect100
		h.Upgrade = f.connUpgr && f.upgrade
	} else {
		h.KeepAlive = f.connKeep && !f.connClose
	}
	return nil
}

func isConnect(m []byte) bool { return string(m) == "CONNECT" }

var slash = []byte("/")

// parseRequestLine parses method SP target SP version (no CRLF).
func (h *RequestHead) parseRequestLine(line []byte) error {
	i := 0
	for i < len(line) && tchar[line[i]] {
		i++
	}
	switch {
	case i == 0 || (i < len(line) && line[i] != ' '):
		return ErrBadMethod
	case i == len(line):
		return ErrBadRequestLine
	}
	h.Method = line[:i:i]
	i++
	ts := i
	for i < len(line) && targetChar[line[i]] {
		i++
	}
	switch {
	case i < len(line) && line[i] != ' ':
		return ErrBadTarget
	case i == ts || i == len(line):
		return ErrBadRequestLine
	}
	minor, err := parseVersion(line[i+1:])
	if err != nil {
		return err
	}
	h.ProtoMinor = minor
	return h.setTarget(line[ts:i:i])
}

func (h *RequestHead) setTarget(t []byte) error {
	connect := isConnect(h.Method)
	switch {
	case connect:
		if !validAuthority(t, true) {
			return ErrBadTarget
		}
		h.Target, h.Authority = t, t
	case t[0] == '/':
		h.Target = t
	case len(t) == 1 && t[0] == '*':
		if string(h.Method) != "OPTIONS" {
			return ErrBadTarget
		}
		h.Target = t
	default: // absolute-form: scheme "://" authority [path-abempty] ["?" query]
		i := 0
		for i < len(t) && schemeChar[t[i]] {
			i++
		}
		if i == 0 || !isAlpha(t[0]) || len(t)-i < 3 || string(t[i:i+3]) != "://" {
			return ErrBadTarget
		}
		h.Scheme = t[:i:i]
		rest := t[i+3:]
		j := 0
		for j < len(rest) && rest[j] != '/' && rest[j] != '?' {
			j++
		}
		if !validAuthority(rest[:j], false) || j == 0 {
			return ErrBadTarget
		}
		h.Authority = rest[:j:j]
		h.Target = rest[j:]
		if len(h.Target) == 0 {
			h.Target = slash
		}
	}
	return nil
}

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// validAuthority checks host [":" port] characters (no userinfo); needPort demands a
// non-empty numeric port (CONNECT).
func validAuthority(a []byte, needPort bool) bool {
	for _, c := range a {
		if !hostChar[c] {
			return false
		}
	}
	if !needPort {
		return true
	}
	i := bytes.LastIndexByte(a, ':')
	if i <= 0 || i == len(a)-1 || a[i-1] == ':' {
		return false
	}
	for _, c := range a[i+1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// parseVersion parses exactly "HTTP/" DIGIT "." DIGIT.
func parseVersion(v []byte) (uint8, error) {
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[6] != '.' || !isDigit(v[5]) || !isDigit(v[7]) {
		return 0, ErrBadVersion
	}
	if v[5] != '1' {
		return 0, ErrVersionNotSupported
	}
	if v[7] == '0' {
		return 0, nil
	}
	return 1, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// parseFields parses field lines from p[i:] up to and including the empty line. It
// appends to hs and, when derive is set, records the framing fields in f. It returns the
// offset past the empty line, or errMore when p ends first (the complete lines before
// that have been checked).
func parseFields(p []byte, i, maxFields int, hs *Headers, f *fields, derive bool) (int, error) {
	for {
		if i >= len(p) {
			return 0, errMore
		}
		switch p[i] {
		case '\r':
			if i+1 >= len(p) {
				return 0, errMore
			}
			if p[i+1] != '\n' {
				return 0, ErrBareCR
			}
			return i + 2, nil
		case '\n':
			return 0, ErrBareLF
		case ' ', '\t':
			return 0, ErrObsFold
		}
		ns := i
		for i < len(p) && tchar[p[i]] {
			i++
		}
		if i >= len(p) {
			return 0, errMore
		}
		if p[i] != ':' || i == ns {
			if p[i] == '\n' {
				return 0, ErrBareLF
			}
			return 0, ErrBadHeaderName
		}
		name := p[ns:i:i]
		i++
		for i < len(p) && (p[i] == ' ' || p[i] == '\t') {
			i++
		}
		vs := i
		i = scanValue(p, i)
		if i+1 >= len(p) {
			if i < len(p) && p[i] != '\r' {
				return 0, badValueByte(p[i])
			}
			return 0, errMore
		}
		if p[i] != '\r' {
			return 0, badValueByte(p[i])
		}
		if p[i+1] != '\n' {
			return 0, ErrBareCR
		}
		ve := i
		for ve > vs && (p[ve-1] == ' ' || p[ve-1] == '\t') {
			ve--
		}
		i += 2
		if len(*hs) >= maxFields {
			return 0, ErrTooManyHeaders
		}
		value := p[vs:ve:ve]
		*hs = append(*hs, Header{Name: name, Value: value})
		if derive {
			if err := f.add(name, value); err != nil {
				return 0, err
			}
		}
	}
}

func badValueByte(c byte) error {
	if c == '\n' {
		return ErrBareLF
	}
	return ErrBadHeaderValue
}

// scanValue returns the offset of the first byte at or after i that a field value may
// not hold (CR ends a valid value). It tests eight bytes at a time for a control byte
// (below 0x20, or DEL): the lowest flagged byte of such a word is exact, as a borrow only
// runs upward.
func scanValue(p []byte, i int) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for i+8 <= len(p) {
		x := binary.LittleEndian.Uint64(p[i:])
		d := x ^ (lo * 0x7f)
		m := ((x-lo*0x20)&^x | (d-lo)&^d) & hi
		if m == 0 {
			i += 8
			continue
		}
		j := i + bits.TrailingZeros64(m)>>3
		if p[j] != '\t' {
			return j
		}
		i = j + 1
	}
	for i < len(p) && vchar[p[i]] {
		i++
	}
	return i
}

// add records one field line that matters for framing or connection handling.
func (f *fields) add(name, value []byte) error {
	switch kindOf(name) {
	case kindHost:
		f.hosts++
		if !validAuthority(value, false) {
			return ErrBadHost
		}
		f.host = value
	case kindContentLength:
		n, ok := parseContentLength(value)
		if !ok {
			return ErrBadContentLength
		}
		if f.clSeen && n != f.cl {
			return ErrConflictingLength
		}
		f.cl, f.clSeen = n, true
	case kindTransferEncoding:
		f.teLines++
		if !EqualFold(value, "chunked") && f.teErr == nil {
			f.teErr = classifyCoding(value)
		}
	case kindConnection:
		ok := forTokens(value, func(t []byte) bool {
			switch {
			case EqualFold(t, "close"):
				f.connClose = true
			case EqualFold(t, "keep-alive"):
				f.connKeep = true
			case EqualFold(t, "upgrade"):
				f.connUpgr = true
			}
			return false
		})
		if !ok {
			return ErrBadHeaderValue
		}
	case kindUpgrade:
		f.upgrade = true
	case kindExpect:
		if EqualFold(value, "100-continue") {
			f.expect100 = true
		}
	}
	return nil
}

// parseContentLength parses 1*DIGIT without overflow.
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// classifyCoding judges a Transfer-Encoding value other than exactly "chunked".
func classifyCoding(v []byte) *Error {
	elems, chunked, chunkedLast, bad := 0, 0, false, false
	ok := forList(v, func(e []byte) bool {
		name, params := e, false
		if k := bytes.IndexByte(e, ';'); k >= 0 {
			name, params = trimOWS(e[:k]), true
		}
		if !isToken(name) {
			bad = true
			return true
		}
		elems++
		chunkedLast = EqualFold(name, "chunked")
		if chunkedLast {
			chunked++
			if params {
				bad = true
			}
		}
		return false
	})
	switch {
	case !ok || bad || elems == 0 || chunked > 1 || (chunked == 1 && !chunkedLast):
		return ErrBadTransferEncoding
	default:
		return ErrUnsupportedCoding
	}
}

// forList calls fn with each element of a comma-separated list, trimmed; empty elements
// are skipped (RFC 9110 §5.6.1). fn returns true to stop. forList reports false when the
// value holds no element at all.
func forList(v []byte, fn func(e []byte) bool) bool {
	any := false
	for len(v) > 0 {
		k := bytes.IndexByte(v, ',')
		var e []byte
		if k < 0 {
			e, v = v, nil
		} else {
			e, v = v[:k], v[k+1:]
		}
		if e = trimOWS(e); len(e) == 0 {
			continue
		}
		any = true
		if fn(e) {
			return true
		}
	}
	return any
}

// forTokens is forList over a list of tokens; it reports false when an element is not a
// token or there is no element.
func forTokens(v []byte, fn func(t []byte) bool) bool {
	ok := true
	any := forList(v, func(e []byte) bool {
		if !isToken(e) {
			ok = false
			return true
		}
		return fn(e)
	})
	return ok && any
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tchar[c] {
			return false
		}
	}
	return true
}

// ParseResponseHead parses the response head at the start of b into h, with the body
// framing of RFC 9112 §6.3. Return values as for ParseRequestHead. h.HeadRequest and
// h.ConnectRequest are inputs.
func ParseResponseHead(b []byte, lim Limits, h *ResponseHead) (n int, err error) {
	lim.norm()
	_, w, _ := window(b, &lim, false)
	if len(w) > directParseMax && !bytes.Contains(w, crlfcrlf) {
		return 0, incomplete(b, 0, w, &lim, false)
	}
	n, err = h.parse(w, &lim)
	if err == errMore {
		return 0, incomplete(b, 0, w, &lim, false)
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

func (h *ResponseHead) parse(p []byte, lim *Limits) (int, error) {
	hs := h.Headers[:0]
	*h = ResponseHead{HeadRequest: h.HeadRequest, ConnectRequest: h.ConnectRequest, ContentLength: -1, Headers: hs}
	line, next, err := startLine(p, lim)
	if err != nil {
		return 0, err
	}
	if err := h.parseStatusLine(line); err != nil {
		return 0, err
	}
	f := fields{cl: -1}
	end, err := parseFields(p, next, lim.MaxHeaders, &hs, &f, true)
	h.Headers = hs
	if err != nil {
		return 0, err
	}
	if err := h.derive(&f, lim); err != nil {
		return 0, err
	}
	return end, nil
}

// parseStatusLine parses version SP 3DIGIT [SP reason] (no CRLF). The SP before an
// empty reason may be missing.
func (h *ResponseHead) parseStatusLine(line []byte) error {
	if len(line) < 12 || line[8] != ' ' {
		if len(line) >= 8 {
			if _, err := parseVersion(line[:8]); err != nil {
				return err
			}
		}
		return ErrBadStatusLine
	}
	minor, err := parseVersion(line[:8])
	if err != nil {
		return err
	}
	h.ProtoMinor = minor
	c := line[9:12]
	if !isDigit(c[0]) || !isDigit(c[1]) || !isDigit(c[2]) || c[0] < '1' || c[0] > '5' {
		return ErrBadStatusLine
	}
	h.Status = int(c[0]-'0')*100 + int(c[1]-'0')*10 + int(c[2]-'0')
	if len(line) == 12 {
		h.Reason = line[12:12:12]
		return nil
	}
	if line[12] != ' ' {
		return ErrBadStatusLine
	}
	r := line[13:]
	for _, c := range r {
		if !vchar[c] {
			return ErrBadStatusLine
		}
	}
	h.Reason = r[:len(r):len(r)]
	return nil
}

func (h *ResponseHead) derive(f *fields, lim *Limits) error {
	if f.teLines > 0 {
		switch {
		case f.clSeen:
			return ErrLengthAndChunked
		case h.ProtoMinor == 0 || f.teLines > 1:
			return ErrBadTransferEncoding
		case f.teErr != nil:
			return f.teErr
		}
		h.Chunked = true
	} else if f.clSeen {
		h.ContentLength = f.cl
	}
	switch {
	case h.Status == 101:
		h.Upgrade = true
	case h.Status < 200 || h.Status == 204 || h.Status == 304 || h.HeadRequest:
	case h.ConnectRequest && h.Status < 300:
		h.Upgrade = true
	case h.Chunked:
		h.Body = BodyChunked
	case f.clSeen:
		if lim.MaxBodyBytes > 0 && f.cl > lim.MaxBodyBytes {
			return ErrBodyTooLarge
		}
		if f.cl > 0 {
			h.Body = BodyLength
		}
	default:
		h.Body = BodyClose
	}
	if h.ProtoMinor == 1 {
		h.KeepAlive = !f.connClose
	} else {
		h.KeepAlive = f.connKeep && !f.connClose
	}
	if h.Body == BodyClose {
		h.KeepAlive = false
	}
	return nil
}

// Character classes.
var (
	tchar      = makeTable("!#$%&'*+-.^_`|~" + digits + alpha)
	vchar      = makeTable("\t " + visible + obsText())            // field-value and reason-phrase bytes
	targetChar = makeTable(removeChars(visible, "#"))              // request-target bytes
	hostChar   = makeTable("-._~!$&'()*+,;=%:[]" + digits + alpha) // authority without userinfo
	schemeChar = makeTable("+-." + digits + alpha)
)

const (
	digits = "0123456789"
	alpha  = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

var visible = func() string {
	b := make([]byte, 0, 0x7f-0x21)
	for c := byte(0x21); c < 0x7f; c++ {
		b = append(b, c)
	}
	return string(b)
}()

func obsText() string {
	b := make([]byte, 0, 0x80)
	for c := 0x80; c <= 0xff; c++ {
		b = append(b, byte(c))
	}
	return string(b)
}

func removeChars(s, drop string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if bytes.IndexByte([]byte(drop), s[i]) < 0 {
			b = append(b, s[i])
		}
	}
	return string(b)
}

func makeTable(chars string) (t [256]bool) {
	for i := 0; i < len(chars); i++ {
		t[chars[i]] = true
	}
	return t
}

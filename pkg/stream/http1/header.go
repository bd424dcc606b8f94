package http1

import (
	"strconv"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

// Header is one field line. Name keeps the case it was received with.
type Header struct{ Name, Value []byte }

// Headers is a list of field lines in order.
type Headers []Header

// Get returns the value of the first field named name (ASCII case-insensitive).
func (hs Headers) Get(name string) ([]byte, bool) {
	if i := hs.Index(name, 0); i >= 0 {
		return hs[i].Value, true
	}
	return nil, false
}

// Has reports whether a field named name is present.
func (hs Headers) Has(name string) bool { return hs.Index(name, 0) >= 0 }

// Index returns the index of the first field named name at or after from, or -1.
// Iterate over repeated fields with `for i := hs.Index(n, 0); i >= 0; i = hs.Index(n, i+1)`.
func (hs Headers) Index(name string, from int) int {
	for i := max(from, 0); i < len(hs); i++ {
		if EqualFold(hs[i].Name, name) {
			return i
		}
	}
	return -1
}

// HasToken reports whether a field named name lists token (case-insensitive) in its
// comma-separated value, over all lines of that field.
func (hs Headers) HasToken(name, token string) bool {
	for i := hs.Index(name, 0); i >= 0; i = hs.Index(name, i+1) {
		if HasToken(hs[i].Value, token) {
			return true
		}
	}
	return false
}

// EqualFold reports whether b and s are equal under ASCII case folding.
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if b[i] != s[i] && lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// HasToken reports whether the comma-separated list v holds token (case-insensitive).
func HasToken(v []byte, token string) bool {
	found := false
	forList(v, func(e []byte) bool {
		found = EqualFold(e, token)
		return found
	})
	return found
}

// Field kinds the codec treats specially.
const (
	kindOther uint8 = iota
	kindHost
	kindContentLength
	kindTransferEncoding
	kindConnection
	kindKeepAlive
	kindProxyConnection
	kindTE
	kindUpgrade
	kindExpect
	kindXForwardedFor
	kindXRequestID
)

// kindOf classifies a field name without allocating: a switch on its length, then one
// case-insensitive comparison.
func kindOf(name []byte) uint8 {
	switch len(name) {
	case 2:
		if isLower(name, "te") {
			return kindTE
		}
	case 4:
		if isLower(name, "host") {
			return kindHost
		}
	case 6:
		if isLower(name, "expect") {
			return kindExpect
		}
	case 7:
		if isLower(name, "upgrade") {
			return kindUpgrade
		}
	case 10:
		if isLower(name, "connection") {
			return kindConnection
		}
		if isLower(name, "keep-alive") {
			return kindKeepAlive
		}
	case 12:
		if isLower(name, "x-request-id") {
			return kindXRequestID
		}
	case 14:
		if isLower(name, "content-length") {
			return kindContentLength
		}
	case 15:
		if isLower(name, "x-forwarded-for") {
			return kindXForwardedFor
		}
	case 16:
		if isLower(name, "proxy-connection") {
			return kindProxyConnection
		}
	case 17:
		if isLower(name, "transfer-encoding") {
			return kindTransferEncoding
		}
	}
	return kindOther
}

// isLower reports whether name equals lower, a lowercase field name, ignoring ASCII
// case. Setting bit 0x20 folds only letters onto lowercase among token bytes.
func isLower(name []byte, lower string) bool {
	if len(name) != len(lower) {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i]|0x20 != lower[i] {
			return false
		}
	}
	return true
}

// Framing says which framing fields a serialized head carries.
type Framing uint8

// Framings.
const (
	// FramingAsParsed keeps the head's own framing: "Transfer-Encoding: chunked" when
	// Chunked, else "Content-Length" when ContentLength >= 0, else nothing.
	FramingAsParsed Framing = iota
	// FramingNone writes neither field (no body, or a response read until close).
	FramingNone
	// FramingLength writes "Content-Length: Edits.ContentLength".
	FramingLength
	// FramingChunked writes "Transfer-Encoding: chunked".
	FramingChunked
)

// ConnHeader is the Connection field the proxy writes for its own hop.
type ConnHeader uint8

// Connection fields.
const (
	ConnDefault   ConnHeader = iota // none: HTTP/1.1 persistence
	ConnClose                       // "Connection: close"
	ConnKeepAlive                   // "Connection: keep-alive" (for an HTTP/1.0 peer)
)

// Edits are the changes a proxy makes to a head it forwards. The zero value (or nil)
// forwards the head as it is, minus the hop-by-hop fields. Slices are the caller's:
// reusing one Edits per stream keeps serialization free of allocations. Values are
// validated (a CR/LF in an edit would split the head), and ErrBadEdit is returned before
// anything is written.
type Edits struct {
	// Target replaces a request's target when non-nil.
	Target []byte
	// Host replaces a request's Host value when non-nil.
	Host []byte
	// Framing and ContentLength choose the framing fields.
	Framing       Framing
	ContentLength int64
	// Connection is the Connection field for the proxy's own hop.
	Connection ConnHeader
	// Upgrade keeps the Upgrade field and writes "Connection: upgrade" when the head
	// asks for one (RequestHead.Upgrade, a 101 response): the proxy tunnels.
	Upgrade bool
	// XForwardedFor, when non-nil, is appended to the last X-Forwarded-For line
	// (", "-separated), or added as a new line (requests and responses alike).
	XForwardedFor []byte
	// RequestID, when non-nil, is added as X-Request-Id unless the head has one.
	RequestID []byte
	// Remove names further fields to drop (case-insensitive).
	Remove []string
	// Add holds fields appended after the kept ones.
	Add Headers
}

// ErrBadEdit is returned by the serializers for an invalid edit or head.
var ErrBadEdit = &Error{500, "invalid edit"}

var noEdits Edits

func (e *Edits) validate() error {
	if e.Target != nil && !validTarget(e.Target) {
		return ErrBadEdit
	}
	if e.Host != nil && !validAuthority(e.Host, false) {
		return ErrBadEdit
	}
	if e.Framing > FramingChunked || (e.Framing == FramingLength && e.ContentLength < 0) || e.Connection > ConnKeepAlive {
		return ErrBadEdit
	}
	if (e.XForwardedFor != nil && !validValue(e.XForwardedFor)) || (e.RequestID != nil && !validValue(e.RequestID)) {
		return ErrBadEdit
	}
	if !validFields(e.Add) {
		return ErrBadEdit
	}
	return nil
}

func validTarget(t []byte) bool {
	if len(t) == 0 {
		return false
	}
	for _, c := range t {
		if !targetChar[c] {
			return false
		}
	}
	return true
}

// validText checks for SP, HTAB, VCHAR and obs-text only (a reason phrase).
func validText(v []byte) bool {
	for _, c := range v {
		if !vchar[c] {
			return false
		}
	}
	return true
}

// validValue checks a field value as the parser would accept it after trimming.
func validValue(v []byte) bool {
	if !validText(v) {
		return false
	}
	return len(v) == 0 || (v[0] != ' ' && v[0] != '\t' && v[len(v)-1] != ' ' && v[len(v)-1] != '\t')
}

func validFields(hs Headers) bool {
	for _, f := range hs {
		if !isToken(f.Name) || !validValue(f.Value) {
			return false
		}
	}
	return true
}

// AppendRequestHead writes h to dst as an HTTP/1.1 request head for the next hop, with
// e applied (nil: no edits). Host comes first (empty when there is none, RFC 9112 §3.2),
// then the fields that are not hop-by-hop, in order. Dropped: Connection and the fields
// it names, Keep-Alive, Proxy-Connection, Transfer-Encoding and Content-Length (framing
// is rewritten per e.Framing), TE unless it lists "trailers" (forwarded as
// "TE: trailers"), Upgrade unless the proxy tunnels, and e.Remove. Then come the
// framing field, the proxy's own Connection field (upgrade, close or keep-alive, and te
// with a forwarded TE: RFC 9110 §10.1.4), the added X-Forwarded-For and X-Request-Id, and
// e.Add. h must come from ParseRequestHead or be equally valid; e is validated first.
func AppendRequestHead(dst *buffer.IoBuffer, h *RequestHead, e *Edits) error {
	if e == nil {
		e = &noEdits
	} else if err := e.validate(); err != nil {
		return err
	}
	target, host := h.Target, h.Host
	if e.Target != nil {
		target = e.Target
	}
	if e.Host != nil {
		host = e.Host
	}
	if len(h.Method) == 0 || !isToken(h.Method) {
		return ErrBadEdit
	}
	dst.Grow(len(h.Method) + len(target) + len(host) + headSize(h.Headers, e) + 32)
	_, _ = dst.Write(h.Method)
	_ = dst.WriteByte(' ')
	if len(target) == 0 || target[0] == '?' {
		_ = dst.WriteByte('/')
	}
	_, _ = dst.Write(target)
	_, _ = dst.WriteString(" HTTP/1.1\r\nHost: ")
	_, _ = dst.Write(host)
	_, _ = dst.WriteString("\r\n")
	writeFields(dst, h.Headers, e, h.Upgrade, h.Chunked, h.ContentLength, true)
	return nil
}

// AppendResponseHead writes h to dst as an HTTP/1.1 response head, with the rules and
// edits of AppendRequestHead (Target and Host do not apply).
func AppendResponseHead(dst *buffer.IoBuffer, h *ResponseHead, e *Edits) error {
	if e == nil {
		e = &noEdits
	} else if err := e.validate(); err != nil {
		return err
	}
	if h.Status < 100 || h.Status > 599 || !validText(h.Reason) {
		return ErrBadEdit
	}
	dst.Grow(len(h.Reason) + headSize(h.Headers, e) + 32)
	var st [16]byte
	s := append(st[:0], "HTTP/1.1 "...)
	s = strconv.AppendInt(s, int64(h.Status), 10)
	s = append(s, ' ')
	_, _ = dst.Write(s)
	_, _ = dst.Write(h.Reason)
	_, _ = dst.WriteString("\r\n")
	writeFields(dst, h.Headers, e, h.Upgrade && h.Status == 101, h.Chunked, h.ContentLength, false)
	return nil
}

func headSize(hs Headers, e *Edits) int {
	n := len(e.XForwardedFor) + len(e.RequestID) + 64
	for _, f := range hs {
		n += len(f.Name) + len(f.Value) + 4
	}
	for _, f := range e.Add {
		n += len(f.Name) + len(f.Value) + 4
	}
	return n
}

// kindCache is how many field kinds writeFields remembers on the stack; kinds of
// later fields are recomputed.
const kindCache = 128

// writeFields writes the field lines after the start line, through the final CRLF.
func writeFields(dst *buffer.IoBuffer, hs Headers, e *Edits, upgrade, chunked bool, cl int64, request bool) {
	// First pass: field kinds, and whether the Connection fields name other fields.
	var kinds [kindCache]uint8
	kind := func(i int) uint8 {
		if i < kindCache {
			return kinds[i]
		}
		return kindOf(hs[i].Name)
	}
	connOther := false
	for i, f := range hs {
		k := kindOf(f.Name)
		if i < kindCache {
			kinds[i] = k
		}
		if k == kindConnection && !connOther {
			forList(f.Value, func(t []byte) bool {
				connOther = !EqualFold(t, "close") && !EqualFold(t, "keep-alive") && !EqualFold(t, "upgrade")
				return connOther
			})
		}
	}
	dropped := func(name []byte) bool {
		return (connOther && namedByConnection(hs, name)) || (len(e.Remove) > 0 && removed(e.Remove, name))
	}
	// The last X-Forwarded-For and any X-Request-Id that survive.
	lastXFF, hasRID := -1, false
	if e.XForwardedFor != nil || e.RequestID != nil {
		for i, f := range hs {
			switch kind(i) {
			case kindXForwardedFor:
				if !dropped(f.Name) {
					lastXFF = i
				}
			case kindXRequestID:
				hasRID = hasRID || !dropped(f.Name)
			}
		}
	}
	tunnel := e.Upgrade && upgrade
	teWritten, upgradeWritten := false, false
	for i, f := range hs {
		switch kind(i) {
		case kindHost:
			if request {
				continue
			}
		case kindConnection, kindKeepAlive, kindProxyConnection, kindTransferEncoding, kindContentLength:
			continue
		case kindTE:
			if !teWritten && HasToken(f.Value, "trailers") {
				_, _ = dst.WriteString("TE: trailers\r\n")
				teWritten = true
			}
			continue
		case kindUpgrade:
			if tunnel && !removed(e.Remove, f.Name) {
				writeField(dst, f.Name, f.Value)
				upgradeWritten = true
			}
			continue
		case kindXForwardedFor:
			if i == lastXFF {
				_, _ = dst.Write(f.Name)
				_, _ = dst.WriteString(": ")
				if len(f.Value) > 0 {
					_, _ = dst.Write(f.Value)
					_, _ = dst.WriteString(", ")
				}
				_, _ = dst.Write(e.XForwardedFor)
				_, _ = dst.WriteString("\r\n")
				continue
			}
		}
		if dropped(f.Name) {
			continue
		}
		writeField(dst, f.Name, f.Value)
	}
	framing := e.Framing
	if framing == FramingAsParsed {
		switch {
		case chunked:
			framing = FramingChunked
		case cl >= 0:
			framing = FramingLength
		default:
			framing = FramingNone
		}
	} else if framing == FramingLength {
		cl = e.ContentLength
	}
	switch framing {
	case FramingChunked:
		_, _ = dst.WriteString("Transfer-Encoding: chunked\r\n")
	case FramingLength:
		var nb [40]byte
		s := append(nb[:0], "Content-Length: "...)
		s = strconv.AppendInt(s, cl, 10)
		s = append(s, '\r', '\n')
		_, _ = dst.Write(s)
	}
	// The proxy's own connection options; TE is one when forwarded (RFC 9110 §10.1.4).
	var opts [3]string
	no := 0
	if tunnel && upgradeWritten {
		opts[no], no = "upgrade", no+1
	}
	switch e.Connection {
	case ConnClose:
		opts[no], no = "close", no+1
	case ConnKeepAlive:
		opts[no], no = "keep-alive", no+1
	}
	if teWritten {
		opts[no], no = "te", no+1
	}
	for i, o := range opts[:no] {
		if i == 0 {
			_, _ = dst.WriteString("Connection: ")
		} else {
			_, _ = dst.WriteString(", ")
		}
		_, _ = dst.WriteString(o)
	}
	if no > 0 {
		_, _ = dst.WriteString("\r\n")
	}
	if lastXFF < 0 && e.XForwardedFor != nil {
		_, _ = dst.WriteString("X-Forwarded-For: ")
		_, _ = dst.Write(e.XForwardedFor)
		_, _ = dst.WriteString("\r\n")
	}
	if !hasRID && e.RequestID != nil {
		_, _ = dst.WriteString("X-Request-Id: ")
		_, _ = dst.Write(e.RequestID)
		_, _ = dst.WriteString("\r\n")
	}
	for _, f := range e.Add {
		writeField(dst, f.Name, f.Value)
	}
	_, _ = dst.WriteString("\r\n")
}

func writeField(dst *buffer.IoBuffer, name, value []byte) {
	b := dst.Alloc(len(name) + len(value) + 4)
	n := copy(b, name)
	b[n], b[n+1] = ':', ' '
	n += 2 + copy(b[n+2:], value)
	b[n], b[n+1] = '\r', '\n'
}

// namedByConnection reports whether a Connection field lists name.
func namedByConnection(hs Headers, name []byte) bool {
	for _, f := range hs {
		if kindOf(f.Name) != kindConnection {
			continue
		}
		found := false
		forList(f.Value, func(t []byte) bool {
			found = equalFoldBytes(t, name)
			return found
		})
		if found {
			return true
		}
	}
	return false
}

func removed(names []string, name []byte) bool {
	for _, n := range names {
		if EqualFold(name, n) {
			return true
		}
	}
	return false
}

package config

import (
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// tree.go is a small JSON reader that keeps what the struct decoder throws away: key order,
// duplicate keys and byte offsets. Parse reads the file into this tree first, so a syntax
// error can name its line and column and every later problem can name its JSON path.

// kind is a JSON value's type.
type kind uint8

const (
	kindNull kind = iota
	kindBool
	kindNumber
	kindString
	kindObject
	kindArray
)

func (k kind) String() string {
	switch k {
	case kindNull:
		return "null"
	case kindBool:
		return "boolean"
	case kindNumber:
		return "number"
	case kindString:
		return "string"
	case kindObject:
		return "object"
	default:
		return "array"
	}
}

// node is one JSON value. start and end delimit its bytes in the source.
type node struct {
	kind       kind
	start, end int
	str        string // kindString: the decoded string
	boolean    bool   // kindBool
	members    []member
	elems      []*node
}

// member is one key of an object, in document order.
type member struct {
	key string
	val *node
}

// maxDepth bounds nesting; a config is a dozen levels deep, an attack is thousands.
const maxDepth = 512

// syntaxError is a JSON syntax error at a byte offset of the input.
type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string { return e.msg }

// lineCol turns a byte offset into a 1-based line and a 1-based column (in bytes).
func lineCol(data []byte, off int) (line, col int) {
	line, col = 1, 1
	for i := 0; i < off && i < len(data); i++ {
		if data[i] == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}

type reader struct {
	data  []byte
	pos   int
	depth int
}

// parseTree reads one JSON document. A leading UTF-8 byte order mark is skipped, as editors
// on some systems write one.
func parseTree(data []byte) (*node, error) {
	r := &reader{data: data}
	if len(data) >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF {
		r.pos = 3
	}
	r.space()
	if r.pos >= len(r.data) {
		return nil, r.fail("empty document")
	}
	n, err := r.value()
	if err != nil {
		return nil, err
	}
	r.space()
	if r.pos < len(r.data) {
		return nil, r.fail(fmt.Sprintf("invalid character %s after the top-level value", quoteByte(r.data[r.pos])))
	}
	return n, nil
}

func (r *reader) fail(msg string) error { return &syntaxError{off: r.pos, msg: msg} }

func (r *reader) failAt(off int, msg string) error { return &syntaxError{off: off, msg: msg} }

func quoteByte(c byte) string {
	if c < utf8.RuneSelf {
		return strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

func (r *reader) space() {
	for r.pos < len(r.data) {
		switch r.data[r.pos] {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return
		}
	}
}

func (r *reader) unexpected(looking string) error {
	if r.pos >= len(r.data) {
		return r.fail("unexpected end of input " + looking)
	}
	return r.fail(fmt.Sprintf("invalid character %s %s", quoteByte(r.data[r.pos]), looking))
}

func (r *reader) value() (*node, error) {
	if r.pos >= len(r.data) {
		return nil, r.unexpected("looking for a value")
	}
	switch c := r.data[r.pos]; {
	case c == '{':
		return r.object()
	case c == '[':
		return r.array()
	case c == '"':
		start := r.pos
		s, err := r.string()
		if err != nil {
			return nil, err
		}
		return &node{kind: kindString, start: start, end: r.pos, str: s}, nil
	case c == '-' || ('0' <= c && c <= '9'):
		return r.number()
	case c == 't':
		return r.literal("true", &node{kind: kindBool, boolean: true})
	case c == 'f':
		return r.literal("false", &node{kind: kindBool})
	case c == 'n':
		return r.literal("null", &node{kind: kindNull})
	default:
		return nil, r.unexpected("looking for a value")
	}
}

func (r *reader) literal(word string, n *node) (*node, error) {
	n.start = r.pos
	for i := 0; i < len(word); i++ {
		if r.pos >= len(r.data) || r.data[r.pos] != word[i] {
			return nil, r.unexpected("in literal " + word)
		}
		r.pos++
	}
	n.end = r.pos
	return n, nil
}

func (r *reader) enter() error {
	r.depth++
	if r.depth > maxDepth {
		return r.fail(fmt.Sprintf("nesting deeper than %d levels", maxDepth))
	}
	return nil
}

func (r *reader) object() (*node, error) {
	if err := r.enter(); err != nil {
		return nil, err
	}
	n := &node{kind: kindObject, start: r.pos}
	r.pos++ // {
	r.space()
	if r.pos < len(r.data) && r.data[r.pos] == '}' {
		r.pos++
		n.end = r.pos
		r.depth--
		return n, nil
	}
	for {
		r.space()
		if r.pos >= len(r.data) || r.data[r.pos] != '"' {
			return nil, r.unexpected("looking for the beginning of an object key")
		}
		key, err := r.string()
		if err != nil {
			return nil, err
		}
		r.space()
		if r.pos >= len(r.data) || r.data[r.pos] != ':' {
			return nil, r.unexpected("after object key")
		}
		r.pos++
		r.space()
		v, err := r.value()
		if err != nil {
			return nil, err
		}
		n.members = append(n.members, member{key: key, val: v})
		if done, err := r.separator(n, '}', "after object value"); done || err != nil {
			return n, err
		}
	}
}

func (r *reader) array() (*node, error) {
	if err := r.enter(); err != nil {
		return nil, err
	}
	n := &node{kind: kindArray, start: r.pos}
	r.pos++ // [
	r.space()
	if r.pos < len(r.data) && r.data[r.pos] == ']' {
		r.pos++
		n.end = r.pos
		r.depth--
		return n, nil
	}
	for {
		r.space()
		v, err := r.value()
		if err != nil {
			return nil, err
		}
		n.elems = append(n.elems, v)
		if done, err := r.separator(n, ']', "after array element"); done || err != nil {
			return n, err
		}
	}
}

// separator reads what follows a member or element: ',' (more follow) or the closing
// byte (the container n ends there; done). Anything else is a syntax error naming what.
func (r *reader) separator(n *node, closing byte, what string) (done bool, err error) {
	r.space()
	if r.pos >= len(r.data) {
		return false, r.unexpected(what)
	}
	switch r.data[r.pos] {
	case ',':
		r.pos++
		return false, nil
	case closing:
		r.pos++
		n.end = r.pos
		r.depth--
		return true, nil
	}
	return false, r.unexpected(what + " (missing comma?)")
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func (r *reader) digits() bool {
	start := r.pos
	for r.pos < len(r.data) && isDigit(r.data[r.pos]) {
		r.pos++
	}
	return r.pos > start
}

// number checks the RFC 8259 grammar; the literal stays in the source for the type check.
func (r *reader) number() (*node, error) {
	n := &node{kind: kindNumber, start: r.pos}
	if r.data[r.pos] == '-' {
		r.pos++
	}
	if r.pos >= len(r.data) || !isDigit(r.data[r.pos]) {
		return nil, r.unexpected("in numeric literal")
	}
	if r.data[r.pos] == '0' {
		r.pos++
	} else {
		r.digits()
	}
	if r.pos < len(r.data) && r.data[r.pos] == '.' {
		r.pos++
		if !r.digits() {
			return nil, r.unexpected("after decimal point in numeric literal")
		}
	}
	if r.pos < len(r.data) && (r.data[r.pos] == 'e' || r.data[r.pos] == 'E') {
		r.pos++
		if r.pos < len(r.data) && (r.data[r.pos] == '+' || r.data[r.pos] == '-') {
			r.pos++
		}
		if !r.digits() {
			return nil, r.unexpected("in exponent of numeric literal")
		}
	}
	n.end = r.pos
	return n, nil
}

// string reads a quoted string at r.pos and returns it decoded. Invalid UTF-8 and lone
// surrogates become U+FFFD, as encoding/json does.
func (r *reader) string() (string, error) {
	start := r.pos
	r.pos++ // "
	// Fast path: no escapes, valid UTF-8.
	for i := r.pos; i < len(r.data); i++ {
		c := r.data[i]
		if c == '"' {
			s := r.data[r.pos:i]
			if utf8.Valid(s) {
				r.pos = i + 1
				return string(s), nil
			}
			break
		}
		if c == '\\' || c < 0x20 {
			break
		}
	}
	var b []byte
	for {
		if r.pos >= len(r.data) {
			return "", r.failAt(start, "unterminated string")
		}
		c := r.data[r.pos]
		switch {
		case c == '"':
			r.pos++
			return string(b), nil
		case c < 0x20:
			return "", r.fail(fmt.Sprintf("invalid control character %s in string", quoteByte(c)))
		case c == '\\':
			if r.pos+1 >= len(r.data) {
				return "", r.failAt(start, "unterminated string")
			}
			e := r.data[r.pos+1]
			r.pos += 2
			switch e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				c1, ok := r.hex4()
				if !ok {
					return "", r.fail("invalid \\u escape in string")
				}
				if utf16.IsSurrogate(c1) {
					// A high surrogate followed by \uDC00-\uDFFF is one rune; anything else is U+FFFD.
					save := r.pos
					if r.pos+1 < len(r.data) && r.data[r.pos] == '\\' && r.data[r.pos+1] == 'u' {
						r.pos += 2
						if c2, ok := r.hex4(); ok {
							if dec := utf16.DecodeRune(c1, c2); dec != utf8.RuneError {
								b = utf8.AppendRune(b, dec)
								continue
							}
						}
					}
					r.pos = save
					c1 = utf8.RuneError
				}
				b = utf8.AppendRune(b, c1)
			default:
				return "", r.failAt(r.pos-2, fmt.Sprintf("invalid escape %s in string", strconv.Quote(string([]byte{'\\', e}))))
			}
		case c < utf8.RuneSelf:
			b = append(b, c)
			r.pos++
		default:
			ru, size := utf8.DecodeRune(r.data[r.pos:])
			b = utf8.AppendRune(b, ru) // RuneError for invalid bytes
			r.pos += size
		}
	}
}

func (r *reader) hex4() (rune, bool) {
	if r.pos+4 > len(r.data) {
		return 0, false
	}
	var v rune
	for _, c := range r.data[r.pos : r.pos+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		v = v<<4 | rune(c)
	}
	r.pos += 4
	return v, true
}

// appendString appends s as a JSON string literal.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

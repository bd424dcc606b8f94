package dubbo

import (
	"errors"
	"unicode/utf8"
)

// This file holds the allocation-free hessian2 readers the codec runs on untrusted bytes:
// a string reader for the leading request strings, a counter for JVM parameter descriptors
// and a structural walker that skips values.
//
// They must consume exactly the bytes dubbo-go-hessian2 v1.12.5 (and Java's Hessian2Input)
// consume for every input they accept, because the walker decides which bytes the library
// decoder is later given. Where the two reference decoders disagree (an unpaired high
// surrogate: the Go library swallows the next three bytes, Java does not), the readers
// reject the input, so an accepted string means the same thing to every party.

// hessian2 tags (https://hessian.caucho.com/doc/hessian-serialization.html).
const (
	tagNull         = 'N'
	tagTrue         = 'T'
	tagFalse        = 'F'
	tagInt          = 'I'
	tagLong         = 'L'
	tagLongInt      = 0x59
	tagDouble       = 'D'
	tagDate         = 0x4a
	tagDateMinute   = 0x4b
	tagString       = 'S'
	tagStringChunk  = 'R'
	tagBinary       = 'B'
	tagBinaryChunk  = 'A'
	tagListVar      = 0x55
	tagListFixed    = 'V'
	tagListVarUntyp = 0x57
	tagListFixUntyp = 0x58
	tagMap          = 'M'
	tagMapUntyped   = 'H'
	tagEnd          = 'Z'
	tagClassDef     = 'C'
	tagObject       = 'O'
	tagRef          = 0x51
)

var (
	errShort      = errors.New("hessian2: value runs past the end of the body")
	errNotString  = errors.New("hessian2: not a string")
	errBadChunk   = errors.New("hessian2: string chunk not followed by a string")
	errBadUTF8    = errors.New("hessian2: bad utf-8 lead byte")
	errSurrogate  = errors.New("hessian2: unpaired high surrogate")
	errNotInt     = errors.New("hessian2: not an int")
	errBadTag     = errors.New("hessian2: unknown tag")
	errTooDeep    = errors.New("hessian2: nesting too deep")
	errBadLength  = errors.New("hessian2: length out of range")
	errBadClass   = errors.New("hessian2: object refers to an undefined class")
	errBadBinary  = errors.New("hessian2: binary chunk not followed by binary")
	errMissingEnd = errors.New("hessian2: map or list without end")
)

// stringAt scans the hessian2 string (or null) whose tag is at b[i]. It returns the offset
// after it and, when the string is one chunk without surrogate pairs, its UTF-8 bytes
// aliasing b (plain). Other strings (chunked, or with pairs that the wire carries as two
// 3-byte halves) need appendString to become UTF-8. Lengths count UTF-16 code units.
func stringAt(b []byte, i int) (s []byte, next int, plain, null bool, err error) {
	if i >= len(b) {
		return nil, i, false, false, errShort
	}
	if b[i] == tagNull {
		return nil, i + 1, true, true, nil
	}
	plain = true
	for chunk := 0; ; chunk++ {
		n, j, last, err := chunkHeader(b, i)
		if err != nil {
			if chunk > 0 && err == errNotString {
				err = errBadChunk
			}
			return nil, i, false, false, err
		}
		end, pairs, err := skipChars(b, j, n)
		if err != nil {
			return nil, i, false, false, err
		}
		if chunk == 0 {
			s = b[j:end:end]
		}
		if pairs || chunk > 0 {
			plain = false
		}
		i = end
		if last {
			if !plain {
				s = nil
			}
			return s, i, plain, false, nil
		}
	}
}

// chunkHeader reads a string chunk's tag and length at b[i]: n UTF-16 units starting at j.
func chunkHeader(b []byte, i int) (n, j int, last bool, err error) {
	if i >= len(b) {
		return 0, i, false, errShort
	}
	switch t := b[i]; {
	case t <= 0x1f:
		return int(t), i + 1, true, nil
	case t >= 0x30 && t <= 0x33:
		if i+2 > len(b) {
			return 0, i, false, errShort
		}
		return int(t-0x30)<<8 | int(b[i+1]), i + 2, true, nil
	case t == tagString || t == tagStringChunk:
		if i+3 > len(b) {
			return 0, i, false, errShort
		}
		return int(b[i+1])<<8 | int(b[i+2]), i + 3, t == tagString, nil
	}
	return 0, i, false, errNotString
}

// skipChars skips n UTF-16 units of hessian2 "UTF-8" (CESU-8: a supplementary character is
// a pair of 3-byte surrogates, two units) from b[j]. Like both reference decoders it takes
// the lead byte's word for the sequence length and does not check continuation bytes.
func skipChars(b []byte, j, n int) (end int, pairs bool, err error) {
	for c := 0; c < n; {
		if j >= len(b) {
			return j, pairs, errShort
		}
		x := b[j]
		switch {
		case x < 0x80:
			j++
			c++
		case x&0xe0 == 0xc0:
			if j+2 > len(b) {
				return j, pairs, errShort
			}
			j += 2
			c++
		case x&0xf0 == 0xe0:
			if j+3 > len(b) {
				return j, pairs, errShort
			}
			u := unit3(b[j:])
			if u < 0xd800 || u > 0xdbff {
				j += 3 // BMP char or a lone low surrogate: three bytes everywhere
				c++
				continue
			}
			// A high surrogate must be followed by a low one, inside this chunk.
			if c+2 > n {
				return j, pairs, errSurrogate
			}
			if j+6 > len(b) {
				return j, pairs, errShort
			}
			if b[j+3]&0xf0 != 0xe0 {
				return j, pairs, errSurrogate
			}
			if l := unit3(b[j+3:]); l < 0xdc00 || l > 0xdfff {
				return j, pairs, errSurrogate
			}
			j += 6
			c += 2
			pairs = true
		default:
			return j, pairs, errBadUTF8
		}
	}
	return j, pairs, nil
}

// unit3 decodes a 3-byte sequence the way the reference decoders do (masking, unchecked).
func unit3(b []byte) rune {
	return rune(b[0]&0x0f)<<12 | rune(b[1]&0x3f)<<6 | rune(b[2]&0x3f)
}

// appendString appends the UTF-8 form of the string at b[i] (already validated by
// stringAt) to dst: chunks joined, surrogate pairs combined into one 4-byte sequence.
func appendString(dst, b []byte, i int) []byte {
	for {
		n, j, last, err := chunkHeader(b, i)
		if err != nil {
			return dst
		}
		for c := 0; c < n; {
			x := b[j]
			switch {
			case x < 0x80:
				dst = append(dst, x)
				j++
				c++
			case x&0xe0 == 0xc0:
				dst = append(dst, b[j:j+2]...)
				j += 2
				c++
			default:
				if u := unit3(b[j:]); u >= 0xd800 && u <= 0xdbff {
					r := (u-0xd800)<<10 + (unit3(b[j+3:]) - 0xdc00) + 0x10000
					dst = utf8.AppendRune(dst, r)
					j += 6
					c += 2
					continue
				}
				dst = append(dst, b[j:j+3]...)
				j += 3
				c++
			}
		}
		if last {
			return dst
		}
		i = j
	}
}

// readString returns the UTF-8 value of the string at b[i]: aliasing b when the wire bytes
// already are that value, else a new slice.
func readString(b []byte, i int) (s []byte, next int, null bool, err error) {
	s, next, plain, null, err := stringAt(b, i)
	if err != nil || null || plain {
		return s, next, null, err
	}
	return appendString(nil, b, i), next, false, nil
}

// intAt reads a hessian2 int (or null, which the decoders read as 0) at b[i].
func intAt(b []byte, i int) (v int32, next int, err error) {
	if i >= len(b) {
		return 0, i, errShort
	}
	switch t := b[i]; {
	case t >= 0x80 && t <= 0xbf:
		return int32(t) - 0x90, i + 1, nil
	case t >= 0xc0 && t <= 0xcf:
		if i+2 > len(b) {
			return 0, i, errShort
		}
		return int32(int16(uint16(t-0xc8)<<8 | uint16(b[i+1]))), i + 2, nil
	case t >= 0xd0 && t <= 0xd7:
		if i+3 > len(b) {
			return 0, i, errShort
		}
		v := int32(t-0xd4)<<16 | int32(b[i+1])<<8 | int32(b[i+2])
		return v << 8 >> 8, i + 3, nil // sign-extend 24 bits
	case t == tagInt:
		if i+5 > len(b) {
			return 0, i, errShort
		}
		return int32(uint32(b[i+1])<<24 | uint32(b[i+2])<<16 | uint32(b[i+3])<<8 | uint32(b[i+4])), i + 5, nil
	case t == tagNull:
		return 0, i + 1, nil
	}
	return 0, i, errNotInt
}

// countArgs counts the parameters in a JVM descriptor exactly as dubbo-go-hessian2 does
// (len(DescRegex.FindAllString(desc, -1))): primitives, Lpkg/Class; and arrays of either;
// bytes that start no match are skipped.
func countArgs(desc []byte) int {
	n := 0
	for i := 0; i < len(desc); {
		if l := matchDesc(desc, i); l > 0 {
			n++
			i += l
		} else {
			i++
		}
	}
	return n
}

func isPrimitive(c byte) bool {
	switch c {
	case 'V', 'Z', 'B', 'C', 'D', 'F', 'I', 'J', 'S':
		return true
	}
	return false
}

func matchDesc(d []byte, i int) int {
	switch c := d[i]; {
	case isPrimitive(c):
		return 1
	case c == 'L':
		return matchClass(d, i)
	case c == '[':
		j := i
		for j < len(d) && d[j] == '[' {
			j++
		}
		if j == len(d) {
			return 0
		}
		if isPrimitive(d[j]) {
			return j + 1 - i
		}
		if d[j] == 'L' {
			if l := matchClass(d, j); l > 0 {
				return j - i + l
			}
		}
	}
	return 0
}

// matchClass matches L ident (/ ident)* ; with ident = [_$a-zA-Z][_$a-zA-Z0-9]*.
func matchClass(d []byte, i int) int {
	j := i + 1
	for {
		if j >= len(d) || !identStart(d[j]) {
			return 0
		}
		j++
		for j < len(d) && (identStart(d[j]) || d[j] >= '0' && d[j] <= '9') {
			j++
		}
		if j >= len(d) {
			return 0
		}
		switch d[j] {
		case ';':
			return j + 1 - i
		case '/':
			j++
		default:
			return 0
		}
	}
}

func identStart(c byte) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// walker skips hessian2 values without allocating (class definitions beyond its inline
// array aside), checking every declared length against the bytes left and bounding the
// nesting. It exists so that dubbo-go-hessian2 only ever sees bodies it can decode without
// crashing the process: the library recurses once per nesting level (a few MiB of nested
// lists overflow the goroutine stack, which is fatal, not a panic) and allocates declared
// lengths up front (`58 49 7f ff ff ff` asks for 2^31 interfaces: a fatal out-of-memory).
type walker struct {
	b        []byte
	maxDepth int
	nclasses int      // class definitions seen
	inline   [8]int32 // field counts of the first class definitions, in order
	more     []int32  // and of the rest
	complex  int      // containers, objects, class definitions, refs and type refs seen
}

// fields returns the field count of class definition idx.
func (w *walker) fields(idx int) int32 {
	if idx < len(w.inline) {
		return w.inline[idx]
	}
	return w.more[idx-len(w.inline)]
}

func newWalker(b []byte, maxDepth int) walker {
	return walker{b: b, maxDepth: maxDepth}
}

// value skips the value at w.b[i] and returns the offset after it.
func (w *walker) value(i, depth int) (int, error) {
	if depth > w.maxDepth {
		return i, errTooDeep
	}
	b := w.b
	if i >= len(b) {
		return i, errShort
	}
	t := b[i]
	switch {
	case t == tagNull || t == tagTrue || t == tagFalse:
		return i + 1, nil
	case t >= 0x80 && t <= 0xbf, t >= 0xc0 && t <= 0xcf, t >= 0xd0 && t <= 0xd7, t == tagInt:
		_, next, err := intAt(b, i)
		return next, err
	case t >= 0xd8 && t <= 0xef, t == 0x5b, t == 0x5c:
		return w.fixed(i, 1)
	case t >= 0xf0, t == 0x5d:
		return w.fixed(i, 2)
	case t >= 0x38 && t <= 0x3f, t == 0x5e:
		return w.fixed(i, 3)
	case t == tagLongInt, t == 0x5f, t == tagDateMinute:
		return w.fixed(i, 5)
	case t == tagLong, t == tagDouble, t == tagDate:
		return w.fixed(i, 9)
	case t <= 0x1f, t >= 0x30 && t <= 0x33, t == tagString, t == tagStringChunk:
		_, next, _, _, err := stringAt(b, i)
		return next, err
	case t >= 0x20 && t <= 0x2f, t >= 0x34 && t <= 0x37, t == tagBinary, t == tagBinaryChunk:
		return w.binary(i)
	case t == tagRef:
		w.complex++
		_, next, err := intAt(b, i+1)
		return next, err
	case t == tagListVar || t == tagListVarUntyp:
		w.complex++
		j := i + 1
		if t == tagListVar {
			var err error
			if j, err = w.typ(j); err != nil {
				return j, err
			}
		}
		return w.untilEnd(j, depth, 1)
	case t == tagListFixed || t == tagListFixUntyp:
		w.complex++
		j := i + 1
		if t == tagListFixed {
			var err error
			if j, err = w.typ(j); err != nil {
				return j, err
			}
		}
		n, j, err := intAt(b, j)
		if err != nil {
			return j, err
		}
		return w.values(j, depth, n)
	case t >= 0x70 && t <= 0x77:
		w.complex++
		j, err := w.typ(i + 1)
		if err != nil {
			return j, err
		}
		return w.values(j, depth, int32(t-0x70))
	case t >= 0x78 && t <= 0x7f:
		w.complex++
		return w.values(i+1, depth, int32(t-0x78))
	case t == tagMap || t == tagMapUntyped:
		w.complex++
		j := i + 1
		if t == tagMap {
			var err error
			if j, err = w.typ(j); err != nil {
				return j, err
			}
		}
		return w.untilEnd(j, depth, 2)
	case t == tagClassDef:
		w.complex++
		j, err := w.classDef(i + 1)
		if err != nil {
			return j, err
		}
		return w.value(j, depth+1) // the library recurses here: count it
	case t == tagObject || t >= 0x60 && t <= 0x6f:
		w.complex++
		idx, j := int32(t-0x60), i+1
		if t == tagObject {
			var err error
			if idx, j, err = intAt(b, j); err != nil {
				return j, err
			}
		}
		if idx < 0 || int(idx) >= w.nclasses {
			return j, errBadClass
		}
		return w.values(j, depth, w.fields(int(idx)))
	}
	return i, errBadTag
}

func (w *walker) fixed(i, n int) (int, error) {
	if i+n > len(w.b) {
		return i, errShort
	}
	return i + n, nil
}

// typ skips a list or map type: a string, or an int referring to an earlier type.
func (w *walker) typ(i int) (int, error) {
	if _, next, _, _, err := stringAt(w.b, i); err == nil {
		return next, nil
	}
	w.complex++
	_, next, err := intAt(w.b, i)
	return next, err
}

// values skips n values, each at least one byte.
func (w *walker) values(i, depth int, n int32) (int, error) {
	if n < 0 || int(n) > len(w.b)-i {
		return i, errBadLength
	}
	for range n {
		var err error
		if i, err = w.value(i, depth+1); err != nil {
			return i, err
		}
	}
	return i, nil
}

// untilEnd skips values (groups of per: 2 for map entries) up to the 'Z' that ends them.
func (w *walker) untilEnd(i, depth, per int) (int, error) {
	for {
		if i >= len(w.b) {
			return i, errMissingEnd
		}
		if w.b[i] == tagEnd {
			return i + 1, nil
		}
		for range per {
			var err error
			if i, err = w.value(i, depth+1); err != nil {
				return i, err
			}
		}
	}
}

func (w *walker) binary(i int) (int, error) {
	b := w.b
	for {
		if i >= len(b) {
			return i, errShort
		}
		var n, hdr int
		t := b[i]
		switch {
		case t >= 0x20 && t <= 0x2f:
			n, hdr = int(t-0x20), 1
		case t >= 0x34 && t <= 0x37:
			if i+2 > len(b) {
				return i, errShort
			}
			n, hdr = int(t-0x34)<<8|int(b[i+1]), 2
		case t == tagBinary || t == tagBinaryChunk:
			if i+3 > len(b) {
				return i, errShort
			}
			n, hdr = int(b[i+1])<<8|int(b[i+2]), 3
		default:
			return i, errBadBinary
		}
		if i+hdr+n > len(b) {
			return i, errShort
		}
		i += hdr + n
		if t != tagBinaryChunk {
			return i, nil
		}
	}
}

// classDef skips 'C' name fieldCount fieldName* and records the field count.
func (w *walker) classDef(i int) (int, error) {
	_, i, _, null, err := stringAt(w.b, i)
	if err != nil {
		return i, err
	}
	if null {
		return i, errNotString
	}
	n, i, err := intAt(w.b, i)
	if err != nil {
		return i, err
	}
	if n < 0 || int(n) > len(w.b)-i {
		return i, errBadLength
	}
	for range n {
		var null bool
		if _, i, _, null, err = stringAt(w.b, i); err != nil {
			return i, err
		}
		if null {
			return i, errNotString
		}
	}
	if w.nclasses < len(w.inline) {
		w.inline[w.nclasses] = n
	} else {
		w.more = append(w.more, n)
	}
	w.nclasses++
	return i, nil
}

package http1

import (
	"bytes"
	"strconv"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

// Chunked framing errors.
var (
	ErrBadChunkSize      = &Error{400, "invalid chunk size"}
	ErrChunkSizeOverflow = &Error{400, "chunk size overflows int64"}
	ErrBadChunkExtension = &Error{400, "invalid chunk extension"}
	ErrChunkLineTooLong  = &Error{400, "chunk-size line too long"}
	ErrMissingChunkCRLF  = &Error{400, "chunk data not followed by CRLF"}
	ErrTrailerTooLarge   = &Error{431, "trailer section too large"}
)

type chunkState uint8

const (
	chunkSize  chunkState = iota // expecting a chunk-size line
	chunkData                    // inside chunk data
	chunkCRLF                    // expecting the CRLF after chunk data
	chunkTrail                   // after the last chunk: trailer section
	chunkDone
)

// ChunkedReader decodes a chunked body incrementally (RFC 9112 §7.1). Feed it the
// unconsumed body bytes; it hands back chunk data as slices of its input, without
// copying. Line endings must be CRLF: a bare LF or CR anywhere in the framing is an
// error (CVE-2025-22871). A chunk-size line (with extensions) and the trailer section
// are only consumed once complete, so they too alias the input.
//
// The zero value is ready, with default limits; Reset reuses a reader.
type ChunkedReader struct {
	lim    Limits
	state  chunkState
	remain int64 // data bytes left in the current chunk
	total  int64 // data bytes seen, for MaxBodyBytes
	limSet bool
	// Canonical makes Next rewrite a chunk-size line that is not 1 to 16 hex digits
	// alone (an extension, whitespace, more digits) to the size in lowercase hex and
	// CRLF, in place at the end of the line; Skip then names the bytes in front of it that
	// the caller drops (NextCompact does). What a proxy forwards is then framed in the
	// one form every parser reads alike, as Envoy, nginx and HAProxy re-frame what they
	// forward. Reset keeps it.
	Canonical bool
	skipAt    int // this Next call's bytes to drop: b[skipAt:skipAt+skipN]
	skipN     int
	dataAt    int // offset in b of this call's data
	// Trailers holds the trailer fields once the body is done. They alias the input of
	// the last Next call; the slice is reused after Reset.
	Trailers Headers
}

// Reset prepares r for a new body with the given limits (zero fields: defaults).
func (r *ChunkedReader) Reset(lim Limits) {
	lim.norm()
	*r = ChunkedReader{lim: lim, limSet: true, Trailers: r.Trailers[:0], Canonical: r.Canonical}
}

// BodyBytes returns the number of data bytes decoded so far.
func (r *ChunkedReader) BodyBytes() int64 { return r.total }

// Done reports whether the final chunk and the trailer section have been read.
func (r *ChunkedReader) Done() bool { return r.state == chunkDone }

// Next decodes from the start of b. It returns chunk data (a sub-slice of b, possibly
// empty), the number of bytes of b it used (framing and data; the caller drops them),
// and done once the body, trailers included, has ended. consumed == 0 with no data,
// not done and no error means b holds too little to go on. At most one data slice is
// returned per call. After done, the bytes after the body belong to the next message.
func (r *ChunkedReader) Next(b []byte) (data []byte, consumed int, done bool, err error) {
	if !r.limSet {
		r.lim.norm()
		r.limSet = true
	}
	c := 0
	r.skipN = 0
	for {
		switch r.state {
		case chunkSize:
			n, size, err := r.sizeLine(b[c:])
			if err != nil || n == 0 {
				return nil, c, false, err
			}
			if r.Canonical && !plainSizeLine(b[c:c+n]) {
				r.skipAt, r.skipN = c, n-canonicalSizeLine(b[c:c+n], size)
			}
			c += n
			if size == 0 {
				r.state = chunkTrail
				continue
			}
			if r.lim.MaxBodyBytes > 0 && size > r.lim.MaxBodyBytes-r.total {
				return nil, c, false, ErrBodyTooLarge
			}
			r.remain, r.state = size, chunkData
		case chunkData:
			rest := b[c:]
			if len(rest) == 0 {
				return nil, c, false, nil
			}
			k := len(rest)
			if int64(k) > r.remain {
				k = int(r.remain)
			}
			data = rest[:k:k]
			r.dataAt = c
			c += k
			r.remain -= int64(k)
			r.total += int64(k)
			if r.remain == 0 {
				r.state = chunkCRLF
				// Take the CRLF too when it is already here.
				if rest = b[c:]; len(rest) >= 2 && rest[0] == '\r' && rest[1] == '\n' {
					c += 2
					r.state = chunkSize
				}
			}
			return data, c, false, nil
		case chunkCRLF:
			rest := b[c:]
			if len(rest) == 0 {
				return nil, c, false, nil
			}
			if rest[0] != '\r' {
				return nil, c, false, ErrMissingChunkCRLF
			}
			if len(rest) == 1 {
				return nil, c, false, nil
			}
			if rest[1] != '\n' {
				return nil, c, false, ErrMissingChunkCRLF
			}
			c += 2
			r.state = chunkSize
		case chunkTrail:
			n, err := r.trailers(b[c:])
			if err != nil || n == 0 {
				return nil, c, false, err
			}
			c += n
			r.state = chunkDone
			return nil, c, true, nil
		default:
			return nil, c, true, nil
		}
	}
}

// Skip returns the bytes of the last Next call's input to drop, b[at:at+n] (n 0: none):
// the front of a chunk-size line that Canonical rewrote.
func (r *ChunkedReader) Skip() (at, n int) { return r.skipAt, r.skipN }

// NextCompact is Next for a proxy that forwards the body with Canonical set. b[:w] holds
// the body decoded so far, in canonical framing, and b[k:] (k >= w) what is left. It
// decodes from b[k:], moves what it consumed, less the bytes Skip names, down to b[w:],
// and returns the new k and w and the call's data at its new place. Once the caller
// stops, it moves the undecoded rest b[k:] down to b[w:] (and its buffer shrinks by k-w).
// While nothing was dropped, w == k and nothing moves.
func (r *ChunkedReader) NextCompact(b []byte, k, w int) (data []byte, nk, nw int, done bool, err error) {
	data, used, done, err := r.Next(b[k:])
	if r.skipN == 0 && w == k {
		return data, k + used, w + used, done, err
	}
	at, n := used, 0
	if r.skipN > 0 {
		at, n = r.skipAt, r.skipN
	}
	dataAt := r.dataAt
	copy(b[w:], b[k:k+at])
	copy(b[w+at:], b[k+at+n:k+used])
	if data != nil {
		if dataAt >= at+n {
			dataAt -= n
		}
		data = b[w+dataAt : w+dataAt+len(data) : w+dataAt+len(data)]
	}
	return data, k + used, w + used - n, done, err
}

// plainSizeLine reports whether a chunk-size line (CRLF included) is 1 to 16 hex digits
// alone, which every parser reads alike.
func plainSizeLine(line []byte) bool {
	digits := len(line) - 2
	if digits < 1 || digits > 16 {
		return false
	}
	for _, c := range line[:digits] {
		if unhex(c) < 0 {
			return false
		}
	}
	return true
}

// canonicalSizeLine writes size in lowercase hex and CRLF at the end of line (a valid
// chunk-size line, never shorter) and returns its length.
func canonicalSizeLine(line []byte, size int64) int {
	var tmp [18]byte
	t := strconv.AppendInt(tmp[:0], size, 16)
	t = append(t, '\r', '\n')
	copy(line[len(line)-len(t):], t)
	return len(t)
}

// sizeLine parses chunk-size [chunk-ext] CRLF at the start of p; n is 0 when the line is
// incomplete.
func (r *ChunkedReader) sizeLine(p []byte) (n int, size int64, err error) {
	w := p
	if len(w) > r.lim.MaxChunkLine {
		w = w[:r.lim.MaxChunkLine]
	}
	end := bytes.IndexByte(w, '\n')
	if end < 0 {
		// Fail early on what is already wrong.
		if err := checkChunkPrefix(w); err != nil {
			return 0, 0, err
		}
		if len(p) >= r.lim.MaxChunkLine {
			return 0, 0, ErrChunkLineTooLong
		}
		return 0, 0, nil
	}
	if end == 0 || w[end-1] != '\r' {
		return 0, 0, ErrBareLF
	}
	size, err = parseChunkLine(w[:end-1])
	if err != nil {
		return 0, 0, err
	}
	return end + 1, size, nil
}

// parseChunkLine parses a chunk-size line without its CRLF:
//
//	chunk-size = 1*HEXDIG
//	chunk-ext  = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
//	ext-val    = token / quoted-string
func parseChunkLine(line []byte) (int64, error) {
	size, i, err := chunkSizeDigits(line)
	if err != nil {
		return 0, err
	}
	if i == 0 || (i < len(line) && line[i] != ';' && line[i] != ' ' && line[i] != '\t') {
		return 0, ErrBadChunkSize
	}
	ws := func() {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
	}
	for i < len(line) {
		ws()
		if i == len(line) || line[i] != ';' {
			return 0, ErrBadChunkExtension
		}
		i++
		ws()
		ns := i
		for i < len(line) && tchar[line[i]] {
			i++
		}
		if i == ns {
			return 0, ErrBadChunkExtension
		}
		j := i
		for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
			j++
		}
		if j == len(line) || line[j] != '=' {
			continue
		}
		i = j + 1
		ws()
		if i < len(line) && line[i] == '"' {
			if i = quotedString(line, i); i < 0 {
				return 0, ErrBadChunkExtension
			}
			continue
		}
		vs := i
		for i < len(line) && tchar[line[i]] {
			i++
		}
		if i == vs {
			return 0, ErrBadChunkExtension
		}
	}
	return size, nil
}

// quotedString returns the offset past the quoted-string starting at line[i] (a DQUOTE),
// or -1 when it is malformed or unterminated.
func quotedString(line []byte, i int) int {
	for i++; i < len(line); i++ {
		switch c := line[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			if i++; i == len(line) || !vchar[line[i]] {
				return -1
			}
		case !vchar[c]:
			return -1
		}
	}
	return -1
}

// chunkSizeDigits parses the leading hex digits of line; i is how many there are.
func chunkSizeDigits(line []byte) (size int64, i int, err error) {
	for ; i < len(line); i++ {
		d := unhex(line[i])
		if d < 0 {
			break
		}
		if size > (1<<63-1)>>4 {
			return 0, 0, ErrChunkSizeOverflow
		}
		size = size<<4 | int64(d)
	}
	return size, i, nil
}

// checkChunkPrefix reports errors already visible in an incomplete chunk-size line: a
// size that is missing or overflows, or bytes no extension may hold.
func checkChunkPrefix(p []byte) error {
	_, i, err := chunkSizeDigits(p)
	if err != nil {
		return err
	}
	if i < len(p) && (i == 0 || (p[i] != ';' && p[i] != ' ' && p[i] != '\t' && p[i] != '\r')) {
		return ErrBadChunkSize
	}
	for j := i; j < len(p); j++ {
		if !vchar[p[j]] && !(p[j] == '\r' && j == len(p)-1) {
			return ErrBadChunkExtension
		}
	}
	return nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// trailers parses the trailer section at the start of p (after the last chunk); n is 0
// when it is incomplete.
func (r *ChunkedReader) trailers(p []byte) (int, error) {
	if len(p) == 0 || (len(p) == 1 && p[0] == '\r') {
		return 0, nil
	}
	if p[0] == '\r' {
		if p[1] != '\n' {
			return 0, ErrBareCR
		}
		return 2, nil
	}
	if p[0] == '\n' {
		return 0, ErrBareLF
	}
	w := p
	if len(w) > r.lim.MaxTrailerBytes {
		w = w[:r.lim.MaxTrailerBytes]
	}
	end := bytes.Index(w, crlfcrlf)
	if end < 0 {
		if err := scanLines(w, r.lim.MaxHeaders); err != nil {
			return 0, err
		}
		if len(p) >= r.lim.MaxTrailerBytes {
			return 0, ErrTrailerTooLarge
		}
		return 0, nil
	}
	hs := r.Trailers[:0]
	n, err := parseFields(w[:end+4], 0, r.lim.MaxHeaders, &hs, nil, false)
	if err == errMore { // cannot happen: the section ends with CRLFCRLF
		err = ErrBadHeaderValue
	}
	r.Trailers = hs
	if err != nil {
		return 0, err
	}
	return n, nil
}

// AppendChunk writes data as one chunk (size line, data, CRLF). Empty data writes
// nothing: an empty chunk would end the body.
func AppendChunk(dst *buffer.IoBuffer, data []byte) {
	if len(data) == 0 {
		return
	}
	dst.Grow(len(data) + 20)
	AppendChunkHeader(dst, len(data))
	_, _ = dst.Write(data)
	_, _ = dst.WriteString("\r\n")
}

// AppendChunkHeader writes the size line of a chunk of n > 0 bytes; the caller sends the
// n data bytes (from another buffer, for writev) and then AppendChunkEnd.
func AppendChunkHeader(dst *buffer.IoBuffer, n int) {
	if n <= 0 {
		panic("http1: AppendChunkHeader with a non-positive size")
	}
	var b [20]byte
	s := strconv.AppendUint(b[:0], uint64(n), 16)
	s = append(s, '\r', '\n')
	_, _ = dst.Write(s)
}

// AppendChunkEnd writes the CRLF that closes a chunk's data.
func AppendChunkEnd(dst *buffer.IoBuffer) { _, _ = dst.WriteString("\r\n") }

// AppendLastChunk writes the last chunk, the trailer fields and the final CRLF. Trailer
// fields are validated first (ErrBadEdit, nothing written).
func AppendLastChunk(dst *buffer.IoBuffer, trailers Headers) error {
	if !validFields(trailers) {
		return ErrBadEdit
	}
	_, _ = dst.WriteString("0\r\n")
	for _, f := range trailers {
		writeField(dst, f.Name, f.Value)
	}
	_, _ = dst.WriteString("\r\n")
	return nil
}

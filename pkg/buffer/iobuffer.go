package buffer

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync/atomic"
)

// minRead is the smallest free tail ReadOnce reads into after growing.
const minRead = MinClass

// IoBuffer is a byte buffer with a read cursor and a write cursor. Unread bytes are
// buf[r:w]; writes append at w and grow the backing slice through the Pool (a larger size
// class, the old slice going back to its class). When the tail is too short, the unread
// bytes are first moved to the front if the read cursor has passed half of the buffer (or the
// buffer would be at most half full afterwards), which keeps the cost of compaction
// amortised.
//
// Buffers from Pool.NewBuffer carry a reference count of 1: Retain adds one, Release drops
// one and at zero returns the storage and the IoBuffer itself to the pool. Releasing more
// often than retaining is a bug and panics ("double release").
//
// The zero IoBuffer is an empty, unpooled buffer: it grows with plain allocations and needs
// no Release. An IoBuffer is not safe for concurrent mutation.
type IoBuffer struct {
	pool *Pool
	bp   *[]byte // pooled backing slice; nil when none
	buf  []byte  // (*bp)[:cap]; nil when none
	r, w int
	size int // capacity to allocate when the first byte is written
	refs atomic.Int32
}

// NewBuffer returns a buffer with reference count 1 and at least size bytes of capacity.
// With size 0 no storage is taken until the first write or read.
func (p *Pool) NewBuffer(size int) *IoBuffer {
	b, _ := p.bufs.Get().(*IoBuffer)
	if b == nil {
		b = &IoBuffer{}
	}
	b.pool = p
	b.size = size
	b.refs.Store(1)
	if size > 0 {
		b.setBacking(p.Get(size))
	}
	return b
}

func (b *IoBuffer) setBacking(bp *[]byte) {
	b.bp = bp
	b.buf = (*bp)[:cap(*bp)]
}

// Bytes returns the unread bytes. The slice aliases the buffer and is valid until the next
// call that writes, grows, drains, resets or releases.
func (b *IoBuffer) Bytes() []byte { return b.buf[b.r:b.w] }

// Len returns the number of unread bytes.
func (b *IoBuffer) Len() int { return b.w - b.r }

// Cap returns the capacity of the backing slice.
func (b *IoBuffer) Cap() int { return len(b.buf) }

// Available returns the number of bytes that can be written without growing.
func (b *IoBuffer) Available() int { return len(b.buf) - b.w }

// Drain consumes n unread bytes. Draining more than Len is a bug and panics.
func (b *IoBuffer) Drain(n int) {
	if n < 0 || n > b.w-b.r {
		panic(fmt.Sprintf("buffer: Drain(%d) with %d unread bytes", n, b.w-b.r))
	}
	b.r += n
	if b.r == b.w {
		b.r, b.w = 0, 0
	}
}

// Truncate keeps the first n unread bytes and discards the rest. n outside 0..Len is a
// bug and panics.
func (b *IoBuffer) Truncate(n int) {
	if n < 0 || n > b.w-b.r {
		panic(fmt.Sprintf("buffer: Truncate(%d) with %d unread bytes", n, b.w-b.r))
	}
	b.w = b.r + n
	if b.r == b.w {
		b.r, b.w = 0, 0
	}
}

// Reset discards all unread bytes and keeps the storage.
func (b *IoBuffer) Reset() { b.r, b.w = 0, 0 }

// Compact moves the unread bytes to the front of the buffer.
func (b *IoBuffer) Compact() {
	if b.r == 0 {
		return
	}
	n := copy(b.buf, b.buf[b.r:b.w])
	b.r, b.w = 0, n
}

// Shrink returns the storage to the pool when the buffer is empty and its capacity exceeds
// max; the next write takes a new slice of the initial size. It bounds what an idle
// connection keeps after a large message.
func (b *IoBuffer) Shrink(max int) {
	if b.r != b.w || len(b.buf) <= max || b.bp == nil {
		return
	}
	b.putBacking()
}

func (b *IoBuffer) putBacking() {
	if b.bp != nil && b.pool != nil {
		b.pool.Put(b.bp)
	}
	b.bp, b.buf = nil, nil
	b.r, b.w = 0, 0
}

// Grow ensures at least n bytes can be written without another allocation.
func (b *IoBuffer) Grow(n int) {
	if n <= len(b.buf)-b.w {
		return
	}
	m, c := b.w-b.r, len(b.buf)
	if m+n <= c/2 || (b.r >= c/2 && m+n <= c) {
		b.Compact()
		return
	}
	want := max(m+n, 2*c, b.size)
	var nbp *[]byte
	if b.pool != nil {
		nbp = b.pool.Get(want)
	} else {
		s := make([]byte, want)
		nbp = &s
	}
	nb := (*nbp)[:cap(*nbp)]
	copy(nb, b.buf[b.r:b.w])
	if b.bp != nil && b.pool != nil {
		b.pool.Put(b.bp)
	}
	b.bp, b.buf = nbp, nb
	b.r, b.w = 0, m
}

// Alloc reserves n bytes at the tail and returns them for the caller to fill; they count
// as written.
func (b *IoBuffer) Alloc(n int) []byte {
	b.Grow(n)
	s := b.buf[b.w : b.w+n : b.w+n]
	b.w += n
	return s
}

// Write appends p. It never fails.
func (b *IoBuffer) Write(p []byte) (int, error) {
	b.Grow(len(p))
	b.w += copy(b.buf[b.w:], p)
	return len(p), nil
}

// WriteString appends s. It never fails.
func (b *IoBuffer) WriteString(s string) (int, error) {
	b.Grow(len(s))
	b.w += copy(b.buf[b.w:], s)
	return len(s), nil
}

// WriteByte appends c. It never fails.
func (b *IoBuffer) WriteByte(c byte) error {
	b.Grow(1)
	b.buf[b.w] = c
	b.w++
	return nil
}

// WriteUint16 appends v in big-endian order.
func (b *IoBuffer) WriteUint16(v uint16) { binary.BigEndian.PutUint16(b.Alloc(2), v) }

// WriteUint32 appends v in big-endian order.
func (b *IoBuffer) WriteUint32(v uint32) { binary.BigEndian.PutUint32(b.Alloc(4), v) }

// WriteUint64 appends v in big-endian order.
func (b *IoBuffer) WriteUint64(v uint64) { binary.BigEndian.PutUint64(b.Alloc(8), v) }

// Peek returns n unread bytes starting off bytes past the read cursor, without consuming
// them; ok is false when fewer than off+n bytes are unread. The slice aliases the buffer.
func (b *IoBuffer) Peek(off, n int) (p []byte, ok bool) {
	if off < 0 || n < 0 || off > b.w-b.r-n {
		return nil, false
	}
	s := b.r + off
	return b.buf[s : s+n : s+n], true
}

// PeekUint8 returns the byte at off past the read cursor.
func (b *IoBuffer) PeekUint8(off int) (uint8, bool) {
	p, ok := b.Peek(off, 1)
	if !ok {
		return 0, false
	}
	return p[0], true
}

// PeekUint16 returns the big-endian uint16 at off past the read cursor.
func (b *IoBuffer) PeekUint16(off int) (uint16, bool) {
	p, ok := b.Peek(off, 2)
	if !ok {
		return 0, false
	}
	return binary.BigEndian.Uint16(p), true
}

// PeekUint32 returns the big-endian uint32 at off past the read cursor.
func (b *IoBuffer) PeekUint32(off int) (uint32, bool) {
	p, ok := b.Peek(off, 4)
	if !ok {
		return 0, false
	}
	return binary.BigEndian.Uint32(p), true
}

// PeekUint64 returns the big-endian uint64 at off past the read cursor.
func (b *IoBuffer) PeekUint64(off int) (uint64, bool) {
	p, ok := b.Peek(off, 8)
	if !ok {
		return 0, false
	}
	return binary.BigEndian.Uint64(p), true
}

// ReadOnce calls r.Read once into the free tail, growing (or compacting) first when the
// tail is empty. It returns what r.Read returned; bytes read are appended even with an
// error.
func (b *IoBuffer) ReadOnce(r io.Reader) (int, error) {
	if b.w == len(b.buf) {
		b.Grow(max(minRead, len(b.buf)/2))
	}
	n, err := r.Read(b.buf[b.w:])
	if n > 0 {
		b.w += n
	}
	return n, err
}

// Retain adds a reference. Retaining a released buffer is a bug and panics.
func (b *IoBuffer) Retain() {
	if b.refs.Add(1) <= 1 {
		panic("buffer: IoBuffer retained after release")
	}
}

// Release drops a reference; at zero the storage and the IoBuffer go back to the pool and
// must not be used again. Releasing below zero is a bug and panics with "double release".
func (b *IoBuffer) Release() {
	n := b.refs.Add(-1)
	if n > 0 {
		return
	}
	if n < 0 {
		panic("buffer: IoBuffer double release (Release called more often than NewBuffer+Retain)")
	}
	b.putBacking()
	b.size = 0
	if p := b.pool; p != nil {
		b.pool = nil
		p.bufs.Put(b)
	}
}

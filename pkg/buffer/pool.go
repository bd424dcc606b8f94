// Package buffer holds mosnlite's pooled byte storage: size-class byte pools, IoBuffer (a
// growable byte buffer with read and write cursors and a reference count) and Value (the
// per-request set of buffers that is returned in one call when the request ends).
//
// A Pool is a value passed to the components that need it, never a package global, so
// a test can build its own and a server's pools die with it.
package buffer

import (
	"math/bits"
	"sync"
)

// Size classes: powers of two from MinClass to MaxClass.
const (
	minShift = 9  // 512 B
	maxShift = 24 // 16 MiB

	// MinClass is the smallest pooled slice capacity.
	MinClass = 1 << minShift
	// MaxClass is the largest pooled slice capacity; larger requests are plain allocations.
	MaxClass = 1 << maxShift

	numClasses = maxShift - minShift + 1
)

// Pool hands out byte slices in power-of-two size classes, IoBuffers and Values. The zero
// value is not usable; call NewPool. A Pool is safe for concurrent use.
type Pool struct {
	classes [numClasses]sync.Pool // *[]byte, len == cap == class size
	bufs    sync.Pool             // *IoBuffer
	values  sync.Pool             // *Value
	headers sync.Pool             // *[]byte with a nil slice, for FixedPool.Put
}

// NewPool returns an empty pool.
func NewPool() *Pool { return &Pool{} }

// classOf returns the index of the smallest class that holds n bytes, or -1 when n is
// larger than MaxClass.
func classOf(n int) int {
	if n <= MinClass {
		return 0
	}
	if n > MaxClass {
		return -1
	}
	return bits.Len(uint(n-1)) - minShift
}

// exactClass returns the class index whose size is exactly c, or -1.
func exactClass(c int) int {
	if c < MinClass || c > MaxClass || c&(c-1) != 0 {
		return -1
	}
	return bits.TrailingZeros(uint(c)) - minShift
}

// Get returns a slice of length n whose capacity is n's size class. When n is larger than
// MaxClass the slice is a plain allocation of exactly n bytes, which Put drops. The
// contents are not zeroed.
func (p *Pool) Get(n int) *[]byte {
	if n < 0 {
		n = 0
	}
	ci := classOf(n)
	if ci < 0 {
		b := make([]byte, n)
		return &b
	}
	if v := p.classes[ci].Get(); v != nil {
		bp := v.(*[]byte)
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, 1<<(ci+minShift))
	return &b
}

// Put returns b to its size class. Slices whose capacity is not exactly a class size are
// dropped. The caller must not use b afterwards.
func (p *Pool) Put(b *[]byte) {
	if b == nil {
		return
	}
	ci := exactClass(cap(*b))
	if ci < 0 {
		return
	}
	*b = (*b)[:cap(*b)]
	p.classes[ci].Put(b)
}

// FixedPool hands out slices of one size from a Pool; it satisfies
// net/http/httputil.BufferPool.
type FixedPool struct {
	p    *Pool
	size int
}

// Fixed returns an adapter that hands out slices of len size.
func (p *Pool) Fixed(size int) *FixedPool { return &FixedPool{p: p, size: size} }

// Get returns a slice of len size.
func (f *FixedPool) Get() []byte {
	bp := f.p.Get(f.size)
	b := *bp
	*bp = nil
	f.p.headers.Put(bp)
	return b
}

// Put returns a slice obtained from Get.
func (f *FixedPool) Put(b []byte) {
	if exactClass(cap(b)) < 0 {
		return
	}
	bp, _ := f.p.headers.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	*bp = b
	f.p.Put(bp)
}

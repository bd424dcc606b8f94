package buffer

import "sync"

// Value is the per-request set of pooled storage (MOSN's bufferValue): everything it hands
// out is owned by it and goes back to the pool in one Release when the request ends.
// Values are pooled themselves. A Value is safe for concurrent use, so the request and
// response sides of a stream may both draw from it.
type Value struct {
	pool   *Pool
	mu     sync.Mutex
	live   bool
	bufs   []*IoBuffer
	slices []*[]byte
}

// NewValue returns an empty Value.
func (p *Pool) NewValue() *Value {
	v, _ := p.values.Get().(*Value)
	if v == nil {
		v = &Value{}
	}
	v.pool = p
	v.live = true
	return v
}

// Buffer returns a buffer of at least size bytes owned by v. The caller must not Release
// it (v does); a Retain must be paired with the caller's own Release as usual.
func (v *Value) Buffer(size int) *IoBuffer {
	b := v.pool.NewBuffer(size)
	v.mu.Lock()
	v.bufs = append(v.bufs, b)
	v.mu.Unlock()
	return b
}

// Bytes returns a pooled slice of len n owned by v, valid until v.Release.
func (v *Value) Bytes(n int) []byte {
	bp := v.pool.Get(n)
	v.mu.Lock()
	v.slices = append(v.slices, bp)
	v.mu.Unlock()
	return *bp
}

// Release releases everything v handed out, then v itself; neither v nor anything it
// handed out may be used afterwards. Releasing twice is a bug and panics.
func (v *Value) Release() {
	v.mu.Lock()
	if !v.live {
		v.mu.Unlock()
		panic("buffer: Value double release")
	}
	v.live = false
	for i, b := range v.bufs {
		b.Release()
		v.bufs[i] = nil
	}
	for i, bp := range v.slices {
		v.pool.Put(bp)
		v.slices[i] = nil
	}
	v.bufs, v.slices = v.bufs[:0], v.slices[:0]
	p := v.pool
	v.pool = nil
	v.mu.Unlock()
	p.values.Put(v)
}

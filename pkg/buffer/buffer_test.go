package buffer

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestPoolGetClasses(t *testing.T) {
	t.Parallel()
	p := NewPool()
	for _, tc := range []struct {
		name    string
		n       int
		wantCap int
	}{
		{"zero", 0, 512},
		{"one", 1, 512},
		{"min class", 512, 512},
		{"just over min", 513, 1024},
		{"16 KiB", 16 << 10, 16 << 10},
		{"16 KiB + 1", 16<<10 + 1, 32 << 10},
		{"max class", MaxClass, MaxClass},
		{"oversize", MaxClass + 1, MaxClass + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bp := p.Get(tc.n)
			if len(*bp) != tc.n || cap(*bp) != tc.wantCap {
				t.Fatalf("Get(%d): len %d cap %d; want len %d cap %d", tc.n, len(*bp), cap(*bp), tc.n, tc.wantCap)
			}
			p.Put(bp)
		})
	}
}

func TestPoolPutDropsWrongSizes(t *testing.T) {
	t.Parallel()
	for _, c := range []int{0, 100, 511, 513, 1000, 3 << 10, 2 * MaxClass} {
		if ci := exactClass(c); ci >= 0 {
			t.Errorf("exactClass(%d) = %d; want -1 (not pooled)", c, ci)
		}
	}
	p := NewPool()
	odd := make([]byte, 700)
	p.Put(&odd) // must not panic, must not be handed out
	p.Put(nil)
	for range 100 {
		if bp := p.Get(600); cap(*bp) != 1024 {
			t.Fatalf("Get(600) cap %d; want 1024", cap(*bp))
		}
	}
}

func TestFixedPool(t *testing.T) {
	t.Parallel()
	f := NewPool().Fixed(32 << 10)
	b := f.Get()
	if len(b) != 32<<10 {
		t.Fatalf("len %d", len(b))
	}
	f.Put(b)
	f.Put(make([]byte, 10)) // dropped
	if b := f.Get(); len(b) != 32<<10 {
		t.Fatalf("len %d", len(b))
	}
}

func TestIoBufferWriteHelpersAndPeek(t *testing.T) {
	t.Parallel()
	p := NewPool()
	b := p.NewBuffer(0)
	defer b.Release()
	b.WriteByte(0x01)
	b.WriteUint16(0x0203)
	b.WriteUint32(0x04050607)
	b.WriteUint64(0x08090a0b0c0d0e0f)
	b.WriteString("xy")
	b.Write([]byte{0xff})
	copy(b.Alloc(2), "zz")
	want := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 'x', 'y', 0xff, 'z', 'z'}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("Bytes() = %x; want %x", b.Bytes(), want)
	}
	if v, ok := b.PeekUint8(0); !ok || v != 1 {
		t.Errorf("PeekUint8(0) = %x, %v", v, ok)
	}
	if v, ok := b.PeekUint16(1); !ok || v != 0x0203 {
		t.Errorf("PeekUint16(1) = %x, %v", v, ok)
	}
	if v, ok := b.PeekUint32(3); !ok || v != 0x04050607 {
		t.Errorf("PeekUint32(3) = %x, %v", v, ok)
	}
	if v, ok := b.PeekUint64(7); !ok || v != 0x08090a0b0c0d0e0f {
		t.Errorf("PeekUint64(7) = %x, %v", v, ok)
	}
	if _, ok := b.PeekUint64(13); ok {
		t.Error("PeekUint64 past the end: ok")
	}
	if _, ok := b.Peek(-1, 1); ok {
		t.Error("Peek(-1, 1): ok")
	}
	if _, ok := b.Peek(0, len(want)+1); ok {
		t.Error("Peek beyond Len: ok")
	}
	b.Drain(3)
	if v, ok := b.PeekUint32(0); !ok || v != 0x04050607 {
		t.Errorf("after Drain(3) PeekUint32(0) = %x, %v", v, ok)
	}
	b.Drain(b.Len())
	if b.Len() != 0 || b.Available() != b.Cap() {
		t.Errorf("drained buffer: Len %d Available %d Cap %d; want cursors reset", b.Len(), b.Available(), b.Cap())
	}
}

func TestIoBufferGrowsAcrossClasses(t *testing.T) {
	t.Parallel()
	p := NewPool()
	b := p.NewBuffer(512)
	defer b.Release()
	var want []byte
	caps := map[int]bool{}
	for i := 0; b.Len() < 3<<20; i++ {
		chunk := bytes.Repeat([]byte{byte(i)}, 1000+i%777)
		b.Write(chunk)
		want = append(want, chunk...)
		caps[b.Cap()] = true
		if c := b.Cap(); c&(c-1) != 0 {
			t.Fatalf("capacity %d is not a size class", c)
		}
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatal("contents differ after growth")
	}
	for c := 1024; c <= 4<<20; c *= 2 {
		if !caps[c] {
			t.Errorf("never held capacity %d (saw %v)", c, caps)
		}
	}
}

func TestIoBufferOversize(t *testing.T) {
	t.Parallel()
	p := NewPool()
	b := p.NewBuffer(0)
	big := bytes.Repeat([]byte("a"), MaxClass+10)
	b.Write(big)
	if b.Len() != len(big) || b.Cap() < len(big) {
		t.Fatalf("Len %d Cap %d", b.Len(), b.Cap())
	}
	b.Release()
	if bp := p.Get(100); cap(*bp) != 512 {
		t.Fatalf("pool corrupted by oversize release: cap %d", cap(*bp))
	}
}

func TestIoBufferCompaction(t *testing.T) {
	t.Parallel()
	p := NewPool()
	b := p.NewBuffer(1024)
	defer b.Release()
	b.Write(bytes.Repeat([]byte("a"), 1000))
	b.Drain(900) // read cursor past half
	b.Write(bytes.Repeat([]byte("b"), 500))
	if b.Cap() != 1024 {
		t.Fatalf("Cap %d; want 1024 (compacted, not grown)", b.Cap())
	}
	if got := string(b.Bytes()); got != strings.Repeat("a", 100)+strings.Repeat("b", 500) {
		t.Fatalf("contents after compaction: %q", got)
	}
	// Read cursor before half and not enough room: grows instead of sliding.
	b.Reset()
	b.Write(bytes.Repeat([]byte("c"), 1000))
	b.Drain(100)
	b.Write(bytes.Repeat([]byte("d"), 100))
	if b.Cap() != 2048 {
		t.Fatalf("Cap %d; want 2048", b.Cap())
	}
}

func TestIoBufferShrink(t *testing.T) {
	t.Parallel()
	p := NewPool()
	b := p.NewBuffer(512)
	defer b.Release()
	b.Write(make([]byte, 10000))
	b.Shrink(512) // not empty: keeps
	if b.Cap() < 10000 {
		t.Fatal("Shrink dropped unread data")
	}
	b.Drain(b.Len())
	b.Shrink(512)
	if b.Cap() != 0 {
		t.Fatalf("Cap %d after Shrink; want 0", b.Cap())
	}
	b.WriteByte('x')
	if b.Cap() != 512 || string(b.Bytes()) != "x" {
		t.Fatalf("after Shrink and write: Cap %d %q", b.Cap(), b.Bytes())
	}
}

type chunkReader struct {
	data []byte
	max  int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.max)], r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestIoBufferReadOnce(t *testing.T) {
	t.Parallel()
	p := NewPool()
	b := p.NewBuffer(512)
	defer b.Release()
	src := bytes.Repeat([]byte("0123456789"), 500)
	r := &chunkReader{data: src, max: 700}
	for {
		_, err := b.ReadOnce(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(b.Bytes(), src) {
		t.Fatal("ReadOnce lost or reordered bytes")
	}
}

func TestIoBufferZeroValue(t *testing.T) {
	t.Parallel()
	var b IoBuffer
	b.WriteString("hello")
	b.WriteUint16(7)
	if b.Len() != 7 {
		t.Fatalf("Len %d", b.Len())
	}
}

func TestIoBufferRefcount(t *testing.T) {
	t.Parallel()
	p := NewPool()
	b := p.NewBuffer(512)
	b.WriteString("x")
	b.Retain()
	b.Release()
	if b.refs.Load() != 1 || b.Len() != 1 {
		t.Fatalf("after Retain+Release: refs %d Len %d", b.refs.Load(), b.Len())
	}
	b.Release()
	if b.refs.Load() != 0 || b.bp != nil {
		t.Fatalf("after last Release: refs %d, storage kept", b.refs.Load())
	}
}

func mustPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		r := recover()
		s, _ := r.(string)
		if !strings.Contains(s, want) {
			t.Fatalf("panic = %v; want one containing %q", r, want)
		}
	}()
	f()
}

func TestDoubleReleasePanics(t *testing.T) {
	t.Parallel()
	p := NewPool()
	b := p.NewBuffer(512)
	b.Release()
	mustPanic(t, "double release", b.Release)

	v := p.NewValue()
	v.Release()
	mustPanic(t, "double release", v.Release)

	var zero IoBuffer
	mustPanic(t, "double release", zero.Release)
}

func TestDrainTooMuchPanics(t *testing.T) {
	t.Parallel()
	b := NewPool().NewBuffer(512)
	defer b.Release()
	b.WriteString("abc")
	mustPanic(t, "Drain(4) with 3 unread bytes", func() { b.Drain(4) })
}

func TestValueReleasesEverything(t *testing.T) {
	t.Parallel()
	p := NewPool()
	v := p.NewValue()
	var bufs []*IoBuffer
	for i := range 5 {
		b := v.Buffer(512 << i)
		b.WriteString("data")
		bufs = append(bufs, b)
	}
	retained := v.Buffer(0)
	retained.Retain() // someone else still holds it
	s := v.Bytes(100)
	if len(s) != 100 {
		t.Fatalf("Bytes(100) len %d", len(s))
	}
	v.Release()
	for i, b := range bufs {
		if b.refs.Load() != 0 || b.bp != nil {
			t.Errorf("buffer %d not released: refs %d", i, b.refs.Load())
		}
	}
	if retained.refs.Load() != 1 {
		t.Errorf("retained buffer refs %d; want 1", retained.refs.Load())
	}
	retained.Release()
	v2 := p.NewValue() // may be v again: must be empty and live
	if len(v2.bufs) != 0 || len(v2.slices) != 0 || !v2.live {
		t.Fatalf("reused Value not clean: %d bufs %d slices live %v", len(v2.bufs), len(v2.slices), v2.live)
	}
	v2.Release()
}

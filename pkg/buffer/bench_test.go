package buffer

import (
	"strconv"
	"testing"
)

func BenchmarkPoolGetPut(b *testing.B) {
	for _, size := range []int{512, 16 << 10, 1 << 20} {
		b.Run(sizeName(size), func(b *testing.B) {
			p := NewPool()
			b.ReportAllocs()
			for b.Loop() {
				p.Put(p.Get(size))
			}
		})
	}
}

func BenchmarkPoolGetPutParallel(b *testing.B) {
	p := NewPool()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.Put(p.Get(4096))
		}
	})
}

func BenchmarkNewBufferRelease(b *testing.B) {
	p := NewPool()
	b.ReportAllocs()
	for b.Loop() {
		buf := p.NewBuffer(16 << 10)
		buf.Release()
	}
}

func BenchmarkValueGetRelease(b *testing.B) {
	p := NewPool()
	b.ReportAllocs()
	for b.Loop() {
		v := p.NewValue()
		v.Buffer(1024).WriteString("header")
		v.Buffer(4096).WriteUint32(42)
		_ = v.Bytes(256)
		v.Release()
	}
}

func BenchmarkWriteDrain(b *testing.B) {
	p := NewPool()
	buf := p.NewBuffer(16 << 10)
	defer buf.Release()
	msg := make([]byte, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)) * 3)
	for b.Loop() {
		buf.Write(msg)
		buf.WriteUint32(7)
		buf.Write(msg)
		buf.Write(msg)
		buf.Drain(buf.Len() - 100)
		buf.Drain(100)
	}
}

func BenchmarkGrowAcrossClasses(b *testing.B) {
	p := NewPool()
	chunk := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf := p.NewBuffer(0)
		for buf.Len() < 256<<10 {
			buf.Write(chunk)
		}
		buf.Release()
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return strconv.Itoa(n>>20) + "MiB"
	case n >= 1<<10:
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

package http1

import (
	"bufio"
	"bytes"
	"io"
	"net/http/httputil"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

func chunkedBody(b *testing.B, size, chunk int) []byte {
	var enc buffer.IoBuffer
	data := bytes.Repeat([]byte("a"), size)
	for p := data; len(p) > 0; p = p[min(chunk, len(p)):] {
		AppendChunk(&enc, p[:min(chunk, len(p))])
	}
	if err := AppendLastChunk(&enc, nil); err != nil {
		b.Fatal(err)
	}
	return enc.Bytes()
}

// BenchmarkChunkedDecode1K decodes a 1 KiB body sent as one chunk.
func BenchmarkChunkedDecode1K(b *testing.B) {
	in := chunkedBody(b, 1024, 1024)
	var r ChunkedReader
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		r.Reset(Limits{})
		for p := in; ; {
			_, c, done, err := r.Next(p)
			if err != nil {
				b.Fatal(err)
			}
			p = p[c:]
			if done {
				break
			}
		}
	}
}

// BenchmarkChunkedDecode1KSmallChunks decodes a 1 KiB body sent as 64-byte chunks.
func BenchmarkChunkedDecode1KSmallChunks(b *testing.B) {
	in := chunkedBody(b, 1024, 64)
	var r ChunkedReader
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		r.Reset(Limits{})
		for p := in; ; {
			_, c, done, err := r.Next(p)
			if err != nil {
				b.Fatal(err)
			}
			p = p[c:]
			if done {
				break
			}
		}
	}
}

// BenchmarkNetHTTPChunked1K is the reference: net/http's chunked reader (which copies).
func BenchmarkNetHTTPChunked1K(b *testing.B) {
	in := chunkedBody(b, 1024, 1024)
	rd := bytes.NewReader(in)
	br := bufio.NewReader(rd)
	buf := make([]byte, 2048)
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		rd.Reset(in)
		br.Reset(rd)
		cr := httputil.NewChunkedReader(br)
		for {
			if _, err := cr.Read(buf); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkChunkedEncode1K(b *testing.B) {
	data := bytes.Repeat([]byte("a"), 1024)
	dst := buffer.NewPool().NewBuffer(2048)
	defer dst.Release()
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		dst.Reset()
		AppendChunk(dst, data)
		_ = AppendLastChunk(dst, nil)
	}
}

// BenchmarkChunkedForward1KSmallChunks frames a 1 KiB body of 64-byte chunks the way the
// proxy forwards it (Canonical, NextCompact): plain size lines, nothing moves.
func BenchmarkChunkedForward1KSmallChunks(b *testing.B) {
	benchForward(b, chunkedBody(b, 1024, 64))
}

// BenchmarkChunkedForwardRewritten1KSmallChunks: the same body with an extension on
// every size line, each rewritten and the rest moved down.
func BenchmarkChunkedForwardRewritten1KSmallChunks(b *testing.B) {
	in := bytes.ReplaceAll(chunkedBody(b, 1024, 64), []byte("40\r\n"), []byte("40;ext=value\r\n"))
	benchForward(b, in)
}

func benchForward(b *testing.B, in []byte) {
	var r ChunkedReader
	buf := make([]byte, len(in))
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		copy(buf, in)
		r.Reset(Limits{})
		r.Canonical = true
		k, w := 0, 0
		for {
			var done bool
			var err error
			_, k, w, done, err = r.NextCompact(buf, k, w)
			if err != nil {
				b.Fatal(err)
			}
			if done {
				break
			}
		}
	}
}

package http1

import (
	"testing"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

func BenchmarkAppendRequestHead(b *testing.B) {
	var h RequestHead
	if _, err := ParseRequestHead([]byte(typicalRequest), Limits{}, &h); err != nil {
		b.Fatal(err)
	}
	e := &Edits{XForwardedFor: []byte("10.1.2.3"), RequestID: []byte("id")}
	dst := buffer.NewPool().NewBuffer(4096)
	defer dst.Release()
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalRequest)))
	for b.Loop() {
		dst.Reset()
		if err := AppendRequestHead(dst, &h, e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendResponseHead(b *testing.B) {
	var h ResponseHead
	if _, err := ParseResponseHead([]byte(typicalResponse), Limits{}, &h); err != nil {
		b.Fatal(err)
	}
	dst := buffer.NewPool().NewBuffer(4096)
	defer dst.Release()
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalResponse)))
	for b.Loop() {
		dst.Reset()
		if err := AppendResponseHead(dst, &h, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHeadersGet(b *testing.B) {
	var h RequestHead
	if _, err := ParseRequestHead([]byte(typicalRequest), Limits{}, &h); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := h.Headers.Get("x-request-id"); !ok {
			b.Fatal("missing")
		}
	}
}

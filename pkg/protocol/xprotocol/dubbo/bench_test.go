package dubbo

import (
	"testing"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
)

// Decode of a captured request: header and leading strings (no attachments).
func BenchmarkDecodeRequest(b *testing.B) {
	c := New(Options{})
	in := captures(b)[0].raw
	f := &xprotocol.Frame{}
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		f.Reset()
		if n, err := c.Decode(in, f); err != nil || n != len(in) {
			b.Fatal(n, err)
		}
	}
}

func BenchmarkDecodeResponse(b *testing.B) {
	c := New(Options{})
	in := captures(b)[1].raw
	f := &xprotocol.Frame{}
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		f.Reset()
		if n, err := c.Decode(in, f); err != nil || n != len(in) {
			b.Fatal(n, err)
		}
	}
}

// Decode with Options.EagerAttachments: the price of group and timeout on every request.
func BenchmarkDecodeRequestEager(b *testing.B) {
	c := New(Options{EagerAttachments: true})
	in := captures(b)[0].raw
	f := &xprotocol.Frame{}
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		f.Reset()
		if n, err := c.Decode(in, f); err != nil || n != len(in) || f.Timeout == 0 {
			b.Fatal(n, err)
		}
	}
}

// DecodeAttachments alone on a decoded captured request (flat map: library on the map only).
func BenchmarkDecodeAttachments(b *testing.B) {
	c := New(Options{})
	in := captures(b)[0].raw
	f := &xprotocol.Frame{}
	b.ReportAllocs()
	for b.Loop() {
		f.Reset()
		if _, err := c.Decode(in, f); err != nil {
			b.Fatal(err)
		}
		if err := c.DecodeAttachments(f); err != nil {
			b.Fatal(err)
		}
	}
}

// The allocation-free walk that locates the attachments (no library call).
func BenchmarkWalkArguments(b *testing.B) {
	c := New(Options{})
	in := captures(b)[0].raw
	f := &xprotocol.Frame{}
	if _, err := c.Decode(in, f); err != nil {
		b.Fatal(err)
	}
	at := int(f.Proto[protoDesc])
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, _, err := walkRequest(in, at, DefaultMaxDepth); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSetID(b *testing.B) {
	c := New(Options{})
	f := &xprotocol.Frame{}
	if _, err := c.Decode(captures(b)[0].raw, f); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var id uint64
	for b.Loop() {
		id++
		c.SetID(f, id)
	}
}

func BenchmarkEncodeDecoded(b *testing.B) {
	c := New(Options{})
	in := captures(b)[0].raw
	f := &xprotocol.Frame{}
	if _, err := c.Decode(in, f); err != nil {
		b.Fatal(err)
	}
	dst := buffer.NewPool().NewBuffer(4096)
	defer dst.Release()
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		dst.Reset()
		if err := c.Encode(dst, f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHeartbeatReply(b *testing.B) {
	c := New(Options{})
	var hb buffer.IoBuffer
	_ = c.Heartbeat(&hb, 1)
	f := &xprotocol.Frame{}
	if _, err := c.Decode(hb.Bytes(), f); err != nil {
		b.Fatal(err)
	}
	dst := buffer.NewPool().NewBuffer(64)
	defer dst.Release()
	b.ReportAllocs()
	for b.Loop() {
		dst.Reset()
		_ = c.HeartbeatReply(dst, f)
	}
}

func BenchmarkHijack(b *testing.B) {
	c := New(Options{})
	f := &xprotocol.Frame{}
	if _, err := c.Decode(captures(b)[0].raw, f); err != nil {
		b.Fatal(err)
	}
	dst := buffer.NewPool().NewBuffer(256)
	defer dst.Release()
	b.ReportAllocs()
	for b.Loop() {
		dst.Reset()
		if err := c.Hijack(dst, f, xprotocol.CauseNoRoute, "no route"); err != nil {
			b.Fatal(err)
		}
	}
}

package bolt_test

import (
	"testing"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
)

func benchDecode(b *testing.B, in []byte) {
	c := bolt.New(bolt.Options{})
	var f xprotocol.Frame
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		f.Reset()
		if n, err := c.Decode(in, &f); n != len(in) || err != nil {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkDecodeRequest: the captured sofa-bolt-node request (376 bytes, service header).
func BenchmarkDecodeRequest(b *testing.B) {
	reqs, _ := capturedFrames(b)
	benchDecode(b, reqs[0])
}

// BenchmarkDecodeRequestHeaders: a request with three headers (service, method, trace id).
func BenchmarkDecodeRequestHeaders(b *testing.B) {
	benchDecode(b, encodeMsg(b, bolt.New(bolt.Options{}), v1Request()))
}

// BenchmarkDecodeRequestV2CRC: the same request in bolt v2 with the CRC32 trailer verified.
func BenchmarkDecodeRequestV2CRC(b *testing.B) {
	benchDecode(b, encodeMsg(b, bolt.New(bolt.Options{}), v2CRCRequest()))
}

func benchSetID(b *testing.B, in []byte) {
	c := bolt.New(bolt.Options{})
	f := decode(b, c, in)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	id := uint64(0)
	for b.Loop() {
		id++
		c.SetID(f, id)
	}
}

func BenchmarkSetID(b *testing.B) {
	reqs, _ := capturedFrames(b)
	benchSetID(b, reqs[0])
}

// BenchmarkSetIDCRC: v2 with CRC: the patch recomputes the CRC over the frame.
func BenchmarkSetIDCRC(b *testing.B) {
	benchSetID(b, encodeMsg(b, bolt.New(bolt.Options{}), v2CRCRequest()))
}

// BenchmarkEncodeRaw: forwarding a decoded frame (Raw into a pooled IoBuffer).
func BenchmarkEncodeRaw(b *testing.B) {
	reqs, _ := capturedFrames(b)
	c := bolt.New(bolt.Options{})
	f := decode(b, c, reqs[0])
	dst := buffer.NewPool().NewBuffer(4096)
	defer dst.Release()
	b.ReportAllocs()
	b.SetBytes(int64(len(f.Raw)))
	for b.Loop() {
		dst.Reset()
		if err := c.Encode(dst, f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHeartbeatReply(b *testing.B) {
	c := bolt.New(bolt.Options{})
	var hb buffer.IoBuffer
	_ = c.Heartbeat(&hb, 1)
	f := decode(b, c, hb.Bytes())
	dst := buffer.NewPool().NewBuffer(512)
	defer dst.Release()
	b.ReportAllocs()
	b.SetBytes(bolt.ResponseHeaderLen)
	for b.Loop() {
		dst.Reset()
		if err := c.HeartbeatReply(dst, f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHijack: the proxy's own error response.
func BenchmarkHijack(b *testing.B) {
	reqs, _ := capturedFrames(b)
	c := bolt.New(bolt.Options{})
	f := decode(b, c, reqs[0])
	dst := buffer.NewPool().NewBuffer(512)
	defer dst.Release()
	b.ReportAllocs()
	b.SetBytes(bolt.ResponseHeaderLen)
	for b.Loop() {
		dst.Reset()
		if err := c.Hijack(dst, f, xprotocol.CauseNoRoute, "no route"); err != nil {
			b.Fatal(err)
		}
	}
}

package http2_test

import (
	"testing"

	"golang.org/x/net/http2"

	h2 "github.com/mosnlite/mosnlite/pkg/stream/http2"
)

// syncHandler answers every stream on the connection goroutine: 200 and a small body.
type syncHandler []byte

func (b syncHandler) ServeStream(st *h2.ServerStream) {
	_ = st.WriteResponse(200, nil, b, true)
	st.Done()
}

// BenchmarkServerRequest: one GET and its 200 response with a 5-byte body per iteration,
// over loopback TCP. allocs/op counts the client's framer and decoder too.
func BenchmarkServerRequest(b *testing.B) {
	rc, _ := serve(b, h2.ServerOptions{}, syncHandler("hello"))
	rc.fr.SetReuseFrames()
	fields := get("/bench")
	unacked := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		id := uint32(2*i + 1)
		if err := rc.tryHeaders(id, true, fields...); err != nil {
			b.Fatal(err)
		}
		for done := false; !done; {
			f, err := rc.fr.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			if df, ok := f.(*http2.DataFrame); ok {
				unacked += len(df.Data())
				done = df.StreamEnded()
			}
		}
		if unacked > 32<<10 {
			if err := rc.fr.WriteWindowUpdate(0, uint32(unacked)); err != nil {
				b.Fatal(err)
			}
			unacked = 0
		}
	}
}

// BenchmarkServerPing: one PING and its ACK per iteration.
func BenchmarkServerPing(b *testing.B) {
	rc, _ := serve(b, h2.ServerOptions{}, syncHandler("hello"))
	rc.fr.SetReuseFrames()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := rc.fr.WritePing(false, [8]byte{1}); err != nil {
			b.Fatal(err)
		}
		for {
			f, err := rc.fr.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			if pf, ok := f.(*http2.PingFrame); ok && pf.IsAck() {
				break
			}
		}
	}
}

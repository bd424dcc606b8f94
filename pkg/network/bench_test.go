package network

import (
	"io"
	"sync"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

// BenchmarkEcho1KiB: a client writes 1 KiB and reads it back through a listener whose
// handler echoes with ReadLoop and Write. Allocations are counted process-wide, so they
// include the accept, the handler goroutine and the client; in steady state they are 0.
func BenchmarkEcho1KiB(b *testing.B) {
	cfg := testConfig(b, "bench", nil)
	cfg.Handler = echo(cfg.Conn.Pool)
	cfg.Conn.IdleTimeout = 1 << 40 // arm the idle timer: activity stamps are on the path
	l := serve(b, cfg)
	c := dial(b, l.Addr())
	msg := make([]byte, 1024)
	got := make([]byte, 1024)
	for range 100 { // warm up pools and socket buffers
		c.Write(msg)
		io.ReadFull(c, got)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnWriteBatched: 4 goroutines write 1 KiB buffers to one Conn while the peer
// drains; flat combining turns them into writev batches.
func BenchmarkConnWriteBatched(b *testing.B) {
	client, server := tcpPair(b)
	pool := buffer.NewPool()
	c := NewConn(server, ConnOptions{Pool: pool})
	var rd sync.WaitGroup
	rd.Go(func() { io.Copy(io.Discard, client) })
	msg := make([]byte, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	b.SetParallelism(2) // 2 per CPU
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			buf := pool.NewBuffer(len(msg))
			buf.Write(msg)
			if err := c.Write(buf); err != nil {
				b.Error(err)
				return
			}
		}
	})
	c.Flush()
	c.Close(CloseLocal)
	client.Close()
	rd.Wait()
}

// BenchmarkEcho1KiBBaseline is BenchmarkEcho1KiB with a bare net.Conn read/write loop on
// the server side, for comparison.
func BenchmarkEcho1KiBBaseline(b *testing.B) {
	client, server := tcpPair(b)
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 16<<10)
		for {
			n, err := server.Read(buf)
			if err != nil {
				return
			}
			if _, err := server.Write(buf[:n]); err != nil {
				return
			}
		}
	})
	msg := make([]byte, 1024)
	got := make([]byte, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := client.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(client, got); err != nil {
			b.Fatal(err)
		}
	}
	client.Close()
	server.Close()
	wg.Wait()
}

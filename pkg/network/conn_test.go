package network

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { c.Close(); r.c.Close() })
	return c.(*net.TCPConn), r.c.(*net.TCPConn)
}

func (c *Conn) queuedBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued
}

func TestConnCloseSemantics(t *testing.T) {
	t.Parallel()
	client, server := tcpPair(t)
	pool := buffer.NewPool()
	c := NewConn(server, ConnOptions{Pool: pool})
	c2 := NewConn(client, ConnOptions{Pool: pool})
	if c2.ID() <= c.ID() {
		t.Errorf("IDs not increasing: %d then %d", c.ID(), c2.ID())
	}
	select {
	case <-c.Done():
		t.Fatal("Done closed before Close")
	default:
	}
	if c.CloseReason() != "" {
		t.Fatalf("CloseReason before close = %q", c.CloseReason())
	}
	c.Close(CloseDrain)
	if err := c.Close(CloseLocal); err != nil {
		t.Errorf("second Close = %v; want nil", err)
	}
	if r := c.CloseReason(); r != CloseDrain {
		t.Errorf("CloseReason = %q; want drain (first wins)", r)
	}
	<-c.Done()
	b := pool.NewBuffer(0)
	b.WriteString("late")
	if err := c.Write(b); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v; want ErrClosed", err)
	}
	if err := c.ReadLoop(func(*buffer.IoBuffer) error { return nil }); err != nil {
		t.Errorf("ReadLoop on a closed conn = %v; want nil", err)
	}
	// The peer sees EOF; its ReadLoop returns nil.
	if err := c2.ReadLoop(func(*buffer.IoBuffer) error { return nil }); err != nil {
		t.Errorf("ReadLoop at EOF = %v; want nil", err)
	}
	c2.Close(CloseRemote)
}

func TestReadLoopLimit(t *testing.T) {
	t.Parallel()
	client, server := tcpPair(t)
	const limit = 8 << 10
	c := NewConn(server, ConnOptions{Pool: buffer.NewPool(), BufferLimit: limit, ReadSize: 1024})
	defer c.Close(CloseLocal)
	go client.Write(make([]byte, 64<<10))
	maxCap := 0
	err := c.ReadLoop(func(b *buffer.IoBuffer) error {
		maxCap = max(maxCap, b.Cap())
		return nil // consumes nothing: a frame that never completes
	})
	if !errors.Is(err, ErrReadLimit) || err.Error() != "network: read buffer limit exceeded" {
		t.Fatalf("ReadLoop = %v; want ErrReadLimit", err)
	}
	if maxCap > 2*limit {
		t.Errorf("read buffer grew to %d; want at most %d", maxCap, 2*limit)
	}
}

func TestReadLoopOnDataError(t *testing.T) {
	t.Parallel()
	client, server := tcpPair(t)
	c := NewConn(server, ConnOptions{})
	defer c.Close(CloseLocal)
	client.Write([]byte("bad frame"))
	stop := errors.New("protocol error")
	if err := c.ReadLoop(func(*buffer.IoBuffer) error { return stop }); err != stop {
		t.Fatalf("ReadLoop = %v; want onData's error", err)
	}
}

func TestWriteBackpressure(t *testing.T) {
	t.Parallel()
	client, server := tcpPair(t)
	client.SetReadBuffer(16 << 10)
	server.SetWriteBuffer(16 << 10)
	const (
		limit   = 256 << 10
		chunk   = 64 << 10
		writers = 4
	)
	pool := buffer.NewPool()
	c := NewConn(server, ConnOptions{Pool: pool, BufferLimit: limit})
	payload := make([]byte, chunk)
	var (
		maxQueued atomic.Int64
		wg        sync.WaitGroup
		errs      = make(chan error, writers)
	)
	note := func() {
		q := int64(c.queuedBytes())
		for {
			m := maxQueued.Load()
			if q <= m || maxQueued.CompareAndSwap(m, q) {
				return
			}
		}
	}
	for range writers { // the peer never reads
		wg.Go(func() {
			for {
				b := pool.NewBuffer(chunk)
				b.Write(payload)
				if err := c.Write(b); err != nil {
					errs <- err
					return
				}
				note()
			}
		})
	}
	testutil.Eventually(t, 10*time.Second, "queue to reach the limit", func() bool { note(); return c.queuedBytes() >= limit })
	if m := maxQueued.Load(); m >= limit+chunk {
		t.Errorf("queued %d bytes; want < limit+chunk = %d", m, limit+chunk)
	}
	c.Close(CloseLocal)
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrClosed) && !errors.Is(err, net.ErrClosed) {
			t.Errorf("blocked Write returned %v; want ErrClosed", err)
		}
	}
	if q := c.queuedBytes(); q != 0 {
		t.Errorf("queued bytes after Close = %d; want 0 (released)", q)
	}
}

func TestConcurrentWritersInOrder(t *testing.T) {
	t.Parallel()
	client, server := tcpPair(t)
	pool := buffer.NewPool()
	c := NewConn(server, ConnOptions{Pool: pool, BufferLimit: 64 << 10})
	const (
		writers = 8
		msgs    = 400
	)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for seq := range msgs {
				n := 1 + (seq*37+w*101)%3000
				h := pool.NewBuffer(7)
				h.WriteByte(byte(w))
				h.WriteUint32(uint32(seq))
				h.WriteUint16(uint16(n))
				p := pool.NewBuffer(n)
				fill := p.Alloc(n)
				for i := range fill {
					fill[i] = byte(w + seq + i)
				}
				if err := c.Write(h, p); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	done := make(chan error, 1)
	go func() {
		r := bufio.NewReader(client)
		next := make([]uint32, writers)
		hdr := make([]byte, 7)
		body := make([]byte, 3000)
		for range writers * msgs {
			if _, err := io.ReadFull(r, hdr); err != nil {
				done <- err
				return
			}
			w, seq, n := int(hdr[0]), binary.BigEndian.Uint32(hdr[1:]), int(binary.BigEndian.Uint16(hdr[5:]))
			if w >= writers || seq != next[w] {
				done <- errors.New("message out of order or corrupt header")
				return
			}
			next[w]++
			if _, err := io.ReadFull(r, body[:n]); err != nil {
				done <- err
				return
			}
			for i, v := range body[:n] {
				if v != byte(w+int(seq)+i) {
					done <- errors.New("payload corrupted")
					return
				}
			}
		}
		done <- nil
	}()
	wg.Wait()
	if err := c.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("reader did not finish")
	}
	c.Close(CloseLocal)
}

func TestUnreadThenReadLoopAndRead(t *testing.T) {
	t.Parallel()
	client, server := tcpPair(t)
	c := NewConn(server, ConnOptions{})
	defer c.Close(CloseLocal)
	client.Write([]byte("PRI * HTTP/2.0"))
	// A sniffer reads the first bytes, then hands them back.
	stop := errors.New("sniffed")
	err := c.ReadLoop(func(b *buffer.IoBuffer) error {
		c.Unread(b.Bytes())
		return stop
	})
	if err != stop {
		t.Fatalf("ReadLoop = %v", err)
	}
	c.Unread([]byte("<"))
	client.Write([]byte(" rest"))
	var got []byte
	err = c.ReadLoop(func(b *buffer.IoBuffer) error {
		got = append(got, b.Bytes()...)
		b.Drain(b.Len())
		if len(got) >= len("<PRI * HTTP/2.0 rest") {
			return stop
		}
		return nil
	})
	if err != stop || string(got) != "<PRI * HTTP/2.0 rest" {
		t.Fatalf("ReadLoop = %v, got %q", err, got)
	}
	c.Unread([]byte("ab"))
	client.Write([]byte("c"))
	p := make([]byte, 1)
	var r []byte
	for len(r) < 3 {
		n, err := c.Read(p)
		if err != nil {
			t.Fatal(err)
		}
		r = append(r, p[:n]...)
	}
	if string(r) != "abc" {
		t.Fatalf("Read = %q", r)
	}
}

func TestRaiseReadLimit(t *testing.T) {
	t.Parallel()
	for _, explicit := range []bool{false, true} {
		client, server := tcpPair(t)
		o := ConnOptions{}
		if explicit {
			o.BufferLimit = DefaultBufferLimit
		}
		c := NewConn(server, o)
		c.RaiseReadLimit(3 << 20)
		go func() { client.Write(make([]byte, 2<<20)) }()
		got := 0
		err := c.ReadLoop(func(b *buffer.IoBuffer) error {
			got = b.Len()
			if got == 2<<20 {
				return io.EOF
			}
			return nil // keep everything unread
		})
		c.Close(CloseLocal)
		if explicit && err != ErrReadLimit {
			t.Fatalf("explicit limit: ReadLoop = %v after %d bytes; want ErrReadLimit", err, got)
		}
		if !explicit && err != io.EOF {
			t.Fatalf("raised limit: ReadLoop = %v after %d bytes", err, got)
		}
	}
}

// closeCounter counts ConnClosed calls.
type closeCounter struct{ n atomic.Int32 }

func (c *closeCounter) ConnClosed() { c.n.Add(1) }

// TestNotifyClose: the notifier is told once, by the first Close, after the socket is
// closed; a removed notifier is not told; a closed connection registers none.
func TestNotifyClose(t *testing.T) {
	t.Parallel()
	client, server := tcpPair(t)
	pool := buffer.NewPool()
	c := NewConn(server, ConnOptions{Pool: pool})
	var removed, told closeCounter
	if !c.NotifyClose(&removed) {
		t.Fatal("NotifyClose on an open connection = false")
	}
	if !c.NotifyClose(nil) {
		t.Fatal("NotifyClose(nil) on an open connection = false")
	}
	if !c.NotifyClose(&told) {
		t.Fatal("NotifyClose on an open connection = false")
	}
	c.Close(CloseDrain)
	c.Close(CloseLocal)
	if n := told.n.Load(); n != 1 {
		t.Errorf("notifier told %d times, want 1", n)
	}
	if n := removed.n.Load(); n != 0 {
		t.Errorf("removed notifier told %d times, want 0", n)
	}
	// The socket was closed before: the peer reads EOF.
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("peer read after Close = %d, %v; want EOF", n, err)
	}
	var late closeCounter
	if c.NotifyClose(&late) {
		t.Error("NotifyClose on a closed connection = true")
	}
	if c.OwnsContext(context.Background()) {
		t.Error("OwnsContext on a connection made by NewConn = true")
	}
}

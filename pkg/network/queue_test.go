package network

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// TestKickAsyncNeverWritesOnTheCaller: with a peer that does not read, Kick would write
// on the caller's goroutine until the socket takes everything (here: never); KickAsync
// returns at once and a goroutine of its own does the writing; other kicks meanwhile
// return too; once the peer reads, every byte arrives in order; Close ends the writer.
func TestKickAsyncNeverWritesOnTheCaller(t *testing.T) {
	client, server := tcpPair(t)
	client.SetReadBuffer(16 << 10)
	server.SetWriteBuffer(16 << 10)
	pool := buffer.NewPool()
	c := NewConn(server, ConnOptions{Pool: pool})
	const size = 8 << 20
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i * 7)
	}
	queue := func(p []byte) {
		b := pool.NewBuffer(len(p))
		b.Write(p)
		if err := c.Queue(b); err != nil {
			t.Fatal(err)
		}
	}
	queue(want[:size/2])
	returned := make(chan struct{})
	go func() {
		c.KickAsync()
		queue(want[size/2:]) // picked up by the writer at work
		c.KickAsync()
		if err := c.Kick(); err != nil { // another goroutine is writing: returns at once
			t.Error(err)
		}
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("KickAsync or Kick waited for a peer that does not read")
	}
	got := make([]byte, size)
	client.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatal("the bytes arrived changed or out of order")
	}
	testutil.Eventually(t, 5*time.Second, "the queue written", func() bool { return c.Queued() == 0 })

	// A writer blocked on a peer that stopped reading ends when the connection closes.
	queue(want)
	c.KickAsync()
	c.Close(CloseLocal)
	testutil.Eventually(t, 5*time.Second, "the queue released", func() bool { return c.queuedBytes() == 0 })
}

// TestKickNoWaitWritesWhatFitsAndHandsOffTheRest: a KickNoWait on a socket whose peer
// does not read returns without waiting, the bytes arrive whole and in order once the
// peer reads (many small buffers, so the socket fills in the middle of one), and bytes
// queued while the hand-off goroutine writes go after them.
func TestKickNoWaitWritesWhatFitsAndHandsOffTheRest(t *testing.T) {
	client, server := tcpPair(t)
	client.SetReadBuffer(16 << 10)
	server.SetWriteBuffer(16 << 10)
	pool := buffer.NewPool()
	c := NewConn(server, ConnOptions{Pool: pool})
	want := make([]byte, 4<<20+123)
	for i := range want {
		want[i] = byte(i * 13)
	}
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		for p := want; len(p) > 0; {
			n := min(len(p), 3001)
			b := pool.NewBuffer(n)
			b.Write(p[:n])
			if err := c.Queue(b); err != nil {
				t.Error(err)
				return
			}
			p = p[n:]
			if len(p)%(300*3001) < 3001 {
				c.KickNoWait()
			}
		}
		c.KickNoWait()
	}()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("KickNoWait waited for a peer that does not read")
	}
	if c.Sent() == 0 || c.Sent() >= int64(len(want)) {
		t.Fatalf("sent %d of %d before the peer read: want some, not all, on the caller", c.Sent(), len(want))
	}
	got := make([]byte, len(want))
	client.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatal("the bytes arrived changed or out of order")
	}
	testutil.Eventually(t, 5*time.Second, "the queue written", func() bool { return c.Queued() == 0 && !c.Full() })
	if c.Sent() != int64(len(want)) {
		t.Fatalf("Sent = %d; want %d", c.Sent(), len(want))
	}
	c.Close(CloseLocal)
}

// TestWaitRoomUntil: with a full queue and a peer that does not read, WaitRoomUntil
// returns ErrNoRoom at its deadline; once the peer reads it returns nil; on a closed
// connection ErrClosed.
func TestWaitRoomUntil(t *testing.T) {
	client, server := tcpPair(t)
	client.SetReadBuffer(16 << 10)
	server.SetWriteBuffer(16 << 10)
	pool := buffer.NewPool()
	c := NewConn(server, ConnOptions{Pool: pool, BufferLimit: 64 << 10})
	if err := c.WaitRoomUntil(time.Now()); err != nil {
		t.Fatalf("empty queue: %v", err)
	}
	b := pool.NewBuffer(1 << 20)
	b.Write(make([]byte, 1<<20))
	c.Queue(b)
	c.KickNoWait()
	if !c.Full() {
		t.Fatal("1 MiB queued for a peer that does not read, and the queue is not full")
	}
	start := time.Now()
	if err := c.WaitRoomUntil(start.Add(100 * time.Millisecond)); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("full queue: %v; want ErrNoRoom", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Fatalf("returned after %v; want at the 100 ms deadline", d)
	}
	go io.Copy(io.Discard, client)
	if err := c.WaitRoomUntil(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatalf("peer reading: %v", err)
	}
	c.Close(CloseLocal)
	if err := c.WaitRoomUntil(time.Now().Add(time.Second)); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed: %v; want ErrClosed", err)
	}
}

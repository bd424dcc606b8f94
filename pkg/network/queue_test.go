package network

import (
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

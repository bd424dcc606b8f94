package network

import (
	"bytes"
	"crypto/tls"
	"io"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/network/tlstest"
	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// TestKickNoWaitTLSCountsParts: on a TLS connection (written through crypto/tls, not raw
// non-blocking writes) whose peer reads 256 KiB of 4 MiB queued and then pauses,
// KickNoWait returns at once and what the peer took shows in Sent and Queued before the
// rest is written, and Acked sees what the socket under TLS still holds: a reader
// waiting for room must see a peer that reads as one that does. Once the peer reads on,
// every byte arrives in order and the queue empties.
func TestKickNoWaitTLSCountsParts(t *testing.T) {
	ca := tlstest.NewCA(t)
	leaf := ca.Leaf(t, "127.0.0.1")
	cert, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.KeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	client, server := tcpPair(t)
	// Small socket buffers, so most of the 4 MiB waits in the queue. (16 KiB ones can stall
	// crypto/tls over loopback for good, written with plain Writes too.)
	client.SetWriteBuffer(64 << 10)
	server.SetReadBuffer(64 << 10)
	tc := tls.Client(client, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	peer := tls.Server(server, &tls.Config{Certificates: []tls.Certificate{cert}})
	hs := make(chan error, 1)
	go func() { hs <- peer.Handshake() }()
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-hs; err != nil {
		t.Fatal(err)
	}
	_ = tc.SetDeadline(time.Time{})

	pool := buffer.NewPool()
	c := NewConn(tc, ConnOptions{Pool: pool, BufferLimit: 1 << 20})
	defer c.Close(CloseLocal)
	const part, parts = 64 << 10, 64
	want := make([]byte, part*parts)
	for i := range want {
		want[i] = byte(i * 11)
	}
	for p := want; len(p) > 0; p = p[part:] {
		b := pool.NewBuffer(part)
		b.Write(p[:part])
		if err := c.Queue(b); err != nil {
			t.Fatal(err)
		}
	}
	returned := make(chan struct{})
	go func() { c.KickNoWait(); close(returned) }()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("KickNoWait waited for a peer that does not read")
	}
	if !c.Full() {
		t.Fatal("4 MiB queued with a 1 MiB limit, and the queue is not full")
	}

	got := make([]byte, 0, len(want))
	buf := make([]byte, 32<<10)
	_ = peer.SetReadDeadline(time.Now().Add(20 * time.Second))
	for len(got) < 256<<10 {
		n, err := peer.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	testutil.Eventually(t, 5*time.Second, "the bytes the paused peer took counted in Sent", func() bool { return c.Sent() > 0 })
	if s, q := c.Sent(), c.Queued(); s >= int64(len(want)) || q != len(want)-int(s) {
		t.Fatalf("Sent %d, Queued %d, the peer read %d of %d: want part sent, Queued the rest", s, q, len(got), len(want))
	}
	// The paused peer's socket is full: Acked sees the ciphertext the socket under the
	// TLS connection holds unacknowledged, which Sent counts as written.
	testutil.Eventually(t, 5*time.Second, "Acked below Sent while the peer pauses", func() bool { return c.Acked() < c.Sent() })

	rest, err := io.ReadAll(io.LimitReader(peer, int64(len(want)-len(got))))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(got, rest...), want) {
		t.Fatal("the bytes arrived changed or out of order")
	}
	testutil.Eventually(t, 5*time.Second, "the queue written", func() bool { return c.Queued() == 0 && !c.Full() })
	if c.Sent() != int64(len(want)) {
		t.Fatalf("Sent = %d; want %d", c.Sent(), len(want))
	}
}

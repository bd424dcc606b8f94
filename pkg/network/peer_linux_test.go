package network

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/network/tlstest"
)

// waitPeer polls Peer until it says want (a FIN or RST crosses loopback at once; the
// poll only covers the scheduling of the two ends).
func waitPeer(t *testing.T, c net.Conn, want PeerState) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := Peer(c)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Peer = %v, want %v", got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPeer(t *testing.T) {
	t.Run("open", func(t *testing.T) {
		_, s := tcpPair(t)
		if got := Peer(s); got != PeerOpen {
			t.Fatalf("Peer = %v", got)
		}
	})
	t.Run("bytes-waiting", func(t *testing.T) {
		c, s := tcpPair(t)
		c.Write([]byte("GET / HTTP/1.1\r\n"))
		time.Sleep(20 * time.Millisecond)
		if got := Peer(s); got != PeerOpen {
			t.Fatalf("Peer = %v", got)
		}
		b := make([]byte, 64) // the look did not consume them
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := s.Read(b); err != nil || string(b[:n]) != "GET / HTTP/1.1\r\n" {
			t.Fatalf("read %q %v", b[:n], err)
		}
	})
	t.Run("fin", func(t *testing.T) {
		c, s := tcpPair(t)
		c.CloseWrite()
		waitPeer(t, s, PeerClosed)
	})
	t.Run("fin-behind-bytes", func(t *testing.T) {
		c, s := tcpPair(t)
		c.Write([]byte("next request"))
		c.Close()
		waitPeer(t, s, PeerClosed)
		b, err := io.ReadAll(s) // still all there
		if err != nil || string(b) != "next request" {
			t.Fatalf("read %q %v", b, err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		c, s := tcpPair(t)
		c.SetLinger(0)
		c.Close()
		waitPeer(t, s, PeerReset)
	})
	t.Run("closed-here", func(t *testing.T) {
		_, s := tcpPair(t)
		s.Close()
		if got := Peer(s); got != PeerReset {
			t.Fatalf("Peer = %v", got)
		}
	})
	t.Run("not-a-socket", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		b.Close()
		if got := Peer(a); got != PeerOpen {
			t.Fatalf("Peer = %v", got)
		}
	})
	t.Run("tls", func(t *testing.T) {
		ca := tlstest.NewCA(t)
		c, s := tcpPair(t)
		srv := tls.Server(s, &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, "a").TLS(t)}})
		cli := tls.Client(c, &tls.Config{RootCAs: ca.Pool(), ServerName: "a"})
		errc := make(chan error, 1)
		go func() { errc <- cli.Handshake() }()
		srv.SetDeadline(time.Now().Add(5 * time.Second))
		if err := srv.Handshake(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if got := Peer(srv); got != PeerOpen {
			t.Fatalf("after the handshake: Peer = %v", got)
		}
		cli.Close() // close_notify, then FIN
		waitPeer(t, srv, PeerClosed)
	})
}

package framework

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mosnlite/mosnlite/pkg/testutil"
)

// TCPServer is a real loopback TCP upstream running in the test process.
type TCPServer = testutil.TCPServer

// StartTCP serves each connection with handle on its own goroutine until cleanup.
func StartTCP(t testing.TB, handle func(c *net.TCPConn)) *TCPServer {
	t.Helper()
	return testutil.StartTCP(t, handle)
}

// NameServer answers every connection with name+"\n" after delay. With hold, it then keeps
// the connection open until the client closes it; otherwise it closes at once.
func NameServer(t testing.TB, name string, delay time.Duration, hold bool) *TCPServer {
	return StartTCP(t, func(c *net.TCPConn) {
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil { // the client speaks first (one byte)
			return
		}
		if delay > 0 {
			time.Sleep(delay)
		}
		if _, err := c.Write([]byte(name + "\n")); err != nil {
			return
		}
		if hold {
			io.Copy(io.Discard, c)
		}
	})
}

// EchoServer echoes everything until the client half-closes, then writes trailer and closes.
func EchoServer(t testing.TB, trailer string) *TCPServer {
	t.Helper()
	return testutil.EchoServer(t, trailer)
}

// UDPEcho is a loopback UDP server that sends every datagram back with prefix prepended.
type UDPEcho struct {
	pc       net.PacketConn
	done     chan struct{}
	Received atomic.Int64
	mu       sync.Mutex
	peers    map[string]int // source address → datagrams
}

// Addr is the server's address.
func (u *UDPEcho) Addr() string { return u.pc.LocalAddr().String() }

// Peers returns how many distinct source addresses (proxy sessions) were seen.
func (u *UDPEcho) Peers() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.peers)
}

// StartUDPEcho starts a UDP echo server until cleanup.
func StartUDPEcho(t testing.TB, prefix string) *UDPEcho {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &UDPEcho{pc: pc, done: make(chan struct{}), peers: map[string]int{}}
	go func() {
		defer close(u.done)
		buf := make([]byte, 65536)
		for {
			n, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			u.Received.Add(1)
			u.mu.Lock()
			u.peers[a.String()]++
			u.mu.Unlock()
			out := append([]byte(prefix), buf[:n]...)
			pc.WriteTo(out, a)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-u.done })
	return u
}

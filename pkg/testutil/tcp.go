package testutil

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TCPServer is a real loopback TCP upstream running in the test process.
type TCPServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	Conns atomic.Int64 // connections accepted
	mu    sync.Mutex
	open  map[net.Conn]struct{}
}

// Addr is "127.0.0.1:port".
func (s *TCPServer) Addr() string { return s.ln.Addr().String() }

// Close stops accepting, closes open connections and waits for handlers.
func (s *TCPServer) Close() {
	s.ln.Close()
	s.CloseConns()
	s.wg.Wait()
}

// CloseConns closes the open connections and keeps accepting new ones.
func (s *TCPServer) CloseConns() {
	s.mu.Lock()
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
}

// StartTCP serves each connection with handle on its own goroutine until cleanup. Each
// connection's reads and writes are bounded by a minute from its accept.
func StartTCP(t testing.TB, handle func(c *net.TCPConn)) *TCPServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &TCPServer{ln: ln, open: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.Conns.Add(1)
			s.mu.Lock()
			s.open[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.open, c)
					s.mu.Unlock()
					c.Close()
				}()
				c.SetDeadline(time.Now().Add(time.Minute))
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(s.Close)
	return s
}

// EchoServer echoes everything until the client half-closes, then writes trailer and closes.
func EchoServer(t testing.TB, trailer string) *TCPServer {
	return StartTCP(t, func(c *net.TCPConn) {
		if _, err := io.Copy(c, c); err != nil {
			return
		}
		c.Write([]byte(trailer))
	})
}

// Package rpcpeer provides real RPC peers on loopback for tests and benchmarks: Dubbo
// servers and clients whose frames are encoded and decoded by github.com/apache/dubbo-go-hessian2
// (the codec Dubbo Java and dubbo-go speak), bolt servers and clients built on mosnlite's bolt
// codec, and a bolt frame generator that writes every field by hand.
//
// Servers answer on the connection's own goroutine, except for the "slow" method, which
// answers from a timer goroutine the server waits for on Close. Clients are multiplexed:
// many requests in flight on one TCP connection, responses matched by request id, every
// wait bounded by a context. Nothing here is used by pkg/.
package rpcpeer

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Methods with a behaviour of their own, for both protocols (Dubbo: the method name; bolt:
// the sofa_head_method_name header). Every other method is echoed.
const (
	MethodSlow  = "slow"  // answered after the server's SlowDelay
	MethodClose = "close" // the server closes every open connection, answering nothing
	MethodFail  = "fail"  // Dubbo: a Java exception result; bolt: status ServerException
	MethodError = "error" // Dubbo: status 70 (service error) with a message; bolt: status Error
)

// DefaultSlowDelay is how long MethodSlow waits when the server's option is zero.
const DefaultSlowDelay = 2 * time.Second

// ErrClosed is returned for calls pending or made on a closed client connection.
var ErrClosed = errors.New("rpcpeer: connection closed")

// server is the listener, connection bookkeeping and shutdown shared by both protocols.
type server struct {
	ln       net.Listener
	wg       sync.WaitGroup
	done     chan struct{}
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	accepted atomic.Int64
	once     sync.Once
}

func listen(addr string, serve func(c net.Conn)) (*server, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &server{ln: ln, done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			select {
			case <-s.done:
				s.mu.Unlock()
				c.Close()
				return
			default:
			}
			s.conns[c] = struct{}{}
			s.wg.Add(1)
			s.mu.Unlock()
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					c.Close()
				}()
				serve(c)
			}()
		}
	}()
	return s, nil
}

// Addr is the listening address, "127.0.0.1:port".
func (s *server) Addr() string { return s.ln.Addr().String() }

// Accepted is the number of connections accepted so far.
func (s *server) Accepted() int64 { return s.accepted.Load() }

// Open is the number of connections open now.
func (s *server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// CloseConns closes every open connection (the listener keeps accepting) and returns how
// many it closed.
func (s *server) CloseConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
	return len(s.conns)
}

// Close stops accepting, closes every connection and waits for the server's goroutines.
func (s *server) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		close(s.done)
		s.mu.Unlock()
		s.ln.Close()
		s.CloseConns()
	})
	s.wg.Wait()
	return nil
}

// after runs f after d on a goroutine the server waits for; f does not run when the server
// closes first.
func (s *server) after(d time.Duration, f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			f()
		case <-s.done:
		}
	}()
}

// lockedConn serialises writes of whole frames to one connection.
type lockedConn struct {
	net.Conn
	mu sync.Mutex
}

func (c *lockedConn) write(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.Conn.Write(b)
	return err
}

package network

import (
	"io"
	"net"
)

// SockIO reads and writes a connection the way its net.Conn does (the runtime poller waits,
// deadlines and Close apply as usual), but on Linux, for a plain TCP or unix socket, the
// read(2), write(2) and writev(2) calls themselves are raw system calls made inside the
// socket's syscall.RawConn callbacks.
//
// Why: on a non-blocking socket those calls never wait, yet the runtime's syscall
// bookkeeping (entersyscall) marks the goroutine's P as "in a syscall", and a loopback
// write, which runs the receiver's path inline, is often seen so by two consecutive sysmon
// ticks. sysmon then hands the P to another thread and keeps waking every 20 µs. Under an
// HTTP/1.1 keep-alive load with the proxy pinned to one CPU, that sysmon thread alone used
// ~12 % of the CPU (per-thread ticks in /proc), and the P hand-offs moved the proxy's work
// between threads thousands of times a second. The event loops (pkg/network/evloop) make
// their calls raw for the same reason.
//
// Any other connection (TLS, a wrapper that buffers, other systems) is read and written
// through its own Read and Write. One goroutine may read while another writes; reads, and
// writes, are each made by one goroutine at a time.
type SockIO struct {
	c  net.Conn
	wv net.Buffers // the fallback's writev batch, kept to spare an allocation per call
	sockIO
}

// NewSockIO returns c's SockIO. Make one per connection and keep it: it holds the
// callbacks and buffers that keep each call free of allocation.
func NewSockIO(c net.Conn) *SockIO {
	s := &SockIO{c: c}
	s.init(c)
	return s
}

// Conn returns the connection.
func (s *SockIO) Conn() net.Conn { return s.c }

// Writev writes bufs in order, with writev(2) batches where the connection allows it. It
// consumes bufs (as net.Buffers.WriteTo does) and returns the bytes written.
func (s *SockIO) Writev(bufs [][]byte) (int64, error) {
	if !s.raw() {
		s.wv = bufs
		n, err := s.wv.WriteTo(s.c)
		s.wv = nil
		return n, err
	}
	return s.writev(bufs)
}

// TryWritev is Writev that does not wait for room: it writes what the socket's send
// buffer takes now and reports full when it stopped because that buffer was full. It
// needs a socket written with raw calls (CanTryWrite); others are written in full, as
// Writev does.
func (s *SockIO) TryWritev(bufs [][]byte) (n int64, full bool, err error) {
	if !s.raw() {
		n, err = s.Writev(bufs)
		return n, false, err
	}
	return s.tryWritev(bufs)
}

// CanTryWrite reports whether TryWritev can stop at a full send buffer.
func (s *SockIO) CanTryWrite() bool { return s.raw() }

var _ io.ReadWriter = (*SockIO)(nil)

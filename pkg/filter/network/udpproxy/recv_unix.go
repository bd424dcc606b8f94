//go:build unix

package udpproxy

import (
	"net"
	"os"
	"syscall"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

// receiver reads a session's upstream datagrams. It waits through a RawConn read callback
// that takes a pooled buffer only once a datagram is queued, so a waiting session holds
// none.
type receiver struct {
	pool *buffer.Pool
	up   net.Conn
	rc   syscall.RawConn
	fn   func(fd uintptr) bool
	try  bool // the callback returns at once instead of waiting
	b    *[]byte
	n    int
	err  error
}

func (r *receiver) init(up net.Conn, pool *buffer.Pool) {
	r.pool, r.up = pool, up
	if sc, ok := up.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			r.rc = rc
			r.fn = r.onReadable
		}
	}
}

// read returns the next datagram in a pooled buffer; pass it to done when finished.
func (r *receiver) read() (*[]byte, int, error) {
	if r.rc == nil {
		b := r.pool.Get(maxDatagram)
		n, err := r.up.Read(*b)
		if err != nil {
			r.pool.Put(b)
			return nil, 0, err
		}
		return b, n, nil
	}
	r.b, r.n, r.err = nil, 0, nil
	if err := r.rc.Read(r.fn); err != nil {
		return nil, 0, err
	}
	return r.b, r.n, r.err
}

func (r *receiver) onReadable(fd uintptr) bool {
	b := r.pool.Get(maxDatagram)
	for {
		n, err := syscall.Read(int(fd), *b)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			r.pool.Put(b)
			return r.try
		case err != nil:
			r.pool.Put(b)
			r.err = os.NewSyscallError("read", err)
		default:
			r.b, r.n = b, n // n == 0 is an empty datagram
		}
		return true
	}
}

// tryRead returns a datagram if one is queued, without waiting (the read deadline must
// be clear).
func (r *receiver) tryRead() (*[]byte, int, bool) {
	if r.rc == nil {
		return nil, 0, false
	}
	r.try = true
	b, n, err := r.read()
	r.try = false
	return b, n, err == nil && b != nil
}

func (r *receiver) done(b *[]byte) { r.pool.Put(b) }

func (r *receiver) release() {}

// readBuffer is the socket's SO_RCVBUF as the kernel reports it (0 if unknown).
func readBuffer(c *net.UDPConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	rc.Control(func(fd uintptr) {
		n, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	})
	return n
}

//go:build unix

package tcpproxy

import (
	"io"
	"os"
	"syscall"
)

// setupRaw lets read wait for src without holding a buffer: the read callback takes a
// pooled buffer only once the socket is readable.
func (h *half) setupRaw() {
	sc, ok := h.src.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	h.rc = rc
	h.readFn = h.onReadable
}

// onReadable is the RawConn read callback: one non-blocking read, or false to wait.
func (h *half) onReadable(fd uintptr) bool {
	pool := h.s.f.pool
	b := pool.Get(readSize)
	for {
		n, err := syscall.Read(int(fd), *b)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			pool.Put(b)
			return false
		case err != nil:
			pool.Put(b)
			h.rerr = os.NewSyscallError("read", err)
		case n == 0:
			pool.Put(b)
			h.rerr = io.EOF
		default:
			h.rb, h.rn = b, n
		}
		return true
	}
}

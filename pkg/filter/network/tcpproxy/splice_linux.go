package tcpproxy

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// setupSplice enables splicing queued bytes when both sockets are TCP (net.TCPConn's
// ReadFrom splices from a TCP source).
func (h *half) setupSplice() {
	if h.rc == nil {
		return
	}
	_, srcTCP := h.src.(*net.TCPConn)
	dst, dstTCP := h.dst.(*net.TCPConn)
	if srcTCP && dstTCP {
		h.rf = dst
	}
}

// queued is the number of bytes waiting in src's receive queue (SIOCINQ).
func (h *half) queued() int {
	if h.inqFn == nil {
		h.inqFn = h.onInq
	}
	h.inq = 0
	if h.rc.Control(h.inqFn) != nil {
		return 0
	}
	return h.inq
}

func (h *half) onInq(fd uintptr) {
	if n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err == nil {
		h.inq = n
	}
}

// inputQueued reports whether bytes wait in the socket's receive queue (for the idle
// timer; it allocates, but runs only when a session looks idle).
func inputQueued(rc syscall.RawConn) bool {
	n := 0
	rc.Control(func(fd uintptr) {
		n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	return n > 0
}

// tcpClose is the kernel's TCP_CLOSE state: a socket we have not closed is in it after
// its peer reset it.
const tcpClose = 7

// peerReset reports whether c's peer reset it.
func peerReset(c net.Conn) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	rc.Control(func(fd uintptr) {
		if ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			closed = ti.State == tcpClose
		}
	})
	return closed
}

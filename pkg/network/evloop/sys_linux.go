package evloop

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket calls for loop handlers, made as raw system calls: on non-blocking sockets none
// of them waits, so the runtime's entersyscall/exitsyscall bookkeeping buys nothing, and
// it costs more than the bookkeeping itself: a goroutine seen "in a syscall" by two
// consecutive sysmon ticks (20 µs apart) has its P handed to another thread, and a loop
// doing loopback TCP (whose connect, write and close run the peer's receive path inline)
// is often seen so. perf on a 64-byte-exchange-per-connection load showed ~10 % of the
// proxy's CPU in the context switches this caused. The runtime's own poller makes its
// non-blocking calls raw for the same reason.
//
// Each returns the errno as a syscall.Errno (no allocation) or nil.

func errno(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// Read reads from fd into b.
func Read(fd int, b []byte) (int, error) { return rw(syscall.SYS_READ, fd, b, 0) }

// Write writes b to fd.
func Write(fd int, b []byte) (int, error) { return rw(syscall.SYS_WRITE, fd, b, 0) }

// Recv reads from the socket fd into b with recvfrom(2). On a socket it does what read(2)
// does without going through the VFS layer (file position lock, rw_verify_area, the
// file-permission hooks); perf on the connection load put that layer at ~1 % of the
// proxy's CPU.
func Recv(fd int, b []byte) (int, error) { return rw(syscall.SYS_RECVFROM, fd, b, 0) }

// Send writes b to the socket fd with sendto(2) and MSG_NOSIGNAL: like write(2) without
// the VFS layer, and a peer that has gone away gives EPIPE without raising SIGPIPE.
func Send(fd int, b []byte) (int, error) { return rw(syscall.SYS_SENDTO, fd, b, unix.MSG_NOSIGNAL) }

// rw makes the call trap(fd, b, len(b), flags) of read, write, recvfrom or sendto (the
// last two with no address).
func rw(trap uintptr, fd int, b []byte, flags uintptr) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), flags, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Writev writes the slices of iov, which the caller filled from its buffers, to the
// socket fd with one sendmsg(2) and MSG_NOSIGNAL: writev(2) without the VFS layer (see
// Recv), and no SIGPIPE.
func Writev(fd int, iov []syscall.Iovec) (int, error) {
	if len(iov) == 0 {
		return 0, nil
	}
	var msg unix.Msghdr
	msg.Iov = (*unix.Iovec)(unsafe.Pointer(&iov[0]))
	msg.SetIovlen(len(iov))
	n, _, e := syscall.RawSyscall(syscall.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_NOSIGNAL)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Splice moves up to n bytes from in to out (one of them a pipe), without waiting.
func Splice(in, out, n int) (int, error) {
	m, _, e := syscall.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n),
		unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
	if e != 0 {
		return 0, e
	}
	return int(m), nil
}

// Close closes fd. With reset, SO_LINGER is set to 0 first, so a TCP socket sends an RST
// instead of a FIN and does not linger in TIME_WAIT.
func Close(fd int, reset bool) {
	if reset {
		l := unix.Linger{Onoff: 1, Linger: 0}
		syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER,
			uintptr(unsafe.Pointer(&l)), unsafe.Sizeof(l), 0)
	}
	syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0)
}

// ShutdownWrite half-closes fd: the peer reads EOF once the queued bytes are read.
func ShutdownWrite(fd int) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return errno(e)
}

// SetNoDelay sets TCP_NODELAY on fd (as net does for every TCP socket).
func SetNoDelay(fd int) {
	one := int32(1)
	syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY,
		uintptr(unsafe.Pointer(&one)), 4, 0)
}

// SocketError reads and clears fd's pending error (SO_ERROR): a non-blocking connect's
// outcome.
func SocketError(fd int) error {
	var v int32
	l := uint32(4)
	_, _, e := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_ERROR,
		uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return errno(syscall.Errno(v))
}

// Accept takes a queued connection from the listening socket fd: non-blocking,
// close-on-exec, its peer's address in sa.
func Accept(fd int, sa *unix.RawSockaddrAny) (int, error) {
	l := uint32(unsafe.Sizeof(*sa))
	n, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(sa)),
		uintptr(unsafe.Pointer(&l)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// Socket opens a non-blocking, close-on-exec stream socket of family.
func Socket(family int) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_SOCKET, uintptr(family),
		unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// Connect starts connecting fd to the sockaddr at sa (size n); a non-blocking socket
// returns EINPROGRESS and reports the outcome as Out (or Err).
func Connect(fd int, sa unsafe.Pointer, n uintptr) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(sa), n)
	return errno(e)
}

// ConnectTCP opens a non-blocking TCP socket with TCP_NODELAY and starts connecting it
// to ap: the descriptor is returned while the connect is in flight (register it for Out).
func ConnectTCP(ap netip.AddrPort) (int, error) {
	family := unix.AF_INET6
	if ap.Addr().Is4() {
		family = unix.AF_INET
	}
	fd, err := Socket(family)
	if err != nil {
		return -1, err
	}
	SetNoDelay(fd)
	if family == unix.AF_INET {
		sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().As4()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
		err = Connect(fd, unsafe.Pointer(&sa), unsafe.Sizeof(sa))
	} else {
		sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ap.Addr().As16()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
		err = Connect(fd, unsafe.Pointer(&sa), unsafe.Sizeof(sa))
	}
	if err != nil && err != unix.EINPROGRESS {
		Close(fd, false)
		return -1, err
	}
	return fd, nil
}

// Alive reports whether the connected socket fd is open and has nothing to read: a peek
// that would block. A FIN (the peer closed), bytes the peer sent unasked, or an error mean
// the connection must not carry a request.
func Alive(fd int) bool {
	var b [1]byte
	_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return e == syscall.EAGAIN
}

// epollWait takes ready events without waiting.
func epollWait(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// epollCtl changes fd's registration in epfd.
func epollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd),
		uintptr(unsafe.Pointer(ev)), 0, 0)
	return errno(e)
}

// InputPending reports whether fd's receive queue holds bytes (SIOCINQ).
func InputPending(fd int) bool {
	var n int32
	_, _, e := syscall.RawSyscall(syscall.SYS_IOCTL, uintptr(fd), unix.SIOCINQ, uintptr(unsafe.Pointer(&n)))
	return e == 0 && n > 0
}

// OutputPending reports whether fd's send queue holds bytes not yet acknowledged by the
// peer (SIOCOUTQ).
func OutputPending(fd int) bool {
	var n int32
	_, _, e := syscall.RawSyscall(syscall.SYS_IOCTL, uintptr(fd), unix.SIOCOUTQ, uintptr(unsafe.Pointer(&n)))
	return e != 0 || n > 0
}

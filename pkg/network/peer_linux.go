package network

import (
	"crypto/tls"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpCloseWait is the kernel's TCP_CLOSE_WAIT state (include/net/tcp_states.h): the
// peer's FIN arrived and the socket has not been closed here.
const tcpCloseWait = 8

// tcpClose is the kernel's TCP_CLOSE state: a connected socket not closed here is in it
// after its peer reset it.
const tcpClose = 7

// Peer looks at c's socket, without reading from it or waiting, for a sign that its peer
// went away: a reset (or another pending error), or a FIN, also one queued behind bytes
// not yet read (a pipelined request). A TLS connection is looked at below TLS, where a
// close_notify alert is bytes and only the FIN behind it counts. Other connections are
// PeerOpen. It is a system call or two, made on any goroutine; it does not disturb a
// reader of c.
func Peer(c net.Conn) PeerState {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return PeerOpen
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return PeerOpen
	}
	st := PeerOpen
	if err := rc.Control(func(fd uintptr) { st = peekPeer(int(fd)) }); err != nil {
		return PeerReset // closed here already
	}
	return st
}

func peekPeer(fd int) PeerState {
	var b [1]byte
	n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return PeerOpen
	case err != nil:
		return PeerReset
	case n == 0:
		return PeerClosed
	}
	// Bytes wait to be read; a FIN or a reset behind them shows in the TCP state (not a
	// TCP socket: nothing more to learn). A reset leaves the unread bytes readable and
	// the socket in TCP_CLOSE.
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	switch {
	case err != nil:
	case info.State == tcpCloseWait:
		return PeerClosed
	case info.State == tcpClose:
		return PeerReset
	}
	return PeerOpen
}

// inputPending reports whether fd's receive queue holds bytes (SIOCINQ).
func inputPending(fd int) bool {
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	return err == nil && n > 0
}

// unacked returns how many bytes fd's send queue holds that the peer has not
// acknowledged (SIOCOUTQ).
func unacked(fd int) (int, bool) {
	n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	return n, err == nil
}

// outputPending reports whether fd's send queue holds bytes not acknowledged (SIOCOUTQ).
func outputPending(fd int) bool {
	n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	return err == nil && n > 0
}

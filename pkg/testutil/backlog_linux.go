//go:build linux

package testutil

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// RefusedAddr returns a loopback address whose connects are refused: a TCP socket is bound
// there but never listens, and it stays bound until the test ends, so no other socket (or
// another call) can be handed the same port meanwhile.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	_, port := boundSocket(t)
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port).String()
}

// boundSocket binds a TCP socket to a free loopback port and closes it when the test ends.
func boundSocket(t testing.TB) (int, uint16) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fd, uint16(sa.(*syscall.SockaddrInet4).Port)
}

// FullBacklog returns the address of a listening socket whose accept queue is full, so the
// kernel drops further SYNs and a connect to it hangs until its timeout.
func FullBacklog(t testing.TB) string {
	t.Helper()
	fd, port := boundSocket(t)
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port).String()
	// Fill the accept queue (backlog 0 holds one connection); never accepted.
	for range 2 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break // the queue is full
		}
		t.Cleanup(func() { c.Close() })
	}
	return addr
}

//go:build unix

package connpool

import (
	"errors"
	"sync"
	"syscall"
)

// prober peeks one byte from a socket; its peek func is bound once, so a pooled prober
// probes without allocating.
type prober struct {
	b     [1]byte
	alive bool
	peek  func(fd uintptr) bool
}

var probers = sync.Pool{New: func() any {
	pr := new(prober)
	pr.peek = func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), pr.b[:], syscall.MSG_PEEK)
		pr.alive = errors.Is(err, syscall.EAGAIN)
		return true // never wait for readiness
	}
	return pr
}}

// peekIdle peeks one byte: EAGAIN means nothing is waiting and the peer is still there;
// data, EOF or an error mean the connection cannot be reused. Go sockets are
// non-blocking, so the peek never waits.
func peekIdle(rc syscall.RawConn) bool {
	pr := probers.Get().(*prober)
	pr.alive = false
	err := rc.Read(pr.peek)
	alive := err == nil && pr.alive
	probers.Put(pr)
	return alive
}

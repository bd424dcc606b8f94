//go:build unix

package tcpproxy

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// errClientLeft cancels the dial of a session whose client left while it waited.
var errClientLeft = errors.New("tcp_proxy: the client left while the session waited for an upstream")

// leaveHold bounds the bytes a watch takes from the client while the session waits.
const leaveHold = 16 << 10

// leaveWatch watches a client while its session, on a goroutine, waits for a healthy
// host: nobody reads the client meanwhile, so without it a client that leaves is noticed
// only when the wait ends (up to pick_timeout).
//
// It reads what the client sends, up to leaveHold bytes, which the session writes to the
// upstream first once connected. A reset (or any socket error) cancels the dial. A FIN
// ends the watch and the wait goes on: a half-closed client may still expect an answer
// (half-close semantics, as the event-loop sessions keep them); the session reads the
// EOF itself. So does a client that fills leaveHold.
type leaveWatch struct {
	raw    net.Conn
	cancel context.CancelCauseFunc
	done   chan struct{}
	left   atomic.Bool
	held   []byte // read by the watch; the caller's after stop
}

// watchLeave starts watching raw and returns the context the dial must use; nil when raw
// cannot be read without net (TLS), in which case ctx is returned as is.
func watchLeave(ctx context.Context, raw net.Conn) (context.Context, *leaveWatch) {
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return ctx, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return ctx, nil
	}
	wctx, cancel := context.WithCancelCause(ctx)
	w := &leaveWatch{raw: raw, cancel: cancel, done: make(chan struct{}), held: make([]byte, 0, leaveHold)}
	go w.run(rc)
	return wctx, w
}

func (w *leaveWatch) run(rc syscall.RawConn) {
	defer close(w.done)
	_ = rc.Read(func(fd uintptr) bool { // returns when stop sets a past deadline
		for len(w.held) < cap(w.held) {
			free := w.held[len(w.held):cap(w.held)]
			n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&free[0])), uintptr(len(free)))
			switch {
			case e == syscall.EINTR:
				continue
			case e == syscall.EAGAIN:
				return false
			case e != 0: // a reset
				w.left.Store(true)
				w.cancel(errClientLeft)
				return true
			case n == 0: // FIN: half-closed, not gone
				return true
			}
			w.held = w.held[:len(w.held)+int(n)]
		}
		return true
	})
}

// stop ends the watch. It reports whether the client left, and returns the bytes the
// watch read from it.
func (w *leaveWatch) stop() (left bool, held []byte) {
	_ = w.raw.SetReadDeadline(time.Unix(1, 0))
	<-w.done
	_ = w.raw.SetReadDeadline(time.Time{})
	w.cancel(nil)
	return w.left.Load(), w.held
}

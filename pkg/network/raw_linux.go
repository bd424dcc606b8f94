package network

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/mosnlite/mosnlite/pkg/network/evloop"
)

const (
	// acceptBatch bounds the sockets one loop accepts in a row before it serves other
	// events; the rest are taken on a zero-delay timer, in the same turn of the loop.
	acceptBatch = 64
	// pausedRetry is how often a loop whose listener is at max_connections looks again
	// when no connection of its own closed meanwhile.
	pausedRetry = 10 * time.Millisecond
)

// rawOK reports whether Serve runs this listener on its event loops.
func (l *Listener) rawOK() bool {
	if l.cfg.RawHandler == nil || l.cfg.Loops == nil || len(l.cfg.Loops.Loops()) == 0 || l.cfg.TLS != nil ||
		l.cfg.OriginalDst != "" || !l.cfg.BindPort {
		return false
	}
	_, ok := l.ln.(*net.TCPListener)
	return ok
}

// acceptor is a listener's registration on one loop.
type acceptor struct {
	l      *Listener
	loop   *evloop.Loop
	fd     int
	tok    evloop.Token
	paused bool // at max_connections, overloaded, or backing off after an accept error
	over   bool // paused by ListenerConfig.Overloaded (counted once per pause)
	full   bool // paused at max_connections (counted once per pause)
	// noDelay: accepted sockets inherit TCP_NODELAY from the listening socket.
	noDelay bool
	retry   evloop.Timer
	sa      unix.RawSockaddrAny
	errLog  limiter
	ovLog   limiter
	back    time.Duration
}

// serveRaw registers the listening socket with every loop and waits for ctx; the loops
// accept. On return the socket is deregistered from every loop and closed.
func (l *Listener) serveRaw(ctx context.Context) error {
	if err := l.startRaw(); err != nil {
		l.Close()
		return fmt.Errorf("listener %q: %w", l.cfg.Name, err)
	}
	<-ctx.Done()
	l.Close()
	return nil
}

// startRaw registers the socket with every loop. It holds rawMu, which Close's stopRaw
// takes before the socket is closed: the descriptor stays open while it is registered.
func (l *Listener) startRaw() error {
	l.rawMu.Lock()
	defer l.rawMu.Unlock()
	if l.closing.Load() {
		return nil
	}
	rc, err := l.ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return err
	}
	inherit := l.listenNoDelay // set before listen (sockopt_linux.go); not for an inherited socket
	loops := l.cfg.Loops.Loops()
	l.rawLists = make([]rawList, len(loops))
	accs := make([]*acceptor, len(loops))
	errs := make(chan error, len(loops))
	for i, lp := range loops {
		a := &acceptor{l: l, loop: lp, fd: fd, noDelay: inherit}
		a.retry.H = a
		accs[i] = a
		posted := lp.Post(func() {
			var err error
			a.tok, err = lp.AddListener(fd, a, len(loops) > 1)
			if err != nil {
				a.fd = -1
			}
			errs <- err
		})
		if !posted {
			a.fd = -1
			errs <- evloop.ErrClosed
		}
	}
	l.acceptors.Store(&accs) // from here on stopRaw deregisters them
	for range loops {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	if err != nil {
		return err
	}
	l.log.Info("listener serving on event loops", zap.Int("loops", len(loops)))
	return nil
}

// stopRaw deregisters the listening socket from the loops, and waits until they did, so
// no loop accepts on the descriptor once it is closed (its number may be reused). Called
// by Close with the socket still open; must not be called on a loop.
func (l *Listener) stopRaw() {
	l.rawMu.Lock()
	defer l.rawMu.Unlock()
	p := l.acceptors.Swap(nil)
	if p == nil {
		return
	}
	accs := *p
	done := make(chan struct{}, len(accs))
	for _, a := range accs {
		posted := a.loop.Post(func() {
			a.loop.Cancel(&a.retry)
			if a.fd >= 0 {
				if err := a.loop.Remove(a.fd, a.tok); err != nil {
					l.log.Warn("listener: leaving event loop", zap.Error(err))
				}
			}
			a.fd = -1
			done <- struct{}{}
		})
		if !posted { // a stopped loop dropped its registrations with it
			done <- struct{}{}
		}
	}
	for range accs {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			// A loop that does not answer in 10s is stuck: leave it.
			l.log.Error("listener: an event loop did not release the socket")
			return
		}
	}
}

// OnEvents: the listening socket is readable (connections are queued).
func (a *acceptor) OnEvents(uint32) {
	if !a.paused {
		a.accept()
	}
}

// OnTimer resumes accepting after a pause or a full batch.
func (a *acceptor) OnTimer() {
	a.paused = false
	a.accept()
}

// accept takes queued connections until the queue is empty, the batch is full (the rest
// on a zero-delay timer), max_connections is reached (retry when a connection of this
// loop closes, or after pausedRetry), or accept fails (retry after a back-off).
func (a *acceptor) accept() {
	l := a.l
	for range acceptBatch {
		if a.fd < 0 {
			return
		}
		if l.overloaded(&a.over) {
			a.pause(overloadRetry)
			return
		}
		select {
		case l.sem <- struct{}{}:
			a.full = false
		default:
			if a.full {
				a.pause(pausedRetry)
				return
			}
			a.full = true
			l.cxOverflow.Inc()
			if n, ok := a.ovLog.allow(); ok {
				l.log.Warn("max_connections reached; accepting paused", zap.Int("max_connections", l.cfg.MaxConnections),
					zap.Int("suppressed", n))
			}
			a.pause(pausedRetry)
			return
		}
		fd, err := evloop.Accept(a.fd, &a.sa)
		if err != nil {
			<-l.sem
			switch err {
			case unix.EAGAIN:
				a.back = 0
				return
			case unix.EINTR, unix.ECONNABORTED:
				continue
			}
			// EMFILE, ENFILE, ENOBUFS, ENOMEM and the like: the kernel backlog holds the
			// connections while the loop backs off.
			l.acceptErrs.Inc()
			a.back = min(max(2*a.back, minBackoff), maxBackoff)
			if n, ok := a.errLog.allow(); ok {
				l.log.Warn("accept failed; backing off", zap.Error(err), zap.Duration("backoff", a.back),
					zap.Int("suppressed", n))
			}
			a.pause(a.back)
			return
		}
		a.back = 0
		if !a.noDelay {
			evloop.SetNoDelay(fd) // as net does
		}
		l.cxTotal.Inc()
		acc := Accepted{FD: fd, Remote: sockaddrAddrPort(&a.sa), Loop: a.loop, l: l}
		if !l.cfg.RawHandler.ServeRaw(acc) {
			l.serveFallback(fd, nil)
		}
	}
	// A full batch: more may be queued, and an edge-triggered socket will not say so again.
	a.loop.Schedule(&a.retry, a.loop.Now())
}

func (a *acceptor) pause(d time.Duration) {
	a.paused = true
	a.loop.Schedule(&a.retry, a.loop.Now()+int64(d))
}

// rawFreed is called on loop after a RawConn of this listener closed there: a loop paused
// at max_connections resumes at once.
func (l *Listener) rawFreed(loop *evloop.Loop) {
	if l.closing.Load() {
		return
	}
	p := l.acceptors.Load()
	if p == nil || loop.ID() >= len(*p) {
		return
	}
	if a := (*p)[loop.ID()]; a.loop == loop && a.paused && a.back == 0 && a.fd >= 0 {
		a.loop.Cancel(&a.retry)
		a.paused = false
		a.accept()
	}
}

// serveFallback serves a socket the RawHandler declined or handed off as a Conn on a
// goroutine: the descriptor becomes a net.Conn (net dups it; this one is closed), and
// held is read before the socket. Its max_connections slot is already held.
func (l *Listener) serveFallback(fd int, held []byte) {
	f := os.NewFile(uintptr(fd), "")
	raw, err := net.FileConn(f)
	f.Close()
	if err != nil {
		<-l.sem
		l.log.Warn("listener: handing an accepted socket to a goroutine failed", zap.Error(err))
		return
	}
	c := newConn(raw, l.cfg.Conn)
	c.listener = l.cfg.Name
	c.Unread(held)
	l.start(c, l.sem, l.base, &l.workers)
}

// closeFD closes a socket, with an RST when reset (SO_LINGER on, 0 s).
func closeFD(fd int, reset bool) { evloop.Close(fd, reset) }

// SockName is fd's local address (getsockname); the zero AddrPort on failure.
func SockName(fd int) netip.AddrPort {
	var sa unix.RawSockaddrAny
	n := uint32(unsafe.Sizeof(sa))
	if _, _, e := syscall.Syscall(syscall.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&n))); e != 0 {
		return netip.AddrPort{}
	}
	return sockaddrAddrPort(&sa)
}

// sockaddrAddrPort decodes an AF_INET or AF_INET6 sockaddr (IPv4-mapped addresses
// unmapped); the zero AddrPort for other families.
func sockaddrAddrPort(sa *unix.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case unix.AF_INET:
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&p.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(p.Addr), port)
	case unix.AF_INET6:
		p := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&p.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(p.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

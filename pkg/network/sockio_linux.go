package network

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/mosnlite/mosnlite/pkg/network/evloop"
)

// maxIOV is the most slices one writev(2) takes (IOV_MAX).
const maxIOV = 1024

// maxRW caps one read or write, as the runtime's poller does for stream sockets.
const maxRW = 1 << 30

// sockIO is the raw-call state of a SockIO: what a callback works on, and the callbacks,
// made once so that no call allocates.
type sockIO struct {
	rc syscall.RawConn // nil: the connection's own Read and Write
	op string          // the network, for errors ("tcp", "unix")

	rp   []byte // read: destination
	rn   int
	rerr error
	rfn  func(uintptr) bool

	wp   []byte   // write: source, and how much of it is written
	wb   [][]byte // writev: what is left to write
	wn   int
	werr error
	iov  []syscall.Iovec
	wfn  func(uintptr) bool
	wvfn func(uintptr) bool

	nowait bool // TryWritev: a full send buffer ends the call instead of waiting
	full   bool // the last TryWritev stopped at a full send buffer
}

func (s *SockIO) init(c net.Conn) {
	var sc interface {
		SyscallConn() (syscall.RawConn, error)
	}
	switch t := c.(type) {
	case *net.TCPConn:
		sc, s.op = t, "tcp"
	case *net.UnixConn:
		sc, s.op = t, "unix"
	default:
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	s.rc = rc
	s.rfn = s.readCall
	s.wfn = s.writeCall
	s.wvfn = s.writevCall
}

func (s *SockIO) raw() bool { return s.rc != nil }

// Read reads into p like the connection's Read: io.EOF at the end of the stream, the
// deadline and closed-connection errors of net.
func (s *SockIO) Read(p []byte) (int, error) {
	if s.rc == nil {
		return s.c.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	s.rp, s.rn, s.rerr = p, 0, nil
	err := s.rc.Read(s.rfn)
	n, rerr := s.rn, s.rerr
	s.rp = nil
	switch {
	case err != nil:
		return 0, s.opError("read", err)
	case rerr != nil:
		return 0, s.opError("read", os.NewSyscallError("read", rerr))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (s *SockIO) readCall(fd uintptr) bool {
	for {
		n, err := evloop.Recv(int(fd), s.rp)
		switch err {
		case nil:
			s.rn = n
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // the poller waits, then calls again
		}
		s.rerr = err
		return true
	}
}

// Write writes all of p, waiting in the poller while the socket's send buffer is full.
func (s *SockIO) Write(p []byte) (int, error) {
	if s.rc == nil {
		return s.c.Write(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	s.wp, s.wn, s.werr = p, 0, nil
	err := s.rc.Write(s.wfn)
	n, werr := s.wn, s.werr
	s.wp = nil
	if err == nil && werr != nil {
		err = os.NewSyscallError("write", werr)
	}
	if err != nil {
		return n, s.opError("write", err)
	}
	return n, nil
}

func (s *SockIO) writeCall(fd uintptr) bool {
	for s.wn < len(s.wp) {
		n, err := evloop.Send(int(fd), s.wp[s.wn:min(len(s.wp), s.wn+maxRW)])
		if stop, done := s.wrote(n, err); stop {
			return done
		}
	}
	return true
}

// wrote takes one write(2) or writev(2) outcome: the bytes are counted, EINTR goes on,
// EAGAIN stops the callback for the poller to wait (done false), and an error stops it
// for good.
func (s *SockIO) wrote(n int, err error) (stop, done bool) {
	switch err {
	case nil:
	case syscall.EINTR:
		return false, false
	case syscall.EAGAIN:
		if s.nowait {
			s.full = true
			return true, true
		}
		return true, false
	default:
		s.werr = err
		return true, true
	}
	if n == 0 {
		s.werr = io.ErrUnexpectedEOF
		return true, true
	}
	s.wn += n
	return false, false
}

func (s *SockIO) writev(bufs [][]byte) (int64, error) {
	s.wb, s.wn, s.werr = bufs, 0, nil
	err := s.rc.Write(s.wvfn)
	n, werr := s.wn, s.werr
	s.wb = nil
	clear(s.iov[:cap(s.iov)])
	if err == nil && werr != nil {
		err = os.NewSyscallError("writev", werr)
	}
	if err != nil {
		return int64(n), s.opError("write", err)
	}
	return int64(n), nil
}

// unacked is the socket's SIOCOUTQ: bytes sent and not acknowledged yet.
func (s *SockIO) unacked() (n int, ok bool) {
	if s.rc == nil {
		return 0, false
	}
	if s.rc.Control(func(fd uintptr) { n, ok = unacked(int(fd)) }) != nil {
		return 0, false
	}
	return n, ok
}

// tryWritev is writev that returns at a full send buffer instead of waiting there.
func (s *SockIO) tryWritev(bufs [][]byte) (int64, bool, error) {
	s.nowait, s.full = true, false
	n, err := s.writev(bufs)
	s.nowait = false
	return n, s.full, err
}

func (s *SockIO) writevCall(fd uintptr) bool {
	for {
		iov := s.iov[:0]
		for _, b := range s.wb {
			if len(b) == 0 {
				continue
			}
			v := syscall.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
			if len(iov) == maxIOV {
				break
			}
		}
		s.iov = iov
		if len(iov) == 0 {
			s.wb = nil
			return true
		}
		n, err := evloop.Writev(int(fd), iov)
		if stop, done := s.wrote(n, err); stop {
			return done
		}
		s.consume(n)
	}
}

// consume drops the first n written bytes from s.wb.
func (s *SockIO) consume(n int) {
	for len(s.wb) > 0 {
		if n < len(s.wb[0]) {
			s.wb[0] = s.wb[0][n:]
			return
		}
		n -= len(s.wb[0])
		s.wb[0] = nil
		s.wb = s.wb[1:]
	}
}

// opError wraps err as net does, so errors.Is finds os.ErrDeadlineExceeded, net.ErrClosed
// and the errno through it. A RawConn error is already an *net.OpError ("raw-read").
func (s *SockIO) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return err
	}
	return &net.OpError{Op: op, Net: s.op, Source: s.c.LocalAddr(), Addr: s.c.RemoteAddr(), Err: err}
}

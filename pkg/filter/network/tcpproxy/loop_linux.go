package tcpproxy

import (
	"errors"
	"net/netip"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/mosnlite/mosnlite/pkg/log"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/network/evloop"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// The event-loop data path (network.RawHandler). A listener with event loops hands each
// accepted socket to ServeRaw on the loop that accepted it; the session then lives on that
// loop: the upstream socket is connected without blocking, both sockets are edge-triggered
// in the loop's epoll set, and bytes are moved by the loop's goroutine with non-blocking
// reads and writes through the loop's scratch buffer. A short read means the socket is
// drained (no read that returns EAGAIN before each wait); a read that fills the buffer
// means a burst, and that direction switches to splice(2) through a pipe of its own, so
// bulk bytes stay in the kernel as on the goroutine path. A write the peer cannot take
// keeps the rest (in a pooled buffer, or in the pipe) and stops reading that direction's
// source until the peer drains: memory per session is bounded by one buffer or one pipe
// per direction.
//
// It keeps the goroutine path's behaviour: routes, the cluster's dial policy
// (cluster.Attempts: breaker, picks, connect_timeout, max_connect_attempts, outlier
// accounting), half-close both ways, resets passed on as resets, idle_timeout, the
// upstream's time to first byte for LB_PEAK_EWMA, byte and session counters, drain.
// Sockets ServeRaw declines (a cluster whose connections need its dialer: upstream TLS, a
// custom dialer) are served by ServeConn on a goroutine.

// Session states.
const (
	stPicking    uint8 = iota + 1 // waiting for a healthy host, on a goroutine (WaitPick)
	stConnecting                  // the upstream connect is in flight
	stOpen                        // proxying
	stClosed
)

// loopSession is one proxied connection pair on an event loop. Its methods run on the loop.
type loopSession struct {
	f     *Filter
	down  network.RawConn // the downstream socket and its accounting
	up    upSide          // the upstream socket's handler
	loop  *evloop.Loop
	dtok  evloop.Token
	upFD  int
	state uint8
	// pw is the WaitPick goroutine's hand-off (stPicking); nil when no wait is on.
	pw *cluster.PickWait

	name  string
	cl    *cluster.Cluster
	st    *clusterStats
	lbReq lb.Request
	att   cluster.Attempts
	host  *cluster.Host
	done  func(lb.DoneInfo)

	timer  evloop.Timer // connect timeout, then idle timeout
	resume evloop.Timer // a pump that used its budget continues (resumeSide)
	idle   int64        // ns; 0: none
	opened int64        // loop clock when the upstream connected
	last   int64        // loop clock of the last bytes moved
	reqAt  int64        // when the client's first bytes went upstream; 0: not yet
	ttfb   int64        // the upstream's time to first byte; 0: no sample
	halves [2]loopHalf  // client→upstream, upstream→client
}

// upSide is the upstream socket's handler, embedded in its session.
type upSide struct {
	s   *loopSession
	tok evloop.Token
}

// loopHalf is one direction of a loop session.
type loopHalf struct {
	fromUp   bool
	readable bool // src has input or an EOF/error to report: an edge was seen and not drained
	rdhup    bool // src's peer sent its FIN: a short read reaches the EOF
	eof      bool // src's EOF was read
	shut     bool // this direction is finished (dst shut down for writing, or about to be closed)
	blocked  bool // dst said EAGAIN; waiting for it to be writable
	moved    bool // bytes went through
	// Bytes read but not yet written: pend[po:pn] of a pooled buffer.
	pend   *[]byte
	po, pn int
	// Splice mode, after a read filled the loop's buffer: a pipe from the loop while bytes
	// flow, and the bytes in it.
	splice  bool
	hasPipe bool
	pipe    [2]int
	inPipe  int
	bytes   prometheus.Counter
}

// ServeRaw implements network.RawHandler: it takes the socket unless its cluster's
// connections need the cluster's dialer (then ServeConn serves it on a goroutine).
func (f *Filter) ServeRaw(a network.Accepted) bool {
	var dst netip.AddrPort
	s := &loopSession{f: f, loop: a.Loop, upFD: -1}
	if f.needDst {
		dst = a.Local()
	}
	name := f.route(a.Remote, dst)
	if name == "" {
		s.down.Init(a, s)
		f.warn("tcp_proxy: no route", zap.Stringer(log.FieldRemote, a.Remote), zap.Stringer("local", dst))
		s.down.Close(reasonNoRoute, false)
		return true
	}
	cl, ok := f.clusters.Get(name)
	if !ok {
		s.down.Init(a, s)
		f.warn("tcp_proxy: cluster not found", zap.String(log.FieldCluster, name))
		s.down.Close(reasonNoCluster, false)
		return true
	}
	s.lbReq = lb.Request{HashKey: lb.HashIP(a.Remote.Addr()), HasHash: true}
	err := cl.StartAttempts(&s.att, &s.lbReq)
	if errors.Is(err, cluster.ErrNotRaw) {
		return false
	}
	s.down.Init(a, s)
	if err != nil {
		f.warn("tcp_proxy: cluster max_connections reached", zap.String(log.FieldCluster, name))
		s.down.Close(network.CloseOverflow, false)
		return true
	}
	s.name, s.cl = name, cl
	s.att.Limit(f.attempts)
	s.idle = f.idleFor(a.IdleTimeout())
	s.up.s = s
	s.timer.H = s
	s.resume.H = (*resumeSide)(s)
	s.halves[1].fromUp = true
	if s.dtok, err = s.loop.Add(a.FD, s); err != nil {
		s.att.Abandon()
		f.warn("tcp_proxy: event loop refused the socket", zap.Error(err))
		s.down.Close(network.CloseError, false)
		return true
	}
	s.connectNext()
	return true
}

// idleFor is the session's idle timeout: the filter's, or the listener's connection idle
// timeout when that is shorter.
func (f *Filter) idleFor(conn int64) int64 {
	d := int64(f.idle)
	if conn > 0 && (d <= 0 || conn < d) {
		d = conn
	}
	return max(d, 0)
}

// connectNext starts the next connect attempt, or ends the session when none is left.
func (s *loopSession) connectNext() {
	for {
		_, ap, err := s.att.Next()
		if err != nil {
			if s.att.CanWait() {
				s.waitPick()
				return
			}
			s.connectFailed(err)
			return
		}
		fd, err := evloop.ConnectTCP(ap)
		if err != nil {
			s.att.Failed(err, false, false)
			continue
		}
		if s.up.tok, err = s.loop.Add(fd, &s.up); err != nil {
			evloop.Close(fd, false)
			s.att.Failed(err, false, false)
			continue
		}
		s.upFD = fd
		s.state = stConnecting
		s.loop.Schedule(&s.timer, s.loop.Now()+int64(s.att.ConnectTimeout()))
		return
	}
}

// waitPick waits for a healthy host on a goroutine (the cluster's pick_timeout), then
// continues on the loop. A client that leaves meanwhile drops the wait (endWait).
func (s *loopSession) waitPick() {
	s.state = stPicking
	s.pw = s.att.GoWaitPick(func(w *cluster.PickWait, err error) {
		// A loop that stopped drops picked (refused, or accepted and never run); it has
		// ended (or will end) the session then (LoopClosed), and endWait abandons att.
		s.loop.Post(func() { s.picked(w, err) })
	})
}

// picked continues on the loop a session whose wait for a host ended (err: no host).
func (s *loopSession) picked(w *cluster.PickWait, err error) {
	if s.pw != w {
		return // the session ended during the wait (endWait)
	}
	s.pw = nil
	w.Cancel()
	if err != nil {
		s.connectFailed(err)
		return
	}
	s.connectNext()
}

// endWait ends the wait of a session that ends during it: the attempts are abandoned here
// if WaitPick returned already, else by the goroutine when it does.
func (s *loopSession) endWait() {
	w := s.pw
	s.pw = nil
	w.Drop()
}

// connectFailed ends a session whose upstream could not be connected.
func (s *loopSession) connectFailed(err error) {
	s.f.warn("tcp_proxy: upstream connect failed", zap.String(log.FieldCluster, s.name), zap.Error(err))
	s.att.Abandon()
	s.finish(reasonConnectFailed, false, nil)
}

// OnEvents is the downstream socket's readiness.
func (s *loopSession) OnEvents(ev uint32) {
	switch s.state {
	case stOpen:
		s.ready(&s.halves[0], &s.halves[1], ev)
	case stPicking, stConnecting:
		s.mark(&s.halves[0], &s.halves[1], ev) // for when the upstream is there
		// The client reset or vanished before the upstream was there: no reason to go on.
		if ev&(evloop.Err|evloop.Hup) != 0 {
			s.finish(reasonDownstreamRset, true, nil)
		}
	}
}

// OnEvents is the upstream socket's readiness.
func (u *upSide) OnEvents(ev uint32) {
	s := u.s
	if s.state == stConnecting {
		if ev&(evloop.Err|evloop.Hup) != 0 {
			err := evloop.SocketError(s.upFD)
			if err == nil {
				err = syscall.ECONNREFUSED // hung up with no error recorded
			}
			s.attemptFailed(err, false)
			return
		}
		if ev&evloop.Out == 0 {
			return
		}
		s.connected()
	}
	if s.state == stOpen {
		s.ready(&s.halves[1], &s.halves[0], ev)
	}
}

// mark records a socket's readiness ev on the half reading from it (in) and the half
// writing to it (out). Edges are reported once: what is not acted on now must be kept.
func (s *loopSession) mark(in, out *loopHalf, ev uint32) {
	if ev&(evloop.In|evloop.RdHup|evloop.Err|evloop.Hup) != 0 {
		in.readable = true
		in.rdhup = in.rdhup || ev&evloop.RdHup != 0
	}
	if ev&(evloop.Out|evloop.Err|evloop.Hup) != 0 {
		out.blocked = false
	}
}

// ready applies a socket's readiness ev: the half reading from it (in) may read, the half
// writing to it (out) may write; both are pumped.
func (s *loopSession) ready(in, out *loopHalf, ev uint32) {
	s.mark(in, out, ev)
	s.pump(in)
	if s.state == stOpen {
		s.pump(out)
	}
}

// attemptFailed drops the failed upstream socket and tries the next host.
func (s *loopSession) attemptFailed(err error, timedOut bool) {
	s.loop.Forget(s.up.tok)
	evloop.Close(s.upFD, false)
	s.upFD = -1
	s.loop.Cancel(&s.timer)
	if timedOut {
		err = nil
	}
	s.att.Failed(err, timedOut, false)
	s.connectNext()
}

// connected starts proxying.
func (s *loopSession) connected() {
	s.host, s.done = s.att.Connected()
	s.host.ReportResult(true) // the connect is tcp_proxy's result for outlier detection
	s.state = stOpen
	s.st = s.f.stats.get(s.name)
	s.st.sessions.Inc()
	s.halves[0].bytes, s.halves[1].bytes = s.st.rx, s.st.tx
	s.opened, s.last = s.loop.Now(), s.loop.Now()
	s.loop.Cancel(&s.timer)
	if s.idle > 0 {
		s.loop.Schedule(&s.timer, s.last+s.idle)
	}
}

// OnTimer: the connect timed out, or the idle timeout may have passed.
func (s *loopSession) OnTimer() {
	switch s.state {
	case stConnecting:
		s.attemptFailed(nil, true)
	case stOpen:
		if quiet := s.loop.Now() - s.last; quiet < s.idle {
			s.loop.Schedule(&s.timer, s.last+s.idle)
			return
		}
		s.finish(network.CloseIdleTimeout, false, nil)
	}
}

// resumeSide is the session's resume timer handler.
type resumeSide loopSession

// OnTimer continues both directions after a pump used its budget.
func (r *resumeSide) OnTimer() {
	s := (*loopSession)(r)
	if s.state == stOpen {
		s.pump(&s.halves[0])
	}
	if s.state == stOpen {
		s.pump(&s.halves[1])
	}
}

// ForceClose implements network.RawOwner: the listener's drain ran out of time.
func (s *loopSession) ForceClose(r network.CloseReason) { s.finish(r, false, nil) }

// LoopClosed: the loop's group was closed with the session still open.
func (s *loopSession) LoopClosed() { s.finish(network.CloseDrain, false, nil) }

// LoopClosed: see loopSession.LoopClosed.
func (u *upSide) LoopClosed() { u.s.LoopClosed() }

// fds returns h's source and destination sockets.
func (s *loopSession) fds(h *loopHalf) (src, dst int) {
	if h.fromUp {
		return s.upFD, s.down.FD
	}
	return s.down.FD, s.upFD
}

// pump moves h's bytes until its source is drained, its destination is full, or it ends.
func (s *loopSession) pump(h *loopHalf) {
	src, dst := s.fds(h)
	moved := 0
	for !h.shut {
		if h.blocked && (h.inPipe > 0 || h.pn > h.po) {
			return // dst said EAGAIN: wait for it to drain (Out)
		}
		if moved >= pumpBudget {
			// Fast peers on both sides would keep this loop here: let the loop's other
			// sockets have their turn, and continue at the end of this batch.
			s.loop.Schedule(&s.resume, s.loop.Now())
			return
		}
		// First what is held from before.
		if h.inPipe > 0 {
			n, err := evloop.Splice(h.pipe[0], dst, h.inPipe)
			if err != nil {
				s.writeFailed(h, err)
				return
			}
			h.inPipe -= int(n)
			moved += n
			s.wrote(h, int(n))
			continue
		}
		if h.pn > h.po {
			n, err := evloop.Send(dst, (*h.pend)[h.po:h.pn])
			if err != nil {
				s.writeFailed(h, err)
				return
			}
			h.po += n
			moved += n
			s.wrote(h, n)
			if h.po == h.pn {
				s.f.pool.Put(h.pend)
				h.pend, h.po, h.pn = nil, 0, 0
			}
			continue
		}
		if h.eof {
			s.halfDone(h)
			return
		}
		if !h.readable {
			return
		}
		if h.splice {
			if !h.hasPipe {
				p, err := s.loop.GetPipe()
				if err != nil {
					h.splice = false // no descriptor for a pipe: read and write
					continue
				}
				h.pipe, h.hasPipe = p, true
			}
			n, err := evloop.Splice(src, h.pipe[1], spliceMax)
			if n == 0 {
				if err == unix.EAGAIN {
					// Drained, and the pipe is empty: give it back while the source is quiet.
					s.loop.PutPipe(h.pipe, false)
					h.hasPipe = false
				}
				if s.noInput(h, err) {
					return
				}
				continue
			}
			h.inPipe = n
			continue
		}
		buf := s.loop.Buf
		n, err := evloop.Recv(src, buf)
		if n == 0 {
			if s.noInput(h, err) {
				return
			}
			continue
		}
		w, err := evloop.Send(dst, buf[:n])
		if err != nil {
			if err != unix.EAGAIN {
				s.broken(h, false, err)
				return
			}
			w = 0
		}
		if w > 0 {
			moved += w
			s.wrote(h, w)
		}
		if w < n {
			// The peer is slow: keep the rest and stop reading until it drains.
			h.pend = s.f.pool.Get(n - w)
			h.po, h.pn = 0, copy(*h.pend, buf[w:n])
			h.blocked = true
		}
		switch {
		case n == len(buf):
			h.splice = true // a burst: splice what follows
		case h.rdhup:
			h.eof = true // a short read after the FIN: the EOF is next
		default:
			h.readable = false // a short read drained the socket
		}
		if h.blocked {
			return
		}
	}
}

// noInput handles a read of h's source that gave nothing: EAGAIN (drained: wait for the
// next edge), an error (the session breaks) or, with err nil, the EOF. It reports whether
// pump must return.
func (s *loopSession) noInput(h *loopHalf, err error) bool {
	switch {
	case err == unix.EAGAIN:
		h.readable = false
		return true
	case err != nil:
		s.broken(h, true, err)
		return true
	}
	h.eof = true
	return false
}

// writeFailed handles a failed write to h's destination: EAGAIN waits for it to drain
// (Out); anything else breaks the session.
func (s *loopSession) writeFailed(h *loopHalf, err error) {
	if err == unix.EAGAIN {
		h.blocked = true
		return
	}
	s.broken(h, false, err)
}

// wrote accounts n bytes delivered by h.
func (s *loopSession) wrote(h *loopHalf, n int) {
	now := s.loop.Now()
	s.last = now
	h.bytes.Add(float64(n))
	if h.moved {
		return
	}
	h.moved = true
	if !h.fromUp {
		s.reqAt = max(now, 1)
		return
	}
	lat := now - s.opened
	if s.reqAt > 0 && s.reqAt < now {
		lat = now - s.reqAt // the client spoke first: from its request to the answer
	}
	s.ttfb = max(lat, 1)
}

// halfDone passes h's EOF on as a half-close, or ends the session when the other
// direction finished too (closing both sockets sends that FIN).
func (s *loopSession) halfDone(h *loopHalf) {
	h.shut = true
	other := &s.halves[0]
	if h == other {
		other = &s.halves[1]
	}
	if other.shut {
		s.finish(network.CloseRemote, false, nil)
		return
	}
	_, dst := s.fds(h)
	if err := evloop.ShutdownWrite(dst); err != nil && err != unix.ENOTCONN {
		s.broken(h, false, err)
	}
}

// broken ends the session after a socket failed: fromSrc says whether h's source (else
// its destination) gave err. Both peers get an RST, so neither mistakes the stream for
// complete.
func (s *loopSession) broken(h *loopHalf, fromSrc bool, err error) {
	upBroke := fromSrc == h.fromUp
	reset := errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
	reason := network.CloseError
	switch {
	case upBroke && reset:
		reason = reasonUpstreamReset
	case reset:
		reason = reasonDownstreamRset
	case !upBroke && network.SendTimedOut(err):
		reason = network.CloseSendTimeout
	}
	var upErr error
	if upBroke {
		upErr = errUpstream
	}
	if ce := s.f.log.Check(zap.DebugLevel, "tcp_proxy copy failed"); ce != nil {
		ce.Write(zap.Bool("from_upstream", upBroke), zap.Error(err))
	}
	s.finish(reason, true, upErr)
}

// finish ends the session: both sockets closed (with RSTs when reset), buffers and pipes
// released, the balancer told, the listener's accounting closed.
func (s *loopSession) finish(reason network.CloseReason, reset bool, upErr error) {
	prev := s.state
	if prev == stClosed {
		return
	}
	s.state = stClosed
	s.loop.Cancel(&s.timer)
	s.loop.Cancel(&s.resume)
	if s.dtok != 0 {
		s.loop.Forget(s.dtok)
	}
	if s.upFD >= 0 {
		s.loop.Forget(s.up.tok)
		evloop.Close(s.upFD, reset)
		s.upFD = -1
	}
	for i := range s.halves {
		h := &s.halves[i]
		if h.pend != nil {
			s.f.pool.Put(h.pend)
			h.pend = nil
		}
		if h.hasPipe {
			s.loop.PutPipe(h.pipe, h.inPipe > 0)
			h.hasPipe, h.inPipe = false, 0
		}
	}
	switch {
	case s.pw != nil: // stPicking; after picked, connectFailed has abandoned the attempts
		s.endWait()
	case prev == stConnecting:
		s.att.Abandon()
	}
	if s.done != nil {
		s.done(lb.DoneInfo{Latency: time.Duration(s.ttfb), Err: upErr})
		s.done = nil
	}
	s.down.Close(reason, reset)
	if ce := s.f.log.Check(zap.DebugLevel, "tcp_proxy session ended"); ce != nil {
		var host string
		if s.host != nil {
			host = s.host.Addr()
		}
		ce.Write(zap.String(log.FieldListener, s.f.listener), zap.String(log.FieldCluster, s.name),
			zap.String(log.FieldHost, host), zap.String(log.FieldReason, string(reason)),
			zap.Duration("first_byte", time.Duration(s.ttfb)))
	}
}

package xprotocol

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// session is one downstream connection. Its fields belong to the connection's goroutine,
// except inflight (decremented by upstream goroutines) and c (Write is concurrent-safe).
type session struct {
	e   *Engine
	ctx context.Context
	c   *network.Conn

	f        xprotocol.Frame
	view     view
	lr       lb.Request
	ip       netip.Addr // the client's address, for hash policies
	inflight atomic.Int64

	outs []upOut // request bytes queued per upstream connection during one read

	// Answers from upstream goroutines go through a queue to the session's writer
	// goroutine, so that a client that does not read blocks only its own writer.
	wmu     sync.Mutex
	wq      []*buffer.IoBuffer
	wspare  []*buffer.IoBuffer
	wqBytes int  // queued and being written
	wclosed bool // the writer ended: answers are dropped
	wsig    chan struct{}
	wdone   chan struct{}
	wroom   chan struct{} // the writer took answers off the queue: a paused reader may go on

	// drainAt is when the client was sent the go-away (monoNow, 0: not yet): the engine
	// is closing.
	drainAt atomic.Int64

	// A pick or connect that failed makes the next second's picks and connects for that
	// cluster on this connection fail at once instead of each waiting pick_timeout or
	// connect_timeout: requests on one connection are handled in turn.
	noWait context.Context // already cancelled
	failCl *cluster.Cluster
	failAt int64
}

// waitCtx is the context picks and connects for cl wait with.
func (s *session) waitCtx(cl *cluster.Cluster) context.Context {
	if s.failCl == cl && monoNow()-s.failAt < int64(failHold) {
		return s.noWait
	}
	return s.ctx
}

func (s *session) failed(cl *cluster.Cluster) { s.failCl, s.failAt = cl, monoNow() }

// failHold is how long a failed pick or connect makes later ones fail fast.
const failHold = time.Second

// kick wakes the writer.
func (s *session) kick() {
	select {
	case s.wsig <- struct{}{}:
	default:
	}
}

// startDrain tells the client to go away (bolt go-away, dubbo readonly event) and makes
// the writer close the connection once nothing is in flight and Config.GoAwayGrace has
// passed: requests the client sent before the go-away reached it are still on their way,
// and a close as soon as the connection is idle would reset them unanswered.
func (s *session) startDrain() {
	if !s.drainAt.CompareAndSwap(0, max(monoNow(), 1)) {
		return
	}
	ob := s.e.cfg.Pool.NewBuffer(32)
	if err := s.e.xp.GoAway(ob, 0); err != nil {
		ob.Reset()
	}
	s.deliver(ob)
	s.kick()
	if g := s.e.cfg.GoAwayGrace; g > 0 {
		time.AfterFunc(g, s.kick) // the writer looks again once the grace is over
	}
}

// drained reports whether the client was told to go away at least GoAwayGrace ago.
func (s *session) drained() bool {
	at := s.drainAt.Load()
	return at != 0 && monoNow()-at >= int64(s.e.cfg.GoAwayGrace)
}

// deliver queues b (an answer batch) for the client without waiting. Above
// Config.WriteLimit queued bytes the session stops reading new requests (waitRoom), so a
// client that reads slowly only slows itself; answers to requests already in flight still
// queue. Above the hard limit (HardWriteLimit) the client is not reading at all: it is
// disconnected rather than allowed to grow the queue further.
func (s *session) deliver(b *buffer.IoBuffer) {
	n := b.Len()
	s.wmu.Lock()
	if s.wclosed {
		s.wmu.Unlock()
		b.Release()
		return
	}
	if s.wqBytes > 0 && s.wqBytes+n > s.e.cfg.HardWriteLimit {
		s.wmu.Unlock()
		b.Release()
		s.e.fails[fSlowClient].Inc()
		s.e.log.Info("xprotocol: downstream client is not reading its responses, closing connection",
			zap.Stringer("remote", s.c.RemoteAddr()))
		s.c.Close(network.CloseOverflow)
		return
	}
	s.wq = append(s.wq, b)
	s.wqBytes += n
	s.wmu.Unlock()
	s.kick()
}

// writer writes queued answers until the connection closes.
func (s *session) writer() {
	defer close(s.wdone)
	for {
		select {
		case <-s.wsig:
		case <-s.c.Done():
			s.wmu.Lock()
			s.wclosed = true
			for i, b := range s.wq {
				b.Release()
				s.wq[i] = nil
			}
			s.wq = s.wq[:0]
			s.wmu.Unlock()
			return
		}
		s.wmu.Lock()
		q := s.wq
		s.wq = s.wspare[:0]
		s.wspare = nil
		n := 0
		for _, b := range q {
			n += b.Len()
		}
		s.wmu.Unlock()
		if len(q) > 0 {
			_ = s.c.Write(q...) // takes ownership; fails only when the connection closed
		}
		clear(q)
		s.wmu.Lock()
		s.wqBytes -= n
		s.wspare = q[:0]
		idle := len(s.wq) == 0
		s.wmu.Unlock()
		select {
		case s.wroom <- struct{}{}:
		default:
		}
		if idle && s.inflight.Load() == 0 && s.drained() {
			_ = s.c.Flush()
			s.c.Close(network.CloseDrain)
		}
	}
}

// upOut is request bytes waiting to be written to one upstream connection.
type upOut struct {
	u *upConn
	b *buffer.IoBuffer
}

// flushAt is the batch size above which queued request bytes are written at once.
const flushAt = 64 << 10

// waitRoom pauses the reader while more than WriteLimit bytes of answers wait for the
// client: backpressure on the client's requests instead of an unbounded queue. It
// returns false when the connection closed meanwhile.
func (s *session) waitRoom() bool {
	for {
		s.wmu.Lock()
		over := s.wqBytes > s.e.cfg.WriteLimit && !s.wclosed
		s.wmu.Unlock()
		if !over {
			return true
		}
		select {
		case <-s.wroom:
		case <-s.c.Done():
			return false
		}
	}
}

// onData is the ReadLoop callback: it handles every complete frame in b.
func (s *session) onData(b *buffer.IoBuffer) error {
	e := s.e
	if !s.waitRoom() {
		return errStop
	}
	for b.Len() > 0 {
		s.f.Reset()
		n, err := e.xp.Decode(b.Bytes(), &s.f)
		if err != nil {
			s.flush()
			kind := fProtocol
			if errors.Is(err, xprotocol.ErrFrameTooLarge) {
				kind = fFrameTooLarge
			}
			e.fails[kind].Inc()
			e.protoErr.Inc()
			e.log.Info("xprotocol: bad frame from downstream, closing connection",
				zap.String("protocol", e.xp.Name()),
				zap.Stringer("remote", s.c.RemoteAddr()), zap.Error(err))
			s.c.Close(network.CloseProtocolError)
			return errStop
		}
		if n == 0 {
			break
		}
		s.handle(&s.f)
		b.Drain(n)
	}
	s.flush()
	return nil
}

// handle serves one decoded frame. The frame's bytes stay valid until it returns.
func (s *session) handle(f *xprotocol.Frame) {
	e := s.e
	switch f.Kind {
	case xprotocol.KindHeartbeat:
		ob := e.cfg.Pool.NewBuffer(32)
		_ = e.xp.HeartbeatReply(ob, f) // writes nothing for a heartbeat that wants no reply
		_ = s.c.Write(ob)              // an empty buffer is released by Write
		return
	case xprotocol.KindRequest, xprotocol.KindOneway:
	default:
		// Responses, heartbeat replies and go-aways from a client: nothing to forward.
		return
	}
	e.reqs.Inc()
	oneway := f.Kind == xprotocol.KindOneway
	if !oneway && (s.inflight.Load() >= int64(e.cfg.MaxInFlight) || e.cfg.Overloaded != nil && e.cfg.Overloaded()) {
		s.fail(f, xprotocol.CauseOverflow, fBusy)
		return
	}
	if e.frameErr != nil {
		if err := e.frameErr.FrameError(f); err != nil {
			s.codecError(f, err)
			return
		}
	}
	if e.attach != nil {
		if err := e.attach.DecodeAttachments(f); err != nil {
			s.codecError(f, err)
			return
		}
	}
	tbl, ok := e.table()
	if !ok {
		s.fail(f, xprotocol.CauseNoRoute, fNoRoute)
		return
	}
	rt, ok := tbl.Match(&s.view)
	if !ok {
		s.fail(f, xprotocol.CauseNoRoute, fNoRoute)
		return
	}
	if _, direct := rt.DirectResponse(); direct {
		// A direct response has no RPC form: answer "no route" (service not found).
		s.fail(f, xprotocol.CauseNoRoute, fNoRoute)
		return
	}
	cl, ok := e.cfg.Clusters.Get(rt.ClusterFor(&s.view, rand.Uint64()))
	if !ok {
		s.fail(f, xprotocol.CauseNoHealthyUpstream, fNoHealthy)
		return
	}
	if !cl.TryAcquire(cluster.MaxRequests) {
		s.fail(f, xprotocol.CauseOverflow, fOverflow)
		return
	}
	timeout := f.Timeout
	if t := rt.Timeout(); t > 0 && (timeout <= 0 || timeout > t) {
		timeout = t
	}
	if timeout <= 0 {
		timeout = e.cfg.DefaultTimeout
	}
	s.lr = lb.Request{}
	if k, ok := rt.HashKey(&s.view, s.ip); ok {
		s.lr.HashKey, s.lr.HasHash = k, true
	}
	host, pickDone, err := cl.Pick(s.waitCtx(cl), &s.lr)
	if err != nil {
		s.failed(cl)
		cl.Release(cluster.MaxRequests)
		if errors.Is(err, cluster.ErrOverflow) { // max_pending_requests
			s.fail(f, xprotocol.CauseOverflow, fOverflow)
		} else {
			s.fail(f, xprotocol.CauseNoHealthyUpstream, fNoHealthy)
		}
		return
	}
	if m, ok := rt.Mirror(); ok && m.Hit(rand.Uint64()) {
		s.mirror(f, m.Cluster)
	}
	now := monoNow()
	p := pending{s: s, req: infoOf(f), start: now, deadline: now + int64(timeout), pickDone: pickDone, cl: cl}
	for try := 0; ; try++ {
		u, err := e.conn(s, cl, host, &s.lr)
		if err != nil {
			pickDone(lb.DoneInfo{Err: err})
			cl.Release(cluster.MaxRequests)
			s.failed(cl)
			if errors.Is(err, cluster.ErrOverflow) {
				s.fail(f, xprotocol.CauseOverflow, fOverflow)
			} else {
				s.fail(f, xprotocol.CauseNoHealthyUpstream, fNoHealthy)
			}
			return
		}
		if ok, cause, kind := s.roomOn(u, p.deadline); !ok {
			pickDone(lb.DoneInfo{Err: errStalled})
			cl.Release(cluster.MaxRequests)
			s.fail(f, cause, kind)
			return
		}
		id, ok := u.register(&p, !oneway)
		if !ok {
			if try < 3 {
				continue // the connection started draining or closed: take another
			}
			pickDone(lb.DoneInfo{Err: errClosed})
			cl.Release(cluster.MaxRequests)
			s.fail(f, xprotocol.CauseNoHealthyUpstream, fNoHealthy)
			return
		}
		e.xp.SetID(f, id)
		s.queue(u, f.Raw)
		if oneway {
			pickDone(lb.DoneInfo{})
			cl.Release(cluster.MaxRequests)
		}
		return
	}
}

// mirror sends a copy of f to a host of the named cluster, as a request whose response
// is dropped (its id is not recorded). Failures only skip the copy.
func (s *session) mirror(f *xprotocol.Frame, name string) {
	cl, ok := s.e.cfg.Clusters.Get(name)
	if !ok || !cl.TryAcquire(cluster.MaxRequests) {
		return
	}
	defer cl.Release(cluster.MaxRequests)
	var lr lb.Request
	host, done, err := cl.Pick(s.waitCtx(cl), &lr)
	if err != nil {
		return
	}
	defer done(lb.DoneInfo{})
	u, err := s.e.conn(s, cl, host, &lr)
	if err != nil || u.c.Full() { // a copy never waits for room
		return
	}
	if id, ok := u.register(nil, false); ok {
		orig := f.ID
		s.e.xp.SetID(f, id)
		s.queue(u, f.Raw)
		s.e.xp.SetID(f, orig) // the request itself still carries the client's id
	}
}

func (s *session) codecError(f *xprotocol.Frame, err error) {
	if ce := s.e.log.Check(zap.DebugLevel, "xprotocol: request body unreadable"); ce != nil {
		ce.Write(zap.Error(err))
	}
	s.fail(f, xprotocol.CauseCodecError, fCodec)
}

// fail answers f with the codec's status for cause (a one-way request gets nothing).
func (s *session) fail(f *xprotocol.Frame, cause xprotocol.Cause, kind int) {
	s.e.fails[kind].Inc()
	if f.Kind == xprotocol.KindOneway {
		return
	}
	r := infoOf(f)
	ob := s.e.cfg.Pool.NewBuffer(64)
	s.e.writeHijack(ob, &r, cause)
	_ = s.c.Write(ob)
}

// queue appends raw to the bytes bound for u during this read.
func (s *session) queue(u *upConn, raw []byte) {
	for i := range s.outs {
		o := &s.outs[i]
		if o.u == u {
			_, _ = o.b.Write(raw)
			if o.b.Len() >= flushAt {
				send(u, o.b)
				o.b = s.e.cfg.Pool.NewBuffer(4096)
			}
			return
		}
	}
	b := s.e.cfg.Pool.NewBuffer(max(len(raw), 4096))
	_, _ = b.Write(raw)
	if b.Len() >= flushAt {
		send(u, b)
		return
	}
	s.outs = append(s.outs, upOut{u: u, b: b})
}

// flush writes the queued request bytes. A failed write is the upstream connection's
// problem: its reader sees the close and answers what is pending.
func (s *session) flush() {
	for i := range s.outs {
		send(s.outs[i].u, s.outs[i].b)
		s.outs[i] = upOut{}
	}
	s.outs = s.outs[:0]
}

// send hands b to u's connection without ever waiting on the upstream: the session's
// reader serves every request of its client, to every cluster, so an upstream that stops
// reading must not stop it. Room is checked before a request is taken (roomOn), which
// bounds the queue to its limit plus what the sessions forwarding to it batch in one read.
func send(u *upConn, b *buffer.IoBuffer) { _ = u.c.WriteNoWait(b) }

// roomOn reports whether u's write queue has room for another request. When it is full,
// the reader waits for room up to the request's deadline (backpressure, bounded): the
// client's other requests wait behind it no longer than this request's own timeout. A
// wait that ends with not a byte taken by the upstream (Acked: written and acknowledged)
// marks the connection stalled, and while it stays so (still full, nothing taken since)
// requests for it are refused at once instead of each waiting out its timeout. A refused
// request is answered with cause and counted as kind: busy and fStalled when refused at
// once, the timeout status and fWriteTimeout when it waited out its deadline.
func (s *session) roomOn(u *upConn, deadline int64) (ok bool, cause xprotocol.Cause, kind int) {
	if !u.c.Full() {
		return true, 0, 0
	}
	acked := u.c.Acked()
	if u.stalled.Load() == acked+1 {
		return false, xprotocol.CauseOverflow, fStalled
	}
	s.flush() // requests already taken go out before this one waits
	err := u.c.WaitRoomUntil(time.Now().Add(time.Duration(deadline - monoNow())))
	if !errors.Is(err, network.ErrNoRoom) {
		return true, 0, 0 // room, or closed: the request is answered as the connection's others are
	}
	if u.c.Acked() == acked && u.stalled.Swap(acked+1) != acked+1 {
		s.e.log.Warn("xprotocol: upstream connection takes no requests; refusing new ones for it until it does",
			zap.String("cluster", u.cl.Name()),
			zap.String("host", u.host.Addr()), zap.Int("queued", u.c.Queued()))
	}
	return false, xprotocol.CauseTimeout, fWriteTimeout
}

// view is the router's view of an RPC request: no host (the "*" virtual host serves),
// the path "/" (so the catch-all prefix "/" of a route written for xDS, where every route
// has a path match, matches; a route without one matches too), headers from the frame,
// compared by exact name. It does not allocate.
type view struct{ f *xprotocol.Frame }

func (v *view) Host() string   { return "" }
func (v *view) Path() string   { return "/" }
func (v *view) Method() string { return bstr(v.f.Method) }

func (v *view) Header(name string) (string, bool) {
	if b, ok := v.f.Header(name); ok {
		return bstr(b), true
	}
	switch name {
	case "service":
		if v.f.Service != nil {
			return bstr(v.f.Service), true
		}
	case "method":
		if v.f.Method != nil {
			return bstr(v.f.Method), true
		}
	}
	return "", false
}

// Variable knows x-mosn-method (the RPC method); others are absent.
func (v *view) Variable(name string) (string, bool) {
	if name == "x-mosn-method" && v.f.Method != nil {
		return bstr(v.f.Method), true
	}
	return "", false
}

// bstr views b as a string without copying; valid while b is not reused.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func remoteIP(c *network.Conn) (ip netip.Addr) {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return ip
}

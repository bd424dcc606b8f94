package network

import (
	"net/netip"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/log"
	"github.com/mosnlite/mosnlite/pkg/network/evloop"
)

// RawHandler serves accepted TCP sockets on an event loop (package evloop), with no Conn
// and no goroutine per connection. A listener uses it instead of Handler when it has
// event loops (ListenerConfig.Loops), binds a TCP socket of its own, and has no TLS and no
// original_dst; everything else (and every socket ServeRaw declines) is served by Handler.
type RawHandler interface {
	// ServeRaw is called on a's loop for each accepted socket. It either takes the socket
	// (returns true), and then must call RawConn.Init with it and RawConn.Close exactly
	// once later, or declines (false) without touching it: the listener then serves it on
	// a goroutine with Handler, as a Conn.
	ServeRaw(a Accepted) bool
}

// RawOwner is what owns a RawConn: the listener tells it to close when its drain time
// ran out. ForceClose runs on the connection's loop and must end in RawConn.Close.
type RawOwner interface {
	ForceClose(r CloseReason)
}

// RawIdleCloser is a RawOwner that knows when its connection is between requests (the
// RawConn form of Conn.SetIdle): a draining listener calls CloseIfIdle on its loop, and the
// owner closes the connection if nothing it read is unanswered and nothing is buffered.
type RawIdleCloser interface {
	CloseIfIdle(r CloseReason)
}

// Accepted is a socket a listener accepted on an event loop: non-blocking, close-on-exec,
// TCP_NODELAY set, registered with no loop yet.
type Accepted struct {
	FD     int
	Remote netip.AddrPort // the peer (an IPv4-mapped address unmapped)
	Loop   *evloop.Loop   // the loop the socket was accepted on, which serves it
	l      *Listener
}

// IdleTimeout is the listener's connection idle timeout (ConnOptions.IdleTimeout); 0:
// none.
func (a Accepted) IdleTimeout() int64 { return int64(a.l.cfg.Conn.IdleTimeout) }

// BufferLimit is the listener's per-connection buffer limit (ConnOptions.BufferLimit, or
// DefaultBufferLimit when unset): the most a handler should hold for the connection.
func (a Accepted) BufferLimit() int {
	if l := a.l.cfg.Conn.BufferLimit; l > 0 {
		return l
	}
	return DefaultBufferLimit
}

// RawConn is the listener's side of a socket a RawHandler took: the accounting a Conn
// does (active gauge, close reasons, max_connections slot, drain), without the Conn. Embed
// it in the handler's per-connection state. Used only on its loop's goroutine.
type RawConn struct {
	Accepted
	id         uint64
	owner      RawOwner
	prev, next *RawConn // in the listener's list for this loop
	closed     bool
}

// Init starts tracking the connection: the listener counts it as active and open for
// drain until Close. owner is told to close when a drain runs out of time.
func (c *RawConn) Init(a Accepted, owner RawOwner) {
	c.Accepted, c.owner = a, owner
	c.id = connIDs.Add(1)
	l := a.l
	l.rawLive.Add(1)
	l.cxActive.Inc()
	if ls := l.rawLists; ls != nil {
		ls[a.Loop.ID()].push(c)
	}
}

// ID is the connection's id (as Conn.ID).
func (c *RawConn) ID() uint64 { return c.id }

// Local is the socket's local address: the listener's, unless it listens on a wildcard
// address (then getsockname(2)).
func (a Accepted) Local() netip.AddrPort {
	if k := a.l.key; k.IsValid() && !k.Addr().IsUnspecified() {
		return k
	}
	return SockName(a.FD)
}

// Close closes the socket (with an RST when reset: SO_LINGER 0) and ends the accounting:
// reason is counted on conn_closes_total, the max_connections slot is freed. The handler
// must have dropped the socket from its loop first (evloop.Loop.Forget). Idempotent.
func (c *RawConn) Close(r CloseReason, reset bool) {
	if c.closed {
		return
	}
	c.closed = true
	closeFD(c.FD, reset)
	l := c.l
	if ls := l.rawLists; ls != nil {
		ls[c.Loop.ID()].remove(c)
	}
	c.owner = nil
	l.cxActive.Dec()
	l.closeCounter(r).Inc()
	<-l.sem
	if ce := l.log.Check(zap.DebugLevel, "connection closed"); ce != nil {
		ce.Write(zap.Uint64(log.FieldConnID, c.id), zap.Stringer(log.FieldRemote, c.Remote),
			zap.String(log.FieldReason, string(r)))
	}
	if l.rawLive.Add(-1) == 0 {
		l.mu.Lock()
		l.signalIdleLocked()
		l.mu.Unlock()
	}
	l.rawFreed(c.Loop)
}

// Handoff moves the connection to the listener's goroutine path: the socket is served as
// a Conn by the listener's Handler, which reads held (bytes the RawHandler read and did
// not consume) before the socket. The connection keeps its max_connections slot and is
// not counted as closed. The handler must have removed the socket from its loop with
// evloop.Loop.Remove first: the descriptor is duplicated for net and this one closed, and
// an epoll registration outlives a closed descriptor whose file stays open. Used on the
// connection's loop, at most once, instead of Close.
func (c *RawConn) Handoff(held []byte) {
	if c.closed {
		return
	}
	c.closed = true
	l := c.l
	if ls := l.rawLists; ls != nil {
		ls[c.Loop.ID()].remove(c)
	}
	c.owner = nil
	l.cxActive.Dec() // the Conn counts itself
	l.serveFallback(c.FD, held)
	if l.rawLive.Add(-1) == 0 {
		l.mu.Lock()
		l.signalIdleLocked()
		l.mu.Unlock()
	}
}

// rawList is a listener's open RawConns on one loop (used only on that loop).
type rawList struct{ head *RawConn }

func (s *rawList) push(c *RawConn) {
	c.prev, c.next = nil, s.head
	if s.head != nil {
		s.head.prev = c
	}
	s.head = c
}

func (s *rawList) remove(c *RawConn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else if s.head == c {
		s.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next = nil, nil
}

// closeIdle asks the owners that can tell (RawIdleCloser) to close their connections that
// are between requests.
func (s *rawList) closeIdle(r CloseReason) {
	for c := s.head; c != nil; {
		next := c.next // CloseIfIdle may remove c
		if o, ok := c.owner.(RawIdleCloser); ok {
			o.CloseIfIdle(r)
		}
		c = next
	}
}

// forceClose tells the owner of every connection on the list to close.
func (s *rawList) forceClose(r CloseReason) {
	for c := s.head; c != nil; {
		next := c.next
		if o := c.owner; o != nil {
			o.ForceClose(r)
		}
		if !c.closed { // an owner that did not close: do it for it
			c.Close(r, false)
		}
		c = next
	}
}

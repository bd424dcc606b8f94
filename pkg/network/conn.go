// Package network holds mosnlite's listeners and connections: the accept loop (back-off on
// accept errors, max_connections, per-connection goroutines with panic recovery, drain), the
// original_dst listener filter with its hand-off Index, and Conn, which reads into pooled
// buffers and writes queued buffers in batches.
package network

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/log"
)

// CloseReason says why a connection was closed; it labels the close metric.
type CloseReason string

// Close reasons used by this package and its callers. Callers may use their own strings.
const (
	CloseLocal         CloseReason = "local"
	CloseRemote        CloseReason = "remote"
	CloseIdleTimeout   CloseReason = "idle_timeout"
	CloseError         CloseReason = "error"
	CloseDrain         CloseReason = "drain"
	CloseOverflow      CloseReason = "overflow"
	CloseProtocolError CloseReason = "protocol_error"
	// CloseSendTimeout: the peer took none of the bytes sent to it for the listener's
	// send_timeout (the kernel aborted the socket with ETIMEDOUT).
	CloseSendTimeout CloseReason = "send_timeout"
)

// Defaults for ConnOptions.
const (
	DefaultReadSize    = 16 << 10
	DefaultBufferLimit = 1 << 20
)

// Errors returned by Conn.
var (
	ErrClosed    = errors.New("network: connection closed")
	ErrReadLimit = errors.New("network: read buffer limit exceeded")
	// ErrNoRoom: WaitRoomUntil's deadline passed with the write queue still full.
	ErrNoRoom = errors.New("network: write queue still full at the deadline")
)

// minRead is the smallest free tail ReadLoop reads into.
const minRead = buffer.MinClass

// ConnOptions configures a Conn.
type ConnOptions struct {
	// Pool provides read and write buffers. nil: a private pool per connection (callers
	// should share one).
	Pool *buffer.Pool
	// IdleTimeout closes the connection (reason idle_timeout) when nothing was read or
	// written for that long. 0: none.
	IdleTimeout time.Duration
	// BufferLimit bounds both the bytes queued for writing (Write blocks above it) and the
	// unread bytes ReadLoop accumulates (ErrReadLimit above it). 0: 1 MiB.
	BufferLimit int
	// ReadSize is the first read buffer's size. 0: 16 KiB.
	ReadSize int
	Log      *zap.Logger
}

// connIDs numbers connections process-wide.
var connIDs atomic.Uint64

// epoch anchors the monotonic clock used for activity stamps.
var epoch = time.Now()

// monoNow is a monotonic timestamp in nanoseconds. time.Since on a time carrying a
// monotonic reading only reads the runtime's monotonic clock (no wall clock, no allocation).
func monoNow() int64 { return int64(time.Since(epoch)) }

// Conn is a stream connection with a pooled read loop and batched, flat-combined writes.
//
// Reading: one goroutine runs ReadLoop. Writing: any goroutine may call Write; the first
// writer to find the queue idle becomes the flusher and writes batches (writev) until the
// queue is empty, while later writers only append and return. There is no writer
// goroutine. Idle detection stamps activity in an atomic and runs one timer per connection
// that re-arms itself when it fires and finds recent activity, so no deadline is reset per
// read.
type Conn struct {
	id       uint64
	raw      net.Conn
	pool     *buffer.Pool
	log      *zap.Logger
	idle     time.Duration
	limit    int
	rlimit   int  // unread bytes ReadLoop may hold; starts at limit
	explicit bool // BufferLimit was set, not defaulted
	readSize int

	listener   string
	origDst    netip.AddrPort
	hasOrigDst bool

	last      atomic.Int64 // monoNow of the last read, write or Touch
	idleTimer *time.Timer
	closed    atomic.Bool
	between   atomic.Int32 // connFresh, connBusy, connBetween or connDrained (Busy, SetIdle)
	done      chan struct{}

	// Set by the owning listener before the connection is started.
	owner  *Listener
	slot   chan struct{}   // max_connections slot released on close
	ctx    context.Context // the handler's context
	cancel func()          // cancels ctx

	mu       sync.Mutex
	cond     sync.Cond // on mu: queue drained or connection closed
	reason   CloseReason
	queue    []*buffer.IoBuffer // waiting to be written
	spare    []*buffer.IoBuffer // the other half of the double-buffered queue
	notify   CloseNotifier      // told by Close (NotifyClose)
	queued   int                // bytes in queue plus the batch being written (addQueued)
	full     atomic.Bool        // queued >= limit, readable without mu (Full)
	sent     int64              // bytes written so far
	flushing bool
	werr     error

	sio *SockIO  // reads and writes raw's socket
	iov [][]byte // flusher only: batch slices, capacity reused

	// unread holds bytes a protocol sniffer consumed and handed back (Unread); ReadLoop
	// and Read return them before reading the socket. Reader goroutine only.
	unread []byte
}

// NewConn wraps raw. Downstream connections are made by the Listener; upstream ones by
// callers. With an IdleTimeout the idle timer starts now.
func NewConn(raw net.Conn, o ConnOptions) *Conn {
	c := newConn(raw, o)
	c.startIdle()
	return c
}

func newConn(raw net.Conn, o ConnOptions) *Conn {
	c := &Conn{
		id:       connIDs.Add(1),
		raw:      raw,
		sio:      NewSockIO(raw),
		pool:     o.Pool,
		log:      o.Log,
		idle:     o.IdleTimeout,
		limit:    o.BufferLimit,
		readSize: o.ReadSize,
		done:     make(chan struct{}),
	}
	if c.pool == nil {
		c.pool = buffer.NewPool()
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	c.explicit = c.limit > 0
	if c.limit <= 0 {
		c.limit = DefaultBufferLimit
	}
	c.rlimit = c.limit
	if c.readSize <= 0 {
		c.readSize = DefaultReadSize
	}
	c.cond.L = &c.mu
	c.last.Store(monoNow())
	return c
}

func (c *Conn) startIdle() {
	if c.idle <= 0 {
		return
	}
	// Created far in the future and then reset, so the callback cannot observe the
	// field before it is set.
	c.idleTimer = time.AfterFunc(time.Hour<<10, c.onIdle)
	c.idleTimer.Reset(c.idle)
}

// onIdle runs when the idle timer fires: close if nothing happened for IdleTimeout,
// otherwise re-arm for the rest of the period.
func (c *Conn) onIdle() {
	if c.closed.Load() {
		return
	}
	quiet := time.Duration(monoNow() - c.last.Load())
	if quiet >= c.idle && c.between.Load() == connBusy {
		// A request in progress (Busy): waiting for its upstream is not idleness.
		c.idleTimer.Reset(c.idle)
		return
	}
	if quiet >= c.idle {
		if ce := c.log.Check(zap.DebugLevel, "connection idle timeout"); ce != nil {
			ce.Write(zap.Uint64(log.FieldConnID, c.id), zap.Duration("idle", quiet))
		}
		c.Close(CloseIdleTimeout)
		return
	}
	c.idleTimer.Reset(c.idle - quiet)
}

// ID is the process-unique connection id.
func (c *Conn) ID() uint64 { return c.id }

// Raw returns the socket, for filters that take it over (tcp_proxy splices).
func (c *Conn) Raw() net.Conn { return c.raw }

// LocalAddr is the socket's local address.
func (c *Conn) LocalAddr() net.Addr { return c.raw.LocalAddr() }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// OriginalDst is the destination before redirection, when the listener uses original_dst
// and it could be read.
func (c *Conn) OriginalDst() (netip.AddrPort, bool) { return c.origDst, c.hasOrigDst }

// ListenerName names the listener serving the connection ("" for upstream connections).
func (c *Conn) ListenerName() string { return c.listener }

// Touch notes activity for the idle timer, for filters that move bytes without ReadLoop or
// Write.
func (c *Conn) Touch() { c.last.Store(monoNow()) }

// Done is closed when the connection is closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// CloseNotifier is told that a connection closed (NotifyClose).
type CloseNotifier interface {
	ConnClosed()
}

// NotifyClose has Close call n.ConnClosed once, after the socket is closed and before the
// handler's context is cancelled; n == nil removes the notifier. A connection has one
// notifier: a second call replaces the first. It returns false, and registers nothing, when
// the connection is already closed.
//
// It costs no allocation (a pointer stored in an interface), where context.AfterFunc on
// the handler's context allocates the callback's context and its parent's child set per
// connection: handlers that only need to learn about the close (tcp_proxy) use it instead.
func (c *Conn) NotifyClose(n CloseNotifier) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reason != "" {
		return false
	}
	c.notify = n
	return true
}

// OwnsContext reports whether ctx is the context c's listener passed to its handler. That
// context ends when c closes and for no other reason, so a handler told of the close by
// NotifyClose need not also watch ctx.
func (c *Conn) OwnsContext(ctx context.Context) bool { return c.ctx != nil && ctx == c.ctx }

// CloseReason is the reason the connection was closed with, or "" while open.
func (c *Conn) CloseReason() CloseReason {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// ReadLoop reads into a pooled buffer and calls onData after each read with the buffer
// holding all unread bytes; onData drains what it consumed and must not keep the buffer
// or slices of it after returning. The buffer grows while onData leaves bytes unconsumed,
// up to BufferLimit unread bytes (its capacity stays below twice the limit); a full buffer
// at the limit ends the loop with ErrReadLimit.
//
// ReadLoop returns nil on EOF and when the connection was closed locally (see
// CloseReason: idle_timeout, drain, ...), the error onData returned, ErrReadLimit, or a
// read error. It does not close the connection, except after ETIMEDOUT (the listener's
// send_timeout ran out), which it closes with reason send_timeout. Only one ReadLoop may
// run at a time.
func (c *Conn) ReadLoop(onData func(b *buffer.IoBuffer) error) error {
	b := c.pool.NewBuffer(c.readSize)
	defer b.Release()
	if len(c.unread) > 0 {
		_, _ = b.Write(c.unread)
		c.unread = nil
		if err := onData(b); err != nil {
			return err
		}
	}
	for {
		if b.Len() >= c.rlimit {
			return ErrReadLimit
		}
		if b.Available() < minRead {
			if b.Cap() < c.rlimit {
				b.Grow(minRead)
			} else {
				b.Compact()
			}
		}
		n, err := b.ReadOnce(c.sio)
		if n > 0 {
			c.last.Store(monoNow())
			if derr := onData(b); derr != nil {
				return derr
			}
			if b.Len() == 0 {
				b.Shrink(c.readSize)
			}
		}
		if err != nil {
			if c.closed.Load() || errors.Is(err, io.EOF) {
				return nil
			}
			if SendTimedOut(err) {
				// The kernel aborted the socket: close it with its reason here, before
				// the caller's generic close.
				c.Close(CloseSendTimeout)
			}
			return err
		}
	}
}

// RaiseReadLimit lets ReadLoop hold up to n unread bytes when the connection was made
// without an explicit BufferLimit: a protocol whose frames may exceed the default (RPC
// frames of up to 16 MiB) calls it before ReadLoop, so that its own frame limit, not the
// default buffer limit, decides. An explicit BufferLimit (per_connection_buffer_limit_bytes)
// is kept. The write queue's limit is unchanged. Reader goroutine only.
func (c *Conn) RaiseReadLimit(n int) {
	if !c.explicit && n > c.rlimit {
		c.rlimit = n
	}
}

// Unread hands bytes back to the connection: the next ReadLoop or Read returns them
// before anything read from the socket. A protocol sniffer that read the first bytes
// calls it before passing the connection to the protocol's handler. It copies p and may
// only be called by the reading goroutine, while no ReadLoop runs.
func (c *Conn) Unread(p []byte) {
	if len(p) == 0 {
		return
	}
	c.unread = append(append(make([]byte, 0, len(p)+len(c.unread)), p...), c.unread...)
}

// Read implements io.Reader for handlers that need a plain reader (an HTTP/2 server
// framer): the bytes handed back by Unread first, then the socket. It notes activity for
// the idle timer. Do not mix with a running ReadLoop.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.unread) > 0 {
		n := copy(p, c.unread)
		c.unread = c.unread[n:]
		if len(c.unread) == 0 {
			c.unread = nil
		}
		return n, nil
	}
	n, err := c.sio.Read(p)
	if n > 0 {
		c.last.Store(monoNow())
	}
	return n, err
}

// Write queues bufs for writing and takes ownership of them: each is released once
// written or when the connection closes. Empty buffers are released at once. When the
// queue is idle the caller writes the queue itself (in writev batches) until it is empty;
// otherwise Write appends and returns. While more than BufferLimit bytes are queued,
// Write blocks until the queue drains below it or the connection closes.
//
// Write returns ErrClosed when the connection is closed, or the write error when the
// caller flushed and the socket failed (the connection is then closed).
func (c *Conn) Write(bufs ...*buffer.IoBuffer) error {
	c.mu.Lock()
	for c.queued >= c.limit && c.reason == "" && c.werr == nil {
		c.cond.Wait()
	}
	if err := c.enqueueLocked(bufs); err != nil {
		c.mu.Unlock()
		return err
	}
	return c.kickLocked()
}

// enqueueLocked appends bufs to the queue, or releases them and returns ErrClosed (or the
// write error) when the connection is closed. Called with c.mu held; on error it is
// still held.
func (c *Conn) enqueueLocked(bufs []*buffer.IoBuffer) error {
	if c.reason != "" || c.werr != nil {
		err := c.werr
		for _, b := range bufs {
			b.Release()
		}
		if err == nil {
			err = ErrClosed
		}
		return err
	}
	for _, b := range bufs {
		if b.Len() == 0 {
			b.Release()
			continue
		}
		c.queue = append(c.queue, b)
		c.addQueued(b.Len())
	}
	return nil
}

// kickLocked writes the queue unless another goroutine is writing it, and drops c.mu.
func (c *Conn) kickLocked() error {
	if c.flushing || len(c.queue) == 0 || c.reason != "" {
		c.mu.Unlock()
		return nil
	}
	c.flushing = true
	err := c.flushLocked()
	c.flushing = false
	c.cond.Broadcast()
	c.mu.Unlock()
	if err != nil {
		c.Close(closeReasonFor(err))
	}
	return err
}

// flushLocked writes batches until the queue is empty. Called and returns with c.mu held;
// the lock is dropped around each write.
func (c *Conn) flushLocked() error {
	if !c.sio.CanTryWrite() {
		return c.flushPartsTLSLocked()
	}
	for len(c.queue) > 0 && c.reason == "" {
		batch := c.queue
		c.queue = c.spare[:0]
		n := 0
		for _, b := range batch {
			n += b.Len()
		}
		c.mu.Unlock()
		err := c.writeBatch(batch)
		c.mu.Lock()
		clear(batch)
		c.spare = batch[:0]
		c.addQueued(-n)
		c.sent += int64(n)
		c.cond.Broadcast()
		if err != nil {
			if c.reason != "" {
				return ErrClosed
			}
			c.werr = err
			return err
		}
		c.last.Store(monoNow())
	}
	return nil
}

// writeBatch writes and releases batch. Runs on the flusher without c.mu.
func (c *Conn) writeBatch(batch []*buffer.IoBuffer) error {
	var err error
	if len(batch) == 1 {
		_, err = c.sio.Write(batch[0].Bytes())
	} else {
		iov := c.iov[:0]
		for _, b := range batch {
			iov = append(iov, b.Bytes())
		}
		c.iov = iov
		_, err = c.sio.Writev(iov)
		clear(iov)
	}
	for _, b := range batch {
		b.Release()
	}
	return err
}

// Flush waits until everything queued before the call has been written, or the
// connection closed. It returns nil, the write error, or ErrClosed if data was dropped.
func (c *Conn) Flush() error {
	return c.waitQueue(func() bool { return c.flushing || len(c.queue) > 0 })
}

// waitQueue waits, under c.mu, while busy() holds and the connection is open. It returns
// nil, the write error, or ErrClosed.
func (c *Conn) waitQueue(busy func() bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for busy() && c.reason == "" && c.werr == nil {
		c.cond.Wait()
	}
	return c.closedErrLocked()
}

// closedErrLocked is the error of a connection that cannot be written any more: the write
// error, ErrClosed, or nil while it is open. c.mu is held.
func (c *Conn) closedErrLocked() error {
	if c.werr != nil {
		return c.werr
	}
	if c.reason != "" {
		return ErrClosed
	}
	return nil
}

func closeReasonFor(err error) CloseReason {
	switch {
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		return CloseRemote
	case SendTimedOut(err):
		return CloseSendTimeout
	}
	return CloseError
}

// SendTimedOut reports whether err is a socket's ETIMEDOUT: on a downstream connection,
// its send_timeout ran out (TCP_USER_TIMEOUT).
func SendTimedOut(err error) bool { return errors.Is(err, syscall.ETIMEDOUT) }

// The states of Conn.between, for handlers that serve requests (Busy, SetIdle).
const (
	connFresh   int32 = iota // no request yet (or a handler that does not use Busy)
	connBusy                 // a request is being read or answered
	connBetween              // between requests: a drain may close it
	connDrained              // closed by a drain while between requests
)

// SetIdle tells the listener that the connection is between requests: everything read
// was answered, nothing is buffered. A draining listener closes such connections at once
// (Listener.Drain) instead of waiting for the client to close them. (HTTP/1 calls it
// after each answered request, not before the first, which its client is likely about
// to send.) A handler that calls it must call Busy before it acts on bytes read
// afterwards. Handlers with no notion of requests (tcp_proxy) call neither. Reader
// goroutine only; bytes handed back with Unread and not read yet keep the connection
// busy.
func (c *Conn) SetIdle() {
	if len(c.unread) == 0 {
		c.between.CompareAndSwap(connBusy, connBetween)
	}
}

// Busy marks the connection as in a request: the handler is about to act on newly read
// bytes. While a request is in progress the idle timeout does not close the connection
// (the request's own timeouts bound it). Busy reports false when a drain closed the
// connection while it was between requests; the handler must then drop what it read (the
// client sees its request refused by the close, before any of it was acted on).
func (c *Conn) Busy() bool {
	for {
		switch s := c.between.Load(); s {
		case connBusy:
			return true
		case connDrained:
			return false
		default:
			if c.between.CompareAndSwap(s, connBusy) {
				return true
			}
		}
	}
}

// Tunnel tells the connection that it carries a tunnel from now on (an upgraded HTTP/1
// connection), no request: the idle timeout applies again, to bytes either way, and a
// drain leaves it to the drain timeout as before. The handler calls neither Busy nor
// SetIdle afterwards. Reader goroutine only.
func (c *Conn) Tunnel() { c.between.CompareAndSwap(connBusy, connFresh) }

// closeIfIdle closes c with reason r when it is between requests (SetIdle).
func (c *Conn) closeIfIdle(r CloseReason) bool {
	if !c.between.CompareAndSwap(connBetween, connDrained) {
		return false
	}
	_ = c.Close(r)
	return true
}

// Close closes the connection; the first call's reason wins and later calls return nil.
// Queued buffers are released, blocked writers return ErrClosed, Done is closed, the
// NotifyClose notifier is told and, for a listener's connection, its max_connections slot
// is freed and the handler's context is cancelled. An empty reason means "local".
func (c *Conn) Close(r CloseReason) error {
	if r == "" {
		r = CloseLocal
	}
	c.mu.Lock()
	if c.reason != "" {
		c.mu.Unlock()
		return nil
	}
	c.reason = r
	c.closed.Store(true)
	notify := c.notify
	c.notify = nil
	for i, b := range c.queue {
		c.addQueued(-b.Len())
		b.Release()
		c.queue[i] = nil
	}
	c.queue = c.queue[:0]
	c.cond.Broadcast()
	c.mu.Unlock()

	err := c.raw.Close()
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	close(c.done)
	if notify != nil {
		notify.ConnClosed()
	}
	if c.cancel != nil {
		c.cancel()
	}
	if c.owner != nil {
		c.owner.connClosed(c, r)
	}
	if c.slot != nil {
		<-c.slot
	}
	return err
}

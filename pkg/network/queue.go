package network

import (
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

// Queue appends bufs to the write queue without writing and without waiting for room,
// taking ownership of them as Write does. A multiplexing protocol that must keep the
// order of its frames across goroutines (HTTP/2: header compression state) queues under
// its own lock, then calls Kick after dropping it, so no socket write happens under that
// lock. It returns ErrClosed (or the last write error) when the connection is closed.
func (c *Conn) Queue(bufs ...*buffer.IoBuffer) error {
	c.mu.Lock()
	err := c.enqueueLocked(bufs)
	c.mu.Unlock()
	return err
}

// Kick writes the queue when no other goroutine is writing it; otherwise the writer that
// is at work picks the queued bytes up and Kick returns at once. Errors are as Write's.
func (c *Conn) Kick() error {
	c.mu.Lock()
	return c.kickLocked()
}

// KickAsync is Kick for a connection's reader: it never writes on the caller's
// goroutine. When no other goroutine is writing the queue, it starts one that does.
// A reader that wrote itself would stop reading while its peer does not read, and a
// peer that must write before it reads on (Go's HTTP/2 client sends a WINDOW_UPDATE or a
// PING ack under the same lock its request-body writer holds while its socket is full)
// then waits for us as we wait for it: both connections' windows stay full for good.
func (c *Conn) KickAsync() {
	c.mu.Lock()
	if c.flushing || len(c.queue) == 0 || c.reason != "" {
		c.mu.Unlock()
		return
	}
	c.flushing = true
	c.mu.Unlock()
	go func() {
		c.mu.Lock()
		c.flushing = false // kickLocked takes the flush over
		_ = c.kickLocked()
	}()
}

// Queued returns the bytes waiting to be written, including a batch being written.
func (c *Conn) Queued() int {
	c.mu.Lock()
	n := c.queued
	c.mu.Unlock()
	return n
}

// WaitWritable blocks while the write queue holds BufferLimit bytes or more, until it
// drains below that or the connection closes (ErrClosed).
func (c *Conn) WaitWritable() error {
	return c.waitQueue(func() bool { return c.queued >= c.limit })
}

// addQueued changes the queued byte count by n; c.mu is held.
func (c *Conn) addQueued(n int) {
	c.queued += n
	c.full.Store(c.queued >= c.limit)
}

// Full reports whether the write queue holds BufferLimit bytes or more: a Write now
// would wait. It takes no lock.
func (c *Conn) Full() bool { return c.full.Load() }

// Sent returns the bytes written to the socket so far. Two equal readings mean the peer
// took nothing in between.
func (c *Conn) Sent() int64 {
	c.mu.Lock()
	n := c.sent
	c.mu.Unlock()
	return n
}

// Acked returns the bytes of the connection's stream the peer has acknowledged: Sent less
// what the socket still holds unacknowledged (SIOCOUTQ), or Sent where that is unknown
// (other systems). For TLS it is a mark of progress rather than a byte count (see
// tlsUnacked). Sent stays put while the socket's send buffer drains (the kernel
// reports room again only once a good part of it is free): a peer that reads slowly moves
// Acked, not Sent. Only on slow paths: the call is a system call.
func (c *Conn) Acked() int64 {
	q, ok := c.sio.unacked() // before Sent: a write in between then reads as progress
	if !ok {
		q, ok = c.tlsUnacked()
	}
	sent := c.Sent()
	if !ok {
		return sent
	}
	return sent - int64(q)
}

// WaitRoomUntil is WaitWritable bounded by deadline: it returns ErrNoRoom when the queue
// still holds BufferLimit bytes or more then, ErrClosed (or the write error) when the
// connection closed, nil when there is room.
func (c *Conn) WaitRoomUntil(deadline time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var wake *time.Timer
	for c.queued >= c.limit && c.reason == "" && c.werr == nil {
		d := time.Until(deadline)
		if d <= 0 {
			return ErrNoRoom
		}
		if wake == nil { // the slow path only: a queue that is full
			wake = time.AfterFunc(d, func() {
				c.mu.Lock()
				c.cond.Broadcast()
				c.mu.Unlock()
			})
			defer wake.Stop()
		}
		c.cond.Wait()
	}
	return c.closedErrLocked()
}

// KickNoWait is Kick for a goroutine that must never wait on this connection's peer,
// such as a reader that forwards many clients' requests onto one shared upstream
// connection: whatever the socket's send buffer takes now is written on the caller's
// goroutine, and when that buffer is full the rest is left to a goroutine that waits for
// room. A socket written through its own Write (TLS) gets that goroutine at once
// (KickAsync).
func (c *Conn) KickNoWait() {
	c.mu.Lock()
	c.kickNoWaitLocked()
}

// WriteNoWait queues bufs (as Queue: never waiting for room) and kicks as KickNoWait does,
// under one lock. It returns ErrClosed (or the last write error) when the connection is
// closed.
func (c *Conn) WriteNoWait(bufs ...*buffer.IoBuffer) error {
	c.mu.Lock()
	if err := c.enqueueLocked(bufs); err != nil {
		c.mu.Unlock()
		return err
	}
	c.kickNoWaitLocked()
	return nil
}

// kickNoWaitLocked is KickNoWait with c.mu held; it drops it.
func (c *Conn) kickNoWaitLocked() {
	if !c.sio.CanTryWrite() {
		c.mu.Unlock()
		c.KickAsync()
		return
	}
	if c.flushing || len(c.queue) == 0 || c.reason != "" {
		c.mu.Unlock()
		return
	}
	c.flushing = true
	c.flushPartsLocked(false)
}

// handOffChunk bounds what the hand-off goroutine writes per wait for room.
const handOffChunk = 64 << 10

// flushPartsLocked writes the queue for KickNoWait (flushing is set, c.mu held; it drops
// it). Without wait it returns at a full socket and leaves the rest to a hand-off
// goroutine, which runs it with wait: what the socket takes now, then at most
// handOffChunk bytes per wait for room. Each part is counted as it is written: one Writev
// of the whole queue (flushLocked) would leave Sent, Queued and Full unchanged until up to
// the queue's limit reached a slow peer, seconds maybe, and a reader waiting for room
// would take a connection that is being read for a stalled one.
func (c *Conn) flushPartsLocked(wait bool) {
	for len(c.queue) > 0 && c.reason == "" {
		batch := c.queue
		c.queue = c.spare[:0]
		c.mu.Unlock()
		n, rest, err := c.tryBatch(batch)
		if wait && n == 0 && len(rest) > 0 && err == nil {
			n, rest, err = c.chunkBatch(rest)
		}
		c.mu.Lock()
		c.wroteLocked(n)
		if err != nil { // nothing of the batch is kept: the connection is closing
			for _, b := range rest {
				c.addQueued(-b.Len())
				b.Release()
			}
			rest = nil
			if c.reason == "" {
				c.werr = err
			}
		}
		if len(rest) > 0 { // what is left goes first, then what was queued meanwhile
			q := make([]*buffer.IoBuffer, 0, len(rest)+len(c.queue))
			c.queue = append(append(q, rest...), c.queue...)
		}
		clear(batch)
		c.spare = batch[:0]
		if err != nil {
			c.flushing = false
			c.mu.Unlock()
			c.Close(closeReasonFor(err))
			return
		}
		if len(rest) > 0 && !wait { // the socket is full: flushing stays set for the hand-off
			c.mu.Unlock()
			go func() {
				c.mu.Lock()
				c.flushPartsLocked(true)
			}()
			return
		}
	}
	if c.reason != "" { // closed meanwhile: Close released the queue of its time, not rest
		for i, b := range c.queue {
			c.addQueued(-b.Len())
			b.Release()
			c.queue[i] = nil
		}
		c.queue = c.queue[:0]
	}
	c.flushing = false
	c.cond.Broadcast()
	c.mu.Unlock()
}

// wroteLocked counts n bytes of the queue as written and wakes those waiting for room.
// c.mu is held.
func (c *Conn) wroteLocked(n int) {
	c.addQueued(-n)
	c.sent += int64(n)
	c.cond.Broadcast()
	if n > 0 {
		c.last.Store(monoNow())
	}
}

// chunkBatch writes the first handOffChunk bytes of batch (or all of it), waiting for room,
// and returns as tryBatch does.
func (c *Conn) chunkBatch(batch []*buffer.IoBuffer) (int, []*buffer.IoBuffer, error) {
	iov := c.iov[:0]
	left := handOffChunk
	for _, b := range batch {
		p := b.Bytes()
		if len(p) >= left {
			iov = append(iov, p[:left])
			break
		}
		iov = append(iov, p)
		left -= len(p)
	}
	c.iov = iov
	n64, err := c.sio.Writev(iov)
	clear(iov)
	n, rest := written(batch, int(n64))
	return n, rest, err
}

// tryBatch writes batch without waiting for room. It releases the buffers written in
// full, drains the written part of the first one left, and returns the bytes written and
// the buffers left (a tail of batch).
func (c *Conn) tryBatch(batch []*buffer.IoBuffer) (int, []*buffer.IoBuffer, error) {
	iov := c.iov[:0]
	for _, b := range batch {
		iov = append(iov, b.Bytes())
	}
	c.iov = iov
	n64, _, err := c.sio.TryWritev(iov)
	clear(iov)
	n, rest := written(batch, int(n64))
	return n, rest, err
}

// written releases the buffers of batch that the first n bytes written cover, drains the
// written part of the first one left, and returns n and the buffers left.
func written(batch []*buffer.IoBuffer, n int) (int, []*buffer.IoBuffer) {
	left := n
	for i, b := range batch {
		l := b.Len()
		if left < l {
			b.Drain(left)
			return n, batch[i:]
		}
		left -= l
		b.Release()
	}
	return n, nil
}

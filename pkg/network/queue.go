package network

import "github.com/mosnlite/mosnlite/pkg/buffer"

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

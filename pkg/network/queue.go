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

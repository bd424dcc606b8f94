package network

import "github.com/mosnlite/mosnlite/pkg/buffer"

// Queue appends bufs to the write queue without writing and without waiting for room,
// taking ownership of them as Write does. A multiplexing protocol that must keep the
// order of its frames across goroutines (HTTP/2: header compression state) queues under
// its own lock, then calls Kick after dropping it, so no socket write happens under that
// lock. It returns ErrClosed (or the last write error) when the connection is closed.
func (c *Conn) Queue(bufs ...*buffer.IoBuffer) error {
	c.mu.Lock()
	if c.reason != "" || c.werr != nil {
		err := c.werr
		c.mu.Unlock()
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
		c.queued += b.Len()
	}
	c.mu.Unlock()
	return nil
}

// Kick writes the queue when no other goroutine is writing it; otherwise the writer that
// is at work picks the queued bytes up and Kick returns at once. Errors are as Write's.
func (c *Conn) Kick() error {
	c.mu.Lock()
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
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.queued >= c.limit && c.reason == "" && c.werr == nil {
		c.cond.Wait()
	}
	if c.werr != nil {
		return c.werr
	}
	if c.reason != "" {
		return ErrClosed
	}
	return nil
}

package network

import (
	"crypto/tls"
	"net"
	"os"
	"syscall"
	"time"
)

// LingerTime bounds a lingering close (CloseLinger; the event loop's HTTP/1 connections
// use the same bound): how long a closing connection's input is read and dropped while
// the client has not taken the whole answer and not closed.
const LingerTime = 5 * time.Second

// CloseLinger closes c with reason r after an answer that ends the connection, without
// resetting it under the client. Closing a socket with bytes unread in it makes the
// kernel send a reset and drop what of the answer is still in the send queue: the client
// would see "connection reset" instead of (the end of) the answer: a 413 to an upload
// still being sent, a large answer with a pipelined request behind it. So when bytes wait
// unread or more may come (more), the queue is written, the write side shut (the client
// reads the answer, then EOF), and what arrives is read and dropped until the client
// closes, or has taken the whole answer and sent nothing for a moment, for up to
// LingerTime, as nginx's lingering close does. Otherwise, and for a connection that is
// not TCP, it is Close. It blocks for up to about LingerTime; only the reader calls it.
func (c *Conn) CloseLinger(r CloseReason, more bool) {
	type closeWriter interface{ CloseWrite() error }
	cw, ok := c.raw.(closeWriter)
	if !ok || !more && !InputPending(c.raw) {
		c.Close(r)
		return
	}
	deadline := time.Now().Add(LingerTime)
	_ = c.raw.SetWriteDeadline(deadline)
	if c.Flush() != nil || cw.CloseWrite() != nil {
		c.Close(r)
		return
	}
	var buf [4096]byte
	for time.Now().Before(deadline) {
		// A short read deadline: the send queue is looked at again when the client
		// stops sending but still reads.
		d := time.Now().Add(100 * time.Millisecond)
		if d.After(deadline) {
			d = deadline
		}
		_ = c.raw.SetReadDeadline(d)
		n, err := c.raw.Read(buf[:])
		if err != nil && !os.IsTimeout(err) {
			break
		}
		// Done once the client has the whole answer and has stopped sending. Not while
		// it still sends (the rest of an upload): the reset would fail its write, and a
		// client such as Go's then reports that instead of the answer it has.
		if n == 0 && !OutputPending(c.raw) {
			break
		}
	}
	c.Close(r)
}

// InputPending reports whether bytes wait unread in c's socket (below TLS for a TLS
// connection). It is false where it cannot tell (not a socket, not Linux).
func InputPending(c net.Conn) bool { return lookFD(c, inputPending) }

// OutputPending reports whether c's socket holds sent bytes its peer has not
// acknowledged yet. It is false where it cannot tell.
func OutputPending(c net.Conn) bool { return lookFD(c, outputPending) }

// lookFD runs look on c's descriptor (below TLS); false where there is none.
func lookFD(c net.Conn, look func(fd int) bool) bool {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	v := false
	_ = rc.Control(func(fd uintptr) { v = look(int(fd)) })
	return v
}

// Package http2 holds mosnlite's HTTP/2 stream pieces built on golang.org/x/net/http2: a
// net.Conn view of a downstream network.Conn for http2.Server.ServeConn, a per-host pool
// of multiplexed upstream client connections, the router view over an HTTP/2 request and
// the hop-by-hop rules used when requests and responses cross between HTTP/1 and HTTP/2.
package http2

import (
	"net"
	"time"

	"github.com/mosnlite/mosnlite/pkg/network"
)

// NetConn lets http2.Server.ServeConn read and write a downstream *network.Conn. Reads
// return the bytes a protocol sniffer handed back (network.Conn.Unread) first, so the
// server sees the whole client preface. Writes go to the socket directly (the HTTP/2
// server has one writer at a time) and count as activity for the idle timer.
type NetConn struct{ C *network.Conn }

var _ net.Conn = NetConn{}

// Read implements net.Conn.
func (n NetConn) Read(p []byte) (int, error) { return n.C.Read(p) }

// Write implements net.Conn.
func (n NetConn) Write(p []byte) (int, error) {
	k, err := n.C.Raw().Write(p)
	n.C.Touch()
	return k, err
}

// Close implements net.Conn.
func (n NetConn) Close() error { return n.C.Close("") }

// LocalAddr implements net.Conn.
func (n NetConn) LocalAddr() net.Addr { return n.C.LocalAddr() }

// RemoteAddr implements net.Conn.
func (n NetConn) RemoteAddr() net.Addr { return n.C.RemoteAddr() }

// SetDeadline implements net.Conn.
func (n NetConn) SetDeadline(t time.Time) error { return n.C.Raw().SetDeadline(t) }

// SetReadDeadline implements net.Conn.
func (n NetConn) SetReadDeadline(t time.Time) error { return n.C.Raw().SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn.
func (n NetConn) SetWriteDeadline(t time.Time) error { return n.C.Raw().SetWriteDeadline(t) }

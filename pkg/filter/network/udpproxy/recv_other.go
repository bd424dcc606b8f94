//go:build !unix

package udpproxy

import (
	"net"

	"github.com/mosnlite/mosnlite/pkg/buffer"
)

// receiver reads a session's upstream datagrams into a buffer the session keeps.
type receiver struct {
	pool *buffer.Pool
	up   net.Conn
	b    *[]byte
}

func (r *receiver) init(up net.Conn, pool *buffer.Pool) { r.pool, r.up = pool, up }

func (r *receiver) read() (*[]byte, int, error) {
	if r.b == nil {
		r.b = r.pool.Get(maxDatagram)
	}
	n, err := r.up.Read(*r.b)
	return r.b, n, err
}

func (r *receiver) tryRead() (*[]byte, int, bool) { return nil, 0, false }

func (r *receiver) done(*[]byte) {}

func (r *receiver) release() {
	if r.b != nil {
		r.pool.Put(r.b)
		r.b = nil
	}
}

// readBuffer is the socket's SO_RCVBUF; unknown here.
func readBuffer(*net.UDPConn) int { return 0 }

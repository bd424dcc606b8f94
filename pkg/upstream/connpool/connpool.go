// Package connpool keeps upstream connections per host address for reuse: PingPong for
// protocols with one request at a time on a connection (HTTP/1), Multiplex for protocols
// that carry many streams on one (HTTP/2).
//
// Pools are keyed by a host's pool key (cluster.Host.PoolKey: its cluster, the cluster's
// connection-settings generation, its address), so they outlive a cluster update that
// only changes weights, and an update that changes how connections are made (upstream
// TLS) sends new requests to new connections. Each host has its own lock; no lock is
// shared across hosts on the request path. Pools never dial on their own: the caller
// dials through its cluster, whose max_connections circuit breaker bounds the
// connections open to it (cluster.Dial fails with cluster.ErrOverflow), and hands the
// connection to the pool when it is done.
package connpool

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// Defaults for zero option fields.
const (
	DefaultIdleTimeout     = 90 * time.Second
	DefaultMaxIdlePerHost  = 64
	DefaultAliveCheckAfter = time.Second
	// DefaultProbeIdleEvery is how often a PingPong pool's sweeper probes its idle
	// connections (PingPongOptions.ProbeIdleEvery).
	DefaultProbeIdleEvery = 2 * time.Second
)

// ErrFull is returned by Multiplex.Acquire when every connection to the host is busy and
// the host already has MaxConnsPerHost connections.
var ErrFull = errors.New("connpool: every connection to the host is busy")

// minSweep is the shortest period of a pool's idle sweeper.
const minSweep = 50 * time.Millisecond

// sweepEvery is the idle sweeper's period for an idle timeout d: a connection is closed
// between d and 1.5·d after it went idle.
func sweepEvery(d time.Duration) time.Duration { return max(d/2, minSweep) }

// Alive reports whether an idle connection is still usable: it has no bytes waiting and
// its peer has not closed or reset it. The probe peeks at the socket without blocking and
// without consuming anything (a TLS connection is probed on its TCP connection). It costs
// a syscall and one small allocation (SyscallConn), which is why pools only probe
// connections idle for a while. Where the socket cannot be peeked at, Alive reports true.
func Alive(c net.Conn) bool {
	if u, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = u.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	return peekIdle(rc)
}

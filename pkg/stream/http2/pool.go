package http2

//lint:file-ignore SA1019 x/net/http2 is the HTTP/2 implementation by design (docs/l7-plan.md); its ServeConn and ClientConn API is deprecated in favour of net/http, which has no per-connection ServeConn.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/mosnlite/mosnlite/pkg/upstream/connpool"
)

// writeByteTimeout closes an upstream connection whose writes make no progress for this
// long.
const writeByteTimeout = 30 * time.Second

// Defaults for PoolOptions' zero fields.
const (
	DefaultIdleTimeout       = 90 * time.Second
	DefaultMaxHeaderListSize = 64 << 10
)

// PoolOptions configures a Pool.
type PoolOptions struct {
	// IdleTimeout closes a connection that carried no stream for that long. 0: default.
	IdleTimeout time.Duration
	// PingTimeout: a connection that read nothing for this long is pinged, and closed
	// when the ping is not answered within the same time. 0: no pings.
	PingTimeout time.Duration
	// MaxHeaderListSize bounds response header lists (SETTINGS_MAX_HEADER_LIST_SIZE). 0: default.
	MaxHeaderListSize uint32
	// MaxConnsPerHost bounds the pooled connections per host (connpool.MultiplexOptions).
	// 0: no bound but the cluster's max_connections.
	MaxConnsPerHost int
	// Stale and HostsChanged drain the connections of hosts that left their cluster or
	// are down (connpool.MultiplexOptions): keys are the pool's addresses. nil: none.
	Stale        func(addr string) bool
	HostsChanged func() <-chan struct{}
}

// Pool keeps multiplexed upstream HTTP/2 client connections per host address on a
// connpool.Multiplex. A connection is reused while it can take a new stream (the peer's
// SETTINGS_MAX_CONCURRENT_STREAMS, no GOAWAY, not closing); full ones are skipped,
// going-away and closed ones are dropped as soon as x/net reports them (GOAWAY received,
// read error, closed), and connections that carried no stream for IdleTimeout are closed
// by the pool's sweeper.
type Pool struct {
	t  *http2.Transport
	mp *connpool.Multiplex[clientConn]
	// live maps each open connection to its hookConn, for deadConns.MarkDead; written
	// when a connection opens and closes, never on the request path.
	live sync.Map // *http2.ClientConn → *hookConn
}

// StreamWindow is the receive window of each upstream response stream.
const StreamWindow = 256 << 10

// NewPool returns an empty pool.
func NewPool(o PoolOptions) *Pool {
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxHeaderListSize == 0 {
		o.MaxHeaderListSize = DefaultMaxHeaderListSize
	}
	// x/net's receive window per response stream is 4 MiB unless set through a net/http
	// Transport's HTTP2 config, and a stream whose client reads slowly holds its window's
	// worth in the proxy: 100 stalled streams, 400 MiB. StreamWindow matches the
	// downstream side's (pkg/proxy: 256 KiB), 500 MB/s a stream at a 0.5 ms round trip.
	t, err := http2.ConfigureTransports(&http.Transport{HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: StreamWindow}})
	if err != nil {
		panic(fmt.Sprintf("http2: upstream transport: %v", err)) // only for a transport already configured
	}
	t.AllowHTTP = true
	t.DisableCompression = true // the proxy forwards Accept-Encoding and bodies as they are
	t.MaxHeaderListSize = o.MaxHeaderListSize
	t.ReadIdleTimeout, t.PingTimeout = o.PingTimeout, o.PingTimeout
	// An upstream that stops reading cannot hold a connection's writer (and the pool's
	// sweeper and Close, which ask the connection its state) for ever.
	t.WriteByteTimeout = writeByteTimeout
	// No IdleConnTimeout: the pool expires idle connections.
	mp := connpool.NewMultiplex[clientConn](connpool.MultiplexOptions{
		IdleTimeout:     o.IdleTimeout,
		MaxConnsPerHost: o.MaxConnsPerHost,
		Stale:           o.Stale,
		HostsChanged:    o.HostsChanged,
	})
	p := &Pool{t: t, mp: mp}
	t.ConnPool = deadConns{p}
	return p
}

// deadConns is the Transport's ClientConnPool: x/net calls its MarkDead when a connection
// receives GOAWAY or its read loop ends, which drops the connection from the pool at once.
// Connections are made with NewClientConn and used directly, so GetClientConn is never
// called.
type deadConns struct{ p *Pool }

func (d deadConns) GetClientConn(*http.Request, string) (*http2.ClientConn, error) {
	return nil, errors.New("http2: the transport's connection pool is not used")
}

func (d deadConns) MarkDead(cc *http2.ClientConn) {
	if v, ok := d.p.live.Load(cc); ok {
		hc := v.(*hookConn)
		d.p.mp.Dead(hc.addr, clientConn{cc: cc, hc: hc})
	}
}

// Get returns a connection to addr with a stream reserved for the caller's next
// RoundTrip, or nil when no pooled connection can take one.
func (p *Pool) Get(addr string) *http2.ClientConn {
	c, _ := p.mp.Get(addr)
	return c.cc
}

// Dialer connects to a host for the pool: the connection, the address it reached (a
// cluster may move on to another host), and a func called once when the connection is
// closed, whoever closes it (it releases the cluster's max_connections unit).
type Dialer func(ctx context.Context) (raw net.Conn, addr string, done func(), err error)

// Acquire returns a connection to addr with a stream reserved for the caller's next
// RoundTrip: a pooled one, else one made over a connection from dial. Only one caller
// dials a host at a time; the others wait for that dial (bounded by ctx) and take a
// stream on its connection, so a burst of streams to a cold host opens one connection,
// not one per stream. dial's errors are returned as they are; a handshake failure is
// wrapped in ErrHandshake; connpool.ErrFull when the host has MaxConnsPerHost busy
// connections. A connection made after Close is not pooled (pooled is false): it serves
// the caller's stream, and the caller closes it when that stream is done.
func (p *Pool) Acquire(ctx context.Context, addr string, dial Dialer) (cc *http2.ClientConn, pooled bool, err error) {
	c, pooled, err := p.mp.Acquire(ctx, addr, func(ctx context.Context) (clientConn, string, error) {
		for again := true; ; again = false {
			raw, at, done, err := dial(ctx)
			if err != nil {
				return clientConn{}, "", err
			}
			c, err := p.newClientConn(ctx, raw, at, done)
			if errors.Is(err, errWentAway) && again {
				continue // the server shut down as the connection started: once more
			}
			return c, at, err
		}
	})
	return c.cc, pooled, err
}

// LocalAddr returns the local address of cc's connection, or nil when cc is not (or no
// longer) one of the pool's.
func (p *Pool) LocalAddr(cc *http2.ClientConn) net.Addr {
	if v, ok := p.live.Load(cc); ok {
		return v.(*hookConn).LocalAddr()
	}
	return nil
}

// ErrHandshake wraps a failure to start HTTP/2 on a new upstream connection.
var ErrHandshake = errors.New("http2: upstream connection setup failed")

// errWentAway: the server sent GOAWAY before the new connection carried a stream.
var errWentAway = errors.New("http2: upstream went away during connection setup")

// settingsWait bounds the wait for a new connection's first SETTINGS in Add.
const settingsWait = 10 * time.Second

// goneWait bounds the wait for a new connection that broke during setup to be closed by
// x/net's read loop (newClientConn).
const goneWait = 100 * time.Millisecond

// newClientConn starts HTTP/2 on raw and waits for the server's first SETTINGS: until
// they arrive x/net assumes 100 concurrent streams, and the streams of a burst that
// waited for this connection would exceed a lower limit (the server refuses the rest).
// The server's SETTINGS come before its answer to a PING.
func (p *Pool) newClientConn(ctx context.Context, raw net.Conn, addr string, done func()) (clientConn, error) {
	hc := &hookConn{Conn: raw, done: done, addr: addr, gone: make(chan struct{})}
	cc, err := p.t.NewClientConn(hc)
	if err == nil {
		err = cc.Ping(ctx)
		if err != nil && ctx.Err() == nil {
			// The connection broke. x/net's read loop closes it once it has handled
			// what arrived before the break, a GOAWAY among it: wait for that, briefly.
			t := time.NewTimer(goneWait)
			select {
			case <-hc.gone:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		// A GOAWAY (Closing) before the connection carried a stream: the server shut down
		// as it started, whether or not it answered the PING before it closed.
		if st := cc.State(); st.Closing || err == nil && st.Closed {
			err = errWentAway
		}
	}
	if err != nil {
		_ = hc.Close()
		return clientConn{}, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	c := clientConn{cc: cc, hc: hc}
	p.live.Store(cc, hc)
	hc.dead.Store(&deadHook{p: p, c: c})
	if hc.closed.Load() { // closed before the hook was set: nothing else forgets it
		p.live.Delete(cc)
	}
	return c, nil
}

// Add makes a client connection over raw (already connected to addr), reserves a stream
// on it for the caller and pools it. done is called once when raw is closed, whoever
// closes it. On error raw is closed. After Close, or beyond MaxConnsPerHost, the
// connection is not pooled (pooled is false): it serves the caller's stream (a request
// still arriving while the proxy drains) and the caller closes it when that stream is
// done.
func (p *Pool) Add(raw net.Conn, addr string, done func()) (cc *http2.ClientConn, pooled bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), settingsWait)
	defer cancel()
	c, err := p.newClientConn(ctx, raw, addr, done)
	if err != nil {
		return nil, false, err
	}
	pooled, err = p.mp.Add(addr, c)
	if err != nil {
		return nil, false, err
	}
	return c.cc, pooled, nil
}

// Close stops pooling: idle connections are closed now, busy ones when their last
// stream ends.
func (p *Pool) Close() error { return p.mp.Close() }

// Len returns the number of pooled connections to addr (for tests).
func (p *Pool) Len(addr string) int { return p.mp.Len(addr) }

// clientConn adapts an x/net client connection to connpool.Mux.
type clientConn struct {
	cc *http2.ClientConn
	hc *hookConn
}

var _ connpool.Mux = clientConn{}

// Reserve implements connpool.Mux; it takes only the connection's state lock, never its
// write lock. A closed connection takes nothing (x/net lets a never-used closed
// connection reserve a stream).
func (c clientConn) Reserve() bool { return !c.hc.closed.Load() && c.cc.ReserveNewRequest() }

// Streams implements connpool.Mux.
func (c clientConn) Streams() int {
	st := c.cc.State()
	return st.StreamsActive + st.StreamsReserved + st.StreamsPending
}

// Dead implements connpool.Mux: closed, or closing (GOAWAY received, shutting down, or
// marked not reusable).
func (c clientConn) Dead() bool {
	if c.hc.closed.Load() {
		return true
	}
	st := c.cc.State()
	return st.Closed || st.Closing
}

// Drain implements connpool.Mux: marked not reusable, x/net closes the connection after
// its last stream; one without streams is closed now. A closed connection needs nothing
// (and its Close may run where x/net holds the connection's locks).
func (c clientConn) Drain() {
	if c.hc.closed.Load() {
		return
	}
	c.cc.SetDoNotReuse()
	if c.Streams() == 0 {
		_ = c.cc.Close()
	}
}

// Close implements connpool.Mux.
func (c clientConn) Close() error { return c.cc.Close() }

// hookConn calls done once when the connection is closed, after dropping the connection
// from its pool.
type hookConn struct {
	net.Conn
	once   sync.Once
	done   func()
	addr   string // the pool's key
	closed atomic.Bool
	gone   chan struct{}            // closed with the connection
	dead   atomic.Pointer[deadHook] // set once the client connection exists
}

// deadHook drops a closed connection from its pool.
type deadHook struct {
	p *Pool
	c clientConn
}

func (c *hookConn) Close() error {
	c.closed.Store(true)
	err := c.Conn.Close()
	if d := c.dead.Swap(nil); d != nil {
		d.p.live.Delete(d.c.cc)
		d.p.mp.Dead(c.addr, d.c)
	}
	c.once.Do(func() {
		close(c.gone)
		if c.done != nil {
			c.done()
		}
	})
	return err
}

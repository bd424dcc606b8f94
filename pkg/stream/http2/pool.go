package http2

//lint:file-ignore SA1019 x/net/http2 is the HTTP/2 implementation by design (docs/l7-plan.md); its ServeConn and ClientConn API is deprecated in favour of net/http, which has no per-connection ServeConn.

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

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
}

// Pool keeps multiplexed upstream HTTP/2 client connections per host address. A
// connection is reused while it can take a new stream (the peer's
// SETTINGS_MAX_CONCURRENT_STREAMS, no GOAWAY, not closing); full or going-away ones are
// skipped and dropped from the pool once they are closed. Connections idle for
// IdleTimeout close themselves. The pool's map lock is held only to find a host's list;
// each host has its own lock.
type Pool struct {
	t      *http2.Transport
	mu     sync.RWMutex
	hosts  map[string]*hostConns
	closed bool
}

type hostConns struct {
	mu      sync.Mutex
	ccs     []*http2.ClientConn
	dialing chan struct{} // closed when the dial in progress for this host ends
}

// NewPool returns an empty pool.
func NewPool(o PoolOptions) *Pool {
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxHeaderListSize == 0 {
		o.MaxHeaderListSize = DefaultMaxHeaderListSize
	}
	t := &http2.Transport{
		AllowHTTP:          true,
		DisableCompression: true, // the proxy forwards Accept-Encoding and bodies as they are
		IdleConnTimeout:    o.IdleTimeout,
		MaxHeaderListSize:  o.MaxHeaderListSize,
		ReadIdleTimeout:    o.PingTimeout,
		PingTimeout:        o.PingTimeout,
	}
	return &Pool{t: t, hosts: make(map[string]*hostConns)}
}

// Get returns a connection to addr with a stream reserved for the caller's next
// RoundTrip, or nil when no pooled connection can take one.
func (p *Pool) Get(addr string) *http2.ClientConn {
	p.mu.RLock()
	h := p.hosts[addr]
	p.mu.RUnlock()
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	live := h.ccs[:0]
	var got *http2.ClientConn
	for _, cc := range h.ccs {
		if st := cc.State(); st.Closed {
			continue
		}
		live = append(live, cc)
		if got == nil && cc.ReserveNewRequest() {
			got = cc
		}
	}
	clear(h.ccs[len(live):])
	h.ccs = live
	return got
}

// Acquire returns a pooled connection to addr with a stream reserved. When none can take
// a stream it returns a nil connection and dialDone: the caller dials (and Adds) a new
// connection, then calls dialDone. Only one caller dials a host at a time; the others
// wait for that dial and take a stream on its connection, so a burst of streams to a
// cold host opens one connection, not one per stream.
func (p *Pool) Acquire(ctx context.Context, addr string) (cc *http2.ClientConn, dialDone func(), err error) {
	for {
		if cc := p.Get(addr); cc != nil {
			return cc, nil, nil
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, func() {}, nil
		}
		h := p.hosts[addr]
		if h == nil {
			h = new(hostConns)
			p.hosts[addr] = h
		}
		p.mu.Unlock()
		h.mu.Lock()
		if wait := h.dialing; wait != nil {
			h.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
		}
		ch := make(chan struct{})
		h.dialing = ch
		h.mu.Unlock()
		return nil, func() {
			h.mu.Lock()
			if h.dialing == ch {
				h.dialing = nil
			}
			h.mu.Unlock()
			close(ch)
		}, nil
	}
}

// Add makes a client connection over raw (already connected to addr), reserves a stream
// on it for the caller and pools it. done is called once when raw is closed, whoever
// closes it. On error raw is closed. After Close the connection is not pooled (pooled is
// false): it serves the caller's stream (a request still arriving while the proxy
// drains) and the caller closes it when that stream is done.
func (p *Pool) Add(raw net.Conn, addr string, done func()) (cc *http2.ClientConn, pooled bool, err error) {
	hc := &hookConn{Conn: raw, done: done}
	cc, err = p.t.NewClientConn(hc)
	if err != nil {
		_ = hc.Close()
		return nil, false, err
	}
	if !cc.ReserveNewRequest() {
		_ = cc.Close()
		return nil, false, errors.New("http2: new upstream connection cannot take a stream")
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return cc, false, nil
	}
	h := p.hosts[addr]
	if h == nil {
		h = new(hostConns)
		p.hosts[addr] = h
	}
	p.mu.Unlock()
	h.mu.Lock()
	h.ccs = append(h.ccs, cc)
	h.mu.Unlock()
	return cc, true, nil
}

// Close stops pooling: idle connections are closed now, busy ones when their last
// stream ends.
func (p *Pool) Close() error {
	p.mu.Lock()
	hosts := p.hosts
	p.hosts = make(map[string]*hostConns)
	p.closed = true
	p.mu.Unlock()
	for _, h := range hosts {
		h.mu.Lock()
		ccs := h.ccs
		h.ccs = nil
		h.mu.Unlock()
		for _, cc := range ccs {
			cc.SetDoNotReuse()
			if st := cc.State(); st.StreamsActive == 0 && st.StreamsReserved == 0 && st.StreamsPending == 0 {
				_ = cc.Close()
			}
		}
	}
	return nil
}

// Len returns the number of pooled connections to addr (for tests).
func (p *Pool) Len(addr string) int {
	p.mu.RLock()
	h := p.hosts[addr]
	p.mu.RUnlock()
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ccs)
}

// hookConn calls done once when the connection is closed.
type hookConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *hookConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if c.done != nil {
			c.done()
		}
	})
	return err
}

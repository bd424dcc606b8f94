package udpproxy

import (
	"context"
	"net"
)

// SetDial replaces how f dials its upstream sockets (before it serves).
func (f *Filter) SetDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) {
	f.dial = dial
}

// SetDialQueueMax replaces the bound on the payload all dialing sessions queue together.
func (f *Filter) SetDialQueueMax(n int64) { f.dialQueueMax = n }

// DialQueued is the payload dialing sessions hold queued.
func (f *Filter) DialQueued() int64 { return f.dialQueued.Load() }

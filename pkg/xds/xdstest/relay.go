package xdstest

import (
	"net"
	"sync"
	"sync/atomic"
)

// Relay is a TCP relay on 127.0.0.1 in front of a target (the control plane). On BlackHole
// it stops forwarding in both directions without closing either socket, as a dropped route
// or a frozen peer looks from both ends: no FIN, no RST, bytes sent are simply never
// delivered. Connections accepted while it is black-holed are held the same way (never
// forwarded). Restore forwards the connections accepted from then on; the black-holed ones
// stay dead until Close.
type Relay struct {
	target string
	ln     net.Listener

	mu        sync.Mutex
	blackhole bool
	closed    bool
	pairs     []*relayPair
	accepted  int
	wg        sync.WaitGroup
}

// relayPair is one client connection and its connection to the target (nil when the
// client arrived during a black hole).
type relayPair struct {
	client, server net.Conn
	dead           atomic.Bool // black-holed: read and drop, never forward, never close
}

// NewRelay listens on an ephemeral 127.0.0.1 port and relays each connection to target.
func NewRelay(target string) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Relay{target: target, ln: ln}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr is the relay's address (what the client dials).
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Accepted is the number of client connections accepted so far.
func (r *Relay) Accepted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted
}

// BlackHole stops forwarding on every open connection and on the ones accepted until
// Restore; no socket is closed.
func (r *Relay) BlackHole() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blackhole = true
	for _, p := range r.pairs {
		p.dead.Store(true)
	}
}

// Restore forwards the connections accepted from now on.
func (r *Relay) Restore() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blackhole = false
}

// Close stops accepting, closes every socket it holds and waits for its goroutines.
func (r *Relay) Close() {
	r.mu.Lock()
	r.closed = true
	pairs := r.pairs
	r.pairs = nil
	r.mu.Unlock()
	r.ln.Close()
	for _, p := range pairs {
		p.close()
	}
	r.wg.Wait()
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		p := &relayPair{client: c}
		r.mu.Lock()
		r.accepted++
		hole := r.blackhole
		r.mu.Unlock()
		if hole {
			p.dead.Store(true)
		} else if p.server, err = net.Dial("tcp", r.target); err != nil {
			c.Close()
			continue
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			p.close()
			continue
		}
		r.pairs = append(r.pairs, p)
		r.wg.Add(2)
		r.mu.Unlock()
		go r.pipe(p, p.server, p.client)
		go r.pipe(p, p.client, p.server)
	}
}

// pipe copies src to dst (dst nil: drops) until src fails. A live pair is closed then (a
// close is relayed); a dead one keeps its sockets open until Close.
func (r *Relay) pipe(p *relayPair, dst, src net.Conn) {
	defer r.wg.Done()
	if src == nil {
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.dead.Load() && dst != nil {
			if _, werr := dst.Write(buf[:n]); werr != nil && !p.dead.Load() {
				p.close()
				return
			}
		}
		if err != nil {
			if !p.dead.Load() {
				p.close()
			}
			return
		}
	}
}

func (p *relayPair) close() {
	p.client.Close()
	if p.server != nil {
		p.server.Close()
	}
}

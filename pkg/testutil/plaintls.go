package testutil

import (
	"bufio"
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// PlainOrTLS serves connections on one address in plain text or as a TLS server, as each
// client's first byte says (0x16 opens a TLS handshake record): an upstream for tests
// whose client switches between the two. It records how each connection came: "plain",
// or "tls " and the server name the client sent (at its handshake).
type PlainOrTLS struct {
	cfg  *tls.Config
	mu   sync.Mutex
	seen []string
}

// NewPlainOrTLS serves TLS with a copy of cfg.
func NewPlainOrTLS(cfg *tls.Config) *PlainOrTLS {
	p := &PlainOrTLS{cfg: cfg.Clone()}
	p.cfg.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		p.record("tls " + chi.ServerName)
		return nil, nil
	}
	return p
}

// Wrap returns c as its first byte says: c itself in plain text (with that byte still to
// read), or a TLS server connection whose handshake runs at its first read or write. It
// waits up to wait for the byte; an error closes c.
func (p *PlainOrTLS) Wrap(c net.Conn, wait time.Duration) (net.Conn, error) {
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	first, err := br.Peek(1)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	pc := &peekedConn{Conn: c, r: br}
	if first[0] == 0x16 {
		return tls.Server(pc, p.cfg), nil
	}
	p.record("plain")
	return pc, nil
}

// Listener wraps ln so that each accepted connection is Wrapped (a client that sends
// nothing within wait is dropped).
func (p *PlainOrTLS) Listener(ln net.Listener, wait time.Duration) net.Listener {
	return &plainOrTLSListener{Listener: ln, p: p, wait: wait}
}

// Seen returns how each connection came, in order.
func (p *PlainOrTLS) Seen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

// Last returns how the latest connection came ("" before any).
func (p *PlainOrTLS) Last() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.seen) == 0 {
		return ""
	}
	return p.seen[len(p.seen)-1]
}

func (p *PlainOrTLS) record(how string) {
	p.mu.Lock()
	p.seen = append(p.seen, how)
	p.mu.Unlock()
}

type plainOrTLSListener struct {
	net.Listener
	p    *PlainOrTLS
	wait time.Duration
}

func (l *plainOrTLSListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if wc, err := l.p.Wrap(c, l.wait); err == nil {
			return wc, nil
		}
	}
}

// peekedConn reads what a bufio.Reader over its Conn buffered first.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

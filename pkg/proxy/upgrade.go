package proxy

import (
	"net"
	"net/http"
	"time"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// tunnel relays the bytes of an upgraded connection (101 Switching Protocols) both ways:
// downstream → upstream on the downstream connection's goroutine (ReadLoop's callback),
// upstream → downstream on one goroutine of its own: the only place the HTTP/1 proxy
// runs a second goroutine for a connection. Either side closing ends both.
type tunnel struct {
	up   *upConn
	done chan struct{} // closed when the upstream reader returned
	cut  waitCut       // ends a write upstream whose client left (tunnelData)
}

// upgradeRequest decides what to do with a request that asks for a protocol upgrade. It
// reports false when the request must be refused (501): CONNECT. An upgrade request with
// a body (curl --http2 -d sends `Upgrade: h2c` with its POST) is served as the plain
// HTTP/1.1 request it also is: a server may ignore Upgrade (RFC 9110 §7.8), and the
// field is not forwarded. Another is forwarded with its Upgrade and Connection: upgrade
// fields; the downstream connection is not reused after a non-101 answer, so bytes the
// client sent ahead of the switch are never parsed as a pipelined request.
func (s *session) upgradeRequest(h *http1.RequestHead) bool {
	s.x.upgrade = false
	if string(h.Method) == "CONNECT" {
		return false
	}
	if h.Upgrade && h.Body != http1.BodyNone {
		h.Upgrade = false
	}
	if !h.Upgrade {
		return true
	}
	s.x.upgrade = true
	s.keepAlive = false
	return true
}

// startTunnel answers a 101 from the upstream to an upgrade request: it writes the head
// (rb holds it in its first n bytes, then the first upstream bytes of the new protocol)
// downstream and starts relaying. The upstream connection leaves the pool's accounting
// for the tunnel.
func (s *session) startTunnel(rb *buffer.IoBuffer, n int) error {
	rh := &s.rhead
	re := &s.redits
	*re = http1.Edits{Add: re.Add[:0], Remove: re.Remove[:0], Upgrade: true}
	s.route.ApplyResponseHeaders(editMutator{re})
	s.responseHead()
	hb := s.p.cfg.Pool.NewBuffer(n + 256)
	if err := http1.AppendResponseHead(hb, rh, re); err != nil {
		hb.Release()
		rb.Release()
		s.finishUpstream(false, err)
		return s.localDone(http.StatusBadGateway, "invalid upstream response", false)
	}
	rb.Drain(n)
	s.sent(hb, nil)
	var err error
	if rb.Len() > 0 {
		err = s.c.Write(hb, rb)
	} else {
		rb.Release()
		err = s.c.Write(hb)
	}
	if err != nil {
		s.finishUpstream(false, err)
		return errClose
	}
	up := s.up
	up.deadline(time.Time{})
	s.pickDone(lb.DoneInfo{Latency: time.Since(s.start)})
	s.up, s.pickDone, s.route = nil, nil, nil
	s.endRequestSlot() // a tunnel is a connection, not a request in flight
	s.endRequest()
	t := &tunnel{up: up, done: make(chan struct{}), cut: writeCut{up.raw}}
	s.x.tunnel = t
	s.c.Tunnel() // connection_idle_timeout applies to the tunnel's bytes
	go t.pump(s.p.cfg.Pool, s.c)
	return nil
}

// pump copies upstream bytes downstream until either side fails, then closes the
// downstream connection, which ends its read loop.
func (t *tunnel) pump(pool *buffer.Pool, c *network.Conn) {
	defer close(t.done)
	for {
		b := pool.NewBuffer(readSize)
		if _, err := b.ReadOnce(t.up.raw); err != nil {
			if b.Len() > 0 {
				_ = c.Write(b)
			} else {
				b.Release()
			}
			c.Close("")
			return
		}
		c.Touch()
		if err := c.Write(b); err != nil {
			c.Close("")
			return
		}
	}
}

// tunnelData forwards downstream bytes of an upgraded connection upstream. While an
// upstream that stopped reading blocks the write, nothing reads the client, so the
// client is watched as a request waiting for its response head is (clientwatch.go): a
// client that left ends the write and the tunnel.
func (s *session) tunnelData(b *buffer.IoBuffer) error {
	t := s.x.tunnel
	s.watchWait(t.cut)
	_, err := t.up.raw.Write(b.Bytes())
	if s.unwatch() || err != nil {
		return errClose
	}
	b.Drain(b.Len())
	return nil
}

// writeCut ends a blocked write with an expired deadline; the connection is closed after.
type writeCut struct{ raw net.Conn }

func (w writeCut) cutWait() { _ = w.raw.SetWriteDeadline(time.Unix(1, 0)) }

// endTunnel closes the upstream side of a tunnel and waits for its reader.
func (s *session) endTunnel() {
	t := s.x.tunnel
	if t == nil {
		return
	}
	s.x.tunnel = nil
	_ = t.up.raw.Close()
	<-t.done
	t.up.close()
}

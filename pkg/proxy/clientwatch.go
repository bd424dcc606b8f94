package proxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/mosnlite/mosnlite/pkg/network"
)

// clientWatchEvery is how often a request that waits for its upstream's response head
// looks whether its client is still there (goroutine path; the event loop hears of it
// from epoll at once).
const clientWatchEvery = 200 * time.Millisecond

// errClientGone ends a session whose client left while its request waited for the
// upstream's response head.
var errClientGone = errors.New("proxy: the client left while its request waited for the upstream")

// clientWatch lets a session blocked on its upstream notice that its client left.
//
// On the goroutine path the connection's one goroutine reads the upstream's answer and
// does not read its client meanwhile, so a client that reset or closed its connection
// would hold the upstream request, its connection and the goroutine until the answer or
// the route timeout. While a request waits for its response head, a timer looks at the
// client's socket every clientWatchEvery (network.Peer: a peek and, with bytes pending,
// the TCP state; nothing is read). When the client sent a FIN or a reset, the watch
// marks the request and cuts the wait with an expired deadline on the upstream socket;
// the session then drops the upstream connection (not pooled) and the request is logged
// with the DC flag. A FIN counts as leaving, as in nginx (proxy_ignore_client_abort off),
// Envoy and Go's net/http server: a client that half-closes after its request gets no
// answer once the wait passed its first look. The loop path does the same for a FIN
// read while the request waits (loopConn.readDown), and serves a request whose FIN came
// with it.
//
// One watch per session, kept across pooled sessions. Its lock is the session's own
// (the timer's goroutine and the session's); a request that is answered before the first
// look costs a timer reset and stop and two uncontended lock pairs.
type clientWatch struct {
	mu   sync.Mutex
	down net.Conn // the client's connection while cut is set
	cut  waitCut  // ends the wait; nil: not waiting
	gone network.PeerState
	t    *time.Timer
}

// waitCut ends a session's wait for its upstream from the watch's goroutine.
type waitCut interface{ cutWait() }

// cutWait ends a blocked read of the response head with an expired deadline. The
// connection is closed, not pooled, after this.
func (u *upConn) cutWait() { _ = u.raw.SetReadDeadline(time.Unix(1, 0)) }

// cancelCut ends a wait on an HTTP/2 upstream stream (h1h2) by cancelling it.
type cancelCut context.CancelFunc

func (c cancelCut) cutWait() { c() }

func newClientWatch() *clientWatch {
	w := &clientWatch{}
	w.t = time.AfterFunc(time.Hour, w.look)
	w.t.Stop()
	return w
}

// look runs on the timer's goroutine.
func (w *clientWatch) look() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cut == nil {
		return
	}
	st := network.Peer(w.down)
	if st == network.PeerOpen {
		w.t.Reset(clientWatchEvery)
		return
	}
	w.gone = st
	w.cut.cutWait()
}

// waitOn bounds up by deadline and watches the client while the session waits on up
// (the first call of a request starts the looks; a retry moves the watch to its new
// connection). It reports false when the client has already been seen leaving.
func (s *session) waitOn(up *upConn, deadline time.Time) bool {
	up.deadline(deadline)
	return s.watchWait(up)
}

// watchWait starts or moves the watch of the client while the session waits; cut
// ends the wait. It reports false when the client has already been seen leaving.
func (s *session) watchWait(cut waitCut) bool {
	w := s.watch
	if w == nil {
		w = newClientWatch()
		s.watch = w
	}
	w.mu.Lock()
	first := w.cut == nil
	w.cut, w.down = cut, s.c.Raw()
	gone := w.gone
	w.mu.Unlock()
	if first {
		w.t.Reset(clientWatchEvery)
	}
	return gone == network.PeerOpen
}

// left reports whether the watch saw the client leave.
func (w *clientWatch) left() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gone != network.PeerOpen
}

// unwatch ends the watch of the request's wait and reports whether its client left
// meanwhile.
func (s *session) unwatch() (gone bool) {
	w := s.watch
	if w == nil {
		return false
	}
	w.t.Stop()
	w.mu.Lock()
	gone = w.gone != network.PeerOpen
	w.cut, w.down, w.gone = nil, nil, network.PeerOpen
	w.mu.Unlock()
	return gone
}

// clientLeft ends a request whose client left while it waited: the upstream connection
// is dropped (ServeConn) and the client's connection closed.
func (s *session) clientLeft() error {
	s.c.Close(network.CloseRemote)
	return errClientGone
}

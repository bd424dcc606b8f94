// Package udpproxy is the udp_proxy network filter. Each client address gets a session: a
// host picked from the cluster and a connected UDP socket to it. Datagrams from the client
// go out on that socket; datagrams coming back on it are sent to the client from the
// listener's socket. A session ends after idle_timeout with no datagram either way.
//
// Goroutines: the listener's read loop (ServePackets) and one reader per session. The read
// loop looks sessions up in a map under a mutex that only session creation and expiry
// contend for. The read loop never waits: a pick that finds no healthy host drops the
// datagram at once (counted) instead of waiting the cluster's pick_timeout, which would
// stall every client of the listener. A host given by IP is dialled on the read loop (a
// socket and a connect); one given by name is dialled on the session's goroutine, since
// resolving it may take seconds: the session exists at once, "dialing", and its client's
// datagrams wait in a bounded queue until the dial ends.
//
// Memory: a session's reader waits for its socket without a buffer (a RawConn read
// callback takes a pooled 64 KiB buffer only once a datagram is there), so an idle session
// costs a socket and a goroutine, not a 64 KiB buffer each (10000 sessions: 640 MiB).
package udpproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/log"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// Name is the filter's type in the config.
const Name = "udp_proxy"

// Defaults.
const (
	DefaultIdleTimeout = config.DefaultUDPProxyIdleTimeout
	DefaultMaxSessions = config.DefaultUDPProxyMaxSessions
	maxDatagram        = 64 << 10

	// A dialing session queues at most this many datagrams and payload bytes, and the
	// listener's dialing sessions at most maxDialQueuedBytes together (many clients at
	// once, or addresses spoofed by the thousand, while a slow resolver answers); the
	// rest are dropped (reason session_dialing).
	maxDialQueue       = 64
	maxDialQueueBytes  = 256 << 10
	maxDialQueuedBytes = 4 << 20
)

// Filter is a built udp_proxy, shared by the listener's socket.
type Filter struct {
	clusters    *cluster.Manager
	cluster     string
	pool        *buffer.Pool
	idle        time.Duration
	maxSessions int
	listener    string
	log         *zap.Logger
	m           stats
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	warns       log.Throttle // one warning a second, the rest at debug
	// dialQueued is the payload queued by all dialing sessions (enqueue), bounded by
	// dialQueueMax (maxDialQueuedBytes).
	dialQueued   atomic.Int64
	dialQueueMax int64
}

var _ network.PacketHandler = (*Filter)(nil)

type stats struct {
	rxDgrams, txDgrams, rxBytes, txBytes prometheus.Counter
	sessions                             prometheus.Counter
	active                               prometheus.Gauge
	dropLimit, dropNoHost, dropUpstream  prometheus.Counter
	dropDialing                          prometheus.Counter // a dialing session's queue was full
	// Datagrams the kernel dropped at a full receive buffer: the listener's socket (from
	// clients) and the sessions' upstream sockets (replies).
	dropListenerBuf, dropSessionBuf prometheus.Counter
}

// Factory builds a udp_proxy from its raw config.
func Factory(raw config.RawMessage, d filter.Deps) (filter.NetworkFilter, error) {
	var c config.UDPProxyConfig
	if len(raw) > 0 {
		if err := config.Unmarshal(raw, &c); err != nil {
			return nil, fmt.Errorf("udp_proxy: %w", err)
		}
	}
	if c.Cluster == "" {
		return nil, errors.New("udp_proxy: cluster: empty")
	}
	if d.Clusters == nil {
		return nil, errors.New("udp_proxy: no cluster manager")
	}
	f := &Filter{
		clusters:    d.Clusters,
		cluster:     c.Cluster,
		pool:        d.Pool,
		idle:        c.IdleTimeout.Or(DefaultIdleTimeout),
		maxSessions: c.MaxSessions,
		log:         d.Log,

		dialQueueMax: maxDialQueuedBytes,
	}
	if f.idle <= 0 {
		f.idle = DefaultIdleTimeout // a UDP session cannot live forever: nothing else ends it
	}
	if f.maxSessions <= 0 {
		f.maxSessions = DefaultMaxSessions
	}
	if f.log == nil {
		f.log = zap.NewNop()
	}
	if f.pool == nil {
		f.pool = buffer.NewPool()
	}
	if d.Listener != nil {
		f.listener = d.Listener.Name
	}
	var dl net.Dialer
	f.dial = dl.DialContext
	if m := d.Metrics; m != nil {
		l, cl := f.listener, f.cluster
		f.m = stats{
			rxDgrams:     m.UDPProxyDatagrams.WithLabelValues(l, cl, "rx"),
			txDgrams:     m.UDPProxyDatagrams.WithLabelValues(l, cl, "tx"),
			rxBytes:      m.UDPProxyBytes.WithLabelValues(l, cl, "rx"),
			txBytes:      m.UDPProxyBytes.WithLabelValues(l, cl, "tx"),
			sessions:     m.UDPProxySessions.WithLabelValues(l, cl),
			active:       m.UDPProxyActive.WithLabelValues(l, cl),
			dropLimit:    m.UDPProxyDropped.WithLabelValues(l, cl, "max_sessions"),
			dropNoHost:   m.UDPProxyDropped.WithLabelValues(l, cl, "no_healthy_upstream"),
			dropUpstream: m.UDPProxyDropped.WithLabelValues(l, cl, "upstream_write"),
			dropDialing:  m.UDPProxyDropped.WithLabelValues(l, cl, "session_dialing"),

			dropListenerBuf: m.UDPProxyDropped.WithLabelValues(l, cl, "listener_receive_buffer"),
			dropSessionBuf:  m.UDPProxyDropped.WithLabelValues(l, cl, "session_receive_buffer"),
		}
	} else {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "discard"})
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "discard"})
		f.m = stats{c, c, c, c, c, g, c, c, c, c, c, c}
	}
	return f, nil
}

// epoch anchors the monotonic clock of activity stamps (a wall-clock step must not expire
// or prolong sessions).
var epoch = time.Now()

func monoNow() int64 { return int64(time.Since(epoch)) }

// session is one client's flow.
type session struct {
	client   netip.AddrPort
	host     *cluster.Host
	up       net.Conn // nil while dialing; then set once, under mu
	done     func(lb.DoneInfo)
	last     atomic.Int64 // monoNow of the last datagram either way
	closing  atomic.Bool  // the reader found the session idle; the read loop must not use it
	start    int64        // monoNow at creation
	firstRTT atomic.Int64
	closed   atomic.Bool // closeUp ran
	recv     receiver    // the reader's state (reader goroutine only)

	// A host given by name is dialled on the session's goroutine. Until the dial ends,
	// dialing is set and the read loop queues the client's datagrams under mu; the
	// goroutine writes them and clears dialing under mu, so later ones follow in order.
	dialing atomic.Bool
	dctx    context.Context    // the dial's: the listener's, bounded by connect_timeout
	cancel  context.CancelFunc // ends the dial (closeUp)
	mu      sync.Mutex
	queue   []*[]byte // pooled copies, in arrival order
	queued  int       // payload bytes in queue
	failed  bool      // the dial failed or was abandoned: the session is gone
}

// table is the listener's sessions by client address.
type table struct {
	mu sync.Mutex
	m  map[netip.AddrPort]*session
}

func (t *table) get(client netip.AddrPort) (s *session, n int) {
	t.mu.Lock()
	s, n = t.m[client], len(t.m)
	t.mu.Unlock()
	return s, n
}

// remove deletes s if it is still the client's session.
func (t *table) remove(s *session) {
	t.mu.Lock()
	if t.m[s.client] == s {
		delete(t.m, s.client)
	}
	t.mu.Unlock()
}

// noWait is an ended context: a pick with it fails at once instead of waiting for a host.
var noWait = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// ServePackets runs the listener's read loop until ctx ends or pc fails. When it returns,
// every session has ended.
func (f *Filter) ServePackets(ctx context.Context, pc net.PacketConn) error {
	t := &table{m: map[netip.AddrPort]*session{}}
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Now()) })
	defer func() {
		stop()
		t.mu.Lock()
		for _, s := range t.m {
			f.closeUp(s)
		}
		t.mu.Unlock()
		wg.Wait()
	}()
	end := func(s *session) {
		t.remove(s)
		f.closeUp(s)
		s.done(lb.DoneInfo{Latency: time.Duration(s.firstRTT.Load())})
		f.m.active.Dec()
	}

	bp := f.pool.Get(maxDatagram)
	defer f.pool.Put(bp)
	buf := *bp
	udp, _ := pc.(*net.UDPConn)
	f.growReadBuffer(udp)
	if udp != nil {
		quit := make(chan struct{})
		wg.Go(func() { f.watchDrops(quit, udp) })
		defer close(quit) // before the deferred wg.Wait above
	}
	for {
		var (
			n      int
			client netip.AddrPort
			err    error
		)
		if udp != nil {
			n, client, err = udp.ReadFromUDPAddrPort(buf)
		} else {
			var a net.Addr
			n, a, err = pc.ReadFrom(buf)
			if ua, ok := a.(*net.UDPAddr); ok {
				client = ua.AddrPort()
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("udp_proxy: read: %w", err)
		}
		now := monoNow()
		start := func(s *session) {
			t.mu.Lock()
			t.m[client] = s
			t.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				if s.dialing.Load() && !f.dialSession(ctx, t, s) {
					return
				}
				f.replyLoop(ctx, pc, s)
				end(s)
			}()
		}
		// Twice at most: a session that expired just now is replaced by a new one.
		for range 2 {
			s, open := t.get(client)
			if s != nil && s.host.Removed() {
				// The host left the cluster (reload, EDS): end the session here, or a
				// client that keeps talking stays on it past any idle_timeout.
				t.remove(s)
				f.closeUp(s)
				s, open = nil, open-1
			}
			if s != nil && !s.host.Healthy() {
				// Its host failed its health checks or was ejected: a session with a
				// healthy host replaces it when there is one (as Envoy's does); else the
				// client stays where it is.
				if ns := f.newSession(ctx, client, false); ns != nil {
					t.remove(s)
					f.closeUp(s)
					s = ns
					start(s)
				}
			}
			if s == nil {
				if open >= f.maxSessions {
					f.m.dropLimit.Inc()
					break
				}
				if s = f.newSession(ctx, client, true); s == nil {
					break
				}
				start(s)
			}
			s.last.Store(now)
			if s.closing.Load() {
				t.remove(s) // expiring: its replies would be lost; start a new session
				continue
			}
			if s.dialing.Load() && f.enqueue(s, buf[:n]) {
				break // queued, or dropped and counted
			}
			_, err := s.up.Write(buf[:n])
			if errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
				t.remove(s) // expired between the lookup and the write
				continue
			}
			if err != nil {
				// ECONNREFUSED from an earlier ICMP is reported here; the datagram is lost,
				// as UDP allows, and the session stays until idle.
				f.m.dropUpstream.Inc()
				break
			}
			f.m.rxDgrams.Inc()
			f.m.rxBytes.Add(float64(n))
			break
		}
	}
}

// listenerReadBuffer is the SO_RCVBUF asked for the listener's socket. Every client's
// datagrams queue on that one socket while the read loop forwards them one at a time (and
// dials a socket for each new client), so a burst overflows the default buffer
// (net.core.rmem_default, usually 208 KiB: about 256 small datagrams on loopback, 832
// bytes of kernel memory each). Linux caps the value at net.core.rmem_max and doubles it;
// 4 MiB gives 8 MiB, about 10000 small or 3500 1500-byte datagrams. The memory is used only
// while datagrams wait. quic-go asks 7 MiB for the same reason.
const listenerReadBuffer = 4 << 20

// sessionReadBuffer is the SO_RCVBUF asked for each session's upstream socket (2 MiB
// granted, about 2500 small datagrams). It holds one client's replies while the session's
// reader sends earlier ones on; with the default (about 256) a client that sends a burst
// of a few hundred datagrams loses replies there, which a direct client would not.
// Memory is used only while replies wait, and net.ipv4.udp_mem bounds all sockets'.
const sessionReadBuffer = 1 << 20

// growReadBuffer raises the listener socket's receive buffer to listenerReadBuffer and
// logs what the kernel granted (less when net.core.rmem_max is lower).
func (f *Filter) growReadBuffer(udp *net.UDPConn) {
	if udp == nil {
		return
	}
	old := readBuffer(udp)
	if err := udp.SetReadBuffer(listenerReadBuffer); err != nil {
		f.log.Warn("udp_proxy: set listener receive buffer", zap.Error(err))
		return
	}
	got := readBuffer(udp)
	lvl := zap.InfoLevel
	if got > 0 && got < listenerReadBuffer {
		lvl = zap.WarnLevel // capped by net.core.rmem_max: bursts are dropped sooner
	}
	f.log.Log(lvl, "udp_proxy: listener receive buffer",
		zap.Int("asked", listenerReadBuffer), zap.Int("was", old), zap.Int("got", got))
}

// dropPoll is how often the listener socket's kernel drop count is read into the
// listener_receive_buffer drop counter.
const dropPoll = time.Second

// watchDrops counts the datagrams the kernel drops at the listener socket's full receive
// buffer (SO_MEMINFO), every dropPoll and once more when quit closes.
func (f *Filter) watchDrops(quit <-chan struct{}, udp *net.UDPConn) {
	last, ok := socketDrops(udp)
	if !ok {
		return
	}
	count := func() {
		if cur, ok := socketDrops(udp); ok {
			f.m.dropListenerBuf.Add(float64(uint32(cur - last))) // the kernel's count is 32 bits
			last = cur
		}
	}
	t := time.NewTicker(dropPoll)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			count()
		case <-quit:
			count()
			return
		}
	}
}

// closeUp closes a session's upstream socket, first counting the replies the kernel
// dropped there at a full receive buffer. Later calls do nothing.
func (f *Filter) closeUp(s *session) {
	if !s.closed.CompareAndSwap(false, true) {
		return
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.mu.Lock()
	up := s.up
	s.mu.Unlock()
	if up == nil {
		return // dialing: dialSession closes the socket it gets
	}
	if uc, ok := up.(*net.UDPConn); ok {
		if d, ok := socketDrops(uc); ok {
			f.m.dropSessionBuf.Add(float64(d))
		}
	}
	up.Close()
}

// newSession starts a session for client with a host of the cluster; nil when there is
// none. drop: a failure to pick loses the datagram (counted and logged); else the caller
// keeps the session it has.
func (f *Filter) newSession(ctx context.Context, client netip.AddrPort, drop bool) *session {
	cl, ok := f.clusters.Get(f.cluster)
	if !ok {
		if drop {
			f.m.dropNoHost.Inc()
			f.warn("udp_proxy: cluster not found", zap.String(log.FieldCluster, f.cluster))
		}
		return nil
	}
	h, done, err := cl.Pick(noWait, &lb.Request{HashKey: lb.HashIP(client.Addr()), HasHash: true})
	if err != nil {
		if drop {
			f.m.dropNoHost.Inc()
			f.warn("udp_proxy: no healthy upstream", zap.String(log.FieldCluster, f.cluster), zap.Error(err))
		}
		return nil
	}
	s := &session{client: client, host: h, done: done}
	if _, err := netip.ParseAddrPort(h.Addr()); err != nil {
		// A name: resolving it may take seconds, so dialSession dials it on the session's
		// goroutine while the read loop goes on.
		timeout := cl.Config().ConnectTimeout.Or(config.DefaultConnectTimeout)
		if timeout <= 0 {
			timeout = config.DefaultConnectTimeout
		}
		s.dctx, s.cancel = context.WithTimeout(ctx, timeout)
		s.dialing.Store(true)
		return s
	}
	up, err := f.dial(ctx, "udp", h.Addr())
	if err != nil {
		done(lb.DoneInfo{Err: err})
		if drop {
			f.m.dropNoHost.Inc()
		}
		f.warnDial(h, err)
		return nil
	}
	f.opened(s, up)
	return s
}

// opened makes up the session's upstream socket.
func (f *Filter) opened(s *session, up net.Conn) {
	f.m.sessions.Inc()
	f.m.active.Inc()
	if uc, ok := up.(*net.UDPConn); ok {
		_ = uc.SetReadBuffer(sessionReadBuffer) // best effort: on failure the default stays
	}
	s.up, s.start = up, monoNow()
	s.recv.init(up, f.pool)
}

func (f *Filter) warnDial(h *cluster.Host, err error) {
	f.warn("udp_proxy: dial upstream", zap.String(log.FieldCluster, f.cluster),
		zap.String(log.FieldHost, h.Addr()), zap.Error(err))
}

// dialSession dials a dialing session's host (on its goroutine), then writes the queued
// datagrams in order and reports true. On failure, or when closeUp ran meanwhile, it drops
// the queue (counted as no_healthy_upstream), removes the session from t so the client's
// next datagram starts a new one, and reports false.
func (f *Filter) dialSession(ctx context.Context, t *table, s *session) bool {
	up, err := f.dial(s.dctx, "udp", s.host.Addr())
	s.cancel()
	s.mu.Lock()
	abandoned := s.closed.Load()
	if err == nil && abandoned {
		up.Close() // closeUp found no socket to close
		err = net.ErrClosed
	}
	if err != nil {
		s.failed = true
		q := s.queue
		f.dialQueued.Add(-int64(s.queued))
		s.queue, s.queued = nil, 0
		s.mu.Unlock()
		for _, b := range q {
			f.pool.Put(b)
		}
		f.m.dropNoHost.Add(float64(len(q)))
		s.closed.Store(true)
		t.remove(s)
		s.done(lb.DoneInfo{Err: err})
		if !abandoned && ctx.Err() == nil {
			f.warnDial(s.host, err)
		}
		return false
	}
	f.opened(s, up)
	for _, b := range s.queue {
		if _, err := up.Write(*b); err != nil {
			f.m.dropUpstream.Inc()
		} else {
			f.m.rxDgrams.Inc()
			f.m.rxBytes.Add(float64(len(*b)))
		}
		f.pool.Put(b)
	}
	f.dialQueued.Add(-int64(s.queued))
	s.queue, s.queued = nil, 0
	s.dialing.Store(false)
	s.mu.Unlock()
	return true
}

// enqueue queues a copy of b on a dialing session, or drops it (counted) when the queue is
// full or the dial failed; true means b is taken care of. False: the dial has succeeded,
// the queue is written, and b goes on s.up.
func (f *Filter) enqueue(s *session, b []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.failed:
		f.m.dropNoHost.Inc()
	case !s.dialing.Load():
		return false
	case len(s.queue) >= maxDialQueue || s.queued+len(b) > maxDialQueueBytes ||
		f.dialQueued.Load()+int64(len(b)) > f.dialQueueMax:
		f.m.dropDialing.Inc()
	default:
		c := f.pool.Get(len(b))
		copy(*c, b)
		s.queue = append(s.queue, c)
		s.queued += len(b)
		f.dialQueued.Add(int64(len(b)))
	}
	return true
}

// replyLoop carries the upstream's datagrams back to the client until the session is idle
// for f.idle, the upstream socket fails, or ctx ends.
func (f *Filter) replyLoop(ctx context.Context, pc net.PacketConn, s *session) {
	udp, _ := pc.(*net.UDPConn)
	defer s.recv.release()
	s.up.SetReadDeadline(time.Now().Add(f.idle))
	for {
		b, n, err := s.recv.read()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				last := s.last.Load()
				quiet := time.Duration(monoNow() - last)
				if quiet < f.idle {
					s.up.SetReadDeadline(time.Now().Add(f.idle - quiet)) // re-arm: the client was active
					continue
				}
				// A read past its deadline fails without looking at the socket: a datagram
				// may be queued if this goroutine ran late. That is not idleness.
				s.up.SetReadDeadline(time.Time{})
				if b, n, ok := s.recv.tryRead(); ok {
					s.up.SetReadDeadline(time.Now().Add(f.idle))
					f.reply(pc, udp, s, b, n)
					continue
				}
				// Idle. The read loop stores last before it loads closing: either it sees
				// closing and leaves this session, or last changed here and it may have
				// written on it, so keep reading for its reply.
				s.closing.Store(true)
				if s.last.Load() != last {
					s.closing.Store(false)
					s.up.SetReadDeadline(time.Now().Add(f.idle))
					continue
				}
				return // idle
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				// ICMP port unreachable from the upstream: keep the session, as a socket would.
				continue
			}
			return
		}
		if err := f.reply(pc, udp, s, b, n); err != nil && (ctx.Err() != nil || errors.Is(err, net.ErrClosed)) {
			return
		}
	}
}

// reply sends one upstream datagram to the client from the listener's socket and returns
// b to the pool.
func (f *Filter) reply(pc net.PacketConn, udp *net.UDPConn, s *session, b *[]byte, n int) error {
	now := monoNow()
	s.last.Store(now)
	if s.firstRTT.Load() == 0 {
		s.firstRTT.Store(max(now-s.start, 1))
	}
	var err error
	if udp != nil {
		_, err = udp.WriteToUDPAddrPort((*b)[:n], s.client)
	} else {
		_, err = pc.WriteTo((*b)[:n], net.UDPAddrFromAddrPort(s.client))
	}
	s.recv.done(b)
	if err != nil {
		return err
	}
	f.m.txDgrams.Inc()
	f.m.txBytes.Add(float64(n))
	return nil
}

// warn logs at warn level at most once a second per filter (a flood of new clients with
// no upstream would otherwise log once per datagram); the rest go to debug.
func (f *Filter) warn(msg string, fields ...zap.Field) {
	f.warns.Log(f.log, zap.WarnLevel, msg, fields...) // f.log names the listener
}

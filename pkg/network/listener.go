package network

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/log"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network/evloop"
)

// DefaultMaxConnections applies when ListenerConfig.MaxConnections is 0.
const DefaultMaxConnections = 65536

// Accept back-off after an error: starts at minBackoff, doubles up to maxBackoff, resets
// on the next successful accept.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// overloadRetry is how often a listener paused by Overloaded looks again.
const overloadRetry = 100 * time.Millisecond

// logEvery is the minimum interval between two log lines about accept errors or overflow.
const logEvery = time.Second

// Handler serves one stream connection. It runs on the connection's own goroutine and must
// return when ctx is done or the connection is closed. The connection is closed (reason
// local) when it returns, if it is still open.
type Handler interface {
	ServeConn(ctx context.Context, c *Conn)
}

// PacketHandler serves a udp listener's socket until ctx is done (the listener then closes
// pc) or pc fails.
type PacketHandler interface {
	ServePackets(ctx context.Context, pc net.PacketConn) error
}

// ListenerConfig configures a Listener.
type ListenerConfig struct {
	Name    string
	Network string // "tcp" (default, also "tcp4", "tcp6"), "udp" ("udp4", "udp6"), "unix"
	Address string
	// BindPort false makes a virtual listener: it opens no socket and serves connections
	// handed to it by an original_dst listener. Only for tcp; Address must be ip:port.
	BindPort       bool
	ReusePort      bool               // SO_REUSEPORT
	MaxConnections int                // open connections; 0: 65536
	OriginalDst    config.OriginalDst // "", "redirect" or "tproxy" (tcp only)
	Conn           ConnOptions        // applied to every accepted connection
	Handler        Handler            // tcp, unix
	PacketHandler  PacketHandler      // udp
	Index          *Index             // where original_dst looks up other listeners
	Metrics        *metrics.Set       // nil: a private set
	Log            *zap.Logger        // nil: no logging
	// Inherit, for tcp, is a listening socket to serve instead of binding Address (from
	// another Listener's File): a replacement listener takes over the socket with no gap
	// in accepting. NewListener takes ownership of the file.
	Inherit *os.File
	// TLS, when set, makes the listener terminate TLS (tls.go): the handshake runs on the
	// connection's goroutine, bounded by HandshakeTimeout (0: 10s), before the handler.
	TLS              *tls.Config
	HandshakeTimeout time.Duration
	// RawHandler, with Loops, serves the listener's connections on event loops instead of
	// goroutines (raw.go), where the listener qualifies (a bound tcp socket, no TLS, no
	// original_dst); Handler serves the rest and every socket RawHandler declines.
	RawHandler RawHandler
	Loops      *evloop.Group
	// Overloaded, when set, is asked before each accept: while it reports true the
	// listener accepts nothing (new connections wait in the kernel backlog), and looks
	// again every overloadRetry (overload.Memory.Overloaded).
	Overloaded func() bool
	// SendTimeout, for tcp, closes an accepted connection whose peer takes none of the
	// bytes sent to it for this long (TCP_USER_TIMEOUT on the listening socket, inherited
	// by every accepted one; the connection's next read or write fails with ETIMEDOUT and
	// it closes with reason send_timeout). 0: none (the kernel's retransmission limits).
	SendTimeout time.Duration
}

// Listener accepts connections and runs each on its own goroutine. New binds; Serve
// accepts; Drain waits for (and then closes) open connections.
type Listener struct {
	cfg     ListenerConfig
	log     *zap.Logger
	network string
	ln      net.Listener   // tcp, unix
	pc      net.PacketConn // udp
	key     netip.AddrPort // index key (tcp and virtual listeners)
	hasKey  bool
	sem     chan struct{} // max_connections slots
	workers workers       // idle connection goroutines of this listener's accept loop

	serving   atomic.Bool
	closing   atomic.Bool
	closeOnce sync.Once
	closeErr  error

	cxTotal, cxOverflow, cxHandoff, acceptErrs, panics prometheus.Counter
	overloadPauses                                     prometheus.Counter
	cxActive                                           prometheus.Gauge
	closes                                             *prometheus.CounterVec // reason
	closeCounters                                      sync.Map               // CloseReason → prometheus.Counter, resolved once

	mu      sync.Mutex // accept and close only
	conns   map[*Conn]struct{}
	running int           // connection goroutines
	zero    chan struct{} // closed when running drops to 0 (made by a waiting Drain)
	base    context.Context
	forced  bool // Drain's deadline passed: connections started later are closed at once

	// Event loops (raw.go): the accepting registrations, open RawConns, and their lists
	// per loop (each used only on its loop).
	listenNoDelay bool       // TCP_NODELAY set on the socket before listen: accepted sockets have it
	rawMu         sync.Mutex // serializes registering the socket with the loops and leaving them
	acceptors     atomic.Pointer[[]*acceptor]
	rawLive       atomic.Int64
	rawLists      []rawList
}

// NewListener validates cfg and binds the socket (none for a virtual listener). It starts
// no goroutine.
func NewListener(cfg ListenerConfig) (*Listener, error) {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	if cfg.Conn.Log == nil {
		cfg.Conn.Log = cfg.Log
	}
	if cfg.MaxConnections < 0 {
		return nil, fmt.Errorf("listener %q: max_connections %d < 0", cfg.Name, cfg.MaxConnections)
	}
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	l := &Listener{
		cfg:     cfg,
		log:     cfg.Log,
		network: cfg.Network,
		conns:   map[*Conn]struct{}{},
		sem:     make(chan struct{}, cfg.MaxConnections),
		workers: workers{jobs: make(chan connJob), stop: make(chan struct{})},
	}
	if l.network == "" {
		l.network = "tcp"
	}
	if err := l.validate(); err != nil {
		return nil, fmt.Errorf("listener %q: %w", cfg.Name, err)
	}
	m, name := cfg.Metrics, cfg.Name
	l.cxTotal = m.DownstreamCxTotal.WithLabelValues(name)
	l.cxActive = m.DownstreamCxActive.WithLabelValues(name)
	l.cxOverflow = m.DownstreamCxOverflow.WithLabelValues(name)
	l.cxHandoff = m.DownstreamCxHandoff.WithLabelValues(name)
	l.overloadPauses = m.AcceptOverload.WithLabelValues(name)
	l.acceptErrs = m.AcceptErrors.WithLabelValues(name)
	l.panics = m.ConnPanics.WithLabelValues(name)
	closes, err := m.ConnCloses.CurryWith(prometheus.Labels{"listener": name})
	if err != nil {
		return nil, fmt.Errorf("listener %q: metrics: %w", name, err)
	}
	l.closes = closes

	if !cfg.BindPort {
		key, err := parseVirtualAddr(cfg.Address)
		if err != nil {
			return nil, fmt.Errorf("listener %q: virtual listener address: %w", name, err)
		}
		l.key, l.hasKey = key, true
		return l, nil
	}
	if err := l.bind(); err != nil {
		return nil, fmt.Errorf("listener %q: %w", name, err)
	}
	return l, nil
}

func (l *Listener) validate() error {
	c := &l.cfg
	switch l.network {
	case "tcp", "tcp4", "tcp6":
		if c.Handler == nil {
			return errors.New("no connection handler")
		}
	case "unix":
		if c.Handler == nil {
			return errors.New("no connection handler")
		}
	case "udp", "udp4", "udp6":
		if c.PacketHandler == nil {
			return errors.New("no packet handler")
		}
	default:
		return fmt.Errorf("network %q: want tcp, udp or unix", l.network)
	}
	if !l.isTCP() {
		if !c.BindPort {
			return fmt.Errorf("bind_port false (virtual listener) is only for tcp, not %s", l.network)
		}
		if c.OriginalDst != config.OriginalDstOff {
			return fmt.Errorf("use_original_dst is only for tcp, not %s", l.network)
		}
	}
	if err := l.validateTLS(); err != nil {
		return err
	}
	switch c.OriginalDst {
	case config.OriginalDstOff, config.OriginalDstRedirect, config.OriginalDstTProxy:
	default:
		return fmt.Errorf("use_original_dst %q: want redirect or tproxy", c.OriginalDst)
	}
	return nil
}

func (l *Listener) isTCP() bool { return strings.HasPrefix(l.network, "tcp") }

// parseVirtualAddr parses a virtual listener's ip:port (an empty host means any address).
func parseVirtualAddr(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if host == "" {
		host = "::"
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(host, port))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: want ip:port (%w)", s, err)
	}
	return normalize(ap), nil
}

func normalize(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func (l *Listener) bind() error {
	// No TCP keepalive on accepted sockets (Go enables it by default: four setsockopt calls
	// per connection). Like Envoy, nginx and HAProxy, idle peers are found by idle timeouts.
	lc := net.ListenConfig{Control: l.control, KeepAlive: -1}
	// Plain TCP, not the runtime's default MPTCP listening socket: an MPTCP listener
	// refuses TCP options that accepted sockets should inherit (TCP_USER_TIMEOUT, for
	// send_timeout), and its accept path costs more for the plain TCP clients a sidecar
	// serves.
	lc.SetMultipathTCP(false)
	ctx := context.Background() // binding is synchronous and not cancellable by design
	switch {
	case l.network == "unix":
		if err := removeStaleSocket(l.cfg.Address); err != nil {
			return err
		}
		ln, err := lc.Listen(ctx, "unix", l.cfg.Address)
		if err != nil {
			return err
		}
		l.ln = ln
	case l.isTCP():
		var (
			ln  net.Listener
			err error
		)
		if f := l.cfg.Inherit; f != nil {
			ln, err = net.FileListener(f)
			f.Close()
		} else {
			ln, err = lc.Listen(ctx, l.network, l.cfg.Address)
		}
		if err != nil {
			return err
		}
		l.ln = ln
		// Set on an inherited socket too: the new config's value replaces the old one.
		if err := setSendTimeout(ln, l.cfg.SendTimeout); err != nil {
			ln.Close()
			return err
		}
		if a, ok := ln.Addr().(*net.TCPAddr); ok {
			l.key, l.hasKey = normalize(a.AddrPort()), true
		}
	default:
		pc, err := lc.ListenPacket(ctx, l.network, l.cfg.Address)
		if err != nil {
			return err
		}
		l.pc = pc
	}
	return nil
}

// removeStaleSocket removes path when it is a unix socket nobody listens on. A path that
// is not a socket, or a socket that accepts connections, is an error.
func removeStaleSocket(path string) error {
	if path == "" || path[0] == '@' { // abstract socket: no file
		return nil
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a unix socket", path)
	}
	if c, err := net.DialTimeout("unix", path, 100*time.Millisecond); err == nil {
		c.Close()
		return fmt.Errorf("%s: %w (a live socket)", path, syscall.EADDRINUSE)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// Addr is the bound address (port 0 resolved); nil for a virtual listener.
func (l *Listener) Addr() net.Addr {
	switch {
	case l.ln != nil:
		return l.ln.Addr()
	case l.pc != nil:
		return l.pc.LocalAddr()
	}
	return nil
}

// File returns a duplicate of a tcp listener's socket for ListenerConfig.Inherit; the
// socket stays open (and queues new connections) until both are closed.
func (l *Listener) File() (*os.File, error) {
	tl, ok := l.ln.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("listener %q: only a bound tcp socket can be handed over", l.cfg.Name)
	}
	return tl.File()
}

// Name is the listener's configured name.
func (l *Listener) Name() string { return l.cfg.Name }

// Close closes the socket (a unix socket's file is removed); it does not touch open
// connections. Serve calls it when its ctx ends. Idempotent.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.closing.Store(true)
		close(l.workers.stop)
		l.stopRaw()
		switch {
		case l.ln != nil:
			l.closeErr = l.ln.Close()
		case l.pc != nil:
			l.closeErr = l.pc.Close()
		}
	})
	return l.closeErr
}

// Serve accepts connections until ctx is done, then closes the socket and returns nil;
// open connections keep running (see Drain). A virtual listener only waits for ctx. A udp
// listener runs the PacketHandler. Serve returns an error when the socket fails for good.
func (l *Listener) Serve(ctx context.Context) error {
	if !l.serving.CompareAndSwap(false, true) {
		return fmt.Errorf("listener %q: Serve called twice", l.cfg.Name)
	}
	l.mu.Lock()
	l.base = context.WithoutCancel(ctx)
	l.mu.Unlock()
	switch {
	case !l.cfg.BindPort:
		<-ctx.Done()
		return nil
	case l.pc != nil:
		return l.servePackets(ctx)
	case l.rawOK():
		return l.serveRaw(ctx)
	}
	return l.acceptLoop(ctx)
}

func (l *Listener) servePackets(ctx context.Context) (err error) {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer func() {
		if r := recover(); r != nil {
			l.panics.Inc()
			l.log.Error("panic in packet handler; listener stopped", zap.Any("panic", r),
				zap.ByteString("stack", debug.Stack()))
			err = fmt.Errorf("listener %q: panic in packet handler: %v", l.cfg.Name, r)
		}
		l.Close()
	}()
	err = l.cfg.PacketHandler.ServePackets(ctx, l.pc)
	if ctx.Err() != nil || l.closing.Load() {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listener %q: %w", l.cfg.Name, err)
	}
	return nil
}

func (l *Listener) acceptLoop(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var (
		backoff  time.Duration
		errLog   limiter
		overLog  limiter
		sleepFor *time.Timer
	)
	defer func() {
		if sleepFor != nil {
			sleepFor.Stop()
		}
	}()
	// sleep waits d on one reused timer; false: ctx ended meanwhile.
	sleep := func(d time.Duration) bool {
		if sleepFor == nil {
			sleepFor = time.NewTimer(d)
		} else {
			sleepFor.Reset(d)
		}
		select {
		case <-sleepFor.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	overloaded := false
	// waitOverload waits while Overloaded reports true; false: ctx ended meanwhile.
	waitOverload := func() bool {
		for l.overloaded(&overloaded) {
			if !sleep(overloadRetry) {
				return false
			}
		}
		return true
	}
	for {
		if !waitOverload() {
			l.Close()
			return nil
		}
		select {
		case l.sem <- struct{}{}:
		default:
			// max_connections reached: stop accepting (the kernel backlog holds new
			// connections) until a connection closes.
			l.cxOverflow.Inc()
			if n, ok := overLog.allow(); ok {
				l.log.Warn("max_connections reached; accepting paused", zap.Int("max_connections", l.cfg.MaxConnections),
					zap.Int("suppressed", n))
			}
			select {
			case l.sem <- struct{}{}:
			case <-ctx.Done():
				l.Close()
				return nil
			}
		}
		raw, err := l.ln.Accept()
		if err != nil {
			<-l.sem
			if ctx.Err() != nil || l.closing.Load() {
				l.Close()
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("listener %q: %w", l.cfg.Name, err)
			}
			// EMFILE, ENFILE, ENOBUFS, ENOMEM and the like: wait and retry; the kernel
			// backlog holds the pending connections meanwhile.
			l.acceptErrs.Inc()
			backoff = min(max(2*backoff, minBackoff), maxBackoff)
			if n, ok := errLog.allow(); ok {
				l.log.Warn("accept failed; backing off", zap.Error(err), zap.Duration("backoff", backoff),
					zap.Int("suppressed", n))
			}
			if !sleep(backoff) {
				l.Close()
				return nil
			}
			continue
		}
		backoff = 0
		// Accept was already waiting when the overload began: hold this one connection,
		// unserved, until it ends.
		if !waitOverload() {
			raw.Close()
			<-l.sem
			l.Close()
			return nil
		}
		l.accept(raw)
	}
}

// overloaded reports whether the listener must not accept now (ListenerConfig.
// Overloaded); *paused is the caller's state, so that each pause is counted and logged
// once.
func (l *Listener) overloaded(paused *bool) bool {
	if l.cfg.Overloaded == nil || !l.cfg.Overloaded() {
		*paused = false
		return false
	}
	if !*paused {
		*paused = true
		l.overloadPauses.Inc()
		l.log.Warn("memory near its limit; accepting paused")
	}
	return true
}

// limiter allows one log line per logEvery and counts the ones it suppressed. Used by one
// goroutine.
type limiter struct {
	next       int64
	suppressed int
}

func (r *limiter) allow() (suppressed int, ok bool) {
	now := monoNow()
	if now < r.next {
		r.suppressed++
		return 0, false
	}
	n := r.suppressed
	r.next, r.suppressed = now+int64(logEvery), 0
	return n, true
}

// accept applies original_dst and starts the connection on the listener that serves it.
func (l *Listener) accept(raw net.Conn) {
	l.cxTotal.Inc()
	target := l
	var (
		od    netip.AddrPort
		hasOD bool
	)
	if l.cfg.OriginalDst != config.OriginalDstOff {
		var err error
		od, err = l.originalDst(raw)
		if err != nil {
			if ce := l.log.Check(zap.DebugLevel, "original destination unavailable; serving here"); ce != nil {
				ce.Write(zap.Stringer(log.FieldRemote, raw.RemoteAddr()), zap.Error(err))
			}
		} else {
			hasOD = true
			if t, ok := l.cfg.Index.lookup(od, l); ok {
				target = t
				t.cxHandoff.Inc()
			}
		}
	}
	if target != l && target.cfg.SendTimeout != l.cfg.SendTimeout {
		// The socket inherited this listener's send_timeout; the one serving it rules.
		if err := setSendTimeout(raw, target.cfg.SendTimeout); err != nil {
			l.log.Debug("send_timeout not set on a handed-off connection", zap.Error(err))
		}
	}
	c := newConn(target.wrapTLS(raw), target.cfg.Conn)
	c.listener = target.cfg.Name
	c.origDst, c.hasOrigDst = od, hasOD
	target.start(c, l.sem, l.base, &l.workers)
}

func (l *Listener) originalDst(raw net.Conn) (netip.AddrPort, error) {
	if l.cfg.OriginalDst == config.OriginalDstTProxy {
		a, ok := raw.LocalAddr().(*net.TCPAddr)
		if !ok {
			return netip.AddrPort{}, fmt.Errorf("local address %v is not tcp", raw.LocalAddr())
		}
		return normalize(a.AddrPort()), nil
	}
	tc, ok := raw.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%T is not a TCP connection", raw)
	}
	return GetOriginalDst(tc)
}

// start tracks c and runs the handler on a goroutine of its own (from w, the accepting
// listener's workers). slot is the accepting listener's max_connections slot, freed when c
// closes; fallback is the accepting listener's base context, used when l (a hand-off
// target) is not serving.
func (l *Listener) start(c *Conn, slot chan struct{}, fallback context.Context, w *workers) {
	l.mu.Lock()
	base := l.base
	if base == nil {
		base = fallback
	}
	ctx, cancel := context.WithCancel(base)
	c.owner, c.slot, c.ctx, c.cancel = l, slot, ctx, cancel
	l.conns[c] = struct{}{}
	l.running++
	forced := l.forced
	l.mu.Unlock()
	l.cxActive.Inc()
	c.startIdle()
	if forced {
		c.Close(CloseDrain)
	}
	w.run(connJob{l: l, ctx: ctx, c: c})
}

// maxIdleWorkers bounds the connection goroutines a listener keeps waiting for work.
const maxIdleWorkers = 64

// workers reuses connection goroutines: after its connection a goroutine waits for the
// accept loop's next one instead of exiting, keeping its grown stack. A new goroutine
// starts on a 2 KiB stack that a handler's dial path outgrows (runtime.morestack copies
// it), and its exit frees the grown stack again: newproc, morestack and goexit were ~3 % of
// a short tcp_proxy session's CPU (perf, 64-byte request and reply per connection).
// At most maxIdleWorkers wait; the rest exit, and all exit once the listener is closed.
type workers struct {
	jobs chan connJob  // unbuffered: a send succeeds only when a worker waits
	stop chan struct{} // closed by Listener.Close
	idle atomic.Int32  // workers waiting on jobs, or about to
}

// connJob is one connection for a worker: the listener serving it and its handler context.
type connJob struct {
	l   *Listener
	ctx context.Context
	c   *Conn
}

// stackReserve is how much stack a new worker claims before its first connection: enough
// for a handler's deepest common path (net's connect, for tcp_proxy) to run without
// growing the stack in the middle of a deep call chain, where the runtime copies and
// adjusts every frame (pprof: runtime.newstack under net.dialTCP, ~3 % of a short
// tcp_proxy session's CPU, before tcp_proxy grew its stack up front).
const stackReserve = 4 << 10

// growStack grows the goroutine's stack once, while only a few frames are on it. It
// returns a byte so that the compiler keeps the frame.
//
//go:noinline
func growStack(i int) byte {
	var b [stackReserve]byte
	b[i] = 1
	return b[stackReserve-1-i]
}

// run hands j to a waiting worker, or starts one.
func (w *workers) run(j connJob) {
	select {
	case w.jobs <- j:
	default:
		go w.loop(j)
	}
}

// loop serves j, then each connection handed to it while it waits, until it finds
// maxIdleWorkers others waiting or the listener closed.
func (w *workers) loop(j connJob) {
	growStack(0)
	for {
		j.l.serveConn(j.ctx, j.c)
		j = connJob{} // hold no connection while waiting
		if w.idle.Add(1) > maxIdleWorkers {
			w.idle.Add(-1)
			return
		}
		select {
		case j = <-w.jobs:
			w.idle.Add(-1)
		case <-w.stop:
			w.idle.Add(-1)
			return
		}
	}
}

func (l *Listener) serveConn(ctx context.Context, c *Conn) {
	defer l.connDone()
	defer func() {
		if r := recover(); r != nil {
			l.panics.Inc()
			l.log.Error("panic in connection handler; connection closed",
				zap.Uint64(log.FieldConnID, c.id), zap.Stringer(log.FieldRemote, c.RemoteAddr()),
				zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			c.Close(CloseError)
		}
		c.Close(CloseLocal)
	}()
	if !l.handshake(c) {
		return
	}
	l.cfg.Handler.ServeConn(ctx, c)
}

// connClosed is called by Conn.Close.
func (l *Listener) connClosed(c *Conn, r CloseReason) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	l.cxActive.Dec()
	l.closeCounter(r).Inc()
	if ce := l.log.Check(zap.DebugLevel, "connection closed"); ce != nil {
		ce.Write(zap.Uint64(log.FieldConnID, c.id), zap.Stringer(log.FieldRemote, c.RemoteAddr()),
			zap.String(log.FieldReason, string(r)))
	}
}

// closeCounter is the conn-closes child for reason r; the label lookup happens once per
// reason instead of once per connection.
func (l *Listener) closeCounter(r CloseReason) prometheus.Counter {
	if v, ok := l.closeCounters.Load(r); ok {
		return v.(prometheus.Counter)
	}
	v, _ := l.closeCounters.LoadOrStore(r, l.closes.WithLabelValues(string(r)))
	return v.(prometheus.Counter)
}

func (l *Listener) connDone() {
	l.mu.Lock()
	l.running--
	l.signalIdleLocked()
	l.mu.Unlock()
}

// signalIdleLocked wakes a waiting Drain when no connection goroutine runs and no
// RawConn is open.
func (l *Listener) signalIdleLocked() {
	if l.running == 0 && l.rawLive.Load() == 0 && l.zero != nil {
		close(l.zero)
		l.zero = nil
	}
}

// ActiveConns is the number of open connections served by this listener (hand-offs
// included).
func (l *Listener) ActiveConns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns) + int(l.rawLive.Load())
}

// Drain waits until every connection goroutine of this listener has returned. It first
// closes, with reason drain, the connections whose handler says they are between requests
// (Conn.SetIdle, RawIdleCloser): a client that keeps a connection open for more requests
// would otherwise hold the drain until its deadline. When ctx ends first, it closes the
// remaining connections with reason drain and waits for their goroutines (handlers must
// return once their connection is closed). Call it after Serve returned, and after the
// handlers were told to stop keeping connections open (their GoAway), so that a
// connection that finishes a request later closes itself.
func (l *Listener) Drain(ctx context.Context) {
	l.closeIdle()
	if l.waitIdle(ctx.Done()) {
		return
	}
	l.mu.Lock()
	l.forced = true
	open := make([]*Conn, 0, len(l.conns))
	for c := range l.conns {
		open = append(open, c)
	}
	l.mu.Unlock()
	if len(open) > 0 {
		l.log.Info("drain deadline reached; closing connections", zap.Int("connections", len(open)))
	}
	for _, c := range open {
		c.Close(CloseDrain)
	}
	if n := l.rawLive.Load(); n > 0 {
		l.log.Info("drain deadline reached; closing event-loop connections", zap.Int64("connections", n))
		for i, lp := range l.cfg.Loops.Loops() {
			if i < len(l.rawLists) {
				lp.Post(func() { l.rawLists[i].forceClose(CloseDrain) })
			}
		}
	}
	l.waitIdle(nil)
}

// closeIdle closes the connections between requests (see Drain).
func (l *Listener) closeIdle() {
	l.mu.Lock()
	open := make([]*Conn, 0, len(l.conns))
	for c := range l.conns {
		open = append(open, c)
	}
	l.mu.Unlock()
	n := 0
	for _, c := range open {
		if c.closeIfIdle(CloseDrain) {
			n++
		}
	}
	if n > 0 {
		l.log.Info("draining: closed connections between requests", zap.Int("connections", n))
	}
	if l.rawLive.Load() > 0 {
		var wg sync.WaitGroup
		for i, lp := range l.cfg.Loops.Loops() {
			if i < len(l.rawLists) {
				wg.Add(1)
				if !lp.Post(func() { l.rawLists[i].closeIdle(CloseDrain); wg.Done() }) {
					wg.Done() // the loop is gone, and closed its connections
				}
			}
		}
		wg.Wait()
	}
}

// waitIdle waits until no connection goroutine runs (true) or stop is closed (false).
func (l *Listener) waitIdle(stop <-chan struct{}) bool {
	for {
		l.mu.Lock()
		if l.running == 0 && l.rawLive.Load() == 0 {
			l.mu.Unlock()
			return true
		}
		if l.zero == nil {
			l.zero = make(chan struct{})
		}
		z := l.zero
		l.mu.Unlock()
		select {
		case <-z:
		case <-stop:
			return false
		}
	}
}

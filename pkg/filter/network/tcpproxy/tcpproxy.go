// Package tcpproxy is the tcp_proxy network filter: it picks a cluster for each accepted
// connection (MOSN's routes by source/destination address and port, else the filter's
// cluster), dials a host through the cluster (connect timeout, next host on failure) and
// carries bytes both ways until both sides have finished.
//
// Data path. Each direction waits for its source to become readable without holding any
// buffer (a RawConn read callback), then reads once, plain, into a pooled 16 KiB buffer and
// writes it on. A read that fills the buffer means a burst: the bytes already queued on the
// source socket (SIOCINQ) then go through net.TCPConn.ReadFrom, which the Go runtime turns
// into splice(2), at most 1 MiB per call, so bulk bytes never enter user space. Because a
// splice call is only asked for bytes that are already there, it never blocks waiting for
// input, and an idle session holds no buffer and no splice pipe: two sockets, nothing else.
//
// A clean EOF on one side is passed on as a half-close (CloseWrite) and the other direction
// keeps flowing; the session ends when both directions have seen EOF. An error on either
// side (a reset, a failed write) resets both connections (SO_LINGER 0), so a peer never
// mistakes a broken stream for a complete one.
//
// Idle timeout: every read burst and every splice call stamps the session's activity; one
// timer per session fires idle_timeout after the last stamp and re-arms itself while there
// was activity. Bytes still being written to a peer that reads slowly count when the write
// (at most 16 KiB, or 1 MiB spliced) completes.
//
// The upstream's time to first byte — from the client's first bytes (or from connect, when
// the upstream speaks first) to the upstream's first bytes — is the session's latency
// sample for LB_PEAK_EWMA, reported through the cluster's done func when the session ends.
package tcpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
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
const Name = "tcp_proxy"

// DefaultIdleTimeout closes a session with no bytes either way for this long.
const DefaultIdleTimeout = config.DefaultTCPProxyIdleTimeout

const (
	readSize  = 16 << 10 // plain read per burst; a read that fills it hands the rest to splice
	spliceMax = 1 << 20  // bytes per ReadFrom call (Go's splice pipe size): bounds how stale counters and activity get
)

// pumpBudget is how many bytes one direction of an event-loop session moves per turn
// before the loop serves its other sockets (4 splices of a full pipe). A variable for tests.
var pumpBudget = 4 * spliceMax

// Filter is a built tcp_proxy. It is immutable and shared by all connections of a listener.
type Filter struct {
	clusters *cluster.Manager
	pool     *buffer.Pool
	routes   []route
	needDst  bool // a route matches on destination addresses or ports
	idle     time.Duration
	attempts int // max_connect_attempts of the filter; 0: the cluster's
	listener string
	log      *zap.Logger
	stats    *statsCache
	warns    log.Throttle // setup failures: one warning a second, the rest at debug
}

var _ network.Handler = (*Filter)(nil)

type route struct {
	cluster  string
	src, dst []netip.Prefix
	srcPorts portRanges
	dstPorts portRanges
}

// Factory builds a tcp_proxy from its raw config.
func Factory(raw config.RawMessage, d filter.Deps) (filter.NetworkFilter, error) {
	var c config.TCPProxyConfig
	if len(raw) > 0 {
		if err := config.Unmarshal(raw, &c); err != nil {
			return nil, fmt.Errorf("tcp_proxy: %w", err)
		}
	}
	f := &Filter{
		clusters: d.Clusters,
		pool:     d.Pool,
		idle:     c.IdleTimeout.Or(DefaultIdleTimeout),
		attempts: int(c.MaxConnectAttempts), // capped by the cluster (Attempts.Limit)
		log:      d.Log,
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
	f.stats = newStatsCache(d, f.listener)
	for i, r := range c.Routes {
		rt, err := buildRoute(r)
		if err != nil {
			return nil, fmt.Errorf("tcp_proxy: routes[%d]: %w", i, err)
		}
		f.routes = append(f.routes, rt)
		f.needDst = f.needDst || len(rt.dst) > 0 || len(rt.dstPorts) > 0
	}
	if c.Cluster != "" {
		f.routes = append(f.routes, route{cluster: c.Cluster})
	}
	if len(f.routes) == 0 {
		return nil, errors.New("tcp_proxy: cluster: neither cluster nor routes given")
	}
	if f.clusters == nil {
		return nil, errors.New("tcp_proxy: no cluster manager")
	}
	f.openSeries()
	return f, nil
}

func buildRoute(r config.TCPRouteCfg) (route, error) {
	rt := route{cluster: r.Cluster}
	if r.Cluster == "" {
		return rt, errors.New("cluster: empty")
	}
	for i, a := range r.SourceAddrs {
		p, err := prefix(a)
		if err != nil {
			return rt, fmt.Errorf("source_addrs[%d]: %w", i, err)
		}
		rt.src = append(rt.src, p)
	}
	for i, a := range r.DestinationAddrs {
		p, err := prefix(a)
		if err != nil {
			return rt, fmt.Errorf("destination_addrs[%d]: %w", i, err)
		}
		rt.dst = append(rt.dst, p)
	}
	var err error
	if rt.srcPorts, err = parsePorts(r.SourcePort); err != nil {
		return rt, fmt.Errorf("source_port: %w", err)
	}
	if rt.dstPorts, err = parsePorts(r.DestinationPort); err != nil {
		return rt, fmt.Errorf("destination_port: %w", err)
	}
	return rt, nil
}

func prefix(a config.CIDRCfg) (netip.Prefix, error) {
	ip, err := netip.ParseAddr(a.Address)
	if err != nil {
		return netip.Prefix{}, err
	}
	ip = ip.Unmap()
	bits := int(a.Length)
	if bits == 0 && a.Length == 0 {
		bits = ip.BitLen() // MOSN: a missing length means the single address
	}
	return ip.Prefix(bits)
}

// portRanges is MOSN's port list: "80", "80-90", "80,443,8000-8080". Empty matches all.
type portRanges [][2]uint16

func parsePorts(s string) (portRanges, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out portRanges
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		if err != nil {
			return nil, fmt.Errorf("bad port %q", part)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 16); err != nil || b < a {
				return nil, fmt.Errorf("bad port range %q", part)
			}
		}
		out = append(out, [2]uint16{uint16(a), uint16(b)})
	}
	return out, nil
}

func (p portRanges) match(port uint16) bool {
	if len(p) == 0 {
		return true
	}
	for _, r := range p {
		if port >= r[0] && port <= r[1] {
			return true
		}
	}
	return false
}

func matchAddr(ps []netip.Prefix, a netip.Addr) bool {
	if len(ps) == 0 {
		return true
	}
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// pickCluster returns the cluster of the first route that matches the connection.
func (f *Filter) pickCluster(c *network.Conn) string {
	dst, ok := c.OriginalDst()
	if !ok {
		dst = addrPort(c.LocalAddr())
	}
	return f.route(addrPort(c.RemoteAddr()), dst)
}

// route returns the cluster of the first route that matches a connection from src to
// dst; "" when none does. dst is only read when a route names destinations (needDst).
func (f *Filter) route(src, dst netip.AddrPort) string {
	for i := range f.routes {
		r := &f.routes[i]
		if matchAddr(r.src, src.Addr()) && matchAddr(r.dst, dst.Addr()) &&
			r.srcPorts.match(src.Port()) && r.dstPorts.match(dst.Port()) {
			return r.cluster
		}
	}
	return ""
}

// Close reasons of the downstream connection, besides the network package's own.
const (
	reasonNoRoute        network.CloseReason = "no_route"
	reasonNoCluster      network.CloseReason = "no_cluster"
	reasonConnectFailed  network.CloseReason = "upstream_connect_failed"
	reasonUpstreamReset  network.CloseReason = "upstream_reset"
	reasonDownstreamRset network.CloseReason = "downstream_reset"
)

// ServeConn proxies one downstream connection. It returns when both directions are done,
// either side failed, the idle timeout fired, or ctx ended (the connection was closed, for
// instance by a forced drain).
func (f *Filter) ServeConn(ctx context.Context, c *network.Conn) {
	name := f.pickCluster(c)
	if name == "" {
		f.warn("tcp_proxy: no route", zap.Stringer(log.FieldRemote, c.RemoteAddr()),
			zap.Stringer("local", c.LocalAddr()))
		c.Close(reasonNoRoute)
		return
	}
	cl, ok := f.clusters.Get(name)
	if !ok {
		f.warn("tcp_proxy: cluster not found", zap.String(log.FieldCluster, name))
		c.Close(reasonNoCluster)
		return
	}
	// The hash key is the client's IP (Envoy's source_ip hash policy): LB_MAGLEV keeps a
	// client on one host; other balancers ignore it.
	// The session is allocated before the dial and carries the balancer request: one
	// allocation for both (the request escapes through the picker interface).
	s := &session{f: f, c: c, down: c.Raw()}
	s.lbReq = lb.Request{HashKey: lb.HashIP(addrPort(c.RemoteAddr()).Addr()), HasHash: true}
	if od, ok := c.OriginalDst(); ok {
		s.lbReq.OriginalDst = od
	}
	dctx, watch := ctx, (*leaveWatch)(nil)
	if cl.HealthyHosts() == 0 { // the pick will wait: watch the client meanwhile
		dctx, watch = watchLeave(ctx, c.Raw())
	}
	up, host, done, err := cl.DialLimit(dctx, &s.lbReq, nil, f.attempts)
	if err == nil {
		host.ReportResult(true) // the connect is tcp_proxy's result for outlier detection
	}
	var held []byte
	if watch != nil {
		var left bool
		if left, held = watch.stop(); left {
			if err == nil { // connected just as the client left
				up.Close()
				done(lb.DoneInfo{})
			}
			if ce := f.log.Check(zap.DebugLevel, "tcp_proxy: client left while the session waited for a host"); ce != nil {
				ce.Write(zap.String(log.FieldListener, f.listener), zap.String(log.FieldCluster, name))
			}
			c.Close(reasonDownstreamRset)
			return
		}
	}
	if err != nil {
		if errors.Is(err, cluster.ErrOverflow) {
			// The cluster's max_connections breaker is open; the cluster counted it
			// (mosnlite_upstream_overflow_total).
			f.warn("tcp_proxy: cluster max_connections reached", zap.String(log.FieldCluster, name))
			c.Close(network.CloseOverflow)
			return
		}
		if ctx.Err() == nil { // not our own connection closing
			f.warn("tcp_proxy: upstream connect failed", zap.String(log.FieldCluster, name), zap.Error(err))
		}
		c.Close(reasonConnectFailed)
		return
	}
	st := f.stats.get(name)
	st.sessions.Inc()
	if len(held) > 0 { // what the client sent while the session waited goes first
		if _, werr := up.Write(held); werr != nil {
			up.Close()
			done(lb.DoneInfo{Err: werr})
			c.Close(reasonUpstreamReset)
			return
		}
		st.rx.Add(float64(len(held)))
	}
	s.up = up
	s.run(ctx, st)
	reason, upErr := s.result()
	done(lb.DoneInfo{Latency: time.Duration(s.ttfb.Load()), Err: upErr})
	c.Close(reason)
	if ce := f.log.Check(zap.DebugLevel, "tcp_proxy session ended"); ce != nil {
		ce.Write(zap.String(log.FieldListener, f.listener), zap.String(log.FieldCluster, name),
			zap.String(log.FieldHost, host.Addr()), zap.String(log.FieldReason, string(reason)),
			zap.Duration("first_byte", time.Duration(s.ttfb.Load())))
	}
}

// warn logs a setup failure at warn level, at most once a second per filter (a failing
// upstream under load would otherwise log once per connection); the rest go to debug.
func (f *Filter) warn(msg string, fields ...zap.Field) {
	f.warns.Log(f.log, zap.WarnLevel, msg, append(fields, zap.String(log.FieldListener, f.listener))...)
}

// How a session ended; the first cause recorded wins.
const (
	endRunning int32 = iota
	endDone          // both directions saw EOF
	endIdle          // idle_timeout
	endClosed        // ctx ended: the downstream connection was closed (drain)
	endUpstreamReset
	endDownstreamReset
	endUpstreamError
	endDownstreamError
	endDownstreamSendTimeout // the client took nothing for the listener's send_timeout
	endError                 // a splice failed and neither socket shows which side broke
)

var endReasons = [...]network.CloseReason{
	endRunning:         network.CloseLocal,
	endDone:            network.CloseRemote,
	endIdle:            network.CloseIdleTimeout,
	endClosed:          network.CloseDrain,
	endUpstreamReset:   reasonUpstreamReset,
	endDownstreamReset: reasonDownstreamRset,
	endUpstreamError:   network.CloseError,
	endDownstreamError: network.CloseError,
	endError:           network.CloseError,

	endDownstreamSendTimeout: network.CloseSendTimeout,
}

// errUpstream is the DoneInfo error of a session the upstream broke.
var errUpstream = errors.New("tcp_proxy: upstream connection failed mid-session")

// session is one proxied connection pair.
type session struct {
	f        *Filter
	c        *network.Conn
	down, up net.Conn
	idle     time.Duration
	start    time.Time    // upstream connected
	last     atomic.Int64 // ns since start of the last activity either way
	req      atomic.Int64 // ns since start when the client's first bytes went upstream; 0: not yet
	ttfb     atomic.Int64 // the upstream's time to first byte in ns; 0: no sample
	end      atomic.Int32 // endRunning until the first cause is recorded
	eofs     atomic.Int32 // directions that ended with a clean EOF
	timer    *time.Timer
	wg       sync.WaitGroup // the client→upstream half's goroutine
	halves   [2]half        // client→upstream, upstream→client
	lbReq    lb.Request     // the balancer request of the dial
}

// run copies both ways until both directions finished or the session was aborted, and
// closes the upstream socket (the caller closes the downstream Conn, which closes down:
// closing it here too would only allocate the second Close's error).
func (s *session) run(ctx context.Context, st *clusterStats) {
	s.start = time.Now()
	s.idle = s.f.idle
	s.halves[0].init(s, s.down, s.up, st.rx, false)
	s.halves[1].init(s, s.up, s.down, st.tx, true)
	if s.idle > 0 {
		// Created far in the future and then reset, so onIdle cannot see s.timer unset.
		s.timer = time.AfterFunc(time.Hour<<10, s.onIdle)
		s.timer.Reset(s.idle)
	}
	// The session ends when the downstream connection closes (a forced drain). The
	// listener's context ends exactly then, so the Conn's notifier is enough (no allocation);
	// a context from elsewhere is watched too.
	if !s.c.NotifyClose(s) {
		s.abort(endClosed, false)
	}
	var stop func() bool
	if !s.c.OwnsContext(ctx) {
		stop = context.AfterFunc(ctx, s.ConnClosed)
	}
	// The client→upstream half gets the extra goroutine and the upstream→client half runs
	// here: a client that closes first (a request, its reply, close) ends its half first,
	// so that goroutine just exits and the wait below does not park.
	s.wg.Add(1)
	go s.runClientHalf()
	s.halves[1].run()
	s.wg.Wait()
	s.end.CompareAndSwap(endRunning, endDone) // before stopping the timer: see rearm
	s.c.NotifyClose(nil)
	if stop != nil {
		stop()
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	s.up.Close()
}

func (s *session) runClientHalf() {
	defer s.wg.Done()
	s.halves[0].run()
}

// result is the downstream close reason and, when the upstream broke, the error for the
// balancer.
func (s *session) result() (network.CloseReason, error) {
	e := s.end.Load()
	var err error
	if e == endUpstreamReset || e == endUpstreamError {
		err = errUpstream
	}
	return endReasons[e], err
}

// since is the monotonic time since the session started, in ns.
func (s *session) since() int64 { return int64(time.Since(s.start)) }

// abort records why the session ends (first cause wins) and closes both sockets; with
// reset, each is closed with an RST (SO_LINGER 0) so its peer sees the stream broken.
func (s *session) abort(why int32, reset bool) {
	if !s.end.CompareAndSwap(endRunning, why) {
		return
	}
	if reset {
		lingerZero(s.down)
		lingerZero(s.up)
	}
	s.down.Close()
	s.up.Close()
}

// ConnClosed aborts the session when the downstream connection was closed (or ctx ended):
// network.CloseNotifier.
func (s *session) ConnClosed() { s.abort(endClosed, false) }

// onIdle runs when the idle timer fires: abort if nothing moved for the idle timeout,
// otherwise re-arm for the rest of the period.
func (s *session) onIdle() {
	if s.end.Load() != endRunning {
		return
	}
	quiet := time.Duration(s.since() - s.last.Load())
	if quiet < s.idle {
		s.rearm(s.idle - quiet)
		return
	}
	// Bytes queued for a direction that waits to read mean its goroutine has not run yet
	// (a loaded machine), not idleness. A direction blocked writing does not count: a peer
	// that stopped reading is what the timeout is for.
	for i := range s.halves {
		if h := &s.halves[i]; h.waiting.Load() && h.rc != nil && inputQueued(h.rc) {
			s.rearm(s.idle)
			return
		}
	}
	s.abort(endIdle, false)
}

// rearm resets the idle timer, unless the session ended meanwhile: run records the end
// before it stops the timer, so a reset racing that stop is undone here rather than
// keeping the finished session referenced for another idle period.
func (s *session) rearm(d time.Duration) {
	s.timer.Reset(d)
	if s.end.Load() != endRunning {
		s.timer.Stop()
	}
}

// moved stamps activity; first marks a direction's first bytes (for the latency sample).
func (s *session) moved(fromUp, first bool) {
	now := s.since()
	s.last.Store(now)
	s.c.Touch()
	if !first {
		return
	}
	if !fromUp {
		s.req.CompareAndSwap(0, max(now, 1))
		return
	}
	lat := now
	if from := s.req.Load(); from > 0 && from < now {
		lat = now - from // client spoke first: time from its request to the answer
	}
	s.ttfb.Store(max(lat, 1))
}

func lingerZero(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
}

// half is one direction of a session: bytes read from src are written to dst.
type half struct {
	s        *session
	src, dst net.Conn
	bytes    prometheus.Counter
	fromUp   bool        // src is the upstream
	first    bool        // no bytes moved yet
	waiting  atomic.Bool // in read: waiting for input, not writing
	// Waiting for input without a buffer (unix): src's RawConn and the read callback,
	// bound once, with its results.
	rc     syscall.RawConn
	readFn func(fd uintptr) bool
	rb     *[]byte
	rn     int
	rerr   error
	// Splicing what is queued (linux, TCP to TCP); inqFn is bound on the first burst.
	rf    io.ReaderFrom
	lr    io.LimitedReader
	inqFn func(fd uintptr)
	inq   int
}

func (h *half) init(s *session, src, dst net.Conn, bytes prometheus.Counter, fromUp bool) {
	h.s, h.src, h.dst, h.bytes, h.fromUp, h.first = s, src, dst, bytes, fromUp, true
	h.setupRaw()
	h.setupSplice()
}

// Which socket an error came from.
type side uint8

const (
	sideUnknown side = iota
	sideSrc
	sideDst
)

// run copies until EOF (then passes the half-close on) or an error (then aborts the
// session with resets).
func (h *half) run() {
	from, err := h.copy()
	s := h.s
	if err == nil {
		if s.eofs.Add(1) == 2 {
			// The other direction already finished: the session closes both sockets
			// next, and close sends this FIN too. Saves a shutdown(2) per connection.
			return
		}
		cw, ok := h.dst.(interface{ CloseWrite() error })
		switch {
		case !ok: // cannot half-close: end the session as if both sides had finished
			s.abort(endDone, false)
		case cw.CloseWrite() != nil:
			s.abort(h.classify(err, sideDst), true)
		}
		return
	}
	if s.end.Load() != endRunning {
		return // the session was aborted; this is the consequence
	}
	why := h.classify(err, from)
	if ce := s.f.log.Check(zap.DebugLevel, "tcp_proxy copy failed"); ce != nil {
		ce.Write(zap.Bool("from_upstream", h.fromUp), zap.Error(err))
	}
	s.abort(why, true)
}

// classify names the side that broke.
func (h *half) classify(err error, from side) int32 {
	var broken net.Conn
	switch from {
	case sideSrc:
		broken = h.src
	case sideDst:
		broken = h.dst
	default: // a splice failed: a socket the peer reset is closed in the kernel
		switch {
		case peerReset(h.s.up):
			broken = h.s.up
		case peerReset(h.s.down):
			broken = h.s.down
		default:
			return endError
		}
	}
	timedOut := network.SendTimedOut(err)
	reset := errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || from == sideUnknown && !timedOut
	switch {
	case broken == h.s.up && reset:
		return endUpstreamReset
	case broken == h.s.up:
		return endUpstreamError
	case reset:
		return endDownstreamReset
	case timedOut:
		return endDownstreamSendTimeout
	}
	return endDownstreamError
}

// copy moves bytes until src's EOF (nil) or an error, and says which side failed.
func (h *half) copy() (side, error) {
	pool := h.s.f.pool
	for {
		b, n, err := h.read()
		if n > 0 {
			h.s.moved(h.fromUp, h.first)
			h.first = false
			_, werr := h.dst.Write((*b)[:n])
			full := n == len(*b)
			pool.Put(b)
			if werr != nil {
				return sideDst, werr
			}
			h.bytes.Add(float64(n))
			if full && h.rf != nil {
				if err := h.spliceQueued(); err != nil {
					return sideUnknown, err
				}
			}
		} else if b != nil {
			pool.Put(b)
		}
		if err == io.EOF {
			return sideUnknown, nil
		}
		if err != nil {
			return sideSrc, err
		}
	}
}

// read waits for src to be readable and reads once into a pooled buffer. With a RawConn no
// buffer is held while waiting.
func (h *half) read() (*[]byte, int, error) {
	if h.rc == nil {
		b := h.s.f.pool.Get(readSize)
		n, err := h.src.Read(*b)
		return b, n, err
	}
	h.rb, h.rn, h.rerr = nil, 0, nil
	h.waiting.Store(true)
	err := h.rc.Read(h.readFn)
	h.waiting.Store(false)
	if err != nil {
		return nil, 0, err
	}
	return h.rb, h.rn, h.rerr
}

// spliceQueued moves the bytes queued on src with ReadFrom (splice), a MiB at a time,
// until the queue is empty. Asking only for queued bytes means it never waits for input.
func (h *half) spliceQueued() error {
	for {
		n := h.queued()
		if n <= 0 {
			return nil
		}
		h.lr.R, h.lr.N = h.src, int64(min(n, spliceMax))
		m, err := h.rf.ReadFrom(&h.lr)
		if m > 0 {
			h.s.moved(h.fromUp, false)
			h.bytes.Add(float64(m))
		}
		if err != nil {
			return err
		}
		if m == 0 {
			return nil // EOF raced in: read reports it
		}
	}
}

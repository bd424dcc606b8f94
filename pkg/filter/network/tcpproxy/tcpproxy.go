// Package tcpproxy is the tcp_proxy network filter: it picks a cluster for each accepted
// connection (MOSN's routes by source/destination address and port, else the filter's
// cluster), dials a host through the cluster (connect timeout, next host on failure) and
// carries bytes both ways until both sides have finished.
//
// Data path: the first read of each direction is a plain read into a pooled buffer (it
// measures the upstream's time to first byte for LB_PEAK_EWMA and is cheaper than a splice
// for small exchanges); everything after goes through net.TCPConn.ReadFrom, which the Go
// runtime turns into splice(2) between the two sockets, so bulk bytes never enter user
// space. A half-close on one side is passed on (CloseWrite) and the other direction keeps
// flowing. The idle timeout is coarse: a read deadline that, when it fires, re-arms itself
// if either direction moved bytes since it was set.
package tcpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
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
	firstReadSize = 16 << 10 // plain read before switching to splice
	spliceChunk   = 4 << 20  // bytes per ReadFrom call: bounds how stale counters and activity get
)

// Filter is a built tcp_proxy. It is immutable and shared by all connections of a listener.
type Filter struct {
	clusters *cluster.Manager
	pool     *buffer.Pool
	routes   []route
	idle     time.Duration
	listener string
	log      *zap.Logger
	stats    *statsCache
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

// pickCluster returns the first route that matches the connection.
func (f *Filter) pickCluster(c *network.Conn) string {
	src := addrPort(c.RemoteAddr())
	dst, ok := c.OriginalDst()
	if !ok {
		dst = addrPort(c.LocalAddr())
	}
	for i := range f.routes {
		r := &f.routes[i]
		if matchAddr(r.src, src.Addr()) && matchAddr(r.dst, dst.Addr()) &&
			r.srcPorts.match(src.Port()) && r.dstPorts.match(dst.Port()) {
			return r.cluster
		}
	}
	return ""
}

// ServeConn proxies one downstream connection. It returns when both directions are done,
// the idle timeout fired, or ctx ended (listener drained).
func (f *Filter) ServeConn(ctx context.Context, c *network.Conn) {
	name := f.pickCluster(c)
	if name == "" {
		f.log.Debug("no tcp_proxy route matches", zap.String(log.FieldListener, f.listener),
			zap.Stringer(log.FieldRemote, c.RemoteAddr()))
		c.Close(network.CloseReason("no_route"))
		return
	}
	cl, ok := f.clusters.Get(name)
	if !ok {
		f.log.Warn("tcp_proxy cluster not found", zap.String(log.FieldCluster, name))
		c.Close(network.CloseReason("no_cluster"))
		return
	}
	// The hash key is the client's IP (Envoy's source_ip hash policy): LB_MAGLEV keeps a
	// client on one host; other balancers ignore it.
	req := lb.Request{HashKey: hashAddr(addrPort(c.RemoteAddr()).Addr()), HasHash: true}
	if od, ok := c.OriginalDst(); ok {
		req.OriginalDst = od
	}
	up, host, done, err := cl.Dial(ctx, &req)
	if err != nil {
		f.log.Warn("tcp_proxy upstream connect failed", zap.String(log.FieldListener, f.listener),
			zap.String(log.FieldCluster, name), zap.Error(err))
		c.Close(network.CloseReason("upstream_connect_failed"))
		return
	}
	st := f.stats.get(name)
	st.sessions.Inc()
	s := session{
		f:    f,
		down: c.Raw(),
		up:   up,
		st:   st,
		idle: f.idle,
	}
	latency := s.run(ctx)
	done(lb.DoneInfo{Latency: latency})
	c.Close(network.CloseReason("done"))
	if ce := f.log.Check(zap.DebugLevel, "tcp_proxy session ended"); ce != nil {
		ce.Write(zap.String(log.FieldCluster, name), zap.String(log.FieldHost, host.Addr()),
			zap.Duration("first_byte", latency))
	}
}

// session is one proxied connection pair.
type session struct {
	f        *Filter
	down, up net.Conn
	st       *clusterStats
	idle     time.Duration
	// lastActive is the coarse time (unix nanos) either direction last moved bytes.
	lastActive atomic.Int64
	start      time.Time
	firstByte  atomic.Int64 // nanoseconds from start to the upstream's first byte; 0 none
	aborted    atomic.Bool
}

// run copies both ways and returns the upstream's time to first byte (0 if none).
func (s *session) run(ctx context.Context) time.Duration {
	s.start = time.Now()
	s.lastActive.Store(s.start.UnixNano())
	stop := context.AfterFunc(ctx, func() { s.abort() })
	defer stop()

	errc := make(chan struct{})
	go func() {
		s.pipe(s.up, s.down, s.st.rx, false)
		close(errc)
	}()
	s.pipe(s.down, s.up, s.st.tx, true)
	<-errc
	s.down.Close()
	s.up.Close()
	return time.Duration(s.firstByte.Load())
}

func (s *session) abort() {
	s.aborted.Store(true)
	s.down.Close()
	s.up.Close()
}

// pipe copies src to dst until EOF (then half-closes dst) or an error (then aborts both).
// fromUpstream marks the direction whose first byte is timed.
func (s *session) pipe(dst, src net.Conn, bytes prometheus.Counter, fromUpstream bool) {
	if s.idle > 0 {
		src.SetReadDeadline(time.Now().Add(s.idle))
	}
	// First read: plain, into a pooled buffer.
	bp := s.f.pool.Get(firstReadSize)
	n, err := s.readActive(src, *bp)
	if n > 0 {
		if fromUpstream {
			s.firstByte.Store(int64(time.Since(s.start)))
		}
		_, werr := dst.Write((*bp)[:n])
		bytes.Add(float64(n))
		if werr != nil {
			err = werr
		}
	}
	s.f.pool.Put(bp)
	if err == nil {
		err = s.splice(dst, src, bytes)
	}
	if err == io.EOF {
		err = nil
	}
	if err != nil {
		if !s.aborted.Load() && !isClosed(err) {
			if ce := s.f.log.Check(zap.DebugLevel, "tcp_proxy copy ended with error"); ce != nil {
				ce.Write(zap.Error(err))
			}
		}
		s.abort()
		return
	}
	// Clean EOF: pass the half-close on; the other direction keeps going.
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() != nil {
			s.abort()
		}
	} else {
		s.abort()
	}
}

// readActive reads once, retrying across idle-deadline expiries while the session is active.
func (s *session) readActive(src net.Conn, p []byte) (int, error) {
	for {
		n, err := src.Read(p)
		if n > 0 {
			s.touch()
		}
		if err != nil && s.keepGoing(src, err, n) {
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

// splice moves bytes with dst.ReadFrom, which uses splice(2) for TCP to TCP.
func (s *session) splice(dst, src net.Conn, bytes prometheus.Counter) error {
	rf, ok := dst.(io.ReaderFrom)
	lr := &io.LimitedReader{R: src}
	for {
		lr.N = spliceChunk
		var n int64
		var err error
		if ok {
			n, err = rf.ReadFrom(lr)
		} else {
			n, err = io.Copy(dst, lr)
		}
		if n > 0 {
			s.touch()
			bytes.Add(float64(n))
		}
		if err != nil {
			if s.keepGoing(src, err, int(n)) {
				continue
			}
			return err
		}
		if lr.N > 0 { // stopped before the chunk limit without error: EOF
			return io.EOF
		}
	}
}

// touch records activity; at most one clock read per chunk or read.
func (s *session) touch() { s.lastActive.Store(time.Now().UnixNano()) }

// keepGoing reports whether err is an idle deadline that should be re-armed because the
// session moved bytes recently (in either direction).
func (s *session) keepGoing(src net.Conn, err error, n int) bool {
	if s.idle <= 0 || !errors.Is(err, os.ErrDeadlineExceeded) || s.aborted.Load() {
		return false
	}
	last := time.Unix(0, s.lastActive.Load())
	if n == 0 && time.Since(last) >= s.idle {
		return false
	}
	src.SetReadDeadline(last.Add(s.idle))
	if n > 0 {
		src.SetReadDeadline(time.Now().Add(s.idle))
	}
	return true
}

// hashAddr is FNV-1a over the 16-byte form of a; it does not allocate.
func hashAddr(a netip.Addr) uint64 {
	b := a.As16()
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded)
}

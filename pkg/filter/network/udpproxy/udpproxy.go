// Package udpproxy is the udp_proxy network filter. Each client address gets a session: a
// host picked from the cluster and a connected UDP socket to it. Datagrams from the client
// go out on that socket; datagrams coming back on it are sent to the client from the
// listener's socket. A session ends after idle_timeout with no datagram either way.
//
// Goroutines: the listener's read loop (ServePackets) and one reader per session. The
// session table is touched only when a session is created or ends, never per datagram.
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
}

var _ network.PacketHandler = (*Filter)(nil)

type stats struct {
	rxDgrams, txDgrams, rxBytes, txBytes prometheus.Counter
	sessions                             prometheus.Counter
	active                               prometheus.Gauge
	dropLimit, dropNoHost, dropUpstream  prometheus.Counter
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
		}
	} else {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "discard"})
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "discard"})
		f.m = stats{c, c, c, c, c, g, c, c, c}
	}
	return f, nil
}

// session is one client's flow.
type session struct {
	client   netip.AddrPort
	up       net.Conn
	done     func(lb.DoneInfo)
	last     atomic.Int64 // unix nanos of the last datagram either way
	start    time.Time
	firstRTT atomic.Int64
}

// ServePackets runs the listener's read loop until ctx ends or pc fails.
func (f *Filter) ServePackets(ctx context.Context, pc net.PacketConn) error {
	var (
		mu       sync.Mutex
		sessions = map[netip.AddrPort]*session{}
		wg       sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Now()) })
	defer func() {
		stop()
		mu.Lock()
		for _, s := range sessions {
			s.up.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	end := func(s *session) {
		mu.Lock()
		if sessions[s.client] == s {
			delete(sessions, s.client)
		}
		mu.Unlock()
		s.up.Close()
		s.done(lb.DoneInfo{Latency: time.Duration(s.firstRTT.Load())})
		f.m.active.Dec()
	}

	bp := f.pool.Get(maxDatagram)
	defer f.pool.Put(bp)
	buf := *bp
	udp, _ := pc.(*net.UDPConn)
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
		now := time.Now().UnixNano()
		mu.Lock()
		s := sessions[client]
		full := s == nil && len(sessions) >= f.maxSessions
		mu.Unlock()
		if full {
			f.m.dropLimit.Inc()
			continue
		}
		if s == nil {
			s = f.newSession(ctx, client)
			if s == nil {
				continue
			}
			mu.Lock()
			sessions[client] = s
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				f.replyLoop(ctx, pc, s)
				end(s)
			}()
		}
		s.last.Store(now)
		if _, err := s.up.Write(buf[:n]); err != nil {
			// ECONNREFUSED from an earlier ICMP is reported here; the datagram is lost, as
			// UDP allows, and the session stays until idle.
			f.m.dropUpstream.Inc()
			continue
		}
		f.m.rxDgrams.Inc()
		f.m.rxBytes.Add(float64(n))
	}
}

func (f *Filter) newSession(ctx context.Context, client netip.AddrPort) *session {
	cl, ok := f.clusters.Get(f.cluster)
	if !ok {
		f.m.dropNoHost.Inc()
		return nil
	}
	h, done, err := cl.Pick(ctx, &lb.Request{})
	if err != nil {
		f.m.dropNoHost.Inc()
		if ce := f.log.Check(zap.DebugLevel, "udp_proxy: no host"); ce != nil {
			ce.Write(zap.String(log.FieldCluster, f.cluster), zap.Error(err))
		}
		return nil
	}
	up, err := f.dial(ctx, "udp", h.Addr())
	if err != nil {
		done(lb.DoneInfo{Err: err})
		f.m.dropNoHost.Inc()
		f.log.Warn("udp_proxy: dial upstream", zap.String(log.FieldHost, h.Addr()), zap.Error(err))
		return nil
	}
	f.m.sessions.Inc()
	f.m.active.Inc()
	return &session{client: client, up: up, done: done, start: time.Now()}
}

// replyLoop carries the upstream's datagrams back to the client until the session is idle
// for f.idle, the upstream socket fails, or ctx ends.
func (f *Filter) replyLoop(ctx context.Context, pc net.PacketConn, s *session) {
	bp := f.pool.Get(maxDatagram)
	defer f.pool.Put(bp)
	buf := *bp
	udp, _ := pc.(*net.UDPConn)
	s.up.SetReadDeadline(time.Now().Add(f.idle))
	for {
		n, err := s.up.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				last := time.Unix(0, s.last.Load())
				if time.Since(last) < f.idle {
					s.up.SetReadDeadline(last.Add(f.idle)) // re-arm: the client was active
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
		s.last.Store(time.Now().UnixNano())
		if s.firstRTT.Load() == 0 {
			s.firstRTT.Store(int64(time.Since(s.start)))
		}
		if udp != nil {
			_, err = udp.WriteToUDPAddrPort(buf[:n], s.client)
		} else {
			_, err = pc.WriteTo(buf[:n], net.UDPAddrFromAddrPort(s.client))
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		f.m.txDgrams.Inc()
		f.m.txBytes.Add(float64(n))
	}
}

// Package proxy forwards HTTP/1 requests to upstream clusters: the per-connection driver
// of the `proxy` network filter (docs/l7-plan.md). Everything for a downstream
// connection runs on that connection's goroutine: parse a head, route, pick a host, take
// a ping-pong upstream connection, forward the head and the body as it arrives, read the
// response head and body from the upstream on the same goroutine and write them
// downstream; only then is the next pipelined head parsed, so responses stay in order.
// On Linux the common HTTP/1 request is served on an event loop instead, with no
// goroutine per connection (loop_linux.go); a connection whose request needs more moves
// to the goroutine path.
package proxy

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/stream/http1"
	h2stream "github.com/mosnlite/mosnlite/pkg/stream/http2"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
	"github.com/mosnlite/mosnlite/pkg/upstream/connpool"
	"github.com/mosnlite/mosnlite/pkg/upstream/lb"
)

// Defaults for Config's zero fields.
const (
	DefaultMaxIdlePerHost = 64
	DefaultIdleTimeout    = 90 * time.Second
	readSize              = 16 << 10
)

// Config configures a Proxy.
type Config struct {
	// Overloaded, when set, is asked as each request starts: while it reports true the
	// request is answered 503 "overloaded" and its connection closed (overload.Memory).
	Overloaded func() bool
	Listener   string          // listener name, for metrics and logs
	Downstream stream.Protocol // HTTP1 or Auto; any other protocol closes every connection
	Upstream   stream.Protocol // proxy-level upstream_protocol ("": same as downstream); routes may override
	Routers    *router.Tables  // looked up per request, so table swaps apply at once
	RouterName string          // the router_config_name the proxy matches in
	Clusters   *cluster.Manager
	Pool       *buffer.Pool
	Metrics    *metrics.Set // nil: none
	Log        *zap.Logger  // nil: none
	Limits     http1.Limits

	// StreamFilters run on every request (nil: none). AccessLog receives a line per
	// request (nil: none); the Proxy owns it and closes it in Close.
	StreamFilters *filter.StreamChain
	AccessLog     *accesslog.Logs

	MaxIdlePerHost int           // idle upstream connections kept per host; 0: default
	IdleTimeout    time.Duration // an idle upstream connection older than this is closed; 0: default

	// RequestHeaderTimeout bounds how long a started request head may stay incomplete
	// (408, connection closed); 0: DefaultRequestHeaderTimeout, negative: none.
	RequestHeaderTimeout time.Duration
	// RequestBodyTimeout bounds the wait for more of a request body: the gap between two
	// reads while the body is incomplete (nginx's client_body_timeout). On expiry the
	// upstream request is dropped and the client gets 408 (connection closed); for HTTP/2
	// clients the stream is reset. It also bounds the upstream's side of the upload: an
	// upstream that leaves the body unread that long gets the request cut (504). The
	// route timeout starts only once the request is in. 0: DefaultRequestBodyTimeout,
	// negative: none.
	RequestBodyTimeout time.Duration

	// BufferLimit is the listener's per_connection_buffer_limit_bytes (0: the default,
	// 1 MiB): the most request body kept per request for retries and mirror copies to
	// HTTP/2 upstreams and from HTTP/2 clients. A body that outgrows it is neither
	// retried nor mirrored.
	BufferLimit int
}

// Proxy is the HTTP/1 proxy. It implements network.Handler. Close it to close the idle
// upstream connections it keeps.
type Proxy struct {
	cfg  Config
	idle *connpool.PingPong[*upConn] // idle HTTP/1 upstream connections per host
	h2up *h2stream.Pool              // multiplexed HTTP/2 upstream connections (h2*.go)
	ext  proxyExt                    // mirror workers (mirror.go)
	// loops holds the idle upstream connections of the event-loop path, one pool per
	// loop (*evloop.Loop → *loopPool; loop_linux.go), and the watcher that closes those
	// to hosts gone or down.
	loops              sync.Map
	loopWatch          sync.Once
	loopStop, loopDone chan struct{}
	loopStopOnce       sync.Once

	// draining is set by GoAway: responses close their connections, connections between
	// requests close, and upstream connections are not pooled.
	draining atomic.Bool
	// routes is the router lookup; GoAway holds the table the proxy has, for the requests
	// its draining connections still carry should a config change drop its router.
	routes router.Held

	// chunkedOff: the stream filters need the body phase for a chunked request body
	// (filter.SizedBodiesOnly), so the event loop hands such a request to a goroutine.
	chunkedOff bool

	// The listener's children counted per event, made in New: a connection that
	// outlives the listener's removal counts on them, no longer exported, instead of
	// making the deleted series again. nil: not counted.
	protoErrs protoErrs
	handoffs  [numHandoffReasons]prometheus.Counter // by reason; only when LoopCapable
}

// protoErrs holds protocol_errors_total's children by protocol: the ones the proxy
// counts, and the listener's downstream protocol when the proxy does not serve it.
type protoErrs struct{ h1, h2, auto, other prometheus.Counter }

// handoffReason is why an event loop hands an HTTP/1 connection to a goroutine
// (loop_linux.go), the reason label of http1_loop_handoffs_total.
type handoffReason uint8

const (
	noHandoff handoffReason = iota
	handoffProtocol
	handoffLargeHead
	handoffUpgrade
	handoffFilterBody
	handoffPickWait
	handoffClusterDialer
	handoffNoRoute
	handoffNoCluster
	handoffLocalAnswer
	handoffMirror
	handoffUpstreamProtocol
	numHandoffReasons
)

var handoffLabels = [numHandoffReasons]string{
	handoffProtocol:         "protocol",
	handoffLargeHead:        "large_head",
	handoffUpgrade:          "upgrade",
	handoffFilterBody:       "filter_body",
	handoffPickWait:         "pick_wait",
	handoffClusterDialer:    "cluster_dialer",
	handoffNoRoute:          "no_route",
	handoffNoCluster:        "no_cluster",
	handoffLocalAnswer:      "local_answer",
	handoffMirror:           "mirror",
	handoffUpstreamProtocol: "upstream_protocol",
}

func (r handoffReason) String() string { return handoffLabels[r] }

// New returns a Proxy.
func New(cfg Config) *Proxy {
	if cfg.MaxIdlePerHost <= 0 {
		cfg.MaxIdlePerHost = DefaultMaxIdlePerHost
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Pool == nil {
		cfg.Pool = buffer.NewPool()
	}
	idle := connpool.NewPingPong[*upConn](connpool.PingPongOptions{
		MaxIdlePerHost:  cfg.MaxIdlePerHost,
		IdleTimeout:     cfg.IdleTimeout,
		AliveCheckAfter: aliveCheckAfter,
		Stale:           staleUpConn,
		HostsChanged:    hostsChanged(cfg.Clusters),
	})
	p := &Proxy{cfg: cfg, idle: idle, h2up: newH2Pool(cfg), chunkedOff: !cfg.StreamFilters.HeadersOnly()}
	p.holdSeries()
	return p
}

// holdSeries makes the listener's children the proxy counts per event.
func (p *Proxy) holdSeries() {
	m, l := p.cfg.Metrics, p.cfg.Listener
	if m == nil {
		return
	}
	if v := m.ProtocolErrors; v != nil {
		p.protoErrs = protoErrs{
			h1:   v.WithLabelValues(l, string(stream.HTTP1)),
			h2:   v.WithLabelValues(l, string(stream.HTTP2)),
			auto: v.WithLabelValues(l, string(stream.Auto)),
		}
		switch d := p.cfg.Downstream; d {
		case stream.HTTP1, stream.HTTP2, stream.Auto, "":
		default:
			p.protoErrs.other = v.WithLabelValues(l, string(d))
		}
	}
	if v := m.HTTPLoopHandoffs; v != nil && p.LoopCapable() {
		for r := noHandoff + 1; r < numHandoffReasons; r++ {
			p.handoffs[r] = v.WithLabelValues(l, r.String())
		}
	}
}

// GoAway starts a graceful drain of the HTTP/1 connections and returns at once: from now
// on every response carries "Connection: close" and its connection closes after it (a
// client that came through a load balancer reconnects, to another instance once this one
// is out of the balancer's set), and a connection that is between requests closes at once
// when the listener drains (network.Listener.Drain). The listener may still accept
// meanwhile (the drain delay): a new connection is served one request.
func (p *Proxy) GoAway() {
	if p.cfg.Routers != nil {
		p.routes.Hold(p.cfg.Routers, p.cfg.RouterName)
	}
	p.draining.Store(true)
}

// table is the route table requests are matched in (router.Held).
func (p *Proxy) table() (*router.Table, bool) { return p.routes.Get(p.cfg.Routers, p.cfg.RouterName) }

// Close is GoAway, then it closes the idle upstream connections, stops the mirror workers
// and closes the access logs: call it once the listener drained, so that the requests
// that finish during the drain are logged. Upstream connections in use are closed when
// their request ends.
func (p *Proxy) Close() error {
	p.GoAway()
	p.closeLoopPools()
	_ = p.idle.Close()
	_ = p.h2up.Close()
	p.stopExt()
	return p.cfg.AccessLog.Close()
}

// ServeConn implements network.Handler.
func (p *Proxy) ServeConn(ctx context.Context, c *network.Conn) {
	switch p.cfg.Downstream {
	case stream.HTTP1, stream.Auto, "":
	default:
		p.protocolError(string(p.cfg.Downstream))
		p.cfg.Log.Warn("proxy: downstream protocol not supported, closing connection",
			zap.String("protocol", string(p.cfg.Downstream)))
		c.Close(network.CloseReason("protocol_error"))
		return
	}
	s := getSession(p, ctx, c)
	defer putSession(s)
	err := c.ReadLoop(s.onData)
	if s.h2 != nil && !s.h2.claim() {
		// The upload ended beside an early answer (h2conv.go): no local answer may
		// follow it, and a complete one is not cut by a reset. A body that stopped
		// arriving (request_body_timeout) leaves the answer that long again to finish:
		// the client has its answer coming, and a client that stops uploading once an
		// answer starts (curl does) is not at fault.
		var grace time.Duration
		if s.bodyArmed && errors.Is(err, os.ErrDeadlineExceeded) {
			s.bodyArmed = false
			grace = p.requestBodyTimeout()
			p.cfg.Log.Debug("proxy: request body timeout during an early answer; letting the answer finish",
				zap.Duration("grace", grace))
		}
		answered := s.h2EarlyEnd(grace)
		s.dropUpstream()
		s.abandonRequest()
		if answered {
			s.h2EarlyClose()
		} else {
			c.Close("")
		}
		return
	}
	answered := errors.Is(err, errClose) || s.headTimedOut(err) || s.bodyTimedOut(err) || s.headTooLarge(err)
	if err != nil && !answered {
		p.cfg.Log.Debug("proxy: connection ended", zap.Error(err))
	}
	s.dropUpstream()
	s.abandonRequest()
	if answered {
		// After an answer that ends the connection, the client may still be sending (the
		// rest of a body, a pipelined request): close without a reset under the answer,
		// as Go's server and nginx do.
		c.CloseLinger("", true)
		return
	}
	c.Close("")
}

// msgOverloaded is the body of the 503 a request gets while memory is near its limit.
const msgOverloaded = "overloaded"

// overloaded reports whether new requests are refused now (Config.Overloaded).
func (p *Proxy) overloaded() bool { return p.cfg.Overloaded != nil && p.cfg.Overloaded() }

// protocolError counts malformed input of protocol proto (protocol_errors_total).
func (p *Proxy) protocolError(proto string) {
	var c prometheus.Counter
	switch proto {
	case string(stream.HTTP1):
		c = p.protoErrs.h1
	case string(stream.HTTP2):
		c = p.protoErrs.h2
	case string(stream.Auto):
		c = p.protoErrs.auto
	case string(p.cfg.Downstream):
		c = p.protoErrs.other
	}
	if c != nil {
		c.Inc()
	}
}

// upConn is a ping-pong upstream connection.
type upConn struct {
	raw   net.Conn
	addr  string
	key   string        // the idle pool's key (cluster.Host.PoolKey)
	host  *cluster.Host // the host dialled; nil in tests that build upConns by hand
	done  func()
	since time.Time // when it last went idle; zero for a new connection
	armed time.Time // the deadline set on raw; zero: none
	sio   *network.SockIO
}

// report feeds the host's outlier detection (cluster.Host.ReportResult) with the outcome
// of a try on u: ok false for a 5xx answer, or for no answer by the upstream's doing
// (timeout, reset, an invalid response).
func (u *upConn) report(ok bool) {
	if u != nil && u.host != nil {
		u.host.ReportResult(ok)
	}
}

// deadline bounds raw's reads and writes by t; a zero t lifts the bound.
//
// Bounds are coarse. Each SetDeadline is runtime timer work on two timers, and with a
// route timeout (15 s unless configured) every request would arm one. So a bound already
// armed is kept when it falls between t and t plus a slack of 1/16 of the time left before
// t (at most 1 s), and a new one is armed at t plus that slack, for the requests of the
// next moments to reuse. A bound therefore fires up to 1/16 of its length late, never
// early. A bound stays armed while the connection waits in the idle pool; get and Probe
// lift it once it has passed, so that neither the next request's write nor the liveness
// probe fails on it. It reports whether it set the socket's deadline.
func (u *upConn) deadline(t time.Time) bool {
	if t.IsZero() {
		if !u.armed.IsZero() {
			_ = u.raw.SetDeadline(time.Time{})
			u.armed = time.Time{}
			return true
		}
		return false
	}
	slack := min(time.Until(t)/16, maxDeadlineSlack)
	if !u.armed.Before(t) && u.armed.Sub(t) <= max(slack, 0) {
		return false
	}
	if slack > 0 {
		t = t.Add(slack)
	}
	_ = u.raw.SetDeadline(t)
	u.armed = t
	return true
}

// maxDeadlineSlack caps how late a coarse upstream bound may fire (upConn.deadline).
const maxDeadlineSlack = time.Second

// newUpConn wraps raw, a new connection to h; done is the dial's, called on Close.
func newUpConn(raw net.Conn, h *cluster.Host, done func(lb.DoneInfo)) *upConn {
	return &upConn{raw: raw, addr: h.Addr(), key: h.PoolKey(), host: h, done: func() { done(lb.DoneInfo{}) }}
}

// liftPassed lifts a bound that has passed by now.
func (u *upConn) liftPassed(now time.Time) {
	if !u.armed.IsZero() && !u.armed.After(now) {
		u.deadline(time.Time{})
	}
}

// Probe implements connpool.Prober: connpool.Alive on the socket, after lifting a bound
// that has passed, on which the probe would fail.
func (u *upConn) Probe() bool {
	u.liftPassed(time.Now())
	return connpool.Alive(u.raw)
}

// io is raw's SockIO, made on first use: the request and response bytes of the HTTP/1
// paths go through it.
func (u *upConn) io() *network.SockIO {
	if u.sio == nil {
		u.sio = network.NewSockIO(u.raw)
	}
	return u.sio
}

// NetConn implements connpool.Conn.
func (u *upConn) NetConn() net.Conn { return u.raw }

// Close implements connpool.Conn: it closes the socket and releases the cluster's
// max_connections unit.
func (u *upConn) Close() error {
	err := u.raw.Close()
	u.done()
	return err
}

func (u *upConn) close() { _ = u.Close() }

// staleUpConn is the idle pool's Stale: the connection's host left its cluster or is down.
func staleUpConn(c connpool.Conn) bool {
	h := c.(*upConn).host
	return h != nil && (h.Removed() || !h.Healthy())
}

// hostsChanged is the idle pool's HostsChanged: nil without a cluster manager.
func hostsChanged(m *cluster.Manager) func() <-chan struct{} {
	if m == nil {
		return nil
	}
	return m.HostsChanged
}

// get takes an idle connection to addr from the pool, or returns nil. The pool closes
// expired ones and probes one idle for aliveCheckAfter before handing it out.
func (p *Proxy) get(h *cluster.Host, now time.Time) *upConn {
	uc, _ := p.idle.Get(h.PoolKey(), now)
	if uc != nil {
		uc.liftPassed(now)
	}
	return uc
}

// put returns uc to the pool after a request that ended cleanly on it (whole response
// read, nothing after it, no error); any other connection is closed, never put.
func (p *Proxy) put(uc *upConn, now time.Time) {
	uc.since = now
	p.idle.Put(uc.key, uc, now)
}

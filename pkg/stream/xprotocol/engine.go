// Package xprotocol is the multiplexed RPC stream engine behind the `proxy` network filter
// for bolt, bolt v2 and dubbo (docs/l7-plan.md, "Threading model"). One engine serves
// every codec of pkg/protocol/xprotocol.
//
// # Downstream
//
// Each downstream connection is served on its own goroutine (plus one writer goroutine
// for the answers, see Failures): ReadLoop
// hands it the bytes read, it decodes frames into one reused Frame, answers heartbeats,
// routes (router.Request view over the frame's headers: Host and Path empty, so the "*"
// virtual host serves; "service", "method", "version", "group" and any bolt header can be
// matched), picks a host, takes a multiplexed upstream connection, records
// {upstream id → downstream connection, downstream id, deadline} in that connection's
// in-flight map, rewrites the request id in place (Codec.SetID) and queues the raw frame
// bytes. Frames are never re-encoded. Requests bound for the same upstream connection
// during one read are written with one Write; Conn.Write batches further (writev).
// Requests on one connection therefore run concurrently without a goroutine each.
//
// # Upstream
//
// Per cluster and host, up to conn_pool_size multiplexed connections (default 1), used in
// turn. Each has a reader goroutine, which decodes responses, finds the pending entry by
// id, restores the downstream id in place and queues the bytes for the downstream
// connection's writer (one batch per downstream connection per read), and a ticker goroutine,
// which expires pending entries from a coarse deadline wheel (granularity Config.Tick) and
// keeps the connection alive: after HeartbeatInterval without reading anything it sends a
// heartbeat, and after HeartbeatMisses intervals in a row without reading anything it
// closes the connection. A go-away from the upstream drains the connection: no new
// requests, the pending ones finish, then it is closed.
//
// # Failures
//
// Every request that expects a response gets exactly one: the upstream's, or the codec's
// Hijack answer for the cause: no route (CauseNoRoute), no cluster or no healthy host or a
// failed connect (CauseNoHealthyUpstream), circuit breaker max_requests or
// max_connections open (CauseOverflow), the deadline passed (CauseTimeout), the upstream
// connection closed with the request pending (CauseConnectionClosed), a body the codec
// could not read (CauseCodecError; the connection lives on), and more than MaxInFlight
// requests pending on the downstream connection (CauseOverflow: the server-busy answer,
// bolt 0x04, dubbo 100; the engine keeps reading). One-way requests get no response and
// no in-flight entry. A frame the codec refuses (bad framing, or a header declaring more
// than the codec's MaxFrameSize, checked before the body is buffered) closes that
// connection with a log line and rpc_failures_total{cause="frame_too_large"|"protocol_error"}.
// Unread bytes are bounded by the codec's frame limit (bolt 16 MiB, dubbo 8 MiB by
// default): the engine raises the connection's read limit to it, unless the listener sets
// per_connection_buffer_limit_bytes, which then bounds frames too.
//
// Answers reach a downstream connection through that connection's writer goroutine (one
// per connection, not per request): upstream goroutines queue them without waiting, so a
// client that does not read stalls nobody else. When more than WriteLimit bytes of
// answers wait for it (besides the BufferLimit its Conn queues), the engine stops reading
// its requests until they drain; above HardWriteLimit it is disconnected (cause
// "downstream_write_overflow").
// Requests are written upstream with Write, which waits while the upstream connection's
// queue is full: that client's reading pauses (backpressure).
//
// # Drain
//
// GoAway (the server calls it when the drain starts) sends every client a go-away (bolt
// cmdcode 100, dubbo's readonly event), answers what is in flight, and closes each client
// connection once nothing is pending on it and GoAwayGrace has passed since its go-away:
// requests a client sent before the go-away reached it are read and answered, not reset by
// the close. Close does the same and waits up to DrainWait for it before closing the
// upstream connections.
//
// # Timeouts
//
// A request's deadline is its own timeout (bolt's timeout field, dubbo's "timeout"
// attachment) clamped to the route's timeout (the route timeout is the maximum; the
// router's default is 15s); with neither, Config.DefaultTimeout (60s).
package xprotocol

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/metrics"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/router"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/upstream/cluster"
)

// Defaults for Config's zero fields.
const (
	DefaultMaxInFlight       = 10000
	DefaultTimeout           = 60 * time.Second
	DefaultTick              = 100 * time.Millisecond
	DefaultHeartbeatInterval = 15 * time.Second
	DefaultHeartbeatMisses   = 3
	DefaultConnPoolSize      = 1
	DefaultWriteLimit        = 1 << 20
	DefaultHardWriteLimit    = 64 << 20
	DefaultDrainWait         = 5 * time.Second
	DefaultGoAwayGrace       = time.Second
	// MaxConnPoolSize caps conn_pool_size.
	MaxConnPoolSize = 64
)

// Config configures an Engine.
type Config struct {
	// Overloaded, when set, is asked as each request arrives: while it reports true
	// requests are answered with the codec's server-busy status (overload.Memory).
	Overloaded func() bool
	Listener   string          // listener name, for metrics and logs
	Codec      xprotocol.Codec // the protocol, downstream and upstream
	Routers    *router.Tables  // looked up per request, so table swaps apply at once
	RouterName string
	Clusters   *cluster.Manager
	Pool       *buffer.Pool
	Metrics    *metrics.Set // nil: none
	Log        *zap.Logger  // nil: none

	// MaxInFlight bounds requests pending per downstream connection; above it requests
	// are answered with the codec's overflow (server busy) status. 0: DefaultMaxInFlight.
	MaxInFlight int
	// DefaultTimeout applies when neither the request nor the route has a timeout.
	DefaultTimeout time.Duration
	// Tick is the granularity of timeouts and keepalive checks. 0: DefaultTick.
	Tick time.Duration
	// HeartbeatInterval: an upstream connection silent this long gets a heartbeat;
	// 0: DefaultHeartbeatInterval; negative: no heartbeats.
	HeartbeatInterval time.Duration
	// HeartbeatMisses: silent intervals in a row after which the connection is closed.
	HeartbeatMisses int
	// ConnPoolSize is the connections per host when the cluster sets no conn_pool_size.
	ConnPoolSize int
	// DrainWait bounds how long Close waits for clients to finish their requests after
	// the go-away. 0: DefaultDrainWait.
	DrainWait time.Duration
	// GoAwayGrace is how long a client connection stays open at least after its go-away,
	// so that the requests the client sent before it saw the go-away are still served
	// (neither bolt nor dubbo says which requests crossed it). 0: DefaultGoAwayGrace;
	// negative: closed as soon as nothing is pending.
	GoAwayGrace time.Duration
	// WriteLimit: above this many bytes of answers queued for one downstream connection
	// (beyond what its Conn queues itself) the engine stops reading that connection's
	// requests until the queue drains. 0: DefaultWriteLimit.
	WriteLimit int
	// HardWriteLimit: above it the client is not reading and is disconnected (answers to
	// requests already in flight may still arrive while reading is paused).
	// 0: DefaultHardWriteLimit.
	HardWriteLimit int
}

// failure kinds, the cause label of rpc_failures_total.
const (
	fNoRoute = iota
	fNoHealthy
	fOverflow
	fBusy
	fTimeout
	fClosed
	fCodec
	fFrameTooLarge
	fProtocol
	fSlowClient
	fStalled
	fWriteTimeout
	nFailures
)

var failureLabels = [nFailures]string{
	fNoRoute:       "no_route",
	fNoHealthy:     "no_healthy_upstream",
	fOverflow:      "overflow",
	fBusy:          "downstream_in_flight_limit",
	fTimeout:       "timeout",
	fClosed:        "connection_closed",
	fCodec:         "codec_error",
	fFrameTooLarge: "frame_too_large",
	fProtocol:      "protocol_error",
	fSlowClient:    "downstream_write_overflow",
	fStalled:       "upstream_write_stalled", // refused at once: the connection is marked stalled
	fWriteTimeout:  "upstream_write_timeout", // waited for room on the connection up to its deadline
}

// Optional codec capabilities (dubbo).
type (
	frameErrorer interface {
		FrameError(f *xprotocol.Frame) error
	}
	attachmentDecoder interface {
		DecodeAttachments(f *xprotocol.Frame) error
	}
)

// Engine serves downstream connections of one protocol and owns the upstream pool. It
// implements stream.ServerConnection (and so network.Handler); Close closes the upstream
// connections.
type Engine struct {
	cfg      Config
	xp       xprotocol.Codec
	frameErr frameErrorer
	attach   attachmentDecoder
	log      *zap.Logger

	reqs     prometheus.Counter
	fails    [nFailures]prometheus.Counter
	protoErr prometheus.Counter

	pools atomic.Pointer[map[string]*clusterPool] // copy on write, under mu
	// routes is the router lookup; goAway holds the table the engine has, for requests
	// crossing the go-away should a config change drop its router.
	routes router.Held

	mu       sync.Mutex
	closed   bool
	draining bool
	conns    map[*upConn]struct{}
	sessions map[*session]struct{}
	idle     chan struct{} // closed when the last session ends while draining
	// watchQuit stops watchHosts (upstream.go), started with the engine when it has clusters.
	watchQuit chan struct{}
	wg        sync.WaitGroup
	isShut    atomic.Bool
}

var (
	_ stream.ServerConnection = (*Engine)(nil)
	_ stream.ClientConnection = (*upConn)(nil)
)

// New returns an Engine. cfg.Codec, Routers and Clusters are required.
func New(cfg Config) *Engine {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = DefaultTimeout
	}
	if cfg.Tick <= 0 {
		cfg.Tick = DefaultTick
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.HeartbeatMisses <= 0 {
		cfg.HeartbeatMisses = DefaultHeartbeatMisses
	}
	if cfg.DrainWait <= 0 {
		cfg.DrainWait = DefaultDrainWait
	}
	if cfg.GoAwayGrace == 0 {
		cfg.GoAwayGrace = DefaultGoAwayGrace
	}
	if cfg.WriteLimit <= 0 {
		cfg.WriteLimit = DefaultWriteLimit
	}
	if cfg.HardWriteLimit <= 0 {
		cfg.HardWriteLimit = DefaultHardWriteLimit
	}
	if cfg.ConnPoolSize <= 0 {
		cfg.ConnPoolSize = DefaultConnPoolSize
	}
	if cfg.Pool == nil {
		cfg.Pool = buffer.NewPool()
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	e := &Engine{cfg: cfg, xp: cfg.Codec, log: cfg.Log, conns: map[*upConn]struct{}{}, sessions: map[*session]struct{}{}}
	e.frameErr, _ = cfg.Codec.(frameErrorer)
	e.attach, _ = cfg.Codec.(attachmentDecoder)
	m := cfg.Metrics
	if m == nil || m.RPCRequests == nil {
		m = metrics.New()
	}
	name := cfg.Codec.Name()
	e.reqs = m.RPCRequests.WithLabelValues(cfg.Listener, name)
	for i := range e.fails {
		e.fails[i] = m.RPCFailures.WithLabelValues(cfg.Listener, name, failureLabels[i])
	}
	e.protoErr = m.ProtocolErrors.WithLabelValues(cfg.Listener, name)
	empty := map[string]*clusterPool{}
	e.pools.Store(&empty)
	if cfg.Clusters != nil {
		// Started with the engine, not with its first upstream connection, so that the
		// goroutine is there before any traffic (leak checks take their baseline then).
		e.watchQuit = make(chan struct{})
		e.wg.Add(1)
		go e.watchHosts(cfg.Clusters.HostsChanged(), e.watchQuit)
	}
	return e
}

// ServeConn implements network.Handler: it serves c until it closes.
func (e *Engine) ServeConn(ctx context.Context, c *network.Conn) {
	s := &session{e: e, ctx: ctx, c: c}
	s.view.f = &s.f
	s.ip = remoteIP(c)
	noWait, cancel := context.WithCancel(ctx)
	cancel()
	s.noWait = noWait
	s.wsig = make(chan struct{}, 1)
	s.wroom = make(chan struct{}, 1)
	s.wdone = make(chan struct{})
	go s.writer()
	e.mu.Lock()
	e.sessions[s] = struct{}{}
	drain := e.draining
	e.mu.Unlock()
	if drain {
		s.startDrain()
	}
	defer e.sessionDone(s)
	// Frames up to the codec's limit must fit in the read buffer unless the listener set
	// its own per_connection_buffer_limit_bytes.
	c.RaiseReadLimit(e.xp.MaxFrameSize() + 64<<10)
	err := c.ReadLoop(s.onData)
	s.flush()
	switch {
	case err == nil, errors.Is(err, errStop):
	case errors.Is(err, network.ErrReadLimit):
		e.fails[fFrameTooLarge].Inc()
		e.log.Info("xprotocol: downstream read buffer limit reached, closing connection",
			zap.Stringer("remote", c.RemoteAddr()))
		c.Close(network.CloseOverflow)
	default:
		e.log.Debug("xprotocol: downstream connection ended", zap.Error(err))
	}
	c.Close("")
	<-s.wdone
}

// sessionDone forgets s.
func (e *Engine) sessionDone(s *session) {
	e.mu.Lock()
	delete(e.sessions, s)
	if len(e.sessions) == 0 && e.idle != nil {
		close(e.idle)
		e.idle = nil
	}
	e.mu.Unlock()
}

// Protocol implements stream.ServerConnection: the codec's protocol.
func (e *Engine) Protocol() stream.Protocol { return stream.Protocol(e.xp.Name()) }

// GoAway implements stream.ServerConnection: every client gets a go-away (bolt go-away,
// dubbo readonly event), connections accepted later get it at once, and each client
// connection is closed once its requests are answered. It does not wait.
func (e *Engine) GoAway() { e.goAway() }

// goAway starts the drain and returns the channel closed when the last client
// connection has ended (nil when there is none).
func (e *Engine) goAway() chan struct{} {
	e.routes.Hold(e.cfg.Routers, e.cfg.RouterName)
	e.mu.Lock()
	e.draining = true
	ss := make([]*session, 0, len(e.sessions))
	for s := range e.sessions {
		ss = append(ss, s)
	}
	var idle chan struct{}
	if len(ss) > 0 {
		if e.idle == nil {
			e.idle = make(chan struct{})
		}
		idle = e.idle
	}
	e.mu.Unlock()
	for _, s := range ss {
		s.startDrain()
	}
	return idle
}

// table is the route table requests are matched in (router.Held).
func (e *Engine) table() (*router.Table, bool) { return e.routes.Get(e.cfg.Routers, e.cfg.RouterName) }

// Close implements stream.ServerConnection. It drains and then closes: GoAway, a wait of
// up to DrainWait for the clients' requests to be answered, then every upstream
// connection is closed (requests still pending are answered with the connection-closed
// status), their goroutines are waited for and later dials are refused.
func (e *Engine) Close() error {
	if idle := e.goAway(); idle != nil {
		t := time.NewTimer(e.cfg.DrainWait)
		select {
		case <-idle:
		case <-t.C:
			e.log.Info("xprotocol: drain wait over, closing upstream connections with requests pending")
		}
		t.Stop()
	}
	e.mu.Lock()
	e.closed = true
	e.isShut.Store(true)
	if e.watchQuit != nil {
		close(e.watchQuit)
		e.watchQuit = nil
	}
	all := make([]*upConn, 0, len(e.conns))
	for u := range e.conns {
		all = append(all, u)
	}
	e.mu.Unlock()
	for _, u := range all {
		_ = u.Close()
	}
	e.wg.Wait()
	return nil
}

// epoch anchors the monotonic clock of deadlines.
var epoch = time.Now()

func monoNow() int64 { return int64(time.Since(epoch)) }

// errStop ends a read loop after the connection was closed on purpose.
var errStop = errors.New("xprotocol: connection closed")

// Errors fed to the balancer's done and outlier detection.
var (
	errTimeout = errors.New("xprotocol: request timed out")
	errClosed  = errors.New("xprotocol: upstream connection closed")
	errStalled = errors.New("xprotocol: upstream connection takes no requests")
)

// hijack messages (dubbo sends them; bolt has no text field).
var causeMsg = [...]string{
	xprotocol.CauseNoRoute:           "mosnlite: no route for the request",
	xprotocol.CauseNoHealthyUpstream: "mosnlite: no healthy upstream",
	xprotocol.CauseOverflow:          "mosnlite: upstream overflow or too many requests in flight",
	xprotocol.CauseTimeout:           "mosnlite: request timed out",
	xprotocol.CauseUpstreamTimeout:   "mosnlite: upstream timed out",
	xprotocol.CauseCodecError:        "mosnlite: request body could not be decoded",
	xprotocol.CauseForbidden:         "mosnlite: forbidden",
	xprotocol.CauseConnectionClosed:  "mosnlite: upstream connection closed",
}

func msgOf(c xprotocol.Cause) string {
	if int(c) < len(causeMsg) {
		return causeMsg[c]
	}
	return "mosnlite: request failed"
}

// reqInfo is what the engine keeps of a request to answer it later (Hijack needs the kind,
// id and version bytes, not the body).
type reqInfo struct {
	kind    xprotocol.Kind
	version byte
	id      uint64
	proto   [4]uint32
}

func infoOf(f *xprotocol.Frame) reqInfo {
	return reqInfo{kind: f.Kind, version: f.Version, id: f.ID, proto: f.Proto}
}

// writeHijack appends the hijack answer for r to dst (nothing for a one-way request).
// Codecs write nothing when they fail.
func (e *Engine) writeHijack(dst *buffer.IoBuffer, r *reqInfo, cause xprotocol.Cause) {
	f := xprotocol.Frame{Kind: r.kind, ID: r.id, Version: r.version, Proto: r.proto}
	_ = e.xp.Hijack(dst, &f, cause, msgOf(cause))
}

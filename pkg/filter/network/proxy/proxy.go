// Package proxy is the "proxy" network filter: MOSN's L7 proxy. It resolves the
// downstream protocol setting and hands each connection to that protocol's server:
// HTTP/1 (pkg/proxy), HTTP/2 (http2.go) and the xprotocol family, bolt, bolt v2 and dubbo
// (xprotocol.go). The protocols come from one registry (Registry: name, matcher, server
// factory, pool mode, status mapping). With Auto (or a protocol list) it sniffs the first
// bytes of each connection in registration order, with a bounded wait.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// Name is the filter's type in configs.
const Name = "proxy"

// SniffTimeout bounds the wait for the first bytes of an Auto connection.
const SniffTimeout = 15 * time.Second

// Params is what a protocol's server is built from.
type Params struct {
	Config   config.ProxyConfig
	Upstream config.ProtocolChoice // resolved upstream_protocol; zero: same as downstream
	// UpstreamReg is the registration of the proxy-level upstream_protocol (nil: same as
	// the downstream's).
	UpstreamReg *stream.Registration[Params]
	Deps        filter.Deps
	Listener    string // listener name for metrics and logs
}

// Registry returns the protocols this filter serves, in Auto's sniffing order, each with
// its server factory (stream.RegisterBuiltins). Factory builds one per config generation.
func Registry() (*stream.Registry[Params], error) {
	r := stream.NewRegistry[Params]()
	err := stream.RegisterBuiltins(r, stream.Servers[Params]{
		HTTP1:  newHTTP1,
		HTTP2:  newHTTP2,
		Bolt:   newXProtocol,
		BoltV2: newXProtocol,
		Dubbo:  newXProtocol,
	})
	return r, err
}

// Factory builds the filter from a ProxyConfig. The router named by router_config_name
// must exist in d.Routers. Every downstream protocol the setting names is built at start,
// so an unsupported combination is refused with its reason, not failed per connection.
func Factory(raw config.RawMessage, d filter.Deps) (filter.NetworkFilter, error) {
	var c config.ProxyConfig
	if len(raw) > 0 {
		if err := config.Unmarshal(raw, &c); err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
	}
	if d.Routers == nil {
		return nil, fmt.Errorf("proxy: router %q: no routers configured", c.RouterConfigName)
	}
	if _, ok := d.Routers.Get(c.RouterConfigName); !ok {
		return nil, fmt.Errorf("proxy: router %q not found in routers", c.RouterConfigName)
	}
	up, err := config.ParseProtocol(c.UpstreamProtocol, c.SubProtocol())
	if err != nil {
		return nil, fmt.Errorf("proxy: upstream_protocol: %w", err)
	}
	if len(up.Names) > 1 {
		return nil, fmt.Errorf("proxy: upstream_protocol %q: name one protocol", c.UpstreamProtocol)
	}
	pc, err := config.ParseProtocol(c.DownstreamProtocol, c.SubProtocol())
	if err != nil {
		return nil, fmt.Errorf("proxy: downstream_protocol: %w", err)
	}
	reg, err := Registry()
	if err != nil {
		return nil, fmt.Errorf("proxy: protocol registry: %w", err)
	}
	var downs []*stream.Registration[Params]
	switch {
	case len(pc.Names) > 0:
		for _, n := range pc.Names {
			r, err := reg.Lookup(stream.Protocol(n))
			if err != nil {
				return nil, fmt.Errorf("proxy: downstream_protocol %q: %s is not served by this build: %w", c.DownstreamProtocol, n, err)
			}
			downs = append(downs, r)
		}
	case pc.Auto, c.DownstreamProtocol == "":
		downs = reg.Registrations()
	}
	prm := Params{Config: c, Upstream: up, Deps: d}
	if d.Listener != nil {
		prm.Listener = d.Listener.Name
	}
	if len(up.Names) == 1 {
		if prm.UpstreamReg, err = reg.Lookup(stream.Protocol(up.Names[0])); err != nil {
			return nil, fmt.Errorf("proxy: upstream_protocol %q: %w", c.UpstreamProtocol, err)
		}
	}
	a := &auto{log: d.Log, params: prm, reg: reg, sniffTimeout: SniffTimeout, handlers: make(map[stream.Protocol]stream.ServerConnection)}
	if a.log == nil {
		a.log = zap.NewNop()
	}
	if m := d.Metrics; m != nil && m.ProtocolErrors != nil {
		a.protoErrs = m.ProtocolErrors.WithLabelValues(prm.Listener, string(stream.Auto))
	}
	plainAuto := len(pc.Names) == 0
	var skipped []string
	for _, r := range downs {
		p := r.Name
		h, err := r.Factory(prm, r)
		if err != nil {
			if plainAuto {
				// Plain Auto serves the protocols this build has that can forward to the
				// configured upstream protocol (Auto with upstream Http1 serves HTTP/1 and
				// HTTP/2, not bolt); an explicit list must be served whole.
				skipped = append(skipped, fmt.Sprintf("%s (%v)", p, err))
				continue
			}
			a.Close()
			return nil, fmt.Errorf("proxy: downstream_protocol %q: %s: %w", c.DownstreamProtocol, p, err)
		}
		a.handlers[p] = h
		a.allowed = append(a.allowed, p)
	}
	if len(a.allowed) == 0 {
		return nil, fmt.Errorf("proxy: downstream_protocol %q: no protocol can be served: %s", c.DownstreamProtocol, strings.Join(skipped, "; "))
	}
	if len(skipped) > 0 {
		a.log.Debug("proxy: Auto leaves out protocols", zap.Strings("skipped", skipped))
	}
	if ce := a.log.Check(zap.DebugLevel, "proxy: downstream protocols served"); ce != nil {
		up := zap.String("upstream_pool", "per downstream protocol")
		if r := prm.UpstreamReg; r != nil {
			up = zap.Stringer("upstream_pool", r.PoolMode)
		}
		ce.Write(zap.String("listener", prm.Listener), zap.Any("protocols", a.allowed), up)
	}
	if len(a.allowed) == 1 && !pc.Auto {
		if !tlsListener(d.Listener) {
			return a.handlers[a.allowed[0]], nil
		}
		// Over TLS the wrapper stays, for its ALPN list (NextProtos); it does not sniff.
		a.direct = a.handlers[a.allowed[0]]
	}
	if h1, ok := a.handlers[stream.HTTP1].(*loopHTTPServer); ok && a.direct == nil && !tlsListener(d.Listener) {
		return &loopAuto{auto: a, h1: h1.p, sniff: a.sniffHTTP1}, nil
	}
	return a, nil
}

// loopAuto is an Auto filter whose HTTP/1 server runs on event loops (network.RawHandler):
// each connection starts on a loop, and moves to ServeConn, which sniffs again, when its
// first bytes are another protocol's.
type loopAuto struct {
	*auto
	h1    *proxy.Proxy
	sniff func(peek []byte) (http1, more bool) // a.sniffHTTP1, bound once
}

// ServeRaw implements network.RawHandler.
func (l *loopAuto) ServeRaw(acc network.Accepted) bool {
	return l.h1.ServeRawSniff(acc, l.sniff, l.sniffTimeout)
}

// sniffHTTP1 decides from a connection's first bytes, as ServeConn does, whether it
// speaks HTTP/1; more: too few bytes to tell.
func (a *auto) sniffHTTP1(peek []byte) (http1, more bool) {
	p, more := a.reg.Sniff(peek, a.allowed)
	if more && len(peek) < 64 {
		return false, true
	}
	return p == stream.HTTP1, false
}

// auto sniffs each connection's protocol and hands it to that protocol's server.
type auto struct {
	log     *zap.Logger
	params  Params
	reg     *stream.Registry[Params] // sniffs in registration order
	allowed []stream.Protocol
	// sniffTimeout bounds the wait for the bytes that decide the protocol.
	sniffTimeout time.Duration
	handlers     map[stream.Protocol]stream.ServerConnection
	direct       stream.ServerConnection // one explicit protocol on a TLS listener: no sniffing
	// protoErrs is protocol_errors_total{protocol="Auto"} of the listener, held so that a
	// connection outliving the listener's removal does not make the series again.
	protoErrs prometheus.Counter
}

// tlsListener reports whether the listener terminates TLS (its first filter chain serves).
func tlsListener(l *config.Listener) bool {
	if l == nil || len(l.FilterChains) == 0 {
		return false
	}
	fc := &l.FilterChains[0]
	if fc.TLSContext != nil && fc.TLSContext.Status {
		return true
	}
	for i := range fc.TLSContexts {
		if fc.TLSContexts[i].Status {
			return true
		}
	}
	return false
}

// alpnProtocols maps ALPN protocol IDs to the protocols they select.
var alpnProtocols = map[string]stream.Protocol{
	network.ALPNHTTP2:  stream.HTTP2,
	network.ALPNHTTP11: stream.HTTP1,
}

// NextProtos implements network.NextProtoser: a TLS listener advertises h2 and http/1.1
// when this filter serves them.
func (a *auto) NextProtos() []string {
	var out []string
	for _, id := range []string{network.ALPNHTTP2, network.ALPNHTTP11} {
		if _, ok := a.handlers[alpnProtocols[id]]; ok {
			out = append(out, id)
		}
	}
	return out
}

// errSniffed ends the sniffing read loop.
var errSniffed = errors.New("sniffed")

// ServeConn implements network.Handler.
func (a *auto) ServeConn(ctx context.Context, c *network.Conn) {
	if a.direct != nil {
		a.direct.ServeConn(ctx, c)
		return
	}
	// Over TLS the protocol agreed by ALPN decides; without one, sniff.
	if id := c.NegotiatedProtocol(); id != "" {
		if h := a.handlers[alpnProtocols[id]]; h != nil {
			h.ServeConn(ctx, c)
			return
		}
	}
	var proto stream.Protocol
	_ = c.Raw().SetReadDeadline(time.Now().Add(a.sniffTimeout))
	err := c.ReadLoop(func(b *buffer.IoBuffer) error {
		p, more := a.reg.Sniff(b.Bytes(), a.allowed)
		if more && b.Len() < 64 {
			return nil
		}
		proto = p
		c.Unread(b.Bytes())
		b.Drain(b.Len())
		return errSniffed
	})
	_ = c.Raw().SetReadDeadline(time.Time{})
	h := a.handlers[proto]
	if !errors.Is(err, errSniffed) || h == nil {
		if errors.Is(err, errSniffed) {
			a.protocolError()
			a.log.Info("proxy: Auto found no supported protocol, closing connection",
				zap.Stringer("remote", c.RemoteAddr()))
			c.Close(network.CloseReason("protocol_error"))
			return
		}
		c.Close("")
		return
	}
	h.ServeConn(ctx, c)
}

func (a *auto) protocolError() {
	if a.protoErrs != nil {
		a.protoErrs.Inc()
	}
}

// GoAway tells every server to start a graceful drain (stream.ServerConnection.GoAway).
func (a *auto) GoAway() {
	for _, h := range a.handlers {
		h.GoAway()
	}
}

// Close drains and closes the servers: all of them are told to go away first, so their
// drains overlap, then each is closed.
func (a *auto) Close() error {
	a.GoAway()
	var errs []error
	for _, h := range a.handlers {
		errs = append(errs, h.Close())
	}
	return errors.Join(errs...)
}

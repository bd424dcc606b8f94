// Package proxy is the "proxy" network filter: MOSN's L7 proxy. It resolves the
// downstream protocol setting and hands each connection to that protocol's server:
// HTTP/1 (pkg/proxy), HTTP/2 (http2.go) and the xprotocol family, bolt, bolt v2 and dubbo
// (xprotocol.go). With Auto (or a protocol list) it sniffs the first bytes of each
// connection, in stream.Sniff's fixed order, with a bounded wait.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/buffer"
	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/network"
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
	Deps     filter.Deps
	Listener string // listener name for metrics and logs
}

// serverFactory builds the network.Handler serving downstream connections of one protocol.
// A handler that keeps resources beyond its connections implements io.Closer.
type serverFactory func(p Params, down stream.Protocol) (network.Handler, error)

// servers is the one list of downstream protocols this build serves.
var servers = map[stream.Protocol]serverFactory{
	stream.HTTP1:  newHTTP1,
	stream.HTTP2:  newHTTP2,
	stream.Bolt:   newXProtocol,
	stream.BoltV2: newXProtocol,
	stream.Dubbo:  newXProtocol,
}

// autoOrder is the set Auto sniffs among when no list is given.
var autoOrder = []stream.Protocol{stream.HTTP2, stream.Bolt, stream.BoltV2, stream.Dubbo, stream.HTTP1}

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
	var downs []stream.Protocol
	switch {
	case len(pc.Names) > 0:
		for _, n := range pc.Names {
			downs = append(downs, stream.Protocol(n))
		}
	case pc.Auto, c.DownstreamProtocol == "":
		downs = autoOrder
	}
	prm := Params{Config: c, Upstream: up, Deps: d}
	if d.Listener != nil {
		prm.Listener = d.Listener.Name
	}
	a := &auto{log: d.Log, params: prm, handlers: make(map[stream.Protocol]network.Handler)}
	if a.log == nil {
		a.log = zap.NewNop()
	}
	plainAuto := len(pc.Names) == 0
	var skipped []string
	for _, p := range downs {
		f, ok := servers[p]
		if !ok {
			return nil, fmt.Errorf("proxy: downstream_protocol %q: %s is not served by this build", c.DownstreamProtocol, p)
		}
		h, err := f(prm, p)
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
	if len(a.allowed) == 1 && !pc.Auto {
		if !tlsListener(d.Listener) {
			return a.handlers[a.allowed[0]], nil
		}
		// Over TLS the wrapper stays, for its ALPN list (NextProtos); it does not sniff.
		a.direct = a.handlers[a.allowed[0]]
	}
	return a, nil
}

// auto sniffs each connection's protocol and hands it to that protocol's handler.
type auto struct {
	log      *zap.Logger
	params   Params
	allowed  []stream.Protocol
	handlers map[stream.Protocol]network.Handler
	direct   network.Handler // one explicit protocol on a TLS listener: no sniffing
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
	_ = c.Raw().SetReadDeadline(time.Now().Add(SniffTimeout))
	err := c.ReadLoop(func(b *buffer.IoBuffer) error {
		p, more := stream.Sniff(b.Bytes(), a.allowed)
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
	m := a.params.Deps.Metrics
	if m != nil && m.ProtocolErrors != nil {
		m.ProtocolErrors.WithLabelValues(a.params.Listener, string(stream.Auto)).Inc()
	}
}

// Close closes the handlers that hold resources of their own.
func (a *auto) Close() error {
	var errs []error
	for _, h := range a.handlers {
		if c, ok := h.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

package proxy

import (
	"context"
	"fmt"
	"io"

	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/log/accesslog"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// newHTTP1 serves HTTP/1 downstream connections through pkg/proxy. Upstreams speak
// HTTP/1 or HTTP/2, by the proxy's or the route's upstream_protocol.
func newHTTP1(p Params, r *stream.Registration[Params]) (stream.ServerConnection, error) {
	cfg, err := httpConfig(p, stream.HTTP1)
	if err != nil {
		return nil, err
	}
	h := proxy.New(cfg)
	if h.LoopCapable() {
		return &loopHTTPServer{httpServer{proto: r.Name, h: h}, h}, nil
	}
	return &httpServer{proto: r.Name, h: h}, nil
}

// loopHTTPServer is an httpServer whose connections may be served on event loops
// (network.RawHandler): an HTTP/1 listener whose stream filters, if any, act on heads
// alone (filter.HeadersOnly).
type loopHTTPServer struct {
	httpServer
	p *proxy.Proxy
}

// ServeRaw implements network.RawHandler.
func (s *loopHTTPServer) ServeRaw(a network.Accepted) bool { return s.p.ServeRaw(a) }

// httpConfig is pkg/proxy's config for an HTTP listener: the upstream protocol, stream
// filters and access logs, the request timeouts of extend_config, and the listener's
// per_connection_buffer_limit_bytes (the body kept for retries and mirrors).
func httpConfig(p Params, downstream stream.Protocol) (proxy.Config, error) {
	up, err := httpUpstream(p)
	if err != nil {
		return proxy.Config{}, err
	}
	d := p.Deps
	headerTimeout, err := requestHeaderTimeout(p.Config.ExtendConfig)
	if err != nil {
		return proxy.Config{}, err
	}
	bodyTimeout, err := requestBodyTimeout(p.Config.ExtendConfig)
	if err != nil {
		return proxy.Config{}, err
	}
	chain, logs, err := streamExtras(d)
	if err != nil {
		return proxy.Config{}, err
	}
	bufferLimit := 0
	if d.Listener != nil {
		bufferLimit = int(d.Listener.PerConnBufferLimitBytes)
	}
	return proxy.Config{
		BufferLimit:          bufferLimit,
		RequestHeaderTimeout: headerTimeout,
		RequestBodyTimeout:   bodyTimeout,
		StreamFilters:        chain,
		AccessLog:            logs,
		Downstream:           downstream,
		Upstream:             up,
		Routers:              d.Routers,
		RouterName:           p.Config.RouterConfigName,
		Clusters:             d.Clusters,
		Pool:                 d.Pool,
		Metrics:              d.Metrics,
		Log:                  d.Log,
		Listener:             p.Listener,
		Overloaded:           d.Overloaded,
	}, nil
}

// httpHandler is what pkg/proxy's HTTP/1 and HTTP/2 servers are.
type httpHandler interface {
	network.Handler
	io.Closer
}

// httpServer adapts a pkg/proxy server to stream.ServerConnection.
type httpServer struct {
	proto stream.Protocol
	h     httpHandler
}

var _ stream.ServerConnection = (*httpServer)(nil)

// ServeConn implements stream.ServerConnection.
func (s *httpServer) ServeConn(ctx context.Context, c *network.Conn) { s.h.ServeConn(ctx, c) }

// Protocol implements stream.ServerConnection.
func (s *httpServer) Protocol() stream.Protocol { return s.proto }

// GoAway implements stream.ServerConnection: it is passed on when the pkg/proxy server
// can announce a drain (GoAway()); otherwise connections end as the listener drains them.
func (s *httpServer) GoAway() {
	if g, ok := s.h.(interface{ GoAway() }); ok {
		g.GoAway()
	}
}

// Close implements stream.ServerConnection: the pkg/proxy server's Close.
func (s *httpServer) Close() error { return s.h.Close() }

// streamExtras builds the listener's stream filters and access logs. The access logs are
// owned by the handler that receives them (it closes them).
func streamExtras(d filter.Deps) (*filter.StreamChain, *accesslog.Logs, error) {
	if d.Listener == nil {
		return nil, nil, nil
	}
	chain, err := filter.BuildStreamChain(d.StreamFilters, d.Listener.StreamFilters)
	if err != nil {
		return nil, nil, fmt.Errorf("listener %s: %w", d.Listener.Name, err)
	}
	var specs []accesslog.Spec
	for _, al := range d.Listener.AccessLogs {
		specs = append(specs, accesslog.Spec{Path: al.Path, Format: al.Format})
	}
	logs, err := accesslog.New(specs, accesslog.Options{Log: d.Log})
	if err != nil {
		return nil, nil, fmt.Errorf("listener %s: %w", d.Listener.Name, err)
	}
	return chain, logs, nil
}

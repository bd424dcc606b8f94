package proxy

import (
	"fmt"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// newHTTP2 serves HTTP/2 downstream connections (h2c with prior knowledge, or sniffed by
// Auto) through pkg/proxy's HTTP/2 driver. Upstreams speak HTTP/2 or HTTP/1, by the
// proxy's or the route's upstream_protocol.
func newHTTP2(p Params, r *stream.Registration[Params]) (stream.ServerConnection, error) {
	cfg, err := httpConfig(p, stream.HTTP2)
	if err != nil {
		return nil, err
	}
	return &httpServer{proto: r.Name, h: proxy.NewH2(cfg)}, nil
}

// httpUpstream resolves the proxy-level upstream_protocol for an HTTP downstream: Http1,
// Http2 or "" (same as the downstream).
func httpUpstream(p Params) (stream.Protocol, error) {
	n := p.Upstream.Names
	if len(n) != 1 {
		return "", nil
	}
	switch n[0] {
	case config.ProtocolHTTP1, config.ProtocolHTTP2:
		return stream.Protocol(n[0]), nil
	}
	return "", fmt.Errorf("upstream_protocol %q: an HTTP downstream forwards to Http1 or Http2 only", p.Config.UpstreamProtocol)
}

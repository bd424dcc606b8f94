package proxy

import (
	"fmt"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/network"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// newHTTP1 serves HTTP/1 downstream connections through pkg/proxy.
func newHTTP1(p Params, _ stream.Protocol) (network.Handler, error) {
	if n := p.Upstream.Names; len(n) == 1 && n[0] != config.ProtocolHTTP1 {
		return nil, fmt.Errorf("upstream_protocol %q: HTTP/1 downstream forwards to Http1 only in this build", p.Config.UpstreamProtocol)
	}
	d := p.Deps
	return proxy.New(proxy.Config{
		Downstream: stream.HTTP1,
		Routers:    d.Routers,
		RouterName: p.Config.RouterConfigName,
		Clusters:   d.Clusters,
		Pool:       d.Pool,
		Metrics:    d.Metrics,
		Log:        d.Log,
		Listener:   p.Listener,
	}), nil
}

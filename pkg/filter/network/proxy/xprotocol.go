package proxy

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/stream/xprotocol"
)

// newXProtocol serves bolt, bolt v2 and dubbo downstream connections with the multiplexed
// engine (pkg/stream/xprotocol). The upstream protocol is the downstream one: a different
// upstream_protocol is refused, and so is a protocol whose registration does not pool
// upstream connections as the engine does (multiplexed). The codec must answer local
// replies with the registration's statuses. The bolt codecs decode v1 and v2 frame by
// frame, so one connection may mix them.
func newXProtocol(p Params, r *stream.Registration[Params]) (stream.ServerConnection, error) {
	down := r.Name
	if n := p.Upstream.Names; len(n) == 1 && n[0] != string(down) {
		return nil, fmt.Errorf("upstream_protocol %q: %s downstream forwards to %s only (no protocol conversion for RPC)",
			p.Config.UpstreamProtocol, down, down)
	}
	if r.PoolMode != stream.Multiplex {
		return nil, fmt.Errorf("%s: pool mode %v: the RPC engine multiplexes requests over upstream connections", down, r.PoolMode)
	}
	if p.Deps.Codecs == nil {
		return nil, fmt.Errorf("%s: no codec registry", down)
	}
	newCodec, err := p.Deps.Codecs.Get(string(down))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", down, err)
	}
	codec := newCodec()
	if err := xprotocol.CheckStatus(codec, r.Status); err != nil {
		return nil, fmt.Errorf("%s: local reply statuses: %w", down, err)
	}
	d := p.Deps
	if l := d.Listener; l != nil && len(l.StreamFilters) > 0 && d.Log != nil {
		d.Log.Warn("proxy: stream filters are not applied to RPC (bolt, dubbo) requests yet; ignored",
			zap.String("listener", l.Name), zap.String("protocol", string(down)))
	}
	return xprotocol.New(xprotocol.Config{
		Listener:   p.Listener,
		Codec:      codec,
		Routers:    d.Routers,
		RouterName: p.Config.RouterConfigName,
		Clusters:   d.Clusters,
		Pool:       d.Pool,
		Metrics:    d.Metrics,
		Log:        d.Log,
		Overloaded: d.Overloaded,
	}), nil
}

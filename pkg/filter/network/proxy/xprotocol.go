package proxy

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/network"
	xproto "github.com/mosnlite/mosnlite/pkg/protocol/xprotocol"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/bolt"
	"github.com/mosnlite/mosnlite/pkg/protocol/xprotocol/dubbo"
	"github.com/mosnlite/mosnlite/pkg/stream"
	"github.com/mosnlite/mosnlite/pkg/stream/xprotocol"
)

// newXProtocol serves bolt, bolt v2 and dubbo downstream connections with the multiplexed
// engine (pkg/stream/xprotocol). The upstream protocol is the downstream one: a different
// upstream_protocol is refused. The bolt codecs decode v1 and v2 frame by frame, so one
// connection may mix them. The returned handler is an io.Closer (its upstream pool).
func newXProtocol(p Params, down stream.Protocol) (network.Handler, error) {
	if n := p.Upstream.Names; len(n) == 1 && n[0] != string(down) {
		return nil, fmt.Errorf("upstream_protocol %q: %s downstream forwards to %s only (no protocol conversion for RPC)",
			p.Config.UpstreamProtocol, down, down)
	}
	var codec xproto.Codec
	switch down {
	case stream.Bolt:
		codec = bolt.New(bolt.Options{})
	case stream.BoltV2:
		codec = bolt.NewV2(bolt.Options{})
	case stream.Dubbo:
		codec = dubbo.New(dubbo.Options{})
	default:
		return nil, fmt.Errorf("%s is not an xprotocol", down)
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
	}), nil
}

// Package proxy is the "proxy" network filter: MOSN's L7 proxy. It serves HTTP/1
// downstream connections (downstream_protocol Http1, or Auto when the first bytes are an
// HTTP/1 request line) and forwards to HTTP/1 upstreams through pkg/proxy.
package proxy

import (
	"fmt"

	"github.com/mosnlite/mosnlite/pkg/config"
	"github.com/mosnlite/mosnlite/pkg/filter"
	"github.com/mosnlite/mosnlite/pkg/proxy"
	"github.com/mosnlite/mosnlite/pkg/stream"
)

// Name is the filter's type in configs.
const Name = "proxy"

// Factory builds the filter from a ProxyConfig. The router named by router_config_name
// must exist in d.Routers; the upstream protocol must be HTTP/1 (or unset/Auto); the
// downstream protocol Http1 or Auto (Auto serves HTTP/1 and closes, with a protocol error,
// connections whose first bytes are another protocol). Other protocols are refused at
// start with the reason, not accepted and then failed per connection.
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
	if len(up.Names) > 1 || (len(up.Names) == 1 && up.Names[0] != config.ProtocolHTTP1) {
		return nil, fmt.Errorf("proxy: upstream_protocol %q: only Http1 is supported", c.UpstreamProtocol)
	}
	down := stream.Protocol(c.DownstreamProtocol)
	if pc, err := config.ParseProtocol(c.DownstreamProtocol, c.SubProtocol()); err != nil {
		return nil, fmt.Errorf("proxy: downstream_protocol: %w", err)
	} else if pc.Auto || len(pc.Names) > 1 {
		down = stream.Auto
	} else if len(pc.Names) == 1 {
		down = stream.Protocol(pc.Names[0])
	}
	if down != stream.Auto && down != stream.Protocol(config.ProtocolHTTP1) {
		// Refuse at start rather than accept and close every connection.
		return nil, fmt.Errorf("proxy: downstream_protocol %q is not served by this build (Http1 and Auto are)", c.DownstreamProtocol)
	}
	cfg := proxy.Config{
		Downstream: down,
		Routers:    d.Routers,
		RouterName: c.RouterConfigName,
		Clusters:   d.Clusters,
		Pool:       d.Pool,
		Metrics:    d.Metrics,
		Log:        d.Log,
	}
	if d.Listener != nil {
		cfg.Listener = d.Listener.Name
	}
	return proxy.New(cfg), nil
}
